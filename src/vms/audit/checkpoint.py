"""Checkpoints of the audit chain, kept outside the catalog and signed with a local key.

A checkpoint is ``(seq, head hash, at_us)`` with an HMAC-SHA256 under the 32-byte key in
``<data_dir>/audit.key`` (mode 0600). Each is one line of ``<data_dir>/audit-checkpoints.log``,
appended and fsynced, and the same line goes to the application log, which is normally shipped
off the host: an attacker who can write the catalog cannot make a checkpoint that verifies, and
cannot cut the newest entries off unnoticed (docs/design/audit.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
import stat
import threading
from pathlib import Path

from vms.errors import Kind, VmsError

KEY_FILE = "audit.key"
CHECKPOINT_FILE = "audit-checkpoints.log"
KEY_BYTES = 32
_LABEL = "vms audit checkpoint v1"
_LINE = re.compile(
    r"audit checkpoint seq=(?P<seq>[0-9]{1,19}) head=(?P<head>[0-9a-f]{64}) "
    r"at_us=(?P<at_us>[0-9]{1,19}) mac=(?P<mac>[0-9a-f]{64})"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    head: str
    at_us: int
    mac: str

    def line(self) -> str:
        """The line written to the checkpoint file and to the application log."""
        return f"audit checkpoint seq={self.seq} head={self.head} at_us={self.at_us} mac={self.mac}"


@dataclasses.dataclass(frozen=True, slots=True)
class ReadResult:
    """The checkpoints whose MAC holds, in file order, and what was wrong with the others."""

    checkpoints: tuple[Checkpoint, ...]
    problems: tuple[str, ...]
    file_exists: bool


class Checkpoints:
    """The key and the checkpoint file in ``data_dir``; thread-safe."""

    def __init__(self, data_dir: Path) -> None:
        self.key_path = Path(data_dir) / KEY_FILE
        self.path = Path(data_dir) / CHECKPOINT_FILE
        self._lock = threading.Lock()
        self._key: bytes | None = None

    def __repr__(self) -> str:
        return f"Checkpoints({str(self.path)!r})"

    def make(self, seq: int, head: str, at_us: int) -> Checkpoint:
        return Checkpoint(seq, head, at_us, self._mac(self._load(create=True), seq, head, at_us))

    def append(self, cp: Checkpoint) -> None:
        """Append ``cp``'s line and fsync. One ``write`` of a short line with ``O_APPEND``:
        two processes appending never interleave inside a line."""
        data = (cp.line() + "\n").encode("ascii")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                raise VmsError(
                    Kind.UNAVAILABLE, f"audit checkpoint file {self.path}: {e.strerror}"
                ) from None

    def read(self) -> ReadResult:
        """Every line of the file, each MAC checked; the key is not created here."""
        try:
            text = self.path.read_text("ascii", errors="replace")
        except FileNotFoundError:
            return ReadResult((), (), False)
        except OSError as e:
            return ReadResult((), (f"cannot read {self.path}: {e.strerror}",), True)
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            return ReadResult((), (), True)
        try:
            key = self._load(create=False)
        except VmsError as e:
            return ReadResult((), (f"the checkpoints cannot be checked: {e}",), True)
        good: list[Checkpoint] = []
        problems: list[str] = []
        for n, line in lines:
            m = _LINE.fullmatch(line.strip())
            if m is None:
                problems.append(f"{self.path.name} line {n} is not a checkpoint")
                continue
            cp = Checkpoint(int(m["seq"]), m["head"], int(m["at_us"]), m["mac"])
            if not hmac.compare_digest(cp.mac, self._mac(key, cp.seq, cp.head, cp.at_us)):
                problems.append(
                    f"{self.path.name} line {n} (seq {cp.seq}): the MAC does not match: "
                    "the line was changed, or written without the key"
                )
                continue
            # Not refused when its seq is below an earlier line's: two processes appending
            # checkpoints may write theirs in either order. Each line stands by its MAC.
            good.append(cp)
        return ReadResult(tuple(good), tuple(problems), True)

    @staticmethod
    def _mac(key: bytes, seq: int, head: str, at_us: int) -> str:
        message = f"{_LABEL}|{seq}|{head}|{at_us}".encode("ascii")
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    # --- the key file ---------------------------------------------------------------------

    def _load(self, *, create: bool) -> bytes:
        with self._lock:
            if self._key is None:
                key = self._read_key()
                if key is None and create:
                    key = self._create_key()
                if key is None:
                    raise self._error("it does not exist")
                self._key = key
            return self._key

    def _read_key(self) -> bytes | None:
        try:
            fd = os.open(self.key_path, os.O_RDONLY | os.O_CLOEXEC)
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
                    f"access (chmod 600 {self.key_path})"
                )
            key = os.read(fd, KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(key) != KEY_BYTES:
            raise self._error(f"it holds {len(key)} bytes, not {KEY_BYTES}")
        return key

    def _create_key(self) -> bytes:
        """Written under a temporary name and linked into place: the key file is either absent
        or whole, and of two processes racing, both end up with the winner's key."""
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.key_path.with_name(f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}")
        key = os.urandom(KEY_BYTES)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.key_path)
            except FileExistsError:
                theirs = self._read_key()
                if theirs is not None:
                    return theirs
                raise
            dfd = os.open(self.key_path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise self._error(f"cannot create it: {e.strerror}") from None
        finally:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        return key

    def _error(self, problem: str) -> VmsError:
        return VmsError(Kind.INVALID_ARGUMENT, f"audit key file {self.key_path}: {problem}")
