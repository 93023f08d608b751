"""What readers may see of the segments being written: the open files, fragment by fragment.

An open segment's catalog row names its file but holds no fragment index until the segment
closes, a minute or more later. Playback of the last minute reads the open file instead, and
learns where its fragments are from :meth:`vms.recording.writer.Writers.open_segment`: a
snapshot of what the root writer has written so far, whole fragments only.

The trap is in reading the writer's state from another thread. ``SegmentWriter.append`` adds to
``size`` before it adds the index entry, a failed write truncates the file back, ``close`` drops
``SegmentFile.file``, and ``FragmentIndex.add`` rewrites the previous entry in place when it
marks a gap. Reading ``size``, the entries and the end one at a time may pair numbers of two
different moments: bytes with no entry yet, or an entry whose duration already runs into a
fragment the snapshot does not hold. So the root writer *publishes* one immutable
:class:`Published` after each whole fragment, with a single attribute store, and a reader loads
it once and takes only what it names: the first ``fragments`` entries (a list slice is one C call,
which the writer's ``append`` cannot interleave with) with the last one put back as it was when
published. Both are atomic under the GIL, and per object in free-threaded builds; so the
writer's hot path costs one small tuple a fragment and takes no lock.
"""

from __future__ import annotations

import dataclasses
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from vms.recording.segment import FragmentIndex, SegmentWriter

if TYPE_CHECKING:
    from vms.recording.writer import SegmentFile

_ENTRY = struct.Struct("<III")


class Published(NamedTuple):
    """What an open file holds, as of its last whole fragment (set by its root writer only)."""

    entries: list[tuple[int, int, int]]  # the writer's own list: read the first ``fragments`` only
    fragments: int
    last: tuple[int, int, int] | None  # entries[fragments - 1] as it was then
    size: int  # bytes in the file: init segment and ``fragments`` whole fragments
    end: int  # media time at the end of the last fragment, from the segment start


def publish(f: SegmentWriter) -> Published:
    """The writer's state now; called on the root writer's thread after each whole fragment."""
    entries = f.index.entries
    return Published(entries, len(entries), entries[-1] if entries else None, f.size, f.index.end)


@dataclasses.dataclass(frozen=True, slots=True)
class OpenSegment:
    """An open segment as far as it is written: everything needed to serve its bytes."""

    id: int | None  # None until the catalog thread has written its row
    camera_id: str
    stream: int
    root: str  # the storage root's name
    file: Path  # where it is: the root's path and ``path``
    path: str  # relative to the root, as in the catalog
    start_us: int
    end_us: int  # wall-clock end of the last whole fragment
    media_start: int  # decode time of its first sample on its run (video timescale)
    codec: str
    has_audio: bool
    timescale: int
    init_bytes: int  # the init segment: bytes [0, init_bytes)
    size: int  # bytes written: init and whole fragments only, never a part of one
    frag_index: bytes  # the fragments so far, encoded as in the catalog row

    @property
    def fragments(self) -> int:
        return len(self.frag_index) // _ENTRY.size

    def index(self) -> FragmentIndex:
        return FragmentIndex.decode(self.frag_index)


def snapshot(seg: SegmentFile) -> OpenSegment | None:
    """What ``seg`` holds as of its last published fragment (any thread); None before its
    file exists."""
    pub = seg.published  # one load: every field below is of one moment
    if pub is None:
        return None
    entries = pub.entries[: pub.fragments]
    if pub.last is not None:
        entries[-1] = pub.last  # a later gap may have lengthened it in the writer's list since
    return OpenSegment(
        id=seg.id, camera_id=seg.camera_id, stream=seg.stream, root=seg.root.name,
        file=seg.root.file(seg.rel), path=seg.rel, start_us=seg.start_us,
        end_us=seg.start_us + pub.end * 1_000_000 // seg.timescale, media_start=seg.media_start,
        codec=seg.codec, has_audio=seg.has_audio, timescale=seg.timescale,
        init_bytes=len(seg.init), size=pub.size,
        frag_index=b"".join(_ENTRY.pack(*e) for e in entries),
    )  # fmt: skip


class OpenFiles:
    """The segment files of every camera stream that readers may read while they are written.

    A file is added when its root writer has created it, and leaves once its row is closed (or
    dropped) in the catalog: until then a reader that finds the row open must still find the
    file here, so it stays through the ``fdatasync`` and the queued row update that follow its
    last fragment. The lock is taken twice a segment, never a fragment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[tuple[str, int], list[SegmentFile]] = {}

    def add(self, seg: SegmentFile) -> None:
        with self._lock:
            self._files.setdefault((seg.camera_id, seg.stream), []).append(seg)

    def remove(self, seg: SegmentFile) -> None:
        key = (seg.camera_id, seg.stream)
        with self._lock:
            files = self._files.get(key, [])
            if seg in files:
                files.remove(seg)
            if not files:
                self._files.pop(key, None)

    def find(self, camera_id: str, stream: int, seg_id: int | None = None) -> OpenSegment | None:
        """The newest open segment of the camera stream, or the one with id ``seg_id``."""
        with self._lock:
            files = list(self._files.get((camera_id, stream), ()))
        for seg in reversed(files):
            if seg_id is None or seg.id == seg_id:
                return snapshot(seg)
        return None
