"""The one guard, on the whole route table (found from the app, so a new route is covered):
without credentials every route answers 401 but health, login and the first-admin setup; a user
granted one camera gets 404 or 403 on every route of another, and lists show it only its own."""

from __future__ import annotations

import builtins
import os
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from tests.support.app import running_app
from vms.api.routes import ROUTERS
from vms.auth.rbac import Action
from vms.auth.store import Grant
from vms.config import from_dict
from vms.server import Server

OPEN = {
    ("GET", "/healthz"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),  # a refresh token is its credential
    ("POST", "/api/v1/auth/logout"),  # revokes the refresh token it is given, if any
    ("POST", "/api/v1/auth/setup"),  # the one-time setup token is its credential
    ("GET", "/api/v1/auth/setup"),  # says only whether the first admin is still to be made
}
PARAMS = {
    "camera_id": "b", "user_id": "1", "key_id": "1", "name": "custom", "segment_id": "1",
    "export_id": "0123456789abcdef", "session_id": "0123456789abcdef", "number": "1",
    "msn": "1", "event_id": "0123abcd-0000-4000-8000-00000000cafe",
}  # fmt: skip
PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}


def routes() -> list[tuple[str, str]]:
    """(method, path) of every route; "WS" for a WebSocket."""
    out = []
    for router in ROUTERS:
        for r in router.routes:
            if isinstance(r, APIRoute):
                out += [(m, r.path) for m in sorted(r.methods)]
            elif isinstance(r, APIWebSocketRoute):
                out.append(("WS", r.path))
            else:
                raise AssertionError(f"a route of a kind this test does not know: {r}")
    return out


def call(client: TestClient, method: str, path: str, **kw: Any) -> Any:
    """The answer to a request; for a WebSocket, the answer to its handshake when refused (a
    socket that opens fails the test)."""
    if method != "WS":
        return client.request(method, path, json={}, **kw)
    try:
        with client.websocket_connect(path, **kw):
            pass
    except WebSocketDenialResponse as refused:
        return refused
    raise AssertionError(f"the WebSocket {path} opened")


def fill(path: str, camera: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: camera if m[1] == "camera_id" else PARAMS[m[1]], path)


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]
) -> Iterator[tuple[TestClient, Server]]:
    tmp = tmp_path_factory.mktemp("api-guard")
    (tmp / "r1").mkdir()
    cams = [{"id": c, "main": {"url": clips["h264"].as_uri()}} for c in ("a", "b")]
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


def test_the_route_table_is_all_guarded(app: tuple[TestClient, Server]) -> None:
    client, _ = app
    table = routes()
    assert len(table) >= 30 and set(table) >= OPEN
    bare = TestClient(client.app)  # the same app, no credentials
    for method, path in table:
        if (method, path) in OPEN:
            continue
        r = call(bare, method, fill(path, "a"))
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
        assert r.headers.get("www-authenticate") == "Bearer", (method, path)
        assert r.json()["error"] == "unauthenticated"
        # A wrong credential is no credential either.
        bad = call(bare, method, fill(path, "a"), headers={"X-API-Key": "vms_local_x"})
        assert bad.status_code == 401, (method, path)
    assert bare.get("/healthz").status_code == 200


def test_outside_the_guarded_routers_only_docs_and_static_pages(
    app: tuple[TestClient, Server],
) -> None:
    client, _ = app
    served = set()
    for r in client.app.routes:
        router = getattr(r, "original_router", None)  # a router included as it is (FastAPI)
        served |= {x.path for x in router.routes} if router else {r.path}  # type: ignore[attr-defined]
    rest = served - {path for _, path in routes()}
    docs = {"/api/openapi.json", "/api/docs"}
    pages = {"/live", "/live/static/vendor/hls.min.js", "/live/static/{name}"}
    web_client = {"/", "/ui/{path:path}"}
    assert rest == docs | pages | web_client
    bare = TestClient(client.app)
    page = bare.get("/live")
    assert page.status_code == 200 and "<video" in page.text and "token" not in page.text.lower()


