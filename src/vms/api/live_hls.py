"""Live video as HLS: Low-Latency HLS for hls.js and Safari, plain HLS for everyone else.

- ``GET …/live/master.m3u8``: the multivariant playlist, the camera's main and sub streams as
  two variants (``BANDWIDTH``, ``RESOLUTION``, ``CODECS``): a player picks by its size and
  bandwidth, with no transcoding. An H.265 stream is listed as it is (Safari, players that
  decode HEVC) and, unless the camera's other stream is H.264, once more as its H.264
  rendition (``codec=h264``): players that decode no HEVC (hls.js in Chromium) drop the
  first and play the second.
- ``GET …/live.m3u8?stream=main|sub[&codec=h264]``: the media playlist (:mod:`vms.live.hls`),
  with blocking reload: ``_HLS_msn`` (and ``_HLS_part``) hold the answer until that segment
  (part) exists, at most three target durations (then 503); a request further ahead than RFC
  8216bis lets a client ask is 400 at once. ``codec=h264`` is the stream as a browser gets it
  (:mod:`vms.live.source`: for an H.265 stream the shared H.264 transcode, started with the
  rendition's segmenter and released when it stops).
- ``GET …/live/init/{n}.mp4``, ``…/live/{msn}.mp4`` (a segment), ``…/live/parts/{n}.mp4``
  (a part; the next one, which the playlist hints, is held until it exists).

The first playlist request of a stream starts its segmenter; it stops :data:`~vms.live.hls.
IDLE_S` after the last request. A camera that is off or offline answers 503 with why.

URIs in a playlist carry a media token for ``live`` on this camera: the one the request came
with, or, for a request with a header (and for the multivariant playlist, whose own token is
usually short-lived), a token of its own living :data:`~vms.api.hls.TOKEN_MAX_S`: a player
reloads the media playlist from its URI for as long as it plays. The local administration
key gets none (its client sends the key with each request).

The audit trail gets one ``live`` entry per viewing session (the same caller on the same
stream with no pause of :data:`~vms.live.hls.IDLE_S`), not one per playlist reload.
"""

from __future__ import annotations

import contextlib
import urllib.parse
import weakref
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from vms.api.deps import ServerDep, find_camera
from vms.api.errors import LIVE_ERRORS
from vms.api.guard import CameraIdParam
from vms.api.hls import M3U8, TOKEN_MAX_S
from vms.api.playback import MP4, audit_once
from vms.auth import Action, Principal, local
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.config import StreamName
from vms.errors import Detail, Kind, VmsError
from vms.live import hls
from vms.live.fmp4 import LiveMuxer
from vms.live.hls import LiveStream, LiveStreams
from vms.live.source import relay_of
from vms.live.transcode import h264_codecs
from vms.media import HEVC
from vms.server import Server

router = APIRouter(prefix="/api/v1/cameras/{camera_id}", tags=["live"], responses=LIVE_ERRORS)

PROTOCOL = "llhls"  # as the audit trail and the player page name it
FIRST_SEGMENT_S = 10.0  # the first request waits this long for a stream's first segment
NUMBER = Path(ge=0, le=2**62, description="a number from the playlist")
_PLAYLIST: dict[int | str, dict[str, Any]] = {
    200: {"description": "An HLS playlist", "content": {M3U8: {"schema": {"type": "string"}}}}
}
_MEDIA: dict[int | str, dict[str, Any]] = {
    200: {"description": "fMP4 media", "content": {MP4: {"schema": {"type": "string",
                                                                    "format": "binary"}}}}
}  # fmt: skip
# Relative to the media playlist (…/live.m3u8): beside it, under live/.
_PATHS = {"init": "live/init/{}.mp4", "segment": "live/{}.mp4", "part": "live/parts/{}.mp4"}
NO_STORE = {"Cache-Control": "no-store"}  # URIs hold tokens; numbers restart with a segmenter


class LiveQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: StreamName = Field(StreamName.MAIN, description="main or sub")
    codec: Literal["h264"] | None = Field(
        None, description="h264: the stream in H.264 (an H.265 one transcoded), for players "
        "that decode no H.265",
    )  # fmt: skip
    token: str | None = Field(None, max_length=4096, description="a media token")


