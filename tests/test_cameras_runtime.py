"""Cameras at run time and sub-streams, through the app's lifespan: a camera added, changed,
disabled and removed while ten others record loses them nothing; a sub stream is opened, fanned
out, and recorded when configured."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.support.app import running_app
from tests.support.polling import wait_for
from vms.catalog.store import CLOSED, Catalog
from vms.config import CameraConfig, StreamName, from_dict
from vms.health import State
from vms.media import MAIN, SUB, FragmentWritten, Packet, StreamStart
from vms.server import Camera
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(
    not gstreamer_available(), reason="GStreamer RTSP server (Debian packages) not installed"
)
KEYINT = 25
INGEST = {"open_timeout_s": 5, "stall_timeout_s": 5, "backoff_initial_s": 0.2, "backoff_max_s": 1}


def config(tmp_path: Path, cameras: list[dict[str, Any]]) -> dict[str, Any]:
    root = tmp_path / "r1"
    root.mkdir(exist_ok=True)
    return {
        "data_dir": str(tmp_path),
        "storage": {"roots": [{"name": "r1", "path": str(root), "min_free_bytes": 0}]},
        "recording": {"segment_seconds": 2, "write_backlog_seconds": 600},
        "ingest": INGEST,
        "cameras": cameras,
    }


def written(cam: Camera) -> int:
    assert cam.recorder is not None
    return cam.recorder.stats.frames_written


def test_a_camera_added_changed_and_removed_while_ten_record(tmp_path: Path) -> None:
    with StandinCamera(width=320, height=240, keyint=KEYINT) as standin:
        cams = [{"id": f"c{i}", "main": {"url": standin.url}} for i in range(10)]
        with running_app(from_dict(config(tmp_path, cams))) as (client, server):
            others = server.cameras
            for cam in others:
                wait_for(lambda c=cam: written(c) > 0, 30, f"{cam.config.id} recording")

            new = CameraConfig.model_validate({"id": "new", "main": {"url": standin.url}})
            added = server.add_camera(new)
            wait_for(lambda: written(added) >= 50, 30, "the added camera recording")
            assert client.get("/api/v1/cameras/new").json()["health"]["state"] == "online"

            changed = server.update_camera(new.model_copy(update={"name": "Front door"}))
            assert changed is not added and changed.config.display_name == "Front door"
            wait_for(lambda: written(changed) >= 50, 30, "the changed camera recording again")

            disabled = server.set_enabled("new", False)
            assert disabled.recorder is None and disabled.health.state == State.DISABLED

            server.remove_camera("new")
            assert "new" not in {c.config.id for c in server.cameras}
            assert client.get("/api/v1/cameras/new").status_code == 404
            # The others go on: 2 s more of video each after all the changes.
            marks = [written(c) for c in others]
            for cam, mark in zip(others, marks, strict=True):
                wait_for(lambda c=cam, m=mark: written(c) >= m + 50, 30, "the others going on")
    for cam in others:
        st = cam.recorder.stats  # type: ignore[union-attr]
        assert cam.health.reconnects == 0, f"{cam.config.id} was disturbed"
        assert st.frames_dropped < KEYINT, "only frames before the first keyframe may go"
        assert st.frames_dropped_backlog == 0 and st.frames_lost_writing == 0
        assert st.frames_written + st.frames_dropped == cam.health.frames, cam.config.id
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        segs = cat.segments(camera_id="new")
        assert segs and all(s.state == CLOSED for s in segs), "its segments were closed"
        assert all((tmp_path / "r1" / s.path).stat().st_size == s.bytes for s in segs)
    finally:
        cat.close()


def test_a_sub_stream_is_fanned_out_and_recorded_when_asked(tmp_path: Path) -> None:
    with (
        StandinCamera(width=320, height=240, keyint=KEYINT) as main,
        StandinCamera(width=160, height=128, keyint=KEYINT) as sub,
    ):
        cams = [
            {"id": "both", "main": {"url": main.url}, "sub": {"url": sub.url},
             "record_streams": ["main", "sub"]},
            {"id": "live", "main": {"url": main.url}, "sub": {"url": sub.url}},
        ]  # fmt: skip
        with running_app(from_dict(config(tmp_path, cams))) as (_, server):
            both, live = server.camera("both"), server.camera("live")
            recorders = both.recorders
            assert [r.stream for r in recorders] == [MAIN, SUB]
            for r in recorders:
                wait_for(lambda r=r: r.stats.segments >= 1, 30, "a closed segment per stream")
            # Not recorded, still opened and fanned out (the wall, detection).
            live_sub = live.streams[StreamName.SUB]
            assert live_sub.recorder is None and live.recorder is not None
            reader = live_sub.relay.subscribe_blocking()
            first = reader.get(30)
            assert isinstance(first, StreamStart) and first.info.video.width == 160
            packet = reader.get(30)
            assert isinstance(packet, Packet) and packet.keyframe
            reader.close()
            assert live_sub.health.state == State.ONLINE
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        segs = cat.segments(camera_id="both")
        by_stream = {s.stream: s for s in segs}
        assert by_stream[MAIN].width == 320 and by_stream[MAIN].path.endswith("-main.mp4")
        assert by_stream[SUB].width == 160 and by_stream[SUB].path.endswith("-sub.mp4")
        assert {s.stream for s in cat.segments(camera_id="live")} == {MAIN}
    finally:
        cat.close()


def test_record_streams_must_name_a_configured_stream() -> None:
    with pytest.raises(ValueError, match="no sub stream"):
        CameraConfig.model_validate(
            {"id": "x", "main": {"url": "rtsp://h/"}, "record_streams": ["sub"]}
        )


def test_cameras_changed_at_run_time_survive_a_restart(tmp_path: Path) -> None:
    with StandinCamera(width=320, height=240, keyint=KEYINT) as standin:
        cfg = from_dict(config(tmp_path, [{"id": "file", "main": {"url": standin.url}}]))
        with running_app(cfg) as (_, server):
            added = CameraConfig.model_validate(
                {"id": "api", "main": {"url": standin.url}, "username": "admin",
                 "password": "s3cret-pass"}
            )  # fmt: skip
            server.add_camera(added)
            server.set_enabled("file", False)
        assert b"s3cret-pass" not in (tmp_path / "catalog.db").read_bytes()
        with running_app(cfg) as (client, server):
            ids = {c.config.id: c for c in server.cameras}
            assert set(ids) == {"file", "api"}
            assert not ids["file"].config.enabled, "a change made at run time was lost"
            secret = ids["api"].config.password
            assert secret is not None and secret.get_secret_value() == "s3cret-pass"
            assert "s3cret-pass" not in client.get("/api/v1/cameras").text
            wait_for(lambda: written(ids["api"]) > 0, 30, "the added camera recording again")


def test_the_recorder_announces_each_fragment_it_wrote(tmp_path: Path) -> None:
    """Playback of the last minute: each announcement names bytes already in the file, a whole
    ``moof`` + ``mdat``, on one decode time line across the segments of a run."""
    with StandinCamera(width=320, height=240, keyint=KEYINT) as standin:
        cfg = from_dict(config(tmp_path, [{"id": "cam", "main": {"url": standin.url}}]))
        with running_app(cfg) as (_, server):
            reader = server.camera("cam").relay.subscribe_blocking(maxlen=10_000)
            frags: list[FragmentWritten] = []
            while len({f.segment_start_us for f in frags}) < 3:  # across two rotations
                it = reader.get(30)
                assert it is not None, "no fragment announced"
                if isinstance(it, FragmentWritten):
                    frags.append(it)
                    head = (tmp_path / "r1" / it.path).read_bytes()[it.offset : it.offset + 8]
                    assert len(head) == 8 and head[4:8] == b"moof", "announced before written"
    for a, b in itertools.pairwise(frags):
        assert b.decode_time == a.decode_time + a.duration, "decode time not continuous"
        if a.path == b.path:
            assert b.offset == a.offset + a.size
        else:
            assert b.keyframe and b.segment_start_us > a.segment_start_us
    assert {f.stream for f in frags} == {MAIN} and all(f.root == "r1" for f in frags)
