"""Stored fragments and init segments reshaped for playback: a fragment moved to another decode
time, stripped of its audio, or cut down to its keyframe; an init segment without its audio
track; the codec strings a browser asks about (``MediaSource.isTypeSupported``).

A stored fragment is ``moof`` + ``mdat`` as :mod:`vms.recording.mp4` writes it: per track a
``traf`` with ``tfhd`` (default-base-is-moof), ``tfdt`` and one ``trun`` whose data offset counts
from the ``moof``'s first byte. :func:`parse` reads it back and checks that every sample lies
inside the ``mdat``: a fragment overwritten on disk is refused here (:class:`BadFragment`),
never handed to a player.

The trap is ``tfdt`` version 0: a 32-bit time that may not hold the new value. Version 1 (what
our writer writes) is patched in place, 8 bytes, and the fragment keeps its size, which the
range stream's byte layout depends on; a version 0 ``tfdt`` whose new time does not fit in 32
bits makes the fragment rebuilt, 4 bytes longer per track.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping

from vms.recording import mp4
from vms.recording.mp4 import AUDIO_TRACK, SYNC_FLAGS, VIDEO_TRACK, Box, TrackRun, iter_boxes

__all__ = [
    "AUDIO_TRACK",
    "VIDEO_TRACK",
    "BadFragment",
    "Fragment",
    "codecs",
    "keyframe_only",
    "parse",
    "parse_init",
    "retime",
    "video_init",
    "without_audio",
]


class BadFragment(ValueError):
    """Bytes that are not a whole fragment (or init segment) as this project writes them."""


@dataclasses.dataclass(frozen=True, slots=True)
class Traf:
    track_id: int
    tfdt_at: int  # offset of the tfdt box in the fragment
    version: int  # tfdt's
    base: int  # decode time of its first sample (the track's timescale)
    durations: list[int]
    sizes: list[int]
    flags: list[int] | None
    cto: list[int] | None
    data_at: int  # offset of its first sample's bytes in the fragment


@dataclasses.dataclass(frozen=True, slots=True)
class Fragment:
    sequence: int
    moof_size: int
    trafs: list[Traf]

    def track(self, track_id: int) -> Traf | None:
        return next((t for t in self.trafs if t.track_id == track_id), None)


def _children(data: bytes, b: Box) -> list[Box]:
    return list(iter_boxes(data, b.offset + b.header, b.offset + b.size))


def parse(data: bytes) -> Fragment:
    """One stored fragment (``moof`` + ``mdat``, nothing after); :class:`BadFragment` if not."""
    try:
        return _parse(data)
    except (struct.error, IndexError) as e:
        raise BadFragment(f"fragment does not parse: {e}") from e


def _parse(data: bytes) -> Fragment:
    boxes = list(iter_boxes(data))
    if len(boxes) != 2 or boxes[0].kind != b"moof" or boxes[1].kind != b"mdat":
        raise BadFragment("not a moof followed by an mdat")
    moof, mdat = boxes
    if mdat.offset + mdat.size != len(data):
        raise BadFragment("bytes after the mdat")
    sequence = 0
    trafs = []
    for child in _children(data, moof):
        if child.kind == b"mfhd":
            (sequence,) = struct.unpack_from(">I", data, child.offset + 12)
        elif child.kind == b"traf":
            trafs.append(_traf(data, child))
    if not any(t.track_id == VIDEO_TRACK for t in trafs):
        raise BadFragment("no video track in the moof")
    data_start = mdat.offset + mdat.header
    for t in trafs:
        if t.data_at < data_start or t.data_at + sum(t.sizes) > len(data):
            raise BadFragment(f"track {t.track_id}'s samples lie outside the mdat")
    return Fragment(sequence, moof.size, trafs)


def _traf(data: bytes, traf: Box) -> Traf:
    track_id = version = base = 0
    tfdt_at = -1
    default_duration = default_size = default_flags = 0
    run = None
    for child in _children(data, traf):
        p = child.offset + child.header
        if child.kind == b"tfhd":
            (vf, track_id) = struct.unpack_from(">II", data, p)
            q = p + 8
            if vf & 0x01:  # base data offset: this project never writes one
                raise BadFragment("tfhd with an explicit base data offset")
            q += 4 if vf & 0x02 else 0
            if vf & 0x08:
                (default_duration,) = struct.unpack_from(">I", data, q)
                q += 4
            if vf & 0x10:
                (default_size,) = struct.unpack_from(">I", data, q)
                q += 4
            if vf & 0x20:
                (default_flags,) = struct.unpack_from(">I", data, q)
        elif child.kind == b"tfdt":
            tfdt_at, version = child.offset, data[p]
            (base,) = struct.unpack_from(">Q" if version == 1 else ">I", data, p + 4)
        elif child.kind == b"trun":
            run = p
    if tfdt_at < 0 or run is None:
        raise BadFragment(f"track {track_id}: traf without tfdt or trun")
    (vf, count) = struct.unpack_from(">II", data, run)
    flags = vf & 0xFFFFFF
    q = run + 8
    if not flags & 0x01:
        raise BadFragment(f"track {track_id}: trun without a data offset")
    (data_offset,) = struct.unpack_from(">i", data, q)
    q += 4
    first_flags = None
    if flags & 0x04:
        (first_flags,) = struct.unpack_from(">I", data, q)
        q += 4
    cols = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
    values = struct.unpack_from(f">{count * len(cols)}I", data, q) if count else ()
    column = {bit: list(values[i :: len(cols)]) for i, bit in enumerate(cols)}
    durations = column.get(0x100, [default_duration] * count)
    sizes = column.get(0x200, [default_size] * count)
    sample_flags = column.get(0x400)
    if sample_flags is None and (first_flags is not None or track_id == VIDEO_TRACK):
        sample_flags = [default_flags] * count
        if first_flags is not None and count:
            sample_flags[0] = first_flags
    cto = column.get(0x800)
    if cto is not None and vf >> 24 == 1:  # version 1: signed offsets
        cto = [v - (1 << 32) if v & 0x80000000 else v for v in cto]
    # The data offset counts from the moof's first byte (default-base-is-moof), which is the
    # fragment's first byte.
    return Traf(track_id, tfdt_at, version, base, durations, sizes, sample_flags, cto,
                data_offset)  # fmt: skip


def retime(data: bytes, frag: Fragment, times: Mapping[int, int]) -> bytes:
    """The fragment with each track's ``tfdt`` set to ``times[track_id]`` (tracks not named
    keep theirs). Same size, unless a version 0 ``tfdt`` cannot hold its new time."""
    if any(t.version != 1 and times.get(t.track_id, t.base) >= 1 << 32 for t in frag.trafs):
        return _rebuild(data, frag, times, None)
    out = bytearray(data)
    for t in frag.trafs:
        if t.track_id in times:
            fmt = ">Q" if t.version == 1 else ">I"
            struct.pack_into(fmt, out, t.tfdt_at + 12, max(0, times[t.track_id]))
    return bytes(out)


def without_audio(data: bytes, frag: Fragment, video_time: int) -> bytes:
    """The fragment's video alone, at decode time ``video_time``."""
    return _rebuild(data, frag, {VIDEO_TRACK: video_time}, {VIDEO_TRACK})


