"""Retention: keep each camera within its days and each root within its bytes and free space,
keep only what the record modes want, and expire events.

Runs every ``retention_interval_s`` (and at once when a recorder reports a storage problem).
Oldest first. Each deletion moves the rows to ``garbage`` in one transaction, then unlinks the
files, then forgets the garbage rows: the catalog row goes before the file, so the catalog never
points at a deleted file, and a crash in between leaves only garbage that start-up finishes.
A root is re-identified before every pass; nothing is deleted from a root that is not mounted.

What each rule deletes (docs/design/detection.md, "Recording modes"):

- ``record: motion | events``: a closed segment that ended ``recording.decide_after_s`` ago (at
  least ``events.pre_s`` and 70 s: motion rows are written a minute at a time) and overlaps no
  motion (motion mode: no motion and no event) or no event (events mode), each widened by
  ``events.pre_s`` before and ``events.post_s`` after. A segment is deleted only where motion
  rows show the camera was watched all along, over the segment widened the same way: a minute
  without a row (detection off, the process down) keeps its recording.
- ``retention_days``: anything older. With ``event_retention_days`` longer than that, a segment
  overlapping an event (widened likewise) stays until ``event_retention_days``; the rest goes
  at ``retention_days``. Without ``retention_days``, nothing is deleted by age.
- Events (rows and snapshots) and motion rows older than ``events.keep_days`` are expired, at
  most once a minute; a camera whose ``event_retention_days`` is longer keeps its events that
  long (its recordings' reason to stay).

Traps: record modes and event retention judge at most every :data:`JUDGE_EVERY_S`, and walk
the segments once each, in ``(end_us, id)`` order from a mark kept in memory, not re-read
every second; after a restart each rule walks a camera's segments once more from the first
(in bounded batches a pass). A row that reaches the catalog late (after an outage), ending
before the mark, is judged at the next restart.
"""

from __future__ import annotations

import bisect
import functools
import logging
import threading
from collections.abc import Callable, Sequence

from vms.audit.log import AuditLog
from vms.catalog.store import Catalog, Segment
from vms.clock import Clock
from vms.config import CameraConfig, Config, RecordMode, StreamName
from vms.errors import Kind, VmsError
from vms.events.model import Event
from vms.events.snapshots import Snapshots
from vms.events.store import EventStore, covered, merge
from vms.media import MAIN, SUB
from vms.recording.storage import Root, Storage

log = logging.getLogger(__name__)

