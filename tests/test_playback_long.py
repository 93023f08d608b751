"""A range of days streams in bounded memory: the plan holds each segment's index (bytes, not
objects per fragment) and the stream one fragment at a time, whatever the range's length.

Two days with a 40 s segment every 5 minutes (576 rows, and a gap between each) are made from
one real recording: its file is linked under each row's name, so the bytes are real and cost no
disk.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

from tests.conftest import START_US, make_rig
from tests.support.counter_clip import counter_clip, record
from vms.catalog.store import MAIN, Catalog
from vms.playback.plan import plan
from vms.playback.stream import RangeStream

DAY_US = 86_400_000_000


def test_two_days_stream_in_bounded_memory(tmp_path: Path, catalog: Catalog) -> None:
    rig = make_rig(tmp_path, catalog, segment_seconds=60)
    try:
        record(rig, counter_clip(tmp_path / "clip.mp4", frames=1000))  # one 40 s segment
    finally:
        rig.writers.stop()
    (seg,) = catalog.segments(camera_id="cam1")
    length_us = seg.end_us - seg.start_us
    source = rig.root / seg.path
    every_us = 300_000_000
    count = 2 * DAY_US // every_us
    day_dir = source.parent
    for k in range(1, count):
        start = seg.start_us + k * every_us
        name = f"{start}-main.mp4"
        os.link(source, day_dir / name)
        seg_id = catalog.open_segment(
            camera_id="cam1", stream=MAIN, root_id=seg.root_id, path=f"{day_dir.relative_to(rig.root)}/{name}",
            start_us=start, media_start=seg.media_start, codec=seg.codec, width=seg.width,
            height=seg.height, has_audio=seg.has_audio, timescale=seg.timescale,
        )  # fmt: skip
        assert seg.frag_index is not None and seg.crc32 is not None
        catalog.close_segment(
            seg_id, end_us=start + length_us, init_bytes=seg.init_bytes, size=seg.bytes,
            fragments=seg.fragments, frag_index=seg.frag_index, crc32=seg.crc32,
        )  # fmt: skip

    tracemalloc.start()
    try:
        began = time.monotonic()
        p = plan(catalog, rig.writers.catalog_thread.open_files, "cam1", MAIN, START_US,
                 START_US + 2 * DAY_US, max_range_us=7 * DAY_US, storage=rig.storage)  # fmt: skip
        planned = tracemalloc.get_traced_memory()[0]
        stream = RangeStream(p)
        sent = 0
        largest = 0
        for chunk in stream.chunks():
            sent += len(chunk)
            largest = max(largest, len(chunk))
        peak = tracemalloc.get_traced_memory()[1]
        took = time.monotonic() - began
    finally:
        tracemalloc.stop()
    assert len(p.pieces) == count
    assert sent == stream.size == count * seg.bytes  # every byte of every file, once
    # The plan: its index and a few objects a segment. The stream: a fragment or two on top,
    # however many bytes it sends (here ~count × seg.bytes).
    assert planned < 4 * 1024 * count, planned
    assert peak - planned < 1024 * 1024 + 4 * largest, (peak, planned, largest)
    assert len(p.gaps) == count  # between the segments, and after the last to the end
    print(f"{count} segments, {sent / 1e6:.0f} MB sent in {took:.1f} s; plan "
          f"{planned / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB")  # fmt: skip
