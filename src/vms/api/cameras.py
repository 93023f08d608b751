"""Camera routes: list, read, add, replace, change, enable, disable, remove, and a probe of a
stream before it becomes a camera. Changes go through the :class:`~vms.server.Server`, which
keeps cameras in the catalog and restarts only the camera changed; the others record on.

Two routers, so that a guard can be hung on each as a whole: :data:`collection` (``/cameras``:
list, add, probe: no camera named) and :data:`camera` (``/cameras/{camera_id}...``: every route
names one camera by the path parameter ``camera_id``; a dependency taking ``camera_id`` added
to this router sees it on every route). The list keeps only the cameras :func:`camera_filter`
lets through: every camera, until an access policy overrides it.

**Credentials are write-only.** A response says ``has_password``, never the password. A
replace or change that leaves ``password`` out keeps the stored one, ``null`` removes it, but a
kept password is only ever sent to where it was sent before: a change of a stream's scheme,
host or port that would keep it must send the password again (otherwise whoever may edit a
camera could point it at their own host and receive the password).

A camera URL passes :func:`vms.config.check_camera_url` (rtsp, rtsps, a real host, RFC 3986
characters only) before anything opens it; ``file://`` only when the configuration's
``server.allow_file_cameras`` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from vms.api import models
from vms.api.deps import CameraDep, ServerDep
from vms.api.errors import ERRORS, model_error
from vms.api.guard import Authenticated, Manager, check_camera
from vms.auth.rbac import Action, Principal
from vms.config import CameraConfig, StreamConfig, StreamName
from vms.errors import Kind, VmsError
from vms.ingest.pyav_source import open_source
from vms.server import Camera, Server
from vms.times import invalid

PREFIX = "/api/v1/cameras"
PAGE_DEFAULT, PAGE_MAX = 100, 1000
# A probe opens a stream from the server: a few at a time, each bounded in time.
PROBE_TIMEOUT_S = 5.0
PROBES_AT_ONCE = 4
_probes = threading.BoundedSemaphore(PROBES_AT_ONCE)

CameraFilter = Callable[[str], bool]


async def camera_filter(who: Authenticated) -> CameraFilter:
    """Which cameras the caller may see in the list: those it may view. (``async``: no
    thread-pool hop, see :mod:`vms.api.deps`.)"""
    return lambda camera_id: who.permitted(Action.VIEW, camera_id)


async def camera_route_access(request: Request, camera_id: str, who: Authenticated) -> Principal:
    """The guard of every one-camera route: reading needs ``view`` on the camera, anything
    else ``manage`` (404 for a camera the caller may not view at all, 403 otherwise)."""
    action = Action.VIEW if request.method in ("GET", "HEAD") else Action.MANAGE
    check_camera(who, action, camera_id)
    return who


collection = APIRouter(prefix=PREFIX, tags=["cameras"], responses=ERRORS)
camera = APIRouter(prefix=PREFIX + "/{camera_id}", tags=["cameras"], responses=ERRORS)


def describe(cam: Camera) -> models.Camera:
    c = cam.config
    rec = cam.recorder
    return models.Camera(
        id=c.id,
        name=c.display_name,
        enabled=c.enabled,
        record=c.record,
        record_streams=list(c.record_streams),
        retention_days=c.retention_days,
        event_retention_days=c.event_retention_days,
        detect=c.detect,
        roots=c.roots,
        main=models.Stream(url=c.main.url, transport=c.main.transport),
        sub=None if c.sub is None else models.Stream(url=c.sub.url, transport=c.sub.transport),
        has_sub_stream=c.sub is not None,
        username=c.username,
        has_password=c.password is not None or c.password_env is not None,
        health=models.CameraHealth.of(cam.health.snapshot()),
        recording=None
        if rec is None
        else models.RecordingStats(
            frames_written=rec.stats.frames_written,
            bytes_written=rec.stats.bytes_written,
            segments=rec.stats.segments,
            frames_dropped=rec.stats.frames_dropped,
        ),
    )


# --- building a configuration from a request ---------------------------------------------


def _origins(cfg: CameraConfig) -> set[tuple[str, str, int | None]]:
    out = set()
    for name in StreamName:
        stream = cfg.stream(name)
        if stream is not None:
            p = urlsplit(stream.url)
            out.add((p.scheme, (p.hostname or "").lower(), p.port))
    return out


def _streams(cfg: CameraConfig) -> dict[str, StreamConfig]:
    return {n.value: s for n in StreamName if (s := cfg.stream(n)) is not None}


def build(
    server: Server, data: dict[str, Any], old: CameraConfig | None, password_sent: bool
) -> CameraConfig:
    """The camera configuration ``data`` describes, checked; ``old`` is the camera it
    replaces (its password is kept when none was sent)."""
    if old is not None and not password_sent:
        data["password"], data["password_env"] = old.password, old.password_env
    try:
        cfg = CameraConfig.model_validate(data)
    except ValidationError as e:
        raise model_error(e) from None
    before = {} if old is None else _streams(old)
    if not server.config.server.allow_file_cameras:
        for name, stream in _streams(cfg).items():
            was = before.get(name)
            if stream.url.startswith("file:") and (was is None or was.url != stream.url):
                raise invalid(
                    f"{name}.url", "file:// cameras are not enabled (server.allow_file_cameras)"
                )
    if (
        old is not None
        and not password_sent
        and old.secret() is not None
        and not _origins(cfg) <= _origins(old)
    ):
        raise invalid(
            "password",
            "send the password again: the camera's scheme, host or port changed, and a stored "
            "password only goes where it went before",
        )
    return cfg


def _fields(body: models.CameraFields) -> dict[str, Any]:
    data = body.model_dump(exclude={"password", "id"})
    data["password"] = body.password
    return data


# --- the collection ----------------------------------------------------------------------


@collection.get("", response_model=models.Page[models.Camera])
async def list_cameras(
    server: ServerDep,
    visible: Annotated[CameraFilter, Depends(camera_filter)],
    limit: Annotated[int, models.limit_query(PAGE_DEFAULT, PAGE_MAX)] = PAGE_DEFAULT,
    cursor: models.Cursor = None,
) -> models.Page[models.Camera]:
    """The cameras, by id. (On the event loop: it reads only what the server holds in
    memory, and waits on nothing.)"""
    after = "" if cursor is None else models.decode_cursor(cursor, {"after": str})["after"]
    cams = sorted(
        (c for c in server.cameras if c.config.id > after and visible(c.config.id)),
        key=lambda c: c.config.id,
    )
    page = cams[:limit]
    more = len(cams) > limit
    nxt = models.encode_cursor({"after": page[-1].config.id}) if more else None
    return models.Page[models.Camera](items=[describe(c) for c in page], next=nxt)


@collection.post(
    "",
    status_code=201,
    response_model=models.Camera,
    responses={409: {"model": ERRORS[400]["model"], "description": "The id is in use"}},
)
def create_camera(
    body: models.CameraCreate, server: ServerDep, response: Response, who: Manager
) -> models.Camera:
    """Add a camera; it starts at once (when enabled) while the others record on."""
    data = _fields(body)
    data["id"] = body.id
    cam = server.add_camera(build(server, data, None, True), actor=who.name)
    response.headers["Location"] = f"{PREFIX}/{body.id}"
    return describe(cam)


@collection.post("/test", response_model=models.ProbeResult)
def probe_camera(body: models.ProbeRequest, server: ServerDep, _: Manager) -> models.ProbeResult:
    """Open a stream as a camera would, for at most a few seconds, and say what it offers:
    codec, resolution, frame rate, audio; or why it cannot be opened."""
    if body.url.startswith("file:") and not server.config.server.allow_file_cameras:
        raise invalid("url", "file:// cameras are not enabled (server.allow_file_cameras)")
    if not _probes.acquire(blocking=False):
        raise VmsError(Kind.UNAVAILABLE, f"{PROBES_AT_ONCE} probes are running; try again")
    try:
        return probe(server, body)
    finally:
        _probes.release()


def probe(server: Server, body: models.ProbeRequest) -> models.ProbeResult:
    """Runs in the request's worker thread (the handler is not async): it blocks up to the
    probe's timeout, never the event loop."""
    cfg = CameraConfig(
        id="probe",
        main=StreamConfig(url=body.url, transport=body.transport),
        username=body.username,
        password=body.password,
    )
    started = time.monotonic()
    try:
        src = open_source(
            cfg.source_url(cfg.main),
            transport=body.transport.value,
            open_timeout=PROBE_TIMEOUT_S,
            read_timeout=PROBE_TIMEOUT_S,
            stop=threading.Event(),
            clock=server.clock,
        )
    except VmsError as e:
        # open_source's reasons never hold the URL (see vms.ingest.pyav_source.describe).
        elapsed = round(time.monotonic() - started, 3)
        return models.ProbeResult(
            ok=False, error=e.message, video=None, audio=None, elapsed_s=elapsed
        )
    try:
        v, a = src.info.video, src.info.audio
        rate = src.vstream.average_rate or src.vstream.guessed_rate
        return models.ProbeResult(
            ok=True,
            error=None,
            video=models.ProbeVideo(
                codec=v.codec,
                width=v.width,
                height=v.height,
                fps=round(float(rate), 3) if rate else None,
            ),
            audio=None
            if a is None
            else models.ProbeAudio(codec=a.codec, sample_rate=a.sample_rate, channels=a.channels),
            elapsed_s=round(time.monotonic() - started, 3),
        )
    finally:
        src.close()


