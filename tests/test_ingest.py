"""Ingest end to end: a real Server against real and misbehaving RTSP cameras.

Every failure case checks three things: the camera's health (state and a readable
``last_error``), that ingest keeps retrying, and that another camera in the same server keeps
recording in real time meanwhile (one camera's trouble must never stall another's thread).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
import yaml

from tests.support.app import running_app
from tests.support.bad_rtsp import Garbage, StallAfterPlay, StallBeforePlay
from tests.support.polling import free_port, wait_for
from vms import config as config_mod
from vms.auth import local
from vms.catalog.store import CLOSED, OPEN, Catalog, Segment
from vms.health import CameraHealth, State
from vms.server import Camera, Server
from vms.standin import StandinCamera, gstreamer_available, make_self_signed_cert

needs_standin = pytest.mark.skipif(
    not gstreamer_available(),
    reason="GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, x264enc) missing",
)

INGEST = {"open_timeout_s": 2, "stall_timeout_s": 2, "backoff_initial_s": 0.2, "backoff_max_s": 1}
CLIP_FPS = 25  # the `clips` fixture's frame rate
KEYINT = 25  # the stand-ins' GOP


@pytest.fixture(autouse=True, params=["pyav", "native"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case runs with both RTSP readers (UDP, RTSPS and files always use PyAV)."""
    monkeypatch.setitem(INGEST, "reader", request.param)
    return str(request.param)


# --- helpers -------------------------------------------------------------------------------


def config_dict(
    tmp_path: Path, cameras: list[dict[str, Any]], *, segment_seconds: float = 60
) -> dict[str, Any]:
    root = tmp_path / "r1"
    root.mkdir(exist_ok=True)
    return {
        "data_dir": str(tmp_path),
        "storage": {"roots": [{"name": "r1", "path": str(root), "min_free_bytes": 0}]},
        "recording": {"segment_seconds": segment_seconds, "stagger": False},
        "ingest": INGEST,
        "cameras": cameras,
    }


def build(tmp_path: Path, cameras: list[dict[str, Any]], **kw: Any) -> Server:
    """A server with its cameras built and no reader running yet (``serving`` runs them)."""
    server = Server(config_mod.from_dict(config_dict(tmp_path, cameras, **kw)))
    server.open()
    return server


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    server.run()
    try:
        yield server
    finally:
        server.stop()


