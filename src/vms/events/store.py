"""Events and motion in the catalog (migration 0006): what the event list, the timeline's heat
strip and retention's record modes read.

- An event is one row, written at each change (:meth:`EventStore.write`): new inserts, update
  and end replace the row. The whole event is kept as JSON in ``data``; the columns beside it
  are what queries filter on. The zones it entered are also rows of ``event_zones`` (the zone
  filter: an exact, indexed equality on SQLite and PostgreSQL alike, see the migration).
- Motion is one row per camera per minute: 60 bytes, the highest score (0–255) of each second.
  Writing a minute again keeps the higher score of each second (:meth:`EventStore.add_motion`).

Traps:

- **A minute without a row was not watched.** The pipeline writes a row for every minute it
  watched, zeros included; retention deletes recordings of a camera in ``record: motion`` only
  where rows say nothing moved, and keeps a minute without a row (the detector was off, the
  process was down). So rows must not be skipped because they are all zeros.
- **Messages can arrive twice** (a sink retried after a timeout): writing is idempotent, and
  an ended event is never made active again by a late update.
- **An event left active by a crash** stays active until :meth:`EventStore.end_active` ends it
  at its last update; until then it counts as lasting up to now (the record modes keep its
  recordings: the safe side).
- Times are wall-clock µs of the frames, as everywhere in the catalog. The list is newest
  first, paged on ``(start_us, id)``; ``start``/``end`` select events that *started* in the
  window (an index range, where "overlaps" would read the whole table for a short answer).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
from collections.abc import Collection, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from vms.catalog.store import Catalog, metadata
from vms.errors import Kind, VmsError, capped
from vms.events.model import Event, EventMessage, Message

log = logging.getLogger(__name__)

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
SCORES = 60  # bytes of a motion row: one per second of its minute

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("camera_id", sa.String(64), nullable=False),
    sa.Column("stream", sa.String(8), nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("start_us", sa.BigInteger, nullable=False),
    sa.Column("end_us", sa.BigInteger, nullable=True),
    sa.Column("top_score", sa.Float, nullable=False),
    sa.Column("zones", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("updated_us", sa.BigInteger, nullable=False),
)

event_zones = sa.Table(
    "event_zones",
    metadata,
    sa.Column(
        "event_id",
        sa.String(36),
        sa.ForeignKey("events.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("zone", sa.String(64), primary_key=True),
    sa.Column("start_us", sa.BigInteger, nullable=False),
)

minutes = sa.Table(
    "motion",
    metadata,
    sa.Column("camera_id", sa.String(64), primary_key=True),
    sa.Column("minute_us", sa.BigInteger, primary_key=True),
    sa.Column("scores", sa.LargeBinary(SCORES), nullable=False),
)

KINDS = ("motion", "events")


def _updated_us(e: Event) -> int:
    """The time of the latest frame the event describes."""
    if e.end_us is not None:
        return e.end_us
    times = [e.start_us] + [t for t, _ in e.path[-1:]]
    if e.snapshot_us is not None:
        times.append(e.snapshot_us)
    return max(times)


def _row(e: Event) -> dict[str, Any]:
    return {
        "camera_id": e.camera_id, "stream": e.stream, "label": e.label, "start_us": e.start_us,
        "end_us": e.end_us, "top_score": float(e.top_score), "zones": json.dumps(e.zones),
        "data": json.dumps(e.to_json(), separators=(",", ":")), "updated_us": _updated_us(e),
    }  # fmt: skip


def _event(data: str) -> Event:
    return Event.from_json(json.loads(data))


def merge(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ``[start, end)`` runs, overlapping or touching ones joined."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(runs):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def covered(watched: Collection[int], start_us: int, end_us: int) -> bool:
    """Whether each minute ``[start_us, end_us)`` touches is in ``watched`` (minute starts)."""
    first = start_us - start_us % MINUTE_US
    return all(t in watched for t in range(first, end_us, MINUTE_US))


class EventStore:
    """The events and motion tables of one catalog. Thread-safe; each method one transaction."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # --- events ------------------------------------------------------------------------

    def write(self, message: EventMessage) -> None:
        """Apply a new, update or end: the row becomes ``message.after``. Idempotent; an
        update of an unknown id inserts it (the new was lost), and an ended row stays ended."""
        e = message.after
        row = _row(e)
        with self.catalog.write() as c:
            q = sa.select(events.c.end_us).where(events.c.id == e.id)
            found = c.execute(q).first()
            if found is None:
                c.execute(events.insert().values(id=e.id, **row))
            elif found.end_us is not None and e.end_us is None:
                log.debug("event %s: an update after its end is ignored", e.id)
                return
            else:
                c.execute(events.update().where(events.c.id == e.id).values(**row))
            self._zones(c, e)

    @staticmethod
    def _zones(c: Connection, e: Event) -> None:
        z = event_zones.c
        have = {r.zone for r in c.execute(sa.select(z.zone).where(z.event_id == e.id))}
        want = set(e.zones)
        if have - want:
            c.execute(event_zones.delete().where(z.event_id == e.id, z.zone.in_(have - want)))
        new = [{"event_id": e.id, "zone": name, "start_us": e.start_us} for name in want - have]
        if new:
            c.execute(event_zones.insert(), new)

    def get(self, event_id: str) -> Event:
        with self.catalog.read() as c:
            data = c.execute(sa.select(events.c.data).where(events.c.id == event_id)).scalar()
        if data is None:
            raise VmsError(Kind.NOT_FOUND, f"no event {capped(event_id)}")
        return _event(data)

    def list(
        self,
        *,
        cameras: Collection[str] | None,
        label: str | None = None,
        zone: str | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        active: bool | None = None,
        limit: int = 100,
        before: tuple[int, str] | None = None,
    ) -> list[Event]:
        """Events newest first (by start, then id); ``cameras`` None: every camera's. Those
        that started in ``[start_us, end_us)``; ``before``: after the page that ended there."""
        if cameras is not None and not cameras:
            return []
        e = events.c
        # With a zone, the zone table's (zone, start_us) index drives the query.
        key_start, key_id = e.start_us, e.id
        q = sa.select(e.data)
        if zone is not None:
            z = event_zones.c
            q = q.join(event_zones, z.event_id == e.id).where(z.zone == zone)
            key_start, key_id = z.start_us, z.event_id
        if cameras is not None:
            q = q.where(e.camera_id.in_(sorted(cameras)))
        if label is not None:
            q = q.where(e.label == label)
        if start_us is not None:
            q = q.where(key_start >= start_us)
        if end_us is not None:
            q = q.where(key_start < end_us)
        if active is not None:
            q = q.where(e.end_us.is_(None) if active else e.end_us.is_not(None))
        if before is not None:
            b_start, b_id = before
            q = q.where(
                sa.or_(key_start < b_start, sa.and_(key_start == b_start, key_id < b_id))
            )
        q = q.order_by(key_start.desc(), key_id.desc()).limit(limit)
        with self.catalog.read() as c:
            return [_event(r.data) for r in c.execute(q)]

    def expire(
        self,
        before_us: int,
        limit: int = 500,
        *,
        cameras: Collection[str] | None = None,
        except_cameras: Collection[str] = (),
    ) -> builtins.list[Event]:
        """Delete at most ``limit`` events that ended before ``before_us``, oldest first, and
        return them (the caller deletes their snapshots). ``cameras``: only theirs;
        ``except_cameras``: not theirs (cameras that keep events longer)."""
        e = events.c
        # An event that ended before the cutoff started before it: the start index bounds the
        # scan to old rows (the few long or abandoned active ones are skipped by the filter).
        q = sa.select(e.id, e.data).where(
            e.start_us < before_us, e.end_us.is_not(None), e.end_us < before_us
        )
        if cameras is not None:
            if not cameras:
                return []
            q = q.where(e.camera_id.in_(sorted(cameras)))
        if except_cameras:
            q = q.where(e.camera_id.not_in(sorted(except_cameras)))
        q = q.order_by(e.start_us, e.id).limit(limit)
        with self.catalog.write() as c:
            rows = c.execute(q).all()
            ids = [r.id for r in rows]
            if ids:
                c.execute(event_zones.delete().where(event_zones.c.event_id.in_(ids)))
                c.execute(events.delete().where(e.id.in_(ids)))
        return [_event(r.data) for r in rows]

    def end_active(self, camera_id: str | None = None) -> builtins.list[Event]:
        """End every event still active (of one camera, or all): what a stop or a crash left
        open, ended at its last update. For the start of detection, before any new event.
        Returns the events as ended."""
        e = events.c
        q = sa.select(e.id, e.data, e.updated_us).where(e.end_us.is_(None))
        if camera_id is not None:
            q = q.where(e.camera_id == camera_id)
        ended = []
        with self.catalog.write() as c:
            for r in c.execute(q).all():
                event = _event(r.data)
                event.end_us = max(event.start_us, int(r.updated_us))
                event.current_zones, event.loitering = [], []
                c.execute(events.update().where(e.id == r.id).values(**_row(event)))
                ended.append(event)
        return ended

    # --- motion --------------------------------------------------------------------------

    def add_motion(self, camera_id: str, minute_us: int, scores: bytes) -> None:
        """Store a minute's 60 per-second scores; a row already there keeps, second by
        second, the higher score (a minute written twice, by a restart within it)."""
        if minute_us % MINUTE_US:
            raise VmsError(Kind.INVALID_ARGUMENT, f"motion: {minute_us} is not a whole minute")
        if len(scores) != SCORES:
            raise VmsError(
                Kind.INVALID_ARGUMENT, f"motion: {len(scores)} scores, a minute has {SCORES}"
            )
        m = minutes.c
        key = (m.camera_id == camera_id, m.minute_us == minute_us)
        with self.catalog.write() as c:
            # FOR UPDATE (PostgreSQL; SQLite serialises writers): two writers of one minute
            # merge one after the other instead of the second overwriting the first.
            q = sa.select(m.scores).where(*key).with_for_update()
            old = c.execute(q).scalar()
            if old is None:
                c.execute(minutes.insert().values(camera_id=camera_id, minute_us=minute_us,
                                                 scores=bytes(scores)))  # fmt: skip
            else:
                both = bytes(max(a, b) for a, b in zip(old, scores, strict=True))
                if both != bytes(old):
                    c.execute(minutes.update().where(*key).values(scores=both))

    def _minutes(
        self, camera_id: str, start_us: int, end_us: int
    ) -> builtins.list[tuple[int, bytes]]:
        m = minutes.c
        first = start_us - start_us % MINUTE_US
        q = (
            sa.select(m.minute_us, m.scores)
            .where(m.camera_id == camera_id, m.minute_us >= first, m.minute_us < end_us)
            .order_by(m.minute_us)
        )
        with self.catalog.read() as c:
            return [(int(r.minute_us), bytes(r.scores)) for r in c.execute(q)]

    def motion(
        self, camera_id: str, start_us: int, end_us: int
    ) -> builtins.list[tuple[int, int]]:
        """``(second start µs, score)`` of each second in ``[start_us, end_us)`` (any part of
        it) whose score is above 0, oldest first."""
        out = []
        for minute, scores in self._minutes(camera_id, start_us, end_us):
            for i, score in enumerate(scores):
                t = minute + i * SECOND_US
                if score and t + SECOND_US > start_us and t < end_us:
                    out.append((t, score))
        return out

    def watched_minutes(self, camera_id: str, start_us: int, end_us: int) -> set[int]:
        """The minutes (their start, µs) touching ``[start_us, end_us)`` that have a motion
        row: when the camera's motion was measured (see the module's traps)."""
        m = minutes.c
        first = start_us - start_us % MINUTE_US
        q = sa.select(m.minute_us).where(
            m.camera_id == camera_id, m.minute_us >= first, m.minute_us < end_us
        )
        with self.catalog.read() as c:
            return {int(r.minute_us) for r in c.execute(q)}

    def watched(self, camera_id: str, start_us: int, end_us: int) -> bool:
        """Whether every minute ``[start_us, end_us)`` touches has a motion row."""
        return covered(self.watched_minutes(camera_id, start_us, end_us), start_us, end_us)

    def expire_motion(self, before_us: int, limit: int = 5000) -> int:
        """Delete at most ``limit`` motion rows of minutes that ended before ``before_us``,
        oldest first; returns how many went."""
        m = minutes.c
        q = (
            sa.select(m.camera_id, m.minute_us)
            .where(m.minute_us <= before_us - MINUTE_US)
            .order_by(m.minute_us)
            .limit(limit)
        )
        with self.catalog.write() as c:
            keys = [(r.camera_id, r.minute_us) for r in c.execute(q)]
            if keys:
                c.execute(minutes.delete().where(sa.tuple_(m.camera_id, m.minute_us).in_(keys)))
        return len(keys)

    # --- intervals -------------------------------------------------------------------------

    def intervals(
        self, camera_id: str, start_us: int, end_us: int, *, kind: str
    ) -> builtins.list[tuple[int, int]]:
        """Where something happened in ``[start_us, end_us)``, as sorted, merged ``[start,
        end)`` runs clipped to the window: ``motion``, seconds with a score of 1 or more;
        ``events``, each event from its start to its end (an active one: to the window's
        end)."""
        if kind not in KINDS:
            raise VmsError(Kind.INVALID_ARGUMENT, f"intervals: kind {capped(kind)} is not "
                                                  f"one of {', '.join(KINDS)}")  # fmt: skip
        if end_us <= start_us:
            return []
        if kind == "motion":
            runs = [(t, t + SECOND_US) for t, _ in self.motion(camera_id, start_us, end_us)]
        else:
            e = events.c
            cols = (e.start_us, e.end_us)
            # Two index ranges of (camera_id, end_us): the ended after the window's start, and
            # the active ones (NULL), rather than an OR that neither index serves.
            ended = sa.select(*cols).where(
                e.camera_id == camera_id, e.end_us > start_us, e.start_us < end_us
            )
            active = sa.select(*cols).where(
                e.camera_id == camera_id, e.end_us.is_(None), e.start_us < end_us
            )
            with self.catalog.read() as c:
                rows = [*c.execute(ended), *c.execute(active)]
            runs = [(int(s), end_us if x is None else int(x)) for s, x in rows]
        clipped = ((max(s, start_us), min(x, end_us)) for s, x in runs)
        return merge((s, x) for s, x in clipped if x > s)


