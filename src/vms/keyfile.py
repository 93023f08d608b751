"""A secret key kept in a file of its own beside the catalog: 0600, whole or absent.

The camera password key (:mod:`vms.cameras.secrets`) and the token signing key
(:mod:`vms.auth.credentials`) are each such a file. The key is read once and kept; it is made, when
asked to, under a temporary name and linked into place, so a reader never sees half a key, and
of two processes racing to make it both end up with the winner's. A file that group or others
may read, that belongs to another user or that is not exactly the key's length is refused: a
key someone else could have read or written is not a secret.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from vms.errors import Kind, VmsError


class KeyFile:
    """``size`` random bytes in ``path``; ``what`` names the key in error messages."""

    def __init__(self, path: Path, size: int, what: str) -> None:
        self.path = Path(path)
        self.size = size
        self.what = what
        self._lock = threading.Lock()
        self._key: bytes | None = None

    def __repr__(self) -> str:
        return f"KeyFile({str(self.path)!r})"

    def load(self, *, create: bool) -> bytes | None:
        """The key; made first when ``create`` and the file does not exist, else None."""
        with self._lock:
            if self._key is None:
                key = self._read()
                if key is None and create:
                    key = self._create()
                self._key = key
            return self._key

    def error(self, problem: str) -> VmsError:
        return VmsError(Kind.INVALID_ARGUMENT, f"{self.what} {self.path}: {problem}")

    def _read(self) -> bytes | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self.error(f"cannot open it: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self.error("it is not a regular file")
            if st.st_mode & 0o077:
                raise self.error(
                    f"its mode is {stat.S_IMODE(st.st_mode):04o}: group and others must have no "
                    f"access (chmod 600 {self.path})"
                )
            if st.st_uid != os.geteuid():
                raise self.error(f"it belongs to uid {st.st_uid}, not to this user")
            key = os.read(fd, self.size + 1)
        finally:
            os.close(fd)
        if len(key) != self.size:
            raise self.error(f"it holds {len(key)} bytes, not {self.size}")
        return key

    def _create(self) -> bytes:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        key = os.urandom(self.size)
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
            raise self.error(f"cannot create it: {e.strerror}") from None
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
