"""The record path never waits on a disk or on the catalog: a writer per root, a catalog thread
that outlives an outage, and files only ever removed by the process that created them."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import START_US, Rig, make_rig
from tests.support.polling import wait_for
from tests.support.tcp_proxy import TcpProxy
from vms.bench.slow_serve import SlowIO
from vms.catalog.store import CLOSED, OPEN, Catalog
from vms.clock import SystemClock
from vms.config import from_dict
from vms.health import State
from vms.ingest.pyav_source import read_clip
from vms.recording import check, recovery
from vms.recording.segment import FileIO
from vms.recording.storage import Storage
from vms.server import Server
from vms.standin import StandinCamera, gstreamer_available

needs_standin = pytest.mark.skipif(
    not gstreamer_available(), reason="GStreamer RTSP server (Debian packages) not installed"
)
KEYINT = 25
INGEST = {"open_timeout_s": 5, "stall_timeout_s": 5, "backoff_initial_s": 0.2, "backoff_max_s": 1}


def feed(rig: Rig, clip: Path, frames: int | None = None) -> None:
    info, packets = read_clip(clip)
    rig.recorder.stream_started(info)
    for p in packets[:frames]:
        p.arrival = p.dts / info.video.timescale
        rig.recorder.packet(p)


class FailingSyncIO(FileIO):
    def fdatasync(self, fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


class RecordingIO(FileIO):
    def __init__(self) -> None:
        self.synced_dirs: list[Path] = []

    def fsync_dir(self, path: Path) -> None:
        self.synced_dirs.append(path)
        super().fsync_dir(path)


# --- the file: created, synced, never someone else's ---------------------------------------


def test_an_existing_file_is_never_touched(
    tmp_path: Path, catalog: Catalog, clips: dict[str, Path]
) -> None:
    # A recording that ends an hour ahead of the clock: the next one starts exactly there
    # (time.md: never before the previous end), so its file name is known in advance.
    first = make_rig(tmp_path, catalog)
    end = START_US + 3_600_000_000
    seg_id = catalog.open_segment(
        camera_id="cam1", stream=0, root_id=first.storage.roots[0].id or 0, path="x.mp4",
        start_us=end - 1, media_start=0, codec="h264", width=1, height=1, has_audio=False,
        timescale=90000,
    )  # fmt: skip
    catalog.close_segment(
        seg_id, end_us=end, init_bytes=0, size=0, fragments=0, frag_index=b"", crc32=0
    )
    first.writers.stop()
    rig = make_rig(tmp_path, catalog)
    day = rig.root / "cam1" / "2026-09-21"
    day.mkdir(parents=True)
    precious = day / f"{end}-main.mp4"
    precious.write_bytes(b"someone else's file")
    feed(rig, clips["h264"], 60)
    rig.stop()
    rig.writers.stop()
    assert precious.read_bytes() == b"someone else's file"
    assert "already exists" in (rig.health.record_error or "")
    assert [s.path for s in catalog.segments()] == ["x.mp4"], "no row for the refused file"


def test_failed_fdatasync_leaves_the_row_open_and_degrades(
    rig: Rig, clips: dict[str, Path]
) -> None:
    rig.storage.roots[0].io = FailingSyncIO()
    rig.health.stream_up("h264", 320, 240)  # the camera is streaming
    feed(rig, clips["h264"], 80)
    rig.stop()
    segs = rig.catalog.segments()
    assert segs and all(s.state == OPEN for s in segs), "a row closed over unsynced bytes"
    assert "fdatasync failed" in (rig.health.record_error or "")
    assert rig.health.state == State.DEGRADED


def test_new_camera_and_day_directories_are_synced(rig: Rig, clips: dict[str, Path]) -> None:
    io = RecordingIO()
    rig.storage.roots[0].io = io
    feed(rig, clips["h264"], 60)
    rig.stop()
    cam = rig.root / "cam1"
    assert rig.root in io.synced_dirs, "the camera directory's entry was not made durable"
    assert cam in io.synced_dirs, "the day directory's entry was not made durable"


def test_recovery_syncs_before_it_closes_a_row(
    rig: Rig, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    feed(rig, clips["h264"], 76)  # three whole fragments on disk, no torn tail
    assert rig.writers.flush()
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(recovery.os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    assert recovery.recover(rig.catalog, rig.storage) == 1
    assert synced, "the row was closed over bytes that may be only in the page cache"
    assert rig.catalog.segments()[0].state == CLOSED


def test_files_whose_rows_were_never_written_are_indexed(rig: Rig, clips: dict[str, Path]) -> None:
    feed(rig, clips["h264"])
    rig.stop()
    before = rig.catalog.segments()
    assert len(before) == 2
    with rig.catalog.engine.begin() as c:  # the catalog never heard of them
        c.execute(sa.text("DELETE FROM segments"))
    stray = rig.root / "cam1" / "2026-09-21" / "notes.txt"
    stray.write_text("not a segment")
    assert recovery.recover(rig.catalog, rig.storage) == 2
    after = rig.catalog.segments()
    key = [(s.path, s.start_us, s.end_us, s.media_start, s.bytes, s.crc32) for s in before]
    assert [(s.path, s.start_us, s.end_us, s.media_start, s.bytes, s.crc32) for s in after] == key
    assert all(s.state == CLOSED and s.codec == "h264" for s in after)
    assert check.run(rig.catalog, rig.storage).ok
    assert stray.read_text() == "not a segment"


# --- a slow root and an absent catalog, against real servers ---------------------------------


def _config(tmp_path: Path, cameras: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    for name in ("fast", "slow"):
        (tmp_path / name).mkdir(exist_ok=True)
    return {
        "data_dir": str(tmp_path / "data"),
        "storage": {
            "roots": [
                {"name": "fast", "path": str(tmp_path / "fast"), "min_free_bytes": 0},
                {"name": "slow", "path": str(tmp_path / "slow"), "min_free_bytes": 0},
            ]
        },
        "recording": {"segment_seconds": 2, "stagger": False, "write_backlog_seconds": 3},
        "ingest": INGEST,
        "cameras": cameras,
        **extra,
    }


@needs_standin
def test_a_slow_root_delays_only_its_own_cameras(tmp_path: Path) -> None:
    with StandinCamera(width=320, height=240, keyint=KEYINT) as standin:
        cams = [
            {"id": "fast1", "main": {"url": standin.url}, "roots": ["fast"]},
            {"id": "fast2", "main": {"url": standin.url}, "roots": ["fast"]},
            {"id": "slow1", "main": {"url": standin.url}, "roots": ["slow"]},
        ]
        server = Server(from_dict(_config(tmp_path, cams)))
        server.open()
        server.storage.roots[1].io = SlowIO(2.0)  # the bench's slow disk
        fast = [server.camera("fast1"), server.camera("fast2")]
        slow = server.camera("slow1")
        server.run()
        try:
            for cam in [*fast, slow]:
                wait_for(lambda c=cam: c.health.state == State.ONLINE, 15, f"{cam.config.id}")
            assert slow.recorder is not None
            wait_for(
                lambda: slow.recorder.stats.frames_dropped_backlog > 0,  # type: ignore[union-attr]
                30,
                "the slow root's camera to drop for want of disk",
            )
            start = [c.recorder.stats.frames_written for c in fast]  # type: ignore[union-attr]
            t0 = time.monotonic()
            wait_for(
                lambda: all(
                    c.recorder.stats.frames_written >= s + 100  # type: ignore[union-attr]
                    for c, s in zip(fast, start, strict=True)
                ),
                20,
                "4 s of video from each camera on the fast root",
            )
            elapsed = time.monotonic() - t0
            assert elapsed < 8, f"the fast root's cameras fell behind ({elapsed:.1f} s for 4 s)"
            assert server.reactor.max_round_s < 1.0, "the reader waited on the slow disk"
        finally:
            server.stop()
        for cam in fast:
            st = cam.recorder.stats  # type: ignore[union-attr]
            assert st.frames_dropped < KEYINT, "only frames before the first keyframe may go"
            assert st.frames_dropped_backlog == 0 and st.frames_lost_writing == 0
            assert cam.health.reconnects == 0
        assert slow.recorder.stats.frames_dropped_backlog > 0  # counted, not silent
        assert slow.health.reconnects == 0, "a slow disk must not cost the camera its session"


@needs_standin
def test_the_catalog_away_for_20_s_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    url = sa.engine.make_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with StandinCamera(width=320, height=240, keyint=KEYINT) as standin:
            cams = [
                {"id": f"cam{i}", "main": {"url": standin.url}, "roots": ["fast"]} for i in range(3)
            ]
            server = Server(from_dict(_config(tmp_path, cams, catalog={"url": via_proxy})))
            server.start()
            recorders = [c.recorder for c in server.cameras]
            rows = server.writers.catalog_thread
            try:
                wait_for(lambda: rows.rows_written >= 6, 20, "rows of the first segments")
                proxy.cut()
                wait_for(lambda: rows.outage is not None, 20, "the outage to be noticed")
                cut_at = time.monotonic()
                closed_before = sum(r.stats.segments for r in recorders)  # type: ignore[union-attr]
                wait_for(
                    lambda: (
                        time.monotonic() - cut_at >= 20
                        and sum(r.stats.segments for r in recorders) >= closed_before + 9
                    ),  # type: ignore[union-attr]
                    40,
                    "20 s of recording with the catalog away",
                )
                assert all(c.health.state == State.ONLINE for c in server.cameras)
                assert rows.backlog > 0
                proxy.restore()
                wait_for(lambda: rows.outage is None and rows.backlog == 0, 30, "rows caught up")
            finally:
                server.stop()
    finally:
        proxy.close()
    for r in recorders:
        assert r is not None
        assert r.stats.frames_dropped < KEYINT, "only frames before the first keyframe may go"
        assert r.stats.frames_dropped_backlog == 0 and r.stats.frames_lost_writing == 0
    catalog = Catalog(postgres_url)
    try:
        segs = catalog.segments()
        assert segs and all(s.state == CLOSED for s in segs)
        on_disk = {
            str(p.relative_to(tmp_path / "fast")) for p in (tmp_path / "fast").rglob("*.mp4")
        }
        assert {s.path for s in segs} == on_disk, "a file without a row, or a row without a file"
        storage = Storage(server.config.storage.roots, catalog, SystemClock())
        storage.verify()
        report = check.run(catalog, storage)
        assert report.ok, report.problems
    finally:
        catalog.close()
