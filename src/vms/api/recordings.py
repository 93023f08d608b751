"""What a camera has recorded: runs of video without a break, and the gaps between them.

The window is ``[start, end)`` (default: the 24 hours before now). A run joins segments that
follow one another; an open segment counts up to what its writer has written; a quarantined
segment (its bytes failed their checksum) is not served and leaves a gap. A window with more
runs than ``limit``, or more segments than :data:`SEGMENTS_PER_PAGE`, is answered a page at a
time: the page ends where the first run left out starts, and ``next`` goes on from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from vms.api import models
from vms.api.deps import CameraDep, ServerDep
from vms.api.errors import ERRORS
from vms.catalog.store import MAIN
from vms.recording.timeline import RUN_GAP_US
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

RUNS_DEFAULT, RUNS_MAX = 1000, 10_000
# The most segments one page covers: a week of one-minute segments.
SEGMENTS_PER_PAGE = 10_080

router = APIRouter(prefix="/api/v1/cameras/{camera_id}", tags=["recordings"], responses=ERRORS)


class RecordingsQuery(BaseModel):
    """The window of ``/recordings``. Unknown parameters are refused: a typo such as ``strat``
    would otherwise answer the default window as if it were the one asked for."""

    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(
        None,
        max_length=TIME_MAX_CHARS,
        description=f"{TIME_HELP}, {TIME_RANGE}; default 24 h before end",
    )
    end: str | None = Field(
        None, max_length=TIME_MAX_CHARS, description=f"{TIME_HELP}, {TIME_RANGE}; default now"
    )
    limit: int = Field(
        RUNS_DEFAULT, ge=1, le=RUNS_MAX, description=f"runs per page, at most {RUNS_MAX}"
    )
    cursor: str | None = Field(
        None,
        max_length=models.CURSOR_MAX_CHARS,
        description="`next` of the previous page (instead of start and end)",
    )


class Found(NamedTuple):
    """The runs of a camera stream in a window (dicts of ``start_us``, ``end_us``,
    ``segments``, ``bytes``, ``open``), where the window stops (a page may cut it), the
    quarantined segments in it and, with ``edges``, the µs of closed segments between them
    and the open segments as far as they are written (``live``: their ``(start_us, end_us)``)."""

    runs: list[dict[str, Any]]
    end_us: int
    quarantined: int
    covered: list[int]
    live: list[tuple[int, int]]


def find_runs(
    server: Server,
    camera_id: str,
    stream: int,
    start_us: int,
    end_us: int,
    per_page: int,
    edges: Sequence[int] = (),
) -> Found:
    """Runs of ``[start_us, end_us)`` from the in-memory timeline, at most ``per_page``
    segments' worth (see :meth:`vms.recording.timeline.Timeline.window`)."""
    runs: list[dict[str, Any]] = []
    live: list[tuple[int, int]] = []
    now = server.clock.wall_us()
    # The timeline hands the closed segments over in blocks that follow one another, and each
    # open row on its own.
    found = server.timelines.window(camera_id, stream, start_us, end_us, per_page, edges)
    window_end = found.end_us  # where this page stops
    for item in found.items:
        seg_end = item.end_us
        if item.open:
            written = server.writers.open_segment(camera_id, stream, seg_id=item.id)
            seg_end = max(seg_end, written.end_us if written else seg_end)
            live.append((item.start_us, seg_end))
        if seg_end <= start_us or item.start_us >= window_end:
            continue
        s, e = max(item.start_us, start_us), min(seg_end, window_end, max(now, seg_end))
        if runs and s - runs[-1]["end_us"] <= RUN_GAP_US:
            run = runs[-1]
            run["end_us"] = max(run["end_us"], e)
            run["segments"] += item.segments
            run["bytes"] += item.bytes
            run["open"] = run["open"] or item.open
        else:
            runs.append(
                {"start_us": s, "end_us": e, "segments": item.segments, "bytes": item.bytes,
                 "open": item.open}
            )  # fmt: skip
    return Found(runs, window_end, found.quarantined, list(found.covered), live)


def gaps_between(runs: list[dict[str, Any]], start_us: int, end_us: int) -> list[models.Gap]:
    """The holes between ``runs`` in ``[start_us, end_us)``."""
    gaps = []
    cursor = start_us
    for run in runs:
        if run["start_us"] > cursor:
            gaps.append(models.Gap(**models.Gap.times(cursor, run["start_us"])))
        cursor = max(cursor, run["end_us"])
    if cursor < end_us:
        gaps.append(models.Gap(**models.Gap.times(cursor, end_us)))
    return gaps


def recordings(
    server: Server, camera_id: str, start_us: int, end_us: int, limit: int = RUNS_DEFAULT
) -> models.Recordings:
    if end_us <= start_us:
        raise invalid("end", "must be after start")
    now = server.clock.wall_us()
    # The main stream's: the runs are what playback serves.
    found = find_runs(server, camera_id, MAIN, start_us, end_us, SEGMENTS_PER_PAGE)
    runs, window_end = found.runs, found.end_us
    if len(runs) > limit:
        window_end = runs[limit]["start_us"]
        runs = runs[:limit]
    gaps = gaps_between(runs, start_us, min(window_end, now))
    nxt = None
    if window_end < end_us:
        nxt = models.encode_cursor({"camera": camera_id, "start": window_end, "end": end_us})
    return models.Recordings(
        camera=camera_id,
        start_us=start_us,
        end_us=window_end,
        start=iso(start_us),
        end=iso(window_end),
        runs=[
            models.Run(
                **models.Gap.times(r["start_us"], r["end_us"]),
                segments=r["segments"],
                bytes=r["bytes"],
                open=r["open"],
            )
            for r in runs
        ],
        gaps=gaps,
        quarantined_segments=found.quarantined,
        next=nxt,
    )


@router.get("/recordings", response_model=models.Recordings)
async def camera_recordings(
    cam: CameraDep, server: ServerDep, window: Annotated[RecordingsQuery, Query()]
) -> models.Recordings:
    """Runs and gaps of the camera's main stream in a window."""
    camera_id = cam.config.id
    if window.cursor is not None:
        if window.start is not None or window.end is not None:
            raise invalid("cursor", "a cursor replaces start and end; send it alone")
        pos = models.decode_cursor(window.cursor, {"camera": str, "start": int, "end": int})
        if pos["camera"] != camera_id or not MIN_TIME_US <= pos["start"] < pos["end"]:
            raise invalid("cursor", "not a cursor of this camera's recordings")
        start_us, end_us = pos["start"], pos["end"]
        parse_time(str(end_us), 0, "cursor")  # in range, as any time sent
    else:
        end_us = parse_time(window.end, server.clock.wall_us(), "end")
        start_us = parse_time(window.start, max(end_us - DAY_US, MIN_TIME_US), "start")
    # On the event loop: a window is a few bisects in memory. Only the first request of a camera
    # stream reads its rows from the catalog, and that is done in a worker thread.
    if not server.timelines.loaded(camera_id, MAIN):
        await run_in_threadpool(server.timelines.load, camera_id, MAIN)
    return recordings(server, camera_id, start_us, end_us, window.limit)
