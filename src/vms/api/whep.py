"""Live view over WebRTC through WHEP: ``POST /api/v1/cameras/{camera_id}/whep``. (WHEP is
draft-ietf-wish-whep, the viewer's side of WHIP, RFC 9725.) And the STUN and TURN servers a
browser needs first: ``GET /api/v1/live/ice-servers`` (:data:`ice_router`).

The body is the viewer's SDP offer (``Content-Type: application/sdp``, ``?stream=main|sub``);
the answer is ``201`` with the server's SDP answer, every ICE candidate already in it (the
server does not trickle), ``Location:`` the session's resource, and a ``Link: <…>;
rel="ice-server"`` header per configured STUN or TURN server (RFC 9725 §4.6, TURN with its
``username`` and ``credential``). ``DELETE`` on the resource
ends the session; ``PATCH`` (trickle ICE, ICE restart) answers 405, as WHEP has a server that
does neither answer. The media: :mod:`vms.live.webrtc` (an offer that opens a data
channel is told there when the camera goes offline and comes back; the session stays up);
the offer's checks and codecs: :mod:`vms.live.offer`. A camera offline when the offer comes
answers 503 with ``Retry-After``. An H.265 stream is sent as H.264 (the camera's other stream
when it is H.264, else the shared transcode: :mod:`vms.live.source`), and audio WebRTC does not
carry as Opus when ``live.transcode_audio`` is on (else the answer has no audio).

Behind ``media_access(LIVE)``: a header, or a media token in ``?token=`` for a player that
sends none. The resource URL carries a token of its own (for the same user, this camera and
live only, :data:`RESOURCE_TOKEN_S`), so a player can still end its session after the token it
started with has expired; only the user who opened a session can end it. One audit entry per
caller, camera and stream a minute (``live``, ``{"protocol": "webrtc", "stream": …}``); a
viewer's switch of stream on the data channel is the same session, not audited again.

The ICE servers route is for any user who may watch some camera live (a header), or holds a
media token for live (``?token=`` with the ``camera_id`` it is for): TURN credentials go to no
one else (:mod:`vms.live.ice`), and the answer is not to be cached.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from vms.api.deps import ServerDep, find_camera
from vms.api.errors import LIVE_ERRORS, ErrorBody
from vms.api.guard import CameraIdParam
from vms.api.playback import audit_once
from vms.auth import Action, Principal, local
from vms.cameras.relay import Relay
from vms.config import StreamName
from vms.errors import Detail, Kind, VmsError
from vms.live.ice import browser_servers, link_headers
from vms.live.offer import MAX_OFFER_BYTES
from vms.live.source import Chosen, Plays
from vms.server import Server

router = APIRouter(prefix="/api/v1/cameras/{camera_id}", tags=["live"], responses=LIVE_ERRORS)
ice_router = APIRouter(prefix="/api/v1/live", tags=["live"])

SDP = "application/sdp"
RESOURCE_TOKEN_S = 12 * 3600
_ANSWER: dict[int | str, dict[str, Any]] = {
    201: {
        "description": "The SDP answer; `Location` names the session",
        "content": {SDP: {"schema": {"type": "string"}}},
    },
    413: {"model": ErrorBody, "description": "The offer is too large"},
    503: {"model": ErrorBody, "description": "The camera is offline, or viewers are too many"},
}
_OFFER = {
    "requestBody": {
        "required": True,
        "description": "The viewer's SDP offer (recvonly H.264 video, audio optional)",
        "content": {SDP: {"schema": {"type": "string"}}},
    }
}
SessionIdParam = Annotated[str, Path(max_length=64, description="a WHEP session id")]


class TokenQuery(BaseModel):
    """Unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(None, max_length=4096, description="a media token")


class WhepQuery(TokenQuery):
    stream: StreamName = Field(StreamName.MAIN, description="main or sub")


class SdpResponse(Response):
    media_type = SDP


class IceServer(BaseModel):
    """One entry of a browser's ``RTCPeerConnection({iceServers})``."""

    urls: list[str] = Field(description="stun: or turn: URIs")
    username: str | None = Field(None, description="for a TURN server")
    credential: str | None = Field(None, description="for a TURN server")


class IceServers(BaseModel):
    ice_servers: list[IceServer] = Field(
        description="the STUN and TURN servers to give RTCPeerConnection (may be empty)"
    )


