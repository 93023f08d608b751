"""vms.auth on a real catalog (SQLite and PostgreSQL): the migration, users and the rules that
span rows, passwords, tokens and their pitfalls, refresh rotation, API keys, the principal's
answers, and the first admin."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import vms.catalog.store
from tests.support.auth_app import FAST, PASSWORD, AuthRig, config
from vms.auth import ALL, Action, Auth, bootstrap
from vms.auth.credentials import API_AUDIENCE, KEY_FILE, MEDIA_AUDIENCE, Passwords
from vms.auth.rbac import Principal, Scope, effective_grants
from vms.auth.store import Grant
from vms.catalog.store import Catalog
from vms.config import AuthConfig
from vms.errors import Kind, VmsError


def _url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuthRig]:
    r = AuthRig(_url(request, tmp_path), tmp_path / "data")
    yield r
    r.close()


def _raises(kind: Kind, fn: Any, *args: Any, **kwargs: Any) -> VmsError:
    with pytest.raises(VmsError) as e:
        fn(*args, **kwargs)
    assert e.value.kind == kind, e.value.message
    return e.value


# --- the migration -------------------------------------------------------------------------


def _alembic(conn: sa.Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    location = Path(vms.catalog.store.__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(location))
    cfg.attributes["connection"] = conn
    return cfg


@pytest.mark.parametrize("url_kind", ["sqlite", "postgresql"])
def test_the_migration_seeds_the_builtin_roles_and_goes_down_and_up(
    request: pytest.FixtureRequest, tmp_path: Path, url_kind: str
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if url_kind == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic(conn), "0003")
        conn.execute(sa.text("INSERT INTO cameras (id, name) VALUES ('door', 'Door')"))
    engine.dispose()
    cat = Catalog(url)  # migrates to the head
    try:
        with cat.engine.connect() as c:
            assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0007"
            rows = c.execute(sa.text("SELECT name, builtin, permissions FROM roles ORDER BY name"))
            roles = {r.name: (bool(r.builtin), json.loads(r.permissions)) for r in rows}
            assert c.execute(sa.text("SELECT count(*) FROM users")).scalar() == 0
        assert roles == {
            "admin": (True, ["view", "live", "playback", "export", "manage", "admin"]),
            "operator": (True, ["view", "live", "playback", "export"]),
            "viewer": (True, ["view", "live"]),
        }
        with cat.engine.begin() as conn:
            command.downgrade(_alembic(conn), "0003")
        insp = sa.inspect(cat.engine)
        assert not {"users", "roles", "grants", "refresh_tokens", "api_keys"} & set(
            insp.get_table_names()
        )
        assert "cameras" in insp.get_table_names()
        with cat.engine.begin() as conn:
            command.upgrade(_alembic(conn), "head")
        assert {"users", "api_keys"} <= set(sa.inspect(cat.engine).get_table_names())
    finally:
        cat.close()


# --- users ---------------------------------------------------------------------------------


def test_users_names_roles_and_the_last_admin(rig: AuthRig) -> None:
    admin = rig.user("root", "admin")
    viewer = rig.user("guard", "viewer")
    _raises(Kind.CONFLICT, rig.auth.add_user, "guard", PASSWORD, "viewer")
    _raises(Kind.INVALID_ARGUMENT, rig.auth.add_user, "x", PASSWORD, "no-such-role")
    _raises(Kind.INVALID_ARGUMENT, rig.auth.add_user, "y", "short", "viewer")
    assert [u.name for u in rig.auth.store.users()] == ["root", "guard"]

    now = rig.clock.wall_us()
    # The only admin cannot be disabled, demoted or deleted: someone must be able to log in.
    _raises(Kind.CONFLICT, rig.auth.store.update_user, admin, now, disabled=True)
    _raises(Kind.CONFLICT, rig.auth.store.update_user, admin, now, role="viewer")
    _raises(Kind.CONFLICT, rig.auth.store.delete_user, admin)
    assert rig.auth.store.user(admin).role == "admin", "the refused change was rolled back"
    rig.auth.store.update_user(viewer, now, role="admin")
    rig.auth.store.update_user(admin, now, disabled=True)
    assert rig.auth.store.user(admin).disabled

    # A custom role may hold admin; taking admin away from it is refused while it is the last.
    rig.auth.store.put_role("chief", frozenset({Action.ADMIN, Action.VIEW}))
    rig.auth.store.update_user(viewer, now, role="chief")
    _raises(Kind.CONFLICT, rig.auth.store.put_role, "chief", frozenset({Action.VIEW}))
    _raises(Kind.CONFLICT, rig.auth.store.delete_role, "chief")  # held by a user
    _raises(Kind.CONFLICT, rig.auth.store.put_role, "admin", frozenset())
    _raises(Kind.CONFLICT, rig.auth.store.delete_role, "viewer")
    _raises(Kind.NOT_FOUND, rig.auth.store.delete_role, "nobody")


def test_grants_replace_and_cascade(rig: AuthRig) -> None:
    rig.user("root", "admin")
    u = rig.user("guard", "operator", {"door": None, "yard": ["view", "playback"]})
    assert rig.auth.store.grants(u) == [
        Grant("door", None),
        Grant("yard", frozenset({Action.VIEW, Action.PLAYBACK})),
    ]
    _raises(Kind.INVALID_ARGUMENT, rig.auth.store.set_grants, u, [Grant("a", None)] * 2)
    rig.auth.store.set_grants(u, [Grant("*", None)])
    assert rig.auth.store.grants(u) == [Grant("*", None)]
    key, _ = rig.auth.new_api_key(u, "k", Scope(frozenset({Action.VIEW}), ALL))
    rig.auth.store.delete_user(u)
    _raises(Kind.NOT_FOUND, rig.auth.store.grants, u)
    _raises(Kind.UNAUTHENTICATED, rig.auth.api_key, key)


# --- passwords -----------------------------------------------------------------------------


def test_argon2id_and_rehash_on_login_when_the_parameters_change(rig: AuthRig) -> None:
    uid = rig.user("guard")
    stored = rig.auth.store.password_hash(uid)
    assert stored.startswith("$argon2id$v=19$m=8192,t=1,p=1$") and PASSWORD not in stored
    rig.auth.login("guard", PASSWORD, "198.51.100.1")
    assert rig.auth.store.password_hash(uid) == stored, "same parameters: no rehash"
    version = rig.auth.store.user(uid).token_version

    cfg = config(rig.config.data_dir, auth={"argon2_time_cost": 2})
    auth2 = Auth(rig.catalog, cfg, rig.clock)
    auth2.login("guard", PASSWORD, "198.51.100.1")
    new = rig.auth.store.password_hash(uid)
    assert new != stored and new.startswith("$argon2id$v=19$m=8192,t=2,p=1$")
    assert rig.auth.store.user(uid).token_version == version, "a rehash is no new password"
    auth2.login("guard", PASSWORD, "198.51.100.1")  # and the new hash verifies


def test_password_rules() -> None:
    pw = Passwords(AuthConfig(**FAST))
    with pytest.raises(VmsError) as e:
        pw.hash("x" * 11)
    assert e.value.kind == Kind.INVALID_ARGUMENT and "12" in e.value.message
    assert "x" * 11 not in e.value.message
    h = pw.hash("x" * 12)
    assert pw.verify(h, "x" * 12) and not pw.verify(h, "x" * 13)
    assert not pw.verify(None, "x" * 12), "no user: false, after the same work"
    assert not pw.verify(h, "x" * 5000) and not pw.verify("garbage", "x" * 12)


# --- tokens --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(sign(head.encode()))


def _claims(rig: AuthRig, uid: int, **changes: Any) -> dict[str, Any]:
    now = rig.clock.wall_us() // 1_000_000
    c = {"sub": str(uid), "ver": 0, "role": "viewer", "iat": now, "exp": now + 600,
         "iss": "vms", "aud": API_AUDIENCE}  # fmt: skip
    c.update(changes)
    return c


@pytest.mark.filterwarnings("ignore:The HMAC key is")  # the HS512 forgery's key is short
def test_jwt_pitfalls_are_refused(rig: AuthRig) -> None:
    uid = rig.user("guard")
    good, _ = rig.auth.signer.access(uid, 0, "viewer", 600)
    key = (rig.config.data_dir / KEY_FILE).read_bytes()
    assert rig.auth.bearer(good).user_id == uid

    def hs(claims: dict[str, Any], secret: bytes = key, alg: str = "HS256") -> str:
        return jwt.encode(claims, secret, algorithm=alg)

    bad = {
        "alg none": _forge({"alg": "none", "typ": "JWT"}, _claims(rig, uid), lambda _: b""),
        "wrong aud": hs(_claims(rig, uid, aud=MEDIA_AUDIENCE, cam="door", act="live")),
        "wrong iss": hs(_claims(rig, uid, iss="someone-else")),
        "expired": hs(_claims(rig, uid, exp=rig.clock.wall_us() // 1_000_000 - 10)),
        "no exp": hs({k: v for k, v in _claims(rig, uid).items() if k != "exp"}),
        "no ver": hs({k: v for k, v in _claims(rig, uid).items() if k != "ver"}),
        "other key": hs(_claims(rig, uid), b"k" * 32),
        "HS512": hs(_claims(rig, uid), alg="HS512"),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "tampered claims": good.split(".")[0]
        + "."
        + _b64(json.dumps(_claims(rig, uid, role="admin")).encode())
        + "."
        + good.split(".")[2],
        "garbage": "not.a.jwt",
    }
    # HS/RS confusion: a token signed RS256, and one "HS256" signed with the RSA public key
    # as the HMAC secret (what a server that takes the algorithm from the token would accept).
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad["RS256"] = jwt.encode(_claims(rig, uid), private, algorithm="RS256")
    bad["HS256 with the public key"] = _forge(
        {"alg": "HS256", "typ": "JWT"}, _claims(rig, uid),
        lambda msg: hmac.new(public_pem, msg, hashlib.sha256).digest(),
    )  # fmt: skip
    for what, token in bad.items():
        with pytest.raises(VmsError) as e:
            rig.auth.bearer(token)
        assert e.value.kind == Kind.UNAUTHENTICATED, what
        assert e.value.headers == {"WWW-Authenticate": "Bearer"}, what
        assert token not in e.value.message

    rig.clock.advance(600 + 5)
    _raises(Kind.UNAUTHENTICATED, rig.auth.bearer, good)  # expired on the injected clock


def test_the_signing_key_is_a_private_file_made_at_bootstrap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with caplog.at_level(logging.INFO):
            auth = bootstrap(cat, config(tmp_path / "data"))
        key = tmp_path / "data" / KEY_FILE
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
        lines = [r.getMessage() for r in caplog.records if "setup" in r.getMessage()]
        assert len(lines) == 1 and "POST /api/v1/auth/setup" in lines[0]
        token = re.search(r'"token": "([A-Za-z0-9_-]{43})"', lines[0])[1]  # type: ignore[index]
        user = auth.setup(token, "root", PASSWORD)
        assert user.role == "admin"
        _raises(Kind.UNAUTHENTICATED, auth.setup, token, "root2", PASSWORD)  # spent
        caplog.clear()
        with caplog.at_level(logging.INFO):
            bootstrap(cat, config(tmp_path / "data"))
        assert not [r for r in caplog.records if "setup" in r.getMessage()], "a user exists"
    finally:
        cat.close()


def test_the_setup_token_is_once_expires_and_needs_no_user(rig: AuthRig) -> None:
    token = rig.auth.new_setup_token()
    assert token is not None
    _raises(Kind.UNAUTHENTICATED, rig.auth.setup, token + "x", "root", PASSWORD)
    _raises(Kind.INVALID_ARGUMENT, rig.auth.setup, token, "root", "short")
    rig.clock.advance(3600)
    _raises(Kind.UNAUTHENTICATED, rig.auth.setup, token, "root", PASSWORD)  # expired
    token = rig.auth.new_setup_token()
    assert token is not None
    rig.user("cli-admin", "admin")  # made meanwhile by `vms user add`
    _raises(Kind.CONFLICT, rig.auth.setup, token, "root", PASSWORD)
    assert rig.auth.new_setup_token() is None


# --- sessions ------------------------------------------------------------------------------


def test_refresh_rotates_and_a_reused_token_ends_the_family(rig: AuthRig) -> None:
    rig.user("guard")
    first = rig.auth.login("guard", PASSWORD, "a")
    other = rig.auth.login("guard", PASSWORD, "b")  # another login: another family
    second = rig.auth.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    third = rig.auth.refresh(second.refresh_token)
    e = _raises(Kind.UNAUTHENTICATED, rig.auth.refresh, first.refresh_token)  # reuse
    assert "used already" in e.message
    _raises(Kind.UNAUTHENTICATED, rig.auth.refresh, third.refresh_token)  # family revoked
    assert rig.auth.refresh(other.refresh_token).user.name == "guard", "other family lives"
    _raises(Kind.UNAUTHENTICATED, rig.auth.refresh, "made-up")

    late = rig.auth.login("guard", PASSWORD, "a")
    rig.clock.advance(14 * 86_400)
    _raises(Kind.UNAUTHENTICATED, rig.auth.refresh, late.refresh_token)  # expired
    assert rig.auth.store.forget_expired_refresh(rig.clock.wall_us()) >= 1


def test_logout_ends_the_refresh_family_and_password_change_every_token(rig: AuthRig) -> None:
    uid = rig.user("guard")
    s = rig.auth.login("guard", PASSWORD, "a")
    rig.auth.logout(s.refresh_token)
    _raises(Kind.UNAUTHENTICATED, rig.auth.refresh, s.refresh_token)
    assert rig.auth.bearer(s.access_token).user_id == uid, "logout kills no access token"

    s = rig.auth.login("guard", PASSWORD, "a")
    p = rig.auth.bearer(s.access_token)
    media = rig.auth.media_token(p, "door", Action.LIVE)
    _raises(Kind.FORBIDDEN, rig.auth.change_password, p, "wrong password!", "new password 123")
    rig.auth.change_password(p, PASSWORD, "new password 123")
    _raises(Kind.UNAUTHENTICATED, rig.auth.bearer, s.access_token)
    _raises(Kind.UNAUTHENTICATED, rig.auth.refresh, s.refresh_token)
    _raises(Kind.UNAUTHENTICATED, rig.auth.media, media, "door", Action.LIVE)
    _raises(Kind.UNAUTHENTICATED, rig.auth.login, "guard", PASSWORD, "a")
    assert rig.auth.login("guard", "new password 123", "a").user.id == uid


def test_a_disabled_user_is_refused_at_the_next_request(rig: AuthRig) -> None:
    rig.user("root", "admin")
    uid = rig.user("guard")
    s = rig.auth.login("guard", PASSWORD, "a")
    key, _ = rig.auth.new_api_key(uid, "k", Scope(frozenset({Action.VIEW}), ALL))
    rig.auth.store.update_user(uid, rig.clock.wall_us(), disabled=True)
    for fn, arg in ((rig.auth.bearer, s.access_token), (rig.auth.api_key, key),
                    (rig.auth.refresh, s.refresh_token)):  # fmt: skip
        _raises(Kind.UNAUTHENTICATED, fn, arg)
    e = _raises(Kind.UNAUTHENTICATED, rig.auth.login, "guard", PASSWORD, "a")
    assert e.message == "wrong user name or password", "one message: nothing told"


# --- API keys and media tokens --------------------------------------------------------------


def test_api_keys_are_scoped_stored_hashed_and_revocable(rig: AuthRig) -> None:
    uid = rig.user("op", "operator", {"door": None, "yard": None})
    key, row = rig.auth.new_api_key(uid, "nvr", Scope(frozenset({Action.VIEW, Action.EXPORT}),
                                                      frozenset({"door"})))  # fmt: skip
    assert key.startswith(f"vms_{row.prefix}_") and len(key) == 4 + 8 + 1 + 43
    with rig.catalog.engine.connect() as c:
        stored = c.execute(sa.text("SELECT hash, scopes FROM api_keys")).one()
    assert stored.hash == hashlib.sha256(key.encode()).hexdigest() and key not in str(stored)
    p = rig.auth.api_key(key)
    assert (p.via, p.credential_id) == ("api_key", row.id)
    assert p.permitted(Action.EXPORT, "door") and p.permitted(Action.VIEW, "door")
    assert not p.permitted(Action.VIEW, "yard"), "outside the key's cameras"
    assert not p.permitted(Action.LIVE, "door"), "outside the key's actions"
    assert p.cameras_for(Action.VIEW) == {"door"} and p.cameras_for(Action.LIVE) == set()
    assert rig.auth.store.api_key(row.id).last_used_us == rig.clock.wall_us()
    for forged in (key[:-1] + ("A" if key[-1] != "A" else "B"), "vms_deadbeef_" + "A" * 43,
                   "vms_x", ""):  # fmt: skip
        _raises(Kind.UNAUTHENTICATED, rig.auth.api_key, forged)
    rig.auth.store.revoke_api_key(row.id)
    _raises(Kind.UNAUTHENTICATED, rig.auth.api_key, key)


def test_a_media_token_is_for_its_camera_and_action_only(rig: AuthRig) -> None:
    uid = rig.user("guard", "viewer", {"door": None, "yard": None})
    p = rig.auth.bearer(rig.auth.login("guard", PASSWORD, "a").access_token)
    token = rig.auth.media_token(p, "door", Action.LIVE)
    m = rig.auth.media(token, "door", Action.LIVE)
    assert (m.user_id, m.via) == (uid, "media")
    assert m.permitted(Action.LIVE, "door") and not m.permitted(Action.VIEW, "door")
    _raises(Kind.UNAUTHENTICATED, rig.auth.media, token, "yard", Action.LIVE)
    _raises(Kind.UNAUTHENTICATED, rig.auth.media, token, "door", Action.PLAYBACK)
    _raises(Kind.UNAUTHENTICATED, rig.auth.bearer, token)  # not an API credential
    rig.clock.advance(60 + 5)
    _raises(Kind.UNAUTHENTICATED, rig.auth.media, token, "door", Action.LIVE)
    # Permission is judged again when the token is used: the grant is gone.
    token = rig.auth.media_token(p, "door", Action.LIVE)
    rig.auth.store.set_grants(uid, [Grant("yard", None)])
    assert not rig.auth.media(token, "door", Action.LIVE).permitted(Action.LIVE, "door")


# --- the principal -------------------------------------------------------------------------


def _principal(role: set[Action], grants: dict[str, set[Action] | None]) -> Principal:
    acts = frozenset(role)
    eff = effective_grants(acts, [(c, None if a is None else frozenset(a))
                                  for c, a in grants.items()])  # fmt: skip
    return Principal(1, "u", "r", acts, eff)


def test_the_principal_answers() -> None:
    op = {Action.VIEW, Action.LIVE, Action.PLAYBACK, Action.EXPORT}
    p = _principal(op, {"a": None, "b": {Action.VIEW, Action.LIVE, Action.MANAGE}})
    assert p.permitted(Action.EXPORT, "a") and not p.permitted(Action.EXPORT, "b")
    assert not p.permitted(Action.MANAGE, "b"), "a grant never widens the role"
    assert not p.permitted(Action.VIEW, "c")
    assert p.cameras_for(Action.LIVE) == {"a", "b"} and p.cameras_for(Action.EXPORT) == {"a"}
    assert p.holds(Action.EXPORT) and not p.holds(Action.MANAGE) and not p.holds(Action.ADMIN)

    star = _principal({Action.VIEW, Action.LIVE}, {"*": {Action.VIEW}, "a": None})
    assert star.cameras_for(Action.VIEW) is ALL and star.cameras_for(Action.LIVE) == {"a"}
    assert star.permitted(Action.VIEW, "anything") and not star.permitted(Action.LIVE, "b")

    admin = _principal(set(Action), {})
    assert all(admin.permitted(a, "x") for a in Action) and admin.cameras_for(Action.LIVE) is ALL
    scoped = admin.narrowed(Scope(frozenset({Action.LIVE}), frozenset({"x"})), "api_key")
    assert scoped.cameras_for(Action.LIVE) == {"x"} and not scoped.permitted(Action.VIEW, "x")
    assert not scoped.holds(Action.ADMIN)
    nobody = _principal(set(), {"a": None})
    assert nobody.cameras_for(Action.VIEW) == set() and not nobody.holds(Action.VIEW)


def test_vms_user_add_makes_the_first_admin(tmp_path: Path) -> None:
    # A process of its own, as an operator runs it: the command sets up logging globally.
    cfg_file = tmp_path / "vms.yaml"
    cfg_file.write_text(
        "data_dir: data\nauth: {argon2_time_cost: 1, argon2_memory_kib: 8192, "
        "argon2_parallelism: 1}\n"
    )
    args = ["user", "add", "root", "--admin", "--config", str(cfg_file), "--password-stdin"]

    def vms_user_add(password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vms", *args], input=password + "\n",
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    short = vms_user_add("too short")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    ok = vms_user_add(PASSWORD)
    assert ok.returncode == 0, ok.stderr
    assert "user root added (id 1, role admin)" in ok.stdout
    cat = Catalog(f"sqlite:///{tmp_path / 'data' / 'catalog.db'}")
    try:
        auth = Auth(cat, config(tmp_path / "data"))
        assert auth.login("root", PASSWORD, "a").user.role == "admin"
        assert auth.new_setup_token() is None
    finally:
        cat.close()
    taken = vms_user_add(PASSWORD)
    assert taken.returncode == 1 and "already in use" in taken.stderr  # CONFLICT
