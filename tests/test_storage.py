"""Storage roots and retention: identity, quotas, free space, full disks, missing disks."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rig
from tests.support.app import running_app
from tests.support.polling import wait_for
from vms.audit.log import AuditLog
from vms.catalog.store import CLOSED, Catalog
from vms.config import from_dict
from vms.errors import Kind, VmsError
from vms.health import State
from vms.ingest.pyav_source import read_clip
from vms.recording import check
from vms.recording.retention import Retention
from vms.recording.storage import IDENTITY
from vms.server import Server


def record(rig: Rig, clip: Path) -> None:
    info, packets = read_clip(clip)
    rig.recorder.stream_started(info)
    for p in packets:
        p.arrival = p.dts / info.video.timescale
        rig.recorder.packet(p)
    rig.stop()


def retention_for(rig: Rig, **root: object) -> Retention:
    cfg = from_dict(
        {
            "storage": {
                "roots": [{"name": "r1", "path": str(rig.root), "min_free_bytes": 0, **root}]
            },
            "cameras": [{"id": "cam1", "main": {"url": "rtsp://h/s"}, "retention_days": 1}],
        }
    )
    rig.storage.roots[0].config = cfg.storage.roots[0]
    audit = AuditLog(rig.catalog, rig.root.parent / "data", rig.clock)
    return Retention(cfg, rig.catalog, rig.storage, rig.clock, audit=audit)


def test_retention_by_days_deletes_rows_then_files(rig: Rig, clips: dict[str, Path]) -> None:
    record(rig, clips["h264"])
    segs = rig.catalog.segments()
    retention = retention_for(rig)
    assert retention.run_once() == 0, "nothing is a day old yet"
    rig.clock.step(86_400 + 60)
    assert retention.run_once() == len(segs) == 2
    assert rig.catalog.segments() == [] and rig.catalog.garbage() == []
    assert not any((rig.root / s.path).exists() for s in segs)
    assert retention.audit is not None
    (entry,) = retention.audit.query(action="retention.")
    assert entry.actor == "system" and entry.details["segments"] == 2
    assert entry.details["cameras"] == ["cam1"] and "older than 1 days" in entry.details["reason"]


def test_retention_by_bytes_deletes_oldest_first(rig: Rig, clips: dict[str, Path]) -> None:
    for _ in range(3):
        record(rig, clips["h264"])
    segs = rig.catalog.segments()
    total = sum(s.bytes for s in segs)
    retention = retention_for(rig, max_bytes=total // 2)
    retention.run_once()
    left = rig.catalog.segments()
    assert sum(s.bytes for s in left) <= total // 2
    assert [s.id for s in left] == [s.id for s in segs[-len(left) :]], "oldest must go first"
    assert check.run(rig.catalog, rig.storage).ok


def test_quarantined_segments_go_with_retention_like_closed_ones(
    rig: Rig, clips: dict[str, Path]
) -> None:
    for _ in range(2):
        record(rig, clips["h264"])
    segs = rig.catalog.segments()
    assert rig.catalog.quarantine(segs[0].id)
    retention = retention_for(rig, max_bytes=sum(s.bytes for s in segs) - 1)
    assert retention.run_once() == 1
    assert [s.id for s in rig.catalog.segments()] == [s.id for s in segs[1:]], "oldest first"
    assert not (rig.root / segs[0].path).exists()
    assert rig.catalog.quarantine(segs[1].id)
    rig.clock.step(86_400 + 60)
    assert retention.run_once() == len(segs) - 1
    assert rig.catalog.segments() == []


def test_a_free_space_pass_deletes_at_most_the_shortfall(
    rig: Rig, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that frees space late (copy-on-write, snapshots, a file held open
    elsewhere) shows no more room after a deletion than before it."""
    for _ in range(3):
        record(rig, clips["h264"])
    segs = rig.catalog.segments()
    total = sum(s.bytes for s in segs)
    shortfall = total // 3
    min_free = 1 << 40
    retention = retention_for(rig, min_free_bytes=min_free)
    monkeypatch.setattr(rig.storage.roots[0], "free_bytes", lambda: min_free - shortfall)
    retention.run_once()
    left = rig.catalog.segments()
    gone = total - sum(s.bytes for s in left)
    assert shortfall <= gone < shortfall + max(s.bytes for s in segs), (gone, shortfall, total)
    assert [s.id for s in left] == [s.id for s in segs[-len(left) :]], "oldest must go first"
    assert rig.storage.roots[0].used_bytes == total - gone


def test_unmounted_root_is_refused_and_nothing_is_deleted(rig: Rig, clips: dict[str, Path]) -> None:
    record(rig, clips["h264"])
    segs = rig.catalog.segments()
    ident = rig.root / IDENTITY
    saved = ident.read_text()
    ident.unlink()  # what an empty mount point looks like
    retention = retention_for(rig, max_bytes=1)
    retention.run_once()
    root = rig.storage.roots[0]
    assert not root.usable and "missing" in (root.error or "")
    assert len(rig.catalog.segments()) == len(segs)
    assert all((rig.root / s.path).exists() for s in segs)
    with pytest.raises(VmsError) as e:
        rig.storage.choose()
    assert e.value.kind == Kind.STORAGE_MISSING
    ident.write_text(saved)  # the disk is back
    rig.storage.verify()
    assert root.usable


