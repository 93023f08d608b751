"""Real encoded media for the dialect server, and its RTP payloads.

:func:`encode_clip` encodes a short H.264 or H.265 clip with PyAV (no B-frames, a keyframe every
10 frames, as cameras send) with the parameter sets in-band before each keyframe;
:func:`packetize` cuts an access unit into RTP payloads (H.264, RFC 6184: single NAL unit,
STAP-A, FU-A, or single NAL units only for ``packetization-mode=0``; H.265, RFC 7798: single,
AP, FU); :func:`aac_frames` encodes AAC-LC to match a camera's AudioSpecificConfig.
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction

import av

from vms.media import H264, HEVC, annexb_split, has_keyframe, nal_type

FPS = 25
MTU = 1400  # RTP payload size above which a NAL unit is fragmented


@functools.cache
def aac_frames(rate: int, channels: int) -> list[bytes]:
    """Raw AAC-LC frames (1024 samples each) of a quiet tone, encoded with PyAV."""
    layout = "mono" if channels == 1 else "stereo"
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = rate, layout, "fltp"
    out = []
    for n in range(25):
        frame = av.AudioFrame(format="fltp", layout=layout, samples=1024)
        for plane in frame.planes:
            plane.update(bytes(((k // 4) % 64) for k in range(4 * 1024)))
        frame.sample_rate, frame.pts = rate, n * 1024
        out += [bytes(p) for p in ctx.encode(frame)]
    return out


@dataclasses.dataclass
class Clip:
    codec: str
    frames: list[list[bytes]]  # access units as NAL units, keyframes led by parameter sets


def encode_clip(codec: str, *, frames: int = 50, width: int = 160, height: int = 120) -> Clip:
    """A short clip encoded with PyAV: keyframe every 10 frames, no B-frames (as cameras)."""
    gop = "keyint=10:min-keyint=10:scenecut=0"
    if codec == H264:
        name, options = "libx264", {"preset": "ultrafast", "x264-params": gop}
    else:
        name = "libx265"
        options = {"preset": "ultrafast", "x265-params": gop + ":bframes=0:log-level=error"}
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"  # type: ignore[attr-defined]
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS)  # type: ignore[attr-defined]
    ctx.options = options
    units: list[bytes] = []
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for j, plane in enumerate(frame.planes):
            # A moving pattern: frames of 0.5–2 kB around the MTU and keyframes of about
            # 5 kB, so that every packetization (single, aggregate, fragments) is used.
            w = width >> (j > 0)
            if j == 0:
                data = bytes(
                    ((k % w + 3 * i) * 2 ^ (k // w * 3 + i)) & 0xFF
                    for k in range(plane.buffer_size)
                )
            else:
                data = bytes([(100 + j * 30 + i) & 0xFF]) * plane.buffer_size
            plane.update(data)
        frame.pts = i
        units += [bytes(p) for p in ctx.encode(frame)]  # type: ignore[attr-defined]
    units += [bytes(p) for p in ctx.encode(None)]  # type: ignore[attr-defined]
    params_types = {32, 33, 34} if codec == HEVC else {7, 8}
    nal_units = [annexb_split(u) for u in units]
    params = [n for n in nal_units[0] if nal_type(codec, n) in params_types]
    out = []
    for nals in nal_units:
        rest = [n for n in nals if nal_type(codec, n) not in params_types]
        out.append(params + rest if has_keyframe(codec, rest) else rest)
    return Clip(codec, out)


def packetize(codec: str, nals: list[bytes], *, single_only: bool = False) -> list[bytes]:
    """RTP payloads for one access unit (RFC 6184 / RFC 7798)."""
    hevc = codec == HEVC
    out: list[bytes] = []
    group: list[bytes] = []

    def flush() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            if hevc:  # AP: the payload header takes the lowest TID of its NAL units
                tid = min(n[1] & 0x07 for n in group)
                head = bytes([48 << 1, tid])
            else:  # STAP-A: the highest NRI
                head = bytes([max(n[0] & 0x60 for n in group) | 24])
            out.append(head + b"".join(len(n).to_bytes(2, "big") + n for n in group))
        group.clear()

    for nal in nals:
        if single_only:
            out.append(nal)
        elif len(nal) > MTU:
            flush()
            out.extend(_fragments(hevc, nal))
        else:
            if sum(2 + len(n) for n in group) + 2 + len(nal) + 2 > MTU:
                flush()
            group.append(nal)
    flush()
    return out


def _fragments(hevc: bool, nal: bytes) -> list[bytes]:
    if hevc:
        t = (nal[0] >> 1) & 0x3F
        head, fu, data = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]]), t, nal[2:]
    else:
        head, fu, data = bytes([(nal[0] & 0xE0) | 28]), nal[0] & 0x1F, nal[1:]
    chunks = [data[i : i + MTU - 3] for i in range(0, len(data), MTU - 3)]
    out = []
    for k, chunk in enumerate(chunks):
        flags = (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
        out.append(head + bytes([flags | fu]) + chunk)
    return out
