"""Timing and loss on real RTSP streams: A/V sync, RTP loss, stalls, RTCP, hostile sizes.

The stand-in camera (GStreamer) is the real sender; the relay in tests/support/bad_rtsp.py sits
between it and the VMS to drop, rewrite or inject chosen RTP packets and to capture what the
VMS sends back (RTCP receiver reports).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.polling import wait_for
from vms import config as config_mod
from vms.catalog import CLOSED, Catalog, Segment
from vms.health import State
from vms.server import Camera, Server
from vms.standin import StandinCamera, gstreamer_available

needs_standin = pytest.mark.skipif(
    not gstreamer_available(),
    reason="GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, x264enc) missing",
)

KEYINT = 25


def build(
    tmp_path: Path, url: str, *, reader: str = "native", segment_seconds: float = 60, **ingest: Any
) -> Server:
    root = tmp_path / "r1"
    root.mkdir(exist_ok=True)
    cfg = {
        "data_dir": str(tmp_path),
        "storage": {"roots": [{"name": "r1", "path": str(root), "min_free_bytes": 0}]},
        "recording": {"segment_seconds": segment_seconds, "stagger": False},
        "ingest": {
            "reader": reader, "open_timeout_s": 2, "stall_timeout_s": 2,
            "backoff_initial_s": 0.2, "backoff_max_s": 1, **ingest,
        },
        "cameras": [{"id": "cam", "main": {"url": url}}],
    }  # fmt: skip
    return Server(config_mod.from_dict(cfg))


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Camera]:
    server.start()
    try:
        yield server.camera("cam")
    finally:
        server.stop()


def closed_segments(tmp_path: Path) -> list[Segment]:
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        segs = cat.segments(camera_id="cam")
    finally:
        cat.close()
    assert segs and all(s.state == CLOSED for s in segs)
    return segs


def track_spans(path: Path) -> dict[str, tuple[float, float]]:
    """(first pts, last pts + duration) of each track, in seconds, as ffprobe reads them."""
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-of", "json",
            "-show_entries", "stream=index,codec_type:packet=stream_index,pts_time,duration_time",
            str(path),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found = json.loads(out.stdout)
    kinds = {s["index"]: s["codec_type"] for s in found["streams"]}
    spans: dict[str, tuple[float, float]] = {}
    for p in found["packets"]:
        kind = kinds[p["stream_index"]]
        start = float(p["pts_time"])
        # ffprobe leaves out the duration of some first AAC packets: count those as empty.
        end = start + float(p.get("duration_time", "0").replace("N/A", "0"))
        lo, hi = spans.get(kind, (start, end))
        spans[kind] = (min(lo, start), max(hi, end))
    return spans


# --- 1. A/V sync ---------------------------------------------------------------------------


@needs_standin
@pytest.mark.parametrize("reader", ["native", "pyav"])
def test_audio_and_video_start_and_end_together_across_restarts(
    tmp_path: Path, reader: str
) -> None:
    """Each restart of the camera draws new random RTP timestamp origins for both tracks."""
    standin = StandinCamera(width=320, height=240, keyint=KEYINT, audio="aac").start()
    try:
        port = standin.port
        srv = build(tmp_path, standin.url, reader=reader, segment_seconds=2)
        with serving(srv) as cam:
            assert cam.recorder is not None
            stats = cam.recorder.stats
            for restart in range(6):
                if restart:
                    standin.stop()
                    wait_for(lambda: cam.health.state == State.OFFLINE, 10, "offline")
                    standin = StandinCamera(
                        width=320, height=240, keyint=KEYINT, audio="aac", port=port
                    ).start()
                wait_for(lambda: cam.health.state == State.ONLINE, 15, "online")
                closed = stats.segments
                wait_for(lambda: stats.segments > closed, 15, "a closed segment")  # noqa: B023
    finally:
        standin.stop()
    segs = closed_segments(tmp_path)
    assert len(segs) >= 6
    for seg in segs:
        spans = track_spans(tmp_path / "r1" / seg.path)
        assert "audio" in spans, f"segment {seg.id} has no audio"
        (v0, v1), (a0, a1) = spans["video"], spans["audio"]
        where = f"segment {seg.id}: video {v0:.3f}..{v1:.3f} s, audio {a0:.3f}..{a1:.3f} s"
        assert abs(a0 - v0) <= 0.050, where
        assert abs(a1 - v1) <= 0.100, where
