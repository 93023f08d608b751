"""What a handler is given, as FastAPI dependencies.

The application holds one thing, the running :class:`~vms.server.Server`, as
``app.state.server`` (``vms.app.create_app`` sets it); handlers never close over it. Every
camera route names its camera by the path parameter ``camera_id``, and :func:`get_camera`
resolves it, so a guard that needs to know the camera (a user's rights on one camera) is one
more dependency on that parameter, added to the route or the router without touching handlers.

Both are ``async def`` though they never wait: FastAPI runs a plain ``def`` dependency in its
thread pool, a hop to a worker thread and back for each (about a tenth of a millisecond of the
one core each, measured under ``vms bench api``), for what is an attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from starlette.requests import HTTPConnection

from vms.errors import Detail, Kind, VmsError, capped
from vms.server import Camera, Server


async def get_server(request: HTTPConnection) -> Server:
    """The server this app runs; 503 while it is not running (its start failed)."""
    server = getattr(request.app.state, "server", None)
    if not isinstance(server, Server) or not server.started:
        raise VmsError(Kind.UNAVAILABLE, "the server is not running")
    return server


ServerDep = Annotated[Server, Depends(get_server)]

# Not bounded by length: an id no config could hold is still just an unknown camera, a 404.
CameraId = Annotated[str, Path(description="a camera id; unknown ids answer 404")]


def find_camera(server: Server, camera_id: str) -> Camera:
    """The camera, or a 404 that repeats at most :data:`~vms.errors.CAP` characters of the id."""
    for cam in server.cameras:
        if cam.config.id == camera_id:
            return cam
    raise VmsError(
        Kind.NOT_FOUND, f"no camera {capped(camera_id)}", [Detail("camera_id", "unknown camera")]
    )


async def get_camera(server: ServerDep, camera_id: CameraId) -> Camera:
    """The camera the path names (``camera_id``), or 404."""
    return find_camera(server, camera_id)


CameraDep = Annotated[Camera, Depends(get_camera)]
