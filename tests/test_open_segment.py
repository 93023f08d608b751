"""The open segment as readers see it: what the root writer has written, fragment by fragment,
until its catalog row is closed."""

from __future__ import annotations

import itertools
import threading
import types
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import Rig
from tests.support.polling import wait_for
from vms.catalog.store import CLOSED, MAIN, OPEN, SUB
from vms.ingest.pyav_source import read_clip
from vms.recording import mp4
from vms.recording.live import OpenSegment, publish, snapshot
from vms.recording.segment import SegmentWriter


def check_bytes(snap: OpenSegment) -> None:
    """Every fragment the snapshot names is a whole moof + mdat at its offset in the file, on
    the run's decode time line; the init segment is where it says."""
    data = snap.file.read_bytes()
    assert len(data) >= snap.size
    assert data[4:8] == b"ftyp" and snap.init_bytes > 0
    assert [b.kind for b in mp4.iter_boxes(data, 0, snap.init_bytes)] == [b"ftyp", b"moov"]
    frags = list(snap.index().fragments(snap.init_bytes))
    assert snap.size == snap.init_bytes + sum(f.size for f in frags)
    for f in frags:
        boxes = list(mp4.iter_boxes(data, f.offset, f.offset + f.size))
        assert [b.kind for b in boxes] == [b"moof", b"mdat"], f
        moof = data[f.offset : f.offset + boxes[0].size]
        info = mp4.parse_moof(moof)
        assert info.video_base == snap.media_start + f.start
        assert info.samples == f.samples and info.keyframe == f.keyframe
        assert boxes[1].size - boxes[1].header == info.data_bytes
    duration = sum(f.duration for f in frags)
    assert snap.end_us == snap.start_us + duration * 1_000_000 // snap.timescale


def test_the_open_segment_grows_fragment_by_fragment(
    rig: Rig, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    info, packets = read_clip(clips["h264"])  # 25 fps, a keyframe a second
    rig.recorder.stream_started(info)
    assert rig.writers.open_segment("cam1", MAIN) is None
    seen: list[OpenSegment] = []
    for p in packets[:90]:  # 3.6 s: one segment (4 s), three whole fragments
        p.arrival = p.dts / info.video.timescale
        rig.recorder.packet(p)
        assert rig.writers.flush()
        snap = rig.writers.open_segment("cam1", MAIN)
        assert snap is not None
        if not seen or snap != seen[-1]:
            seen.append(snap)
    assert [s.fragments for s in seen] == [0, 1, 2, 3], "one step a fragment"
    for earlier, later in itertools.pairwise(seen):
        assert later.frag_index.startswith(earlier.frag_index) and later.size > earlier.size
        assert later.end_us > earlier.end_us
    for snap in seen:
        check_bytes(snap)
    last = seen[-1]
    assert last.id is not None and (last.camera_id, last.stream, last.root) == ("cam1", MAIN, "r1")
    row = rig.catalog.segment(last.id)
    assert row.state == OPEN and row.frag_index is None, "the row has no index while open"
    assert (row.path, row.start_us, row.media_start) == (last.path, last.start_us, 0)
    assert rig.writers.open_segment("cam1", MAIN, seg_id=last.id) == last
    assert rig.writers.open_segment("cam1", MAIN, seg_id=last.id + 1) is None
    assert rig.writers.open_segment("cam1", SUB) is None

    # The close: the file is finished and synced, its row update waits in the catalog thread.
    gate = threading.Event()
    close_row = rig.catalog.close_segment

    def held(*args: Any, **kwargs: Any) -> None:
        assert gate.wait(20)
        close_row(*args, **kwargs)

    monkeypatch.setattr(rig.catalog, "close_segment", held)
    rig.recorder.stream_stopped()  # the held frame ends the fourth fragment
    wait_for(lambda: rig.recorder.stats.segments == 1, 10, "the file closed")
    final = rig.writers.open_segment("cam1", MAIN)
    assert final is not None and final.fragments == 4, "still there while the row is open"
    assert rig.catalog.segment(last.id).state == OPEN
    check_bytes(final)
    gate.set()
    assert rig.writers.flush()
    assert rig.writers.open_segment("cam1", MAIN) is None, "gone once the row is closed"
    row = rig.catalog.segment(last.id)
    assert row.state == CLOSED
    assert row.frag_index == final.frag_index, "the row has the fragments readers saw"
    assert (row.bytes, row.end_us, row.init_bytes) == (final.size, final.end_us, final.init_bytes)


def test_a_gap_marked_after_publishing_does_not_reach_the_snapshot(tmp_path: Path) -> None:
    """The writer's index rewrites its last entry when the next fragment starts after a hole;
    a snapshot taken before that fragment is published shows the entry as it was."""
    writer = SegmentWriter(tmp_path / "s.mp4", b"init")
    writer.append([b"a" * 10], 0, 90000, True, 25)
    seg = types.SimpleNamespace(
        id=7, camera_id="cam", stream=MAIN, root=types.SimpleNamespace(name="r1", file=Path),
        rel="s.mp4", start_us=0, media_start=0, codec="h264", has_audio=False,
        timescale=90000, init=b"init", published=publish(writer),
    )  # fmt: skip
    before = snapshot(cast(Any, seg))
    writer.append([b"b" * 20], 180000, 90000, True, 25)  # 90,000 ticks lost before it
    assert writer.index.entries[0][0] == 180000, "the writer lengthened the first entry"
    after = snapshot(cast(Any, seg))
    assert before is not None and after == before
    assert after.index().entries == [(90000, 10, 1 | 25 << 2)] and after.size == 14
    assert after.end_us == 1_000_000
    seg.published = publish(writer)
    now = snapshot(cast(Any, seg))
    assert now is not None and now.fragments == 2 and now.end_us == 3_000_000
    writer.close()