def keyframe_only(data: bytes, frag: Fragment, time: int, duration: int, sequence: int) -> bytes:
    """A fragment of one sample: this fragment's first video sample (its keyframe), lasting
    ``duration`` from decode time ``time``."""
    v = frag.track(VIDEO_TRACK)
    assert v is not None  # parse() refuses a fragment without one
    if not v.sizes:
        raise BadFragment("video track without samples")
    run = TrackRun(VIDEO_TRACK, max(0, time), [max(1, duration)], [v.sizes[0]], [SYNC_FLAGS],
                   [v.cto[0]] if v.cto and v.cto[0] else None)  # fmt: skip
    return mp4.fragment_header(sequence, [run]) + data[v.data_at : v.data_at + v.sizes[0]]


def _rebuild(data: bytes, frag: Fragment, times: Mapping[int, int], keep: set[int] | None) -> bytes:
    runs, payload = [], []
    for t in frag.trafs:
        if keep is not None and t.track_id not in keep:
            continue
        runs.append(TrackRun(t.track_id, max(0, times.get(t.track_id, t.base)), t.durations,
                             t.sizes, t.flags, t.cto))  # fmt: skip
        payload.append(data[t.data_at : t.data_at + sum(t.sizes)])
    return mp4.fragment_header(frag.sequence, runs) + b"".join(payload)


# --- init segments -----------------------------------------------------------------------------


