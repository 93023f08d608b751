"""The plan of a playback range: which stored fragments cover ``[start, end)``, where their
bytes are, and where each lands on the one output time line.

:func:`plan` asks the catalog for the camera stream's segments (``Catalog.overlapping`` with
their fragment index) and, for a segment still being written, the writer's snapshot of it
(:class:`vms.recording.live.OpenSegment`). It reads no segment file. What it answers:

- **pieces**, one per segment served: the file, its init segment's byte range, and the
  fragments to serve (:meth:`Piece.fragments`: per fragment its file offset and size, keyframe
  flag, decode time on the run and wall time). The first piece starts at the last keyframe
  fragment at or before ``start``, so ``first_us`` is at or before ``start`` and
  ``offset_us = start − first_us`` is where the player seeks to.
- **runs**: consecutive pieces whose decode time continues one another's with the same codec,
  size, timescale, audio and init size. A run shares one init segment; each new run needs its
  own. Each run is placed on the output time line (``output_start``, in its timescale) at its
  wall-clock distance from ``first_us``, never before the end of the run before it.
- **gaps** ``[start, end)`` in wall time: nothing recorded, a quarantined segment, a storage
  root that is missing, or media lost inside a segment (a fragment's gap bit).

Fragments are computed from the index blob when asked (:meth:`Piece.fragments`), never kept per
fragment: a week of one camera is ~10,000 pieces and ~7 MB of index, not 600,000 objects.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import struct
from pathlib import Path
from typing import Protocol

from vms.catalog.store import CLOSED, OPEN, QUARANTINED, Catalog, Segment
from vms.errors import Kind, VmsError
from vms.recording.live import OpenSegment
from vms.recording.segment import GAP, KEYFRAME
from vms.recording.storage import Storage
from vms.times import DAY_US, invalid, iso

# The catalog's fragment index (vms.recording.segment.FragmentIndex): per fragment duration,
# size, and flags (bit 0 keyframe, bit 1 gap after it, samples << 2).
_ENTRY = struct.Struct("<III")
_SAMPLES_SHIFT = 2


class OpenSegments(Protocol):
    """Where the open segments are (:class:`vms.recording.live.OpenFiles`)."""

    def find(
        self, camera_id: str, stream: int, seg_id: int | None = None
    ) -> OpenSegment | None: ...


class GapReason(enum.StrEnum):
    NOT_RECORDED = "not recorded"
    QUARANTINED = "quarantined"  # its bytes failed their checksum: never served
    STORAGE_MISSING = "storage missing"  # its root is missing, refused or not configured
    LOST = "lost"  # media lost inside a segment (RTP loss): a fragment's gap bit


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    start_us: int
    end_us: int
    reason: GapReason


@dataclasses.dataclass(frozen=True, slots=True)
class Frag:
    """One fragment to serve: a ``moof`` + ``mdat`` at ``offset`` in its piece's file."""

    index: int  # its position in the segment's fragment index
    offset: int
    size: int
    keyframe: bool  # its first video sample is a sync sample
    samples: int  # video samples
    media_start: int  # its video ``tfdt``: decode time on the run (the track's timescale)
    duration: int  # to the next fragment's start, a hole after it included (``gap_after``)
    start_us: int  # wall time of its first sample
    end_us: int  # wall time of its end
    gap_after: bool

    @property
    def media_end(self) -> int:
        return self.media_start + self.duration


