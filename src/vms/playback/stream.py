"""A plan served as one fragmented-MP4 stream on one time line (docs/design/playback.md).

:class:`RangeStream` yields, for each run of the plan, the run's init segment and then its
fragments' stored bytes, each ``tfdt`` moved onto the output time line (:attr:`Run.shift
<vms.playback.plan.Run.shift>`). Sizes do not change, so the whole stream's length
(:attr:`RangeStream.size`) and where every byte comes from are known from the index alone, and
any byte range can be served (:meth:`RangeStream.chunks` with ``start``/``stop``).

Variants, whose length is not known in advance (no byte ranges):

- ``audio=False``: every fragment rebuilt without its audio track, under a video-only init;
- ``keyframes="forward"`` or ``"reverse"`` (trick play): one sample per keyframe fragment,
  lasting until the next keyframe, video only; reverse goes newest first on increasing times.

Reading is blocking (``os.pread``, one fragment in memory at a time): iterate in a worker
thread. Each piece's file is opened once and read through that descriptor, so a file unlinked
by retention meanwhile is still read to its end. A file that is gone, or a fragment that does
not parse, ends its piece with a warning; a stream without a promised length goes on with the
next piece (a hole in its time line), a byte range, whose length is promised, ends early
(:class:`Unreadable` is logged, and the client retries or gives up).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Literal

from vms.playback import fragments
from vms.playback.fragments import VIDEO_TRACK, BadFragment
from vms.playback.plan import Frag, Piece, Plan
from vms.times import iso

log = logging.getLogger(__name__)

Keyframes = Literal["forward", "reverse"]


class Unreadable(Exception):
    """A piece's file is gone, short, or holds something other than what its index says."""


class RangeStream:
    """The bytes of a plan (see the module). Not thread-safe: one reader at a time."""

    def __init__(
        self, plan: Plan, *, audio: bool = True, keyframes: Keyframes | None = None
    ) -> None:
        self.plan = plan
        self.audio = audio
        self.keyframes = keyframes
        # Where each piece's bytes start in the output: its run's init (first piece of the
        # run only), then its fragments.
        self._at: list[int] = []
        pos = 0
        for i, piece in enumerate(plan.pieces):
            self._at.append(pos)
            if i == plan.runs[piece.run].first_piece:
                pos += piece.init_size
            pos += piece.size
        self._size = pos

    @property
    def size(self) -> int | None:
        """The stream's length in bytes; None for the variants (built as they go)."""
        return self._size if self.audio and self.keyframes is None else None

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The stream's bytes ``[start, stop)`` (byte ranges need :attr:`size`), at most a
        fragment a chunk. A whole stream skips an unreadable piece; a byte range ends early."""
        if self.keyframes is not None:
            return self._trick(self.keyframes == "reverse")
        if not self.audio:
            return self._whole(video_only=True)
        if start == 0 and stop is None:
            return self._whole(video_only=False)
        if self.size is None or not 0 <= start < (stop if stop is not None else self._size):
            raise ValueError("byte ranges are only served of the whole stream")
        return self._range(start, min(self._size, stop if stop is not None else self._size))

    # --- the stored bytes, retimed -------------------------------------------------------------

    def _whole(self, *, video_only: bool) -> Iterator[bytes]:
        sent_run = -1  # the run whose init was sent last
        for piece in self.plan.pieces:
            try:
                with _File(piece) as f:
                    init = f.init()
                    if piece.run != sent_run:
                        yield fragments.video_init(init) if video_only else init
                        sent_run = piece.run
                    for frag in piece.fragments():
                        data = f.fragment(frag)
                        yield self._retimed(piece, f, frag, data, video_only)
            except Unreadable as e:
                self._skipped(piece, e)

    def _range(self, start: int, stop: int) -> Iterator[bytes]:
        first = bisect.bisect_right(self._at, start) - 1
        for i in range(first, len(self.plan.pieces)):
            pos = self._at[i]
            if pos >= stop:
                return
            piece = self.plan.pieces[i]
            try:
                with _File(piece) as f:
                    init = f.init()
                    if i == self.plan.runs[piece.run].first_piece:
                        if pos + len(init) > start:
                            yield init[max(0, start - pos) : stop - pos]
                        pos += len(init)
                    for frag in piece.fragments():
                        if pos >= stop:
                            return
                        if pos + frag.size > start:
                            out = self._retimed(piece, f, frag, f.fragment(frag), False)
                            if len(out) != frag.size:
                                raise Unreadable("a version 0 tfdt grew the fragment")
                            yield out[max(0, start - pos) : stop - pos]
                        pos += frag.size
            except Unreadable as e:
                self._skipped(piece, e, ended=True)
                return

    def _retimed(self, piece: Piece, f: _File, frag: Frag, data: bytes, video_only: bool) -> bytes:
        parsed = _parse(data, frag)
        shift = self.plan.runs[piece.run].shift
        if video_only:
            return fragments.without_audio(data, parsed, frag.media_start + shift)
        times = {}
        for t in parsed.trafs:
            ts = f.timescales.get(t.track_id)
            if t.track_id == VIDEO_TRACK:
                times[t.track_id] = t.base + shift
            elif ts:
                times[t.track_id] = t.base + shift * ts // piece.timescale
        return fragments.retime(data, parsed, times)

    # --- trick play ----------------------------------------------------------------------------

    def _trick(self, reverse: bool) -> Iterator[bytes]:
        """One sample per keyframe fragment, video only. Forward: at its own output time;
        reverse: newest first, each after the one before."""
        plan = self.plan
        order = reversed(plan.pieces) if reverse else iter(plan.pieces)
        sent_run = -1
        sequence = 0
        t, t_scale = 0, 0  # reverse: the output time reached, and its timescale
        for piece in order:
            run = plan.runs[piece.run]
            spans = _keyframe_spans(piece)
            if reverse:
                spans.reverse()
            try:
                with _File(piece) as f:
                    init = f.init()
                    for frag, duration in spans:
                        data = f.fragment(frag)
                        parsed = _parse(data, frag)
                        if piece.run != sent_run:
                            yield fragments.video_init(init)
                            sent_run = piece.run
                        if reverse:
                            if t_scale != run.timescale:  # a run of another timescale
                                t = -(-t * run.timescale // t_scale) if t_scale else 0
                                t_scale = run.timescale
                            time = t
                            t += duration
                        else:
                            time = run.output(frag.media_start)
                        sequence += 1
                        yield fragments.keyframe_only(data, parsed, time, duration, sequence)
            except Unreadable as e:
                self._skipped(piece, e)

    def _skipped(self, piece: Piece, e: Unreadable, *, ended: bool = False) -> None:
        what = "the byte range ends here" if ended else "skipped"
        log.warning(
            "playback of camera %s: segment %d (%s) %s: %s; gap from %s",
            self.plan.camera_id, piece.segment_id, piece.file, what, e,
            iso(piece.start_us),
        )  # fmt: skip


def _keyframe_spans(piece: Piece) -> list[tuple[Frag, int]]:
    """The piece's keyframe fragments, each with the time to the next keyframe (or to the
    piece's end)."""
    keys = [f for f in piece.fragments() if f.keyframe]
    ends = [f.media_start for f in keys[1:]] + [piece.media_end]
    return [(f, end - f.media_start) for f, end in zip(keys, ends, strict=True)]