def parse_init(data: bytes) -> dict[int, int]:
    """track id → timescale of an init segment (``ftyp`` + ``moov``, nothing after)."""
    boxes = list(iter_boxes(data))
    if [b.kind for b in boxes] != [b"ftyp", b"moov"] or boxes[1].offset + boxes[1].size != len(
        data
    ):
        raise BadFragment("not an init segment (ftyp + moov)")
    moov = boxes[1]
    try:
        timescales = mp4.parse_timescales(data[moov.offset : moov.offset + moov.size])
    except (struct.error, IndexError, StopIteration) as e:
        raise BadFragment(f"moov does not parse: {e}") from e
    if VIDEO_TRACK not in timescales or not timescales[VIDEO_TRACK]:
        raise BadFragment("no video track in the moov")
    return timescales


def video_init(data: bytes) -> bytes:
    """The init segment without its audio track: every ``trak`` but the video's and its
    ``trex`` are left out."""
    boxes = list(iter_boxes(data))
    ftyp, moov = boxes[0], boxes[1]
    kept = []
    for child in _children(data, moov):
        body = data[child.offset : child.offset + child.size]
        if child.kind == b"trak" and _track_id(data, child) != VIDEO_TRACK:
            continue
        if child.kind == b"mvex":
            trex = [
                data[b.offset : b.offset + b.size]
                for b in _children(data, child)
                if b.kind != b"trex"
                or struct.unpack_from(">I", data, b.offset + 12)[0] == VIDEO_TRACK
            ]
            body = mp4.box(b"mvex", *trex)
        kept.append(body)
    return data[ftyp.offset : ftyp.offset + ftyp.size] + mp4.box(b"moov", *kept)


def _u32(data: bytes, at: int) -> int:
    return int(struct.unpack_from(">I", data, at)[0])


def _track_id(data: bytes, trak: Box) -> int:
    for b in _children(data, trak):
        if b.kind == b"tkhd":
            off = b.offset + 12 + (16 if data[b.offset + 8] == 1 else 8)
            return int(struct.unpack_from(">I", data, off)[0])
    return 0


def codecs(init: bytes) -> list[str]:
    """RFC 6381 codec strings of an init segment's tracks, video first: ``avc1.PPCCLL``,
    ``hvc1.…``, ``mp4a.40.<object type>``; G.711 as its sample entry (``ulaw``, ``alaw``),
    which browsers do not play."""
    out = []
    at = init.find(b"avcC")
    if at >= 4:
        out.append(f"avc1.{init[at + 5]:02x}{init[at + 6]:02x}{init[at + 7]:02x}")
    else:
        at = init.find(b"hvcC")
        if at >= 4:
            out.append(_hvc1(init[at + 4 : at + 4 + 22]))
    at = init.find(b"esds")
    if init.find(b"mp4a") >= 0 and at >= 0:
        out.append(f"mp4a.40.{_audio_object_type(init, at)}")
    else:
        for kind in (b"ulaw", b"alaw"):
            if init.find(kind) >= 0:
                out.append(kind.decode())
    return out


def _hvc1(c: bytes) -> str:
    """``hvc1.<space><profile>.<compatibility>.<tier><level>.<constraints>`` from an hvcC's
    first bytes (ISO/IEC 14496-15 annex E)."""
    space = "" if not c[1] >> 6 else "ABC"[(c[1] >> 6) - 1]
    tier = "H" if c[1] & 0x20 else "L"
    compat = int(f"{int.from_bytes(c[2:6], 'big'):032b}"[::-1], 2)  # bits in reverse order
    constraints = list(c[6:12])
    while constraints and not constraints[-1]:
        constraints.pop()
    tail = "".join(f".{b:X}" for b in constraints)
    return f"hvc1.{space}{c[1] & 0x1F}.{compat:X}.{tier}{c[12]}{tail}"


def _audio_object_type(init: bytes, esds: int) -> int:
    """The object type of the AudioSpecificConfig in an esds (its first 5 bits); 2 (AAC LC)
    when it cannot be found."""
    pos = esds + 8  # after the type and the full box's version and flags
    end = min(len(init), esds + 200)
    while pos < end:
        tag = init[pos]
        pos += 1
        size = 0
        for _ in range(4):
            b = init[pos]
            pos += 1
            size = size << 7 | b & 0x7F
            if not b & 0x80:
                break
        if tag == 3:
            pos += 3  # ES_ID, flags (no dependency, URL or OCR stream in what we write)
        elif tag == 4:
            pos += 13
        elif tag == 5:
            return init[pos] >> 3 or 2
        else:
            pos += size
    return 2
