"""Cameras managed through the HTTP API while the server records: added, changed, replaced,
disabled, enabled and removed against a stand-in camera that checks the password, with no
disturbance to the camera beside it; the password never comes back in any answer or log record;
a stream is probed before it is added."""

from __future__ import annotations

import base64
import logging
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.app import running_app
from tests.support.polling import free_port, wait_for
from vms.config import from_dict
from vms.server import Camera, Server
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(
    not gstreamer_available(), reason="GStreamer RTSP server (Debian packages) not installed"
)
USER = "admin"
CANARY = "p@ss:/#?%"
QUOTED = urllib.parse.quote(CANARY, safe="")
FORMS = [
    CANARY,
    QUOTED,
    QUOTED.lower(),
    urllib.parse.quote_plus(CANARY),
    base64.b64encode(f"{USER}:{CANARY}".encode()).decode(),
    "p@ss",
    "p%40ss",
]
CAMS = "/api/v1/cameras"
INGEST = {"open_timeout_s": 5, "stall_timeout_s": 5, "backoff_initial_s": 0.2, "backoff_max_s": 1}


def leaks(text: str) -> list[str]:
    return [f for f in FORMS if f in text]


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinCamera]:
    with StandinCamera(width=320, height=240, keyint=25, user=USER, password=CANARY) as cam:
        yield cam


@pytest.fixture
def app(tmp_path: Path, standin: StandinCamera) -> Iterator[tuple[TestClient, Server]]:
    (tmp_path / "r1").mkdir()
    cfg = from_dict(
        {
            "data_dir": str(tmp_path),
            "storage": {
                "roots": [{"name": "r1", "path": str(tmp_path / "r1"), "min_free_bytes": 0}]
            },
            "recording": {"segment_seconds": 2, "write_backlog_seconds": 600},
            "ingest": INGEST,
            "cameras": [
                {"id": "steady", "main": {"url": standin.url}, "username": USER, "password": CANARY}
            ],
        }
    )
    with running_app(cfg) as running:
        yield running


def written(cam: Camera) -> int:
    return 0 if cam.recorder is None else cam.recorder.stats.frames_written


def state(client: TestClient, camera_id: str) -> str:
    return str(client.get(f"{CAMS}/{camera_id}").json()["health"]["state"])


