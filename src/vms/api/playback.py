"""Recorded video over HTTP: a time range as a plan, as one MP4 stream, and the stored files.

- ``GET …/playback?start&end&stream``: the plan (docs/design/playback.md): where output time 0
  is (``first``), where the instant asked for is (``offset_s``), the pieces (output time ↔ wall
  time), runs, gaps, and the MIME type with its codecs for ``MediaSource.isTypeSupported``.
- ``GET …/playback.mp4?start&end&stream&keyframes&audio``: the range as fragmented MP4 on one
  time line, headers ``X-Playback-First`` and ``X-Playback-Offset``. ``Range`` is served (206,
  416) over the stream's layout; an answer without ``Range`` is chunked, so a fragment that
  fails to read is skipped (a hole in the time line) rather than breaking a promised length.
  Trick play (``keyframes``) and ``audio=0`` are chunked, without ranges.
- ``GET …/segments/{segment_id}.mp4``: one stored segment file as it is (with ``Range``): what
  HLS playlists point into. An open segment answers the bytes written so far.

Every route sits behind ``media_access(PLAYBACK)`` (a media token in ``?token=`` will do) and
writes one audit entry per request, not one per byte range: the same caller asking the same
range (or segment) again within a minute is not written again.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response

from vms.api import models
from vms.api.deps import ServerDep
from vms.api.errors import ERRORS, ErrorBody
from vms.api.guard import CameraIdParam
from vms.auth import Principal
from vms.auth.ratelimit import client_address
from vms.catalog.store import CLOSED, OPEN, QUARANTINED
from vms.config import StreamName
from vms.errors import Kind, VmsError
from vms.media import MAIN, SUB
from vms.playback import fragments
from vms.playback.plan import Plan, plan
from vms.playback.stream import FileChunks, Keyframes, RangeStream
from vms.server import Server
from vms.times import DAY_US, TIME_HELP, TIME_MAX_CHARS, TIME_RANGE, iso, parse_time

router = APIRouter(prefix="/api/v1/cameras/{camera_id}", tags=["playback"], responses=ERRORS)

# One byte range; 18 digits are past any length (and int() of a huge number is slow).
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})", re.ASCII | re.IGNORECASE)
STREAMS = {StreamName.MAIN: MAIN, StreamName.SUB: SUB}
AUDIT_AGAIN_S = 60.0  # the same caller, camera and range: audited once a minute at most
MP4 = "video/mp4"
_BINARY = {"content": {MP4: {"schema": {"type": "string", "format": "binary"}}}}
MEDIA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The whole answer", **_BINARY},
    206: {"description": "The byte range asked for (`Range`)", **_BINARY},
    416: {"model": ErrorBody, "description": "The byte range lies past the end"},
}


class PlaybackQuery(BaseModel):
    """A range of one camera stream. Unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(
        min_length=1, max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}, {TIME_RANGE}"
    )
    end: str = Field(
        min_length=1, max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}; after start"
    )
    stream: StreamName = Field(StreamName.MAIN, description="main or sub")
    token: str | None = Field(None, max_length=4096, description="a media token")


class StreamQuery(PlaybackQuery):
    keyframes: Literal["forward", "reverse"] | None = Field(
        None, description="trick play: keyframes only, oldest or newest first (no Range)"
    )
    audio: bool = Field(True, description="0: video only (no Range)")


class PlaybackPiece(models.Gap):
    """One segment's part of the stream: wall time (``start``, ``end``) and where it is in the
    output (``output_start_s``, ``output_end_s``, seconds from output time 0)."""

    segment: int
    run: int
    open: bool = Field(description="the segment is still being written")
    output_start_s: float
    output_end_s: float


class PlaybackRun(models.Gap):
    """Pieces on one decode time line with one init segment; each run starts with its own."""

    output_start_s: float
    output_end_s: float
    codec: str
    width: int
    height: int
    has_audio: bool
    codecs: str = Field(description="RFC 6381 codecs, e.g. avc1.64001f,mp4a.40.2")
    mime: str


