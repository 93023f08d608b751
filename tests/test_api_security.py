"""The API's shape and its web hardening, over a real server recording a real clip: a response
model for every route, pages, hostile camera URLs refused before anything opens, camera names
returned as data, security headers on every answer, and the origin check."""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

import vms.api.cameras
import vms.api.recordings
from tests.support.app import running_app
from tests.support.polling import wait_for
from vms.api.routes import ROUTERS
from vms.api.security import CSP, PAGE_CSP
from vms.clock import SystemClock
from vms.config import from_dict
from vms.errors import VmsError
from vms.ingest.pyav_source import open_source
from vms.server import Server

CAMS = "/api/v1/cameras"
# Media about no camera path: an event's picture; a route that only redirects: its clip.
EVENT_MEDIA = {"/api/v1/events/{event_id}/snapshot.jpg"}
REDIRECTS = {"/api/v1/events/{event_id}/clip"}
DEAD = "rtsp://127.0.0.1:9/x"


def config(tmp: Path, clip: Path | None, **server: Any) -> dict[str, Any]:
    (tmp / "r1").mkdir()
    cams = [] if clip is None else [{"id": "clip", "main": {"url": clip.as_uri()}}]
    return {
        "data_dir": str(tmp / "data"),
        "server": server,
        "recording": {"segment_seconds": 2},
        "storage": {"roots": [{"name": "r1", "path": str(tmp / "r1"), "min_free_bytes": 0}]},
        "cameras": cams,
    }


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]
) -> Iterator[tuple[TestClient, Server]]:
    cfg = from_dict(config(tmp_path_factory.mktemp("api-security"), clips["h264"]))
    with running_app(cfg) as running:
        yield running


