"""One segment file being written, and the compact fragment index kept in its catalog row.

The writer appends whole fragments, each with a single ``writev``; it tracks the byte offset of
every fragment and a running CRC-32 so closing the segment costs one ``fdatasync`` and one row
update. A failed write (ENOSPC, EIO) truncates the file back to the last whole fragment, so the
file never holds half a fragment that a later close would index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

_ENTRY = struct.Struct("<III")
KEYFRAME = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Fragment:
    """One index entry resolved to absolute terms."""

    offset: int  # byte offset of the moof in the file
    size: int  # moof + mdat bytes
    start: int  # media time from the segment start, in the video timescale
    duration: int
    keyframe: bool
    samples: int


class FragmentIndex:
    """Per fragment: duration (timescale units), size (bytes), flags (keyframe bit, samples<<1).

    Offsets and start times are cumulative sums from the init segment's size and zero, so an
    entry is 12 bytes: ~720 bytes for a minute of video at one fragment a second.
    """

    def __init__(self, entries: list[tuple[int, int, int]] | None = None) -> None:
        self.entries = entries or []

    def add(self, duration: int, size: int, keyframe: bool, samples: int) -> None:
        self.entries.append((duration, size, (samples << 1) | (KEYFRAME if keyframe else 0)))

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def duration(self) -> int:
        return sum(e[0] for e in self.entries)

    @property
    def size(self) -> int:
        return sum(e[1] for e in self.entries)

    def encode(self) -> bytes:
        return b"".join(_ENTRY.pack(*e) for e in self.entries)

    @classmethod
    def decode(cls, blob: bytes) -> FragmentIndex:
        if len(blob) % _ENTRY.size:
            raise ValueError("fragment index length is not a multiple of 12")
        return cls([_ENTRY.unpack_from(blob, i) for i in range(0, len(blob), _ENTRY.size)])

    def fragments(self, init_bytes: int) -> Iterator[Fragment]:
        offset, start = init_bytes, 0
        for duration, size, flags in self.entries:
            yield Fragment(offset, size, start, duration, bool(flags & KEYFRAME), flags >> 1)
            offset += size
            start += duration


class SegmentWriter:
    """Appends fragments to a new segment file. Not thread-safe; owned by one recorder."""

    def __init__(self, path: Path, init: bytes) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.index = FragmentIndex()
        self.crc = 0
        self.size = 0
        try:
            self._write([init])
        except OSError:
            self.abandon()
            raise
        self.init_bytes = len(init)

    def _write(self, buffers: Sequence[bytes]) -> None:
        total = sum(len(b) for b in buffers)
        try:
            written = os.writev(self.fd, buffers)
            if written != total:  # short write: finish it, or learn why not (ENOSPC).
                rest = b"".join(buffers)[written:]
                while rest:
                    n = os.write(self.fd, rest)
                    rest = rest[n:]
        except OSError:
            # Never leave half a fragment behind: a later close or recovery must find whole ones.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        for b in buffers:
            self.crc = zlib.crc32(b, self.crc)
        self.size += total

    def append(self, buffers: Sequence[bytes], duration: int, keyframe: bool, samples: int) -> None:
        """Write one fragment (``moof`` + ``mdat`` header + samples) in one call."""
        before = self.size
        self._write(buffers)
        self.index.add(duration, self.size - before, keyframe, samples)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abandon(self) -> None:
        """Close and remove the file (a segment that never got a whole fragment)."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