def _parse(data: bytes, frag: Frag) -> fragments.Fragment:
    try:
        parsed = fragments.parse(data)
    except BadFragment as e:
        raise Unreadable(f"fragment {frag.index} at byte {frag.offset}: {e}") from e
    v = parsed.track(VIDEO_TRACK)
    if v is None or v.base != frag.media_start:
        raise Unreadable(f"fragment {frag.index} at byte {frag.offset} is not where the index "
                         "puts it")  # fmt: skip
    return parsed


class _File:
    """One piece's file, open for the time it is read."""

    def __init__(self, piece: Piece) -> None:
        self.piece = piece
        self.fd = -1
        self.timescales: dict[int, int] = {}

    def __enter__(self) -> _File:
        try:
            self.fd = os.open(self.piece.file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise Unreadable(f"cannot open it: {e.strerror}") from e
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def read(self, size: int, offset: int) -> bytes:
        try:
            data = os.pread(self.fd, size, offset)
        except OSError as e:
            raise Unreadable(f"read failed: {e.strerror}") from e
        if len(data) != size:
            raise Unreadable(f"{len(data)} of {size} bytes at byte {offset}: the file is short")
        return data

    def init(self) -> bytes:
        data = self.read(self.piece.init_size, 0)
        try:
            self.timescales = fragments.parse_init(data)
        except BadFragment as e:
            raise Unreadable(f"init segment: {e}") from e
        if self.timescales[VIDEO_TRACK] != self.piece.timescale:
            raise Unreadable("the init segment's timescale is not the row's")
        return data

    def fragment(self, frag: Frag) -> bytes:
        return self.read(frag.size, frag.offset)


class FileChunks:
    """Bytes ``[start, stop)`` of an open file, ``chunk`` at a time, as an iterator that owns
    the descriptor: it is closed at the end or by :meth:`close`, even if iteration never
    began (a generator that never started would keep it open)."""

    def __init__(self, fd: int, start: int, stop: int, chunk: int = 1 << 18) -> None:
        self._fd, self._pos, self._stop, self._chunk = fd, start, stop, chunk
        self._lock = threading.Lock()
        self._reading = False
        self._closing = False

    def __iter__(self) -> FileChunks:
        return self

    def __next__(self) -> bytes:
        with self._lock:
            if self._fd < 0 or self._pos >= self._stop:
                self._release()
                raise StopIteration
            self._reading = True
        try:
            data = os.pread(self._fd, min(self._chunk, self._stop - self._pos), self._pos)
        finally:
            with self._lock:
                self._reading = False
                if self._closing:
                    self._release()
        if not data:
            log.warning("file ended at byte %d of %d", self._pos, self._stop)
            self.close()
            raise StopIteration
        self._pos += len(data)
        return data

    def close(self) -> None:
        """Close the file now, or (from another thread, during a read) after that read."""
        with self._lock:
            self._closing = True
            if not self._reading:
                self._release()

    def __del__(self) -> None:  # an answer that was never sent
        self._release()

    def _release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
