"""Thumbnails of a camera's recordings: one picture, or the instants of a strip.

- ``GET /api/v1/cameras/{camera_id}/thumbnail.jpg?at=T``: the keyframe at or before ``T`` as a
  JPEG ``width`` wide (:mod:`vms.playback.thumbnail`). ``X-Thumbnail-Time`` says when the
  picture shown was taken. A picture from a closed segment never changes, and the browser may
  keep it; one from the segment being written is asked again.
- ``GET /api/v1/cameras/{camera_id}/thumbnails?start&end&count``: ``count`` instants spread
  over the window (the middle of each of ``count`` equal parts), each with whether anything is
  recorded there and the URL of its picture. A page shows a strip with ``<img src=url>``, which
  sends no header: the URLs carry a media token (the caller's own, or one made for a user).

Both sit behind ``media_access(PLAYBACK)``. The audit trail gets one entry per strip, and one
per user and camera a minute for single pictures (a scrub bar asks dozens a second).
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from vms.api.deps import CameraDep, ServerDep
from vms.api.errors import responses
from vms.api.playback import audit_once
from vms.api.recordings import find_runs
from vms.auth import Action, Principal, local
from vms.auth.ratelimit import client_address
from vms.config import StreamName
from vms.media import MAIN, SUB
from vms.playback.thumbnail import WIDTH_DEFAULT, WIDTH_MAX, WIDTH_MIN
from vms.times import DAY_US, TIME_HELP, TIME_MAX_CHARS, TIME_RANGE, invalid, iso, parse_time

STRIP_DEFAULT, STRIP_MAX = 10, 100
STREAMS = {StreamName.MAIN: MAIN, StreamName.SUB: SUB}
# A picture of a closed segment is what it is; an hour keeps a scrubbed strip in the browser.
CLOSED_MAX_AGE_S = 3600
LOCAL = local.PRINCIPAL.via  # the local administration key: no user, no media token

router = APIRouter(
    prefix="/api/v1/cameras/{camera_id}",
    tags=["recordings"],
    responses=responses(400, 401, 403, 404),
)


class PictureQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: str = Field(max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}, {TIME_RANGE}")
    stream: StreamName = Field(StreamName.MAIN, description="main or sub")
    width: int = Field(
        WIDTH_DEFAULT,
        ge=WIDTH_MIN,
        le=WIDTH_MAX,
        description="pixels (made even); the height keeps the picture's aspect",
    )
    token: str | None = Field(None, max_length=4096, description="a media token")


class StripQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}, {TIME_RANGE}")
    end: str = Field(max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}, {TIME_RANGE}")
    count: int = Field(STRIP_DEFAULT, ge=1, le=STRIP_MAX, description=f"at most {STRIP_MAX}")
    stream: StreamName = Field(StreamName.MAIN, description="main or sub")
    width: int = Field(WIDTH_DEFAULT, ge=WIDTH_MIN, le=WIDTH_MAX, description="of each picture")
    token: str | None = Field(None, max_length=4096, description="a media token")


class StripItem(BaseModel):
    at_us: int
    at: str
    recorded: bool = Field(description="video is recorded at this instant")
    url: str | None = Field(description="its picture (thumbnail.jpg); null where not recorded")


class Strip(BaseModel):
    camera: str
    stream: StreamName
    start_us: int
    end_us: int
    start: str
    end: str
    items: list[StripItem]


JPEG: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The picture, a JPEG",
        "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _peer(request: Request) -> str | None:
    return client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        request.app.state.server.auth.trusted_proxies,
    )


@router.get("/thumbnail.jpg", response_class=Response, responses=JPEG)
async def thumbnail(
    cam: CameraDep, server: ServerDep, request: Request, q: Annotated[PictureQuery, Query()]
) -> Response:
    """The keyframe at or before ``at`` as a JPEG."""
    camera_id = cam.config.id
    at_us = parse_time(q.at, 0, "at")

    def work() -> Response:
        key, picture = server.thumbnails.at(
            server.catalog, server.storage, server.writers.catalog_thread.open_files, camera_id,
            STREAMS[q.stream], at_us, q.width,
        )  # fmt: skip
        details = {"at": iso(at_us), "stream": q.stream.value}
        # Once per caller and camera a minute, whatever the instant: a scrub bar asks dozens.
        audit_once(request, server, camera_id, ("thumbnail", camera_id), details,
                   action="playback.thumbnail")  # fmt: skip
        cache = f"private, max-age={CLOSED_MAX_AGE_S}" if key.closed else "private, no-cache"
        return Response(
            picture.jpeg,
            media_type="image/jpeg",
            headers={"Cache-Control": cache, "X-Thumbnail-Time": iso(key.at_us)},
        )

    return await run_in_threadpool(work)


@router.get("/thumbnails", response_model=Strip)
async def strip(
    cam: CameraDep, server: ServerDep, request: Request, q: Annotated[StripQuery, Query()]
) -> Strip:
    """``count`` instants across ``[start, end)`` and the URL of each one's picture."""
    camera_id = cam.config.id
    start_us = parse_time(q.start, 0, "start")
    end_us = parse_time(q.end, 0, "end")
    if end_us <= start_us:
        raise invalid("end", "must be after start")
    days = server.config.playback.max_range_days
    if end_us - start_us > days * DAY_US:
        raise invalid("end", f"the window is longer than {days:g} days (playback.max_range_days)")
    who: Principal = request.state.principal
    stream = STREAMS[q.stream]
    if not server.timelines.loaded(camera_id, stream):
        await run_in_threadpool(server.timelines.load, camera_id, stream)
    runs = find_runs(server, camera_id, stream, start_us, end_us, 2**62).runs
    span = end_us - start_us
    instants = [start_us + span * (2 * k + 1) // (2 * q.count) for k in range(q.count)]
    token = q.token if who.via == "media" else None
    if token is None and who.via != LOCAL:
        token = await run_in_threadpool(server.auth.media_token, who, camera_id, Action.PLAYBACK)
    base = f"/api/v1/cameras/{urllib.parse.quote(camera_id, safe='')}/thumbnail.jpg"
    items = []
    i = 0
    for at in instants:
        while i < len(runs) and runs[i]["end_us"] <= at:
            i += 1
        recorded = i < len(runs) and runs[i]["start_us"] <= at
        query = {"at": iso(at), "stream": q.stream.value, "width": q.width}
        if token is not None:
            query["token"] = token
        url = f"{base}?{urllib.parse.urlencode(query)}" if recorded else None
        items.append(StripItem(at_us=at, at=iso(at), recorded=recorded, url=url))
    details = {"start": iso(start_us), "end": iso(end_us), "count": q.count}
    await run_in_threadpool(
        server.audit.append, who.name, "playback.thumbnails", camera_id, details, _peer(request)
    )
    return Strip(
        camera=camera_id, stream=q.stream, start_us=start_us, end_us=end_us,
        start=iso(start_us), end=iso(end_us), items=items,
    )  # fmt: skip
