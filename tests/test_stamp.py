"""The wall-clock stamp of the live benchmarks: drawn, encoded by a real H.264 encoder, decoded
and read back, in Python and in Chromium; and the stamped stand-in camera read over RTSP."""

from __future__ import annotations

import random
import socket
from fractions import Fraction
from pathlib import Path

import av
import pytest

from vms.bench import browser
from vms.bench.direct import DirectClient, stamp_of
from vms.standin import StandinCamera, gstreamer_available, stamp

T0 = 1_767_225_600_123  # 2026-01-01 00:00:00.123 UTC, in ms


def _encode(width: int, height: int, stamps: list[int], kbps: int) -> list[av.VideoFrame]:
    """Stamped frames over noise through libx264 (zerolatency, as the stand-in camera), decoded."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), Fraction(25)
    enc.bit_rate = kbps * 1000
    enc.options = {"preset": "ultrafast", "tune": "zerolatency",
                   "x264-params": f"keyint=25:vbv-maxrate={kbps}:vbv-bufsize={kbps // 2}"}  # fmt: skip
    dec = av.CodecContext.create("h264", "r")
    out: list[av.VideoFrame] = []
    table = bytes(116 + i * 25 // 256 for i in range(256))  # ±12 levels, as the stand-in's
    noise = random.Random(width).randbytes(2 * width * height).translate(table)
    for i, ms in enumerate(stamps):
        frame = av.VideoFrame(width, height, "yuv420p")
        y = frame.planes[0]
        luma = bytearray(y.line_size * height)
        for row in range(height):
            start = (i * 37 + row * width) % (width * height)
            luma[row * y.line_size : row * y.line_size + width] = noise[start : start + width]
        stamp.draw(luma, width, height, ms, y.line_size)
        y.update(bytes(luma))
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts = i
        for packet in enc.encode(frame):
            out += dec.decode(packet)
    for packet in enc.encode(None):
        out += dec.decode(packet)
    return out


@pytest.mark.parametrize(
    ("width", "height", "kbps"), [(320, 240, 128), (640, 360, 500), (1280, 720, 800)]
)
def test_stamps_survive_h264(width: int, height: int, kbps: int) -> None:
    stamps = [T0 + 40 * i for i in range(30)]
    frames = _encode(width, height, stamps, kbps)
    assert [stamp_of(f) for f in frames] == [ms & stamp.MASK for ms in stamps]


def test_capture_time_is_the_nearest_to_the_reader_clock() -> None:
    value = T0 & stamp.MASK
    assert stamp.capture_ms(value, T0 + 80) == T0
    assert stamp.capture_ms(value, T0 - 5) == T0  # a reader clock slightly behind
    wrapped = (stamp.MASK + 1) * 7 - 3  # 3 ms before a wrap of the 40 bits
    assert stamp.capture_ms(wrapped & stamp.MASK, wrapped + 10) == wrapped


def test_a_picture_without_a_stamp_reads_as_none() -> None:
    width, height = 320, 240
    grey = bytes([128]) * (width * height)
    assert stamp.read(grey, width, height) is None
    luma = bytearray(grey)
    stamp.draw(luma, width, height, T0)
    assert stamp.read(luma, width, height) == T0 & stamp.MASK
    # One data cell flipped: the CRC catches it.
    b = stamp.block_size(width)
    for y in range(2 * b, 3 * b):
        for x in range(4 * b, 5 * b):
            luma[y * width + x] = 235 if luma[y * width + x] < 128 else 16
    assert stamp.read(luma, width, height) is None
    assert stamp.read(luma, 100, 60) is None  # too small to hold one


needs_gstreamer = pytest.mark.skipif(not gstreamer_available(), reason="no GStreamer stand-in")


@needs_gstreamer
@pytest.mark.timeout(90)
def test_stamped_camera_over_rtsp() -> None:
    with (
        StandinCamera(width=640, height=360, bitrate_kbps=1000, keyint=25, stamp=True) as cam,
        DirectClient(cam.url) as client,
    ):
        client.wait_frames(60, 60)
    stamped = [a for a in client.arrivals if a.captured_ms is not None]
    assert client.unreadable == 0 and client.decoded >= 50
    assert len(stamped) >= 50
    delays = sorted(a.wall_ms - a.captured_ms for a in stamped if a.captured_ms is not None)
    # Capture to arrival: the encoder and loopback RTSP, well under a second even when loaded.
    assert 0 < delays[len(delays) // 2] < 1000
    captured = [a.captured_ms for a in stamped]
    assert captured == sorted(captured) and len(set(captured)) == len(captured)
    span = (stamped[-1].monotonic - stamped[0].monotonic) or 1
    assert 600 <= sum(a.size for a in stamped) * 8 / span / 1000 <= 1600  # ~1 Mbit/s
    assert any(a.keyframe for a in client.arrivals)


PAGE = "<!doctype html><html><body><video id=v muted playsinline></video></body></html>"
READ_ALL = """async () => {
  const v = document.getElementById('v');
  const seen = [];
  await new Promise((resolve) => {
    const each = () => {
      seen.push(window.vmsStamp.read(v));
      if (v.ended) resolve(); else v.requestVideoFrameCallback(each);
    };
    v.requestVideoFrameCallback(each);
    v.addEventListener('ended', resolve);
    v.src = '/clip.mp4';
    v.play();
  });
  return seen;
}"""


@pytest.mark.skipif(not browser.available(), reason="no Chromium/Playwright")
@pytest.mark.timeout(120)
def test_chromium_reads_the_stamps(tmp_path: Path) -> None:
    stamps = [T0 + 40 * i for i in range(50)]
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i, frame in enumerate(_encode(640, 360, stamps, 2000)):
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    script = (Path(stamp.__file__).with_name("stamp.js")).read_text()
    with browser.chromium() as b:
        page = b.new_page()
        page.route("http://bench.test/", lambda r: r.fulfill(content_type="text/html", body=PAGE))
        page.route("http://bench.test/clip.mp4",
                   lambda r: r.fulfill(content_type="video/mp4", body=clip.read_bytes()))  # fmt: skip
        page.goto("http://bench.test/")
        page.add_script_tag(content=script)
        seen = page.evaluate(READ_ALL)
        assert page.evaluate(f"window.vmsStamp.captureMs({T0 & stamp.MASK}, {T0 + 7})") == T0
    read = [s for s in seen if s is not None]
    expected = {ms & stamp.MASK for ms in stamps}
    # Every frame shown carries a stamp read as drawn (a callback may see a frame twice or
    # skip one; what it reads is never wrong).
    assert len(read) >= 10 and set(read) <= expected
    assert len(read) >= 0.8 * len([s for s in seen])


def test_media_sent_before_the_play_reply_is_skipped() -> None:
    """A camera sharing its media may send the session's frames before the PLAY reply."""
    client = DirectClient("rtsp://127.0.0.1:1/cam")
    ours, camera = socket.socketpair()
    with ours, camera:
        client._sock = ours
        camera.sendall(b"$\x00\x00\x05hello$\x01\x00\x02hi" + b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n"
                       b"Session: 7\r\nContent-Length: 2\r\n\r\nok$\x00\x00\x01x")  # fmt: skip
        buf = bytearray()
        headers, body = client._request(buf, "PLAY", "rtsp://127.0.0.1:1/cam")
    assert headers["session"] == "7" and body == b"ok"
    assert bytes(buf) == b"$\x00\x00\x01x"  # the media after the reply stays for the reader
    assert client._media_before_reply