def test_camera_lifecycle_through_the_api(
    app: tuple[TestClient, Server], standin: StandinCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, server = app
    answers: list[httpx.Response] = []

    def call(method: str, path: str, status: int, **kw: Any) -> Any:
        r = client.request(method, path, **kw)
        answers.append(r)
        assert r.status_code == status, (method, path, r.status_code, r.text[:400])
        return r.json() if r.content else None

    steady = server.camera("steady")
    wait_for(lambda: written(steady) > 0, 30, "the steady camera recording")

    body = {"id": "door", "name": "Door", "main": {"url": standin.url}, "username": USER,
            "password": CANARY}  # fmt: skip
    made = call("POST", CAMS, 201, json=body)
    assert made["has_password"] is True and made["username"] == USER and "password" not in made
    assert made["main"] == {"url": standin.url, "transport": "tcp"}
    wait_for(lambda: state(client, "door") == "online", 30, "the added camera online")
    call("POST", CAMS, 409, json=body)  # the id is in use: the body repeats no password

    # A change without the password keeps it: the camera logs in again and goes on recording.
    before = server.camera("door")
    changed = call("PATCH", f"{CAMS}/door", 200, json={"name": "Front door"})
    assert changed["name"] == "Front door" and changed["has_password"] is True
    after = server.camera("door")
    assert after is not before
    wait_for(lambda: written(after) >= 25, 30, "the changed camera recording with its password")
    # The same again changes nothing: no reconnect.
    call("PATCH", f"{CAMS}/door", 200, json={"name": "Front door"})
    assert server.camera("door") is after

    # A kept password never follows the camera to another host or port.
    elsewhere = f"rtsp://127.0.0.1:{free_port()}/cam"
    refused = call("PATCH", f"{CAMS}/door", 400, json={"main": {"url": elsewhere}})
    assert refused["details"][0]["field"] == "password"
    # Replaced whole, without the password: kept (same host); then with a wrong one: refused.
    put = {"name": "Door", "main": {"url": standin.url}, "username": USER}
    assert call("PUT", f"{CAMS}/door", 200, json=put)["has_password"] is True
    replaced = server.camera("door")
    wait_for(lambda: written(replaced) >= 25, 30, "the replaced camera recording")
    call("PUT", f"{CAMS}/door", 200, json=put | {"password": "wrong"})
    wait_for(lambda: "Unauthorized" in str(server.camera("door").health.last_error), 30, "a 401")
    call("PATCH", f"{CAMS}/door", 200, json={"password": CANARY})
    wait_for(lambda: state(client, "door") == "online", 30, "back online with the password")
    assert call("PATCH", f"{CAMS}/door", 200, json={"password": None})["has_password"] is False
    call("PATCH", f"{CAMS}/door", 200, json={"password": CANARY})

    assert call("POST", f"{CAMS}/door/disable", 200)["health"]["state"] == "disabled"
    assert call("POST", f"{CAMS}/door/enable", 200)["enabled"] is True
    wait_for(lambda: state(client, "door") == "online", 30, "enabled again")
    assert call("PATCH", f"{CAMS}/door", 200, json={"enabled": False})["enabled"] is False

    # Wrong input in the body: a 400 naming the field, the password not repeated.
    too_long = call("PATCH", f"{CAMS}/door", 400, json={"password": CANARY * 100})
    assert too_long["details"][0]["field"] == "password"
    call("PATCH", f"{CAMS}/door", 400, json={"password_env": "HOME"})  # never through the API

    listed = call("GET", CAMS, 200)
    assert [c["id"] for c in listed["items"]] == ["door", "steady"]
    call("GET", "/api/openapi.json", 200)
    r = client.get("/metrics")
    answers.append(r)
    assert 'camera="door"' in r.text

    call("DELETE", f"{CAMS}/door", 204)
    call("GET", f"{CAMS}/door", 404)
    call("DELETE", f"{CAMS}/door", 404)

    # The steady camera beside it: never reconnected, and still recording.
    mark = written(steady)
    wait_for(lambda: written(steady) >= mark + 25, 30, "the steady camera going on")
    assert server.camera("steady") is steady and steady.health.reconnects == 0
    assert steady.recorder is not None and steady.recorder.stats.frames_dropped_backlog == 0

    found = {f"{r.request.method} {r.request.url.path}": leaks(r.text) for r in answers}
    assert not {k: v for k, v in found.items() if v}, found
    records = [f"{r.getMessage()} {r.args!r} {r.__dict__.get('camera')}" for r in caplog.records]
    assert any("door" in line for line in records), "no log record to search"
    assert not [line for line in records if leaks(line)]


def test_probe_says_what_a_stream_offers_and_why_not(
    app: tuple[TestClient, Server], standin: StandinCamera
) -> None:
    client, server = app
    url = f"{CAMS}/test"
    good = client.post(url, json={"url": standin.url, "username": USER, "password": CANARY})
    assert good.status_code == 200, good.text
    body = good.json()
    assert body["ok"] and body["error"] is None and body["audio"] is None
    assert body["video"]["codec"] == "h264"
    assert (body["video"]["width"], body["video"]["height"]) == (320, 240)
    assert body["video"]["fps"] == pytest.approx(25, abs=1)
    wrong = client.post(url, json={"url": standin.url, "username": USER, "password": "nope"})
    assert wrong.status_code == 200 and not wrong.json()["ok"]
    assert "Unauthorized" in wrong.json()["error"] or "401" in wrong.json()["error"]
    anon = client.post(url, json={"url": standin.url})
    assert not anon.json()["ok"]
    gone = client.post(url, json={"url": f"rtsp://127.0.0.1:{free_port()}/x"}).json()
    assert not gone["ok"] and "refused" in gone["error"].lower()
    for r in (good, wrong, anon):
        assert not leaks(r.text), r.text
    assert {c.config.id for c in server.cameras} == {"steady"}, "a probe adds no camera"


def test_detection_settings_go_through_the_api_and_a_patch_keeps_them(
    app: tuple[TestClient, Server], standin: StandinCamera
) -> None:
    client, server = app
    detect = {"fps": 2, "labels": ["person"], "zones": [
        {"name": "gate", "polygon": [[0, 0], [1, 0], [1, 1]], "labels": ["person"]}]}  # fmt: skip
    body = {"id": "gate", "main": {"url": standin.url}, "detect": detect,
            "event_retention_days": 30}  # fmt: skip
    made = client.post(CAMS, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["detect"]["zones"][0]["name"] == "gate"
    assert made.json()["event_retention_days"] == 30
    kept = client.patch(f"{CAMS}/gate", json={"name": "Gate"}).json()
    assert kept["detect"] == made.json()["detect"]
    assert server.camera("gate").config.detect is not None
    bad = client.patch(f"{CAMS}/gate", json={"detect": {"fps": 0}})
    assert bad.status_code == 400 and "fps" in bad.text
    off = client.patch(f"{CAMS}/gate", json={"detect": None}).json()
    assert off["detect"] is None and server.camera("gate").config.detect is None
