"""The HTTP API: health, cameras with their health, recorded runs and gaps, metrics.

Errors are :class:`~vms.errors.VmsError` and are mapped to HTTP in one place. Camera passwords
are never part of a response: cameras are described from their config without credentials.
"""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from vms import metrics
from vms.catalog import OPEN
from vms.errors import Kind, VmsError
from vms.server import Camera, Server

# Segments closer than this are one run: rotation leaves no gap by construction, but a
# re-anchored wall clock may leave a few milliseconds.
RUN_GAP_US = 500_000
DAY_US = 86_400_000_000


def parse_time(value: str | None, default: int) -> int:
    """Microseconds since the epoch, or an ISO 8601 instant (naive means UTC)."""
    if value is None or value == "":
        return default
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise VmsError(
            Kind.INVALID_ARGUMENT, f"not a time: {value!r} (microseconds or ISO 8601)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return int(t.timestamp() * 1_000_000)


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
    cam = server.camera(camera_id)
    if end_us <= start_us:
        raise VmsError(Kind.INVALID_ARGUMENT, "end must be after start")
    runs: list[dict[str, Any]] = []
    now = server.clock.wall_us()
    for seg in server.catalog.segments(camera_id=camera_id, start_us=start_us, end_us=end_us):
        seg_end = seg.end_us
        if seg.state == OPEN and cam.recorder is not None:
            seg_end = max(seg_end, cam.recorder.open_end_us(seg.id) or seg_end)
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
    return {"camera": camera_id, "start_us": start_us, "end_us": end_us, "runs": runs, "gaps": gaps}


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="vms", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json")

    @app.exception_handler(VmsError)
    async def _vms_error(_: Request, exc: VmsError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.kind.http_status)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        roots = {r.name: ("ok" if r.usable else r.error) for r in server.storage.roots}
        return {"status": "ok", "recording": server.started, "roots": roots}

    @app.get("/api/v1/cameras")
    def cameras() -> dict[str, Any]:
        return {"cameras": [describe_camera(c) for c in server.cameras]}

    @app.get("/api/v1/cameras/{camera_id}")
    def camera(camera_id: str) -> dict[str, Any]:
        return describe_camera(server.camera(camera_id))

    @app.get("/api/v1/cameras/{camera_id}/recordings")
    def camera_recordings(
        camera_id: str,
        start: str | None = Query(None, description="µs since epoch or ISO 8601; default 24 h ago"),
        end: str | None = Query(None, description="µs since epoch or ISO 8601; default now"),
    ) -> dict[str, Any]:
        now = server.clock.wall_us()
        end_us = parse_time(end, now)
        start_us = parse_time(start, end_us - DAY_US)
        return recordings(server, camera_id, start_us, end_us)

    @app.get("/api/v1/storage")
    def storage() -> dict[str, Any]:
        out = []
        for r in server.storage.roots:
            item: dict[str, Any] = {
                "name": r.name,
                "path": str(r.path),
                "usable": r.usable,
                "error": r.error,
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