class IceQuery(TokenQuery):
    camera_id: str | None = Field(
        None, max_length=64, description="the camera the media token is for"
    )


def _relays(server: Server, camera_id: str) -> Callable[[str], Relay | None]:
    """The camera's streams' relays as the server runs them when asked (a viewer's select)."""

    def relay(name: str) -> Relay | None:
        try:
            pipeline = server.camera(camera_id).streams.get(StreamName(name))
        except (VmsError, ValueError):
            return None
        return None if pipeline is None else pipeline.relay

    return relay


async def _offer(request: Request) -> str:
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != SDP:
        raise VmsError(
            Kind.INVALID_ARGUMENT,
            f"the offer must be sent as {SDP}",
            [Detail("content-type", "expected application/sdp")],
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            raise VmsError(Kind.TOO_LARGE, f"the offer is over {MAX_OFFER_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise VmsError(Kind.INVALID_ARGUMENT, "the SDP offer is not UTF-8 text") from None


@router.post(
    "/whep", status_code=201, response_class=Response, responses=_ANSWER, openapi_extra=_OFFER
)
async def whep_offer(
    request: Request,
    camera_id: CameraIdParam,
    server: ServerDep,
    q: Annotated[WhepQuery, Query()],
) -> Response:
    """Watch the camera live over WebRTC: post an SDP offer, get the answer."""
    offer = await _offer(request)
    camera = find_camera(server, camera_id)
    pipeline = camera.streams.get(q.stream)
    if pipeline is None:
        raise VmsError(
            Kind.NOT_FOUND,
            f"camera {camera_id} has no {q.stream.value} stream",
            [Detail("stream", "not configured")],
        )
    who: Principal = request.state.principal
    relays = {name.value: p.relay for name, p in camera.streams.items()}

    def source(plays: Plays, audio_into: str | None) -> AbstractContextManager[Chosen]:
        return server.live_sources.for_browser(
            camera_id, relays, q.stream.value, plays=plays, audio_into=audio_into
        )

    session, answer = await server.webrtc.open(
        offer, source, camera_id, q.stream.value, who.user_id, _relays(server, camera_id)
    )
    location = f"/api/v1/cameras/{urllib.parse.quote(camera_id)}/whep/{session.id}"
    try:
        if who.via != local.PRINCIPAL.via:
            token = await run_in_threadpool(
                server.auth.media_token, who, camera_id, Action.LIVE, RESOURCE_TOKEN_S
            )
            location += "?" + urllib.parse.urlencode({"token": token})
        details = {"protocol": "webrtc", "stream": q.stream.value}
        key = (camera_id, q.stream.value, "webrtc")
        await run_in_threadpool(audit_once, request, server, camera_id, key, details, "live")
    except BaseException:
        await server.webrtc.close(session, "its answer was not sent")
        raise
    # The resource URL holds a token, the Link headers may hold TURN credentials: no cache
    # may keep them.
    response = SdpResponse(
        answer, status_code=201, headers={"Location": location, "Cache-Control": "no-store"}
    )
    for link in link_headers(server.config.live):
        response.headers.append("Link", link)
    return response


@router.delete(
    "/whep/{session_id}",
    response_class=Response,
    responses={200: {"description": "The session ended (WHEP answers 200, no body)"}},
)
async def whep_delete(
    request: Request,
    camera_id: CameraIdParam,
    session_id: SessionIdParam,
    server: ServerDep,
    _: Annotated[TokenQuery, Query()],
) -> Response:
    """End a WebRTC session."""
    who: Principal = request.state.principal
    session = server.webrtc.get(camera_id, session_id)
    if session is None or session.owner != who.user_id:
        raise VmsError(
            Kind.NOT_FOUND,
            "no such WebRTC session (it may have ended)",
            [Detail("session_id", "unknown session")],
        )
    await server.webrtc.close(session, "the viewer ended it")
    return Response(status_code=200)


@ice_router.get("/ice-servers", response_model=IceServers, responses=LIVE_ERRORS)
async def ice_servers(
    server: ServerDep, _: Annotated[IceQuery, Query()], response: Response
) -> IceServers:
    """The STUN and TURN servers a browser gives its RTCPeerConnection before its WHEP offer."""
    response.headers["Cache-Control"] = "no-store"
    return IceServers(
        ice_servers=[IceServer(**s) for s in browser_servers(server.config.live)]
    )