def test_swapped_disk_is_refused(rig: Rig, clips: dict[str, Path]) -> None:
    record(rig, clips["h264"])
    (rig.root / IDENTITY).write_text(json.dumps({"uuid": "another-disk"}))
    rig.storage.verify()
    root = rig.storage.roots[0]
    assert not root.usable and "another disk" in (root.error or "")
    retention_for(rig, max_bytes=1).run_once()
    assert len(rig.catalog.segments()) == 2


def _server_config(
    tmp_path: Path, clip: Path, roots: list[dict[str, object]], **cams: list[str]
) -> dict[str, object]:
    return {
        "data_dir": str(tmp_path / "data"),
        "server": {"port": 0},
        "recording": {"segment_seconds": 2},
        "storage": {"roots": roots, "retention_interval_s": 0.2},
        "cameras": [
            {"id": cam, "main": {"url": clip.as_uri()}, "roots": root_names}
            for cam, root_names in cams.items()
        ],
    }


def test_missing_root_at_start(tmp_path: Path, clips: dict[str, Path]) -> None:
    missing = tmp_path / "not-mounted"
    good = tmp_path / "good"
    good.mkdir()
    raw = _server_config(tmp_path, clips["h264"], [{"name": "gone", "path": str(missing)}])
    with pytest.raises(VmsError) as e:
        Server(from_dict(raw)).start()
    assert e.value.kind == Kind.STORAGE_MISSING and str(missing) in e.value.message
    cfg_file = tmp_path / "vms.yaml"
    cfg_file.write_text(json.dumps(raw))
    result = subprocess.run(
        [sys.executable, "-m", "vms", "serve", "--config", str(cfg_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "is missing" in result.stderr
    raw = _server_config(
        tmp_path, clips["h264"],
        [{"name": "gone", "path": str(missing)}, {"name": "good", "path": str(good), "min_free_bytes": 0}],
        cam1=["gone", "good"],
    )  # fmt: skip
    server = Server(from_dict(raw))
    server.start()
    try:
        wait_for(lambda: server.cameras[0].recorder.stats.fragments >= 1)  # type: ignore[union-attr]
        assert [r.name for r in server.storage.usable()] == ["good"]
        assert not missing.exists(), "a missing root must never be created"
    finally:
        server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB filesystem (tmpfs), so ENOSPC is the kernel's, not a fake."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path, leave: int = 0) -> int:
    """Write a foreign file until the filesystem has ``leave`` bytes free (or is full)."""
    import os

    written = 0
    chunk = b"\xaa" * 65536
    with open(path, "wb") as f:
        while True:
            st = os.statvfs(path.parent)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                f.write(chunk[: max(4096, min(len(chunk), free - leave))])
                f.flush()
            except OSError:
                break
            written += 1
    return written


def test_disk_full_then_space_returns(
    tmp_path: Path, clips: dict[str, Path], small_disk: Path
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    raw = _server_config(
        tmp_path, clips["h264"],
        [{"name": "small", "path": str(small_disk), "min_free_bytes": 0},
         {"name": "big", "path": str(big), "min_free_bytes": 0}],
        full=["small"], other=["big"],
    )  # fmt: skip
    server = Server(from_dict(raw))
    server.start()
    full, other = server.cameras
    assert full.recorder is not None and other.recorder is not None
    try:
        wait_for(lambda: full.recorder.stats.fragments >= 2)  # type: ignore[union-attr]
        fill(small_disk / "foreign.bin")
        wait_for(lambda: full.health.state == State.DEGRADED)
        assert "storage full" in (full.health.last_error or "")
        stuck = full.recorder.stats.frames_written
        before_other = other.recorder.stats.frames_written
        # Two more seconds of video from the other camera, however loaded the machine is.
        wait_for(
            lambda: other.recorder.stats.frames_written >= before_other + 50,  # type: ignore[union-attr]
            30,
            "the other camera to keep recording",
        )
        assert full.recorder.stats.frames_written == stuck
        assert other.health.state == State.ONLINE and other.recorder.stats.frames_dropped == 0
        (small_disk / "foreign.bin").unlink()
        returned = time.monotonic()
        wait_for(lambda: full.recorder.stats.frames_written > stuck)  # type: ignore[union-attr]
        # Retention and the retry both run every second: ~2 s on a quiet machine.
        assert time.monotonic() - returned < 10.0, "recording must resume within seconds"

        wait_for(lambda: full.health.state == State.ONLINE)
        health = full.health.snapshot()
        assert health["last_error"] is None, "the error clears once the camera records again"
        assert "storage full" in health["previous_error"] and health["error_cleared_us"]
    finally:
        server.stop()
    catalog = Catalog(server.config.catalog_url())
    report = check.run(catalog, server.storage)
    catalog.close()
    assert report.ok, report.problems


def test_foreign_file_makes_oldest_recordings_go_before_a_write_fails(
    tmp_path: Path, clips: dict[str, Path], small_disk: Path
) -> None:
    min_free = 1 << 20
    raw = _server_config(
        tmp_path, clips["h264"],
        [{"name": "small", "path": str(small_disk), "min_free_bytes": min_free}],
        cam=["small"],
    )  # fmt: skip
    server = Server(from_dict(raw))
    server.start()
    cam = server.cameras[0]
    assert cam.recorder is not None
    try:
        wait_for(lambda: len(server.catalog.segments(state=CLOSED)) >= 3, timeout=30)
        first = server.catalog.segments(state=CLOSED)[0]
        recorded = sum(s.bytes for s in server.catalog.segments(state=CLOSED))
        # Leave less than the minimum free space, by less than what recordings occupy.
        fill(small_disk / "foreign.bin", leave=min_free - recorded // 2)
        wait_for(lambda: server.catalog.segments()[0].id != first.id)
        time.sleep(1.0)
        assert cam.recorder.stats.write_errors == 0
        assert cam.health.state == State.ONLINE
        assert not (small_disk / first.path).exists()
        assert server.retention.deleted_segments >= 1
    finally:
        server.stop()
        with contextlib.suppress(FileNotFoundError):
            (small_disk / "foreign.bin").unlink()


def test_a_disk_filled_by_someone_else_is_reported_until_the_space_returns(
    tmp_path: Path, clips: dict[str, Path], small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vms.recording.retention")
    min_free = 1 << 20
    raw = _server_config(
        tmp_path, clips["h264"],
        [{"name": "small", "path": str(small_disk), "min_free_bytes": min_free}],
        cam=["small"],
    )  # fmt: skip
    foreign = small_disk / "foreign.bin"
    reason = "are not recordings; recordings were deleted early to keep writing"

    def early_metric() -> float:
        prefix = 'vms_root_bytes_deleted_early_total{root="small"} '
        lines = client.get("/metrics").text.splitlines()
        return float(next(line for line in lines if line.startswith(prefix)).split()[-1])

    with running_app(from_dict(raw)) as (client, server):
        root, cam = server.storage.roots[0], server.cameras[0]
        wait_for(lambda: len(server.catalog.segments(state=CLOSED)) >= 3, timeout=30)
        assert client.get("/healthz").json()["roots"] == {"small": "ok"}
        assert early_metric() == 0
        recorded = sum(s.bytes for s in server.catalog.segments(state=CLOSED))
        fill(foreign, leave=min_free - recorded // 2)
        wait_for(lambda: root.bytes_deleted_early > 0, 10, "recordings deleted early")
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert (
            health["roots"]["small"].startswith("degraded: ") and reason in health["roots"]["small"]
        )
        assert " MB on this disk" in health["roots"]["small"]
        (item,) = client.get("/api/v1/storage").json()["roots"]
        assert item["usable"] and item["state"] == "degraded" and reason in item["warning"]
        # The camera keeps writing, so later passes delete early too; the log says it once.
        early = root.bytes_deleted_early
        wait_for(lambda: root.bytes_deleted_early > early, 30, "a later pass deleting early")
        assert early_metric() > early
        assert client.get("/api/v1/storage").json()["roots"][0]["bytes_deleted_early"] > early
        said = [r for r in caplog.records if reason in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING, said
        foreign.unlink()
        wait_for(lambda: root.warning is None, 10, "the warning to clear with the space")
        assert client.get("/healthz").json()["roots"] == {"small": "ok"}
        (item,) = client.get("/api/v1/storage").json()["roots"]
        assert item["state"] == "ok" and item["warning"] is None
        wait_for(lambda: cam.health.state == State.ONLINE, 10, "the camera online")
        assert cam.health.snapshot()["last_error"] is None
        with contextlib.suppress(FileNotFoundError):
            foreign.unlink()


def test_a_non_empty_directory_is_not_claimed(tmp_path: Path, catalog: Catalog) -> None:
    from vms.clock import SystemClock
    from vms.recording.storage import Storage

    full = tmp_path / "someone-elses"
    full.mkdir()
    (full / "holiday.jpg").write_bytes(b"\xff\xd8")
    fresh = tmp_path / "fresh-disk"
    (fresh / "lost+found").mkdir(parents=True)
    cfg = from_dict(
        {
            "storage": {
                "roots": [{"name": "a", "path": str(full)}, {"name": "b", "path": str(fresh)}]
            }
        }
    )
    storage = Storage(cfg.storage.roots, catalog, SystemClock())
    storage.verify()
    a, b = storage.roots
    assert not a.usable and "not ours to claim" in (a.error or "")
    assert not (full / IDENTITY).exists()
    assert b.usable and (fresh / IDENTITY).exists()