def test_a_user_granted_one_camera_sees_nothing_of_another(
    app: tuple[TestClient, Server],
) -> None:
    client, server = app
    user = server.auth.add_user("alice", PASSWORD, "operator")
    server.auth.store.set_grants(user.id, [Grant("a", None)])
    r = client.post("/api/v1/auth/login", json={"name": "alice", "password": PASSWORD})
    assert r.status_code == 200, r.text
    alice = TestClient(client.app, headers={"Authorization": f"Bearer {r.json()['access_token']}"})

    listed = alice.get("/api/v1/cameras").json()["items"]
    assert [c["id"] for c in listed] == ["a"], "the list shows only what she may view"
    camera_routes = [(m, p) for m, p in routes() if "{camera_id}" in p]
    assert len(camera_routes) >= 7
    for method, path in camera_routes:
        r = call(alice, method, fill(path, "b"))
        assert r.status_code == 404, (method, path, r.status_code)  # as if b did not exist
        assert "b" not in {c["id"] for c in listed}
    # On her own camera: what an operator does, yes; managing it, no (403, it exists for her).
    assert alice.get("/api/v1/cameras/a").status_code == 200
    assert alice.get("/api/v1/cameras/a/recordings").status_code == 200
    assert alice.delete("/api/v1/cameras/a").status_code == 403
    assert alice.post("/api/v1/cameras/a/disable").status_code == 403
    # Nothing of the administration.
    for method, path in [("GET", "/api/v1/auth/users"), ("GET", "/api/v1/audit"),
                         ("GET", "/metrics"), ("POST", "/api/v1/cameras")]:  # fmt: skip
        assert alice.request(method, path, json={}).status_code == 403, path
    # Her token is no media token, and a media token for a is refused for b and as a bearer.
    media = alice.post(
        "/api/v1/auth/media-token", json={"camera_id": "a", "action": Action.PLAYBACK.value}
    )
    assert media.status_code == 200, media.text
    token = media.json()["token"]
    as_bearer = TestClient(client.app, headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.get("/api/v1/cameras").status_code == 401
    refused = alice.post(
        "/api/v1/auth/media-token", json={"camera_id": "b", "action": Action.PLAYBACK.value}
    )
    assert refused.status_code == 404


def test_logins_and_changes_are_in_the_audit_trail(app: tuple[TestClient, Server]) -> None:
    client, server = app
    server.auth.add_user("bob", PASSWORD, "viewer")
    assert (
        client.post("/api/v1/auth/login", json={"name": "bob", "password": "x" * 12}).status_code
        == 401
    )
    assert (
        client.post("/api/v1/auth/login", json={"name": "bob", "password": PASSWORD}).status_code
        == 200
    )
    r = client.post(
        "/api/v1/auth/users", json={"name": "carol", "password": PASSWORD, "role": "viewer"}
    )
    assert r.status_code == 201, r.text
    assert client.post("/api/v1/cameras/b/disable").status_code == 200
    assert client.post("/api/v1/cameras/b/enable").status_code == 200
    entries = client.get("/api/v1/audit", params={"limit": 1000}).json()["entries"]
    seen = [(e["actor"], e["action"], e["target"]) for e in entries]
    assert ("bob", "login.failed", "bob") in seen
    assert ("bob", "login.ok", "bob") in seen
    assert ("local", "user.create", "carol") in seen
    assert ("local", "camera.disable", "b") in seen and ("local", "camera.enable", "b") in seen
    assert all(PASSWORD not in str(e) for e in entries)
    verdict = client.get("/api/v1/audit/verify").json()
    assert verdict["ok"] and not verdict["findings"], verdict


def test_oversized_bodies_are_refused_before_they_are_read(app: tuple[TestClient, Server]) -> None:
    client, _ = app
    big = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    r = client.post("/api/v1/cameras", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"x" * 65536

    r = client.post(
        "/api/v1/cameras", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert (
        client.post("/api/v1/auth/login", json={"name": "n" * 100_000, "password": "p"}).status_code
        == 400
    )


TRAVERSAL = [
    "../../../../etc/passwd", "..\\..\\..\\windows\\win.ini", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd", "..%c0%af..%c0%afetc%c0%afpasswd", "/etc/passwd",
    "a\x00b", "." * 5000,
]  # fmt: skip


def test_path_traversal_on_every_parameter_reads_nothing(
    app: tuple[TestClient, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, server = app
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, *a: Any, **kw: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *a, **kw)

    def spy_os_open(path: Any, *a: Any, **kw: Any) -> Any:
        opened.append(str(path))
        return real_os_open(path, *a, **kw)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    schema = client.get("/api/openapi.json").json()
    asked = 0
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]
            for param in params:
                for value in TRAVERSAL:
                    quoted = urllib.parse.quote(value, safe="")
                    url = fill(path, "a")
                    query = {}
                    if param["in"] == "path":
                        url = path.replace("{" + param["name"] + "}", quoted)
                        url = fill(url, "a")
                    else:
                        query[param["name"]] = value
                    r = client.request(method.upper(), url, params=query, json={})
                    asked += 1
                    assert r.status_code < 500, (method, path, param["name"], value, r.text[:200])
    assert asked > 100
    data_dir = str(server.config.data_dir)
    outside = [
        p for p in opened if (not p.startswith(data_dir) and "passwd" in p) or "win.ini" in p
    ]
    assert not outside, outside
