"""The local administration key: how tools on the server's own machine call its API.

``vms status``, the benchmarks and scripts run by the operator read ``<data_dir>/local-api-key``
(32 random bytes, 0600, made at the server's first start like the other key files) and send
it as ``X-API-Key: vms_local_<base64url>``. The server answers it as the principal ``local``,
an administrator. Reading the file takes what reading the catalog's other key files takes (the
server's own account, or root), so it grants nothing that account does not already hold; a
deployment that does not want it deletes the file while the server is stopped and starts the
server with ``auth.local_key: false``.
"""

from __future__ import annotations

import base64
import hmac
from pathlib import Path

from vms.auth.rbac import EVERY_CAMERA, Action, Principal
from vms.keyfile import KeyFile

HEADER = "X-API-Key"  # where a client sends it, as every API key
LOCAL_PREFIX = "vms_local_"
FILE_NAME = "local-api-key"
_ALL = frozenset(Action)


def _key_file(data_dir: Path) -> KeyFile:
    return KeyFile(Path(data_dir) / FILE_NAME, 32, "local API key")


def _encode(raw: bytes) -> str:
    return LOCAL_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def ensure(data_dir: Path) -> str:
    """The local key, the file made first when missing (the server, at start)."""
    raw = _key_file(data_dir).load(create=True)
    assert raw is not None
    return _encode(raw)


def read(data_dir: Path) -> str | None:
    """The local key for a client on this machine; None when the server never made one."""
    raw = _key_file(data_dir).load(create=False)
    return None if raw is None else _encode(raw)


def headers(data_dir: Path) -> dict[str, str]:
    """The request headers of a local tool; empty when there is no key (the server answers
    401, which says what is missing)."""
    key = read(data_dir)
    return {} if key is None else {HEADER: key}


def is_local(key: str) -> bool:
    return key.startswith(LOCAL_PREFIX)


def matches(expected: str | None, key: str) -> bool:
    return expected is not None and hmac.compare_digest(expected.encode(), key.encode())


PRINCIPAL = Principal(
    user_id=0,
    name="local",
    role="admin",
    role_actions=_ALL,
    grants={EVERY_CAMERA: _ALL},
    via="local",
)