class PlaybackGap(models.Gap):
    reason: str = Field(description="not recorded, quarantined, storage missing, lost")


class Playback(BaseModel):
    """What ``playback.mp4`` answers for the same range, and where its times are."""

    camera: str
    stream: StreamName
    start_us: int
    end_us: int
    start: str
    end: str
    first_us: int = Field(description="wall time of output time 0 (X-Playback-First)")
    first: str
    offset_s: float = Field(description="output time of `start` (X-Playback-Offset)")
    mime: str = Field(description="of the stream, for MediaSource.isTypeSupported")
    video_mime: str = Field(description="of the video only (audio=0, keyframes)")
    total_bytes: int = Field(description="length of the stream (without keyframes or audio=0)")
    runs: list[PlaybackRun]
    pieces: list[PlaybackPiece]
    gaps: list[PlaybackGap]


def plan_of(server: Server, camera_id: str, q: PlaybackQuery) -> Plan:
    start = parse_time(q.start, -1, "start")
    end = parse_time(q.end, -1, "end")
    max_range = int(server.config.playback.max_range_days * DAY_US)
    return plan(
        server.catalog, server.writers.catalog_thread.open_files, camera_id, STREAMS[q.stream],
        start, end, max_range_us=max_range, storage=server.storage, now_us=server.clock.wall_us(),
    )  # fmt: skip


def _codecs(p: Plan) -> list[list[str]]:
    """Each run's codec strings, from its first piece's init segment; the bare sample entry
    when that cannot be read (the stream skips that piece anyway)."""
    out = []
    for run in p.runs:
        piece = p.pieces[run.first_piece]
        try:
            with open(piece.file, "rb") as f:
                found = fragments.codecs(f.read(piece.init_size))
        except OSError:
            found = []
        out.append(found or ["hvc1" if run.codec == "hevc" else "avc1"])
    return out


def _mime(codecs: list[str]) -> str:
    return f'{MP4}; codecs="{", ".join(codecs)}"'


def describe(p: Plan, codecs: list[list[str]], stream: StreamName) -> Playback:
    runs = [
        PlaybackRun(
            **models.Gap.times(r.start_us, r.end_us),
            output_start_s=r.output_start / r.timescale, output_end_s=r.output_end / r.timescale,
            codec=r.codec, width=r.width, height=r.height, has_audio=r.has_audio,
            codecs=",".join(c), mime=_mime(c),
        )
        for r, c in zip(p.runs, codecs, strict=True)
    ]  # fmt: skip
    pieces = [
        PlaybackPiece(
            **models.Gap.times(x.start_us, x.end_us), segment=x.segment_id, run=x.run,
            open=x.open, output_start_s=p.output_us(x, x.media_first) / 1e6,
            output_end_s=p.output_us(x, x.media_end) / 1e6,
        )
        for x in p.pieces
    ]  # fmt: skip
    size = RangeStream(p).size
    assert size is not None
    return Playback(
        camera=p.camera_id, stream=stream, start_us=p.start_us, end_us=p.end_us,
        start=iso(p.start_us), end=iso(p.end_us), first_us=p.first_us, first=iso(p.first_us),
        offset_s=p.offset_us / 1e6, mime=runs[0].mime, video_mime=_mime(codecs[0][:1]),
        total_bytes=size, runs=runs, pieces=pieces,
        gaps=[PlaybackGap(**models.Gap.times(g.start_us, g.end_us), reason=g.reason.value)
              for g in p.gaps],
    )  # fmt: skip


@router.get("/playback", response_model=Playback)
async def playback_plan(
    camera_id: CameraIdParam, server: ServerDep, q: Annotated[PlaybackQuery, Query()]
) -> Playback:
    """The plan of a range: what ``playback.mp4`` serves for it, and where its times are."""
    p = await run_in_threadpool(plan_of, server, camera_id, q)
    codecs = await run_in_threadpool(_codecs, p)
    return describe(p, codecs, q.stream)


