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
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vms.errors import Kind, VmsError

KEY_FILE = "camera-secrets.key"
KEY_BYTES = 32
NONCE_BYTES = 12
_VERSION = b"\x01"
_DIGEST_LABEL = b"vms camera configuration digest v1"


class Secrets:
    """Encrypts and decrypts camera passwords with the key file in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / KEY_FILE
        self._lock = threading.Lock()
        self._key: bytes | None = None

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
        with self._lock:
            if self._key is None:
                key = self._read()
                if key is None and create:
                    key = self._create()
                if key is None:
                    raise self._error(
                        "it does not exist, so the passwords stored in the catalog cannot be "
                        "decrypted: restore it (it is backed up with the catalog), or set the "
                        "passwords again"
                    )
                self._key = key
            return self._key

    def _read(self) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._error(f"cannot open it: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._error("it is not a regular file")
            if st.st_mode & 0o077:
                raise self._error(
                    f"its mode is {stat.S_IMODE(st.st_mode):04o}: group and others must have no "
                    f"access (chmod 600 {self.path})"
                )
            if st.st_uid != os.geteuid():
                raise self._error(f"it belongs to uid {st.st_uid}, not to this user")
            key = os.read(fd, KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(key) != KEY_BYTES:
            raise self._error(f"it holds {len(key)} bytes, not {KEY_BYTES}")
        return key

    def _create(self) -> bytes:
        """Write the key under a temporary name, then link it into place: the key file either
        does not exist or is whole, and of two processes racing, both end up with the winner's.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}")
        key = os.urandom(KEY_BYTES)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                theirs = self._read()  # another process made it first: use theirs
                if theirs is not None:
                    return theirs
                raise
            _fsync_dir(self.path.parent)
        except OSError as e:
            raise self._error(f"cannot create it: {e.strerror}") from None
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        return key

    def _error(self, problem: str) -> VmsError:
        return VmsError(Kind.INVALID_ARGUMENT, f"camera password key file {self.path}: {problem}")


def _aad(camera_id: str) -> bytes:
    return b"vms camera " + camera_id.encode("utf-8")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
