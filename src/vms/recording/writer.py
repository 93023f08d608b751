"""Disk and catalog work off the reader thread: one writer thread per storage root, one
catalog thread.

The reader thread (every RTSP/TCP camera) only parses packets and builds fragments; what can
wait on a device goes here (docs/design/concurrency.md, "Writers"):

- a **root writer** per storage root creates segment files, appends fragments, and at close
  runs ``fdatasync`` and the directory ``fsync``. A slow or stuck disk delays only the cameras
  writing to it. What a camera has queued is bounded in seconds of video by the recorder,
  which drops (and counts) fragments past the bound instead of waiting.
- the **catalog thread** inserts and closes segment rows in order. A catalog that is away
  (``VmsError(UNAVAILABLE)``) keeps its rows queued and retried; the files are written all the
  same, and if the process dies first, recovery indexes the files the catalog never heard of
  (their names carry camera, stream and start time).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from vms.catalog.store import Catalog
from vms.errors import Kind, VmsError
from vms.media import FragmentWritten
from vms.recording.live import OpenFiles, OpenSegment, Published, publish
from vms.recording.segment import SegmentWriter
from vms.recording.storage import Root

log = logging.getLogger(__name__)

CATALOG_RETRY_S = (0.5, 5.0)  # first and longest wait between retries of a row


class RecordingEvents(Protocol):
    """What the recorder and its root writer report, from their threads (the camera stream's
    pipeline: health and subscribers). None of it may block."""

    @property
    def record_error(self) -> str | None: ...

    def record_failed(self, error: str) -> None: ...

    def record_ok(self) -> None: ...

    def fragment_written(self, f: FragmentWritten) -> None: ...


@dataclasses.dataclass
class RecorderStats:
    """Counters for metrics. Each field has one writer: the recorder (reader thread) or the
    root writer (``*`` below), never both."""

    frames_written: int = 0  # *
    bytes_written: int = 0  # *
    fragments: int = 0  # *
    segments: int = 0  # *
    frames_dropped: int = 0
    frames_lost_writing: int = 0  # * queued but never written (the file failed)
    frames_dropped_backlog: int = 0  # the root's writer was too far behind
    write_errors: int = 0  # *
    timestamp_jumps: int = 0
    write_seconds_total: float = 0.0  # *
    last_write_s: float = 0.0  # *
    sync_seconds_total: float = 0.0  # * fdatasync + directory fsync at close
    last_sync_s: float = 0.0  # *
    # Packet arrival to fragment on disk: the first (oldest) sample of the fragment.
    last_delay_s: float = 0.0  # *
    max_delay_s: float = 0.0  # *
    queued_ticks: int = 0  # video submitted to the writer, in the video timescale
    written_ticks: int = 0  # * video the writer is done with (written or lost)


class SegmentFile:
    """One segment as the recorder, its root writer and the catalog thread share it.

    The recorder fills the description; the root writer owns ``file`` and sets ``failed``;
    the catalog thread sets ``id``."""

    def __init__(
        self,
        *,
        camera_id: str,
        stream: int,
        root: Root,
        rel: str,
        start_us: int,
        media_start: int,
        codec: str,
        width: int,
        height: int,
        has_audio: bool,
        timescale: int,
        init: bytes,
        stats: RecorderStats,
        events: RecordingEvents,
        on_trouble: Callable[[], None],
    ) -> None:
        self.camera_id = camera_id
        self.stream = stream
        self.root = root
        self.rel = rel
        self.start_us = start_us
        self.media_start = media_start
        self.codec = codec
        self.width = width
        self.height = height
        self.has_audio = has_audio
        self.timescale = timescale
        self.init = init
        self.stats = stats
        self.events = events
        self.on_trouble = on_trouble
        self.id: int | None = None
        self.file: SegmentWriter | None = None
        self.failed: str | None = None
        self.closed = False  # root writer only
        self.published: Published | None = None  # root writer only; readers: live.snapshot

    def row(self) -> dict[str, Any]:
        return {
            "camera_id": self.camera_id, "stream": self.stream, "root_id": self.root.id or 0,
            "path": self.rel, "start_us": self.start_us, "media_start": self.media_start,
            "codec": self.codec, "width": self.width, "height": self.height,
            "has_audio": self.has_audio, "timescale": self.timescale,
        }  # fmt: skip


@dataclasses.dataclass(slots=True)
class Fragment:
    buffers: list[bytes]
    start: int  # first sample's media time from the segment start
    duration: int
    keyframe: bool
    samples: int
    arrival: float  # monotonic arrival of its first sample


class RootWriter:
    """The thread that does every write, sync and close of one storage root's segments."""

    def __init__(self, root: Root, catalog_thread: CatalogThread, clock: Any) -> None:
        self.root = root
        self.catalog_thread = catalog_thread
        self.clock = clock
        # SimpleQueue: a C-level put, cheap on the reader thread; never blocks it.
        self.jobs: queue.SimpleQueue[tuple[str, Any, Any] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"writer-{root.name}", daemon=True)
        self.thread.start()

    def submit(self, kind: str, seg: SegmentFile, arg: Any = None) -> None:
        self.jobs.put((kind, seg, arg))

    def stop(self) -> None:
        self.jobs.put(None)

    def wait_idle(self, deadline: float) -> bool:
        """Wait until everything queued before this call is done."""
        done = threading.Event()
        self.jobs.put(("mark", done, None))
        return done.wait(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            kind, seg, arg = job
            try:
                if kind == "mark":
                    seg.set()
                elif kind == "open":
                    self._open(seg)
                elif kind == "append":
                    self._append(seg, arg)
                else:
                    self._close(seg)
            except Exception:  # a bug in one segment's handling must not stop the root
                log.exception("writer of root %s failed on a %s job", self.root.name, kind)

    def _open(self, seg: SegmentFile) -> None:
        try:
            seg.file = SegmentWriter(self.root.file(seg.rel), seg.init, self.root.io)
        except FileExistsError:
            self._failed(seg, f"{seg.rel} already exists on root {self.root.name}; not touched")
            return
        except OSError as e:
            self._failed(seg, f"cannot create {seg.rel} on root {self.root.name}: {e.strerror}")
            return
        self.root.set_open_bytes(id(seg), seg.file.size)
        seg.published = publish(seg.file)
        self.catalog_thread.open_files.add(seg)

    def _append(self, seg: SegmentFile, frag: Fragment) -> None:
        st = seg.stats
        if seg.file is None or seg.failed:
            st.frames_lost_writing += frag.samples
            st.written_ticks += frag.duration
            return
        t0 = self.clock.monotonic()
        offset = seg.file.size
        try:
            seg.file.append(frag.buffers, frag.start, frag.duration, frag.keyframe, frag.samples)
        except OSError as e:
            st.write_errors += 1
            st.frames_lost_writing += frag.samples
            st.written_ticks += frag.duration
            what = "storage full" if e.errno == errno.ENOSPC else "write failed"
            self._failed(seg, f"{what} on root {self.root.name}: {e.strerror}")
            # The file was truncated back to its last whole fragment: close it there.
            self._close(seg)
            return
        t1 = self.clock.monotonic()
        st.frames_written += frag.samples
        st.bytes_written += sum(len(b) for b in frag.buffers)
        st.fragments += 1
        st.last_write_s = t1 - t0
        st.write_seconds_total += st.last_write_s
        st.last_delay_s = t1 - frag.arrival
        st.max_delay_s = max(st.max_delay_s, st.last_delay_s)
        st.written_ticks += frag.duration
        seg.published = publish(seg.file)  # after the whole fragment: see live.py
        self.root.set_open_bytes(id(seg), seg.file.size)
        if self.root.write_error is not None or seg.events.record_error is not None:
            self.root.write_error = None
            seg.events.record_ok()
        seg.events.fragment_written(
            FragmentWritten(
                seg.camera_id, seg.stream, self.root.name, seg.rel, seg.start_us, offset,
                seg.file.size - offset, seg.media_start + frag.start, frag.duration,
                seg.timescale, seg.start_us + frag.start * 1_000_000 // seg.timescale,
                frag.keyframe,
            )
        )  # fmt: skip

    def _close(self, seg: SegmentFile) -> None:
        if seg.closed:
            return  # already closed where a write failed
        seg.closed = True
        f = seg.file
        if f is None:  # the file was never created: only the row, if any, goes
            self.catalog_thread.submit("discard", seg)
            return
        seg.file = None
        self.root.set_open_bytes(id(seg), None)
        if not len(f.index):
            self.catalog_thread.open_files.remove(seg)  # before its file goes
            f.abandon()  # created by us (O_EXCL) and holding no whole fragment
            self.catalog_thread.submit("discard", seg)
            return
        t0 = self.clock.monotonic()
        try:
            f.sync()
        except OSError as e:
            # The row stays open: recovery re-reads the file at the next start instead of
            # trusting bytes that may never have reached the disk.
            f.close()
            self.catalog_thread.open_files.remove(seg)  # its row stays open, for recovery
            self._failed(seg, f"fdatasync failed on root {self.root.name}: {e.strerror}")
            self.root.add_closed(f.size)
            return
        f.close()
        st = seg.stats
        st.last_sync_s = self.clock.monotonic() - t0
        st.sync_seconds_total += st.last_sync_s
        end_us = seg.start_us + f.index.duration * 1_000_000 // seg.timescale
        self.root.add_closed(f.size)
        st.segments += 1
        self.catalog_thread.submit(
            "close", seg,
            {"end_us": end_us, "init_bytes": f.init_bytes, "size": f.size,
             "fragments": len(f.index), "frag_index": f.index.encode(), "crc32": f.crc},
        )  # fmt: skip

    def _failed(self, seg: SegmentFile, message: str) -> None:
        seg.failed = message
        self.root.write_error = message
        if seg.events.record_error != message:
            log.error("recording stopped: %s", message, extra={"camera": seg.camera_id})
        seg.events.record_failed(message)
        seg.on_trouble()


class CatalogThread:
    """Segment rows, in order, retried while the catalog is unavailable."""

    def __init__(self, catalog: Catalog, stop: threading.Event) -> None:
        self.catalog = catalog
        self.stop_event = stop
        self.ops: collections.deque[tuple[str, SegmentFile, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self.outage: str | None = None  # why the catalog is away, while it is
        # Files readers may read while open; one leaves here once its row is closed.
        self.open_files = OpenFiles()
        self.rows_written = 0
        self.thread = threading.Thread(target=self._run, name="catalog", daemon=True)
        self._closing = False
        self.thread.start()

    def submit(self, kind: str, seg: SegmentFile, arg: Any = None) -> None:
        with self._cond:
            self.ops.append((kind, seg, arg))
            self._cond.notify()

    @property
    def backlog(self) -> int:
        return len(self.ops)

    def idle(self) -> bool:
        with self._cond:
            return not self.ops and not self._busy

    def wait_idle(self, deadline: float) -> bool:
        with self._cond:
            while self.ops or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _run(self) -> None:
        wait = CATALOG_RETRY_S[0]
        while True:
            with self._cond:
                while not self.ops and not self._closing:
                    self._cond.wait()
                if not self.ops:
                    return
                kind, seg, arg = self.ops[0]
                self._busy = True
            try:
                self._apply(kind, seg, arg)
            except VmsError as e:
                if e.kind == Kind.UNAVAILABLE:
                    if self.outage is None:
                        log.error(
                            "%s; segment rows are kept and written when it is back "
                            "(recording goes on to disk)", e,
                        )  # fmt: skip
                    self.outage = str(e)
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
                    self.stop_event.wait(wait)
                    if self._closing:
                        return  # recovery indexes the files at the next start
                    wait = min(wait * 2, CATALOG_RETRY_S[1])
                    continue
                log.error("segment row for %s not written: %s", seg.rel, e)
            except Exception:  # a bug in one row must not stop every later row
                log.exception("segment row for %s not written", seg.rel)
            if self.outage is not None:
                log.info("catalog is back; %d queued segment row(s) to write", len(self.ops))
                self.outage = None
            wait = CATALOG_RETRY_S[0]
            if kind != "open":  # its row is closed or gone (or never will be): readers let go
                self.open_files.remove(seg)
            with self._cond:
                self.ops.popleft()
                self._busy = False
                self._cond.notify_all()

    def _apply(self, kind: str, seg: SegmentFile, arg: Any) -> None:
        if kind == "open":
            seg.id = self.catalog.open_segment(**seg.row())
        elif kind == "close":
            if seg.id is None:  # its open row failed for good: write both now
                seg.id = self.catalog.open_segment(**seg.row())
            self.catalog.close_segment(seg.id, **arg)
        elif kind == "discard" and seg.id is not None:
            self.catalog.forget_segment(seg.id)
            seg.id = None
        self.rows_written += 1


class Writers:
    """Every root writer and the catalog thread: started with the server, drained at stop."""

    def __init__(self, catalog: Catalog, clock: Any) -> None:
        self.clock = clock
        self.stop_event = threading.Event()
        self.catalog_thread = CatalogThread(catalog, self.stop_event)
        self._roots: dict[int, RootWriter] = {}
        self._lock = threading.Lock()

    def for_root(self, root: Root) -> RootWriter:
        key = id(root)
        w = self._roots.get(key)
        if w is None:
            with self._lock:
                w = self._roots.get(key)
                if w is None:
                    w = self._roots[key] = RootWriter(root, self.catalog_thread, self.clock)
        return w

    def open_segment(
        self, camera_id: str, stream: int, *, seg_id: int | None = None
    ) -> OpenSegment | None:
        """The camera stream's open segment as far as it is on disk (the newest, or the one
        with id ``seg_id``); None when there is none. It stays here until its catalog row is
        closed, so a reader that finds the row open and no segment here reads the row again."""
        return self.catalog_thread.open_files.find(camera_id, stream, seg_id)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued write and row is done (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        ok = all(w.wait_idle(deadline) for w in list(self._roots.values()))
        return self.catalog_thread.wait_idle(deadline) and ok

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued (files first, then rows), within ``timeout``."""
        deadline = time.monotonic() + timeout
        for w in self._roots.values():
            w.stop()
        for w in self._roots.values():
            w.thread.join(max(0.0, deadline - time.monotonic()))
            if w.thread.is_alive():
                log.warning("writer of root %s did not finish in time", w.root.name)
        if not self.catalog_thread.wait_idle(deadline):
            log.warning(
                "%d segment row(s) not written at stop; recovery indexes their files at the "
                "next start", self.catalog_thread.backlog,
            )  # fmt: skip
        self.stop_event.set()
        self.catalog_thread.stop()
        self.catalog_thread.thread.join(1.0)
