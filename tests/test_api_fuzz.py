"""Schemathesis over the app's own OpenAPI schema: every operation, a bounded number of
generated requests each (valid and invalid), through the running app. No answer is a 500, and
every answer is one the schema declares (status, content type, body schema).

The schema is read from the running app and each request goes through the same TestClient,
so the server its lifespan started (on the client's event loop) answers; schemathesis's own
ASGI transport would run the lifespan a second time, on another loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.app import running_app
from vms.api.routes import create_api
from vms.auth.rbac import Action, Scope
from vms.config import CameraConfig, from_dict
from vms.server import Server

FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# The fuzzer's own cameras: a generated camera_id is one of these or whatever it made up.
FUZZ_CAMERAS = ("fz1", "fz2")
USER, ROLE, PASSWORD = "fuzz-user", "fuzzrole", "a long enough password"


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]
) -> Iterator[tuple[TestClient, Server]]:
    tmp = tmp_path_factory.mktemp("api-fuzz")
    (tmp / "r1").mkdir()
    cams = [{"id": c, "main": {"url": clips["h264"].as_uri()}} for c in FUZZ_CAMERAS]
    cfg = from_dict(
        {
            "data_dir": str(tmp),
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "r1"), "min_free_bytes": 0}]},
            "auth": FAST,
            "cameras": cams,
        }
    )
    with running_app(cfg) as running:
        yield running


# Collected from the app factory (one test per operation); the running app is checked to serve
# this very schema. (schemathesis's fixture-loaded schemas set a pytest node attribute that
# pytest 9 no longer has.)
SPEC = create_api().openapi()
schema = schemathesis.openapi.from_dict(SPEC)
schemathesis.serializer.alias("application/sdp", "text/plain")  # a WHEP offer is text


def test_the_schema_fuzzed_is_the_one_the_app_serves(app: tuple[TestClient, Server]) -> None:
    client, _ = app
    served = client.get("/api/openapi.json").json()
    assert served == SPEC
    assert len(served["paths"]) >= 25
    # A refused parameter or body answers 400 in the one error body, never FastAPI's 422.
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (method, path)
            if op.get("parameters") or op.get("requestBody"):
                assert "400" in op["responses"], (method, path)


def send(client: TestClient, case: Case) -> Any:
    """The case as schemathesis would send it, through the app's own TestClient (which adds
    the local API key header)."""
    kw = case.as_transport_kwargs(base_url="http://testserver")
    headers = dict(kw.get("headers") or {})
    cookies = kw.get("cookies") or {}
    if cookies:  # httpx deprecates per-request cookies; a header is what they become
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    body: dict[str, Any] = {}
    if "json" in kw:
        body["json"] = kw["json"]
    elif "data" in kw:
        data = kw["data"]
        body["content" if isinstance(data, str | bytes) else "data"] = data
    if "files" in kw:
        body["files"] = kw["files"]
    return client.request(kw["method"], kw["url"], params=kw.get("params"), headers=headers, **body)


class Targets:
    """What a generated path parameter may name besides whatever the fuzzer makes up: the
    fuzzer's own cameras, user, role and API key, made again when an earlier case removed
    them (a DELETE is fuzzed like the rest, and the operations after it still meet a real
    target)."""

    def __init__(self, server: Server, cameras: dict[str, CameraConfig]) -> None:
        self.server, self.cameras = server, cameras

    def camera(self, camera_id: str) -> str:
        if camera_id not in {c.config.id for c in self.server.cameras}:
            self.server.add_camera(self.cameras[camera_id])
        return camera_id

    def user_id(self) -> int:
        auth = self.server.auth
        for u in auth.store.users():
            if u.name == USER:
                return u.id
        return auth.add_user(USER, PASSWORD, "operator").id

    def role(self) -> str:
        if ROLE not in {r.name for r in self.server.auth.store.roles()}:
            self.server.auth.store.put_role(ROLE, frozenset({Action.VIEW}))
        return ROLE

    def key_id(self) -> int:
        owner = self.user_id()
        for k in self.server.auth.store.api_keys(owner):
            if not k.revoked:
                return k.id
        scope = Scope(frozenset({Action.VIEW}), frozenset(FUZZ_CAMERAS))
        return self.server.auth.new_api_key(owner, "fuzz", scope)[1].id

    def resolve(self, name: str, data: st.DataObject) -> str | int | None:
        """A known target for path parameter ``name``, or None: keep what was generated."""
        if name == "camera_id":
            known = data.draw(st.sampled_from((None, *FUZZ_CAMERAS)), label=name)
            return None if known is None else self.camera(known)
        make = {"user_id": self.user_id, "name": self.role, "key_id": self.key_id}.get(name)
        if make is None or not data.draw(st.booleans(), label=name):
            return None
        return make()


@pytest.fixture(scope="module")
def targets(app: tuple[TestClient, Server], clips: dict[str, Path]) -> Targets:
    _, server = app
    cams = {c.config.id: c.config for c in server.cameras if c.config.id in FUZZ_CAMERAS}
    assert set(cams) == set(FUZZ_CAMERAS)
    return Targets(server, cams)


@schema.parametrize()
@schema.given(data=st.data())
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_what_its_schema_says(
    case: Case, data: st.DataObject, app: tuple[TestClient, Server], targets: Targets
) -> None:
    client, _ = app
    for name in list(case.path_parameters or {}):
        known = targets.resolve(name, data)
        if known is not None:
            case.path_parameters[name] = known
    response = send(client, case)
    checks = CHECKS
    if response.status_code == 503 and "503" in case.operation.definition.raw["responses"]:
        checks = CHECKS[1:]  # a documented "not now" (a live route of a disabled camera)
    case.validate_response(response, checks=checks)


def test_the_local_key_is_no_user(app: tuple[TestClient, Server]) -> None:
    """Found by the fuzzer: who-am-I and a media token asked with the local key answered 404
    (no user 0). Who-am-I now says it is the local key; a media token is refused (it names a
    user, checked again at each use)."""
    client, _ = app
    me = client.get("/api/v1/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["user"] is None and me.json()["via"] == "local"
    assert "admin" in me.json()["actions"]
    r = client.post("/api/v1/auth/media-token", json={"camera_id": "fz1", "action": "live"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
