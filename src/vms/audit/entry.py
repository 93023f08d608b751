"""One audit entry: its fields, its canonical encoding and hash, and the checks on what it may
carry (docs/design/audit.md, "The entry")."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from vms.audit.schema import ACTION_CHARS, ACTOR_CHARS, IP_CHARS, TARGET_CHARS
from vms.config import redact
from vms.errors import Detail, Kind, VmsError, capped
from vms.times import iso

FORMAT = 1
GENESIS = "0" * 64  # prev_hash of entry 1
MAX_DETAILS_BYTES = 8192
SYSTEM = "system"  # the actor of what the server does by itself

_ACTION = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
# A key named like one of these holds a secret; ``password_changed: true`` says one changed.
_SECRET_KEY = re.compile(
    r"pass(?:word|wd)?|secret|token|api_?key|credential|private_?key|authorization|cookie|session",
    re.IGNORECASE,
)
_ALLOWED_SUFFIX = "_changed"


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at_us: int
    actor: str
    actor_ip: str | None
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


def canonical(value: Any) -> str:
    """JSON with sorted keys, no whitespace, UTF-8 unescaped; NaN and infinities refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def entry_hash(
    seq: int,
    at_us: int,
    actor: str,
    actor_ip: str | None,
    action: str,
    target: str,
    details_text: str,
    prev_hash: str,
) -> str:
    """SHA-256 (hex) of the canonical array of the fields. ``details_text`` enters as the
    stored string, so any change to its bytes changes the hash."""
    fields = [FORMAT, seq, at_us, actor, actor_ip, action, target, details_text, prev_hash]
    return hashlib.sha256(canonical(fields).encode("utf-8")).hexdigest()


def details_text(details: Mapping[str, Any] | None) -> str:
    """The canonical text of ``details``, or a refusal if it is no JSON object, names a
    secret, holds a URL with a password, or is too long."""
    value = dict(details or {})
    _refuse_secrets(value, "details")
    try:
        text = canonical(value)
    except (TypeError, ValueError) as e:
        raise _invalid("details", f"not JSON: {e}") from None
    if len(text.encode("utf-8")) > MAX_DETAILS_BYTES:
        raise _invalid("details", f"longer than {MAX_DETAILS_BYTES} bytes")
    return text


def check_fields(actor: str, action: str, target: str, ip: str | None) -> None:
    if not actor or len(actor) > ACTOR_CHARS:
        raise _invalid("actor", f"1 to {ACTOR_CHARS} characters")
    if len(action) > ACTION_CHARS or not _ACTION.fullmatch(action):
        raise _invalid("action", f"{capped(action)} is not <object>.<verb> in lowercase")
    if len(target) > TARGET_CHARS:
        raise _invalid("target", f"longer than {TARGET_CHARS} characters")
    if ip is not None and len(ip) > IP_CHARS:
        raise _invalid("ip", f"longer than {IP_CHARS} characters")


def _refuse_secrets(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _invalid(where, "keys must be strings")
            if _SECRET_KEY.search(key) and not key.endswith(_ALLOWED_SUFFIX):
                raise _invalid(
                    f"{where}.{key}",
                    "names a secret: an audit entry never holds one "
                    f"(record that it changed as {key}{_ALLOWED_SUFFIX}: true)",
                )
            _refuse_secrets(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _refuse_secrets(item, f"{where}[{i}]")
    elif isinstance(value, str) and redact(value) != value:
        raise _invalid(where, "holds a URL with a password")


def _invalid(field: str, problem: str) -> VmsError:
    return VmsError(
        Kind.INVALID_ARGUMENT, f"audit entry {field}: {problem}", [Detail(field, problem)]
    )


def to_dict(e: Entry) -> dict[str, Any]:
    """An entry as plain JSON, its time both as µs and as ISO 8601 UTC."""
    out = dataclasses.asdict(e)
    out["at"] = iso(e.at_us)
    return out
