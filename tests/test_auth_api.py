"""The auth routes and guards over HTTP (FastAPI's TestClient on a real SQLite catalog, one
flow on PostgreSQL): logins and the rate limit, trusted proxies, sessions by cookie, the RBAC
matrix, API keys and media tokens through the guards, and no secret in a log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.auth_app import PASSWORD, AuthRig, bearer, client, login
from vms.api.auth import REFRESH_COOKIE


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[AuthRig]:
    r = AuthRig(f"sqlite:///{tmp_path / 'catalog.db'}", tmp_path / "data",
                trusted_proxies=["10.0.0.0/8"])  # fmt: skip
    yield r
    r.close()


def _error(r: Any, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["error"] == kind, body
    return body


# --- logins --------------------------------------------------------------------------------


def test_login_ok_bad_and_disabled(rig: AuthRig) -> None:
    rig.user("root", "admin")
    uid = rig.user("guard", "viewer", {"door": None})
    c = client(rig.auth)
    body = login(c, "guard")
    assert body["token_type"] == "bearer" and body["expires_in"] == 600
    assert body["user"]["name"] == "guard" and "password_hash" not in body["user"]
    r = c.post("/api/v1/auth/login", json={"name": "guard", "password": PASSWORD})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{REFRESH_COOKIE}=") and "HttpOnly" in cookie
    assert "Path=/api/v1/auth" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie, "plain HTTP from a client that is no proxy"
    assert r.headers["cache-control"] == "no-store"

    me = c.get("/api/v1/auth/me", headers=bearer(body["access_token"])).json()
    assert me["user"]["id"] == uid and me["via"] == "bearer" and me["actions"] == ["live", "view"]
    assert me["cameras"] == {"live": ["door"], "view": ["door"]}

    for name, password in (("guard", "wrong password!!"), ("nobody", PASSWORD)):
        r = c.post("/api/v1/auth/login", json={"name": name, "password": password})
        body = _error(r, 401, "unauthenticated")
        assert body["message"] == "wrong user name or password"
        assert r.headers["www-authenticate"] == "Bearer"
    _error(c.post("/api/v1/auth/login", json={"name": "guard"}), 400, "invalid_argument")

    admin = login(c, "root")["access_token"]
    r = c.patch(f"/api/v1/auth/users/{uid}", json={"disabled": True}, headers=bearer(admin))
    assert r.status_code == 200 and r.json()["disabled"] is True
    r = c.post("/api/v1/auth/login", json={"name": "guard", "password": PASSWORD})
    assert _error(r, 401, "unauthenticated")["message"] == "wrong user name or password"


def test_https_behind_a_trusted_proxy_makes_the_cookie_secure(rig: AuthRig) -> None:
    rig.user("guard")
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    r = client(rig.auth, "10.1.2.3").post(
        "/api/v1/auth/login", json={"name": "guard", "password": PASSWORD}, headers=headers
    )
    assert "Secure" in r.headers["set-cookie"]
    r = client(rig.auth, "198.51.100.7").post(
        "/api/v1/auth/login", json={"name": "guard", "password": PASSWORD}, headers=headers
    )
    assert "Secure" not in r.headers["set-cookie"], "anyone can send X-Forwarded-Proto"


def _fail(c: Any, name: str, **headers: str) -> Any:
    return c.post("/api/v1/auth/login", json={"name": name, "password": "wrong password!!"},
                  headers=headers)  # fmt: skip


def test_failed_logins_are_limited_per_address_and_per_name(rig: AuthRig) -> None:
    rig.user("guard")
    rig.user("other")
    c = client(rig.auth, "198.51.100.7")
    for _ in range(5):
        _error(_fail(c, "guard"), 401, "unauthenticated")
    r = c.post("/api/v1/auth/login", json={"name": "guard", "password": PASSWORD})
    _error(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "60", "the right password is not even tried"
    _error(_fail(c, "other"), 429, "rate_limited")  # the address is blocked, for any name
    # From another address: the name is blocked too (a botnet has many addresses).
    c2 = client(rig.auth, "198.51.100.8")
    _error(c2.post("/api/v1/auth/login", json={"name": "guard", "password": PASSWORD}), 429,
           "rate_limited")  # fmt: skip
    login(c2, "other")

    rig.clock.advance(30)
    assert int(_fail(c, "other").headers["retry-after"]) == 30
    rig.clock.advance(30)
    login(c, "guard")  # the window has passed


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(rig: AuthRig) -> None:
    rig.user("guard")
    # A client that is no proxy sends a new X-Forwarded-For with each guess: ignored.
    direct = client(rig.auth, "198.51.100.7")
    for i in range(5):
        _error(_fail(direct, f"n{i}", **{"X-Forwarded-For": f"203.0.113.{i}"}), 401,
               "unauthenticated")  # fmt: skip
    _error(_fail(direct, "n9", **{"X-Forwarded-For": "203.0.113.99"}), 429, "rate_limited")

    # Behind the proxy each client is counted by its own address, read from the right.
    proxy = client(rig.auth, "10.0.0.1")
    for i in range(5):
        xff = "1.2.3.4, 203.0.113.50, 10.9.9.9"  # spoofed, client, inner proxy
        _error(_fail(proxy, f"m{i}", **{"X-Forwarded-For": xff}), 401, "unauthenticated")
    _error(_fail(proxy, "m9", **{"X-Forwarded-For": "9.9.9.9, 203.0.113.50"}), 429,
           "rate_limited")  # fmt: skip
    r = proxy.post("/api/v1/auth/login", json={"name": "guard", "password": PASSWORD},
                   headers={"X-Forwarded-For": "203.0.113.51"})  # fmt: skip
    assert r.status_code == 200, "another client behind the same proxy"


# --- sessions ------------------------------------------------------------------------------


def test_refresh_by_cookie_rotates_and_logout_ends_it(rig: AuthRig) -> None:
    rig.user("guard")
    c = client(rig.auth)
    first = login(c, "guard")
    r = c.post("/api/v1/auth/refresh")  # the cookie from the login
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert c.cookies[REFRESH_COOKIE] == second["refresh_token"]
    r = c.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    _error(r, 401, "unauthenticated")  # reuse: the family is ended
    _error(c.post("/api/v1/auth/refresh"), 401, "unauthenticated")

    login(c, "guard")
    r = c.post("/api/v1/auth/logout")
    assert r.status_code == 204 and REFRESH_COOKIE not in c.cookies
    _error(c.post("/api/v1/auth/refresh"), 401, "unauthenticated")
    bare = client(rig.auth)
    _error(bare.post("/api/v1/auth/refresh"), 401, "unauthenticated")


def test_a_password_change_ends_the_access_tokens(rig: AuthRig) -> None:
    rig.user("guard")
    c = client(rig.auth)
    token = login(c, "guard")["access_token"]
    body = {"current_password": PASSWORD, "new_password": "a new long password"}
    r = c.post("/api/v1/auth/password", json=body | {"current_password": "not it at all"},
               headers=bearer(token))  # fmt: skip
    _error(r, 403, "forbidden")
    r = c.post("/api/v1/auth/password", json=body | {"new_password": "short"},
               headers=bearer(token))  # fmt: skip
    _error(r, 400, "invalid_argument")
    assert c.post("/api/v1/auth/password", json=body, headers=bearer(token)).status_code == 204
    _error(c.get("/api/v1/auth/me", headers=bearer(token)), 401, "unauthenticated")
    login(c, "guard", "a new long password")


def test_credentials_malformed_or_missing(rig: AuthRig) -> None:
    rig.user("guard")
    c = client(rig.auth)
    token = login(c, "guard")["access_token"]
    for headers in ({}, {"Authorization": token}, {"Authorization": "Basic Z3Vh"},
                    {"Authorization": "Bearer "}, {"X-API-Key": "nope"},
                    {"Authorization": f"Bearer {token}", "X-API-Key": "vms_x"}):  # fmt: skip
        r = c.get("/api/v1/auth/me", headers=headers)
        _error(r, 401, "unauthenticated")
        assert r.headers["www-authenticate"] == "Bearer"
    c.cookies.clear()
    c.cookies.set(REFRESH_COOKIE, login(c, "guard")["refresh_token"])
    _error(c.get("/api/v1/auth/me"), 401, "unauthenticated")  # a cookie authenticates nothing


# --- who may do what ----------------------------------------------------------------------


def test_the_rbac_matrix(rig: AuthRig) -> None:
    rig.user("root", "admin")
    rig.user("op", "operator", {"a": None})
    rig.user("watch", "viewer", {"a": None, "b": None})
    rig.user("mixed", "operator", {"a": None, "b": ["view", "live"]})
    c = client(rig.auth)
    tok = {n: bearer(login(c, n)["access_token"]) for n in ("root", "op", "watch", "mixed")}

    def code(user: str, path: str, method: str = "GET") -> int:
        return c.request(method, path, headers=tok[user]).status_code

    cams = "/api/v1/cameras"
    # Granted camera A only: B does not exist as far as op can tell.
    assert code("op", f"{cams}/a") == 200 and code("op", f"{cams}/a/export") == 200
    r = c.get(f"{cams}/b", headers=tok["op"])
    assert _error(r, 404, "not_found")["message"] == "no camera 'b'"
    _error(c.get(f"{cams}/b/export", headers=tok["op"]), 404, "not_found")
    # A viewer sees and watches, never exports: 403, since it knows the camera.
    assert code("watch", f"{cams}/b") == 200
    _error(c.get(f"{cams}/b/export", headers=tok["watch"]), 403, "forbidden")
    _error(c.get(f"{cams}/b/playback", headers=tok["watch"]), 403, "forbidden")
    # A grant narrows the role on its camera.
    assert code("mixed", f"{cams}/a/export") == 200 and code("mixed", f"{cams}/b") == 200
    assert code("mixed", f"{cams}/b/export") == 403
    # Routes about no camera.
    for user in ("op", "watch", "mixed"):
        assert code(user, "/api/v1/system") == 403 and code(user, cams, "POST") == 403
        assert code(user, "/api/v1/auth/users") == 403
    # The admin can do everything, on every camera.
    for path in (f"{cams}/zzz", f"{cams}/a/export", f"{cams}/b/playback", "/api/v1/system",
                 "/api/v1/auth/users"):  # fmt: skip
        assert code("root", path) == 200, path
    assert code("root", cams, "POST") == 200


def test_admin_manages_users_roles_and_grants(rig: AuthRig) -> None:
    rig.user("root", "admin")
    c = client(rig.auth)
    h = bearer(login(c, "root")["access_token"])
    r = c.post("/api/v1/auth/users", json={"name": "ann", "password": PASSWORD, "role": "viewer"},
               headers=h)  # fmt: skip
    assert r.status_code == 201
    ann = r.json()["id"]
    r = c.post("/api/v1/auth/users", json={"name": "ann", "password": PASSWORD, "role": "viewer"},
               headers=h)  # fmt: skip
    _error(r, 409, "conflict")
    r = c.put("/api/v1/auth/roles/investigator", json={"actions": ["view", "playback", "export"]},
              headers=h)  # fmt: skip
    assert r.status_code == 201 and r.json()["actions"] == ["export", "playback", "view"]
    _error(c.put("/api/v1/auth/roles/admin", json={"actions": []}, headers=h), 409, "conflict")
    _error(c.put("/api/v1/auth/roles/Bad!", json={"actions": []}, headers=h), 400,
           "invalid_argument")  # fmt: skip
    _error(c.put("/api/v1/auth/roles/x", json={"actions": ["fly"]}, headers=h), 400,
           "invalid_argument")  # fmt: skip
    assert c.patch(f"/api/v1/auth/users/{ann}", json={"role": "investigator"},
                   headers=h).status_code == 200  # fmt: skip
    r = c.put(f"/api/v1/auth/users/{ann}/grants",
              json={"grants": [{"camera_id": "a", "actions": None}]}, headers=h)  # fmt: skip
    assert r.json() == {"grants": [{"camera_id": "a", "actions": None}]}
    ha = bearer(login(c, "ann")["access_token"])
    assert c.get("/api/v1/cameras/a/export", headers=ha).status_code == 200
    _error(c.get("/api/v1/cameras/b", headers=ha), 404, "not_found")
    names = [r["name"] for r in c.get("/api/v1/auth/roles", headers=h).json()]
    assert names == ["admin", "investigator", "operator", "viewer"]
    _error(c.delete("/api/v1/auth/roles/investigator", headers=h), 409, "conflict")
    assert c.delete(f"/api/v1/auth/users/{ann}", headers=h).status_code == 204
    assert c.delete("/api/v1/auth/roles/investigator", headers=h).status_code == 204
    _error(c.get(f"/api/v1/auth/users/{ann}", headers=h), 404, "not_found")
    _error(c.get("/api/v1/cameras/a", headers=ha), 401, "unauthenticated")  # deleted user


# --- API keys and media tokens --------------------------------------------------------------


def test_api_keys_through_the_guards(rig: AuthRig) -> None:
    rig.user("root", "admin")
    rig.user("op", "operator", {"a": None, "b": None})
    c = client(rig.auth)
    h = bearer(login(c, "op")["access_token"])
    r = c.post("/api/v1/auth/api-keys", json={"name": "nvr", "actions": ["view", "export"],
                                              "cameras": ["a"]}, headers=h)  # fmt: skip
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    key, kid = r.json()["key"], r.json()["api_key"]["id"]
    k = {"X-API-Key": key}
    assert c.get("/api/v1/cameras/a/export", headers=k).json() == {"user": "op", "via": "api_key"}
    _error(c.get("/api/v1/cameras/b", headers=k), 404, "not_found")  # outside its cameras
    _error(c.get("/api/v1/cameras/a/playback", headers=k), 403, "forbidden")  # its actions
    listed = c.get("/api/v1/auth/api-keys", headers=h).json()
    assert [x["prefix"] for x in listed] == [key.split("_")[1]] and key not in str(listed)
    # A key cannot make keys or change the password; a user cannot make keys for another.
    _error(c.post("/api/v1/auth/api-keys", json={"name": "x", "actions": ["view"]}, headers=k),
           403, "forbidden")  # fmt: skip
    r = c.post("/api/v1/auth/api-keys", json={"name": "x", "actions": ["view"], "user_id": 1},
               headers=h)  # fmt: skip
    _error(r, 403, "forbidden")
    _error(c.get("/api/v1/system", headers=k), 403, "forbidden")
    rig.user("other", "viewer")
    _error(c.delete(f"/api/v1/auth/api-keys/{kid}", headers=bearer(login(c, "other")[
        "access_token"])), 404, "not_found")  # fmt: skip
    hr = bearer(login(c, "root")["access_token"])
    assert c.delete(f"/api/v1/auth/api-keys/{kid}", headers=hr).status_code == 204
    _error(c.get("/api/v1/cameras/a", headers=k), 401, "unauthenticated")


def test_media_tokens_for_players(rig: AuthRig) -> None:
    rig.user("watch", "viewer", {"a": None, "b": None})
    c = client(rig.auth)
    h = bearer(login(c, "watch")["access_token"])
    r = c.post("/api/v1/auth/media-token", json={"camera_id": "a", "action": "live"}, headers=h)
    assert r.status_code == 200 and r.json()["expires_in"] == 60
    token = r.json()["token"]
    bare = client(rig.auth)
    r = bare.get(f"/api/v1/cameras/a/live.mp4?token={token}")
    assert r.json() == {"user": "watch", "via": "media"}
    _error(bare.get(f"/api/v1/cameras/b/live.mp4?token={token}"), 401, "unauthenticated")
    _error(bare.get(f"/api/v1/cameras/a?token={token}"), 401, "unauthenticated")  # no query here
    _error(bare.get("/api/v1/auth/me", headers=bearer(token)), 401, "unauthenticated")
    assert bare.get("/api/v1/cameras/a/live.mp4", headers=h).json()["via"] == "bearer"
    r = c.post("/api/v1/auth/media-token", json={"camera_id": "a", "action": "export"}, headers=h)
    _error(r, 403, "forbidden")
    r = c.post("/api/v1/auth/media-token", json={"camera_id": "z", "action": "live"}, headers=h)
    _error(r, 404, "not_found")
    rig.clock.advance(65)
    _error(bare.get(f"/api/v1/cameras/a/live.mp4?token={token}"), 401, "unauthenticated")


def test_setup_creates_the_first_admin_once(rig: AuthRig) -> None:
    token = rig.auth.new_setup_token()
    c = client(rig.auth)
    body = {"token": token, "name": "root", "password": PASSWORD}
    _error(c.post("/api/v1/auth/setup", json=body | {"token": "x" * 43}), 401, "unauthenticated")
    r = c.post("/api/v1/auth/setup", json=body)
    assert r.status_code == 201 and r.json()["role"] == "admin"
    _error(c.post("/api/v1/auth/setup", json=body | {"name": "again"}), 401, "unauthenticated")
    assert login(c, "root")["user"]["role"] == "admin"


def test_no_password_or_token_reaches_a_log_or_an_error(
    rig: AuthRig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.user("root", "admin")
    c = client(rig.auth)
    secrets: list[str] = [PASSWORD, "wrong password!!", "a new long password"]
    with caplog.at_level(logging.DEBUG):
        s = login(c, "root")
        secrets += [s["access_token"], s["refresh_token"]]
        bodies = [_fail(c, "root").text]
        r = c.post("/api/v1/auth/api-keys", json={"name": "k", "actions": ["view"]},
                   headers=bearer(s["access_token"]))  # fmt: skip
        secrets.append(r.json()["key"])
        bodies.append(c.get("/api/v1/auth/me", headers={"X-API-Key": secrets[-1] + "x"}).text)
        bodies.append(c.post("/api/v1/auth/refresh",
                             json={"refresh_token": s["refresh_token"] + "x"}).text)  # fmt: skip
        bodies.append(c.get("/api/v1/auth/me", headers=bearer(s["access_token"] + "x")).text)
        c.post("/api/v1/auth/password", json={"current_password": PASSWORD,
               "new_password": "a new long password"}, headers=bearer(s["access_token"]))  # fmt: skip
    text = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(bodies)
    assert "login refused for 'root'" in text and "logged in" in text
    for secret in secrets:
        assert secret not in text


@pytest.mark.usefixtures("postgres_url")
def test_one_flow_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    r = AuthRig(postgres_url, tmp_path / "data")
    try:
        r.user("root", "admin")
        r.user("op", "operator", {"a": None})
        c = client(r.auth)
        h = bearer(login(c, "op")["access_token"])
        assert c.get("/api/v1/cameras/a/export", headers=h).status_code == 200
        _error(c.get("/api/v1/cameras/b", headers=h), 404, "not_found")
        assert c.post("/api/v1/auth/refresh").status_code == 200
    finally:
        r.close()