@dataclasses.dataclass(frozen=True, slots=True)
class Piece:
    """The fragments ``[first, first + count)`` of one segment, and what a reader needs of it."""

    segment_id: int
    file: Path  # absolute
    init_size: int  # the init segment (``ftyp`` + ``moov``) is bytes [0, init_size)
    open: bool  # still being written: only the fragments of the writer's snapshot
    codec: str
    width: int
    height: int
    timescale: int  # the video track's
    has_audio: bool
    media_start: int  # the segment's own first decode time on its run (its row's media_start)
    segment_start_us: int
    first: int
    count: int
    run: int  # index in Plan.runs
    offset: int  # file offset of the first fragment served
    size: int  # bytes of the fragments served
    start_us: int  # wall time of the first fragment served
    end_us: int  # wall time at the end of the last one
    media_first: int  # decode time of the first fragment served
    media_end: int  # decode time at the end of the last one
    samples: int  # video samples served
    segment_fragments: int  # fragments in the segment (as far as written, when open)
    segment_media_end: int  # decode time at the segment's end (where a run's next one goes on)
    frag_index: bytes = dataclasses.field(repr=False)

    @property
    def init_range(self) -> tuple[int, int]:
        """``(offset, size)`` of the init segment in the file."""
        return 0, self.init_size

    def fragments(self) -> list[Frag]:
        """The fragments served, in file order (computed from the index)."""
        return _fragments(self.frag_index, self.init_size, self.segment_start_us,
                          self.media_start, self.timescale, self.first, self.count)  # fmt: skip

    def wall_us(self, media: int) -> int:
        """Wall time of a decode time of this segment."""
        return self.segment_start_us + (media - self.media_start) * 1_000_000 // self.timescale


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """Pieces that share one decode time line and one init segment."""

    index: int
    first_piece: int
    pieces: int
    codec: str
    width: int
    height: int
    timescale: int
    has_audio: bool
    init_size: int
    media_start: int  # decode time of its first fragment served
    media_end: int
    output_start: int  # where that fragment lands on the output time line (timescale units)
    start_us: int
    end_us: int

    def output(self, media: int) -> int:
        """Output time of a decode time of this run (timescale units)."""
        return media - self.media_start + self.output_start

    @property
    def output_end(self) -> int:
        return self.output(self.media_end)

    @property
    def shift(self) -> int:
        """What is added to a video ``tfdt`` of this run to put it on the output time line."""
        return self.output_start - self.media_start


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    camera_id: str
    stream: int
    start_us: int  # as asked
    end_us: int
    first_us: int  # wall time of output time 0: the first fragment served
    pieces: tuple[Piece, ...]
    runs: tuple[Run, ...]
    gaps: tuple[Gap, ...]

    @property
    def offset_us(self) -> int:
        """From output time 0 to the instant asked for: where a player seeks to."""
        return max(0, self.start_us - self.first_us)

    def pieces_of(self, run: Run) -> tuple[Piece, ...]:
        return self.pieces[run.first_piece : run.first_piece + run.pieces]

    def output_us(self, piece: Piece, media: int) -> int:
        """Output time in microseconds of a decode time of ``piece``."""
        run = self.runs[piece.run]
        return run.output(media) * 1_000_000 // run.timescale


def plan(
    catalog: Catalog,
    open_files: OpenSegments,
    camera_id: str,
    stream: int,
    start_us: int,
    end_us: int,
    *,
    max_range_us: int,
    storage: Storage,
    now_us: int | None = None,
) -> Plan:
    """What covers ``[start_us, end_us)`` of one camera stream (see the module).

    ``storage`` resolves a row's root to a path; ``now_us`` (the live edge) bounds the gap
    reported after the last piece. Raises ``INVALID_ARGUMENT`` for an empty or too long range,
    ``NOT_FOUND`` when nothing in it can be served."""
    if end_us <= start_us:
        raise invalid("end", "must be after start")
    if end_us - start_us > max_range_us:
        raise invalid("end", f"the range is longer than {max_range_us / DAY_US:g} days, "
                             "the most one playback may ask (playback.max_range_days)")  # fmt: skip
    sources: list[_Source] = []
    holes: list[Gap] = []
    for row in catalog.overlapping(camera_id, stream, start_us, end_us, with_index=True):
        src = _resolve(row, catalog, open_files, storage, holes)
        if src is not None:
            sources.append(src)
    pieces: list[Piece] = []
    lost: list[Gap] = []
    for src in sources:
        run = pieces[-1].run if pieces else 0
        piece = _select(src, start_us, end_us, run, lost)
        if piece is None:
            continue
        if pieces and not _continues(pieces[-1], piece):
            piece = dataclasses.replace(piece, run=run + 1)
        pieces.append(piece)
    if not pieces:
        raise VmsError(Kind.NOT_FOUND, f"no recordings of camera {camera_id} between "
                                       f"{iso(start_us)} and {iso(end_us)}")  # fmt: skip
    runs = _runs(pieces)
    edge = end_us if now_us is None else min(end_us, max(now_us, pieces[-1].end_us))
    gaps = _gaps(pieces, holes, lost, start_us, edge)
    return Plan(camera_id, stream, start_us, end_us, pieces[0].start_us, tuple(pieces),
                tuple(runs), tuple(gaps))  # fmt: skip


