"""Retention: keep each camera within its days and each root within its bytes and free space.

Runs every ``retention_interval_s`` (and at once when a recorder reports a storage problem).
Oldest first. Each deletion moves the rows to ``garbage`` in one transaction, then unlinks the
files, then forgets the garbage rows: the catalog row goes before the file, so the catalog never
points at a deleted file, and a crash in between leaves only garbage that start-up finishes.
A root is re-identified before every pass; nothing is deleted from a root that is not mounted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from vms.catalog import CLOSED, Catalog, Segment
from vms.clock import Clock
from vms.config import Config
from vms.errors import Kind, VmsError
from vms.storage import Root, Storage

log = logging.getLogger(__name__)

BATCH = 16
DAY_US = 86_400 * 1_000_000


class Retention:
    def __init__(self, config: Config, catalog: Catalog, storage: Storage, clock: Clock) -> None:
        self.config = config
        self.catalog = catalog
        self.storage = storage
        self.clock = clock
        self.wake = threading.Event()
        self.deleted_segments = 0
        self.deleted_bytes = 0
        self._full_warned: set[str] = set()

    def run_once(self) -> int:
        """One pass over cameras and roots. Returns the number of segments deleted."""
        before = self.deleted_segments
        self.storage.verify()
        now = self.clock.wall_us()
        for cam in self.config.cameras:
            if cam.retention_days is None:
                continue
            cutoff = now - int(cam.retention_days * DAY_US)
            while True:
                expired = self.catalog.expired(cam.id, cutoff, BATCH)
                expired = [s for s in expired if self._root_ok(s.root_id)]
                if not expired:
                    break
                self._delete(expired, f"older than {cam.retention_days:g} days")
        for root in self.storage.usable():
            self._enforce_root(root)
        return self.deleted_segments - before

    def _root_ok(self, root_id: int) -> bool:
        return any(r.id == root_id and r.usable for r in self.storage.roots)

    def _enforce_root(self, root: Root) -> None:
        cfg = root.config
        while True:
            try:
                free = root.free_bytes()
            except OSError as e:
                log.error("cannot stat storage root %s: %s", root.name, e.strerror)
                return
            reasons = []
            if free < cfg.min_free_bytes:
                reasons.append(f"free space {free} < {cfg.min_free_bytes}")
            if cfg.max_bytes is not None:
                assert root.id is not None
                used = root.used_bytes
                if used > cfg.max_bytes:
                    reasons.append(f"{used} bytes used > quota {cfg.max_bytes}")
            if not reasons:
                self._full_warned.discard(root.name)
                return
            oldest = self.catalog.segments(root_id=root.id, state=CLOSED, limit=BATCH)
            if not oldest:
                if root.name not in self._full_warned:
                    log.warning(
                        "storage root %s: %s, and no closed recording left to delete",
                        root.name, "; ".join(reasons),
                    )  # fmt: skip
                    self._full_warned.add(root.name)
                return
            # Re-check the identity right before deleting: never delete from a swapped disk.
            root.verify(self.catalog, self.clock.wall_us())
            if not root.usable:
                return
            self._delete(oldest[:4], "; ".join(reasons), root.name)

    def _delete(self, segs: Sequence[Segment], reason: str, root_name: str | None = None) -> None:
        rows = self.catalog.delete_segments(segs)
        done = []
        for (gid, root_id, rel), seg in zip(rows, segs, strict=True):
            root = self.storage.by_id(root_id)
            try:
                root.file(rel).unlink(missing_ok=True)
            except OSError as e:
                log.error("cannot delete %s on root %s: %s", rel, root.name, e.strerror)
                continue
            done.append(gid)
            root.add_closed(-seg.bytes)
            self.deleted_segments += 1
            self.deleted_bytes += seg.bytes
        self.catalog.forget_garbage(done)
        log.info(
            "retention deleted %d segment(s), %d bytes%s: %s",
            len(done), sum(s.bytes for s in segs),
            f" on root {root_name}" if root_name else "", reason,
        )  # fmt: skip

    def loop(self, stop: threading.Event) -> None:
        """Thread body: a pass every interval, or sooner when woken."""
        away: str | None = None
        while not stop.is_set():
            try:
                self.run_once()
                if away is not None:
                    log.info("retention resumed: the catalog is back")
                    away = None
            except VmsError as e:
                if e.kind != Kind.UNAVAILABLE:
                    log.error("retention pass failed: %s", e)
                elif away is None:  # once per outage, not every second
                    log.warning("retention paused: %s", e)
                away = str(e)
            except Exception:
                log.exception("retention pass failed")
            self.wake.wait(self.config.storage.retention_interval_s)
            self.wake.clear()