# --- one camera --------------------------------------------------------------------------


@camera.get("", response_model=models.Camera)
def get_camera(cam: CameraDep) -> models.Camera:
    return describe(cam)


@camera.put("", response_model=models.Camera)
def replace_camera(
    body: models.CameraFields, cam: CameraDep, server: ServerDep, who: Authenticated
) -> models.Camera:
    """Replace the camera's whole configuration; it reconnects with it. ``password`` left
    out keeps the stored one."""
    data = _fields(body)
    data["id"] = cam.config.id
    cfg = build(server, data, cam.config, "password" in body.model_fields_set)
    return describe(server.update_camera(cfg, actor=who.name))


@camera.patch("", response_model=models.Camera)
def change_camera(
    body: models.CameraPatch, cam: CameraDep, server: ServerDep, who: Authenticated
) -> models.Camera:
    """Change some of the camera's settings; it reconnects only when something changed."""
    sent = body.model_fields_set
    if sent == {"enabled"} and body.enabled is not None:
        return describe(server.set_enabled(cam.config.id, body.enabled, actor=who.name))
    data = cam.config.model_dump()
    for name in sent - {"password"}:
        data[name] = body.model_dump(include={name})[name]
    if "password" in sent:
        data["password"], data["password_env"] = body.password, None
    cfg = build(server, data, cam.config, "password" in sent)
    if cfg == cam.config:
        return describe(cam)
    return describe(server.update_camera(cfg, actor=who.name))


@camera.delete("", status_code=204, response_class=Response)
def remove_camera(cam: CameraDep, server: ServerDep, who: Authenticated) -> Response:
    """Stop the camera and forget it; its recordings stay until retention removes them."""
    server.remove_camera(cam.config.id, actor=who.name)
    return Response(status_code=204)


@camera.post("/enable", response_model=models.Camera)
def enable_camera(cam: CameraDep, server: ServerDep, who: Authenticated) -> models.Camera:
    return describe(server.set_enabled(cam.config.id, True, actor=who.name))


@camera.post("/disable", response_model=models.Camera)
def disable_camera(cam: CameraDep, server: ServerDep, who: Authenticated) -> models.Camera:
    return describe(server.set_enabled(cam.config.id, False, actor=who.name))
