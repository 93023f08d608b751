"""The FastAPI dependencies that guard the API: who is asking, and may they do this.

- :data:`AuthService` (:func:`auth_service`): the server's :class:`~vms.auth.Auth`, read once
  from ``request.app.state.server.auth``; 503 until the server has opened its catalog.
- :data:`Authenticated` (:func:`authenticated`): the principal of ``Authorization: Bearer
  <access token>`` or ``X-API-Key: <key>``, else 401 with ``WWW-Authenticate: Bearer``. Never
  a cookie: no other site can make a browser send a credential to the API.
- :func:`require` ``(action)``: for routes about no camera; 403 when the principal does not
  hold the action.
- :func:`camera_access` ``(action)``: reads the ``camera_id`` path parameter. A camera the
  principal may not even view is **404**, like a camera that does not exist, so no one learns
  which camera ids exist beyond theirs; one it may view but not act on is **403**.
- :func:`media_access` ``(action)``: as ``camera_access``, also taking a media token in
  ``?token=`` (players that send no header), valid for its camera and action only.
- :func:`any_media_access` ``(action)``: for routes about no camera that a player calls (the
  ICE servers for live view): a principal that holds the action on some camera, by its header,
  or by a media token in ``?token=`` for the camera named in ``?camera_id=``.

They take the connection (``HTTPConnection``), not the request, so that a WebSocket route is
guarded by the same dependencies: a refusal raised before the socket is accepted answers the
handshake with the HTTP error (Starlette's denial response).

All are ``async``: a plain ``def`` dependency costs a hop to a worker thread and back, and a
request passes three or four of them (measured under ``vms bench api``: 1.7 ms of CPU a
request with them in the thread pool, 1.2 ms without). What may wait (a credential looked up in
the catalog) still runs in the thread pool; what only computes (the local key, the permission
checks) runs on the loop.

Each answers the :class:`~vms.auth.Principal` and leaves it in ``request.state.principal``
for whoever records what was done (the audit trail). Use::

    @router.get("/api/v1/cameras/{camera_id}/recordings")
    def recordings(camera_id: str, who: Annotated[Principal, Depends(camera_access(PLAYBACK))])
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Query
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from vms.auth import Action, Auth, Principal, local
from vms.errors import Detail, Kind, VmsError, capped, unauthenticated

API_KEY_HEADER = "x-api-key"


async def auth_service(request: HTTPConnection) -> Auth:
    server = getattr(request.app.state, "server", None)
    auth = getattr(server, "auth", None)
    if not isinstance(auth, Auth):
        raise VmsError(Kind.UNAVAILABLE, "the server is starting: try again in a moment")
    return auth


AuthService = Annotated[Auth, Depends(auth_service)]


async def authenticated(request: HTTPConnection, auth: AuthService) -> Principal:
    key = request.headers.get(API_KEY_HEADER)
    if key is not None and "authorization" not in request.headers and local.is_local(key.strip()):
        principal = auth.api_key(key.strip())  # compared in memory: no need of a thread
        request.state.principal = principal
        return principal
    return await run_in_threadpool(authenticate, request, auth)


def authenticate(request: HTTPConnection, auth: Auth) -> Principal:
    """The principal of the request's header (may read the catalog: run in a thread)."""
    header = request.headers.get("authorization")
    key = request.headers.get(API_KEY_HEADER)
    if header is not None and key is not None:
        raise unauthenticated("send one credential: Authorization or X-API-Key, not both")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("the Authorization header must be 'Bearer <access token>'")
        principal = auth.bearer(token.strip())
    elif key is not None:
        principal = auth.api_key(key.strip())
    else:
        raise unauthenticated("authentication required")
    request.state.principal = principal
    return principal


Authenticated = Annotated[Principal, Depends(authenticated)]


def forbidden(action: Action) -> VmsError:
    return VmsError(Kind.FORBIDDEN, f"not permitted: {action.value}")


def require(action: Action) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the principal, if it holds ``action`` at all; else 403."""

    async def guard(principal: Authenticated) -> Principal:
        if not principal.holds(action):
            raise forbidden(action)
        return principal

    guard.__name__ = f"require_{action.value}"
    return guard


def check_camera(principal: Principal, action: Action, camera_id: str) -> None:
    """Nothing if ``principal`` may do ``action`` on the camera; 404 if it may not even view
    it (as if the camera did not exist), 403 if it may view it but not do ``action``."""
    if principal.permitted(action, camera_id):
        return
    if action is not Action.VIEW and principal.permitted(Action.VIEW, camera_id):
        raise forbidden(action)
    raise VmsError(
        Kind.NOT_FOUND, f"no camera {capped(camera_id)}", [Detail("camera_id", "unknown camera")]
    )


CameraIdParam = Annotated[str, Path(max_length=64, description="a camera id")]


def camera_access(action: Action) -> Callable[[str, Principal], Awaitable[Principal]]:
    """A dependency for routes with a ``{camera_id}`` path parameter (see the module)."""

    async def guard(camera_id: CameraIdParam, principal: Authenticated) -> Principal:
        check_camera(principal, action, camera_id)
        return principal

    guard.__name__ = f"camera_{action.value}"
    return guard


def media_access(
    action: Action,
) -> Callable[[HTTPConnection, str, Auth, str | None], Awaitable[Principal]]:
    """As :func:`camera_access`, also accepting a media token in ``?token=``. A request that
    sends a header is judged by its header; the query's token is then ignored."""

    async def guard(
        request: HTTPConnection,
        camera_id: CameraIdParam,
        auth: AuthService,
        token: Annotated[str | None, Query(max_length=4096, description="a media token")] = None,
    ) -> Principal:
        headers = request.headers
        if token is not None and "authorization" not in headers and API_KEY_HEADER not in headers:
            principal = await run_in_threadpool(auth.media, token, camera_id, action)
            request.state.principal = principal
        else:
            principal = await authenticated(request, auth)
        check_camera(principal, action, camera_id)
        return principal

    guard.__name__ = f"media_{action.value}"
    return guard


def any_media_access(
    action: Action,
) -> Callable[[HTTPConnection, Auth, str | None, str | None], Awaitable[Principal]]:
    """As :func:`require`, also accepting a media token in ``?token=``, valid for the camera
    named in ``?camera_id=`` (see the module)."""

    async def guard(
        request: HTTPConnection,
        auth: AuthService,
        token: Annotated[str | None, Query(max_length=4096, description="a media token")] = None,
        camera_id: Annotated[
            str | None, Query(max_length=64, description="the camera the media token is for")
        ] = None,
    ) -> Principal:
        headers = request.headers
        if token is not None and "authorization" not in headers and API_KEY_HEADER not in headers:
            if camera_id is None:
                raise unauthenticated("a media token goes with the camera_id it is for")
            principal = await run_in_threadpool(auth.media, token, camera_id, action)
            request.state.principal = principal
            check_camera(principal, action, camera_id)  # the grants of now, not the token's
            return principal
        principal = await authenticated(request, auth)
        if not principal.holds(action):
            raise forbidden(action)
        return principal

    guard.__name__ = f"any_media_{action.value}"
    return guard


# Ready-made guards for the commonest cases.
Admin = Annotated[Principal, Depends(require(Action.ADMIN))]
Manager = Annotated[Principal, Depends(require(Action.MANAGE))]