@pytest.fixture(scope="module")
def client(app: tuple[TestClient, Server]) -> TestClient:
    return app[0]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL the probe route hands to the demuxer."""
    calls: list[str] = []
    real = vms.api.cameras.open_source

    def spy(url: str, **kw: Any) -> Any:
        calls.append(url)
        return real(url, **kw)

    monkeypatch.setattr(vms.api.cameras, "open_source", spy)
    return calls


# --- the schema ----------------------------------------------------------------------------


def test_every_route_has_a_response_model(client: TestClient) -> None:
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 13
    schema = client.get("/api/openapi.json").json()
    operations = {(m.lower(), p) for p, ops in schema["paths"].items() for m in ops}
    assert operations == {(m.lower(), r.path) for r in routes for m in r.methods}
    for route in routes:
        for method in route.methods:
            op = schema["paths"][route.path][method.lower()]
            ok = {k: v for k, v in op["responses"].items() if k.startswith("2")}
            if route.path in REDIRECTS:  # answers a redirect, no body of its own
                assert not ok and "content" not in op["responses"]["307"], route.path
                continue
            # One success answer, or several with one body (an upsert: 200 changed, 201 made).
            assert ok, (method, route.path, op["responses"])
            status, answer = next(iter(ok.items()))
            assert all(a.get("content") == answer.get("content") for a in ok.values()), route.path
            if status == "204" or route.path.endswith("/whep/{session_id}"):  # WHEP: 200, no body
                assert "content" not in answer, route.path
                continue
            contents = list(answer["content"].items())
            for _media, content in contents:
                assert content["schema"] not in ({}, None), (method, route.path)
            if len(contents) > 1:  # a download that is one of several kinds of file
                assert route.path == "/api/v1/exports/{export_id}/file", route.path
                continue
            ((media, content),) = contents
            if media == "application/json":
                model, shape = route.response_model, content["schema"]
                if typing.get_origin(model) is list:  # a list of one model
                    (model,) = typing.get_args(model)
                    shape = shape["items"]
                assert isinstance(model, type) and issubclass(model, BaseModel), route.path
                assert "$ref" in shape, (method, route.path)
            elif media in (
                "video/mp4",
                "image/jpeg",
                "application/vnd.apple.mpegurl",
                "application/sdp",
            ):  # media, and a WebRTC answer
                assert route.path.startswith(CAMS) or route.path in EVENT_MEDIA, route.path
            else:
                assert media == "text/plain" and route.path == "/metrics"
            if route.path.startswith(CAMS):
                assert "400" in op["responses"] and "404" in op["responses"], route.path
        names = list(route.param_convertors)
        known = {"camera_id", "user_id", "key_id", "name", "segment_id", "export_id",
                 "session_id", "number", "msn", "event_id"}  # fmt: skip
        assert set(names) <= known, route.path


# --- hostile camera URLs -------------------------------------------------------------------

HOSTILE = [
    ("file:///etc/passwd", "not enabled"),
    ("concat:/etc/passwd|/etc/hostname", "scheme 'concat'"),
    ("subfile,,start,0,end,100,,:/etc/passwd", "scheme"),
    ("data:text/plain;base64,AAAA", "scheme"),
    ("pipe:0", "scheme"),
    ("-i rtsp://127.0.0.1/x", "'-'"),
    ("-rtsp://127.0.0.1/x", "'-'"),
    ("rtsp://127.0.0.1/x\n-f null", "characters"),
    ("rtsp://127.0.0.1/x y", "characters"),
    ("rtsp://127.0.0.1/x\x00", "characters"),
    ("rtsp://127.0.0.1/x\x1b[2J", "characters"),
    (" rtsp://127.0.0.1/x", "characters"),
    ("rtsp://;id/x", "host"),
    ("rtsp://$(id)/x", "host"),
    ("rtsp://host;id/x", "host"),
    ("rtsp://`id`/x", "characters"),
    ("rtsp://127.0.0.1/x?a={b}", "characters"),
    ("rtsp://127.0.0.1/caméra", "characters"),
    ("rtsp://a%60id%60/x", "host"),
    ("RTSP://127.0.0.1/x", "scheme"),
    ("http://127.0.0.1/x", "scheme"),
    ("tcp://127.0.0.1:554", "scheme"),
    ("rtmp://127.0.0.1/x", "scheme"),
    ("httpproxy://127.0.0.1/", "scheme"),
    ("rtsp:127.0.0.1/x", "rtsp://"),
    ("rtsp:///x", "no host"),
    ("rtsp://127.0.0.1:99999/x", "port"),
    ("rtsp://[zz::1]/x", "IPv6"),
    ("rtsp://user:pw@127.0.0.1/x", "credentials"),
    ("rtsp://127.0.0.1/" + "a" * 3000, "longer"),
    ("", "empty"),
    ("/etc/passwd", "scheme"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_hostile_camera_urls_are_refused_before_anything_opens(
    app: tuple[TestClient, Server], opened: list[str], url: str, reason: str
) -> None:
    client, server = app
    new = {"id": "hostile", "main": {"url": url}}
    for method, path, body in [
        ("POST", CAMS, new),
        ("POST", CAMS, {"id": "hostile", "main": {"url": DEAD}, "sub": {"url": url}}),
        ("POST", f"{CAMS}/test", {"url": url}),
        ("PATCH", f"{CAMS}/clip", {"main": {"url": url}}),
        ("PUT", f"{CAMS}/clip", {"main": {"url": url}}),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code == 400, (method, path, r.text[:300])
        error = r.json()
        assert error["error"] == "invalid_argument"
        assert reason.lower() in error["message"].lower(), (url, error["message"])
        assert error["details"][0]["field"].endswith("url"), error
        if len(url) > 100:
            assert url not in r.text
    assert opened == []
    assert [c.config.id for c in server.cameras] == ["clip"]
    assert server.camera("clip").config.main.url.startswith("file:")


def test_file_cameras_only_when_enabled(tmp_path: Path, clips: dict[str, Path]) -> None:
    url = clips["h264_small"].as_uri()
    cfg = from_dict(config(tmp_path, None, allow_file_cameras=True))
    with running_app(cfg) as (client, server):
        probe = client.post(f"{CAMS}/test", json={"url": url}).json()
        assert probe["ok"] and probe["video"]["width"] == 160
        assert client.post(CAMS, json={"id": "clip", "main": {"url": url}}).status_code == 201
        wait_for(lambda: server.camera("clip").health.frames > 0, 20, "the clip playing")
        assert client.post(f"{CAMS}/test", json={"url": url + "-gone"}).json()["ok"] is False


def test_a_file_camera_of_the_configuration_may_still_be_renamed(client: TestClient) -> None:
    # Its URL is not new: the API refuses only file:// URLs it would be the one to add.
    r = client.patch(f"{CAMS}/clip", json={"name": "Clip"})
    assert r.status_code == 200 and r.json()["name"] == "Clip"


# --- names are data, headers everywhere ----------------------------------------------------

XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</script><svg onload=alert(1)>",
    "\u2028\u2029'\\\"",
]


def test_script_in_a_camera_name_comes_back_as_data(client: TestClient) -> None:
    for i, name in enumerate(XSS):
        body = {"id": f"xss{i}", "name": name, "enabled": False, "main": {"url": DEAD}}
        assert client.post(CAMS, json=body).status_code == 201
        r = client.get(f"{CAMS}/xss{i}")
        assert r.headers["content-type"] == "application/json"
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert json.loads(r.text)["name"] == name
    for i in range(len(XSS)):
        assert client.delete(f"{CAMS}/xss{i}").status_code == 204


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/nope"), ("DELETE", f"{CAMS}/nope"),
     ("POST", f"{CAMS}/test"), ("GET", "/api/openapi.json")],
)  # fmt: skip
def test_security_headers_on_every_answer(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    assert "access-control-allow-origin" not in r.headers


def test_docs_page_has_a_policy_of_its_own(client: TestClient) -> None:
    r = client.get("/api/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    policy = r.headers["content-security-policy"]
    assert "'sha256-" in policy and "https://cdn.jsdelivr.net" in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert r.headers["x-frame-options"] == "DENY"


def test_the_live_page_has_a_policy_of_its_own(client: TestClient) -> None:
    for path in ["/live", "/live/static/player.js", "/live/static/nope.js"]:
        r = client.get(path)
        policy = r.headers["content-security-policy"]
        assert policy in (PAGE_CSP, CSP), path
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
        assert r.headers["x-frame-options"] == "DENY", path
    assert client.get("/live").headers["content-security-policy"] == PAGE_CSP


# --- the origin check ----------------------------------------------------------------------


def test_state_changes_from_another_origin_are_refused(app: tuple[TestClient, Server]) -> None:
    client, server = app
    body = {"id": "csrf", "enabled": False, "main": {"url": DEAD}}
    for origin in ["http://evil.example", "null", "http://testserver.evil.example",
                   "http://testserver:8080", "https://testserver:80"]:  # fmt: skip
        r = client.post(CAMS, json=body, headers={"Origin": origin})
        assert r.status_code == 403, (origin, r.text)
        assert r.json()["error"] == "forbidden" and "origin" in r.json()["message"]
        assert r.headers["content-security-policy"] == CSP
        assert client.delete(f"{CAMS}/clip", headers={"Origin": origin}).status_code == 403
    assert "csrf" not in {c.config.id for c in server.cameras}
    assert client.get(CAMS, headers={"Origin": "http://evil.example"}).status_code == 200
    # The server's own pages, and clients that are not browsers (no Origin), may.
    r = client.post(CAMS, json=body, headers={"Origin": "http://testserver"})
    assert r.status_code == 201, r.text
    assert client.delete(f"{CAMS}/csrf").status_code == 204


def test_cors_only_for_configured_origins(tmp_path: Path) -> None:
    ui = "https://ui.example:8443"
    cfg = from_dict(config(tmp_path, None, cors_origins=[ui + "/"]))
    with running_app(cfg) as (client, _):
        r = client.options(CAMS, headers={"Origin": ui, "Access-Control-Request-Method": "POST"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ui
        body = {"id": "cors", "enabled": False, "main": {"url": DEAD}}
        r = client.post(CAMS, json=body, headers={"Origin": ui})
        assert r.status_code == 201 and r.headers["access-control-allow-origin"] == ui
        r = client.post(CAMS, json=body, headers={"Origin": "https://other.example"})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


# --- pages ---------------------------------------------------------------------------------


def test_cameras_come_in_pages(client: TestClient) -> None:
    ids = [f"page{i}" for i in range(5)]
    for i in reversed(ids):
        body = {"id": i, "enabled": False, "main": {"url": DEAD}}
        assert client.post(CAMS, json=body).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(CAMS, params=params).json()
        assert len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == sorted(["clip", *ids]) and pages == 3
    for bad in ["x", "e30", "!!", "eyJhZnRlciI6MX0"]:  # not base64 JSON; {}; {"after": 1}
        r = client.get(CAMS, params={"cursor": bad})
        assert r.status_code == 400 and r.json()["details"][0]["field"] == "cursor", bad
    for limit in ("0", "1001", "x"):
        assert client.get(CAMS, params={"limit": limit}).status_code == 400
    for i in ids:
        assert client.delete(f"{CAMS}/{i}").status_code == 204


def test_recordings_come_in_pages(
    tmp_path: Path, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An app of its own: the module's camera is renamed (restarted) by another test.
    with running_app(from_dict(config(tmp_path, clips["h264"]))) as (client, server):
        _recordings_come_in_pages(client, server, monkeypatch)


def _recordings_come_in_pages(
    client: TestClient, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = wait_for(
        lambda: (s := server.catalog.segments(camera_id="clip", state=1))[3:] and s,
        30,
        "four closed segments",
    )
    assert server.catalog.quarantine(closed[1].id)  # two runs: before and after it
    start, end = closed[0].start_us, closed[3].end_us
    rec = f"{CAMS}/clip/recordings"
    whole = client.get(rec, params={"start": start, "end": end}).json()
    assert len(whole["runs"]) == 2 and whole["next"] is None
    first = client.get(rec, params={"start": start, "end": end, "limit": 1}).json()
    assert first["runs"] == whole["runs"][:1] and first["end_us"] == whole["runs"][1]["start_us"]
    second = client.get(rec, params={"cursor": first["next"]}).json()
    assert second["start_us"] == first["end_us"] and second["end_us"] == end
    assert second["runs"] == whole["runs"][1:] and second["next"] is None
    assert first["gaps"] + second["gaps"] == whole["gaps"]
    # At most so many segments read a request: the page stops where the last read one starts.
    monkeypatch.setattr(vms.api.recordings, "SEGMENTS_PER_PAGE", 2)
    cut = client.get(rec, params={"start": start, "end": end}).json()
    assert cut["end_us"] == closed[1].start_us and cut["next"] is not None
    r = client.get(rec, params={"cursor": first["next"], "start": start})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "cursor"
    other = client.get(f"{CAMS}/clip/recordings", params={"cursor": "eyJhIjoxfQ"})
    assert other.status_code == 400


@pytest.mark.parametrize("form", ["concat:{}", "subfile,,start,0,end,0,,:{}", "{}"])
def test_the_demuxer_opens_no_other_protocol_beneath_a_camera(
    form: str, clips: dict[str, Path]
) -> None:
    # A second fence behind the URL check: FFmpeg's protocol whitelist for camera sources. The
    # clip is a playable file: without the whitelist each of these opens it.
    url = form.format(clips["h264_small"])
    with pytest.raises(VmsError):
        open_source(url, open_timeout=2, stop=threading.Event(), clock=SystemClock())
