"""Fragmented MP4 (ISO BMFF) boxes: the init segment, fragments, and a reader for both.

A segment file is ``ftyp`` ``moov`` (the init segment) followed by fragments, each one ``moof``
then ``mdat``. Track 1 is video, track 2 audio when present. ``tfdt`` holds the media time of the
fragment relative to the segment's start, in the track's own timescale.

The trap worth knowing: ``trun.data_offset`` counts from the first byte of the ``moof`` (we set
``default-base-is-moof``), so the moof must be fully sized before the offsets are written.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from vms.media import (
    AAC,
    H264,
    HEVC,
    PCMA,
    PCMU,
    AudioInfo,
    StreamInfo,
    VideoInfo,
    hevc_profile_tier_level,
)

VIDEO_TRACK = 1
AUDIO_TRACK = 2

SYNC_FLAGS = 0x02000000  # sample_depends_on=2 (an I picture)
NON_SYNC_FLAGS = 0x01010000  # sample_depends_on=1, sample_is_non_sync_sample

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# --- init segment -------------------------------------------------------------------------


def _avcc(video: VideoInfo) -> bytes:
    assert video.params is not None
    sps, pps = video.params.sps, video.params.pps
    out = bytearray([1, sps[0][1], sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)])
    for nal in sps:
        out += struct.pack(">H", len(nal)) + nal
    out.append(len(pps))
    for nal in pps:
        out += struct.pack(">H", len(nal)) + nal
    return box(b"avcC", bytes(out))


def _hvcc(video: VideoInfo) -> bytes:
    assert video.params is not None
    p = video.params
    ptl = hevc_profile_tier_level(p.sps[0])
    out = bytearray([1]) + ptl
    out += struct.pack(">HBBBBHB", 0xF000, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0x0F)
    arrays = [(32, p.vps), (33, p.sps), (34, p.pps)]
    out.append(len(arrays))
    for nal_type, nals in arrays:
        out += struct.pack(">BH", 0x80 | nal_type, len(nals))
        for nal in nals:
            out += struct.pack(">H", len(nal)) + nal
    return box(b"hvcC", bytes(out))


def _visual_entry(video: VideoInfo) -> bytes:
    kind, config = (b"hvc1", _hvcc(video)) if video.codec == HEVC else (b"avc1", _avcc(video))
    return box(
        kind,
        bytes(6),
        struct.pack(">H", 1),
        bytes(16),
        struct.pack(">HHIIIH", video.width, video.height, 0x480000, 0x480000, 0, 1),
        bytes(32),
        struct.pack(">Hh", 0x18, -1),
        config,
    )


def _descriptor(tag: int, payload: bytes) -> bytes:
    n = len(payload)
    return (
        bytes(
            [
                tag,
                0x80 | (n >> 21 & 0x7F),
                0x80 | (n >> 14 & 0x7F),
                0x80 | (n >> 7 & 0x7F),
                n & 0x7F,
            ]
        )
        + payload
    )


def _audio_entry(audio: AudioInfo) -> bytes:
    head = bytes(6) + struct.pack(">H", 1) + bytes(8)
    rate = min(audio.sample_rate, 0xFFFF) << 16
    if audio.codec == AAC:
        dsi = _descriptor(5, audio.config)
        dcd = _descriptor(4, struct.pack(">BBBHII", 0x40, 0x15, 0, 0, 0, 0) + dsi)
        esd = _descriptor(3, struct.pack(">HB", 0, 0) + dcd + _descriptor(6, b"\x02"))
        fields = struct.pack(">HHHHI", audio.channels, 16, 0, 0, rate)
        return box(b"mp4a", head, fields, full_box(b"esds", 0, 0, esd))
    kind = b"ulaw" if audio.codec == PCMU else b"alaw"
    assert audio.codec in (PCMU, PCMA)
    return box(kind, head, struct.pack(">HHHHI", audio.channels, 16, 0, 0, rate))


def _trak(track_id: int, timescale: int, handler: bytes, entry: bytes, w: int, h: int) -> bytes:
    is_video = handler == b"vide"
    tkhd = full_box(
        b"tkhd", 0, 3,
        struct.pack(">IIIII", 0, 0, track_id, 0, 0), bytes(8),
        struct.pack(">hhhH", 0, 0, 0 if is_video else 0x100, 0), _MATRIX,
        struct.pack(">II", w << 16, h << 16),
    )  # fmt: skip
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), handler, bytes(12), b"vms\x00")
    media_header = (
        full_box(b"vmhd", 0, 1, bytes(8)) if is_video else full_box(b"smhd", 0, 0, bytes(4))
    )
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def init_segment(info: StreamInfo) -> bytes:
    """``ftyp`` + ``moov`` for the stream. Video must have its parameter sets."""
    v = info.video
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6isomiso5mp41")
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x100), bytes(10), _MATRIX, bytes(24),
        struct.pack(">I", 3),
    )  # fmt: skip
    traks = [_trak(VIDEO_TRACK, v.timescale, b"vide", _visual_entry(v), v.width, v.height)]
    trex = [full_box(b"trex", 0, 0, struct.pack(">IIIII", VIDEO_TRACK, 1, 0, 0, 0))]
    if info.audio is not None:
        a = info.audio
        traks.append(_trak(AUDIO_TRACK, a.timescale, b"soun", _audio_entry(a), 0, 0))
        trex.append(full_box(b"trex", 0, 0, struct.pack(">IIIII", AUDIO_TRACK, 1, 0, 0, 0)))
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trex))


# --- fragments ----------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class TrackRun:
    """The samples of one track in one fragment."""

    track_id: int
    base_time: int  # tfdt, in the track's timescale
    durations: list[int]
    sizes: list[int]
    flags: list[int] | None = None  # per-sample flags (video)
    cto: list[int] | None = None  # composition offsets, only when pts != dts


def fragment_header(sequence: int, runs: Sequence[TrackRun]) -> bytes:
    """``moof`` + the 8-byte ``mdat`` header; the sample data follows, track by track."""
    trafs = []
    for run in runs:
        n = len(run.durations)
        flags = 0x301 | (0x400 if run.flags is not None else 0) | (0x800 if run.cto else 0)
        cols = [run.durations, run.sizes]
        if run.flags is not None:
            cols.append(run.flags)
        if run.cto:
            cols.append(run.cto)
        per_sample = [v for row in zip(*cols, strict=True) for v in row]
        fmt = ">" + ("IIIi" if run.cto and run.flags is not None else "I" * len(cols)) * n
        trun = full_box(
            b"trun", 1 if run.cto else 0, flags,
            struct.pack(">Ii", n, 0), struct.pack(fmt, *per_sample),
        )  # fmt: skip
        tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", run.track_id))
        tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", run.base_time))
        trafs.append(box(b"traf", tfhd, tfdt, trun))
    moof = bytearray(box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), *trafs))
    # Patch data offsets now that the moof's size is known.
    offset = len(moof) + 8
    pos = 8 + 16  # after moof header and mfhd
    for run, traf in zip(runs, trafs, strict=True):
        trun_at = pos + 8 + 16 + 20  # traf header, tfhd, tfdt
        struct.pack_into(">i", moof, trun_at + 16, offset)
        offset += sum(run.sizes)
        pos += len(traf)
    data_size = offset - len(moof)
    return bytes(moof) + struct.pack(">I", data_size) + b"mdat"


# --- reading ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Box:
    kind: bytes
    offset: int
    size: int
    header: int


def iter_boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """Boxes in ``data[start:end]``; stops (without error) at a box that does not fit."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield Box(bytes(kind), pos, size, header)
        pos += size


