"""Frames for detection: a relay's packets decoded (H.264 and H.265), thinned to the rate
asked, the Y plane read without a copy; and the detector pool's one-waiting-frame rule."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.polling import wait_for
from vms.cameras.relay import Relay
from vms.clock import SystemClock
from vms.detect.detector import Detection, Detector
from vms.detect.frames import Frames
from vms.detect.pool import DetectorPool
from vms.ingest.pyav_source import read_clip
from vms.media import StreamEnd, StreamStart


def _decode_all(path: Path, fps: float, spacing: float) -> tuple[list[int], Frames, int]:
    """Publish a clip's packets on a relay with arrivals ``spacing`` s apart; return the
    indices (by arrival) of the frames the iterator let through."""
    info, packets = read_clip(path)
    relay = Relay(None)
    frames = Frames(relay, fps, SystemClock(), "test")
    relay.publish(StreamStart(info))
    video = [p for p in packets if p.kind == 0]
    t0 = time.monotonic() - len(video) * spacing  # arrivals in the past, as a camera's are
    for i, p in enumerate(video):
        p.arrival = t0 + i * spacing
        relay.publish(p)
    relay.publish(StreamEnd("done"))
    relay.close()
    out = []
    for f in frames:
        assert f.luma().shape == (f.height, f.width)
        out.append(f)
    return [round((f.t_us - out[0].t_us) / (spacing * 1e6)) for f in out], frames, len(video)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_frames_are_decoded_and_thinned_to_the_rate(clips: dict[str, Path], codec: str) -> None:
    # The clip's 25 frames a second, asked at 5: every fifth frame, on a steady grid.
    picked, frames, sent = _decode_all(clips[codec], 5.0, 0.04)
    # Every packet decoded (a P-frame needs its predecessors); the H.265 decoder holds the last
    # two frames back for reordering until more packets come, as a live stream's do.
    assert sent - 2 <= frames.decoded <= sent
    assert frames.errors == 0
    steps = {b - a for a, b in itertools.pairwise(picked)}
    assert steps == {5}, steps
    assert len(picked) == -(-frames.decoded // 5)


def test_luma_is_a_view_of_the_picture(clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264"])
    relay = Relay(None)
    frames = Frames(relay, 25.0, SystemClock(), "test")
    relay.publish(StreamStart(info))
    for p in packets[:30]:
        relay.publish(p)
    relay.close()
    first = next(iter(frames))
    y = first.luma()
    assert y.base is not None  # a view, not a copy
    bgr = first.bgr()
    assert bgr.shape == (first.height, first.width, 3)
    # The luma of the converted picture agrees with the plane read directly.
    gray = (0.114 * bgr[..., 0] + 0.587 * bgr[..., 1] + 0.299 * bgr[..., 2]).astype(np.float32)
    assert abs(float(gray.mean()) - float(y.mean())) < 20


class _Slow:
    """A detector that takes as long as the test says."""

    labels = ("person",)
    input_size = (300, 300)
    thread_safe = False

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.gate.wait(5)
        return []


class _Owner:
    def __init__(self, name: str) -> None:
        self.name = name
        self.done: list[int] = []

    def run_job(self, detector: Detector, job: int) -> int:
        detector.detect(np.zeros((1, 1, 3), np.uint8))
        self.done.append(job)
        return 1


def test_the_pool_keeps_one_waiting_frame_per_camera_and_counts_the_rest() -> None:
    gate = threading.Event()
    pool: DetectorPool[int] = DetectorPool(lambda: _Slow(gate), threads=1)
    pool.start()
    a, b = _Owner("a"), _Owner("b")
    try:
        assert pool.submit(a, 1)
        wait_for(lambda: pool._busy, timeout=5)  # job 1 is running, held by the gate
        assert pool.submit(a, 2)
        assert pool.submit(b, 10)
        assert not pool.submit(a, 3)  # replaces 2: skipped
        assert not pool.submit(a, 4)  # replaces 3
        gate.set()
        wait_for(lambda: len(a.done) == 2 and len(b.done) == 1, timeout=5)
        assert a.done == [1, 4]  # in order, only the newest waiting frame
        assert b.done == [10]
        assert pool.skipped["a"] == 2 and pool.skipped["b"] == 0
        assert pool.inferences == 3
    finally:
        gate.set()
        pool.stop()


def test_a_failing_job_loses_only_itself() -> None:
    class Boom(_Owner):
        def run_job(self, detector: Detector, job: int) -> int:
            raise RuntimeError("bad frame")

    gate = threading.Event()
    gate.set()
    pool: DetectorPool[int] = DetectorPool(lambda: _Slow(gate), threads=2)
    pool.start()
    try:
        bad, good = Boom("bad"), _Owner("good")
        pool.submit(bad, 1)
        pool.submit(good, 2)
        wait_for(lambda: good.done == [2], timeout=5)
        pool.submit(good, 3)
        wait_for(lambda: good.done == [2, 3], timeout=5)
    finally:
        pool.stop()


def test_something_new_is_looked_at_first_but_nothing_waits_long() -> None:
    gate = threading.Event()
    pool: DetectorPool[int] = DetectorPool(lambda: _Slow(gate), threads=1)
    pool.start()
    busy, follow, new = _Owner("busy"), _Owner("follow"), _Owner("new")
    order: list[str] = []
    for o in (follow, new):
        run = o.run_job

        def tracked(detector: Detector, job: int, o: _Owner = o, run: Any = run) -> int:
            order.append(o.name)
            return run(detector, job)

        o.run_job = tracked  # type: ignore[method-assign]
    try:
        pool.submit(busy, 0)
        wait_for(lambda: pool._busy, timeout=5)
        pool.submit(follow, 1)  # follows known objects: waits first...
        pool.submit(new, 2, urgent=True)  # ...but the new motion goes first
        gate.set()
        wait_for(lambda: len(order) == 2, timeout=5)
        assert order == ["new", "follow"]
        # A job that has waited past the limit goes before newer urgent ones.
        gate.clear()
        order.clear()
        pool.submit(busy, 3)
        wait_for(lambda: pool._busy, timeout=5)
        pool.submit(follow, 4)
        threading.Event().wait(0.6)  # longer than the pool's limit (STARVE_S)
        pool.submit(new, 5, urgent=True)
        gate.set()
        wait_for(lambda: len(order) == 2, timeout=5)
        assert order == ["follow", "new"]
    finally:
        gate.set()
        pool.stop()
