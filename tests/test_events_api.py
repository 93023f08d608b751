"""The events API on the real app, with users and grants: what a user granted one camera sees of
another's events (nothing: 404 as for an unknown id), the list's filters and pages, snapshot
bytes, the clip's redirect to a playable range of a real recording, media tokens, the motion
route, and bad parameters answered 400 in the one error body."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.support.app import running_app
from tests.support.polling import wait_for
from vms.auth.rbac import Action
from vms.auth.store import Grant
from vms.config import from_dict
from vms.events.model import Box, Change, Event, EventMessage
from vms.events.store import MINUTE_US, SECOND_US
from vms.server import Server

EVENTS = "/api/v1/events"
PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
JPEG = b"\xff\xd8\xff\xe0 a picture \xff\xd9"
BOXED = b"\xff\xd8\xff\xe0 a picture with a box \xff\xd9"


class App:
    def __init__(self, client: TestClient, server: Server) -> None:
        self.client, self.server = client, server
        self.t0 = server.catalog.segments(camera_id="a", state=1)[0].start_us

    def user(self, name: str, role: str, camera: str) -> TestClient:
        user = self.server.auth.add_user(name, PASSWORD, role)
        self.server.auth.store.set_grants(user.id, [Grant(camera, None)])
        r = self.client.post("/api/v1/auth/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        return TestClient(self.client.app, headers={"Authorization": f"Bearer {token}"})

    def event(self, camera: str, offset_s: float, length_s: float | None = 1.0,
              label: str = "person", zones: tuple[str, ...] = (), snapshot: bool = True,
              ) -> Event:  # fmt: skip
        start = self.t0 + int(offset_s * SECOND_US)
        end = None if length_s is None else start + int(length_s * SECOND_US)
        e = Event(
            id=str(uuid.uuid4()), camera_id=camera, label=label, start_us=start, end_us=end,
            score=0.7, top_score=0.8, box=Box(0.1, 0.2, 0.5, 0.9), zones=list(zones),
            path=[(start, Box(0.1, 0.2, 0.5, 0.9))], snapshot_us=start if snapshot else None,
        )  # fmt: skip
        self.server.event_store.write(EventMessage(Change.NEW, e))
        if snapshot:
            self.server.snapshots.write(camera, e.id, JPEG, BOXED)
        return e


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Iterator[App]:
    tmp = tmp_path_factory.mktemp("events-api")
    (tmp / "r1").mkdir()
    cfg = from_dict(
        {
            "data_dir": str(tmp / "data"),
            "recording": {"segment_seconds": 2},
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "r1"), "min_free_bytes": 0}]},
            "auth": FAST,
            "events": {"pre_s": 1, "post_s": 2},
            "cameras": [
                {"id": "a", "main": {"url": clips["h264"].as_uri()}},
                {"id": "b", "enabled": False, "main": {"url": "rtsp://127.0.0.1:9/b"}},
            ],
        }
    )
    with running_app(cfg) as (client, server):
        wait_for(lambda: server.catalog.segments(camera_id="a", state=1), 20, "a closed segment")
        yield App(client, server)


def error(r: Any, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "message", "details"} and body["error"] == kind, body
    return body


def test_a_user_granted_one_camera_sees_nothing_of_another(app: App) -> None:
    mine = app.event("a", 0.5)
    theirs = app.event("b", 0.6)
    alice = app.user("alice", "operator", "a")
    listed = alice.get(EVENTS).json()
    assert [e["id"] for e in listed["items"]] == [mine.id] and listed["next"] is None
    everything = {e["id"] for e in app.client.get(EVENTS).json()["items"]}  # the local key
    assert {mine.id, theirs.id} <= everything

    unknown = str(uuid.uuid4())
    for path in ["", "/snapshot.jpg", "/snapshot.jpg?box=true", "/clip"]:
        hidden = alice.get(f"{EVENTS}/{theirs.id}{path}", follow_redirects=False)
        missing = alice.get(f"{EVENTS}/{unknown}{path}", follow_redirects=False)
        error(hidden, 404, "not_found")
        error(missing, 404, "not_found")
        # The very same answer, but for the id it repeats: nothing tells "exists" apart.
        assert hidden.json()["message"].replace(theirs.id, "X") == missing.json()[
            "message"
        ].replace(unknown, "X"), path
        assert "b" not in hidden.json()["message"].replace(theirs.id, "")
    body = error(alice.get(EVENTS, params={"camera": "a,b"}), 404, "not_found")
    assert [d["field"] for d in body["details"]] == ["camera"] and "b" in body["message"]
    error(alice.get("/api/v1/cameras/b/motion"), 404, "not_found")

    # Her own: the event, its pictures, its clip.
    got = alice.get(f"{EVENTS}/{mine.id}").json()
    assert got["id"] == mine.id and got["camera"] == "a" and got["active"] is False
    assert got["start_us"] == mine.start_us and got["start"].endswith("Z")
    assert got["snapshot_url"] == f"{EVENTS}/{mine.id}/snapshot.jpg"
    assert got["snapshot_box_url"] == f"{EVENTS}/{mine.id}/snapshot.jpg?box=true"
    assert (got["clip_start_us"], got["clip_end_us"]) == (
        mine.start_us - SECOND_US, (mine.end_us or 0) + 2 * SECOND_US,
    )  # fmt: skip
    assert got["path"] == [[mine.start_us, [0.1, 0.2, 0.5, 0.9]]]
    pic = alice.get(got["snapshot_url"])
    assert pic.status_code == 200 and pic.content == JPEG
    assert pic.headers["content-type"] == "image/jpeg"
    assert alice.get(got["snapshot_box_url"]).content == BOXED


def test_the_clip_redirects_to_a_playable_range(app: App) -> None:
    e = app.event("a", 0.2)
    alice = app.user("carol", "operator", "a")
    r = alice.get(f"{EVENTS}/{e.id}/clip", follow_redirects=False)
    assert r.status_code == 307, r.text
    location = r.headers["location"]
    assert location == alice.get(f"{EVENTS}/{e.id}").json()["clip_url"]
    parts = urlsplit(location)
    assert parts.path == "/api/v1/cameras/a/playback.mp4"
    query = parse_qs(parts.query)
    assert query == {"start": [str(e.start_us - SECOND_US)],
                     "end": [str((e.end_us or 0) + 2 * SECOND_US)], "stream": ["main"]}  # fmt: skip
    played = alice.get(f"{EVENTS}/{e.id}/clip")  # followed, with her header
    assert played.status_code == 200 and played.headers["content-type"] == "video/mp4"
    assert played.content[4:8] == b"ftyp" and b"moof" in played.content
    # A viewer sees the event and its picture, but may not play it back: 403, not 404.
    victor = app.user("victor", "viewer", "a")
    assert victor.get(f"{EVENTS}/{e.id}").status_code == 200
    assert victor.get(f"{EVENTS}/{e.id}/snapshot.jpg").status_code == 200
    error(victor.get(f"{EVENTS}/{e.id}/clip", follow_redirects=False), 403, "forbidden")
    error(victor.get("/api/v1/cameras/a/motion"), 403, "forbidden")


def test_media_tokens_for_pictures_and_clips(app: App) -> None:
    e = app.event("a", 1.0)
    other = app.event("b", 1.0)
    dave = app.user("dave", "operator", "a")

    def token(action: Action) -> str:
        r = dave.post("/api/v1/auth/media-token", json={"camera_id": "a", "action": action.value})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    bare = TestClient(app.client.app)  # no header: <img src> and <video src>
    error(bare.get(f"{EVENTS}/{e.id}/snapshot.jpg"), 401, "unauthenticated")
    view = token(Action.VIEW)
    r = bare.get(f"{EVENTS}/{e.id}/snapshot.jpg", params={"token": view, "box": "true"})
    assert r.status_code == 200 and r.content == BOXED
    # The same token for another camera's event, or for an id that does not exist: one answer.
    a = bare.get(f"{EVENTS}/{other.id}/snapshot.jpg", params={"token": view})
    b = bare.get(f"{EVENTS}/{uuid.uuid4()}/snapshot.jpg", params={"token": view})
    assert error(a, 401, "unauthenticated") == error(b, 401, "unauthenticated")
    error(bare.get(f"{EVENTS}/{e.id}/clip", params={"token": view}), 401, "unauthenticated")
    play = token(Action.PLAYBACK)
    r = bare.get(f"{EVENTS}/{e.id}/clip", params={"token": play}, follow_redirects=False)
    assert r.status_code == 307 and parse_qs(urlsplit(r.headers["location"]).query)["token"] == [
        play
    ]
    followed = bare.get(r.headers["location"])
    assert followed.status_code == 200 and followed.headers["content-type"] == "video/mp4"


def test_list_filters_and_pages(app: App) -> None:
    made = [
        app.event("a", 100 + k, label="car" if k % 2 else "dog", zones=("gate_1",) if k < 2 else ())
        for k in range(5)
    ]
    ongoing = app.event("a", 200, length_s=None, label="cat")
    window = {"start": str(made[0].start_us), "end": str(ongoing.start_us + 1)}

    def ids(**params: Any) -> list[str]:
        r = app.client.get(EVENTS, params=window | params)
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()["items"]]

    newest = [e.id for e in reversed(made)]
    assert ids() == [ongoing.id, *newest]
    assert ids(label="car") == [made[3].id, made[1].id]
    assert ids(zone="gate_1") == [made[1].id, made[0].id]
    assert ids(active="true") == [ongoing.id]
    assert ids(active="false") == newest
    assert ids(camera="a", label="cat") == [ongoing.id]
    assert ids(end=str(made[2].start_us)) == [made[1].id, made[0].id]
    seen, cursor = [], None
    while True:
        params = window | {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = app.client.get(EVENTS, params=params).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [ongoing.id, *newest]
    assert app.client.get(f"{EVENTS}/{ongoing.id}").json()["end_us"] is None
    # No snapshot yet: no URL, and the picture is a 404.
    plain = app.event("a", 300, snapshot=False)
    assert app.client.get(f"{EVENTS}/{plain.id}").json()["snapshot_url"] is None
    error(app.client.get(f"{EVENTS}/{plain.id}/snapshot.jpg"), 404, "not_found")


def test_motion_second_by_second_and_in_buckets(app: App) -> None:
    minute = app.t0 - app.t0 % MINUTE_US
    app.server.event_store.add_motion("a", minute, bytes([0] * 10 + [40, 0, 90] + [0] * 47))
    start, end = minute, minute + MINUTE_US
    r = app.client.get("/api/v1/cameras/a/motion", params={"start": start, "end": end})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seconds"] == [[minute + 10 * SECOND_US, 40], [minute + 12 * SECOND_US, 90]]
    assert body["buckets"] is None and body["camera"] == "a"
    r = app.client.get(
        "/api/v1/cameras/a/motion", params={"start": start, "end": end, "buckets": 6}
    )
    body = r.json()
    assert body["buckets"] == [0, 90, 0, 0, 0, 0] and body["bucket_s"] == 10.0
    assert body["seconds"] is None


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        (EVENTS, {"limit": 0}, "limit"),
        (EVENTS, {"limit": 100_000}, "limit"),
        (EVENTS, {"start": "yesterday"}, "start"),
        (EVENTS, {"start": "2026-01-02", "end": "2026-01-01"}, "end"),
        (EVENTS, {"cursor": "not-a-cursor"}, "cursor"),
        (EVENTS, {"label": "<script>"}, "label"),
        (EVENTS, {"zone": "a zone"}, "zone"),
        (EVENTS, {"camera": "a,,b"}, "camera"),
        (EVENTS, {"active": "maybe"}, "active"),
        (EVENTS, {"strat": "1"}, "strat"),
        (f"{EVENTS}/not-a-uuid", {}, "event_id"),
        (f"{EVENTS}/{uuid.UUID(int=1)}/snapshot.jpg", {"box": "sideways"}, "box"),
        ("/api/v1/cameras/a/motion", {"start": "0", "end": str(3 * 86_400_000_000)}, "end"),
        ("/api/v1/cameras/a/motion", {"buckets": 0}, "buckets"),
        ("/api/v1/cameras/a/motion", {"start": "2", "end": "1"}, "end"),
    ],
)
def test_bad_parameters_are_400_in_the_one_body(
    app: App, path: str, params: dict[str, Any], field: str
) -> None:
    body = error(app.client.get(path, params=params), 400, "invalid_argument")
    assert field in [d["field"] for d in body["details"]], body