BATCH = 16
DAY_US = 86_400 * 1_000_000
# Record modes and event retention judge segments this many at a time, at most this many
# batches per camera and rule in one pass (the first pass after a start walks them all).
JUDGE_BATCH = 64
JUDGE_BATCHES = 8
# ... at most this often: a segment closes once a minute by default, and a query per camera
# stream every second (what passes for the quotas) cost 1-2 ms of CPU each for nothing.
JUDGE_EVERY_S = 10.0
# Events and motion rows: expired at most this often, this many a transaction.
EXPIRE_EVERY_S = 60.0
# Beyond ``events.pre_s``, before a segment is judged: a minute's motion row is written when the
# minute ends (up to 60 s after the frames), an event reaches the catalog through the bus.
DECIDE_MARGIN_S = 70.0
EXPIRE_BATCH = 500
EXPIRE_BATCHES = 20
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
        events: EventStore | None = None,
        snapshots: Snapshots | None = None,
    ) -> None:
        """``cameras`` gives the cameras as they are now (they change at run time); by default,
        the configuration's. ``events`` and ``snapshots``: by default, the catalog's and the
        data directory's."""
        self.config = config
        self.cameras = cameras or (lambda: config.cameras)
        self.audit = audit  # one entry per batch deleted (docs/design/audit.md)
        self.catalog = catalog
        self.storage = storage
        self.clock = clock
        self.wake = threading.Event()
        self.events = events or EventStore(catalog)
        self.snapshots = snapshots or Snapshots(config.data_dir)
        self.deleted_segments = 0
        self.deleted_bytes = 0
        self.deleted_events = 0
        self._full_warned: set[str] = set()
        # (camera, stream, rule) -> the (end_us, id) of the last segment that rule judged.
        self._marks: dict[tuple[str, int, str], tuple[int, int]] = {}
        self._unwatched_warned: set[str] = set()
        self._next_expiry: float | None = None
        self._next_judge: float | None = None

    def run_once(self) -> int:
        """One pass over cameras and roots. Returns the number of segments deleted."""
        before = self.deleted_segments
        self.storage.verify()
        now = self.clock.wall_us()
        cameras = self.cameras()
        tick = self.clock.monotonic()
        judge = self._next_judge is None or tick >= self._next_judge
        if judge:
            self._next_judge = tick + JUDGE_EVERY_S
        for cam in cameras:
            if judge:
                self._record_mode(cam, now)
            self._by_days(cam, now, judge)
        self._expire_events(cameras, now)
        for root in self.storage.usable():
            self._enforce_root(root)
        return self.deleted_segments - before

    # --- by age, record modes ------------------------------------------------------------

    def _older_than(self, cam: CameraConfig, cutoff: int, reason: str) -> None:
        while True:
            expired = self.catalog.expired(cam.id, cutoff, BATCH)
            expired = [s for s in expired if self._root_ok(s.root_id)]
            if not expired:
                break
            self._delete(expired, reason)

    def _by_days(self, cam: CameraConfig, now: int, judge: bool) -> None:
        days = cam.retention_days
        if days is None:
            return
        longer = cam.event_retention_days
        if longer is None or longer <= days:
            self._older_than(cam, now - int(days * DAY_US), f"older than {days:g} days")
            return
        self._older_than(cam, now - int(longer * DAY_US), f"older than {longer:g} days")
        if judge:
            self._judge(
                cam, "days", now - int(days * DAY_US), ("events",), watched=False,
                reason=f"older than {days:g} days, no event",
            )  # fmt: skip

    def _record_mode(self, cam: CameraConfig, now: int) -> None:
        if cam.record not in (RecordMode.MOTION, RecordMode.EVENTS):
            return
        kinds = ("motion", "events") if cam.record == RecordMode.MOTION else ("events",)
        # Not before what happened up to ``pre_s`` after the segment is in the catalog: judged
        # earlier, a minute not written yet would keep the segment for good (as unwatched).
        config = self.config
        delay = max(config.recording.decide_after_s, config.events.pre_s + DECIDE_MARGIN_S)
        cutoff = now - int(delay * 1e6)
        what = "motion" if cam.record == RecordMode.MOTION else "event"
        self._judge(cam, "mode", cutoff, kinds, watched=True,
                    reason=f"record: {cam.record.value}, no {what} near it")  # fmt: skip

    def _judge(
        self,
        cam: CameraConfig,
        rule: str,
        cutoff: int,
        kinds: tuple[str, ...],
        *,
        watched: bool,
        reason: str,
    ) -> None:
        """Delete the segments that ended by ``cutoff`` and overlap nothing of ``kinds``
        (widened by the events' pre and post roll); with ``watched``, only those whose every
        minute has a motion row. Each segment is judged once (see the module's traps)."""
        pre = int(self.config.events.pre_s * 1e6)
        post = int(self.config.events.post_s * 1e6)
        streams = [MAIN] if StreamName.MAIN in cam.record_streams else []
        streams += [SUB] if StreamName.SUB in cam.record_streams else []
        for stream in streams:
            key = (cam.id, stream, rule)
            for _ in range(JUDGE_BATCHES):
                mark = self._marks.get(key)
                segs = self.catalog.ended_after(cam.id, stream, mark, cutoff, JUDGE_BATCH)
                # Never past a segment of a root that is not there now: judged when it is back.
                ok = [s for s in segs if self._root_ok(s.root_id)]
                if len(ok) < len(segs):
                    bad = next(i for i, s in enumerate(segs) if not self._root_ok(s.root_id))
                    segs = ok = segs[:bad]
                if not segs:
                    break
                lo = min(s.start_us for s in segs)
                hi = max(s.end_us for s in segs)
                # What, widened, reaches into [lo, hi): happened in [lo - post, hi + pre).
                keep = merge(
                    (s - pre, e + post)
                    for kind in kinds
                    for s, e in self.events.intervals(cam.id, lo - post, hi + pre, kind=kind)
                )
                starts = [s for s, _ in keep]
                seen = set()
                if watched:
                    seen = self.events.watched_minutes(cam.id, lo - post, hi + pre)
                doomed, unwatched = [], 0
                for seg in ok:
                    i = bisect.bisect_left(starts, seg.end_us) - 1
                    if i >= 0 and keep[i][1] > seg.start_us:
                        continue
                    # Watched all along: the segment, and as far around it as motion would
                    # keep it (the minute after it is written only when that minute ends).
                    if watched and not covered(seen, seg.start_us - post, seg.end_us + pre):
                        unwatched += 1
                        continue
                    doomed.append(seg)
                if doomed:
                    self._delete(doomed, reason)
                if unwatched and cam.id not in self._unwatched_warned:
                    log.warning(
                        "camera %s records in %s mode, but its motion was not measured for "
                        "%d segment(s): they are kept", cam.id, cam.record.value, unwatched,
                    )  # fmt: skip
                    self._unwatched_warned.add(cam.id)
                self._marks[key] = (segs[-1].end_us, segs[-1].id)
                if len(segs) < JUDGE_BATCH:
                    break

    # --- events ----------------------------------------------------------------------------

    def _expire_events(self, cameras: list[CameraConfig], now: int) -> None:
        """Events (and their snapshots) and motion rows past ``events.keep_days``; a camera
        with a longer ``event_retention_days`` keeps its events that long. At most once a
        :data:`EXPIRE_EVERY_S`, in bounded batches."""
        tick = self.clock.monotonic()
        if self._next_expiry is not None and tick < self._next_expiry:
            return
        self._next_expiry = tick + EXPIRE_EVERY_S
        days = self.config.events.keep_days
        longer = {
            c.id: c.event_retention_days
            for c in cameras
            if c.event_retention_days is not None and c.event_retention_days > days
        }
        cutoff = now - int(days * DAY_US)
        self._expire_batches(
            lambda: self.events.expire(cutoff, EXPIRE_BATCH, except_cameras=longer),
            f"ended more than {days:g} days ago",
        )
        for camera_id, keep in longer.items():
            self._expire_batches(
                functools.partial(
                    self.events.expire, now - int(keep * DAY_US), EXPIRE_BATCH, cameras=[camera_id]
                ),
                f"ended more than {keep:g} days ago (event_retention_days)",
            )
        for _ in range(EXPIRE_BATCHES):
            if self.events.expire_motion(cutoff, EXPIRE_BATCH * 10) < EXPIRE_BATCH * 10:
                break

    def _expire_batches(self, expire: Callable[[], list[Event]], reason: str) -> None:
        for _ in range(EXPIRE_BATCHES):
            gone = expire()
            if not gone:
                return
            for e in gone:
                try:
                    self.snapshots.delete(e.camera_id, e.id)
                except (OSError, VmsError) as err:
                    log.error("cannot delete the snapshots of event %s: %s", e.id, err)
            self.deleted_events += len(gone)
            cameras = sorted({e.camera_id for e in gone})
            log.info("retention expired %d event(s): %s", len(gone), reason)
            if self.audit is not None:
                self.audit.append("system", "retention.events", "",
                                  {"events": len(gone), "reason": reason,
                                   "cameras": cameras})  # fmt: skip
            if len(gone) < EXPIRE_BATCH:
                return

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
