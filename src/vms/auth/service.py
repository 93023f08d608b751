"""The auth service: logins, sessions, credentials checked, the setup token, and bootstrap.

:class:`Auth` puts the store, the signer, the password hasher and the login limiter together;
the HTTP layer (``vms.api.auth`` and ``vms.api.guard``) calls it and nothing below it.
:func:`bootstrap` makes it for a server that has opened its catalog, and when the catalog has
no user yet, logs a one-time setup token for creating the first admin.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
from collections.abc import Sequence
from typing import Any

from vms.audit.log import AuditLog
from vms.auth import local
from vms.auth.credentials import (
    API_AUDIENCE,
    MEDIA_AUDIENCE,
    Passwords,
    Signer,
    api_key_prefix,
    digest,
    new_api_key,
    random_token,
    same,
)
from vms.auth.ratelimit import IPNetwork, LoginLimiter
from vms.auth.rbac import ADMIN, Action, Principal, Scope
from vms.auth.store import ApiKey, AuthStore, User
from vms.catalog.store import Catalog
from vms.clock import Clock, SystemClock
from vms.config import Config
from vms.errors import Kind, VmsError, capped, shorten, unauthenticated

log = logging.getLogger(__name__)

US = 1_000_000
DAY_S = 86_400
_BAD_LOGIN = "wrong user name or password"


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """What a login or a refresh hands the client."""

    access_token: str
    expires_in: int  # seconds
    refresh_token: str
    refresh_expires_in: int  # seconds
    user: User


class Auth:
    """Everything the API needs to know who asks and what they may do. Thread-safe."""

    def __init__(
        self,
        catalog: Catalog,
        config: Config,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.config = config.auth
        self.trusted_proxies: Sequence[IPNetwork] = tuple(config.server.trusted_proxies)
        self.store = AuthStore(catalog)
        self.signer = Signer(config.data_dir, self.clock)
        self.passwords = Passwords(config.auth)
        self.limiter = LoginLimiter(self.clock, config.auth.login_failures,
                                    config.auth.login_window_s)  # fmt: skip
        self._setup_lock = threading.Lock()
        self._setup: tuple[str, int] | None = None  # SHA-256 of the setup token, expiry
        self.local_key: str | None = None  # set by bootstrap when the config allows it
        self.audit: AuditLog | None = None  # set by bootstrap: logins and changes go there

    def __repr__(self) -> str:
        return f"Auth({self.store.catalog.safe_url!r})"

    @property
    def refresh_ttl_s(self) -> int:
        return int(self.config.refresh_token_days * DAY_S)

    # --- logins and sessions -------------------------------------------------------------

    def login(self, name: str, password: str, address: str) -> Session:
        """A session for ``name``; UNAUTHENTICATED for a wrong name or password or a disabled
        user (one message for all three), RATE_LIMITED after too many failures."""
        self.limiter.check(address, name)
        found = self.store.credentials(name)
        stored = found[1] if found else None
        ok = self.passwords.verify(stored, password)
        if not ok or found is None or found[0].disabled:
            self.limiter.failed(address, name)
            why = "no such user" if found is None else "disabled" if ok else "wrong password"
            log.warning("login refused for %s from %s: %s", capped(name), address, why)
            self.record(shorten(name), "login.failed", shorten(name), {"reason": why}, address)
            raise unauthenticated(_BAD_LOGIN)
        user, stored_hash = found
        if self.passwords.needs_rehash(stored_hash):
            self.store.rehash(user.id, stored_hash, self.passwords.hash(password))
        self.limiter.succeeded(name)
        log.info("user %s logged in from %s", user.name, address)
        self.record(user.name, "login.ok", user.name, {"method": "password"}, address)
        return self._session(user, family=secrets.token_hex(16))

    def _session(self, user: User, family: str | None, refresh: str | None = None) -> Session:
        """Tokens for ``user``. ``family`` set: a new refresh token of it is stored; else
        ``refresh`` is the new token already stored by a rotation."""
        access, ttl = self.signer.access(user.id, user.token_version, user.role,
                                         self.config.access_token_s)  # fmt: skip
        if refresh is None:
            assert family is not None
            refresh = random_token()
            expires = self.clock.wall_us() + self.refresh_ttl_s * US
            self.store.add_refresh(digest(refresh), user.id, family, expires)
        return Session(access, ttl, refresh, self.refresh_ttl_s, user)

    def refresh(self, token: str) -> Session:
        """A new session for a refresh token, which is spent (rotated). A spent token used
        again revokes its whole family."""
        new = random_token()
        now = self.clock.wall_us()
        user_id = self.store.rotate_refresh(digest(token), digest(new), now,
                                            now + self.refresh_ttl_s * US)  # fmt: skip
        user = self.store.user(user_id)
        if user.disabled:
            raise unauthenticated("the refresh token is not valid: log in again")
        return self._session(user, None, refresh=new)

    def logout(self, refresh_token: str | None) -> None:
        """End the login the refresh token belongs to (its family); access tokens live out
        their few minutes."""
        if refresh_token:
            self.store.revoke_family_of(digest(refresh_token))

    def change_password(self, principal: Principal, current: str, new: str) -> User:
        """The user's own password, given the current one. Every token of the user dies."""
        self.passwords.check(new, "new_password")
        if not self.passwords.verify(self.store.password_hash(principal.user_id), current):
            raise VmsError(Kind.FORBIDDEN, "the current password is wrong")
        user = self.store.update_user(principal.user_id, self.clock.wall_us(),
                                      password_hash=self.passwords.hash(new))  # fmt: skip
        log.info("user %s changed its password", user.name)
        self.record(user.name, "user.password", user.name, {"password_changed": True})
        return user

    # --- credentials ---------------------------------------------------------------------

    def bearer(self, token: str) -> Principal:
        """The principal of an access token (never of a media token)."""
        claims = self.signer.decode(token, API_AUDIENCE)
        return self.store.principal(claims.user_id, claims.version)

    def api_key(self, key: str) -> Principal:
        if local.is_local(key):
            if not local.matches(self.local_key, key):
                raise unauthenticated("the API key is not valid")
            return local.PRINCIPAL
        prefix = api_key_prefix(key)
        found = self.store.api_key_by_prefix(prefix) if prefix else None
        if found is None or found[0].revoked or not same(found[1], digest(key)):
            raise unauthenticated("the API key is not valid")
        row = found[0]
        principal = self.store.principal(row.user_id, None)
        self.store.touch_api_key(row, self.clock.wall_us())
        return principal.narrowed(row.scope, "api_key", row.id)

    def media(self, token: str, camera_id: str, action: Action) -> Principal:
        """The principal of a media token, valid only for its camera and its action."""
        claims = self.signer.decode(token, MEDIA_AUDIENCE)
        if claims.camera_id != camera_id or claims.action != action.value:
            raise unauthenticated("the media token is for another camera or action")
        principal = self.store.principal(claims.user_id, claims.version)
        return principal.narrowed(Scope(frozenset({action}), frozenset({camera_id})), "media")

    def media_token(
        self, principal: Principal, camera_id: str, action: Action, ttl_s: int | None = None
    ) -> str:
        """A short-lived token for one camera and one action, for players that send no
        header. The caller has checked that the principal may do it. ``ttl_s`` (default
        ``auth.media_token_s``) is longer for a playlist, whose media a player fetches for as
        long as it plays; a password change or logout still revokes it (its user version)."""
        user = self.store.user(principal.user_id)
        return self.signer.media(user.id, user.token_version, user.role, camera_id,
                                 action.value, ttl_s or self.config.media_token_s)  # fmt: skip

    def new_api_key(self, user_id: int, name: str, scope: Scope) -> tuple[str, ApiKey]:
        """A new key for ``user_id``: the key (shown once) and its row."""
        key, prefix = new_api_key()
        row = self.store.add_api_key(name, prefix, digest(key), user_id, scope,
                                     self.clock.wall_us())  # fmt: skip
        log.info("API key %s (%s) created for user %d", prefix, shorten(name), user_id)
        return key, row

    # --- users ---------------------------------------------------------------------------

    def add_user(self, name: str, password: str, role: str) -> User:
        user = self.store.add_user(name, self.passwords.hash(password), role,
                                   self.clock.wall_us())  # fmt: skip
        log.info("user %s added with role %s", user.name, user.role)
        return user

    # --- the first admin -----------------------------------------------------------------

    def new_setup_token(self) -> str | None:
        """A setup token when there is no user (None otherwise); it replaces any earlier."""
        if self.store.count_users():
            return None
        token = random_token()
        with self._setup_lock:
            self._setup = (digest(token), self.clock.wall_us() + self.config.setup_token_s * US)
        return token

    def setup(self, token: str, name: str, password: str) -> User:
        """The first admin, with the setup token; the token is then spent."""
        self.passwords.check(password)
        with self._setup_lock:
            setup = self._setup
            if setup is None or not same(setup[0], digest(token)):
                raise unauthenticated("the setup token is not valid")
            if self.clock.wall_us() >= setup[1]:
                self._setup = None
                raise unauthenticated("the setup token has expired: restart the server")
            user = self.store.add_user(name, self.passwords.hash(password), ADMIN,
                                       self.clock.wall_us(), first=True)  # fmt: skip
            self._setup = None
        log.info("first admin %s created with the setup token", user.name)
        self.record(user.name, "user.create", user.name, {"role": ADMIN, "via": "setup token"})
        return user

    def record(
        self,
        actor: str,
        action: str,
        target: str,
        details: dict[str, Any] | None = None,
        ip: str | None = None,
    ) -> None:
        """An entry of the audit trail (docs/design/audit.md), when there is one."""
        if self.audit is not None:
            self.audit.append(actor, action, target, details, ip=ip)


def bootstrap(
    catalog: Catalog, config: Config, clock: Clock | None = None, audit: AuditLog | None = None
) -> Auth:
    """The auth service of a server whose catalog is open (migrated). With no user in the
    catalog, logs a setup token (warning level, so it shows in any log setting)."""
    auth = Auth(catalog, config, clock)
    auth.audit = audit
    auth.signer.access(0, 0, "", 1)  # make the signing key now, not on the first login
    if config.auth.local_key:
        auth.local_key = local.ensure(config.data_dir)
    token = auth.new_setup_token()
    if token is not None:
        minutes = auth.config.setup_token_s // 60
        log.warning(
            "no user exists yet: create the first admin with POST /api/v1/auth/setup "
            '{"token": "%s", "name": ..., "password": ...} within %d minutes, '
            "or with `vms user add NAME --admin`",
            token, minutes,
        )  # fmt: skip
    return auth
