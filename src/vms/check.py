"""``vms check``: prove that the catalog and the files agree, and repair them on request.

For every closed segment on a usable root: the file exists, it is at least as long as the
indexed bytes, a ``moof`` starts at every indexed fragment offset, and the CRC-32 of the
indexed bytes matches the one stored at close. Open segments are left alone while a server
runs (they are being written) and are recovered with ``--repair`` otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from collections.abc import Callable

from vms.catalog import CLOSED, OPEN, Catalog, Segment
from vms.recovery import collect_garbage, reindex
from vms.segment import FragmentIndex
from vms.storage import Root, Storage

_SEGMENT_FILE = re.compile(r"^[a-z0-9][a-z0-9_-]*/\d{4}-\d{2}-\d{2}/(\d+)\.mp4$")


@dataclasses.dataclass
class Problem:
    segment_id: int | None
    camera_id: str | None
    path: str
    kind: (
        str  # missing_file | short_file | extra_bytes | bad_fragment | crc_mismatch | open | orphan
    )
    detail: str
    repaired: str | None = None


@dataclasses.dataclass
class Report:
    segments: int = 0
    bytes: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)
    refused_roots: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not [p for p in self.problems if p.repaired is None] and not self.refused_roots


def verify_segment(root: Root, seg: Segment) -> tuple[str, str] | None:
    """(kind, detail) of the first thing wrong with a closed segment, or None."""
    path = root.file(seg.path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return "missing_file", f"{path} does not exist"
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < seg.bytes:
            return "short_file", f"file has {size} bytes, index covers {seg.bytes}"
        try:
            index = FragmentIndex.decode(seg.frag_index or b"")
        except ValueError as e:
            return "bad_fragment", str(e)
        if seg.init_bytes + index.size != seg.bytes:
            return "bad_fragment", "index sizes do not add up to the segment's bytes"
        for frag in index.fragments(seg.init_bytes):
            f.seek(frag.offset + 4)
            if f.read(4) != b"moof":
                return "bad_fragment", f"no moof at indexed offset {frag.offset}"
        f.seek(0)
        crc, remaining = 0, seg.bytes
        while remaining:
            chunk = f.read(min(1 << 20, remaining))
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            remaining -= len(chunk)
        if seg.crc32 is not None and crc != seg.crc32:
            return "crc_mismatch", f"CRC-32 {crc:08x}, catalog has {seg.crc32:08x}"
        if size > seg.bytes:
            return "extra_bytes", f"{size - seg.bytes} bytes after the indexed end"
    return None


def run(
    catalog: Catalog,
    storage: Storage,
    *,
    repair: bool = False,
    server_running: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    report = Report()
    storage.verify()
    report.refused_roots = [f"{r.name}: {r.error}" for r in storage.roots if not r.usable]
    if repair:
        collect_garbage(catalog, storage)
    roots = storage.usable()
    segs = [(root, s) for root in roots for s in catalog.segments(root_id=root.id)]
    known = {(root.id, s.path) for root, s in segs}
    for i, (root, seg) in enumerate(segs):
        if progress:
            progress(i + 1, len(segs))
        report.segments += 1
        if seg.state == OPEN:
            if server_running:
                continue
            problem = Problem(seg.id, seg.camera_id, seg.path, "open", "left open by a crash")
            if repair:
                problem.repaired = reindex(catalog, root, seg)
            report.problems.append(problem)
            continue
        assert seg.state == CLOSED
        report.bytes += seg.bytes
        found = verify_segment(root, seg)
        if found is None:
            continue
        problem = Problem(seg.id, seg.camera_id, seg.path, *found)
        if repair:
            problem.repaired = reindex(catalog, root, seg)
        report.problems.append(problem)
    for root in roots:
        for rel in _segment_files(root):
            if (root.id, rel) not in known:
                report.problems.append(
                    Problem(None, rel.split("/", 1)[0], rel, "orphan", "file not in the catalog")
                )
    return report


def _segment_files(root: Root) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(root.path):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root.path)
            if _SEGMENT_FILE.match(rel):
                out.append(rel)
    return out
