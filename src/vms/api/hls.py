"""Recorded video as HLS: ``GET /api/v1/cameras/{camera_id}/playback.m3u8?start&end&stream``.

A VOD playlist (:mod:`vms.playback.hls`) whose media are byte ranges of the stored segment
files, served by ``…/segments/{segment_id}.mp4`` (:mod:`vms.api.playback`): Safari, hls.js and
ffmpeg play recordings with no copy made. ``EXT-X-START`` puts the player on the instant asked
for; ``EXT-X-PROGRAM-DATE-TIME`` maps the time line back to the clock.

A player fetches the media for as long as it plays, and sends no header: the URIs carry a media
token made for this playlist, which lives for twice the range plus five minutes (at most
:data:`TOKEN_MAX_S`), for the caller's user, this camera and playback only; logging out or a
password change revokes it. The local administration key has no user and gets no token: its
client sends the key with every request (ffmpeg ``-headers``, hls.js ``xhrSetup``).
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from vms.api.deps import ServerDep
from vms.api.errors import ERRORS
from vms.api.guard import CameraIdParam
from vms.api.playback import PlaybackQuery, audit_once, plan_of
from vms.auth import Action, Principal, local
from vms.playback import hls
from vms.times import iso

router = APIRouter(prefix="/api/v1/cameras/{camera_id}", tags=["playback"], responses=ERRORS)

M3U8 = "application/vnd.apple.mpegurl"
TOKEN_MAX_S = 12 * 3600
_PLAYLIST: dict[int | str, dict[str, Any]] = {
    200: {"description": "An HLS VOD playlist", "content": {M3U8: {"schema": {"type": "string"}}}}
}


class PlaylistResponse(Response):
    media_type = M3U8


# response_class=Response: FastAPI documents every error answer in the response class's media
# type, and the errors are JSON.
@router.get("/playback.m3u8", response_class=Response, responses=_PLAYLIST)
async def playback_m3u8(
    request: Request,
    camera_id: CameraIdParam,
    server: ServerDep,
    q: Annotated[PlaybackQuery, Query()],
) -> Response:
    """An HLS playlist of the range, whose media are byte ranges of the stored files."""
    p = await run_in_threadpool(plan_of, server, camera_id, q)
    who: Principal = request.state.principal
    query = ""
    if who.via != local.PRINCIPAL.via:
        ttl = min(TOKEN_MAX_S, max(server.config.auth.media_token_s,
                                   2 * (p.end_us - p.start_us) // 1_000_000 + 300))  # fmt: skip
        token = await run_in_threadpool(
            server.auth.media_token, who, camera_id, Action.PLAYBACK, ttl
        )
        query = "?" + urllib.parse.urlencode({"token": token})
    text = hls.playlist(p, lambda segment_id: f"segments/{segment_id}.mp4{query}")
    details = {"start": iso(p.start_us), "end": iso(p.end_us), "stream": q.stream.value,
               "mode": "hls"}  # fmt: skip
    key = (camera_id, q.stream.value, p.start_us, p.end_us, "hls")
    await run_in_threadpool(audit_once, request, server, camera_id, key, details)
    # A playlist holds a token: no cache may keep it.
    return PlaylistResponse(text, headers={"Cache-Control": "no-store"})