def camera(cam_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": cam_id, "main": {"url": url, **extra}}


def segments(tmp_path: Path, cam_id: str) -> list[Segment]:
    """The camera's segments, read through a fresh catalog (after the server has stopped)."""
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        return cat.segments(camera_id=cam_id)
    finally:
        cat.close()


def decode(path: Path) -> dict[str, Any]:
    """Decode a whole segment file; returns what was in it."""
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        out: dict[str, Any] = {"codec": video.codec_context.name, "sizes": set(), "frames": 0}
        for frame in c.decode(video=0):
            out["frames"] += 1
            out["sizes"].add((frame.width, frame.height))
    out["audio_codec"] = None
    out["audio_frames"] = 0
    with av.open(str(path)) as c:
        if c.streams.audio:
            out["audio_codec"] = c.streams.audio[0].codec_context.name
            out["audio_frames"] = sum(1 for _ in c.decode(audio=0))
    return out


def check_closed(tmp_path: Path, cam_id: str) -> list[tuple[Segment, dict[str, Any]]]:
    """All segments are closed, none overlap, each decodes to its catalogued size."""
    segs = segments(tmp_path, cam_id)
    assert segs, f"{cam_id}: nothing recorded"
    assert all(s.state == CLOSED for s in segs), "a segment was left open"
    for prev, seg in itertools.pairwise(segs):
        assert seg.start_us >= prev.end_us, "segments overlap"
    out = []
    for seg in segs:
        assert seg.end_us > seg.start_us
        found = decode(tmp_path / "r1" / seg.path)
        assert found["frames"] > 0, f"segment {seg.id} decodes to nothing"
        assert found["sizes"] == {(seg.width, seg.height)}, "catalogued size is not the real one"
        out.append((seg, found))
    return out


class Bystander:
    """A looped-clip camera in the same server that must keep recording in real time."""

    def __init__(self, cam: Camera) -> None:
        assert cam.recorder is not None
        self.cam = cam
        self.stats = cam.recorder.stats
        wait_for(lambda: self.stats.frames_written > 0, 20, "the bystander's first fragment")
        self.f0 = self.stats.frames_written

    def check(self, seconds: float = 2.0) -> None:
        """The bystander recorded ``seconds`` more of video since it was first seen, lost
        nothing and stayed online (an event, not a rate: a loaded machine may take longer)."""
        frames = int(CLIP_FPS * seconds)
        wait_for(
            lambda: self.stats.frames_written >= self.f0 + frames, 30, f"{frames} bystander frames"
        )
        assert self.cam.health.state == State.ONLINE, self.cam.health.last_error
        assert self.stats.frames_dropped == 0


def bystander_config(clips: dict[str, Path]) -> dict[str, Any]:
    return camera("bystander", clips["h264"].as_uri())


def states_of(health: CameraHealth) -> list[State]:
    seen: list[State] = []
    health.subscribe(lambda h: seen.append(h.state))
    return seen


# --- failures ------------------------------------------------------------------------------


def test_unreachable_camera_retries_with_growing_backoff(
    tmp_path: Path, clips: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vms.ingest.pyav_reader")
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    srv = build(tmp_path, [bystander_config(clips), camera("bad", url)])
    with serving(srv):
        other = Bystander(srv.camera("bystander"))
        bad = srv.camera("bad").health
        wait_for(lambda: bad.reconnects >= 6, 20, "six reconnects")
        assert bad.state == State.OFFLINE
        assert bad.last_error is not None and "Connection refused" in bad.last_error
        other.check()
    retries = [
        r for r in caplog.records if getattr(r, "camera", None) == "bad" and "retrying" in r.msg
    ]
    assert len(retries) >= 6
    delays = [float(r.args[1]) for r in retries]  # type: ignore[index]
    # 0.2 s doubling to 1 s, each ±20 %.
    assert 0.16 <= delays[0] <= 0.24
    assert 0.32 <= delays[1] <= 0.48
    assert 0.64 <= delays[2] <= 0.96
    assert all(0.8 <= d <= 1.2 for d in delays[3:6]), delays
    # It really waits that long between attempts.
    for (a, b), delay in zip(itertools.pairwise(retries[:6]), delays, strict=False):
        assert b.created - a.created >= delay * 0.95, "retried before the backoff ran out"


def test_stall_before_play_times_out_and_retries(tmp_path: Path, clips: dict[str, Path]) -> None:
    with StallBeforePlay() as stall:
        srv = build(tmp_path, [bystander_config(clips), camera("bad", stall.url)])
        bad = srv.camera("bad").health
        seen = states_of(bad)
        began_us = time.time_ns() // 1000
        with serving(srv):
            other = Bystander(srv.camera("bystander"))
            wait_for(lambda: bad.state == State.OFFLINE, 20, "offline")
            after = (bad.since_us - began_us) / 1e6
            assert 1.7 <= after <= 6.0, f"declared offline after {after:.1f} s (open timeout 2 s)"
            assert bad.last_error is not None and "timed out" in bad.last_error
            wait_for(lambda: bad.reconnects >= 2, 20, "a second retry")
            assert stall.requests.count("OPTIONS") >= 2, "no new connection on retry"
            assert bad.state == State.OFFLINE
            other.check()
        assert State.ONLINE not in seen


def test_stall_after_play_is_declared_stalled_and_reopened(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with StallAfterPlay() as stall:
        srv = build(tmp_path, [bystander_config(clips), camera("bad", stall.url)])
        bad = srv.camera("bad").health
        seen = states_of(bad)
        began_us = time.time_ns() // 1000
        with serving(srv):
            other = Bystander(srv.camera("bystander"))
            wait_for(lambda: bad.state == State.OFFLINE, 20, "offline")
            after = (bad.since_us - began_us) / 1e6
            # The open returns after about the open timeout; then no packet for the stall timeout.
            assert 1.8 <= after <= 6.5, f"declared stalled after {after:.1f} s"
            assert "PLAY" in stall.requests
            assert bad.last_error is not None
            assert "stalled" in bad.last_error and "timed out" in bad.last_error
            wait_for(lambda: stall.requests.count("PLAY") >= 2, 20, "a second PLAY (reopen)")
            assert bad.reconnects >= 1
            other.check()
        # Set up but never sent a frame: never shown as online.
        assert seen == [State.OFFLINE]


def test_garbage_on_the_rtsp_port(tmp_path: Path, clips: dict[str, Path]) -> None:
    with Garbage() as garbage:
        srv = build(tmp_path, [bystander_config(clips), camera("bad", garbage.url)])
        bad = srv.camera("bad").health
        with serving(srv):
            other = Bystander(srv.camera("bystander"))
            wait_for(lambda: bad.state == State.OFFLINE, 20, "offline")
            error = bad.last_error or ""
            assert "no valid RTSP answer" in error or "Invalid data" in error, error
            assert "rtsp://" not in error
            wait_for(lambda: bad.reconnects >= 2, 20, "a second retry")
            assert bad.state == State.OFFLINE
            other.check()


# --- a real camera -------------------------------------------------------------------------


def record_standin(
    tmp_path: Path,
    standin: StandinCamera,
    *,
    frames: int = 50,
    cam_extra: dict[str, Any] | None = None,
    url: str | None = None,
    until: Callable[[Camera], bool] | None = None,
) -> Camera:
    """Record a stand-in until ``frames`` frames are on disk (and ``until``), then stop."""
    srv = build(tmp_path, [camera("cam", url or standin.url, **(cam_extra or {}))])
    cam = srv.camera("cam")
    assert cam.recorder is not None
    stats = cam.recorder.stats
    with serving(srv):
        wait_for(lambda: cam.health.state == State.ONLINE, 20, "online")
        wait_for(lambda: stats.frames_written >= frames, 20, f"{frames} frames on disk")
        if until is not None:
            wait_for(lambda: until(cam), 20, "the condition")
        assert cam.health.state == State.ONLINE, cam.health.last_error
    # Only frames before the first keyframe (the client joins mid-GOP) may be dropped.
    assert stats.frames_dropped < KEYINT
    return cam


@needs_standin
def test_camera_goes_away_and_comes_back_on_the_same_port(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    first = StandinCamera(width=320, height=240, keyint=KEYINT).start()
    try:
        port = first.port
        srv = build(tmp_path, [bystander_config(clips), camera("cam", first.url)])
        cam = srv.camera("cam")
        assert cam.recorder is not None
        stats = cam.recorder.stats
        with serving(srv):
            wait_for(lambda: cam.health.state == State.ONLINE, 20, "online")
            assert (cam.health.codec, cam.health.width, cam.health.height) == ("h264", 320, 240)
            wait_for(lambda: stats.frames_written >= 25, 20, "frames on disk")
            other = Bystander(srv.camera("bystander"))
            first.stop()
            wait_for(lambda: cam.health.state == State.OFFLINE, 20, "offline")
            wait_for(
                lambda: "Connection refused" in (cam.health.last_error or ""),
                8,
                "'Connection refused' while the camera is gone",
            )
            assert cam.health.reconnects >= 2
            before = {s.id for s in srv.catalog.segments(camera_id="cam")}
            assert before and all(
                s.state == CLOSED for s in srv.catalog.segments(camera_id="cam")
            ), "the segment must be closed when the stream ends"
            written = stats.frames_written
            first = StandinCamera(width=320, height=240, keyint=KEYINT, port=port).start()
            assert first.port == port
            wait_for(lambda: cam.health.state == State.ONLINE, 20, "back online")
            wait_for(lambda: stats.frames_written >= written + 25, 20, "recording resumed")
            now = {s.id for s in srv.catalog.segments(camera_id="cam")}
            assert now - before, "no new segment after the reconnect"
            other.check()
    finally:
        first.stop()
    assert stats.frames_dropped < 2 * KEYINT, "only frames before each first keyframe"
    assert len(check_closed(tmp_path, "cam")) >= 2


@needs_standin
def test_resolution_change_mid_stream(tmp_path: Path) -> None:
    with StandinCamera(width=320, height=240, keyint=KEYINT, change_resolution_after=3) as standin:
        cam = record_standin(
            tmp_path,
            standin,
            until=lambda c: c.recorder is not None and c.recorder.stats.segments >= 1,
            frames=0,
        )
        assert cam.recorder is not None
        n = cam.recorder.stats.frames_written
        assert (cam.health.width, cam.health.height) == (160, 120)
    segs = check_closed(tmp_path, "cam")
    sizes = [(s.width, s.height) for s, _ in segs]
    assert sizes[0] == (320, 240)
    assert set(sizes) == {(320, 240), (160, 120)}
    assert sizes == sorted(sizes, reverse=True), "resolution changed once, so one switch"
    assert sum(found["frames"] for _, found in segs) == n


@needs_standin
@pytest.mark.parametrize(("audio", "codec"), [("aac", "aac"), ("pcmu", "pcm_mulaw")])
def test_audio_is_recorded(tmp_path: Path, audio: Any, codec: str) -> None:
    with StandinCamera(width=320, height=240, keyint=KEYINT, audio=audio) as standin:
        record_standin(tmp_path, standin)
    segs = check_closed(tmp_path, "cam")
    for seg, found in segs:
        assert seg.has_audio
        assert found["audio_codec"] == codec
        assert found["audio_frames"] > 0


@needs_standin
def test_h265_over_rtsp(tmp_path: Path) -> None:
    with StandinCamera(width=320, height=240, keyint=KEYINT, codec="h265") as standin:
        cam = record_standin(tmp_path, standin)
        assert cam.health.codec == "hevc"
    segs = check_closed(tmp_path, "cam")
    assert {s.codec for s, _ in segs} == {"hevc"}
    assert {found["codec"] for _, found in segs} == {"hevc"}


@needs_standin
def test_rtsps_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path / "tls")
    with StandinCamera(width=320, height=240, keyint=KEYINT, tls_cert=cert, tls_key=key) as standin:
        assert standin.url.startswith("rtsps://")
        record_standin(tmp_path, standin)
    assert check_closed(tmp_path, "cam")


@needs_standin
def test_udp_transport(tmp_path: Path) -> None:
    with StandinCamera(width=320, height=240, keyint=KEYINT) as standin:
        record_standin(tmp_path, standin, cam_extra={"transport": "udp"})
    assert check_closed(tmp_path, "cam")


# --- fan-out, shutdown ---------------------------------------------------------------------


def test_asyncio_subscriber_that_never_reads_does_not_hold_back_recording(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    cfg = config_mod.from_dict(config_dict(tmp_path, [camera("cam", clips["h264"].as_uri())]))
    with running_app(cfg) as (client, srv):
        cam = srv.camera("cam")
        assert cam.recorder is not None and client.portal is not None
        stats, health = cam.recorder.stats, cam.health
        # Subscribed on the app's event loop, and never read.
        sub = client.portal.call(functools.partial(cam.relay.subscribe, maxlen=8))
        wait_for(lambda: health.frames > 0, 20, "the first frame")
        t0, f0 = time.monotonic(), health.frames
        wait_for(lambda: health.frames >= f0 + 75, 20, "three seconds of frames")
        elapsed = time.monotonic() - t0
        assert (health.frames - f0) / elapsed >= CLIP_FPS * 0.7, "ingest slowed down"
        # Recording is at most the fragment being gathered and one at its root's writer (a
        # second each) plus the held frame behind ingest.
        assert health.frames - stats.frames_written <= 2 * CLIP_FPS + 2
        wait_for(lambda: sub.dropped > 0, 20, "the subscriber's queue overflowing")
        assert len(sub) <= 8 + 4  # the bound, plus stream starts and fragment announcements
    assert stats.frames_dropped == 0


def test_sigterm_closes_every_open_segment(tmp_path: Path, clips: dict[str, Path]) -> None:
    cfg = config_dict(
        tmp_path,
        [camera("a", clips["h264"].as_uri()), camera("b", clips["aac"].as_uri())],
        segment_seconds=4,
    )
    port = free_port()
    cfg["server"] = {"port": port}
    path = tmp_path / "vms.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vms", "serve", "--config", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def both_recording() -> bool:
            try:
                url = f"http://127.0.0.1:{port}/api/v1/cameras"
                request = urllib.request.Request(url, headers=local.headers(tmp_path))
                with urllib.request.urlopen(request) as r:
                    cams = json.loads(r.read())["items"]
            except OSError:
                return False
            return all(c["recording"]["frames_written"] > 0 for c in cams)

        wait_for(both_recording, 60, "both cameras recording")
        cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        try:
            assert {s.camera_id for s in cat.segments(state=OPEN)} == {"a", "b"}
        finally:
            cat.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    log = out.decode(errors="replace")
    # uvicorn re-raises the SIGTERM it caught once shutdown is complete.
    assert proc.returncode == 0, log
    assert "stopped cleanly" in log
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        segs = cat.segments()
    finally:
        cat.close()
    assert segs and all(s.state == CLOSED for s in segs), "a segment was left open"
    assert {s.camera_id for s in segs} == {"a", "b"}
    check = subprocess.run(
        [sys.executable, "-m", "vms", "check", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OK" in check.stdout
