"""The recording benchmark's ffmpeg peer when it cannot start: a clear reason, in time.

Not with the benchmark smokes (tests/test_bench.py, serial): this one mostly waits.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from vms.bench import recording
from vms.bench.report import Progress
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(
    not gstreamer_available(),
    reason="GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, x264enc) missing",
)


@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (the peer) missing")
def test_recording_peer_says_why_it_did_not_start(tmp_path: Path) -> None:
    """A camera that accepts connections and never answers (stopped with SIGSTOP): the peer
    gives up within its connect time and says what ffmpeg and the camera said."""
    with StandinCamera(width=320, height=240, fps=5, bitrate_kbps=200) as cam:
        os.kill(cam.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RuntimeError) as caught:
                recording._peer(
                    cam, psutil.Process(cam.pid), 1, 1.0, 0.0, tmp_path / "peer",
                    Progress(enabled=False), connect_s=15.0,
                )  # fmt: skip
        finally:
            os.kill(cam.pid, signal.SIGCONT)
    message = str(caught.value)
    waited = re.search(r"only 0/1 processes wrote a file in (\d+) s", message)
    assert waited is not None and 15 <= int(waited.group(1)) < 40, message
    # ffmpeg gave up by itself after 10 s of silence (-timeout) and said so; without the
    # timeout it would still be waiting, silent.
    assert "ffmpeg said: " in message and "ffmpeg said: nothing;" not in message, message
    assert "the camera (running: True)" in message


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (the peer) missing")
def test_recording_peer_stops_waiting_when_the_camera_dies(tmp_path: Path) -> None:
    """A camera process that is gone (as when gst-rtsp-server aborts): the peer says so at
    once instead of waiting out its connect time."""
    with StandinCamera(width=320, height=240, fps=5, bitrate_kbps=200) as cam:
        os.kill(cam.pid, signal.SIGKILL)
        psutil.Process(cam.pid).wait(10)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as caught:
            recording._peer(
                cam, psutil.Process(os.getpid()), 1, 1.0, 0.0, tmp_path / "peer",
                Progress(enabled=False), connect_s=40.0,
            )  # fmt: skip
        took = time.monotonic() - t0
    assert "only 0/1 processes wrote a file" in str(caught.value)
    assert "the camera (running: False)" in str(caught.value)
    assert took < 20, took  # not the 40 s connect time
