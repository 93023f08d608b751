"""Users, roles, grants, refresh tokens and API keys in the catalog.

Every method is one transaction (:meth:`vms.catalog.store.Catalog.write` or ``read``), so the
rules that span rows hold under concurrent requests: the setup token creates a user only while
there is none, a refresh token is rotated once, and no change leaves the system without an
enabled user holding ``admin``. Nothing here sees a password or a token in the clear except
to hash it before it reaches a row; the caller hashes passwords (:mod:`vms.auth.credentials`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from vms.auth.rbac import (
    ALL,
    BUILTIN_ROLES,
    EVERY_CAMERA,
    Action,
    AllCameras,
    Principal,
    Scope,
    actions,
    effective_grants,
)
from vms.auth.schema import api_keys, grants, refresh_tokens, roles, users
from vms.catalog.store import Catalog
from vms.errors import Kind, VmsError, capped, unauthenticated


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    created_us: int
    password_changed_us: int
    token_version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Role:
    name: str
    builtin: bool
    actions: frozenset[Action]


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    camera_id: str  # or '*'
    actions: frozenset[Action] | None  # None: whatever the role allows


@dataclasses.dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    user_id: int
    scope: Scope
    created_us: int
    last_used_us: int | None
    revoked: bool


# A key's last use is written at most this often: not a row write per request.
LAST_USED_EVERY_US = 60_000_000


def _user(row: Any) -> User:
    return User(
        id=row.id, name=row.name, role=row.role, disabled=bool(row.disabled),
        created_us=row.created_us, password_changed_us=row.password_changed_us,
        token_version=row.token_version,
    )  # fmt: skip


def _role(row: Any) -> Role:
    return Role(row.name, bool(row.builtin), actions(json.loads(row.permissions)))


def _dump_actions(acts: Iterable[Action]) -> str:
    return json.dumps(sorted(a.value for a in acts))


def _scope(text: str) -> Scope:
    data = json.loads(text)
    cams = data.get("cameras", [EVERY_CAMERA])
    cameras: frozenset[str] | AllCameras = ALL if EVERY_CAMERA in cams else frozenset(cams)
    return Scope(actions(data.get("actions", [])), cameras)


def dump_scope(scope: Scope) -> str:
    cams = [EVERY_CAMERA] if scope.cameras is ALL else sorted(scope.cameras)
    return json.dumps({"actions": sorted(a.value for a in scope.actions), "cameras": cams})


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def no_user(user_id: int | str) -> VmsError:
    return VmsError(Kind.NOT_FOUND, f"no user {capped(str(user_id))}")


class AuthStore:
    """The auth tables of one catalog. Thread-safe; each method one transaction."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def __repr__(self) -> str:
        return f"AuthStore({self.catalog.safe_url!r})"

    # --- users ---------------------------------------------------------------------------

    def count_users(self) -> int:
        with self.catalog.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

    def users(self) -> list[User]:
        with self.catalog.read() as c:
            return [_user(r) for r in c.execute(sa.select(users).order_by(users.c.id))]

    def user(self, user_id: int) -> User:
        with self.catalog.read() as c:
            row = c.execute(sa.select(users).where(users.c.id == user_id)).first()
        if row is None:
            raise no_user(user_id)
        return _user(row)

    def credentials(self, name: str) -> tuple[User, str] | None:
        """The user called ``name`` and its password hash, or None."""
        with self.catalog.read() as c:
            row = c.execute(sa.select(users).where(users.c.name == name)).first()
        return None if row is None else (_user(row), row.password_hash)

    def password_hash(self, user_id: int) -> str:
        with self.catalog.read() as c:
            h = c.execute(sa.select(users.c.password_hash).where(users.c.id == user_id)).first()
        if h is None:
            raise no_user(user_id)
        return str(h[0])

    def add_user(
        self, name: str, password_hash: str, role: str, now_us: int, *, first: bool = False
    ) -> User:
        """A new user. ``first``: only if there is no user at all (the setup token), else
        CONFLICT. A name in use is CONFLICT; an unknown role INVALID_ARGUMENT."""
        with self.catalog.write() as c:
            if first and c.execute(sa.select(sa.func.count()).select_from(users)).scalar_one():
                raise VmsError(Kind.CONFLICT, "the first user exists already")
            self._role_exists(c, role)
            if c.execute(sa.select(users.c.id).where(users.c.name == name)).first():
                raise VmsError(Kind.CONFLICT, f"user name {capped(name)} is already in use")
            result = c.execute(
                users.insert().values(
                    name=name, password_hash=password_hash, role=role, disabled=False,
                    created_us=now_us, password_changed_us=now_us, token_version=0,
                )
            )  # fmt: skip
            user_id = _inserted_id(result)
            return _user(c.execute(sa.select(users).where(users.c.id == user_id)).one())

    def update_user(
        self,
        user_id: int,
        now_us: int,
        *,
        role: str | None = None,
        disabled: bool | None = None,
        password_hash: str | None = None,
    ) -> User:
        """Change a user. A new role, a password or disabling bumps ``token_version`` (its
        tokens die at once) and, but for a role change, revokes its refresh tokens. Refused
        (CONFLICT) when no enabled user holding ``admin`` would be left."""
        with self.catalog.write() as c:
            row = c.execute(sa.select(users).where(users.c.id == user_id)).first()
            if row is None:
                raise no_user(user_id)
            values: dict[str, Any] = {}
            if role is not None and role != row.role:
                self._role_exists(c, role)
                values["role"] = role
            if disabled is not None and disabled != bool(row.disabled):
                values["disabled"] = disabled
            if password_hash is not None:
                values["password_hash"] = password_hash
                values["password_changed_us"] = now_us
            if not values:
                return _user(row)
            values["token_version"] = row.token_version + 1
            before = self._admins(c)
            c.execute(users.update().where(users.c.id == user_id).values(values))
            self._keep_an_admin(c, before)
            if "password_hash" in values or values.get("disabled"):
                self._revoke_refresh(c, refresh_tokens.c.user_id == user_id)
            return _user(c.execute(sa.select(users).where(users.c.id == user_id)).one())

    def rehash(self, user_id: int, old_hash: str, new_hash: str) -> None:
        """Replace a hash made with older parameters; nothing else changes (not a new
        password), and nothing if the password changed meanwhile."""
        with self.catalog.write() as c:
            c.execute(
                users.update()
                .where(users.c.id == user_id, users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )

    def delete_user(self, user_id: int) -> None:
        with self.catalog.write() as c:
            before = self._admins(c)
            for table in (grants, refresh_tokens, api_keys):
                c.execute(table.delete().where(table.c.user_id == user_id))
            if c.execute(users.delete().where(users.c.id == user_id)).rowcount != 1:
                raise no_user(user_id)
            self._keep_an_admin(c, before)

    def _admins(self, c: Connection) -> int:
        """How many enabled users hold the admin action."""
        admin_roles = [r.name for r in self._roles(c) if Action.ADMIN in r.actions]
        q = sa.select(sa.func.count()).select_from(users)
        q = q.where(users.c.role.in_(admin_roles), users.c.disabled == sa.false())
        return int(c.execute(q).scalar_one())

    def _keep_an_admin(self, c: Connection, before: int) -> None:
        """Refuse a change that took the last enabled admin away (``before``: the count
        before it); raised inside the transaction, so the change is rolled back."""
        if before and not self._admins(c):
            raise VmsError(
                Kind.CONFLICT, "refused: no enabled user holding the admin action would be left"
            )

    # --- roles ---------------------------------------------------------------------------

    def _roles(self, c: Connection) -> list[Role]:
        return [_role(r) for r in c.execute(sa.select(roles).order_by(roles.c.name))]

    def _role_exists(self, c: Connection, name: str) -> None:
        if c.execute(sa.select(roles.c.name).where(roles.c.name == name)).first() is None:
            raise VmsError(Kind.INVALID_ARGUMENT, f"role: no role {capped(name)}")

    def roles(self) -> list[Role]:
        with self.catalog.read() as c:
            return self._roles(c)

    def put_role(self, name: str, acts: frozenset[Action]) -> tuple[Role, bool]:
        """Create or replace a custom role; the built-in ones are CONFLICT. True if new."""
        if name in BUILTIN_ROLES:
            raise VmsError(Kind.CONFLICT, f"role {name} is built in and cannot be changed")
        with self.catalog.write() as c:
            row = c.execute(sa.select(roles).where(roles.c.name == name)).first()
            if row is not None and row.builtin:
                raise VmsError(Kind.CONFLICT, f"role {name} is built in and cannot be changed")
            if row is None:
                c.execute(roles.insert().values(name=name, builtin=False,
                                                permissions=_dump_actions(acts)))  # fmt: skip
            else:
                before = self._admins(c)
                q = roles.update().where(roles.c.name == name)
                c.execute(q.values(permissions=_dump_actions(acts)))
                self._keep_an_admin(c, before)
            return Role(name, False, acts), row is None

    def delete_role(self, name: str) -> None:
        with self.catalog.write() as c:
            row = c.execute(sa.select(roles).where(roles.c.name == name)).first()
            if row is None:
                raise VmsError(Kind.NOT_FOUND, f"no role {capped(name)}")
            if row.builtin:
                raise VmsError(Kind.CONFLICT, f"role {name} is built in and cannot be deleted")
            if c.execute(sa.select(users.c.id).where(users.c.role == name)).first():
                raise VmsError(Kind.CONFLICT, f"role {name} is held by users: change them first")
            c.execute(roles.delete().where(roles.c.name == name))

    # --- grants --------------------------------------------------------------------------

    def grants(self, user_id: int) -> list[Grant]:
        with self.catalog.read() as c:
            if c.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is None:
                raise no_user(user_id)
            return self._grants(c, user_id)

    def _grants(self, c: Connection, user_id: int) -> list[Grant]:
        q = sa.select(grants).where(grants.c.user_id == user_id).order_by(grants.c.camera_id)
        return [
            Grant(r.camera_id, None if r.actions is None else actions(json.loads(r.actions)))
            for r in c.execute(q)
        ]

    def set_grants(self, user_id: int, new: Sequence[Grant]) -> None:
        """Replace all of a user's grants."""
        ids = [g.camera_id for g in new]
        if len(ids) != len(set(ids)):
            raise VmsError(Kind.INVALID_ARGUMENT, "grants: a camera is named twice")
        with self.catalog.write() as c:
            if c.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is None:
                raise no_user(user_id)
            c.execute(grants.delete().where(grants.c.user_id == user_id))
            for g in new:
                acts = None if g.actions is None else _dump_actions(g.actions)
                c.execute(grants.insert().values(user_id=user_id, camera_id=g.camera_id,
                                                 actions=acts))  # fmt: skip

    # --- the principal -------------------------------------------------------------------

    def principal(self, user_id: int, version: int | None) -> Principal:
        """The user as a principal, read now; UNAUTHENTICATED if it is gone, disabled, or
        ``version`` (the token's) is not its current ``token_version``."""
        with self.catalog.read() as c:
            row = c.execute(sa.select(users).where(users.c.id == user_id)).first()
            if row is None or row.disabled or (version is not None and
                                               version != row.token_version):  # fmt: skip
                raise unauthenticated("the credential is no longer valid: log in again")
            role_row = c.execute(sa.select(roles).where(roles.c.name == row.role)).one()
            user_grants = self._grants(c, user_id)
        role = _role(role_row)
        return Principal(
            user_id=row.id, name=row.name, role=role.name, role_actions=role.actions,
            grants=effective_grants(role.actions, [(g.camera_id, g.actions) for g in user_grants]),
        )  # fmt: skip

    # --- refresh tokens ------------------------------------------------------------------

    def add_refresh(self, token_hash: str, user_id: int, family: str, expires_us: int) -> None:
        with self.catalog.write() as c:
            c.execute(refresh_tokens.insert().values(
                hash=token_hash, user_id=user_id, family=family, expires_us=expires_us,
                revoked=False,
            ))  # fmt: skip

    def rotate_refresh(self, old_hash: str, new_hash: str, now_us: int, expires_us: int) -> int:
        """Revoke the token ``old_hash`` and issue ``new_hash`` in its family; the user id.

        A revoked token presented again is a reuse: its whole family is revoked (committed)
        and the answer is UNAUTHENTICATED, as for an unknown or expired token."""
        reused = False
        with self.catalog.write() as c:
            q = sa.select(refresh_tokens).where(refresh_tokens.c.hash == old_hash)
            row = c.execute(q).first()
            if row is not None and row.revoked:
                self._revoke_refresh(c, refresh_tokens.c.family == row.family)
                reused = True
            elif row is not None and row.expires_us > now_us:
                done = c.execute(
                    refresh_tokens.update()
                    .where(refresh_tokens.c.hash == old_hash)
                    .where(refresh_tokens.c.revoked == sa.false())
                    .values(revoked=True)
                )
                if done.rowcount == 1:
                    c.execute(refresh_tokens.insert().values(
                        hash=new_hash, user_id=row.user_id, family=row.family,
                        expires_us=expires_us, revoked=False,
                    ))  # fmt: skip
                    return int(row.user_id)
        if reused:
            raise unauthenticated(
                "the refresh token was used already: every session of this login is ended"
            )
        raise unauthenticated("the refresh token is not valid: log in again")

    def revoke_family_of(self, token_hash: str) -> None:
        with self.catalog.write() as c:
            q = sa.select(refresh_tokens.c.family).where(refresh_tokens.c.hash == token_hash)
            row = c.execute(q).first()
            if row is not None:
                self._revoke_refresh(c, refresh_tokens.c.family == row.family)

    def _revoke_refresh(self, c: Connection, where: Any) -> None:
        c.execute(refresh_tokens.update().where(where).values(revoked=True))

    def forget_expired_refresh(self, now_us: int) -> int:
        with self.catalog.write() as c:
            q = refresh_tokens.delete().where(refresh_tokens.c.expires_us <= now_us)
            return int(c.execute(q).rowcount)

    # --- API keys ------------------------------------------------------------------------

    def add_api_key(
        self, name: str, prefix: str, key_hash: str, user_id: int, scope: Scope, now_us: int
    ) -> ApiKey:
        with self.catalog.write() as c:
            if c.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is None:
                raise no_user(user_id)
            result = c.execute(api_keys.insert().values(
                name=name, prefix=prefix, hash=key_hash, user_id=user_id,
                scopes=dump_scope(scope), created_us=now_us, revoked=False,
            ))  # fmt: skip
            key_id = _inserted_id(result)
        return ApiKey(key_id, name, prefix, user_id, scope, now_us, None, False)

    def api_keys(self, user_id: int | None = None) -> list[ApiKey]:
        q = sa.select(api_keys).order_by(api_keys.c.id)
        if user_id is not None:
            q = q.where(api_keys.c.user_id == user_id)
        with self.catalog.read() as c:
            return [self._key(r) for r in c.execute(q)]

    def api_key(self, key_id: int) -> ApiKey:
        with self.catalog.read() as c:
            row = c.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise VmsError(Kind.NOT_FOUND, f"no API key {key_id}")
        return self._key(row)

    def api_key_by_prefix(self, prefix: str) -> tuple[ApiKey, str] | None:
        """The key with ``prefix`` and its stored hash, or None."""
        with self.catalog.read() as c:
            row = c.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).first()
        return None if row is None else (self._key(row), row.hash)

    def revoke_api_key(self, key_id: int) -> None:
        with self.catalog.write() as c:
            q = api_keys.update().where(api_keys.c.id == key_id).values(revoked=True)
            if c.execute(q).rowcount != 1:
                raise VmsError(Kind.NOT_FOUND, f"no API key {key_id}")

    def touch_api_key(self, key: ApiKey, now_us: int) -> None:
        if key.last_used_us is not None and now_us - key.last_used_us < LAST_USED_EVERY_US:
            return
        with self.catalog.write() as c:
            q = api_keys.update().where(api_keys.c.id == key.id)
            c.execute(q.values(last_used_us=now_us))

    @staticmethod
    def _key(row: Any) -> ApiKey:
        return ApiKey(
            id=row.id, name=row.name, prefix=row.prefix, user_id=row.user_id,
            scope=_scope(row.scopes), created_us=row.created_us, last_used_us=row.last_used_us,
            revoked=bool(row.revoked),
        )  # fmt: skip
