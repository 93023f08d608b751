"""Events over HTTP: the list, one event, its snapshot, its clip; a camera's motion.

- ``GET /api/v1/events?camera&label&zone&start&end&active&limit&cursor``: events newest first,
  of the cameras the caller may ``view`` (``camera``: some of them, comma-separated). ``start``
  and ``end`` select events that *started* in ``[start, end)``. A page ends at ``limit``;
  ``next`` goes on from there (keyset on the start and the id: new events do not shift it).
- ``GET /api/v1/events/{event_id}``: one event (the JSON every sink sends, :meth:`Event.to_json`,
  with ISO times and ``snapshot_url``, ``snapshot_box_url``, ``clip_url``: ``playback.mp4`` of
  ``[start − events.pre_s, end + events.post_s]``, an active event's end being now).
- ``GET …/{event_id}/snapshot.jpg?box=``: the best picture, with or without the box.
- ``GET …/{event_id}/clip``: 307 to the clip's ``playback.mp4`` (``playback`` on the camera).
- ``GET /api/v1/cameras/{camera_id}/motion?start&end&buckets``: per-second motion scores
  (0–255) for a timeline's heat strip, or the highest score in each of ``buckets`` parts;
  behind ``camera_access(PLAYBACK)``.

Access. An event is as visible as its camera: an event of a camera the caller may not view is
404 with the very answer an unknown id gets (never "it exists, but…"). Snapshot and clip also
take a media token in ``?token=`` (for ``<img>`` and ``<video>``, which send no header): one
for ``view`` (snapshot) or ``playback`` (clip) on the event's camera; the clip's redirect then
carries it on to ``playback.mp4``. A token for another camera answers as a bad token does,
whether or not the event exists.
"""

from __future__ import annotations

import bisect
import urllib.parse
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from vms.api import models
from vms.api.deps import CameraDep, ServerDep
from vms.api.errors import ERRORS
from vms.api.guard import API_KEY_HEADER, Authenticated, AuthService, authenticated
from vms.api.playback import audit_once
from vms.auth import ALL, Action, Principal
from vms.config import StreamName
from vms.errors import Detail, Kind, VmsError, capped, unauthenticated
from vms.events.model import Event
from vms.recording.timeline import bucket_edges
from vms.server import Server
from vms.times import (
    DAY_US,
    MAX_TIME_US,
    MIN_TIME_US,
    TIME_HELP,
    TIME_MAX_CHARS,
    TIME_RANGE,
    invalid,
    iso,
    iso_or_none,
    parse_time,
)

PREFIX = "/api/v1/events"
PAGE_DEFAULT, PAGE_MAX = 100, 1000
CAMERAS_MAX = 100
MOTION_SECONDS_DAYS = 1  # the longest window answered second by second
MOTION_BUCKETS_DAYS = 31  # ... and in buckets
BUCKETS_MAX = 2000
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# An ended event's snapshot no longer changes; an active one's may improve.
ENDED_MAX_AGE_S = 3600

router = APIRouter(prefix=PREFIX, tags=["events"], responses=ERRORS)
camera_router = APIRouter(prefix="/api/v1/cameras/{camera_id}", tags=["events"], responses=ERRORS)

EventId = Annotated[str, Path(pattern=UUID_PATTERN, description="an event id (a UUID)")]
Token = Annotated[str | None, Query(max_length=4096, description="a media token")]
JPEG: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The picture, a JPEG",
        "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
    }
}
REDIRECT: dict[int | str, dict[str, Any]] = {
    307: {"description": "To the clip's playback.mp4 (Location)"}
}


