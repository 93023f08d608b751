"""``vms check``: prove that the catalog and the segment files agree, and repair on request.

Three levels, each doing what the one before does and more (docs/design/storage.md):

``catalog``
    Rows only. A closed row's index has ``fragments`` entries whose sizes add up to its
    ``bytes``; no segment of a camera stream starts before an earlier one has ended.
``files``
    Every closed segment's file exists, is at least as long as its index says, and a ``moof``
    followed by its ``mdat`` sits at every indexed offset (two 8-byte reads per fragment).
    Files named like segments that no row names are reported: orphans, or files recovery will
    index at the next start (their rows were never written).
``full``
    The CRC-32 of every closed file's indexed bytes.

Rows are streamed from the catalog in batches, never all loaded with their index blobs. A CRC
mismatch quarantines the segment (its row keeps the checksum it was closed with): storing the new
checksum would launder the corruption. Open segments are left alone while a server runs (they are
being written); ``--repair`` first recovers them as a server start would.
"""

from __future__ import annotations

import array
import dataclasses
import datetime
import enum
import os
import sys
import zlib
from collections.abc import Callable

from vms.catalog.store import OPEN, QUARANTINED, Catalog, Segment
from vms.errors import Kind, VmsError
from vms.recording.recovery import DAY, SEGMENT_NAME, recover, reindex
from vms.recording.storage import Root, Storage

_CHUNK = 1 << 20


class Level(enum.StrEnum):
    CATALOG = "catalog"
    FILES = "files"
    FULL = "full"


# Problems that were found and dealt with earlier: reported, but the check is still ok.
KNOWN = {"quarantined"}


@dataclasses.dataclass
class Problem:
    segment_id: int | None
    camera_id: str | None
    path: str
    # bad_index | overlap | missing_file | short_file | bad_fragment | crc_mismatch |
    # extra_bytes | quarantined | open | unindexed | orphan
    kind: str
    detail: str
    repaired: str | None = None


@dataclasses.dataclass
class Report:
    level: str = Level.FULL.value
    segments: int = 0
    bytes: int = 0
    quarantined: int = 0
    recovered: int = 0  # segments --repair recovered first (left open, or without a row)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    refused_roots: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        unsolved = [p for p in self.problems if p.repaired is None and p.kind not in KNOWN]
        return not unsolved and not self.refused_roots


def _sizes(blob: bytes) -> array.array[int]:
    """The byte sizes of an index blob's fragments (the second of each entry's three little-
    endian uint32), without building a tuple per fragment."""
    words = array.array("I", blob)
    if sys.byteorder == "big":
        words.byteswap()
    return words[1::3]