class MP4Response(StreamingResponse):
    media_type = MP4


@router.get("/playback.mp4", response_class=Response, responses=MEDIA_RESPONSES)
async def playback_mp4(
    request: Request, camera_id: CameraIdParam, server: ServerDep,
    q: Annotated[StreamQuery, Query()],
) -> Response:  # fmt: skip
    """The range as one fragmented MP4 from the keyframe at or before ``start``: seek the
    player to ``X-Playback-Offset`` seconds (the instant asked for)."""
    p = await run_in_threadpool(plan_of, server, camera_id, q)
    keyframes: Keyframes | None = q.keyframes
    stream = RangeStream(p, audio=q.audio, keyframes=keyframes)
    mode = f"keyframes-{keyframes}" if keyframes else "stream" if q.audio else "video-only"
    details = {"start": iso(p.start_us), "end": iso(p.end_us), "stream": q.stream.value,
               "mode": mode}  # fmt: skip
    key = (camera_id, q.stream.value, p.start_us, p.end_us, mode)
    await run_in_threadpool(audit_once, request, server, camera_id, key, details)
    headers = {
        "X-Playback-First": iso(p.first_us),
        "X-Playback-Offset": f"{p.offset_us / 1e6:.6f}",
        "Accept-Ranges": "none" if stream.size is None else "bytes",
    }
    size = stream.size
    if size is not None and "range" in request.headers:
        asked = byte_range(request.headers["range"], size)
        if asked == "unsatisfiable":
            return _unsatisfiable(size, headers)
        if asked is not None:
            start, stop = asked
            return _ranged(stream.chunks(start, stop), start, stop, size, headers)
    return MP4Response(_body(stream.chunks()), headers=headers)


@router.get("/segments/{segment_id}.mp4", response_class=Response, responses=MEDIA_RESPONSES)
async def segment_file(
    request: Request,
    camera_id: CameraIdParam,
    segment_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="a segment id")],
    server: ServerDep,
) -> Response:
    """One stored segment file as it is (``ftyp moov (moof mdat)*``); of an open segment,
    the bytes written so far."""
    fd, size, details = await run_in_threadpool(_open_segment, server, camera_id, segment_id)
    try:
        key = (camera_id, "segment", segment_id)
        await run_in_threadpool(audit_once, request, server, camera_id, key, details)
    except BaseException:
        os.close(fd)
        raise
    headers = {"Accept-Ranges": "bytes"}
    asked = byte_range(request.headers["range"], size) if "range" in request.headers else None
    if asked == "unsatisfiable":
        os.close(fd)
        return _unsatisfiable(size, headers)
    if asked is not None:
        start, stop = asked
        return _ranged(FileChunks(fd, start, stop), start, stop, size, headers)
    headers["Content-Length"] = str(size)
    return MP4Response(_body(FileChunks(fd, 0, size)), headers=headers)


