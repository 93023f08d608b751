"""Saved views over the API (``/api/v1/views``), through the running app: each user saves,
lists, replaces and deletes their own views only; a camera the user may not view is refused on
save and, when a grant is withdrawn or a camera removed after saving, comes back as an empty
tile; bad input is a clear 400; the store keeps to its limits on SQLite and PostgreSQL."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import vms.auth.views
from tests.support.app import running_app
from vms.auth.store import Grant
from vms.auth.views import MAX_VIEWS, ViewStore
from vms.catalog.store import Catalog
from vms.config import CameraConfig, from_dict
from vms.errors import Kind, VmsError
from vms.server import Server

PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
DEAD = "rtsp://127.0.0.1:9/x"  # the cameras are disabled: nothing is opened
VIEWS = "/api/v1/views"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Server]]:
    tmp = tmp_path_factory.mktemp("views")
    (tmp / "r1").mkdir()
    cams = [{"id": c, "enabled": False, "main": {"url": DEAD}} for c in ("a", "b", "c")]
    cfg = from_dict({
        "data_dir": str(tmp / "data"),
        "storage": {"roots": [{"name": "r1", "path": str(tmp / "r1"), "min_free_bytes": 0}]},
        "auth": FAST,
        "cameras": cams,
    })  # fmt: skip
    with running_app(cfg) as running:
        yield running


def user(app: tuple[TestClient, Server], name: str, cameras: list[str], role: str = "viewer"
         ) -> TestClient:  # fmt: skip
    """A client logged in as a new user of ``role`` granted ``cameras``."""
    client, server = app
    made = server.auth.add_user(name, PASSWORD, role)
    server.auth.store.set_grants(made.id, [Grant(c, None) for c in cameras])
    r = client.post("/api/v1/auth/login", json={"name": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return TestClient(client.app, headers={"Authorization": f"Bearer {r.json()['access_token']}"})


def names(client: TestClient) -> list[str]:
    r = client.get(VIEWS)
    assert r.status_code == 200, r.text
    assert r.json()["next"] is None
    return [v["name"] for v in r.json()["items"]]


def test_a_user_saves_lists_replaces_and_deletes_views(app: tuple[TestClient, Server]) -> None:
    ann = user(app, "ann", ["a", "b"])
    assert names(ann) == []
    r = ann.put(f"{VIEWS}/Lobby", json={"layout": "4", "cameras": ["b", None, "a"]})
    assert r.status_code == 201, r.text
    saved = r.json()
    assert saved["name"] == "Lobby" and saved["layout"] == "4"
    assert saved["cameras"] == ["b", None, "a", None]  # padded to the layout's tiles
    assert saved["updated"].endswith("Z") and saved["updated_us"] > 0
    assert ann.get(f"{VIEWS}/Lobby").json() == saved
    # Names are the user's own text: spaces, accents, markup kept as data.
    odd = "Entrada <b>&amp; pátio?#"
    path = f"{VIEWS}/{urllib.parse.quote(odd, safe='')}"
    assert ann.put(path, json={"layout": "1", "cameras": ["a"]}).status_code == 201
    assert names(ann) == [odd, "Lobby"]
    assert ann.get(path).json()["name"] == odd
    r = ann.put(f"{VIEWS}/Lobby", json={"layout": "9", "cameras": ["a"]})
    assert r.status_code == 200, r.text  # replaced, not made
    assert r.json()["cameras"] == ["a"] + [None] * 8
    assert ann.delete(f"{VIEWS}/Lobby").status_code == 204
    assert ann.get(f"{VIEWS}/Lobby").status_code == 404
    assert ann.delete(f"{VIEWS}/Lobby").status_code == 404
    assert names(ann) == [odd]


def test_views_are_each_users_own(app: tuple[TestClient, Server]) -> None:
    bea = user(app, "bea", ["a"])
    cal = user(app, "cal", ["a"])
    assert bea.put(f"{VIEWS}/mine", json={"layout": "1", "cameras": ["a"]}).status_code == 201
    assert cal.get(f"{VIEWS}/mine").status_code == 404
    assert cal.delete(f"{VIEWS}/mine").status_code == 404
    assert names(cal) == []
    # The same name is another view for another user.
    assert cal.put(f"{VIEWS}/mine", json={"layout": "4", "cameras": []}).status_code == 201
    assert bea.get(f"{VIEWS}/mine").json()["layout"] == "1"
    assert cal.get(f"{VIEWS}/mine").json()["cameras"] == [None] * 4


def test_a_camera_the_user_may_not_view_is_refused_and_never_shown(
    app: tuple[TestClient, Server],
) -> None:
    client, server = app
    dee = user(app, "dee", ["a", "b"])
    for camera in ("c", "nope"):  # not hers, and not there at all: the same answer
        r = dee.put(f"{VIEWS}/x", json={"layout": "4", "cameras": ["a", camera]})
        assert r.status_code == 404, r.text
        assert r.json()["message"] == f"no camera {camera!r}"
    assert dee.get(f"{VIEWS}/x").status_code == 404  # nothing was saved
    assert dee.put(f"{VIEWS}/x", json={"layout": "4", "cameras": ["a", "b"]}).status_code == 201

    # Her grant on b withdrawn after saving: b is an empty tile, in the list and alone.
    uid = next(u.id for u in server.auth.store.users() if u.name == "dee")
    server.auth.store.set_grants(uid, [Grant("a", None)])
    assert dee.get(f"{VIEWS}/x").json()["cameras"] == ["a", None, None, None]
    assert dee.get(VIEWS).json()["items"][0]["cameras"] == ["a", None, None, None]
    server.auth.store.set_grants(uid, [Grant("a", None), Grant("b", None)])
    assert dee.get(f"{VIEWS}/x").json()["cameras"] == ["a", "b", None, None]

    # A camera removed after saving: an empty tile, even for whoever sees every camera.
    admin = user(app, "eve", [], role="admin")
    assert admin.put(f"{VIEWS}/all", json={"layout": "4", "cameras": ["c", "a"]}).status_code == 201
    config = server.camera("c").config
    assert client.delete("/api/v1/cameras/c").status_code == 204
    try:
        assert admin.get(f"{VIEWS}/all").json()["cameras"] == [None, "a", None, None]
    finally:
        server.add_camera(CameraConfig.model_validate(config.model_dump()))
    assert admin.get(f"{VIEWS}/all").json()["cameras"] == ["c", "a", None, None]


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("v", {"layout": "5", "cameras": []}, "layout"),
    ("v", {"layout": 4, "cameras": []}, "layout"),
    ("v", {"layout": "1", "cameras": ["a", "b"]}, "cameras"),
    ("v", {"layout": "16", "cameras": ["a"] * 17}, "cameras"),
    ("v", {"layout": "4", "cameras": ["A/../b"]}, "cameras"),
    ("v", {"layout": "4", "cameras": [3]}, "cameras"),
    ("v", {"layout": "4"}, ""),  # cameras may be left out: an empty wall (not bad)
    ("v", {"layout": "4", "cameras": [], "owner": 1}, "owner"),
    ("v", {"cameras": []}, "layout"),
    ("x" * 65, {"layout": "4", "cameras": []}, "name"),
    ("tab%09here", {"layout": "4", "cameras": []}, "name"),
    ("nul%00", {"layout": "4", "cameras": []}, "name"),
    ("%20%20", {"layout": "4", "cameras": []}, "name"),
]


@pytest.mark.parametrize(("name", "body", "field"), BAD)
def test_bad_input_is_a_clear_400(
    app: tuple[TestClient, Server], name: str, body: dict[str, Any], field: str
) -> None:
    who = f"bad{BAD.index((name, body, field))}"
    ann = user(app, who, ["a", "b"])
    r = ann.put(f"{VIEWS}/{name}", json=body)
    if not field:
        assert r.status_code == 201, r.text
        return
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_argument"
    assert field in r.text, r.text
    assert names(ann) == []


def test_the_local_key_has_no_views_and_no_credential_none(
    app: tuple[TestClient, Server],
) -> None:
    client, _ = app  # the local administration key
    r = client.get(VIEWS)
    assert r.status_code == 403 and "local key" in r.json()["message"], r.text
    assert client.put(f"{VIEWS}/v", json={"layout": "1"}).status_code == 403
    bare = TestClient(client.app)
    assert bare.get(VIEWS).status_code == 401
    assert bare.put(f"{VIEWS}/v", json={"layout": "1"}).status_code == 401


def test_a_user_without_view_gets_403(app: tuple[TestClient, Server]) -> None:
    _, server = app
    server.auth.store.put_role("nothing", frozenset())
    nobody = user(app, "nobody", ["a"], role="nothing")
    assert nobody.get(VIEWS).status_code == 403


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ViewStore]:
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    catalog = Catalog(url)
    yield ViewStore(catalog)
    catalog.close()


def _user_row(store: ViewStore, name: str) -> int:
    from vms.auth.store import AuthStore

    return AuthStore(store.catalog).add_user(name, "hash", "viewer", 1).id


def test_the_store_limits_views_and_they_go_with_their_user(
    store: ViewStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vms.auth.store import AuthStore

    uid = _user_row(store, "u1")
    other = _user_row(store, "u2")
    monkeypatch.setattr(vms.auth.views, "MAX_VIEWS", 3)
    for i in range(3):
        store.put(uid, f"v{i}", "4", ["a"], 10 + i)
    with pytest.raises(VmsError) as e:
        store.put(uid, "v3", "4", [], 20)
    assert e.value.kind is Kind.CONFLICT
    view, made = store.put(uid, " v1 ", "1", [], 30)  # replacing one is not another
    assert not made and view.name == "v1" and view.cameras == (None,)
    assert store.get(uid, "v1").updated_us == 30
    store.put(other, "v0", "16", [], 40)
    AuthStore(store.catalog).delete_user(uid)
    assert store.list(uid) == []
    assert [v.name for v in store.list(other)] == ["v0"]
    assert MAX_VIEWS >= 50  # the real limit leaves room for a control room's walls
