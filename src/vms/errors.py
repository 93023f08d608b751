"""The one error type of the project.

Every failure the system reports on purpose is a :class:`VmsError` carrying a :class:`Kind`::

    VmsError
      kind=INVALID_ARGUMENT   bad config, bad request parameter            -> HTTP 400, exit 2
      kind=NOT_FOUND          unknown camera, segment, root               -> HTTP 404
      kind=UNAVAILABLE        camera unreachable, stalled, refused        -> HTTP 503
      kind=STORAGE_FULL       no space left on any usable root             -> HTTP 507
      kind=STORAGE_MISSING    a root is missing, unmounted or swapped      -> HTTP 503
      kind=CORRUPT            a file or index does not match              -> HTTP 500
      kind=INTERNAL           a bug                                       -> HTTP 500

Messages are written for the operator and never contain secrets: camera URLs pass through
:func:`vms.config.redact` before they reach a message.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
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
    Kind.NOT_FOUND: 404,
    Kind.UNAVAILABLE: 503,
    Kind.STORAGE_FULL: 507,
    Kind.STORAGE_MISSING: 503,
    Kind.CORRUPT: 500,
    Kind.INTERNAL: 500,
}


class VmsError(Exception):
    """An error with a kind; ``str()`` is the operator-facing message."""

    def __init__(self, kind: Kind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        return {"error": self.kind.value, "message": self.message}
