"""Clips whose every frame shows its own number, and how to read it back after a decode.

The number is drawn as 16 blocks (two rows of eight, 20 × 20 pixels each at 160 × 120), white
for a one bit and black for a zero; the rest of the picture is grey. A decoded frame says which
frame it is, so a test can check the exact picture a player would show first.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import av.video.frame

from tests.conftest import Rig
from vms.ingest.pyav_source import read_clip
from vms.media import Packet, StreamInfo

BLOCK = 20
BITS = 16


def counter_clip(
    path: Path,
    *,
    frames: int,
    fps: int = 25,
    gop: int = 100,
    width: int = 160,
    height: int = 120,
    first: int = 0,
) -> Path:
    """An H.264 clip of ``frames`` frames numbered from ``first``, a keyframe every ``gop``."""
    out = av.open(str(path), "w")
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"
    v = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18",
                                                      "x264-params": params})  # fmt: skip
    v.width, v.height, v.pix_fmt = width, height, "yuv420p"
    for i in range(frames):
        frame = _picture(first + i, width, height)
        frame.pts, frame.time_base = i, Fraction(1, fps)
        for p in v.encode(frame):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    out.close()
    return path


def _picture(number: int, width: int, height: int) -> av.video.frame.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    y, u, v = frame.planes
    rows = []
    for row in range(height):
        line = bytearray([128]) * y.line_size
        band = row // BLOCK
        if band < BITS // 8:
            for col in range(8):
                bit = number >> (band * 8 + col) & 1
                line[col * BLOCK : (col + 1) * BLOCK] = bytes([235 if bit else 16]) * BLOCK
        rows.append(bytes(line))
    y.update(b"".join(rows))
    u.update(bytes([128]) * u.buffer_size)
    v.update(bytes([128]) * v.buffer_size)
    return frame


def frame_number(frame: av.video.frame.VideoFrame) -> int:
    """The number a decoded frame shows."""
    y = frame.planes[0]
    data = bytes(y)
    number = 0
    for band in range(BITS // 8):
        row = band * BLOCK + BLOCK // 2
        for col in range(8):
            if data[row * y.line_size + col * BLOCK + BLOCK // 2] > 128:
                number |= 1 << (band * 8 + col)
    return number


def decode(data: bytes) -> list[tuple[float, int, int, int]]:
    """Every video frame of an MP4 in bytes: (pts in seconds, number, width, height)."""
    out = []
    with av.open(io.BytesIO(data), "r") as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            assert frame.pts is not None and frame.time_base is not None
            out.append((float(frame.pts * frame.time_base), frame_number(frame),
                        frame.width, frame.height))  # fmt: skip
    return out


def clip(
    path: Path, first_dts: int = 0, first_arrival: float = 0.0
) -> tuple[StreamInfo, list[Packet]]:
    """A clip's packets as a live camera would send them, from decode time ``first_dts``."""
    info, packets = read_clip(path)
    for p in packets:
        p.dts += first_dts
        p.pts += first_dts
        p.arrival = first_arrival + p.dts / info.video.timescale
    return info, packets


def record(rig: Rig, path: Path, *, stop: bool = True) -> StreamInfo:
    info, packets = clip(path)
    rig.recorder.stream_started(info)
    for p in packets:
        rig.recorder.packet(p)
    if stop:
        rig.stop()
    else:
        assert rig.writers.flush()
    return info