def verify_row(seg: Segment) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with a closed row on its own, or None."""
    blob = seg.frag_index or b""
    if len(blob) % 12:
        return "bad_index", f"index of {len(blob)} bytes is not a whole number of 12-byte entries"
    entries = len(blob) // 12
    if entries != seg.fragments or not entries:
        return "bad_index", f"index has {entries} entries, row says {seg.fragments} fragments"
    indexed = seg.init_bytes + sum(_sizes(blob))
    if indexed != seg.bytes:
        return "bad_index", f"index sizes add up to {indexed} bytes, row says {seg.bytes}"
    return None


def verify_file(root: Root, seg: Segment, *, crc: bool) -> tuple[str, str] | None:
    """(kind, detail) of the first thing wrong with a closed segment's file, or None."""
    path = root.file(seg.path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return "missing_file", f"{path} does not exist"
    try:
        size = os.fstat(fd).st_size
        if size < seg.bytes:
            return "short_file", f"file has {size} bytes, index covers {seg.bytes}"
        offset = seg.init_bytes
        for frag_size in _sizes(seg.frag_index or b""):
            problem = _fragment_at(fd, offset, frag_size)
            if problem:
                return "bad_fragment", problem
            offset += frag_size
        if crc:
            value = _crc32(fd, seg.bytes)
            if seg.crc32 is not None and value != seg.crc32:
                return "crc_mismatch", f"CRC-32 {value:08x}, catalog has {seg.crc32:08x}"
        if size > seg.bytes:
            return "extra_bytes", f"{size - seg.bytes} bytes after the indexed end"
    finally:
        os.close(fd)
    return None


def _fragment_at(fd: int, offset: int, size: int) -> str | None:
    head = os.pread(fd, 8, offset)
    if len(head) < 8 or head[4:] != b"moof":
        return f"no moof at indexed offset {offset}"
    moof = int.from_bytes(head[:4], "big")
    mdat = os.pread(fd, 16, offset + moof) if 8 <= moof < size else b""
    if len(mdat) < 8 or mdat[4:8] != b"mdat":
        return f"no mdat after the moof at {offset}"
    mdat_size = int.from_bytes(mdat[:4], "big")
    if mdat_size == 1 and len(mdat) == 16:  # 64-bit size follows the type
        mdat_size = int.from_bytes(mdat[8:], "big")
    if moof + mdat_size != size:
        return f"fragment at {offset} is {moof + mdat_size} bytes, index says {size}"
    return None


def _crc32(fd: int, length: int) -> int:
    crc, offset = 0, 0
    while offset < length:
        chunk = os.pread(fd, min(_CHUNK, length - offset), offset)
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        offset += len(chunk)
    return crc


def run(
    catalog: Catalog,
    storage: Storage,
    *,
    level: Level | str = Level.FULL,
    repair: bool = False,
    server_running: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Check every segment on the usable roots at ``level`` (``vms check`` defaults to
    ``files``; this function to ``full``, for callers that want every byte proven)."""
    level = Level(level)
    if repair and server_running:
        raise VmsError(Kind.INVALID_ARGUMENT, "cannot repair while a server is running")
    report = Report(level=level.value)
    storage.verify()
    report.refused_roots = [f"{r.name}: {r.error}" for r in storage.roots if not r.usable]
    if repair:
        # What a server does at start: finish deletions, close open rows, index row-less files.
        report.recovered = recover(catalog, storage)
    roots = storage.usable()
    total = sum(catalog.count_segments(root_id=r.id) for r in roots)
    for root in roots:
        for seg in catalog.iter_segments(root_id=root.id):
            report.segments += 1
            if progress:
                progress(report.segments, total)
            _check(catalog, root, seg, level, repair, server_running, report)
    for o in catalog.overlaps():
        report.problems.append(
            Problem(
                o.id, o.camera_id, o.path, "overlap",
                f"starts {(o.earlier_end_us - o.start_us) / 1e6:.3f} s before an earlier "
                "segment of the same stream ends",
            )
        )  # fmt: skip
    if level != Level.CATALOG:
        for root in roots:
            _unknown_files(catalog, root, server_running, report)
    return report


def _check(
    catalog: Catalog,
    root: Root,
    seg: Segment,
    level: Level,
    repair: bool,
    server_running: bool,
    report: Report,
) -> None:
    if seg.state == OPEN:
        if server_running:
            return
        problem = Problem(seg.id, seg.camera_id, seg.path, "open", "left open by a crash")
        if repair:
            problem.repaired = reindex(catalog, root, seg)
        report.problems.append(problem)
        return
    if seg.state == QUARANTINED:
        report.quarantined += 1
        report.problems.append(
            Problem(
                seg.id, seg.camera_id, seg.path, "quarantined",
                "its bytes failed their CRC-32; kept, not served, deleted by retention",
            )
        )  # fmt: skip
        return
    report.bytes += seg.bytes
    found = verify_row(seg)
    if found is None and level != Level.CATALOG:
        found = verify_file(root, seg, crc=level == Level.FULL)
    if found is None:
        return
    problem = Problem(seg.id, seg.camera_id, seg.path, *found)
    if problem.kind == "crc_mismatch":
        # Never re-indexed: the new checksum would make the corrupt bytes look sound.
        if catalog.quarantine(seg.id):
            problem.detail += "; quarantined"
        else:
            problem.detail += "; not quarantined: the row changed meanwhile"
    elif repair:
        problem.repaired = reindex(catalog, root, seg)
    report.problems.append(problem)


def _unknown_files(catalog: Catalog, root: Root, server_running: bool, report: Report) -> None:
    """Files named like segments that no row names, one day directory at a time."""
    assert root.id is not None
    known_cameras = catalog.camera_ids()
    try:
        cam_dirs = sorted(p for p in root.path.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError as e:
        report.problems.append(Problem(None, None, str(root.path), "orphan", e.strerror or ""))
        return
    for cam_dir in cam_dirs:
        cam = cam_dir.name
        newest = catalog.latest_start_us(cam, root.id) if cam in known_cameras else None
        # Recovery indexes the row-less files of the days from the camera's newest row on.
        first_day = "" if newest is None else _day(newest)
        for day in sorted(d.name for d in cam_dir.iterdir() if DAY.match(d.name) and d.is_dir()):
            prefix = f"{cam}/{day}/"
            names = [
                e.name
                for e in os.scandir(cam_dir / day)
                if SEGMENT_NAME.match(e.name) and e.is_file(follow_symlinks=False)
            ]
            if not names:
                continue
            known = catalog.paths_under(root.id, prefix)
            candidates = [prefix + n for n in sorted(names) if prefix + n not in known]
            if not candidates:
                continue
            # A server's retention moves a row to garbage before it unlinks the file: read
            # the garbage first, then look at the file, so a deletion in flight is no orphan.
            garbage = {rel for _, _, rel in catalog.garbage(root.id)}
            for rel in candidates:
                if rel in garbage or not root.file(rel).exists():
                    continue
                if cam in known_cameras and day >= first_day:
                    if server_running:
                        continue  # its row is on its way (rows follow files)
                    kind, detail = "unindexed", "no row: recovery indexes it at the next start"
                else:
                    kind, detail = "orphan", "file not in the catalog"
                report.problems.append(Problem(None, cam, rel, kind, detail))


def _day(us: int) -> str:
    return datetime.datetime.fromtimestamp(us / 1e6, datetime.UTC).strftime("%Y-%m-%d")
