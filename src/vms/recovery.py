"""Reading segment files back: the crash recovery run at start, and its building blocks.

A segment file is trusted up to its last whole fragment (a ``moof`` followed by a complete
``mdat``). Recovery truncates anything after it (a torn tail from a kill -9 or power loss),
rebuilds the fragment index and CRC from the file, and closes the row. A file with no whole
fragment goes, row first.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import zlib
from pathlib import Path

from vms import mp4
from vms.catalog import OPEN, Catalog, Segment
from vms.segment import FragmentIndex
from vms.storage import Root, Storage

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclasses.dataclass
class Scan:
    """What a segment file holds, read from its boxes."""

    file_size: int
    init_bytes: int = 0
    whole_bytes: int = 0  # init + whole fragments
    index: FragmentIndex = dataclasses.field(default_factory=FragmentIndex)
    timescale: int = 0
    crc32: int = 0
    problem: str | None = None


def scan(path: Path) -> Scan:
    """Walk the file's top-level boxes; CRC over the whole part. Never modifies the file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        result = Scan(size)
        boxes = list(mp4.read_top_level(f, size))
        if len(boxes) < 2 or boxes[0].kind != b"ftyp" or boxes[1].kind != b"moov":
            result.problem = "no init segment (ftyp + moov)"
            return result
        f.seek(boxes[1].offset)
        moov = f.read(boxes[1].size)
        result.timescale = mp4.parse_timescales(moov).get(mp4.VIDEO_TRACK, 0)
        result.init_bytes = result.whole_bytes = boxes[1].offset + boxes[1].size
        i = 2
        while i + 1 < len(boxes) and boxes[i].kind == b"moof" and boxes[i + 1].kind == b"mdat":
            moof, mdat = boxes[i], boxes[i + 1]
            f.seek(moof.offset)
            try:
                frag = mp4.parse_moof(f.read(moof.size))
            except (ValueError, IndexError, struct.error) as e:
                result.problem = f"bad moof at {moof.offset}: {e}"
                break
            if frag.data_bytes != mdat.size - mdat.header:
                result.problem = f"moof at {moof.offset} does not match its mdat"
                break
            result.index.add(
                frag.video_duration, moof.size + mdat.size, frag.keyframe, frag.samples
            )
            result.whole_bytes = mdat.offset + mdat.size
            i += 2
        else:
            if i < len(boxes):
                result.problem = f"unexpected {boxes[i].kind!r} box at {boxes[i].offset}"
        f.seek(0)
        remaining = result.whole_bytes
        crc = 0
        while remaining:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            remaining -= len(chunk)
        result.crc32 = crc
    return result


def reindex(catalog: Catalog, root: Root, seg: Segment) -> str:
    """Make a segment's row match its file: truncate the torn tail, rebuild the index, close.

    Returns a one-line account of what was done.
    """
    path = root.file(seg.path)
    try:
        found = scan(path)
    except FileNotFoundError:
        _drop(catalog, root, seg)
        return "file missing: row removed"
    if not len(found.index) or found.timescale <= 0:
        _drop(catalog, root, seg)
        return f"no whole fragment ({found.problem or 'empty'}): segment removed"
    torn = found.file_size - found.whole_bytes
    if torn:
        with open(path, "r+b") as f:
            f.truncate(found.whole_bytes)
            os.fdatasync(f.fileno())
    duration_us = found.index.duration * 1_000_000 // found.timescale
    catalog.close_segment(
        seg.id,
        end_us=seg.start_us + duration_us,
        init_bytes=found.init_bytes,
        size=found.whole_bytes,
        fragments=len(found.index),
        frag_index=found.index.encode(),
        crc32=found.crc32,
    )
    return f"{len(found.index)} fragments, {duration_us / 1e6:.3f} s indexed" + (
        f", {torn} torn bytes truncated" if torn else ""
    )


def _drop(catalog: Catalog, root: Root, seg: Segment) -> None:
    for gid, _, rel in catalog.delete_segments([seg]):
        root.file(rel).unlink(missing_ok=True)
        catalog.forget_garbage([gid])


def collect_garbage(catalog: Catalog, storage: Storage) -> int:
    """Finish deletions a crash interrupted (rows already gone, files maybe not)."""
    done = 0
    for root in storage.usable():
        assert root.id is not None
        rows = catalog.garbage(root.id)
        for _, _, rel in rows:
            root.file(rel).unlink(missing_ok=True)
        catalog.forget_garbage(gid for gid, _, _ in rows)
        done += len(rows)
    return done


def recover(catalog: Catalog, storage: Storage) -> int:
    """Close every open segment left by a crash on the usable roots. Returns how many."""
    n = 0
    collect_garbage(catalog, storage)
    for root in storage.usable():
        for seg in catalog.segments(root_id=root.id, state=OPEN):
            outcome = reindex(catalog, root, seg)
            log.info(
                "recovered segment %s (%s): %s", seg.id, seg.path, outcome,
                extra={"camera": seg.camera_id},
            )  # fmt: skip
            n += 1
    return n
