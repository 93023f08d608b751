"""Fan-out: bounded per-subscriber queues; a slow subscriber loses its own packets only."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from vms.cameras.relay import Fanout
from vms.clock import SystemClock
from vms.ingest.pyav_source import open_source, read_clip
from vms.media import AUDIO, VIDEO, Packet


def pkt(i: int, key: bool, kind: int = VIDEO) -> Packet:
    return Packet(kind, b"x", i, i, key, 0.0)


def test_slow_subscriber_drops_oldest_and_resumes_at_a_keyframe() -> None:
    fanout = Fanout()
    slow = fanout.subscribe(maxlen=4)
    fast = fanout.subscribe(maxlen=100)
    for i in range(10):
        fanout.publish(pkt(i, key=i % 5 == 0))
    assert slow.dropped == 6 and fast.dropped == 0
    # The slow queue holds 6..9; 6 is not a keyframe, so it skips to... none: all dropped.
    assert slow.poll() is None
    fanout.publish(pkt(10, key=True))
    fanout.publish(pkt(11, key=False, kind=AUDIO))
    got = slow.poll()
    assert got is not None and got.pts == 10
    got = slow.poll()
    assert got is not None and got.kind == AUDIO
    assert [fast.poll().pts for _ in range(11)] == list(range(11))  # type: ignore[union-attr]


def test_publish_never_blocks_and_unsubscribe_works() -> None:
    fanout = Fanout()
    woken = threading.Event()
    sub = fanout.subscribe(maxlen=2, notify=woken.set)
    start = time.perf_counter()
    for i in range(100_000):
        fanout.publish(pkt(i, key=False))
    # ~0.3 s on a quiet machine; the bound only catches a publish that waits for its reader.
    assert time.perf_counter() - start < 10.0
    assert woken.is_set() and len(sub) == 2
    sub.close()
    assert len(fanout) == 0


def test_looped_clip_plays_at_real_rate_with_increasing_timestamps(clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264_small"])  # 2 s, 50 frames
    stop = threading.Event()
    src = open_source(clips["h264_small"].as_uri(), stop=stop, clock=SystemClock())
    got: list[Packet] = []
    start = time.monotonic()
    for p in src.packets():
        got.append(p)
        if len(got) == 125:  # two and a half passes
            break
    elapsed = time.monotonic() - start
    src.close()
    dts = [p.dts for p in got]
    step = info.video.timescale // 25
    assert all(b - a == step for a, b in itertools.pairwise(dts)), "timeline must not restart"
    # Paced by timestamps: never faster than real time; a loaded machine may be a little late.
    assert 4.6 <= elapsed <= 8.0, f"played 5 s of video in {elapsed:.2f} s"
    assert [p.keyframe for p in got[::25]] == [True] * 5
    assert got[50].data == packets[0].data
