"""An auth service on a real catalog, and a small app mounting the auth router beside a few
routes guarded the way the API's are."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from tests.conftest import START_US
from vms.api.auth import router
from vms.api.guard import camera_access, media_access, require
from vms.auth import Action, Auth, Principal
from vms.catalog.store import Catalog
from vms.clock import SimulatedClock
from vms.config import Config
from vms.errors import Kind, VmsError

PASSWORD = "correct horse battery"
# Cheap argon2 parameters: the tests hash and verify hundreds of times.
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}


def config(data_dir: Path, auth: dict[str, Any] | None = None, **server: Any) -> Config:
    return Config.model_validate(
        {"data_dir": str(data_dir), "auth": FAST | (auth or {}), "server": server}
    )


class AuthRig:
    def __init__(self, url: str, data_dir: Path, **server: Any) -> None:
        self.clock = SimulatedClock(START_US)
        self.catalog = Catalog(url)
        self.config = config(data_dir, **server)
        self.auth = Auth(self.catalog, self.config, self.clock)

    def user(self, name: str, role: str = "viewer", cameras: dict[str, Any] | None = None) -> int:
        """A user with ``PASSWORD``; ``cameras`` maps camera ids to grant actions (None: all
        the role's)."""
        from vms.auth.store import Grant

        user = self.auth.add_user(name, PASSWORD, role)
        grants = [
            Grant(cam, None if acts is None else frozenset(Action(a) for a in acts))
            for cam, acts in (cameras or {}).items()
        ]
        self.auth.store.set_grants(user.id, grants)
        return user.id

    def close(self) -> None:
        self.catalog.close()


def make_app(auth: Auth) -> FastAPI:
    app = FastAPI()
    app.state.server = types.SimpleNamespace(auth=auth)

    @app.exception_handler(VmsError)
    async def _vms_error(_: Request, exc: VmsError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.kind.http_status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = VmsError(Kind.INVALID_ARGUMENT, "invalid request").to_dict()
        return JSONResponse(body, status_code=400)

    app.include_router(router)

    def _out(p: Principal) -> dict[str, Any]:
        return {"user": p.name, "via": p.via}

    @app.get("/api/v1/cameras/{camera_id}")
    def camera(camera_id: str, p: Annotated[Principal, Depends(camera_access(Action.VIEW))]) -> Any:
        return _out(p) | {"camera": camera_id}

    @app.get("/api/v1/cameras/{camera_id}/export")
    def export(
        camera_id: str, p: Annotated[Principal, Depends(camera_access(Action.EXPORT))]
    ) -> Any:
        return _out(p)

    @app.get("/api/v1/cameras/{camera_id}/playback")
    def playback(
        camera_id: str, p: Annotated[Principal, Depends(camera_access(Action.PLAYBACK))]
    ) -> Any:
        return _out(p)

    @app.get("/api/v1/cameras/{camera_id}/live.mp4")
    def live(camera_id: str, p: Annotated[Principal, Depends(media_access(Action.LIVE))]) -> Any:
        return _out(p)

    @app.post("/api/v1/cameras")
    def add_camera(p: Annotated[Principal, Depends(require(Action.MANAGE))]) -> Any:
        return _out(p)

    @app.get("/api/v1/system")
    def system(p: Annotated[Principal, Depends(require(Action.ADMIN))]) -> Any:
        return _out(p)

    return app


def client(auth: Auth, address: str = "198.51.100.7") -> TestClient:
    return TestClient(make_app(auth), client=(address, 40000))


def login(c: TestClient, name: str, password: str = PASSWORD) -> dict[str, Any]:
    r = c.post("/api/v1/auth/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
