"""The one error type of the project.

Every failure the system reports on purpose is a :class:`VmsError` carrying a :class:`Kind`::

    VmsError
      kind=INVALID_ARGUMENT   bad config, bad request parameter            -> HTTP 400, exit 2
      kind=UNAUTHENTICATED    no credential, or one not valid (any more)  -> HTTP 401
      kind=FORBIDDEN          valid credential, action not permitted      -> HTTP 403
      kind=NOT_FOUND          unknown camera, segment, root               -> HTTP 404
      kind=CONFLICT           an id already in use (adding a camera)      -> HTTP 409
      kind=RATE_LIMITED       too many failed logins; retry later         -> HTTP 429
      kind=UNAVAILABLE        camera unreachable, stalled, refused        -> HTTP 503
      kind=STORAGE_FULL       no space left on any usable root             -> HTTP 507
      kind=STORAGE_MISSING    a root is missing, unmounted or swapped      -> HTTP 503
      kind=CORRUPT            a file or index does not match              -> HTTP 500
      kind=INTERNAL           a bug                                       -> HTTP 500

Messages are written for the operator and never contain secrets: camera URLs pass through
:func:`vms.config.redact` before they reach a message. A value someone sent goes into a message
through :func:`capped`, so an error never echoes a hostile megabyte back. ``details`` says which
input is wrong and how, one :class:`Detail` each, for a client to show next to the field.
``headers`` are the HTTP headers its answer carries (``WWW-Authenticate`` on a 401,
``Retry-After`` on a 429); :func:`unauthenticated` and :func:`rate_limited` set them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

# The most characters of a sent value that a message repeats. Camera ids (63) fit whole.
CAP = 64


class Kind(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    STORAGE_FULL = "storage_full"
    STORAGE_MISSING = "storage_missing"
    CORRUPT = "corrupt"
    INTERNAL = "internal"

    @property
    def http_status(self) -> int:
        return _HTTP[self]


_HTTP = {
    Kind.INVALID_ARGUMENT: 400,
    Kind.UNAUTHENTICATED: 401,
    Kind.FORBIDDEN: 403,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.TOO_LARGE: 413,
    Kind.RATE_LIMITED: 429,
    Kind.UNAVAILABLE: 503,
    Kind.STORAGE_FULL: 507,
    Kind.STORAGE_MISSING: 503,
    Kind.CORRUPT: 500,
    Kind.INTERNAL: 500,
}


class VmsError(Exception):
    """An error with a kind; ``str()`` is the operator-facing message."""

    def __init__(
        self,
        kind: Kind,
        message: str,
        details: Sequence[Detail] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = tuple(details)
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.kind.value,
            "message": self.message,
            "details": [dataclasses.asdict(d) for d in self.details],
        }


@dataclasses.dataclass(frozen=True)
class Detail:
    """One thing wrong with the input: ``field`` names it (a parameter), ``problem`` says what."""

    field: str
    problem: str


def shorten(text: str, limit: int = CAP) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis where something was cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def capped(value: str, limit: int = CAP) -> str:
    """``value`` quoted for a message, at most ``limit`` of its characters."""
    return repr(shorten(value, limit))


def unauthenticated(message: str) -> VmsError:
    """A 401 that tells the client which scheme to authenticate with."""
    return VmsError(Kind.UNAUTHENTICATED, message, headers={"WWW-Authenticate": "Bearer"})


def rate_limited(message: str, retry_after_s: int) -> VmsError:
    """A 429 saying when to try again (whole seconds, at least 1)."""
    return VmsError(Kind.RATE_LIMITED, message, headers={"Retry-After": str(max(1, retry_after_s))})
