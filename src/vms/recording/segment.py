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
GAP = 2  # media was lost after this fragment: its samples end before the next one starts
_SAMPLES_SHIFT = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Fragment:
    """One index entry resolved to absolute terms."""

    offset: int  # byte offset of the moof in the file
    size: int  # moof + mdat bytes
    start: int  # media time from the segment start, in the video timescale
    duration: int  # to the next fragment's start (includes a hole after it, see ``gap``)
    keyframe: bool
    samples: int
    gap: bool  # media was lost between this fragment's last sample and the next fragment


class FragmentIndex:
    """Per fragment: duration (timescale units), size (bytes), flags (bit 0 keyframe, bit 1
    gap after it, samples << 2).

    Offsets and start times are cumulative sums from the init segment's size and zero, so an
    entry is 12 bytes: ~720 bytes for a minute of video at one fragment a second. A fragment's
    duration runs to the next fragment's start: when media was lost in between (RTP loss),
    the hole is added to the earlier fragment and its ``GAP`` bit set, so start times stay
    plain sums and playback still learns where the hole is.
    """

    def __init__(self, entries: list[tuple[int, int, int]] | None = None) -> None:
        self.entries = entries or []
        self.end = sum(e[0] for e in self.entries)

    def add(self, start: int, duration: int, size: int, keyframe: bool, samples: int) -> None:
        """Add a fragment whose samples start at ``start`` (from the segment start, timescale
        units) and last ``duration``."""
        if self.entries and start > self.end:
            d, sz, flags = self.entries[-1]
            self.entries[-1] = (d + start - self.end, sz, flags | GAP)
        self.end = max(start, self.end) + duration
        flags = (samples << _SAMPLES_SHIFT) | (KEYFRAME if keyframe else 0)
        self.entries.append((duration, size, flags))

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def duration(self) -> int:
        return self.end

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
            yield Fragment(
                offset, size, start, duration, bool(flags & KEYFRAME),
                flags >> _SAMPLES_SHIFT, bool(flags & GAP),
            )  # fmt: skip
            offset += size
            start += duration


class FileIO:
    """The system calls that put a segment on disk: the seam where a test makes a root slow."""

    def writev(self, fd: int, buffers: Sequence[bytes]) -> int:
        return os.writev(fd, buffers)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync_dir(self, path: Path) -> None:
        fsync_dir(path)


def make_dirs(path: Path, io: FileIO) -> None:
    """Create ``path`` and missing parents; fsync each parent whose entry was created, so a
    new camera or day directory survives a power cut along with the files in it."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        io.fsync_dir(d.parent)


class SegmentWriter:
    """Appends fragments to a new segment file. Not thread-safe; owned by one root writer."""

    def __init__(self, path: Path, init: bytes, io: FileIO | None = None) -> None:
        self.path = path
        self.io = io or FileIO()
        make_dirs(path.parent, self.io)
        # O_EXCL: the file is new, so it is ours to truncate or unlink; a name that exists is
        # someone else's (or an earlier run's) and is never touched.
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
            written = self.io.writev(self.fd, buffers)
            if written != total:  # short write: finish it, or learn why not (ENOSPC).
                rest = b"".join(buffers)[written:]
                while rest:
                    n = self.io.write(self.fd, rest)
                    rest = rest[n:]
        except OSError:
            # Never leave half a fragment behind: a later close or recovery must find whole ones.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        for b in buffers:
            self.crc = zlib.crc32(b, self.crc)
        self.size += total

    def append(
        self, buffers: Sequence[bytes], start: int, duration: int, keyframe: bool, samples: int
    ) -> None:
        """Write one fragment (``moof`` + ``mdat`` header + samples) in one call; ``start`` is
        its first sample's media time from the segment start."""
        before = self.size
        self._write(buffers)
        self.index.add(start, duration, self.size - before, keyframe, samples)

    def sync(self) -> None:
        self.io.fdatasync(self.fd)
        self.io.fsync_dir(self.path.parent)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abandon(self) -> None:
        """Close and remove the file (created by this writer; it never got a whole fragment)."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
