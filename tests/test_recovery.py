"""Crash safety: torn tails, kill -9 of a real server, and `vms check` finding and repairing."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from tests.conftest import Rig
from tests.support.polling import wait_for
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.catalog.store import CLOSED, OPEN, QUARANTINED, Catalog, segments
from vms.clock import SystemClock
from vms.config import from_dict, load
from vms.errors import Kind, VmsError
from vms.health import CameraHealth
from vms.ingest.pyav_source import read_clip
from vms.media import MAIN
from vms.recording import check
from vms.recording.recorder import Recorder
from vms.recording.recovery import recover
from vms.recording.segment import FragmentIndex
from vms.recording.storage import Storage
from vms.recording.writer import Writers
from vms.server import Server


def record_without_closing(rig: Rig, clip: Path, frames: int) -> None:
    """Feed packets and stop without closing: what a kill leaves (whole fragments, open row)."""
    info, packets = read_clip(clip)
    rig.recorder.stream_started(info)
    for p in packets[:frames]:
        p.arrival = p.dts / info.video.timescale
        rig.recorder.packet(p)
    assert rig.writers.flush()


def test_recovery_truncates_a_torn_tail_and_indexes_whole_fragments(
    rig: Rig, clips: dict[str, Path]
) -> None:
    record_without_closing(rig, clips["h264"], 80)  # 3.2 s: 3 whole fragments, 1 in memory
    (seg,) = rig.catalog.segments(state=OPEN)
    path = rig.root / seg.path
    whole = path.stat().st_size
    with open(path, "ab") as f:  # half of a fragment written when the process died
        f.write(b"\x00\x00\x10\x00moof" + os.urandom(1000))
    assert recover(rig.catalog, rig.storage) == 1
    seg = rig.catalog.segment(seg.id)
    assert seg.state == CLOSED
    assert path.stat().st_size == whole == seg.bytes
    index = FragmentIndex.decode(seg.frag_index or b"")
    assert [f.samples for f in index.fragments(0)] == [25, 25, 25]
    assert seg.end_us - seg.start_us == 3_000_000
    assert check.run(rig.catalog, rig.storage).ok


def test_recovery_drops_a_segment_without_a_whole_fragment(
    rig: Rig, clips: dict[str, Path]
) -> None:
    record_without_closing(rig, clips["h264"], 10)  # 0.4 s: nothing flushed yet
    (seg,) = rig.catalog.segments(state=OPEN)
    assert recover(rig.catalog, rig.storage) == 1
    assert rig.catalog.segments() == []
    assert not (rig.root / seg.path).exists()


def _closed_segments(rig: Rig, clip: Path) -> list[int]:
    info, packets = read_clip(clip)
    rig.recorder.stream_started(info)
    for p in packets:
        p.arrival = p.dts / info.video.timescale
        rig.recorder.packet(p)
    rig.stop()
    return [s.id for s in rig.catalog.segments(state=CLOSED)]


def test_check_finds_and_repairs_every_kind_of_mismatch(rig: Rig, clips: dict[str, Path]) -> None:
    _closed_segments(rig, clips["h264"])
    ids = _closed_segments(rig, clips["h264"])
    assert len(ids) == 4
    assert check.run(rig.catalog, rig.storage).ok
    segs = {i: rig.catalog.segment(i) for i in ids}
    p0, p1, p2, p3 = (rig.root / segs[i].path for i in ids)
    p0.unlink()  # missing file
    flip_byte(p1, segs[ids[1]].bytes - 10)  # inside a fragment
    os.truncate(p2, segs[ids[2]].bytes - 100)  # lost the tail
    with open(p3, "ab") as f:  # bytes after the indexed end
        f.write(b"junk")
    # Named like a segment, on a day before the camera's newest row: nothing will index it.
    orphan = rig.root / "cam1" / "2026-01-01" / "1767225600000000-main.mp4"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    report = check.run(rig.catalog, rig.storage)
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["bad_fragment", "crc_mismatch", "extra_bytes", "missing_file", "orphan"] or (
        kinds == ["crc_mismatch", "extra_bytes", "missing_file", "orphan", "short_file"]
    )
    assert not report.ok
    corrupt = rig.catalog.segment(ids[1])
    assert corrupt.state == QUARANTINED and corrupt.crc32 == segs[ids[1]].crc32
    repaired = check.run(rig.catalog, rig.storage, repair=True)
    assert all(p.repaired for p in repaired.problems if p.kind not in ("orphan", "quarantined"))
    assert [p.kind for p in repaired.problems if p.segment_id == ids[1]] == ["quarantined"]
    orphan.unlink()
    after = check.run(rig.catalog, rig.storage)
    assert after.ok, after.problems
    assert [p.kind for p in after.problems] == ["quarantined"] and after.quarantined == 1
    assert rig.catalog.segment(ids[1]) == corrupt, "a CRC mismatch is never re-indexed"
    assert rig.catalog.segment(ids[2]).bytes < segs[ids[2]].bytes  # re-indexed to what is whole
    assert len(rig.catalog.segments()) == 3  # the missing file's row is gone


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))


def test_check_levels_cost_what_they_say(rig: Rig, clips: dict[str, Path]) -> None:
    ids = _closed_segments(rig, clips["h264"])
    a, b = (rig.catalog.segment(i) for i in ids)
    flip_byte(rig.root / a.path, a.bytes - 10)  # only a checksum sees this
    (rig.root / b.path).rename(rig.root / "elsewhere.mp4")  # only a look at the files sees this
    catalog_only = check.run(rig.catalog, rig.storage, level="catalog")
    assert catalog_only.ok and catalog_only.problems == [], "the catalog level opens no file"
    files = check.run(rig.catalog, rig.storage, level="files")
    assert [(p.segment_id, p.kind) for p in files.problems] == [(b.id, "missing_file")]
    full = check.run(rig.catalog, rig.storage, level="full")
    assert sorted((p.segment_id, p.kind) for p in full.problems) == [
        (a.id, "crc_mismatch"),
        (b.id, "missing_file"),
    ]
    # Rows that disagree with themselves, found without a file: an index that does not add up
    # to the row's bytes, and a segment that starts before the previous one ends.
    with rig.catalog.engine.begin() as c:
        c.execute(segments.update().where(segments.c.id == a.id).values(bytes=a.bytes + 1))
        c.execute(
            segments.update().where(segments.c.id == b.id).values(start_us=b.start_us - 500_000)
        )
    rows = check.run(rig.catalog, rig.storage, level="catalog")
    assert sorted((p.segment_id, p.kind) for p in rows.problems) == [
        (a.id, "quarantined"),
        (b.id, "overlap"),
    ], "a quarantined segment is reported as such, not checked again"


def test_check_holds_one_batch_of_rows_at_a_time(catalog: Catalog, tmp_path: Path) -> None:
    """4,000 closed rows with 600-fragment indexes (7.2 kB each, 28.8 MB of blobs): the check
    streams them, so its Python heap peaks at about one batch of 500, not at every row."""
    root = tmp_path / "root"
    storage = Storage(
        from_dict({"storage": {"roots": [{"name": "r1", "path": str(root), "create": True}]}})
        .storage.roots, catalog, SystemClock(),
    )  # fmt: skip
    storage.verify()
    catalog.ensure_camera("cam", "cam")
    fragments, frag_bytes, init = 600, 1000, 700
    blob = FragmentIndex([(90000, frag_bytes, 1 | 25 << 2)] * fragments).encode()
    rows, total_blob = 4000, 0
    with catalog.engine.begin() as c:
        for i in range(rows):
            start = 1_790_000_000_000_000 + i * 600_000_000
            c.execute(
                segments.insert().values(
                    camera_id="cam", stream=0, root_id=storage.roots[0].id,
                    path=f"cam/2026-09-21/{start}-main.mp4", state=CLOSED, start_us=start,
                    end_us=start + 600_000_000, media_start=0, codec="h264", width=1, height=1,
                    has_audio=False, timescale=90000, init_bytes=init,
                    bytes=init + fragments * frag_bytes, fragments=fragments,
                    frag_index=bytes(blob), crc32=0,
                )
            )  # fmt: skip
            total_blob += len(blob)
    tracemalloc.start()
    try:
        report = check.run(catalog, storage, level="catalog")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.segments == rows
    assert peak < total_blob / 4, f"peak {peak / 1e6:.1f} MB for {total_blob / 1e6:.1f} MB of rows"


def _config(tmp_path: Path, clip: Path, cameras: int) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    cams = "".join(
        f"  - {{id: cam{i}, main: {{url: '{clip.as_uri()}'}}}}\n" for i in range(cameras)
    )
    path = tmp_path / "vms.yaml"
    path.write_text(
        f"server: {{port: 0}}\nrecording: {{segment_seconds: 3}}\n"
        f"storage: {{roots: [{{name: r1, path: {root}, min_free_bytes: 0}}]}}\n"
        f"cameras:\n{cams}"
    )
    return path


def _open_catalog(path: Path) -> tuple[Catalog, Storage]:
    cfg = load(path)
    cat = Catalog(cfg.catalog_url())
    storage = Storage(cfg.storage.roots, cat, SystemClock())
    storage.verify()
    return cat, storage


@pytest.mark.parametrize("run_seconds", [2.3, 4.1])
def test_kill_9_loses_at_most_the_last_fragment(
    tmp_path: Path, clips: dict[str, Path], run_seconds: float
) -> None:
    cfg_path = _config(tmp_path, clips["h264"], cameras=3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vms", "serve", "--config", str(cfg_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        cat, _ = _open_catalog(cfg_path)
        while not any(s.state == OPEN for s in cat.segments()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(run_seconds)
    finally:
        proc.send_signal(signal.SIGKILL)
        killed_us = time.time_ns() // 1000
        proc.wait(10)
        cat.close()
    cat, storage = _open_catalog(cfg_path)
    before = check.run(cat, storage)
    # What a kill leaves: open rows, and files whose rows were still queued.
    assert {p.kind for p in before.problems} <= {"open", "unindexed"}, before.problems
    recover(cat, storage)
    after = check.run(cat, storage)
    assert after.ok, after.problems
    for cam in ("cam0", "cam1", "cam2"):
        segs = cat.segments(camera_id=cam)
        assert segs and all(s.state == CLOSED for s in segs)
        lost = (killed_us - segs[-1].end_us) / 1e6
        assert lost <= 1.3, f"{cam} lost {lost:.2f} s"
        for prev, seg in itertools.pairwise(segs):
            assert seg.start_us == prev.end_us
    cat.close()
    result = subprocess.run(
        [sys.executable, "-m", "vms", "check", "--config", str(cfg_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_check_cli_reports_and_repairs(tmp_path: Path, clips: dict[str, Path]) -> None:
    cfg_path = _config(tmp_path, clips["h264"], cameras=1)
    cat, storage = _open_catalog(cfg_path)
    loaded = load(cfg_path)
    cat.ensure_camera("cam0", "cam0")
    clock = SystemClock()
    writers = Writers(cat, clock)
    rec = Recorder(
        "cam0", catalog=cat, storage=storage, writers=writers, clock=clock,
        config=loaded.recording,
        events=StreamPipeline("cam0", MAIN, CameraHealth("cam0", clock), Relay()),
    )  # fmt: skip
    info, packets = read_clip(clips["h264"])
    rec.stream_started(info)
    for p in packets:
        p.arrival = p.dts / info.video.timescale
        rec.packet(p)
    rec.stream_stopped()
    writers.stop()
    seg = cat.segments()[0]
    (tmp_path / "root" / seg.path).unlink()
    cat.close()
    cmd = [sys.executable, "-m", "vms", "check", "--config", str(cfg_path)]
    found = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert found.returncode == 1
    assert "MISSING_FILE" in found.stdout and "run with --repair" in found.stdout
    fixed = subprocess.run([*cmd, "--repair"], capture_output=True, text=True, timeout=60)
    assert "repaired" in fixed.stdout
    clean = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout


def test_repair_is_refused_while_a_server_holds_the_data_directory(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    cfg_path = _config(tmp_path, clips["h264"], cameras=1)
    cmd = [sys.executable, "-m", "vms", "check", "--config", str(cfg_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vms", "serve", "--config", str(cfg_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        cat, _ = _open_catalog(cfg_path)
        try:
            wait_for(lambda: cat.segments(state=CLOSED), 30, "a closed segment")
        finally:
            cat.close()
        refused = subprocess.run([*cmd, "--repair"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "refusing to repair" in refused.stderr and "vms.lock" in refused.stderr
        read_only = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert read_only.returncode == 0, read_only.stdout + read_only.stderr
        assert "a server is running" in read_only.stdout
        with pytest.raises(VmsError) as e:
            Server(load(cfg_path)).start()
        assert e.value.kind == Kind.UNAVAILABLE
        assert "in use by another vms process" in e.value.message
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    repaired = subprocess.run([*cmd, "--repair"], capture_output=True, text=True, timeout=60)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "a server is running" not in repaired.stdout
