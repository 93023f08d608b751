"""Passwords: argon2id hashes, the length rule, and verification that tells nothing by its time.

The hash is the PHC string argon2-cffi makes (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``):
it names its own parameters, so a stored hash made with older ones still verifies, and
:meth:`Passwords.needs_rehash` says when a successful login should store a new one.
"""

from __future__ import annotations

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from vms.config import AuthConfig
from vms.errors import Detail, Kind, VmsError

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
