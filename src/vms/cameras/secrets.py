"""Camera passwords encrypted at rest, with a key that lives beside the catalog, not in it.

The key is 32 random bytes in ``<data_dir>/camera-secrets.key`` (mode 0600), made the first
time a password is encrypted. Each value is AES-256-GCM with a fresh random 96-bit nonce and
the camera id as associated data, stored as ``version (1 byte) | nonce (12) | ciphertext+tag``:
a copy of the catalog alone reveals no password, and a value copied onto another camera's row
does not decrypt.

The same key, through a derived sub-key, makes the keyed digests that
:class:`vms.cameras.store.CameraStore` keeps of configuration entries: a plain hash of an entry
would let anyone holding the catalog test guesses of a weak camera password against it.

Losing the key file loses the stored passwords (and nothing else): restore it from the backup
taken with the catalog, or set the passwords again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vms.errors import Kind, VmsError
from vms.keyfile import KeyFile

KEY_FILE = "camera-secrets.key"
KEY_BYTES = 32
NONCE_BYTES = 12
_VERSION = b"\x01"
_DIGEST_LABEL = b"vms camera configuration digest v1"


class Secrets:
    """Encrypts and decrypts camera passwords with the key file in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / KEY_FILE
        self._file = KeyFile(self.path, KEY_BYTES, "camera password key file")

    def __repr__(self) -> str:
        return f"Secrets({str(self.path)!r})"

    def encrypt(self, camera_id: str, password: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._load(create=True)).encrypt(
            nonce, password.encode("utf-8"), _aad(camera_id)
        )
        return _VERSION + nonce + sealed

    def decrypt(self, camera_id: str, value: bytes) -> str:
        value = bytes(value)
        if len(value) < 1 + NONCE_BYTES + 16 or value[:1] != _VERSION:
            raise VmsError(
                Kind.CORRUPT, f"camera {camera_id}: the stored password is not a value this "
                "version of vms wrote",
            )  # fmt: skip
        key = self._load(create=False)
        nonce, sealed = value[1 : 1 + NONCE_BYTES], value[1 + NONCE_BYTES :]
        try:
            plain = AESGCM(key).decrypt(nonce, sealed, _aad(camera_id))
        except InvalidTag:
            raise VmsError(
                Kind.CORRUPT,
                f"camera {camera_id}: the stored password does not decrypt with {self.path}: "
                "the key file is not the one it was encrypted with, or the value was copied "
                "from another camera's row; restore the key file or set the password again",
            ) from None
        return plain.decode("utf-8")

    def digest(self, data: bytes) -> str:
        """A keyed digest (HMAC-SHA256, hex) of ``data``, made with a sub-key of the key."""
        sub = hmac.new(self._load(create=True), _DIGEST_LABEL, hashlib.sha256).digest()
        return hmac.new(sub, data, hashlib.sha256).hexdigest()

    # --- the key file ---------------------------------------------------------------------

    def _load(self, *, create: bool) -> bytes:
        key = self._file.load(create=create)
        if key is None:
            raise self._file.error(
                "it does not exist, so the passwords stored in the catalog cannot be "
                "decrypted: restore it (it is backed up with the catalog), or set the "
                "passwords again"
            )
        return key


def _aad(camera_id: str) -> bytes:
    return b"vms camera " + camera_id.encode("utf-8")
