"""The detector threads every camera shares, and the rule that keeps latency flat: at most one
frame waits per camera.

A camera submits a job (a frame and where to look) whenever its motion says so. When that
camera already has a job waiting, the new one *replaces* it and the old one counts as skipped:
a detector slower than the cameras' frame rate then drops frames instead of queueing them, so
the delay from a frame to its detection stays one inference plus one wait, whatever the load.
A camera's jobs run one at a time and in order (a tracker must see frames in order), cameras
are served oldest-waiting first so a busy camera cannot starve a quiet one — except that a job
with something new to find (motion where no track is, a track not confirmed yet) goes before
those that only follow known objects: that is the alert's delay — and each thread owns
its detector instance unless the plugin says it is thread-safe (OpenCV's DNN nets are not).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Generic, Protocol, TypeVar

from vms.detect.detector import Detector

log = logging.getLogger(__name__)

STARVE_S = 0.5  # a job waiting this long is served before newer urgent ones
J = TypeVar("J")
J_contra = TypeVar("J_contra", contravariant=True)


class Owner(Protocol[J_contra]):
    """A camera's side of the pool: runs its own jobs (on a pool thread)."""

    name: str

    def run_job(self, detector: Detector, job: J_contra) -> int:
        """Do the job; returns the inferences it ran (0 or 1)."""
        ...


class DetectorPool(Generic[J]):
    def __init__(self, make: collections.abc.Callable[[], Detector], threads: int) -> None:
        self._make = make
        self._threads_wanted = threads
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        # Waiting jobs by owner, oldest first. Replacing a waiting job keeps its owner's place.
        self._waiting: collections.OrderedDict[int, tuple[Owner[J], J]] = (
            collections.OrderedDict()
        )
        self._busy: set[int] = set()
        self._urgent: set[int] = set()  # waiting owners whose job is urgent
        self._since: dict[int, float] = {}  # when each waiting owner began to wait
        self._stopping = False
        self.inferences = 0
        self.busy_s = 0.0  # summed over threads
        self.skipped: collections.Counter[str] = collections.Counter()

    def start(self) -> None:
        for i in range(self._threads_wanted):
            t = threading.Thread(target=self._work, name=f"detector-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, owner: Owner[J], job: J, *, urgent: bool = False) -> bool:
        """Queue ``job`` for ``owner``; False when it replaced one still waiting (skipped).
        An ``urgent`` job (something new to find) is served before the others."""
        with self._cond:
            if self._stopping:
                return False
            key = id(owner)
            replaced = key in self._waiting
            if replaced:
                urgent = urgent or key in self._urgent
            self._waiting[key] = (owner, job)
            self._since.setdefault(key, time.monotonic())
            if urgent:
                self._urgent.add(key)
            if replaced:
                self.skipped[owner.name] += 1
            self._cond.notify()
            return not replaced

    def forget(self, owner: Owner[J]) -> None:
        """Drop ``owner``'s waiting job and wait until its running one ends (it is stopping)."""
        with self._cond:
            self._waiting.pop(id(owner), None)
            self._urgent.discard(id(owner))
            self._since.pop(id(owner), None)
            while id(owner) in self._busy:
                self._cond.wait(1.0)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._waiting.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> tuple[Owner[J], J] | None:
        with self._cond:
            while not self._stopping:
                ready = [k for k in self._waiting if k not in self._busy]
                if ready:
                    key = ready[0]
                    # Urgent first, unless the oldest has waited too long (a tree in the wind
                    # is urgent all day: it must not starve the cameras following people).
                    if time.monotonic() - self._since[key] < STARVE_S:
                        key = next((k for k in ready if k in self._urgent), key)
                    owner, job = self._waiting.pop(key)
                    self._urgent.discard(key)
                    self._since.pop(key, None)
                    self._busy.add(key)
                    return owner, job
                self._cond.wait()
            return None

    def _work(self) -> None:
        detector: Detector | None = None
        while (taken := self._take()) is not None:
            owner, job = taken
            started = time.perf_counter()
            try:
                if detector is None:
                    detector = self._make()
                n = owner.run_job(detector, job)
            except Exception:
                # One camera's bad frame or a plugin's failure: that job is lost, the thread
                # and every other camera go on.
                log.exception("detection failed", extra={"camera": owner.name})
                n = 0
            with self._cond:
                self._busy.discard(id(owner))
                self.inferences += n
                self.busy_s += time.perf_counter() - started
                self._cond.notify_all()
