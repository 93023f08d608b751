"""Quick checks of the GStreamer stand-in camera, seen through a PyAV RTSP client."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import av
import av.container
import av.error
import pytest

from vms.standin import StandinCamera, gstreamer_available, make_self_signed_cert

pytestmark = pytest.mark.skipif(
    not gstreamer_available(),
    reason="GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, x264enc) missing",
)

RTSP_OPTIONS = {"rtsp_transport": "tcp"}
PASSWORD = "p@ss:/#?%"


def open_rtsp(url: str) -> av.container.InputContainer:
    return av.open(url, options=RTSP_OPTIONS, timeout=(10, 5))


def with_credentials(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    return f"{scheme}://{userinfo}@{rest}"


def decoded_sizes(
    container: av.container.InputContainer, seconds: float
) -> Iterator[tuple[int, int]]:
    stream = container.streams.video[0]
    deadline = time.monotonic() + seconds
    for packet in container.demux(stream):
        for frame in packet.decode():
            yield frame.width, frame.height
        if time.monotonic() > deadline:
            return


def test_h264_stream_has_packets_at_the_requested_size() -> None:
    with StandinCamera(width=320, height=240, fps=25, keyint=25) as camera:
        assert camera.url == f"rtsp://127.0.0.1:{camera.port}/cam"
        with open_rtsp(camera.url) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            packets = []
            deadline = time.monotonic() + 2.0
            for packet in container.demux(stream):
                if packet.size:
                    packets.append(packet)
                    packet.decode()
                if time.monotonic() > deadline:
                    break
            assert len(packets) >= 30
            assert any(packet.is_keyframe for packet in packets)
            assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)


def test_basic_auth() -> None:
    with StandinCamera(width=160, height=120, user="admin", password=PASSWORD) as camera:
        assert "admin" not in camera.url
        with pytest.raises(av.error.HTTPUnauthorizedError):
            open_rtsp(camera.url)
        with pytest.raises(av.error.HTTPUnauthorizedError):
            open_rtsp(with_credentials(camera.url, "admin", "wrong"))
        with open_rtsp(with_credentials(camera.url, "admin", PASSWORD)) as container:
            assert next(iter(decoded_sizes(container, 2.0))) == (160, 120)


def test_tls(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    with StandinCamera(width=160, height=120, tls_cert=cert, tls_key=key) as camera:
        assert camera.url.startswith("rtsps://127.0.0.1:")
        with open_rtsp(camera.url) as container:
            assert next(iter(decoded_sizes(container, 2.0))) == (160, 120)


def test_audio_track_when_asked() -> None:
    with (
        StandinCamera(width=160, height=120, audio="aac") as camera,
        open_rtsp(camera.url) as container,
    ):
        assert [s.type for s in container.streams] == ["video", "audio"]
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        assert audio.codec_context.sample_rate == 48000


def test_resolution_changes_mid_stream() -> None:
    # The timer starts when the first client's DESCRIBE prepares the media.
    seen: list[tuple[int, int]] = []
    with (
        StandinCamera(width=320, height=240, change_resolution_after=2.0) as camera,
        open_rtsp(camera.url) as container,
    ):
        for size in decoded_sizes(container, 6.0):
            if not seen or seen[-1] != size:
                seen.append(size)
            if size == (160, 120):
                break
    assert seen[0] == (320, 240)
    assert seen[-1] == (160, 120)


def test_bad_options_fail_with_stderr() -> None:
    with pytest.raises(RuntimeError, match="must be positive"):
        StandinCamera(width=0).start()
