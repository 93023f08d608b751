"""Reading segment files back: the crash recovery run at start, and its building blocks.

A segment file is trusted up to its last whole fragment (a ``moof`` followed by a complete
``mdat``). Recovery truncates anything after it (a torn tail from a kill -9 or power loss),
rebuilds the fragment index and CRC from the file, syncs it, and closes the row. A file with no
whole fragment goes, row first.

Rows are written by the catalog thread after the files (``vms.recording.writer``): a process
that died while the catalog was away leaves segment files with no row. Their names say what they are
(``<camera>/<day>/<start_us>-<stream>.mp4``), so recovery indexes them too, looking only at the
day directories from each camera's newest row on.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import struct
import zlib
from pathlib import Path

from vms.catalog.store import OPEN, Catalog, Segment
from vms.errors import VmsError
from vms.recording import mp4
from vms.recording.segment import FragmentIndex
from vms.recording.storage import Root, Storage

SEGMENT_NAME = re.compile(r"^(\d{1,19})-(main|sub)\.mp4$")
STREAMS = {"main": 0, "sub": 1}
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

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
    media_start: int = 0  # decode time of the first fragment on the run's time line
    init: mp4.InitInfo | None = None
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
        try:
            result.init = mp4.parse_init(moov)
        except (ValueError, struct.error):
            result.init = None
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
            if not len(result.index):
                result.media_start = frag.video_base
            result.index.add(
                frag.video_base - result.media_start, frag.video_duration,
                moof.size + mdat.size, frag.keyframe, frag.samples,
            )  # fmt: skip
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
    # Always sync before the row closes: after a kill between fragments the bytes may still be
    # only in the page cache, and a closed row must never claim bytes a power cut can take.
    with open(path, "r+b") as f:
        if torn:
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
    """Close every open segment left by a crash on the usable roots, and index the segment
    files whose rows were never written. Returns how many segments it touched."""
    n = 0
    collect_garbage(catalog, storage)
    for root in storage.usable():
        for seg in catalog.segments(root_id=root.id, state=OPEN):
            _recover_one(catalog, root, seg)
            n += 1
        for seg in _unindexed(catalog, root):
            _recover_one(catalog, root, seg)
            n += 1
    return n


def _recover_one(catalog: Catalog, root: Root, seg: Segment) -> None:
    try:
        outcome = reindex(catalog, root, seg)
    except OSError as e:
        # The row stays open: the next start tries again; the other segments go on.
        log.error("cannot recover segment %s (%s): %s", seg.id, seg.path, e.strerror)
        return
    log.info(
        "recovered segment %s (%s): %s", seg.id, seg.path, outcome,
        extra={"camera": seg.camera_id},
    )  # fmt: skip


def _unindexed(catalog: Catalog, root: Root) -> list[Segment]:
    """Open rows for segment files that have none (the catalog was away when they were
    written), from each camera's newest day in the catalog on."""
    assert root.id is not None
    out = []
    try:
        cameras = sorted(p for p in root.path.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError as e:
        log.error("cannot list storage root %s: %s", root.name, e.strerror)
        return []
    known_cameras = catalog.camera_ids()
    for cam_dir in cameras:
        if cam_dir.name not in known_cameras:
            continue  # not a camera directory of ours
        newest = catalog.latest_start_us(cam_dir.name, root.id)
        first_day = "" if newest is None else _day(newest)
        days = sorted(d.name for d in cam_dir.iterdir() if DAY.match(d.name))
        for day in (d for d in days if d >= first_day):
            known = catalog.paths_under(root.id, f"{cam_dir.name}/{day}/")
            for f in sorted((cam_dir / day).iterdir()):
                m = SEGMENT_NAME.match(f.name)
                rel = f"{cam_dir.name}/{day}/{f.name}"
                if m is None or rel in known or not f.is_file():
                    continue
                seg = _row_for(catalog, root, rel, f, cam_dir.name, int(m[1]), STREAMS[m[2]])
                if seg is not None:
                    out.append(seg)
    return out


def _row_for(
    catalog: Catalog, root: Root, rel: str, path: Path, camera: str, start_us: int, stream: int
) -> Segment | None:
    try:
        found = scan(path)
    except OSError as e:
        log.error("cannot read %s on root %s: %s", rel, root.name, e.strerror)
        return None
    if found.init is None:
        log.warning("%s on root %s has no readable init segment; left alone", rel, root.name)
        return None
    i = found.init
    try:
        seg_id = catalog.open_segment(
            camera_id=camera, stream=stream, root_id=root.id or 0, path=rel, start_us=start_us,
            media_start=found.media_start, codec=i.codec, width=i.width, height=i.height,
            has_audio=i.has_audio, timescale=i.timescale,
        )  # fmt: skip
    except VmsError as e:
        log.error("cannot index %s: %s", rel, e)
        return None
    log.info("indexing %s: its row was never written", rel, extra={"camera": camera})
    return catalog.segment(seg_id)


def _day(us: int) -> str:
    return datetime.datetime.fromtimestamp(us / 1e6, datetime.UTC).strftime("%Y-%m-%d")