def read_top_level(f: BinaryIO, file_size: int) -> Iterator[Box]:
    """Top-level boxes of a file without reading mdat payloads. Stops at a torn box."""
    pos = 0
    while pos + 8 <= file_size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return
        size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if size == 1:
            if len(head) < 16:
                return
            (size,) = struct.unpack_from(">Q", head, 8)
            header = 16
        if size < header or pos + size > file_size:
            return
        yield Box(bytes(kind), pos, size, header)
        pos += size


@dataclasses.dataclass(frozen=True, slots=True)
class FragmentInfo:
    """What the index needs of one fragment, read back from its moof."""

    video_base: int
    video_duration: int
    samples: int
    keyframe: bool
    data_bytes: int  # sum of every track's sample sizes: must equal the mdat payload


def _children(data: bytes, b: Box) -> Iterator[Box]:
    return iter_boxes(data, b.offset + b.header, b.offset + b.size)


def parse_moof(moof: bytes) -> FragmentInfo:
    """Video timing and total sample bytes of a fragment from its moof box's bytes."""
    top = next(iter_boxes(moof), None)
    if top is None or top.kind != b"moof":
        raise ValueError("not a moof box")
    video: tuple[int, int, int, bool] | None = None
    data_bytes = 0
    for traf in _children(moof, top):
        if traf.kind != b"traf":
            continue
        track = base = 0
        run: tuple[int, int, bool, int] | None = None
        for child in _children(moof, traf):
            p = child.offset + child.header
            if child.kind == b"tfhd":
                (track,) = struct.unpack_from(">I", moof, p + 4)
            elif child.kind == b"tfdt":
                fmt = ">Q" if moof[p] == 1 else ">I"
                (base,) = struct.unpack_from(fmt, moof, p + 4)
            elif child.kind == b"trun":
                run = _parse_trun(moof, p)
        if run is None:
            continue
        data_bytes += run[3]
        if track == VIDEO_TRACK:
            video = (base, run[0], run[1], run[2])
    if video is None:
        raise ValueError("moof has no video track run")
    return FragmentInfo(*video, data_bytes)