# --- segments to pieces ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Source:
    row: Segment
    file: Path
    init_size: int
    open: bool
    frag_index: bytes
    media_start: int
    timescale: int


def _resolve(
    row: Segment, catalog: Catalog, open_files: OpenSegments, storage: Storage, holes: list[Gap]
) -> _Source | None:
    if row.state == QUARANTINED:
        holes.append(Gap(row.start_us, row.end_us, GapReason.QUARANTINED))
        return None
    if row.state == OPEN:
        snap = open_files.find(row.camera_id, row.stream, row.id)
        if snap is not None:
            return _Source(row, snap.file, snap.init_bytes, True, snap.frag_index,
                           snap.media_start, snap.timescale)  # fmt: skip
        # Closed since the query, or its file not created yet: the row says which.
        try:
            row = catalog.segment(row.id)
        except VmsError:
            return None
        if row.state != CLOSED:
            return None
    try:
        root = storage.by_id(row.root_id)
    except VmsError:
        root = None
    if root is None or not root.usable:
        holes.append(Gap(row.start_us, row.end_us, GapReason.STORAGE_MISSING))
        return None
    return _Source(row, root.file(row.path), row.init_bytes, False, row.frag_index or b"",
                   row.media_start, row.timescale)  # fmt: skip


def _entries(blob: bytes) -> list[tuple[int, int, int]]:
    """(duration, size, flags) per fragment, as :class:`FragmentIndex` encodes them."""
    if len(blob) % _ENTRY.size:
        raise ValueError("fragment index length is not a multiple of 12")
    return list(_ENTRY.iter_unpack(blob))


def _fragments(
    blob: bytes, init_size: int, seg_start_us: int, media_start: int, timescale: int,
    first: int = 0, count: int | None = None,
) -> list[Frag]:  # fmt: skip
    out = []
    offset, start = init_size, 0
    stop = None if count is None else first + count
    for i, (duration, size, flags) in enumerate(_entries(blob)):
        if stop is not None and i >= stop:
            break
        if i >= first:
            out.append(Frag(
                i, offset, size, bool(flags & KEYFRAME), flags >> _SAMPLES_SHIFT,
                media_start + start, duration,
                seg_start_us + start * 1_000_000 // timescale,
                seg_start_us + (start + duration) * 1_000_000 // timescale,
                bool(flags & GAP),
            ))  # fmt: skip
        offset += size
        start += duration
    return out


def _select(src: _Source, start_us: int, end_us: int, run: int, lost: list[Gap]) -> Piece | None:
    """The fragments of ``src`` that overlap ``[start_us, end_us)``, from the keyframe at or
    before the first of them. Plain sums over the index: a week is 10,000 segments."""
    row, ts = src.row, src.timescale
    entries = _entries(src.frag_index)
    if not entries:
        return None
    durations, sizes, flags = zip(*entries, strict=True)  # columns: sums run in C
    total = sum(durations)
    if row.start_us >= start_us and row.start_us + total * 1_000_000 // ts <= end_us:
        lo, hi = 0, len(entries)  # the whole segment: the common case of a long range
    else:
        lo = hi = -1
        t = 0
        for i, (duration, _, _) in enumerate(entries):
            if row.start_us + (t + duration) * 1_000_000 // ts > start_us:
                if row.start_us + t * 1_000_000 // ts >= end_us:
                    break
                lo = i if lo < 0 else lo
                hi = i + 1
            t += duration
        if lo < 0:
            return None
        while lo > 0 and not flags[lo] & KEYFRAME:  # a player can start at a keyframe only
            lo -= 1
    before = sum(durations[:lo])
    duration = sum(durations[lo:hi])
    if any(f & GAP for f in flags[lo : hi - 1]):
        frags = _fragments(src.frag_index, src.init_size, row.start_us, src.media_start, ts)
        _lost(frags, frags[lo:hi], ts, row.start_us, src.media_start, lost)
    return Piece(
        segment_id=row.id, file=src.file, init_size=src.init_size, open=src.open,
        codec=row.codec, width=row.width, height=row.height, timescale=ts,
        has_audio=row.has_audio, media_start=src.media_start, segment_start_us=row.start_us,
        first=lo, count=hi - lo, run=run,
        offset=src.init_size + sum(sizes[:lo]), size=sum(sizes[lo:hi]),
        start_us=row.start_us + before * 1_000_000 // ts,
        end_us=row.start_us + (before + duration) * 1_000_000 // ts,
        media_first=src.media_start + before, media_end=src.media_start + before + duration,
        samples=sum(f >> _SAMPLES_SHIFT for f in flags[lo:hi]),
        segment_fragments=len(entries), segment_media_end=src.media_start + total,
        frag_index=src.frag_index,
    )  # fmt: skip


