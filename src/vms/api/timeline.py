"""``GET /api/v1/timeline``: what several cameras recorded in one window, drawn in one call.

For each camera, its runs and gaps (as ``/recordings`` finds them, from the in-memory
timelines) and a **density**: the window cut into ``buckets`` equal parts and the seconds of
video in each, so a week in 168 buckets draws a scrub bar. Open segments count as far as their
writer has written them; quarantined segments do not count.

Access is per camera, as the guard judges a camera in a path: a camera the caller may not view
is 404 (as if it did not exist), one it may view but not play back is 403. The request names
every camera it is refused, not only the first, so it fails the same way whatever the order.
"""

from __future__ import annotations

import sys
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from vms.api import models
from vms.api.deps import ServerDep, find_camera
from vms.api.errors import responses
from vms.api.guard import check_camera, require
from vms.api.recordings import find_runs, gaps_between
from vms.auth import Action, Principal
from vms.config import StreamName
from vms.errors import Detail, Kind, VmsError
from vms.media import MAIN, SUB
from vms.recording.timeline import add_cover, bucket_edges
from vms.server import Server
from vms.times import (
    DAY_US,
    MIN_TIME_US,
    TIME_HELP,
    TIME_MAX_CHARS,
    TIME_RANGE,
    invalid,
    iso,
    parse_time,
)

BUCKETS_DEFAULT, BUCKETS_MAX = 96, 2000
CAMERAS_MAX = 100
# A month: a scrub bar's longest view. Longer spans are asked a month at a time.
MAX_DAYS = 31
# Runs listed per camera; a window with more (a camera that drops every few seconds for a
# month) says ``more_runs`` and ``/recordings`` pages through them. The density is whole.
RUNS_MAX = 10_000
STREAMS = {StreamName.MAIN: MAIN, StreamName.SUB: SUB}

router = APIRouter(prefix="/api/v1", tags=["recordings"], responses=responses(400, 401, 403, 404))


class TimelineQuery(BaseModel):
    """The cameras and the window. Unknown parameters are refused, as on ``/recordings``."""

    model_config = ConfigDict(extra="forbid")

    cameras: str = Field(
        min_length=1,
        max_length=CAMERAS_MAX * 65,
        description=f"camera ids, comma-separated, at most {CAMERAS_MAX}",
    )
    start: str | None = Field(
        None,
        max_length=TIME_MAX_CHARS,
        description=f"{TIME_HELP}, {TIME_RANGE}; default 24 h before end",
    )
    end: str | None = Field(
        None, max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}, {TIME_RANGE}; default now"
    )
    buckets: int = Field(
        BUCKETS_DEFAULT, ge=1, le=BUCKETS_MAX, description=f"density buckets, at most {BUCKETS_MAX}"
    )
    stream: StreamName = Field(StreamName.MAIN, description="main or sub")


class CameraTimeline(BaseModel):
    camera: str
    runs: list[models.Run]
    more_runs: bool = Field(description=f"more than {RUNS_MAX} runs: the first are listed")
    gaps: list[models.Gap] = Field(description="between the runs listed, up to now at most")
    quarantined_segments: int
    recorded_s: float = Field(description="seconds of video in the window")
    density: list[float] = Field(description="seconds of video in each bucket, oldest first")


class Timeline(BaseModel):
    """What each camera recorded in ``[start, end)``; bucket ``k`` is
    ``[start + k × bucket_s, start + (k + 1) × bucket_s)``."""

    start_us: int
    end_us: int
    start: str
    end: str
    stream: StreamName
    buckets: int
    bucket_s: float
    cameras: list[CameraTimeline]


def camera_ids(text: str) -> list[str]:
    """The ids of ``cameras=``, in order, each once."""
    ids = list(dict.fromkeys(c.strip() for c in text.split(",")))
    if "" in ids:
        raise invalid("cameras", "an empty camera id (a stray comma?)")
    if len(ids) > CAMERAS_MAX:
        raise invalid("cameras", f"at most {CAMERAS_MAX} cameras a request")
    return ids


def check_cameras(server: Server, who: Principal, ids: list[str]) -> None:
    """Every camera may be played back by ``who``; else one error naming each refused."""
    refused: list[VmsError] = []
    for camera_id in ids:
        try:
            check_camera(who, Action.PLAYBACK, camera_id)
            find_camera(server, camera_id)
        except VmsError as e:
            refused.append(e)
    if refused:
        # 404 first: a camera someone may not see must not be told apart by a 403.
        kind = Kind.NOT_FOUND if any(e.kind is Kind.NOT_FOUND for e in refused) else refused[0].kind
        errors = [e for e in refused if e.kind is kind]
        details = [Detail("cameras", e.message) for e in errors]
        raise VmsError(kind, "; ".join(e.message for e in errors), details)


def camera_timeline(
    server: Server, camera_id: str, stream: int, edges: list[int], now: int
) -> CameraTimeline:
    start_us, end_us = edges[0], edges[-1]
    found = find_runs(server, camera_id, stream, start_us, end_us, sys.maxsize, edges)
    covered = found.covered
    for s, e in found.live:
        add_cover(covered, edges, s, e)
    runs, more = found.runs[:RUNS_MAX], len(found.runs) > RUNS_MAX
    gaps_end = min(runs[-1]["end_us"], end_us) if more else min(end_us, now)
    return CameraTimeline(
        camera=camera_id,
        runs=[
            models.Run(
                **models.Gap.times(r["start_us"], r["end_us"]),
                segments=r["segments"],
                bytes=r["bytes"],
                open=r["open"],
            )
            for r in runs
        ],
        more_runs=more,
        gaps=gaps_between(runs, start_us, max(gaps_end, start_us)),
        quarantined_segments=found.quarantined,
        recorded_s=sum(covered) / 1e6,
        density=[c / 1e6 for c in covered],
    )


def timeline(
    server: Server, ids: list[str], stream: StreamName, start_us: int, end_us: int, buckets: int
) -> Timeline:
    """The timeline of cameras already checked (a worker thread: a month of a hundred cameras
    is more than the event loop should hold)."""
    if end_us <= start_us:
        raise invalid("end", "must be after start")
    if end_us - start_us > MAX_DAYS * DAY_US:
        raise invalid("end", f"the window is longer than {MAX_DAYS} days")
    edges = bucket_edges(start_us, end_us, buckets)
    now = server.clock.wall_us()
    number = STREAMS[stream]
    return Timeline(
        start_us=start_us,
        end_us=end_us,
        start=iso(start_us),
        end=iso(end_us),
        stream=stream,
        buckets=buckets,
        bucket_s=(end_us - start_us) / buckets / 1e6,
        cameras=[camera_timeline(server, c, number, edges, now) for c in ids],
    )


@router.get("/timeline", response_model=Timeline)
async def get_timeline(
    server: ServerDep,
    who: Annotated[Principal, Depends(require(Action.PLAYBACK))],
    q: Annotated[TimelineQuery, Query()],
) -> Timeline:
    """Runs, gaps and a density of recorded seconds per bucket, for each camera."""
    ids = camera_ids(q.cameras)
    check_cameras(server, who, ids)
    end_us = parse_time(q.end, server.clock.wall_us(), "end")
    start_us = parse_time(q.start, max(end_us - DAY_US, MIN_TIME_US), "start")
    return await run_in_threadpool(timeline, server, ids, q.stream, start_us, end_us, q.buckets)
