"""The HTTP API: health, cameras with their health, recorded runs and gaps, metrics.

Errors are :class:`~vms.errors.VmsError` and are mapped to HTTP in one place; what the framework
answers itself (unknown route, wrong method, a parameter that fails its declared bounds) is put
in the same body, ``{"error", "message", "details"}``. Every parameter is bounded here, at the
edge, so nothing a client sends reaches SQL or ``int()`` unchecked. Camera passwords are never
part of a response: cameras are described from their config without credentials.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from vms import metrics
from vms.catalog.store import MAIN, OPEN, QUARANTINED
from vms.errors import CAP, Detail, Kind, VmsError, capped, shorten
from vms.recording.storage import Root
from vms.server import Camera, Server

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

# Segments closer than this are one run: rotation leaves no gap by construction, but a
# re-anchored wall clock may leave a few milliseconds.
RUN_GAP_US = 500_000
DAY_US = 86_400_000_000

# The times a request may name: 1970-01-01 to 2200-01-01 UTC. Both ends sit far inside int64,
# so no window can overflow the catalog's INTEGER columns or the arithmetic on them.
MIN_TIME_US = 0
MAX_TIME_US = 7_258_118_400_000_000
TIME_RANGE = "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z (0 to 7258118400000000 µs)"
# Longer than any ISO 8601 instant with an offset and microseconds; bounds the query at the edge.
TIME_MAX_CHARS = CAP
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_ONE_US = datetime.timedelta(microseconds=1)
# Not str.isdigit(): that is true of "²" and "١٢٣", which int() then refuses or reads.
_MICROS = re.compile(r"-?[0-9]+")
# 20 digits are past any time in range already; int() of 5,000 digits raises.
_MICROS_MAX_DIGITS = 20
_TIME_HELP = "µs since the epoch or ISO 8601 (naive means UTC)"
# A request with a thousand bad parameters is told about the first few.
_MAX_DETAILS = 8


def invalid(field: str, problem: str) -> VmsError:
    """A 400 about one parameter: the message leads with its name, ``details`` names it too."""
    return VmsError(Kind.INVALID_ARGUMENT, f"{field}: {problem}", [Detail(field, problem)])


def parse_time(value: str | None, default: int, field: str = "time") -> int:
    """Microseconds since the epoch, or an ISO 8601 instant (naive means UTC), in the range
    the API accepts; ``field`` names the parameter in the error."""
    if value is None or value == "":
        return default
    if _MICROS.fullmatch(value):
        us = int(value) if len(value.lstrip("-")) <= _MICROS_MAX_DIGITS else None
    else:
        t = None
        if value.isascii() and len(value) <= TIME_MAX_CHARS:
            try:
                t = datetime.datetime.fromisoformat(value)
            except ValueError:
                pass
        if t is None:
            raise invalid(field, f"not a time: {capped(value)} ({_TIME_HELP})")
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.UTC)
        # Exact integer arithmetic: timestamp() goes through a float.
        us = (t - _EPOCH) // _ONE_US
    if us is None or not MIN_TIME_US <= us <= MAX_TIME_US:
        raise invalid(field, f"out of range: {capped(value)}; allowed {TIME_RANGE}")
    return us


def find_camera(server: Server, camera_id: str) -> Camera:
    """The camera, or a 404 that repeats at most :data:`~vms.errors.CAP` characters of the id."""
    for cam in server.cameras:
        if cam.config.id == camera_id:
            return cam
    raise VmsError(
        Kind.NOT_FOUND, f"no camera {capped(camera_id)}", [Detail("camera_id", "unknown camera")]
    )


def describe_camera(cam: Camera) -> dict[str, Any]:
    c = cam.config
    return {
        "id": c.id,
        "name": c.display_name,
        "enabled": c.enabled,
        "record": c.record.value,
        "retention_days": c.retention_days,
        "has_sub_stream": c.sub is not None,
        "health": cam.health.snapshot(),
        "recording": None
        if cam.recorder is None
        else {
            "frames_written": cam.recorder.stats.frames_written,
            "bytes_written": cam.recorder.stats.bytes_written,
            "segments": cam.recorder.stats.segments,
            "frames_dropped": cam.recorder.stats.frames_dropped,
        },
    }


def recordings(server: Server, camera_id: str, start_us: int, end_us: int) -> dict[str, Any]:
    find_camera(server, camera_id)
    if end_us <= start_us:
        raise invalid("end", "must be after start")
    runs: list[dict[str, Any]] = []
    now = server.clock.wall_us()
    quarantined = 0
    # The main stream's: the runs are what playback serves.
    for seg in server.catalog.overlapping(camera_id, MAIN, start_us, end_us):
        if seg.state == QUARANTINED:
            quarantined += 1  # its bytes failed their checksum: not served, a gap instead
            continue
        seg_end = seg.end_us
        if seg.state == OPEN:
            live = server.writers.open_segment(camera_id, MAIN, seg_id=seg.id)
            seg_end = max(seg_end, live.end_us if live else seg_end)
        if seg_end <= start_us or seg.start_us >= end_us:
            continue
        s, e = max(seg.start_us, start_us), min(seg_end, end_us, max(now, seg_end))
        if runs and s - runs[-1]["end_us"] <= RUN_GAP_US:
            run = runs[-1]
            run["end_us"] = max(run["end_us"], e)
            run["segments"] += 1
            run["bytes"] += seg.bytes
            run["open"] = run["open"] or seg.state == OPEN
        else:
            runs.append(
                {
                    "start_us": s,
                    "end_us": e,
                    "segments": 1,
                    "bytes": seg.bytes,
                    "open": seg.state == OPEN,
                }
            )
    gaps = []
    cursor = start_us
    for run in runs:
        if run["start_us"] > cursor:
            gaps.append({"start_us": cursor, "end_us": run["start_us"]})
        cursor = max(cursor, run["end_us"])
    if cursor < min(end_us, now):
        gaps.append({"start_us": cursor, "end_us": min(end_us, now)})
    for item in runs + gaps:
        item["duration_s"] = round((item["end_us"] - item["start_us"]) / 1e6, 3)
    return {
        "camera": camera_id,
        "start_us": start_us,
        "end_us": end_us,
        "runs": runs,
        "gaps": gaps,
        "quarantined_segments": quarantined,
    }


def root_health(root: Root) -> str:
    """``ok``, why the root is refused, or ``degraded: <why>`` (usable, not as configured)."""
    if not root.usable:
        return root.error or "not usable"
    return f"degraded: {root.warning}" if root.warning else "ok"


# Not bounded by length: an id no config could hold is still just an unknown camera, a 404.
CameraId = Annotated[str, Path(description="a camera id from the config; unknown ids answer 404")]


class RecordingsQuery(BaseModel):
    """The window of ``/recordings``. Unknown parameters are refused: a typo such as ``strat``
    would otherwise answer the default window as if it were the one asked for."""

    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(
        None,
        max_length=TIME_MAX_CHARS,
        description=f"{_TIME_HELP}, {TIME_RANGE}; default 24 h before end",
    )
    end: str | None = Field(
        None, max_length=TIME_MAX_CHARS, description=f"{_TIME_HELP}, {TIME_RANGE}; default now"
    )


def validation_error(exc: RequestValidationError) -> VmsError:
    """FastAPI's own refusal of a parameter, as a 400 in the one error body."""
    errors = exc.errors()
    details = []
    for e in errors[:_MAX_DETAILS]:
        # loc is ("query" | "path" | ..., name, ...); the name may be whatever a client sent.
        field = shorten(".".join(str(part) for part in e["loc"][1:]) or str(e["loc"][0]))
        problem = "unknown parameter" if e["type"] == "extra_forbidden" else str(e["msg"])
        details.append(Detail(field, shorten(problem, 4 * CAP)))
    message = "; ".join(f"{d.field}: {d.problem}" for d in details)
    if len(errors) > len(details):
        message += f"; and {len(errors) - len(details)} more"
    return VmsError(Kind.INVALID_ARGUMENT, message or "invalid request", details)