def _open_segment(
    server: Server, camera_id: str, segment_id: int
) -> tuple[int, int, dict[str, Any]]:
    """The segment's file, open, with how many of its bytes may be served."""
    missing = VmsError(Kind.NOT_FOUND, f"no segment {segment_id} of camera {camera_id}")
    try:
        seg = server.catalog.segment(segment_id)
    except VmsError as e:
        if e.kind is Kind.NOT_FOUND:
            raise missing from e
        raise
    if seg.camera_id != camera_id:
        raise missing
    if seg.state == QUARANTINED:
        raise VmsError(Kind.NOT_FOUND, f"segment {segment_id} is quarantined: its bytes failed "
                                       "their checksum")  # fmt: skip
    size = seg.bytes
    end_us = seg.end_us
    if seg.state == OPEN:
        snap = server.writers.open_segment(camera_id, seg.stream, seg_id=segment_id)
        if snap is None:  # closed meanwhile, or no file yet
            seg = server.catalog.segment(segment_id)
            if seg.state != CLOSED:
                raise VmsError(Kind.NOT_FOUND, f"segment {segment_id} has nothing written yet")
            size, end_us = seg.bytes, seg.end_us
        else:
            size, end_us = snap.size, snap.end_us
    path = server.storage.by_id(seg.root_id).file(seg.path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise VmsError(Kind.NOT_FOUND, f"segment {segment_id}'s file is gone") from e
    details = {"segment": segment_id, "start": iso(seg.start_us), "end": iso(end_us),
               "stream": "sub" if seg.stream == SUB else "main", "mode": "segment"}  # fmt: skip
    return fd, size, details


def byte_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``[start, stop)`` of a ``Range: bytes=…`` header for a body of ``size`` bytes; None to
    ignore it (not one well-formed byte range: the whole body is answered, RFC 9110 14.2)."""
    m = _RANGE.fullmatch(header.strip())
    if m is None or not (m[1] or m[2]):
        return None
    if not m[1]:  # the last N bytes
        n = int(m[2])
        return "unsatisfiable" if n == 0 else (max(0, size - n), size)
    start = int(m[1])
    stop = int(m[2]) + 1 if m[2] else size
    if m[2] and stop <= start:
        return None  # last before first: not a range
    if start >= size:
        return "unsatisfiable"
    return start, min(stop, size)


def _ranged(
    chunks: Iterator[bytes], start: int, stop: int, size: int, headers: dict[str, str]
) -> Response:
    headers = headers | {"Content-Range": f"bytes {start}-{stop - 1}/{size}",
                         "Content-Length": str(stop - start)}  # fmt: skip
    return MP4Response(_body(chunks), status_code=206, headers=headers)


def _unsatisfiable(size: int, headers: dict[str, str]) -> Response:
    error = VmsError(Kind.INVALID_ARGUMENT, f"range: past the end ({size} bytes)")
    return JSONResponse(error.to_dict(), status_code=416,
                        headers=headers | {"Content-Range": f"bytes */{size}"})  # fmt: skip


async def _body(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, each read in a worker thread: the event loop never waits on a disk."""
    try:
        async for chunk in iterate_in_threadpool(chunks):
            yield chunk
    finally:
        # A client that went away: close the reader (its file) now. A generator a worker thread
        # is still inside refuses; it closes its file when it is collected.
        close = getattr(chunks, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # "generator already executing"
                pass


# --- the audit trail -------------------------------------------------------------------------


class AuditOnce:
    """Which (caller, what) were audited in the last :data:`AUDIT_AGAIN_S` seconds: a player
    asks one range in many byte ranges, and the trail wants one entry for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[Any, ...], float] = {}

    def due(self, key: tuple[Any, ...], now: float) -> bool:
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: t for k, t in self._seen.items() if now - t < AUDIT_AGAIN_S}
            last = self._seen.get(key)
            if last is not None and now - last < AUDIT_AGAIN_S:
                return False
            self._seen[key] = now
            return True


_audit_lock = threading.Lock()


def audit_once(
    request: HTTPConnection, server: Server, camera_id: str, key: tuple[Any, ...],
    details: dict[str, Any], action: str = "playback",
) -> None:  # fmt: skip
    """Write ``action`` on ``camera_id`` to the audit trail, unless the same caller had the
    same ``key`` written in the last :data:`AUDIT_AGAIN_S` seconds. Blocking: run in a thread."""
    principal: Principal = request.state.principal
    with _audit_lock:
        once = getattr(request.app.state, "playback_audit", None)
        if once is None:
            once = request.app.state.playback_audit = AuditOnce()
    who = (principal.user_id, principal.name, principal.via)
    if not once.due((*who, *key), server.clock.monotonic()):
        return
    peer = request.client.host if request.client else None
    ip = client_address(peer, request.headers.get("x-forwarded-for"), server.auth.trusted_proxies)
    server.audit.append(principal.name, action, camera_id, details, ip=ip)
