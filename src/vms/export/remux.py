"""One camera's range stream made an ordinary MP4: PyAV in-process, stream copy, no decoder.

The input is the playback range stream (:mod:`vms.playback.stream`): an init segment, its
``moof mdat`` fragments on one output time line, and for each later run its init again. PyAV
reads it through :class:`BoxReader`, a file-like object with no ``seek``: fragmented MP4
demuxes front to back, so nothing is spooled to disk and memory is PyAV's buffer.

The stream starts at the keyframe at or before the instant asked for, ``offset_s`` earlier.
Every timestamp is shifted so that the instant is time 0: the frames before it get negative
times, which FFmpeg's MP4 muxer turns into an **edit list** (``elst`` media time = the
offset), so players decode from the keyframe and show the first frame at the instant. The
muxer writes ``moov`` before ``mdat`` (``movflags=+faststart``): it writes the file, then
moves the data up, rereading it through ``io_open`` (it reopens the output by name, which a
file-like output does not have).

A later run whose codec parameters differ (a camera's resolution changed) cannot share the
track's one sample description: it goes to a new file that starts at its first keyframe.
Audio is copied when it is AAC; G.711 (``ulaw``/``alaw``) has no place in MP4 players and is
dropped with a note.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.audio.stream
import av.container
import av.stream
import av.video.stream

from vms.errors import Kind, VmsError

AUDIO_COPIED = frozenset({"aac"})
_INIT = frozenset({b"ftyp", b"moov"})
_READ_DEFAULT = 1 << 16
_TO_THE_END = 1 << 62  # a box whose size field is 0 runs to the end of the stream

Progress = Callable[[float], None]
"""Told the seconds of the range done so far (media time), after each video packet."""


class Cancelled(Exception):
    """The export was cancelled while it ran."""


class BoxReader:
    """The range stream as a file that PyAV reads, one run at a time.

    ``read`` hands the bytes out as they come, but stops (answers ``b""``, the end of a
    file) where an init segment follows fragments: the next run. :meth:`next_run` goes on
    from there; it answers False at the end of the stream."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = bytearray()
        self._ended = False
        self._left = 0  # bytes of the current top-level box still to hand out
        self._fragments = False  # this run has handed out a moof
        self._at_init = False  # stopped before a later run's init
        self.bytes_read = 0

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n and not self._ended:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                self._ended = True
        return len(self._buf) >= n

    def _next_box(self) -> bool:
        """At a box boundary: read the next box's header; False at the end of the run."""
        if not self._fill(8):
            if self._buf:
                raise VmsError(Kind.CORRUPT, f"the stream ends inside a box header: {self._where}")
            return False
        size, kind = struct.unpack_from(">I4s", self._buf)
        header = 8
        if size == 1:
            if not self._fill(16):
                raise VmsError(Kind.CORRUPT, f"the stream ends inside a box header: {self._where}")
            (size,) = struct.unpack_from(">Q", self._buf, 8)
            header = 16
        elif size == 0:
            size = _TO_THE_END
        if size < header:
            raise VmsError(Kind.CORRUPT, f"a box of {size} bytes {self._where}")
        if kind in _INIT and self._fragments:
            self._at_init = True
            return False
        if kind == b"moof":
            self._fragments = True
        self._left = size
        return True

    @property
    def _where(self) -> str:
        return f"at byte {self.bytes_read} of the stream"

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = _READ_DEFAULT
        out = bytearray()
        while len(out) < n and not self._at_init:
            if self._left == 0 and not self._next_box():
                break
            if not self._buf and not self._fill(1):
                break  # the stream ended inside a box: the demuxer says what it makes of it
            take = min(self._left, n - len(out), len(self._buf))
            out += self._buf[:take]
            del self._buf[:take]
            self._left -= take
            self.bytes_read += take
        return bytes(out)

    def next_run(self) -> bool:
        """Go on to the next run; False when the stream has ended."""
        if not self._at_init:
            return False
        self._at_init = self._fragments = False
        return True


@dataclasses.dataclass
class MediaFile:
    """A file written: its first shown frame lies ``start_s`` after the instant asked for."""

    path: Path
    start_s: float
    duration_s: float = 0.0
    video: str = ""
    audio: str | None = None


@dataclasses.dataclass
class Result:
    files: list[MediaFile]
    notes: list[str]


Create = Callable[[int], tuple[Path, BinaryIO]]
"""Where the n-th file of the camera goes (0, 1, ...): its path and the file opened for
writing (seekable: the muxer goes back to finish the header)."""


def _params(video: av.video.stream.VideoStream, audio: av.audio.stream.AudioStream | None) -> Any:
    """What must not change within one output file."""
    v = video.codec_context
    a = None
    if audio is not None:
        c = audio.codec_context
        a = (c.name, c.sample_rate, c.channels, bytes(c.extradata or b""), audio.time_base)
    return (v.name, v.width, v.height, bytes(v.extradata or b""), video.time_base, a)