class PlaylistQuery(LiveQuery):
    msn: int | None = Field(
        None, alias="_HLS_msn", ge=0, le=2**62, description="blocking reload: this segment"
    )
    part: int | None = Field(
        None, alias="_HLS_part", ge=0, le=10_000, description="blocking reload: this part of it"
    )


class MasterQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(None, max_length=4096, description="a media token")


class _Live:
    """A server's live HLS: its segmenters and its viewers (for the audit trail)."""

    def __init__(self, server: Server) -> None:
        self.streams = LiveStreams(server.clock)
        self.viewers: dict[tuple[Any, ...], float] = {}

    def session_starts(self, key: tuple[Any, ...], now: float) -> bool:
        """Whether ``key`` starts watching (not seen for the idle time): then it is audited."""
        idle = self.streams.idle_s
        if len(self.viewers) > 10_000:
            self.viewers = {k: t for k, t in self.viewers.items() if now - t < idle}
        last = self.viewers.get(key)
        self.viewers[key] = now
        return last is None or now - last >= idle


_LIVE: weakref.WeakKeyDictionary[Server, _Live] = weakref.WeakKeyDictionary()


def live_of(server: Server) -> _Live:
    """The server's live HLS (made on first use; on the event loop only)."""
    live = _LIVE.get(server)
    if live is None:
        live = _LIVE[server] = _Live(server)
    return live


def _pipeline(server: Server, camera_id: str, stream: StreamName) -> StreamPipeline:
    cam = find_camera(server, camera_id)
    pipeline = cam.streams.get(stream)
    if pipeline is None:
        raise VmsError(Kind.NOT_FOUND, f"camera {camera_id} has no {stream.value} stream",
                       [Detail("stream", "not configured")])  # fmt: skip
    if not cam.config.enabled:
        raise VmsError(Kind.UNAVAILABLE, f"camera {camera_id} is disabled")
    return pipeline


def _offline(pipeline: StreamPipeline) -> VmsError:
    why = pipeline.health.last_error or "no video"
    return VmsError(Kind.UNAVAILABLE, f"camera {pipeline.camera_id} is offline "
                                      f"({pipeline.name} stream): {why}")  # fmt: skip


def _key(camera_id: str, stream: StreamName, codec: str | None) -> tuple[str, ...]:
    """A segmenter's key: the camera stream, and the rendition when it is one."""
    return (camera_id, stream) if codec is None else (camera_id, stream, codec)


def _rendition(server: Server, camera_id: str, stream: StreamName) -> hls.Via:
    """What the H.264 rendition of a stream reads (see the module)."""

    def via() -> contextlib.AbstractContextManager[Relay]:
        relays = {n.value: p.relay for n, p in find_camera(server, camera_id).streams.items()}
        return relay_of(server.live_sources.for_browser(camera_id, relays, stream.value))

    return via


def _running(server: Server, camera_id: str, q: LiveQuery) -> LiveStream:
    stream = q.stream
    pipeline = _pipeline(server, camera_id, stream)
    running = live_of(server).streams.running(_key(camera_id, stream, q.codec), pipeline.relay)
    if running is None:
        raise VmsError(Kind.NOT_FOUND, f"camera {camera_id}'s {stream.value} stream is not "
                                       "being served as HLS now: load its playlist")  # fmt: skip
    return running


async def _token_query(
    server: Server, who: Principal, camera_id: str, token: str | None, *, mint: bool = False
) -> dict[str, str]:
    """The token for a playlist's URIs (see the module); none for the local key."""
    if who.via == local.PRINCIPAL.via:
        return {}
    if token is not None and who.via == "media" and not mint:
        return {"token": token}
    made = await run_in_threadpool(server.auth.media_token, who, camera_id, Action.LIVE,
                                   TOKEN_MAX_S)  # fmt: skip
    return {"token": made}


