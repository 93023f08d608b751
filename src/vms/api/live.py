"""Live view over a WebSocket for Media Source Extensions:
``GET /api/v1/cameras/{camera_id}/live.ws?stream=main|sub`` (the messages: :mod:`vms.live.mse`).
The viewer may switch streams by sending ``{"type": "select", "stream": "main" | "sub"}``; any
other message is answered with an ``error`` message, and the feed goes on.

A browser cannot send a header with a WebSocket, so the route takes a media token for ``live``
in ``?token=`` (``POST /api/v1/auth/media-token``), or the usual headers from other clients; the
guard is added where the router is included (:mod:`vms.api.routes`). Every refusal (no or a
wrong credential, an unknown camera or stream, a bad parameter) comes before the socket is
accepted, as the HTTP answer to the handshake in the one error body; once accepted, errors are
``{"type": "error"}`` messages.

The viewer's messages are sent by one task while another reads the socket: the reader notices a
viewer that went away even while nothing is sent (a camera offline) and hands the viewer's
selects to the feed; either task ending ends the other, and the relay subscription with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from vms.api.deps import ServerDep
from vms.api.guard import CameraIdParam
from vms.api.playback import audit_once
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.config import StreamName
from vms.errors import Detail, Kind, VmsError, capped
from vms.live.mse import Message, MseFeed, message
from vms.live.source import relay_of
from vms.media import AAC, AudioInfo
from vms.server import Server

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

PROTOCOL = "mse"


def stream_of(server: Server, camera_id: str, stream: StreamName) -> StreamPipeline | None:
    """The stream's pipeline as the server runs it now (a camera that restarts gets a new one);
    None when the camera or the stream is gone."""
    try:
        cam = server.camera(camera_id)
    except VmsError:
        return None
    return cam.streams.get(stream)


@router.websocket("/api/v1/cameras/{camera_id}/live.ws")
async def live_ws(
    websocket: WebSocket,
    camera_id: CameraIdParam,
    server: ServerDep,
    stream: Annotated[StreamName, Query(description="main or sub")] = StreamName.MAIN,
    hevc: Annotated[
        bool,
        Query(description="the player decodes H.265 (Safari): an H.265 stream is sent as it is"),
    ] = False,
) -> None:
    if stream_of(server, camera_id, stream) is None:
        if stream_of(server, camera_id, StreamName.MAIN) is None:
            raise VmsError(
                Kind.NOT_FOUND, f"no camera {capped(camera_id)}",
                [Detail("camera_id", "unknown camera")],
            )  # fmt: skip
        raise VmsError(
            Kind.NOT_FOUND, f"camera {capped(camera_id)} has no {stream.value} stream",
            [Detail("stream", "not configured")],
        )  # fmt: skip
    details = {"protocol": PROTOCOL, "stream": stream.value}
    await run_in_threadpool(
        audit_once, websocket, server, camera_id, ("live", camera_id, stream.value, PROTOCOL),
        details, "live",
    )  # fmt: skip
    await websocket.accept()

    def browser(name: str, pipeline: StreamPipeline) -> contextlib.AbstractContextManager[Relay]:
        cam = server.camera(camera_id)
        relays = {n.value: p.relay for n, p in cam.streams.items()}
        relays[name] = pipeline.relay
        return relay_of(server.live_sources.for_browser(
            camera_id, relays, name, hevc=hevc, plays=_plays_in_mp4, audio_into=into,
        ))  # fmt: skip

    def lookup(name: str) -> StreamPipeline | None:
        try:
            return stream_of(server, camera_id, StreamName(name))
        except ValueError:
            return None

    into = AAC if server.config.live.transcode_audio else None
    feed = MseFeed(
        lookup, stream.value, server.clock, browser=browser,
        streams=[s.value for s in StreamName],
    )  # fmt: skip
    messages = feed.messages()
    sender = asyncio.create_task(_send(websocket, messages))
    reader = asyncio.create_task(_read(websocket, feed))
    try:
        await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, reader):
            task.cancel()
        await asyncio.gather(sender, reader, return_exceptions=True)
        await messages.aclose()  # unsubscribes, whatever the feed was doing
        if feed.dropped:
            log.info(
                "live viewer of %s/%s fell behind: %d packets skipped",
                camera_id, feed.stream, feed.dropped,
            )  # fmt: skip
    if sender.done() and not sender.cancelled() and sender.exception() is None:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await websocket.close()  # the feed ended (the camera was removed)


def _plays_in_mp4(audio: AudioInfo) -> bool:
    return audio.codec == AAC


async def _send(websocket: WebSocket, messages: AsyncIterator[Message]) -> None:
    async for m in messages:
        try:
            if isinstance(m, bytes):
                await websocket.send_bytes(m)
            else:
                await websocket.send_text(m)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the viewer went away mid-message: nothing to tell anyone


MAX_MESSAGE = 1024  # a select is some 40 bytes


async def _read(websocket: WebSocket, feed: MseFeed) -> None:
    """Until the viewer closes or goes away: its selects go to the feed. A message that is no
    select is answered through the feed (one task sends), with an error."""
    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            stream = _select(msg.get("text"))
            if stream is None:
                feed.tell(message("error", message='expected {"type": "select", '
                                  '"stream": "main" | "sub"}'))  # fmt: skip
            else:
                feed.select(stream)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return


def _select(text: object) -> str | None:
    """The stream a viewer's message selects; None when it is not a select."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        return None
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("type") != "select":
        return None
    stream = msg.get("stream")
    return stream if isinstance(stream, str) else None