class _Output:
    """One MP4 being written; packets' times shifted by ``shift_s`` (its time 0)."""

    def __init__(
        self,
        path: Path,
        f: BinaryIO,
        video: av.video.stream.VideoStream,
        audio: av.audio.stream.AudioStream | None,
        shift_s: float,
    ) -> None:
        self.path, self.file, self.shift_s = path, f, shift_s
        self.params = _params(video, audio)
        self.container = av.open(
            f, "w", format="mp4",
            options={"movflags": "+faststart", "use_editlist": "1"},
            io_open=lambda url, flags, options: open(path, "rb", buffering=0),  # noqa: SIM115
        )  # fmt: skip
        self.streams: dict[int, av.stream.Stream] = {}
        for s in (video, audio):
            if s is not None:
                o = self.container.add_stream_from_template(s)
                o.time_base = s.time_base
                self.streams[s.index] = o
        c = video.codec_context
        self.media = MediaFile(path, 0.0, video=f"{c.name} {c.width}x{c.height}")
        if audio is not None:
            a = audio.codec_context
            self.media.audio = f"{a.name} {a.sample_rate} Hz"
        self.last_s = 0.0

    def mux(self, p: av.Packet, t_s: float, tb: Fraction) -> None:
        shift = round(Fraction(self.shift_s) / tb)
        assert p.pts is not None and p.dts is not None
        p.pts -= shift
        p.dts -= shift
        p.stream = self.streams[p.stream.index]
        self.container.mux(p)
        self.last_s = max(self.last_s, t_s - self.shift_s + float((p.duration or 0) * tb))

    def close(self) -> MediaFile:
        try:
            self.container.close()  # the trailer, and the move of moov to the front
        finally:
            self.file.close()
        self.media.duration_s = self.last_s
        return self.media

    def abandon(self) -> None:
        for close in (self.container.close, self.file.close):
            try:
                close()
            except Exception:  # noqa: BLE001 - already failing; the caller removes the file
                pass


def remux(
    chunks: Iterable[bytes],
    *,
    offset_s: float,
    duration_s: float,
    create: Create,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Result:
    """Write the range ``[offset_s, offset_s + duration_s)`` of the stream (seconds from its
    first instant) as MP4 files made by ``create``. Raises :class:`Cancelled` when
    ``cancelled()`` turns true (checked between packets), ``OSError`` when a write fails,
    :class:`VmsError` (``CORRUPT``) when the stream does not demux and ``NOT_FOUND`` when it
    holds no video in the range. Files begun are the caller's to remove on failure."""
    start = max(offset_s, 0.0)
    end = start + duration_s
    reader = BoxReader(chunks)
    files: list[MediaFile] = []
    notes: list[str] = []
    out: _Output | None = None
    zero: float | None = None  # stream time of its first video packet: output time 0
    try:
        while True:
            try:
                inp = av.open(reader, "r", format="mp4")
            except av.error.FFmpegError as e:
                raise VmsError(Kind.CORRUPT, f"the recording does not read: {e}") from None
            assert isinstance(inp, av.container.InputContainer)
            with inp:
                if not inp.streams.video:
                    raise VmsError(Kind.CORRUPT, "the recording has no video track")
                video = inp.streams.video[0]
                audio = inp.streams.audio[0] if inp.streams.audio else None
                if audio is not None and audio.codec_context.name not in AUDIO_COPIED:
                    note = f"audio ({audio.codec_context.name}) dropped: MP4 players do not play it"
                    if note not in notes:
                        notes.append(note)
                    audio = None
                if out is not None and out.params != _params(video, audio):
                    files.append(out.close())
                    out = None
                video_done = False
                audio_done = audio is None
                try:
                    packets = inp.demux([s for s in (video, audio) if s is not None])
                    for p in packets:
                        if cancelled():
                            raise Cancelled()
                        if p.dts is None or p.pts is None:
                            continue  # the demuxer's empty packet at the end
                        tb = p.time_base
                        t = float(p.dts * tb)
                        if p.stream.index == video.index:
                            if zero is None:
                                zero = t
                            rel = t - zero
                            if rel >= end:
                                video_done = True
                                if audio_done:
                                    break
                                continue
                            if out is None:
                                if not p.is_keyframe:
                                    continue
                                path, f = create(len(files))
                                # The first file starts at the instant; a later one (new
                                # parameters) at its own first keyframe.
                                shift = zero + start if not files else t
                                out = _Output(path, f, video, audio, shift)
                                out.media.start_s = 0.0 if not files else rel - start
                            out.mux(p, t, tb)
                            if progress is not None:
                                progress(min(max(rel - start, 0.0), duration_s))
                        else:
                            if zero is None or out is None:
                                continue
                            rel = float(p.pts * tb) - zero
                            if rel >= end:
                                audio_done = True
                                if video_done:
                                    break
                                continue
                            if rel + float((p.duration or 0) * tb) <= out.shift_s - zero:
                                continue  # ends before the file's time 0
                            out.mux(p, float(p.pts * tb), tb)
                except av.error.FFmpegError as e:
                    raise VmsError(Kind.CORRUPT, f"the recording does not read: {e}") from None
            if video_done or not reader.next_run():
                break
        if out is None:
            raise VmsError(Kind.NOT_FOUND, "no video in the range")
        files.append(out.close())
        out = None
    finally:
        if out is not None:
            out.abandon()
    return Result(files, notes)