class EventsQuery(BaseModel):
    """Filters of the list. Unknown parameters are refused (a typo would widen the list)."""

    model_config = ConfigDict(extra="forbid")

    camera: str | None = Field(
        None,
        min_length=1,
        max_length=CAMERAS_MAX * 65,
        description=f"camera ids, comma-separated, at most {CAMERAS_MAX}; "
        "default: every camera you may view",
    )
    label: str | None = Field(None, pattern=r"^[A-Za-z0-9_ -]{1,64}$", description="e.g. person")
    zone: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="events that entered this zone"
    )
    start: str | None = Field(
        None, max_length=TIME_MAX_CHARS, description=f"started at or after: {TIME_HELP}"
    )
    end: str | None = Field(
        None, max_length=TIME_MAX_CHARS, description=f"started before: {TIME_HELP}"
    )
    active: bool | None = Field(None, description="true: only those going on; false: ended")
    limit: int = Field(
        PAGE_DEFAULT, ge=1, le=PAGE_MAX, description=f"events per page, at most {PAGE_MAX}"
    )
    cursor: str | None = Field(
        None, max_length=models.CURSOR_MAX_CHARS, description="`next` of the previous page"
    )


class EventOut(BaseModel):
    """An event as every sink sends it (MQTT, NATS, webhooks), with ISO times and its URLs.
    Boxes are ``[x1, y1, x2, y2]`` normalised to the picture; ``path`` is ``[t_us, box]``
    samples of its track."""

    id: str
    camera: str
    label: str
    start_us: int
    start: str
    end_us: int | None
    end: str | None
    active: bool
    score: float
    top_score: float
    box: list[float]
    stream: str = Field(description="the stream detection watched")
    zones: list[str] = Field(description="every zone it entered, in order")
    current_zones: list[str]
    loitering: list[str]
    stationary: bool
    path: list[list[int | list[float]]] = Field(description="[t_us, box] samples of its track")
    snapshot_us: int | None = Field(description="the frame of its snapshot, when one exists")
    track_id: int
    snapshot_url: str | None
    snapshot_box_url: str | None
    clip_start_us: int
    clip_end_us: int
    clip_url: str = Field(description="playback.mp4 of [start - pre_s, end + post_s]")


class MotionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(
        None,
        max_length=TIME_MAX_CHARS,
        description=f"{TIME_HELP}, {TIME_RANGE}; default 24 h before end",
    )
    end: str | None = Field(
        None, max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}, {TIME_RANGE}; default now"
    )
    buckets: int | None = Field(
        None,
        ge=1,
        le=BUCKETS_MAX,
        description=f"the highest score in each of this many equal parts (windows up to "
        f"{MOTION_BUCKETS_DAYS} days); none: each second (up to {MOTION_SECONDS_DAYS} day)",
    )


class Motion(BaseModel):
    """Motion scores (0–255: the share of the picture that changed) of ``[start, end)``."""

    camera: str
    start_us: int
    end_us: int
    start: str
    end: str
    seconds: list[list[int]] | None = Field(
        description="[second start µs, score] of each second that moved; null with buckets"
    )
    buckets: list[int] | None = Field(description="the highest score in each bucket")
    bucket_s: float | None


# --- helpers --------------------------------------------------------------------------------


def no_event(event_id: str) -> VmsError:
    return VmsError(Kind.NOT_FOUND, f"no event {capped(event_id)}")


def _camera_ids(text: str) -> list[str]:
    ids = list(dict.fromkeys(c.strip() for c in text.split(",")))
    if "" in ids:
        raise invalid("camera", "an empty camera id (a stray comma?)")
    if len(ids) > CAMERAS_MAX:
        raise invalid("camera", f"at most {CAMERAS_MAX} cameras a request")
    return ids