class StoreSink:
    """The bus's sink that writes events to the catalog (:class:`vms.events.bus.Sink`).

    A catalog that is away (``UNAVAILABLE``) is waited for, retried with a growing pause,
    until it is back or the sink stops; the bus's bounded queue holds what arrives meanwhile.
    Any other error gives the message up (raised: the bus counts it)."""

    name = "catalog"

    def __init__(self, store: EventStore, *, retry: tuple[float, float] = (0.5, 10.0)) -> None:
        self.store = store
        self.retry = retry
        self._stopping = False
        self._away = False  # the catalog is away: warned once, not once a retry

    def wants(self, message: Message) -> bool:
        return isinstance(message, EventMessage)

    async def start(self) -> None:
        self._stopping = False

    async def deliver(self, message: Message) -> None:
        if not isinstance(message, EventMessage):
            return
        pause, most = self.retry
        while True:
            try:
                await asyncio.to_thread(self.store.write, message)
                if self._away:
                    log.info("events are written to the catalog again")
                    self._away = False
                return
            except VmsError as e:
                if e.kind is not Kind.UNAVAILABLE or self._stopping:
                    raise
                if not self._away:
                    log.warning("events wait for the catalog: %s", e)
                    self._away = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, most)

    async def stop(self) -> None:
        self._stopping = True