def http_error(request: Request, exc: HTTPException) -> VmsError:
    """What routing answers itself (no such route, wrong method), in the one error body."""
    path = capped(request.url.path)
    if exc.status_code == 404:
        return VmsError(Kind.NOT_FOUND, f"no route {path}")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return VmsError(
            Kind.INVALID_ARGUMENT,
            f"method {capped(request.method)} not allowed on {path}; allowed: {allowed}",
        )
    kind = Kind.INVALID_ARGUMENT if exc.status_code < 500 else Kind.INTERNAL
    return VmsError(kind, shorten(str(exc.detail), 4 * CAP))


def create_api(server: Server, lifespan: Lifespan | None = None) -> FastAPI:
    """The API over ``server``; ``vms.app.create_app`` gives it the lifespan that runs it."""
    app = FastAPI(
        title="vms",
        version="1",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )

    @app.exception_handler(VmsError)
    async def _vms_error(_: Request, exc: VmsError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.kind.http_status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error(exc).to_dict(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # The status stays the framework's (405 is not a Kind) and so do its headers (Allow).
        body = http_error(request, exc).to_dict()
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises it after this answer, so the server still logs the traceback;
        # the client gets the one body and nothing of the traceback.
        return JSONResponse(VmsError(Kind.INTERNAL, "internal error").to_dict(), status_code=500)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        roots = {r.name: root_health(r) for r in server.storage.roots}
        status = "ok" if all(v == "ok" for v in roots.values()) else "degraded"
        return {"status": status, "recording": server.started, "roots": roots}

    @app.get("/api/v1/cameras")
    def cameras() -> dict[str, Any]:
        return {"cameras": [describe_camera(c) for c in server.cameras]}

    @app.get("/api/v1/cameras/{camera_id}")
    def camera(camera_id: CameraId) -> dict[str, Any]:
        return describe_camera(find_camera(server, camera_id))

    @app.get("/api/v1/cameras/{camera_id}/recordings")
    def camera_recordings(
        camera_id: CameraId, window: Annotated[RecordingsQuery, Query()]
    ) -> dict[str, Any]:
        end_us = parse_time(window.end, server.clock.wall_us(), "end")
        start_us = parse_time(window.start, max(end_us - DAY_US, MIN_TIME_US), "start")
        return recordings(server, camera_id, start_us, end_us)

    @app.get("/api/v1/storage")
    def storage() -> dict[str, Any]:
        out = []
        for r in server.storage.roots:
            item: dict[str, Any] = {
                "name": r.name,
                "path": str(r.path),
                "usable": r.usable,
                "state": "refused" if not r.usable else ("degraded" if r.warning else "ok"),
                "error": r.error,
                "warning": r.warning,
                "bytes_deleted_early": r.bytes_deleted_early,
            }
            if r.usable and r.id is not None:
                item["bytes_used"] = r.used_bytes
                item["bytes_free"] = r.free_bytes()
                item["max_bytes"] = r.config.max_bytes
                item["min_free_bytes"] = r.config.min_free_bytes
            out.append(item)
        return {"roots": out}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(server), media_type=metrics.CONTENT_TYPE)

    return app
