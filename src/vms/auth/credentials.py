"""Credentials: argon2id password hashes, access and media JWTs, refresh tokens, API keys.

**Passwords** are argon2id PHC strings (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``): each
names its own parameters, so a hash made with older ones still verifies, and
:meth:`Passwords.needs_rehash` says when a successful login should store a new one.

**Access and media tokens** are HS256 JWTs signed with 32 random bytes kept in
``<data_dir>/auth-signing.key`` (:class:`vms.keyfile.KeyFile`). Decoding pins the algorithm
and requires every claim, so ``alg: none`` and a token signed with another algorithm are
refused before anything else is read. Expiry is judged on the injected clock, not on PyJWT's
own reading of the system time, so tests can move time.

**Refresh tokens and API keys** are random and stored only as SHA-256 (docs/design/security.md).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Any

import argon2
import jwt
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from vms.clock import Clock
from vms.config import AuthConfig
from vms.errors import Detail, Kind, VmsError, unauthenticated
from vms.keyfile import KeyFile

KEY_FILE = "auth-signing.key"
KEY_BYTES = 32
ALGORITHM = "HS256"
ISSUER = "vms"
API_AUDIENCE = "vms-api"
MEDIA_AUDIENCE = "vms-media"
_CLAIMS = ["sub", "ver", "iat", "exp", "iss", "aud"]
# Clocks of the machines that make and check a token may differ a little.
LEEWAY_S = 5

API_KEY_PREFIX = "vms"
_API_KEY = re.compile(r"^vms_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


# --- passwords ---------------------------------------------------------------------------

# A longer password makes argon2 hash a longer input for the attacker's benefit only.
MAX_LENGTH = 1024


class Passwords:
    """Hashes and verifies passwords with the configured argon2id parameters."""

    def __init__(self, config: AuthConfig) -> None:
        self.min_length = config.password_min_length
        self._hasher = argon2.PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            type=argon2.Type.ID,
        )
        # Verified against when the user does not exist, so that a login for an unknown name
        # takes as long as one for a known name with a wrong password.
        self._dummy = self._hasher.hash("no user has this password, it only takes time")

    def check(self, password: str, field: str = "password") -> None:
        """INVALID_ARGUMENT unless ``password`` is an acceptable new password."""
        problem = None
        if len(password) < self.min_length:
            problem = f"at least {self.min_length} characters"
        elif len(password) > MAX_LENGTH:
            problem = f"at most {MAX_LENGTH} characters"
        if problem:
            raise VmsError(Kind.INVALID_ARGUMENT, f"{field}: {problem}", [Detail(field, problem)])

    def hash(self, password: str) -> str:
        self.check(password)
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored`` (None: no such user; still takes the time)."""
        if len(password) > MAX_LENGTH:
            return False
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True


# --- tokens ------------------------------------------------------------------------------


def random_token(nbytes: int = 32) -> str:
    """``nbytes`` random bytes as unpadded base64url."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode()


def digest(token: str) -> str:
    """SHA-256 hex of a high-entropy token: what the catalog keeps of it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_api_key() -> tuple[str, str]:
    """A new API key and its public prefix: ``vms_<prefix>_<secret>``."""
    prefix = secrets.token_hex(4)
    return f"{API_KEY_PREFIX}_{prefix}_{random_token(32)}", prefix


def api_key_prefix(key: str) -> str | None:
    """The prefix of a well-formed API key, else None."""
    m = _API_KEY.fullmatch(key)
    return m[1] if m else None


@dataclasses.dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    version: int
    role: str
    expires_s: int
    camera_id: str | None = None  # media tokens only
    action: str | None = None  # media tokens only


class Signer:
    """Makes and checks the JWTs with the data directory's signing key."""

    def __init__(self, data_dir: Path, clock: Clock) -> None:
        self.clock = clock
        self._file = KeyFile(Path(data_dir) / KEY_FILE, KEY_BYTES, "token signing key file")

    def _key(self) -> bytes:
        key = self._file.load(create=True)
        assert key is not None
        return key

    def _now_s(self) -> int:
        return self.clock.wall_us() // 1_000_000

    def access(self, user_id: int, version: int, role: str, ttl_s: int) -> tuple[str, int]:
        """An access token for the API, and its lifetime in seconds."""
        return self._encode(API_AUDIENCE, user_id, version, ttl_s, {"role": role}), ttl_s

    def media(
        self, user_id: int, version: int, role: str, camera_id: str, action: str, ttl_s: int
    ) -> str:
        extra = {"role": role, "cam": camera_id, "act": action}
        return self._encode(MEDIA_AUDIENCE, user_id, version, ttl_s, extra)

    def _encode(
        self, audience: str, user_id: int, version: int, ttl_s: int, extra: dict[str, Any]
    ) -> str:
        now = self._now_s()
        claims = {
            "sub": str(user_id), "ver": version, "iat": now, "exp": now + ttl_s,
            "iss": ISSUER, "aud": audience, **extra,
        }  # fmt: skip
        return jwt.encode(claims, self._key(), algorithm=ALGORITHM)

    def decode(self, token: str, audience: str) -> Claims:
        """The claims of a valid token for ``audience``; UNAUTHENTICATED otherwise. The
        message says what was wrong with the token, never its content."""
        try:
            data = jwt.decode(
                token,
                self._key(),
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=ISSUER,
                # Expiry is checked below on our clock; PyJWT would read the system's.
                options={"require": _CLAIMS, "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidAudienceError:
            raise _invalid("it is not meant for this use") from None
        except jwt.InvalidIssuerError:
            raise _invalid("it was not issued by this server") from None
        except jwt.InvalidSignatureError:
            raise _invalid("its signature does not match") from None
        except jwt.InvalidAlgorithmError:
            raise _invalid(f"it is not signed with {ALGORITHM}") from None
        except jwt.InvalidTokenError:
            raise _invalid("it is malformed or lacks a required claim") from None
        now = self._now_s()
        try:
            exp, iat = int(data["exp"]), int(data["iat"])
            claims = Claims(
                user_id=int(data["sub"]),
                version=int(data["ver"]),
                role=str(data.get("role", "")),
                expires_s=exp,
                camera_id=None if data.get("cam") is None else str(data["cam"]),
                action=None if data.get("act") is None else str(data["act"]),
            )
        except (TypeError, ValueError):
            raise _invalid("a claim has the wrong type") from None
        if now >= exp + LEEWAY_S:
            raise _invalid("it has expired")
        if iat > now + LEEWAY_S:
            raise _invalid("it was issued in the future")
        return claims


def _invalid(why: str) -> VmsError:
    return unauthenticated(f"the token is not valid: {why}")