@router.get("/live.m3u8", response_class=Response, responses=_PLAYLIST)
async def live_m3u8(
    request: Request,
    camera_id: CameraIdParam,
    server: ServerDep,
    q: Annotated[PlaylistQuery, Query()],
) -> Response:
    """The stream's live media playlist (LL-HLS; plain HLS players ignore the parts)."""
    pipeline = _pipeline(server, camera_id, q.stream)
    if q.part is not None and q.msn is None:
        raise VmsError(Kind.INVALID_ARGUMENT, "_HLS_part needs _HLS_msn",
                       [Detail("_HLS_part", "without _HLS_msn")])  # fmt: skip
    live = live_of(server)
    key = _key(camera_id, q.stream, q.codec)
    stream = live.streams.running(key, pipeline.relay)
    if stream is None:
        if pipeline.relay.info is None:
            raise _offline(pipeline)  # and nothing started for it
        via = _rendition(server, camera_id, q.stream) if q.codec is not None else None
        stream = live.streams.open(key, pipeline.relay, via)
    seg = stream.segmenter
    if not seg.ready:
        if not await stream.until(lambda: seg.ready, FIRST_SEGMENT_S):
            if not seg.live:
                raise _offline(pipeline)
            raise VmsError(Kind.UNAVAILABLE, f"camera {camera_id} has sent no picture yet")
    msn, part = q.msn, q.part
    if msn is not None:
        if seg.too_far(msn, part):
            ahead = "part" if part is not None else "segment"
            raise VmsError(Kind.INVALID_ARGUMENT, f"_HLS_msn/_HLS_part: that {ahead} is too "
                                                  "far ahead of the playlist",
                           [Detail("_HLS_msn", "too far ahead")])  # fmt: skip
        if not await stream.until(lambda: seg.has(msn, part), 3 * seg.target):
            if not seg.live:
                raise _offline(pipeline)
            raise VmsError(Kind.UNAVAILABLE, "_HLS_msn/_HLS_part: not there in three target "
                                             "durations")  # fmt: skip
    if not seg.live:
        raise _offline(pipeline)
    who: Principal = request.state.principal
    await _audit(request, server, live, who, camera_id, q.stream)
    token = await _token_query(server, who, camera_id, q.token)
    query = urllib.parse.urlencode(_query(q.stream, q.codec, token))

    def uri(kind: str, number: int) -> str:
        return _PATHS[kind].format(number) + "?" + query

    text = seg.playlist(uri, _reports(server, live, camera_id, key, token))
    return Response(text, media_type=M3U8, headers=NO_STORE)


def _query(stream: StreamName, codec: str | None, token: dict[str, str]) -> dict[str, str]:
    return {"stream": stream.value, **({"codec": codec} if codec else {}), **token}


def _reports(
    server: Server, live: _Live, camera_id: str, key: tuple[str, ...], token: dict[str, str]
) -> list[str]:
    """``EXT-X-RENDITION-REPORT`` lines for the camera's other renditions being served."""
    out = []
    for name, pipeline in find_camera(server, camera_id).streams.items():
        for codec in (None, "h264"):
            other_key = _key(camera_id, name, codec)
            other = live.streams.running(other_key, pipeline.relay, touch=False)
            if other_key != key and other is not None:
                query = urllib.parse.urlencode(_query(name, codec, token))
                line = other.segmenter.report(f"live.m3u8?{query}")
                if line is not None:
                    out.append(line)
    return out


async def _audit(
    request: Request, server: Server, live: _Live, who: Principal, camera_id: str,
    stream: StreamName,
) -> None:  # fmt: skip
    key = (camera_id, stream.value, PROTOCOL)
    viewer = (who.user_id, who.name, who.via, request.client.host if request.client else None)
    if live.session_starts((*viewer, *key), server.clock.monotonic()):
        details = {"protocol": PROTOCOL, "stream": stream.value}
        await run_in_threadpool(audit_once, request, server, camera_id, key, details, "live")


