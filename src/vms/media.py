"""Encoded media as the rest of the system sees it: packets, stream descriptions, NAL units.

Every video packet handed on by the ingest is in *length-prefixed* form (4-byte big-endian NAL
sizes, as MP4 stores it), whatever the source sent: RTSP depacketizers emit Annex B (start
codes), MP4 files emit length-prefixed. Converting once at the ingest means the recorder, live
view and export all handle one form.

A reader publishes a stream to its :class:`StreamSink`: a start (with the stream's parameters),
its packets, the places where media was lost, and its end. What a stream's subscribers receive
is the same story as items: :class:`StreamStart`, :class:`Packet`, :class:`FragmentWritten`
(the recorder's announcement of bytes on disk) and :class:`StreamEnd`.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Protocol

H264 = "h264"
HEVC = "hevc"
AAC = "aac"
PCMU = "pcm_mulaw"
PCMA = "pcm_alaw"
OPUS = "opus"  # only ever made here (live audio for WebRTC), never from a camera

VIDEO = 0
AUDIO = 1

_H264_SPS, _H264_PPS, _H264_IDR = 7, 8, 5
_HEVC_VPS, _HEVC_SPS, _HEVC_PPS = 32, 33, 34


class Packet:
    """One encoded access unit (video) or audio frame. ``pts``/``dts`` are in the stream's
    timebase (``StreamInfo.timescale`` ticks a second); ``arrival`` is monotonic seconds."""

    __slots__ = ("arrival", "data", "dts", "keyframe", "kind", "params", "pts")

    def __init__(
        self,
        kind: int,
        data: bytes,
        pts: int,
        dts: int,
        keyframe: bool,
        arrival: float,
        params: ParameterSets | None = None,
    ) -> None:
        self.kind = kind
        self.data = data
        self.pts = pts
        self.dts = dts
        self.keyframe = keyframe
        self.arrival = arrival
        # In-band parameter sets carried by this (key)frame, when it had any.
        self.params = params


@dataclasses.dataclass(frozen=True)
class ParameterSets:
    """SPS/PPS (and VPS for H.265), without start codes or length prefixes."""

    codec: str
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    vps: tuple[bytes, ...] = ()

    @property
    def complete(self) -> bool:
        return bool(self.sps and self.pps and (self.codec != HEVC or self.vps))


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    codec: str
    timescale: int
    width: int
    height: int
    params: ParameterSets | None


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    codec: str
    timescale: int
    sample_rate: int
    channels: int
    config: bytes = b""  # AAC AudioSpecificConfig


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    video: VideoInfo
    audio: AudioInfo | None = None


MAIN = 0  # a camera's streams, as the catalog's ``stream`` column numbers them
SUB = 1
STREAM_NAMES = {MAIN: "main", SUB: "sub"}


class StreamSink(Protocol):
    """What a reader publishes one camera stream to. Called from the reader's thread only, in
    this order per connection: ``started``, then ``packet``/``gap`` any number of times, then
    ``stopped``. None of them blocks on a disk, the catalog or a subscriber."""

    def started(self, info: StreamInfo) -> None: ...

    def packet(self, p: Packet) -> None: ...

    def gap(self) -> None:
        """Media was lost here (RTP loss, a dropped access unit): the next video packet
        follows a hole."""

    def stopped(self, reason: str) -> None: ...

    # A sink may also say ``watched`` (a bool property): someone reads the stream live, so the
    # reader should hand packets on with less delay (vms.ingest.rtsp reads more often).


@dataclasses.dataclass(frozen=True, slots=True)
class StreamStart:
    """A stream (re)started with these parameters: every packet after it uses them."""

    info: StreamInfo


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnd:
    """The connection ended (camera lost, camera removed, server stopping)."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class FragmentWritten:
    """The recorder wrote one fragment: ``size`` bytes at ``offset`` of the segment file
    ``path`` (relative to storage root ``root``), covering ``duration`` ticks of the video
    timescale from decode time ``decode_time`` (continuous across a run of segments) and from
    wall time ``start_us``. ``segment_start_us`` names the segment (its catalog id may not be
    written yet)."""

    camera_id: str
    stream: int
    root: str
    path: str
    segment_start_us: int
    offset: int
    size: int
    decode_time: int
    duration: int
    timescale: int
    start_us: int
    keyframe: bool