def _clip(server: Server, e: Event) -> tuple[int, int, str]:
    """The clip's range and its playback.mp4 URL (the main stream unless only the sub stream
    is recorded)."""
    cfg = server.config.events
    start = max(MIN_TIME_US, e.start_us - int(cfg.pre_s * 1e6))
    end_at = e.end_us if e.end_us is not None else max(server.clock.wall_us(), e.start_us)
    end = min(MAX_TIME_US, end_at + int(cfg.post_s * 1e6))
    stream = StreamName.MAIN
    for cam in server.cameras:
        if cam.config.id == e.camera_id and StreamName.MAIN not in cam.config.record_streams:
            stream = StreamName.SUB
    query = urllib.parse.urlencode({"start": start, "end": end, "stream": stream.value})
    camera = urllib.parse.quote(e.camera_id, safe="")
    return start, end, f"/api/v1/cameras/{camera}/playback.mp4?{query}"


def event_out(server: Server, e: Event) -> EventOut:
    d = e.to_json()
    base = f"{PREFIX}/{e.id}/snapshot.jpg"
    has = e.snapshot_us is not None
    clip_start, clip_end, clip_url = _clip(server, e)
    return EventOut(
        **d, start=iso(e.start_us), end=iso_or_none(e.end_us),
        snapshot_url=base if has else None, snapshot_box_url=f"{base}?box=true" if has else None,
        clip_start_us=clip_start, clip_end_us=clip_end, clip_url=clip_url,
    )  # fmt: skip


def _load(server: Server, event_id: str) -> Event:
    try:
        return server.event_store.get(event_id)
    except VmsError as e:
        if e.kind is Kind.NOT_FOUND:
            raise no_event(event_id) from None
        raise


async def _who(
    request: Request, server: Server, auth: AuthService, event_id: str, token: str | None,
    action: Action,
) -> tuple[Principal, Event]:  # fmt: skip
    """The caller (by header, or by a media token for ``action`` on the event's camera) and
    the event, if the caller may see it; else 404 as for an unknown id."""
    headers = request.headers
    if token is not None and "authorization" not in headers and API_KEY_HEADER not in headers:
        try:
            event = await run_in_threadpool(_load, server, event_id)
        except VmsError as e:
            if e.kind is not Kind.NOT_FOUND:
                raise
            # As a token for another camera is answered: nothing told about the id.
            raise unauthenticated("the media token is for another camera or action") from None
        who = await run_in_threadpool(auth.media, token, event.camera_id, action)
        request.state.principal = who
    else:
        who = await authenticated(request, auth)
        event = await run_in_threadpool(_load, server, event_id)
    camera = event.camera_id
    if not (who.permitted(Action.VIEW, camera) or who.permitted(action, camera)):
        raise no_event(event_id)
    if not who.permitted(action, camera):
        raise VmsError(Kind.FORBIDDEN, f"not permitted: {action.value}")
    return who, event


# --- routes ---------------------------------------------------------------------------------


@router.get("", response_model=models.Page[EventOut])
async def list_events(
    server: ServerDep, who: Authenticated, q: Annotated[EventsQuery, Query()]
) -> models.Page[EventOut]:
    """Events newest first, of the cameras the caller may view."""
    cameras: list[str] | None
    if q.camera is not None:
        cameras = _camera_ids(q.camera)
        refused = [c for c in cameras if not who.permitted(Action.VIEW, c)]
        if refused:
            raise VmsError(
                Kind.NOT_FOUND,
                "; ".join(f"no camera {capped(c)}" for c in refused),
                [Detail("camera", f"unknown camera {capped(c)}") for c in refused],
            )
    else:
        mine = who.cameras_for(Action.VIEW)
        cameras = None if mine is ALL else sorted(mine)
    start_us = parse_time(q.start, None, "start")
    end_us = parse_time(q.end, None, "end")
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise invalid("end", "must be after start")
    before = None
    if q.cursor is not None:
        pos = models.decode_cursor(q.cursor, {"start_us": int, "id": str})
        before = (pos["start_us"], pos["id"])
    found = await run_in_threadpool(
        server.event_store.list, cameras=cameras, label=q.label, zone=q.zone,
        start_us=start_us, end_us=end_us, active=q.active, limit=q.limit + 1, before=before,
    )  # fmt: skip
    page = found[: q.limit]
    nxt = None
    if len(found) > q.limit:
        nxt = models.encode_cursor({"start_us": page[-1].start_us, "id": page[-1].id})
    return models.Page[EventOut](items=[event_out(server, e) for e in page], next=nxt)