@router.get("/live/master.m3u8", response_class=Response, responses=_PLAYLIST)
async def live_master(
    request: Request,
    camera_id: CameraIdParam,
    server: ServerDep,
    q: Annotated[MasterQuery, Query()],
) -> Response:
    """The multivariant playlist: each of the camera's streams that runs, as a variant."""
    cam = find_camera(server, camera_id)
    if not cam.config.enabled:
        raise VmsError(Kind.UNAVAILABLE, f"camera {camera_id} is disabled")
    variants: list[tuple[StreamName, str | None, str]] = []
    running = {n: p.relay.info for n, p in cam.streams.items() if p.relay.info is not None}
    h264_beside = any(i.video.codec != HEVC for i in running.values())
    for name, info in running.items():
        h = cam.streams[name].health
        size = f"RESOLUTION={h.width}x{h.height}" if h.width and h.height else None
        codecs, muxer = None, None
        with contextlib.suppress(ValueError):  # parameter sets only in-band: none until a key
            muxer = LiveMuxer(info)
            size, codecs = f"RESOLUTION={muxer.width}x{muxer.height}", muxer.codecs
        rate = f"FRAME-RATE={h.fps:.3f}" if h.fps else None
        attrs = [f"BANDWIDTH={max(64_000, round(h.bitrate * 1.25))}", size,
                 f'CODECS="{codecs}"' if codecs else None, rate]  # fmt: skip
        variants.append((name, None, ",".join(a for a in attrs if a)))
        if info.video.codec == HEVC and not h264_beside:
            # The H.264 rendition: the same picture, CODECS as its encoder will make them
            # (the audio goes through as it is); x264 at its fastest needs about twice
            # HEVC's bits.
            attrs[0] = f"BANDWIDTH={max(64_000, round(h.bitrate * 2.5))}"
            if muxer is not None and codecs is not None:
                video = await run_in_threadpool(h264_codecs, muxer.width, muxer.height)
                audio = [c for c in codecs.split(",") if c.startswith("mp4a")]
                attrs[2] = f'CODECS="{",".join([video, *audio])}"'
            variants.append((name, "h264", ",".join(a for a in attrs if a)))
    if not variants:
        raise _offline(cam.main)
    who: Principal = request.state.principal
    token = await _token_query(server, who, camera_id, q.token, mint=True)
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{hls.VERSION}"]
    for name, codec, stream_inf in variants:
        query = urllib.parse.urlencode(_query(name, codec, token))
        lines += [f"#EXT-X-STREAM-INF:{stream_inf}", f"../live.m3u8?{query}"]
    return Response("\n".join([*lines, ""]), media_type=M3U8, headers=NO_STORE)


@router.get("/live/init/{number}.mp4", response_class=Response, responses=_MEDIA)
async def live_init(
    camera_id: CameraIdParam,
    number: Annotated[int, NUMBER],
    server: ServerDep,
    q: Annotated[LiveQuery, Query()],
) -> Response:
    """An init segment the playlist names (``EXT-X-MAP``)."""
    init = _running(server, camera_id, q).segmenter.init(number)
    if init is None:
        raise VmsError(Kind.NOT_FOUND, f"no init segment {number} (no longer in the playlist)")
    return Response(init.data, media_type=MP4, headers=NO_STORE)


@router.get("/live/parts/{number}.mp4", response_class=Response, responses=_MEDIA)
async def live_part(
    camera_id: CameraIdParam,
    number: Annotated[int, NUMBER],
    server: ServerDep,
    q: Annotated[LiveQuery, Query()],
) -> Response:
    """A part (``EXT-X-PART``); the next ones (``EXT-X-PRELOAD-HINT``) wait until they exist."""
    stream = _running(server, camera_id, q)
    seg = stream.segmenter
    found = seg.part(number)
    if found is None and seg.next_part <= number <= seg.next_part + 2:
        await stream.until(lambda: seg.part(number) is not None, 3 * seg.target)
        found = seg.part(number)
        if found is None and number >= seg.next_part:
            raise VmsError(Kind.UNAVAILABLE, f"part {number} is not there yet")
    if found is None:
        raise VmsError(Kind.NOT_FOUND, f"no part {number} (not in the playlist)")
    return Response(found.data, media_type=MP4, headers=NO_STORE)


@router.get("/live/{msn}.mp4", response_class=Response, responses=_MEDIA)
async def live_segment(
    camera_id: CameraIdParam,
    msn: Annotated[int, NUMBER],
    server: ServerDep,
    q: Annotated[LiveQuery, Query()],
) -> Response:
    """A whole segment (``EXTINF``): its parts, one after the other; one still being cut is
    answered once it is complete."""
    stream = _running(server, camera_id, q)
    seg = stream.segmenter
    found = seg.segment(msn)
    if found is not None and not found.complete:
        await stream.until(lambda: found.complete, 3 * seg.target)
        if not found.complete:
            raise VmsError(Kind.UNAVAILABLE, f"segment {msn} is not complete yet")
    if found is None:
        raise VmsError(Kind.NOT_FOUND, f"no segment {msn} (not in the playlist)")
    return Response(found.data, media_type=MP4, headers=NO_STORE)