def nal_type(codec: str, nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F if codec == HEVC else nal[0] & 0x1F


def is_keyframe_nal(codec: str, t: int) -> bool:
    return 16 <= t <= 23 if codec == HEVC else t == _H264_IDR


def annexb_split(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units (start codes and trailing zeros removed).

    Emulation prevention guarantees ``00 00 01`` never occurs inside a NAL unit, so a plain
    split is exact. A 4-byte start code leaves a zero at the end of the previous piece; NAL
    units never end in a zero byte, so stripping trailing zeros is safe. (Runs per packet:
    written to copy each NAL unit once at most.)
    """
    out = []
    for n in data.split(b"\x00\x00\x01"):
        if n and n[-1] == 0:
            n = n.rstrip(b"\x00")
        if n:
            out.append(n)
    return out


def length_split(data: bytes) -> list[bytes]:
    """Split 4-byte length-prefixed NAL units."""
    out = []
    i, n = 0, len(data)
    while i + 4 <= n:
        (size,) = struct.unpack_from(">I", data, i)
        out.append(data[i + 4 : i + 4 + size])
        i += 4 + size
    return out


def length_prefix(nals: list[bytes]) -> bytes:
    """4-byte length-prefixed form; one copy of the payload (the join)."""
    parts = []
    for n in nals:
        parts.append(len(n).to_bytes(4, "big"))
        parts.append(n)
    return b"".join(parts)


def has_keyframe(codec: str, nals: list[bytes]) -> bool:
    """Whether an access unit holds an IDR (H.264) or IRAP (H.265) picture."""
    if codec == HEVC:
        return any(16 <= (n[0] >> 1) & 0x3F <= 23 for n in nals)
    return any(n[0] & 0x1F == _H264_IDR for n in nals)


def collect_params(codec: str, nals: list[bytes]) -> ParameterSets | None:
    """The parameter sets among ``nals``, or None when there are none."""
    vps: list[bytes] = []
    sps: list[bytes] = []
    pps: list[bytes] = []
    if codec == HEVC:
        want = {_HEVC_VPS: vps, _HEVC_SPS: sps, _HEVC_PPS: pps}
    else:
        want = {_H264_SPS: sps, _H264_PPS: pps}
    for nal in nals:
        bucket = want.get(nal_type(codec, nal))
        if bucket is not None and nal not in bucket:
            bucket.append(nal)
    if not (vps or sps or pps):
        return None
    return ParameterSets(codec, tuple(sps), tuple(pps), tuple(vps))


def params_from_extradata(codec: str, extradata: bytes | None) -> ParameterSets | None:
    """Parameter sets from a demuxer's extradata: Annex B (RTSP sprop), avcC or hvcC (MP4)."""
    if not extradata:
        return None
    if extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return collect_params(codec, annexb_split(extradata))
    nals: list[bytes] = []
    if codec == H264 and extradata[0] == 1 and len(extradata) >= 7:
        i = 5
        for count_mask in (0x1F, 0xFF):
            count = extradata[i] & count_mask
            i += 1
            for _ in range(count):
                (size,) = struct.unpack_from(">H", extradata, i)
                nals.append(extradata[i + 2 : i + 2 + size])
                i += 2 + size
    elif codec == HEVC and len(extradata) >= 23:
        i = 22
        arrays = extradata[i]
        i += 1
        for _ in range(arrays):
            (count,) = struct.unpack_from(">H", extradata, i + 1)
            i += 3
            for _ in range(count):
                (size,) = struct.unpack_from(">H", extradata, i)
                nals.append(extradata[i + 2 : i + 2 + size])
                i += 2 + size
    return collect_params(codec, nals)


class _Bits:
    """Exp-Golomb reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, nal: bytes, skip_bytes: int) -> None:
        self.data = nal[skip_bytes:].replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3] if (self.pos >> 3) < len(self.data) else 0
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _skip_scaling_list(b: _Bits, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt:
            nxt = (last + b.se() + 256) % 256
        last = nxt or last


def h264_dimensions(sps: bytes) -> tuple[int, int]:
    """Width and height (after cropping) from an H.264 SPS."""
    b = _Bits(sps, 1)
    profile = b.u(8)
    b.u(16)
    b.ue()
    chroma = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = b.ue()
        if chroma == 3:
            b.u(1)
        b.ue()
        b.ue()
        b.u(1)
        if b.u(1):
            for i in range(8 if chroma != 3 else 12):
                if b.u(1):
                    _skip_scaling_list(b, 16 if i < 6 else 64)
    b.ue()
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()
    b.u(1)
    width_mbs = b.ue() + 1
    height_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)
    b.u(1)
    crop = (0, 0, 0, 0)
    if b.u(1):
        crop = (b.ue(), b.ue(), b.ue(), b.ue())
    sub_w, sub_h = (1, 1) if chroma == 3 else (2, 2 if chroma == 1 else 1)
    if chroma == 0:
        sub_w, sub_h = 1, 1
    width = width_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - sub_h * (2 - frame_mbs_only) * (
        crop[2] + crop[3]
    )
    return width, height


def hevc_profile_tier_level(sps: bytes) -> bytes:
    """The 12 bytes of general profile/tier/level from an H.265 SPS (for hvcC)."""
    rbsp = sps[2:].replace(b"\x00\x00\x03", b"\x00\x00")
    return rbsp[1:13]


def hevc_dimensions(sps: bytes) -> tuple[int, int]:
    b = _Bits(sps, 2)
    b.u(4)
    max_sub_layers = b.u(3)
    b.u(1)
    b.u(8 + 32 + 48 + 8)  # general profile_tier_level
    present = [(b.u(1), b.u(1)) for _ in range(max_sub_layers)]
    if max_sub_layers:
        b.u(2 * (8 - max_sub_layers))
    for profile_present, level_present in present:
        if profile_present:
            b.u(88)
        if level_present:
            b.u(8)
    b.ue()
    chroma = b.ue()
    if chroma == 3:
        b.u(1)
    width, height = b.ue(), b.ue()
    if b.u(1):
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        sub_w = 2 if chroma in (1, 2) else 1
        sub_h = 2 if chroma == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    return width, height


def dimensions(params: ParameterSets) -> tuple[int, int]:
    sps = params.sps[0]
    return hevc_dimensions(sps) if params.codec == HEVC else h264_dimensions(sps)