@router.get("/{event_id}", response_model=EventOut)
async def get_event(event_id: EventId, server: ServerDep, who: Authenticated) -> EventOut:
    event = await run_in_threadpool(_load, server, event_id)
    if not who.permitted(Action.VIEW, event.camera_id):
        raise no_event(event_id)
    return event_out(server, event)


@router.get("/{event_id}/snapshot.jpg", response_class=Response, responses=JPEG)
async def event_snapshot(
    event_id: EventId,
    request: Request,
    server: ServerDep,
    auth: AuthService,
    box: Annotated[bool, Query(description="true: the picture with the object's box")] = False,
    token: Token = None,
) -> Response:
    """The event's best picture (404 while it has none)."""
    _, event = await _who(request, server, auth, event_id, token, Action.VIEW)

    def work() -> bytes:
        picture = server.snapshots.read(event.camera_id, event.id, box=box)
        audit_once(request, server, event.camera_id, ("event.snapshot", event.id),
                   {"event": event.id}, action="event.snapshot")  # fmt: skip
        return picture

    picture = await run_in_threadpool(work)
    cache = "private, no-cache" if event.active else f"private, max-age={ENDED_MAX_AGE_S}"
    return Response(picture, media_type="image/jpeg", headers={"Cache-Control": cache})


@router.get(
    "/{event_id}/clip", status_code=307, response_class=RedirectResponse, responses=REDIRECT
)
async def event_clip(
    event_id: EventId, request: Request, server: ServerDep, auth: AuthService, token: Token = None
) -> RedirectResponse:
    """Redirect to the clip's ``playback.mp4`` (``playback`` on the camera is needed)."""
    who, event = await _who(request, server, auth, event_id, token, Action.PLAYBACK)
    _, _, url = _clip(server, event)
    if who.via == "media" and token is not None:
        url += "&" + urllib.parse.urlencode({"token": token})
    return RedirectResponse(url, status_code=307)


@camera_router.get("/motion", response_model=Motion)
async def camera_motion(
    cam: CameraDep, server: ServerDep, q: Annotated[MotionQuery, Query()]
) -> Motion:
    """The camera's motion, second by second or in buckets."""
    end_us = parse_time(q.end, server.clock.wall_us(), "end")
    start_us = parse_time(q.start, max(end_us - DAY_US, MIN_TIME_US), "start")
    if end_us <= start_us:
        raise invalid("end", "must be after start")
    days = MOTION_SECONDS_DAYS if q.buckets is None else MOTION_BUCKETS_DAYS
    if end_us - start_us > days * DAY_US:
        what = "second by second" if q.buckets is None else "in buckets"
        raise invalid("end", f"the window is longer than {days} day(s) {what}")
    camera_id = cam.config.id
    seconds = await run_in_threadpool(server.event_store.motion, camera_id, start_us, end_us)
    out: dict[str, Any] = {"seconds": [[t, v] for t, v in seconds], "buckets": None,
                           "bucket_s": None}  # fmt: skip
    if q.buckets is not None:
        edges = bucket_edges(start_us, end_us, q.buckets)
        peaks = [0] * q.buckets
        for t, score in seconds:
            k = min(max(bisect.bisect_right(edges, t) - 1, 0), q.buckets - 1)
            peaks[k] = max(peaks[k], score)
        out = {"seconds": None, "buckets": peaks,
               "bucket_s": (end_us - start_us) / q.buckets / 1e6}  # fmt: skip
    return Motion(camera=camera_id, start_us=start_us, end_us=end_us, start=iso(start_us),
                  end=iso(end_us), **out)  # fmt: skip
