"""Fan-out of a camera's packets to subscribers other than the recorder (live view, detection).

The ingest thread calls the recorder directly and then :meth:`Fanout.publish`, which never
blocks: each subscriber has a bounded queue that drops its *oldest* packet when full, so a slow
viewer costs itself frames, never the recording. A subscriber that lost packets skips ahead to
the next video keyframe, because decoding cannot resume in the middle of a GOP.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from vms.media import VIDEO, Packet, StreamInfo


class Subscription:
    def __init__(self, fanout: Fanout, maxlen: int, notify: Callable[[], None] | None) -> None:
        self._fanout = fanout
        self._queue: collections.deque[Packet] = collections.deque(maxlen=maxlen)
        self._notify = notify
        self._gap = True  # start at a keyframe
        self.dropped = 0
        self.info: StreamInfo | None = fanout.info

    def offer(self, p: Packet) -> None:
        q = self._queue
        if len(q) == q.maxlen:
            self.dropped += 1
            self._gap = True
        q.append(p)  # deque(maxlen) drops the oldest atomically
        if self._notify is not None:
            self._notify()

    def poll(self) -> Packet | None:
        """The next packet, or None when the queue is empty. Never blocks."""
        q = self._queue
        while True:
            try:
                p = q.popleft()
            except IndexError:
                return None
            if self._gap:
                if p.kind != VIDEO or not p.keyframe:
                    continue
                self._gap = False
            return p

    def __len__(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        self._fanout._remove(self)


class Fanout:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()
        self.info: StreamInfo | None = None

    def subscribe(
        self, *, maxlen: int = 256, notify: Callable[[], None] | None = None
    ) -> Subscription:
        sub = Subscription(self, maxlen, notify)
        with self._lock:
            self._subs = (*self._subs, sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    def stream_started(self, info: StreamInfo) -> None:
        self.info = info
        for sub in self._subs:
            sub.info = info
            sub._gap = True

    def publish(self, p: Packet) -> None:
        # Copy-on-write tuple: no lock on the per-packet path.
        for sub in self._subs:
            sub.offer(p)

    def __len__(self) -> int:
        return len(self._subs)
