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
import threading
from pathlib import Path

from vms.errors import Kind, VmsError
from vms.keyfile import KeyFile

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
        self._key_file = KeyFile(self.key_path, KEY_BYTES, "audit key file")
        self._lock = threading.Lock()  # one append at a time from this process

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
        key = self._key_file.load(create=create)
        if key is None:
            raise self._key_file.error("it does not exist")
        return key