def _parse_trun(data: bytes, p: int) -> tuple[int, int, bool, int]:
    """(total duration, sample count, first sample is sync, total sample bytes).

    Only what this project writes is understood: per-sample durations and sizes.
    """
    (vf,) = struct.unpack_from(">I", data, p)
    flags = vf & 0xFFFFFF
    (count,) = struct.unpack_from(">I", data, p + 4)
    if not (flags & 0x100 and flags & 0x200):
        raise ValueError("trun without per-sample durations and sizes")
    q = p + 8
    if flags & 0x1:
        q += 4
    first_flags = None
    if flags & 0x4:
        (first_flags,) = struct.unpack_from(">I", data, q)
        q += 4
    width = sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    values = struct.unpack_from(f">{count * width}I", data, q)
    durations = values[0::width]
    sizes = values[1::width]
    if first_flags is None and flags & 0x400 and count:
        first_flags = values[2]
    key = first_flags is not None and not (first_flags & 0x10000)
    return sum(durations), count, key, sum(sizes)


def parse_timescales(moov: bytes) -> dict[int, int]:
    """track_id → timescale from a moov box's bytes."""
    out: dict[int, int] = {}
    top = next(iter_boxes(moov))
    for trak in _children(moov, top):
        if trak.kind != b"trak":
            continue
        track_id = 0
        for child in _children(moov, trak):
            if child.kind == b"tkhd":
                version = moov[child.offset + 8]
                off = child.offset + 8 + 4 + (16 if version == 1 else 8)
                (track_id,) = struct.unpack_from(">I", moov, off)
            elif child.kind == b"mdia":
                for m in _children(moov, child):
                    if m.kind == b"mdhd":
                        version = moov[m.offset + 8]
                        off = m.offset + 12 + (16 if version == 1 else 8)
                        (out[track_id],) = struct.unpack_from(">I", moov, off)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class InitInfo:
    """What the catalog row says of a segment, read back from its init segment."""

    codec: str
    width: int
    height: int
    timescale: int
    has_audio: bool


def parse_init(moov: bytes) -> InitInfo:
    """Codec, size and timescales from a moov box this project wrote (recovery of a file whose
    row was never written)."""
    timescales = parse_timescales(moov)
    for kind, codec in ((b"avc1", H264), (b"hvc1", HEVC)):
        at = moov.find(kind)
        if at >= 4:
            # Visual sample entry: header, 6 reserved, data reference index, 16 pre-defined.
            width, height = struct.unpack_from(">HH", moov, at - 4 + 8 + 24)
            return InitInfo(
                codec, width, height, timescales.get(VIDEO_TRACK, 0), AUDIO_TRACK in timescales
            )
    raise ValueError("no avc1 or hvc1 sample entry")
