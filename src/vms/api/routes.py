"""The HTTP API, assembled: ``create_api(lifespan)`` builds the FastAPI application from the
routers, the one error mapping and the web hardening.

Routers (each a module of this package):

- :data:`vms.api.system.router`: ``/healthz``, ``/api/v1/storage``, ``/api/v1/system``,
  ``/metrics``;
- :data:`vms.api.cameras.collection`: ``/api/v1/cameras`` (list, add) and
  ``/api/v1/cameras/test`` (probe a stream): no camera named;
- :data:`vms.api.cameras.camera`: ``/api/v1/cameras/{camera_id}`` (read, replace, change,
  remove, enable, disable): one camera, named by ``camera_id``;
- :data:`vms.api.recordings.router`: ``/api/v1/cameras/{camera_id}/recordings``;
- :data:`vms.api.thumbnails.router`: ``/api/v1/cameras/{camera_id}/thumbnail.jpg`` and
  ``/thumbnails`` (a media token in ``?token=`` is accepted);
- :data:`vms.api.timeline.router`: ``/api/v1/timeline`` (several cameras);
- :data:`vms.api.playback.router`: ``/api/v1/cameras/{camera_id}/playback``, ``playback.mp4``
  and ``segments/{segment_id}.mp4`` (a media token will do);
- :data:`vms.api.hls.router`: ``/api/v1/cameras/{camera_id}/playback.m3u8`` (HLS, byte ranges
  of the stored files);
- :data:`vms.api.whep.router`: ``/api/v1/cameras/{camera_id}/whep`` (live over WebRTC, WHEP)
  and its sessions (a media token will do); :data:`vms.api.whep.ice_router`:
  ``/api/v1/live/ice-servers`` (the STUN and TURN servers, for anyone who may watch live);
- :data:`vms.api.live_hls.router`: ``/api/v1/cameras/{camera_id}/live.m3u8``,
  ``live/master.m3u8`` and the live parts, segments and init segments (LL-HLS; a media token
  will do);
- :data:`vms.api.exports.router`: ``/api/v1/exports`` (export jobs, their files, the public
  key): each route checks ``export`` on every camera a job names;
- :data:`vms.api.live.router`: ``/api/v1/cameras/{camera_id}/live.ws`` (live view over a
  WebSocket, a media token will do);
- :data:`vms.api.events.router`: ``/api/v1/events`` (the list: the cameras the caller may
  view), one event, its snapshot and its clip (per route: an event of a camera the caller may
  not view is 404; a media token will do for the snapshot and the clip);
- :data:`vms.api.events.camera_router`: ``/api/v1/cameras/{camera_id}/motion``;
- :data:`vms.api.views.router`: ``/api/v1/views`` (the web client's saved walls: the caller's
  own, each camera in them judged again when read).

Outside the API, not in :data:`ROUTERS`: the API docs page, :data:`vms.api.pages.router`,
the live player page (``/live``, ``/live/static/*``), and :data:`vms.api.ui.router`, the web
client (``/`` and ``/ui/*``): static files, no data, no credentials.

Handlers take what they use as dependencies (:mod:`vms.api.deps`); the app holds one thing,
``app.state.server``, which ``vms.app.create_app`` sets. A guard is a dependency added where a
router is included here (``include_router(router, dependencies=[...])``): a camera guard on the
two camera-scoped routers receives ``camera_id`` on every one of their routes.

Times: see :mod:`vms.times` (``<name>_us`` and ``<name>`` in ISO 8601 UTC). Lists: see
:class:`vms.api.models.Page`. Errors: see :mod:`vms.api.errors`. Headers and the origin check:
see :mod:`vms.api.security`. Camera passwords are never part of a response.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from vms.api import (
    audit,
    auth,
    cameras,
    errors,
    events,
    exports,
    hls,
    live,
    live_hls,
    pages,
    playback,
    recordings,
    security,
    system,
    thumbnails,
    timeline,
    ui,
    views,
    whep,
)
from vms.api.guard import any_media_access, camera_access, media_access, require
from vms.auth.rbac import Action
from vms.config import ServerConfig

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

DOCS_URL = "/api/docs"
OPENAPI_URL = "/api/openapi.json"

# Each router with its guard, where the router has one (system: health open, storage and the
# server's figures for any user, metrics for admins; the camera collection: any user sees the
# cameras it may view, adding and probing need manage; auth: login, refresh, logout and setup
# open, the rest per route; exports: per route, export on every camera a job names, a media
# token for a one-camera download). Nothing else answers without credentials
# (tests/test_api_guard.py walks the table).
GUARDED: tuple[tuple[APIRouter, list[Any]], ...] = (
    (system.router, []),
    (cameras.collection, []),
    (cameras.camera, [Depends(cameras.camera_route_access)]),
    (recordings.router, [Depends(camera_access(Action.PLAYBACK))]),
    (thumbnails.router, [Depends(media_access(Action.PLAYBACK))]),
    (timeline.router, []),  # several cameras a request: each checked by the handler
    (playback.router, [Depends(media_access(Action.PLAYBACK))]),
    (hls.router, [Depends(media_access(Action.PLAYBACK))]),
    (live.router, [Depends(media_access(Action.LIVE))]),  # a WebSocket: refused before accept
    (live_hls.router, [Depends(media_access(Action.LIVE))]),
    (auth.router, []),
    (audit.router, [Depends(require(Action.ADMIN))]),
    (exports.router, []),
    (whep.router, [Depends(media_access(Action.LIVE))]),
    (events.router, []),  # per route: view on the event's camera (a media token will do)
    (events.camera_router, [Depends(camera_access(Action.PLAYBACK))]),
    (whep.ice_router, [Depends(any_media_access(Action.LIVE))]),
    (views.router, [Depends(require(Action.VIEW))]),  # each user's own views only
)
ROUTERS = tuple(router for router, _ in GUARDED)


def create_api(lifespan: Lifespan | None = None, *, config: ServerConfig | None = None) -> FastAPI:
    """The API; ``vms.app.create_app`` gives it the lifespan that runs the server and sets
    ``app.state.server``. ``config`` gives the allowed cross-origin callers."""
    config = config or ServerConfig()
    app = FastAPI(
        title="vms",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_URL,
        lifespan=lifespan,
    )
    errors.install(app)
    for router, guard in GUARDED:
        app.include_router(router, dependencies=guard)
    app.openapi = _without_422(app)  # type: ignore[method-assign]

    page = bytes(get_swagger_ui_html(openapi_url=OPENAPI_URL, title="vms API").body).decode()
    policy = security.docs_csp(page)

    @app.get(DOCS_URL, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": policy})

    app.include_router(pages.router)
    app.include_router(ui.router)
    security.install(app, config.cors_origins)
    return app


# FastAPI documents a 422 (its HTTPValidationError) on every route taking a parameter or a
# body; this app answers those refusals 400 in the one error body (vms.api.errors), which each
# such route declares itself.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def _without_422(app: FastAPI) -> Callable[[], dict[str, Any]]:
    make = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = make()  # FastAPI keeps it (app.openapi_schema): changed in place, once
        if fresh:
            for ops in schema["paths"].values():
                for op in ops.values():
                    op["responses"].pop("422", None)
            defined = schema.get("components", {}).get("schemas", {})
            for name in _FASTAPI_VALIDATION:
                defined.pop(name, None)
        return schema

    return openapi
