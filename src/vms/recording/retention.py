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
from collections.abc import Callable, Sequence

from vms.audit.log import AuditLog
from vms.catalog.store import Catalog, Segment
from vms.clock import Clock
from vms.config import CameraConfig, Config
from vms.errors import Kind, VmsError
from vms.recording.storage import Root, Storage

log = logging.getLogger(__name__)

BATCH = 16
DAY_US = 86_400 * 1_000_000
# Bytes on a root's file system that are not recordings yet are ours, or nobody's: allocation
# rounding, directories, the identity file, the catalog when it shares the disk. Up to 1 % of
# the disk (at least 1 MiB) counts as that; beyond it the disk holds someone else's files.
OTHER_SLACK_DIVISOR = 100
OTHER_SLACK_MIN = 1 << 20


def human_bytes(n: int) -> str:
    """Decimal units, as disks are sold: ``12.3 GB``."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 10**6:.1f} MB"


class Retention:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        storage: Storage,
        clock: Clock,
        cameras: Callable[[], list[CameraConfig]] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        """``cameras`` gives the cameras as they are now (they change at run time); by default,
        the configuration's."""
        self.config = config
        self.cameras = cameras or (lambda: config.cameras)
        self.audit = audit  # one entry per batch deleted (docs/design/audit.md)
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
        for cam in self.cameras():
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
        """The root's quota and free-space rules, oldest first, capped by the pass's own count.

        A pass deletes at most the shortfall it saw at its start (the larger of the bytes over
        quota and the bytes under the free-space minimum), counted from the ``bytes`` of the
        rows it deleted: a file system that frees space late (copy-on-write, snapshots, a file
        held open elsewhere) shows no room yet, and deleting "until statvfs shows room" would
        empty the root."""
        cfg = root.config
        try:
            free = root.free_bytes()
            other = root.other_bytes()
            slack = max(root.total_bytes() // OTHER_SLACK_DIVISOR, OTHER_SLACK_MIN)
        except OSError as e:
            log.error("cannot stat storage root %s: %s", root.name, e.strerror)
            return
        # Someone else's bytes: deleting recordings within their quota for them is "early".
        foreign = other > slack
        if not foreign and root.warning is not None:
            root.warning = None
            log.info("storage root %s: recordings are no longer deleted early", root.name)
        short_free = max(0, cfg.min_free_bytes - free)
        deleted = 0
        while True:
            over_quota = 0 if cfg.max_bytes is None else root.used_bytes - cfg.max_bytes
            free_need = 0
            if deleted < short_free:
                try:
                    free = root.free_bytes()
                except OSError as e:
                    log.error("cannot stat storage root %s: %s", root.name, e.strerror)
                    return
                free_need = min(cfg.min_free_bytes - free, short_free - deleted)
            need = max(over_quota, free_need)
            if need <= 0:
                self._full_warned.discard(root.name)
                return
            reasons = []
            if free_need > 0:
                reasons.append(f"free space {free} < {cfg.min_free_bytes}")
            if over_quota > 0:
                reasons.append(f"{root.used_bytes} bytes used > quota {cfg.max_bytes}")
            oldest = self.catalog.oldest(root.id or 0, BATCH)
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
            batch, covered = [], 0
            for seg in oldest:
                batch.append(seg)
                covered += seg.bytes
                if covered >= need:
                    break
            gone = self._delete(batch, "; ".join(reasons), root.name)
            if gone == 0:
                return  # nothing could be unlinked (logged): try again at the next pass
            deleted += gone
            if foreign and free_need > 0:
                # The part the quota did not ask for went for the free-space rule alone.
                self._deleted_early(root, gone - max(0, over_quota), other)

    def _deleted_early(self, root: Root, nbytes: int, other: int) -> None:
        if nbytes <= 0:
            return
        root.bytes_deleted_early += nbytes
        warning = (
            f"{human_bytes(other)} on this disk are not recordings; "
            "recordings were deleted early to keep writing"
        )
        if root.warning is None:
            log.warning("storage root %s is degraded: %s", root.name, warning)
        root.warning = warning

    def _delete(self, segs: Sequence[Segment], reason: str, root_name: str | None = None) -> int:
        """Delete segments (rows first); returns the bytes of those whose file went."""
        rows = self.catalog.delete_segments(segs)
        done, gone = [], 0
        for (gid, root_id, rel), seg in zip(rows, segs, strict=True):
            root = self.storage.by_id(root_id)
            try:
                root.file(rel).unlink(missing_ok=True)
            except OSError as e:
                log.error("cannot delete %s on root %s: %s", rel, root.name, e.strerror)
                continue
            done.append(gid)
            gone += seg.bytes
            root.add_closed(-seg.bytes)
            self.deleted_segments += 1
            self.deleted_bytes += seg.bytes
        self.catalog.forget_garbage(done)
        log.info(
            "retention deleted %d segment(s), %d bytes%s: %s",
            len(done), sum(s.bytes for s in segs),
            f" on root {root_name}" if root_name else "", reason,
        )  # fmt: skip
        if self.audit is not None and done:
            cameras = sorted({s.camera_id for s in segs})
            self.audit.append("system", "retention.delete", root_name or "",
                              {"segments": len(done), "bytes": gone, "reason": reason,
                               "cameras": cameras})  # fmt: skip
        return gone

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