def _lost(
    frags: list[Frag], served: list[Frag], timescale: int, seg_start_us: int, media_start: int,
    lost: list[Gap],
) -> None:  # fmt: skip
    """Gaps inside a segment. A fragment's duration runs on to the next one's start when media
    was lost between them (its gap bit); where its own samples end is not in the index, so it
    is estimated from the segment's frame interval."""
    whole = [f for f in frags if not f.gap_after and f.samples]
    if whole:
        frame = sum(f.duration for f in whole) // sum(f.samples for f in whole)
    else:
        frame = timescale // 25
    for f in served[:-1]:
        if not f.gap_after:
            continue
        end = f.media_start + min(f.duration, f.samples * frame)
        wall = seg_start_us + (end - media_start) * 1_000_000 // timescale
        if wall < f.end_us:
            lost.append(Gap(wall, f.end_us, GapReason.LOST))


def _continues(prev: Piece, piece: Piece) -> bool:
    """Whether ``piece`` goes on on ``prev``'s decode time line with the same init segment."""
    return (
        piece.first == 0
        and prev.first + prev.count == prev.segment_fragments
        and piece.media_start != 0
        and piece.media_start == prev.segment_media_end
        and (piece.codec, piece.width, piece.height, piece.timescale, piece.has_audio,
             piece.init_size)
        == (prev.codec, prev.width, prev.height, prev.timescale, prev.has_audio, prev.init_size)
    )  # fmt: skip


def _runs(pieces: list[Piece]) -> list[Run]:
    """The runs of the pieces (numbered already), each placed on the output time line."""
    runs: list[Run] = []
    first_us = pieces[0].start_us
    i = 0
    while i < len(pieces):
        j = i + 1
        while j < len(pieces) and pieces[j].run == pieces[i].run:
            j += 1
        head, tail = pieces[i], pieces[j - 1]
        ts = head.timescale
        at_us = head.start_us - first_us
        if runs:
            prev = runs[-1]
            prev_end_us = -(-prev.output_end * 1_000_000 // prev.timescale)
            at_us = max(at_us, prev_end_us)
        run = Run(
            index=len(runs), first_piece=i, pieces=j - i, codec=head.codec, width=head.width,
            height=head.height, timescale=ts, has_audio=head.has_audio,
            init_size=head.init_size, media_start=head.media_first, media_end=tail.media_end,
            output_start=-(-at_us * ts // 1_000_000), start_us=head.start_us,
            end_us=tail.end_us,
        )  # fmt: skip
        runs.append(run)
        i = j
    return runs


def _gaps(
    pieces: list[Piece], holes: list[Gap], lost: list[Gap], start_us: int, edge_us: int
) -> list[Gap]:
    """Holes in wall time of more than one frame between pieces of different runs, at either
    end of the range, and the media lost inside pieces. Within a run nothing is missing even
    where the wall clock was re-anchored: the decode time goes on."""
    found = list(lost)

    def between(a: int, b: int) -> None:
        if b <= a:
            return
        # Named for a segment left out in it, if any: a quarantined one, or a missing root's.
        reasons = [h.reason for h in holes if h.start_us < b and h.end_us > a]
        found.append(Gap(a, b, reasons[0] if reasons else GapReason.NOT_RECORDED))

    if pieces[0].start_us > start_us:
        between(start_us, pieces[0].start_us)
    for prev, piece in itertools.pairwise(pieces):
        if piece.run == prev.run:
            continue
        frame_us = (prev.end_us - prev.start_us) // max(1, prev.samples)
        if piece.start_us - prev.end_us > frame_us:
            between(prev.end_us, piece.start_us)
    last = pieces[-1]
    frame_us = (last.end_us - last.start_us) // max(1, last.samples)
    if edge_us - last.end_us > frame_us:
        between(last.end_us, edge_us)
    return sorted(found, key=lambda g: g.start_us)
