"""Storage roots: the disks recordings live on, each proven to be the disk we think it is.

Every root directory carries an identity file (``.vms-root.json``) whose uuid the catalog
remembers. A root whose directory is missing, or that lacks the identity file although the
catalog knows it (a mount point whose disk is not mounted), or whose uuid differs (a swapped
disk), is *refused*: nothing is written to it and nothing is deleted from it, so a missing disk
never reads as "everything was deleted".
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from pathlib import Path

from vms.catalog.store import Catalog
from vms.clock import Clock
from vms.config import RootConfig
from vms.errors import Kind, VmsError
from vms.recording.segment import FileIO, fsync_dir

log = logging.getLogger(__name__)

IDENTITY = ".vms-root.json"
# What a fresh file system's root may hold before we claim it.
_CLAIMABLE = {"lost+found", IDENTITY + ".tmp"}


class Root:
    """One storage root and what we know of it now."""

    def __init__(self, config: RootConfig) -> None:
        self.config = config
        self.name = config.name
        self.path = config.path
        self.id: int | None = None
        self.uuid: str | None = None
        self.error: str | None = "not checked yet"
        self.write_error: str | None = None  # last failed write (ENOSPC...), cleared on success
        # Usable but not as configured: recordings deleted early because the disk is filled by
        # something else (set and cleared by retention, see docs/design/storage.md).
        self.warning: str | None = None
        self.bytes_deleted_early = 0  # counter, written by the retention thread only
        self.io = FileIO()  # the system calls that write segments (a seam for tests)
        self._lock = threading.Lock()
        self._open_bytes: dict[int, int] = {}  # bytes of open segments, not yet in the catalog
        self._closed_bytes = 0  # bytes of closed segments; kept in step by recorder and retention

    @property
    def usable(self) -> bool:
        return self.error is None and self.id is not None

    def set_open_bytes(self, seg_id: int, size: int | None) -> None:
        with self._lock:
            if size is None:
                self._open_bytes.pop(seg_id, None)
            else:
                self._open_bytes[seg_id] = size

    @property
    def open_bytes(self) -> int:
        with self._lock:
            return sum(self._open_bytes.values())

    def add_closed(self, delta: int) -> None:
        with self._lock:
            self._closed_bytes += delta

    def sync_usage(self, catalog: Catalog) -> None:
        """Re-read the bytes of this root's segments from the catalog (at start; after repairs)."""
        if self.id is not None:
            total = catalog.root_bytes(self.id)
            with self._lock:
                self._closed_bytes = total

    @property
    def used_bytes(self) -> int:
        """Closed segments (catalog) plus open ones (their current size)."""
        with self._lock:
            return self._closed_bytes + sum(self._open_bytes.values())

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def total_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_blocks * st.f_frsize

    def other_bytes(self) -> int:
        """Bytes in use on this file system that are not our recordings (can be < 0).

        Counted against ``f_bfree``, not ``f_bavail``: the blocks reserved for root (5 % of
        an ext4 disk) are nobody's files. What remains beyond the recordings is someone else's
        files, plus a little of ours: allocation rounding, directories, the identity file."""
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize - self.used_bytes

    def file(self, rel: str) -> Path:
        return self.path / rel

    def verify(self, catalog: Catalog, now_us: int) -> None:
        """Check the identity of this root; sets ``error`` (None when usable)."""
        error = self._identify(catalog, now_us)
        if error is None and self.error is not None:
            self.sync_usage(catalog)
        if error != self.error:
            if error:
                log.error("storage root %s refused: %s", self.name, error)
            elif self.error != "not checked yet":
                log.info("storage root %s is back at %s", self.name, self.path)
        self.error = error

    def _identify(self, catalog: Catalog, now_us: int) -> str | None:
        known = catalog.root_by_name(self.name)
        if not self.path.is_dir():
            if known is not None or not self.config.create:
                return f"directory {self.path} is missing (disk not mounted?)"
            try:
                self.path.mkdir(parents=True)
            except OSError as e:
                return f"cannot create {self.path}: {e.strerror}"
        ident = self.path / IDENTITY
        try:
            found = json.loads(ident.read_text())["uuid"]
        except FileNotFoundError:
            found = None
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"identity file {ident} is unreadable: {e}"
        if known is not None:
            root_id, known_uuid = known
            if found is None:
                return (
                    f"identity file {ident} is missing although this root holds recordings "
                    "(disk not mounted?)"
                )
            if found != known_uuid:
                return f"identity file {ident} names another disk ({found}, expected {known_uuid})"
            self.id, self.uuid = root_id, known_uuid
            return None
        if found is not None:
            return f"{ident} belongs to a root this catalog does not know ({found})"
        foreign = [p.name for p in self.path.iterdir() if p.name not in _CLAIMABLE]
        if foreign:
            return (
                f"{self.path} is not empty and has no identity file: not ours to claim "
                f"(found {', '.join(sorted(foreign)[:3])})"
            )
        new_uuid = str(uuid.uuid4())
        tmp = self.path / (IDENTITY + ".tmp")
        body = json.dumps({"uuid": new_uuid, "name": self.name, "created_us": now_us})
        try:
            with open(tmp, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, ident)
            fsync_dir(self.path)
        except OSError as e:
            return f"cannot write identity file {ident}: {e.strerror}"
        self.id = catalog.add_root(self.name, new_uuid, now_us)
        self.uuid = new_uuid
        log.info("storage root %s initialised at %s", self.name, self.path)
        return None


class Storage:
    """All roots; picks where the next segment goes."""

    def __init__(self, roots: list[RootConfig], catalog: Catalog, clock: Clock) -> None:
        self.roots = [Root(r) for r in roots]
        self.catalog = catalog
        self.clock = clock

    def verify(self) -> None:
        now = self.clock.wall_us()
        for root in self.roots:
            root.verify(self.catalog, now)

    def by_id(self, root_id: int) -> Root:
        for root in self.roots:
            if root.id == root_id:
                return root
        raise VmsError(Kind.STORAGE_MISSING, f"storage root #{root_id} is not configured")

    def usable(self) -> list[Root]:
        return [r for r in self.roots if r.usable]

    @staticmethod
    def headroom(root: Root) -> int:
        """Bytes that may still be written before retention has to make room."""
        room = root.free_bytes() - root.config.min_free_bytes
        if root.config.max_bytes is not None:
            room = min(room, root.config.max_bytes - root.used_bytes)
        return room

    def choose(self, allowed: list[str] | None = None) -> Root:
        """The usable root (among ``allowed``) with the most headroom. Raises if none can
        take a write at all; a root past its quota or minimum free space still takes writes
        (retention is making room), so headroom ranks roots but free space decides."""
        usable = [r for r in self.usable() if allowed is None or r.name in allowed]
        if not usable:
            problems = "; ".join(
                f"{r.name}: {r.error}" for r in self.roots if allowed is None or r.name in allowed
            )
            raise VmsError(Kind.STORAGE_MISSING, f"no usable storage root ({problems})")
        best: tuple[int, int, Root] | None = None
        for root in usable:
            try:
                free = root.free_bytes()
                room = self.headroom(root)
            except OSError as e:
                root.error = f"cannot stat {root.path}: {e.strerror}"
                continue
            if free > 0 and (best is None or room > best[0]):
                best = (room, free, root)
        if best is None:
            names = ", ".join(r.name for r in usable)
            raise VmsError(Kind.STORAGE_FULL, f"storage full: no space left on root(s) {names}")
        return best[2]
