"""The catalog: which segments exist, where, and what time each fragment covers.

SQLAlchemy Core over SQLite (WAL) by default or PostgreSQL. One row per segment, not per
fragment: the fragment index is a compact blob (see :class:`vms.recording.segment.FragmentIndex`).
The schema is created and upgraded only by Alembic migrations (``vms/catalog/migrations``).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from vms.errors import Kind, VmsError

log = logging.getLogger(__name__)

metadata = sa.MetaData()

roots = sa.Table(
    "roots",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("created_us", sa.BigInteger, nullable=False),
)

cameras = sa.Table(
    "cameras",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    # What vms.cameras.store keeps (migration 0003): the configuration as JSON without the
    # password, the password encrypted, where the camera came from, and its tombstone.
    sa.Column("config", sa.Text, nullable=True),
    sa.Column("secret", sa.LargeBinary, nullable=True),
    sa.Column("origin", sa.String(8), nullable=False, server_default="file"),
    sa.Column("seed", sa.String(64), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("removed_us", sa.BigInteger, nullable=True),
    sa.Column("updated_us", sa.BigInteger, nullable=False, server_default="0"),
)

# A quarantined segment's file does not match its checksum: kept for inspection and for
# retention, never served as if it were sound.
OPEN, CLOSED, QUARANTINED = 0, 1, 2
DELETABLE = (CLOSED, QUARANTINED)  # what retention may delete: never an open segment
MAIN, SUB = 0, 1
# ``end_us`` of an open row in the table: the largest BIGINT, after any time a query can name.
# An open segment's end is the live edge, which only its writer knows; stored this way the
# row satisfies every "ends after" bound by itself, so the time-range query finds it in
# ``segments_camera_stream_end`` like any other row, with no ``OR state = open`` (which no
# index serves). :class:`Segment` never shows it: an open segment's ``end_us`` reads as its
# start (it claims no media yet). Rows opened before this convention hold their start there;
# recovery closes every open row before recording starts.
OPEN_END_US = 2**63 - 1

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("camera_id", sa.String(64), sa.ForeignKey("cameras.id"), nullable=False),
    sa.Column("root_id", sa.Integer, sa.ForeignKey("roots.id"), nullable=False),
    sa.Column("path", sa.String(255), nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("start_us", sa.BigInteger, nullable=False),
    sa.Column("end_us", sa.BigInteger, nullable=False),
    sa.Column("codec", sa.String(16), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("has_audio", sa.Boolean, nullable=False),
    sa.Column("timescale", sa.Integer, nullable=False),
    sa.Column("init_bytes", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("fragments", sa.Integer, nullable=False),
    sa.Column("frag_index", sa.LargeBinary, nullable=True),
    sa.Column("crc32", sa.BigInteger, nullable=True),
    sa.Column("stream", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("media_start", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("segments_camera_start", "camera_id", "start_us"),
    sa.Index("segments_root_start", "root_id", "start_us"),
    sa.Index("segments_state", "state"),
    sa.Index("segments_camera_stream_end", "camera_id", "stream", "end_us"),
    sqlite_autoincrement=True,
)

garbage = sa.Table(
    "garbage",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("root_id", sa.Integer, sa.ForeignKey("roots.id"), nullable=False),
    sa.Column("path", sa.String(255), nullable=False),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    id: int
    camera_id: str
    root_id: int
    path: str
    state: int
    start_us: int
    end_us: int
    codec: str
    width: int
    height: int
    has_audio: bool
    timescale: int
    init_bytes: int
    bytes: int
    fragments: int
    frag_index: builtins.bytes | None
    crc32: int | None
    stream: int
    media_start: int


@dataclasses.dataclass(frozen=True, slots=True)
class Overlap:
    """A segment that starts before an earlier one of the same camera stream has ended."""

    id: int
    camera_id: str
    stream: int
    path: str
    start_us: int
    earlier_end_us: int


class SegmentChange(NamedTuple):
    """A segment row this process changed, as :meth:`Catalog.listen` reports it: ``kind`` is
    ``open``, ``close``, ``forget`` (an open row dropped), ``quarantine`` or ``delete``;
    ``end_us`` and ``bytes`` are the row's after a close (0 otherwise)."""

    kind: str
    id: int
    camera_id: str
    stream: int
    start_us: int
    end_us: int = 0
    bytes: int = 0


SegmentListener = Callable[[list[SegmentChange]], None]

_SEGMENT_FIELDS = tuple(Segment.__dataclass_fields__)


def _segment(row: Any) -> Segment:
    # Trap: row._mapping.get() of a column the query did not select (frag_index, left out
    # unless asked) raises and catches a KeyError inside SQLAlchemy per row, which made a
    # day's query without blobs slower than with them. Zip the row's own fields instead.
    values = dict(zip(row._fields, row, strict=True))
    if len(values) != len(_SEGMENT_FIELDS):
        values = {k: values.get(k) for k in _SEGMENT_FIELDS}
    if values["state"] == OPEN:
        values["end_us"] = values["start_us"]
    return Segment(**values)


# An open row's end as it was before OPEN_END_US: its start. For the queries that compare ends
# across rows (the latest end, overlaps), where the sentinel would read as "ends never".
_END = sa.case((segments.c.state == OPEN, segments.c.start_us), else_=segments.c.end_us)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a garbage row must be durable before its file is unlinked.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def unavailable(e: sa.exc.SQLAlchemyError, url: str) -> VmsError:
    """The one error a caller sees when the catalog cannot be reached or answers an error.

    A lost connection, a refused one, a timeout or a locked database is ``UNAVAILABLE``: the
    recorder keeps writing files and retries the rows (docs/design/storage.md)."""
    if isinstance(e, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError):
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
        return VmsError(Kind.UNAVAILABLE, f"catalog {url} unavailable: {reason}")
    return VmsError(Kind.INTERNAL, f"catalog {url}: {type(e).__name__}")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Catalog:
    """Thread-safe access to the catalog; every method is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        else:
            # A server that went away must fail a call in seconds, not hang it: the caller
            # queues the work and retries (the recorder never waits on the catalog).
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            self.engine = sa.create_engine(url, **kwargs)
            if url.startswith("sqlite"):
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            migrate(self.engine)
        except sa.exc.SQLAlchemyError as e:
            raise VmsError(Kind.UNAVAILABLE, f"catalog {self.safe_url}: {e}") from e
        # SQLite serialises writers anyway; a process-wide lock avoids busy retries.
        self._write_lock = threading.Lock() if url.startswith("sqlite") else None
        self._listeners: list[SegmentListener] = []

    def listen(self, listener: SegmentListener) -> None:
        """Call ``listener`` with every change this object makes to segment rows, on the
        changing thread, after the transaction has committed (so a reader it prompts finds
        the change), never under the write lock. Other processes' changes are not seen."""
        self._listeners.append(listener)

    def _tell(self, changes: list[SegmentChange]) -> None:
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:  # the row is written: a listener's bug must not fail the writer
                log.exception("segment change listener failed")

    @property
    def safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def _write(self) -> Any:
        return _Tx(self.engine, self._write_lock, self.safe_url)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as c:
                yield c
        except sa.exc.SQLAlchemyError as e:
            raise unavailable(e, self.safe_url) from e

    # --- roots and cameras -------------------------------------------------------------

    def root_by_name(self, name: str) -> tuple[int, str] | None:
        with self._read() as c:
            row = c.execute(sa.select(roots.c.id, roots.c.uuid).where(roots.c.name == name)).first()
        return (row.id, row.uuid) if row else None

    def add_root(self, name: str, uuid: str, created_us: int) -> int:
        with self._write() as c:
            result = c.execute(roots.insert().values(name=name, uuid=uuid, created_us=created_us))
            return int(result.inserted_primary_key[0])

    def ensure_camera(self, camera_id: str, name: str) -> None:
        """Make sure a row names the camera, so that segments may refer to it.

        A new row only names the camera (no configuration: the next seed of
        :class:`vms.cameras.store.CameraStore` fills it in or marks it removed). A row the
        camera store keeps is left alone: its name follows its configuration."""
        with self._write() as c:
            q = sa.select(cameras.c.name, cameras.c.config).where(cameras.c.id == camera_id)
            row = c.execute(q).first()
            if row is None:
                c.execute(cameras.insert().values(id=camera_id, name=name))
            elif row.config is None and row.name != name:
                c.execute(cameras.update().where(cameras.c.id == camera_id).values(name=name))

    def write(self) -> contextlib.AbstractContextManager[Connection]:
        """One write transaction: a context manager giving the connection."""
        return self._write()

    def read(self) -> contextlib.AbstractContextManager[Connection]:
        """One read: a context manager giving the connection."""
        return self._read()

    # --- segments ------------------------------------------------------------------------

    def open_segment(
        self,
        *,
        camera_id: str,
        stream: int,
        root_id: int,
        path: str,
        start_us: int,
        media_start: int,
        codec: str,
        width: int,
        height: int,
        has_audio: bool,
        timescale: int,
    ) -> int:
        """Insert an open segment that claims no bytes yet; returns its id."""
        with self._write() as c:
            result = c.execute(
                segments.insert().values(
                    camera_id=camera_id, stream=stream, root_id=root_id, path=path, state=OPEN,
                    start_us=start_us, end_us=OPEN_END_US, media_start=media_start, codec=codec,
                    width=width, height=height, has_audio=has_audio, timescale=timescale,
                    init_bytes=0, bytes=0, fragments=0,
                )
            )  # fmt: skip
            seg_id = int(result.inserted_primary_key[0])
        if self._listeners:
            self._tell([SegmentChange("open", seg_id, camera_id, stream, start_us)])
        return seg_id

    def close_segment(
        self,
        seg_id: int,
        *,
        end_us: int,
        init_bytes: int,
        size: int,
        fragments: int,
        frag_index: bytes,
        crc32: int,
    ) -> None:
        s = segments.c
        with self._write() as c:
            rows = c.execute(
                segments.update()
                .where(s.id == seg_id)
                .values(
                    state=CLOSED, end_us=end_us, init_bytes=init_bytes, bytes=size,
                    fragments=fragments, frag_index=frag_index, crc32=crc32,
                )
                .returning(s.camera_id, s.stream, s.start_us)
            ).all()  # fmt: skip
        if self._listeners and rows:
            (r,) = rows
            self._tell([SegmentChange("close", seg_id, r[0], r[1], r[2], end_us, size)])

    def forget_segment(self, seg_id: int) -> None:
        """Remove an open row that never got a fragment (its file is gone or was never made)."""
        s = segments.c
        with self._write() as c:
            rows = c.execute(
                segments.delete()
                .where(s.id == seg_id, s.state == OPEN)
                .returning(s.camera_id, s.stream, s.start_us)
            ).all()
        if self._listeners and rows:
            self._tell([SegmentChange("forget", seg_id, r[0], r[1], r[2]) for r in rows])

    def segment(self, seg_id: int) -> Segment:
        with self._read() as c:
            row = c.execute(sa.select(segments).where(segments.c.id == seg_id)).first()
        if row is None:
            raise VmsError(Kind.NOT_FOUND, f"no segment {seg_id}")
        return _segment(row)

    def segments(
        self,
        *,
        camera_id: str | None = None,
        root_id: int | None = None,
        state: int | None = None,
        limit: int | None = None,
    ) -> list[Segment]:
        """Segments, oldest first, index blobs included: listings for maintenance and tests.
        Playback asks :meth:`overlapping`, which the index serves."""
        q = sa.select(segments).order_by(segments.c.start_us, segments.c.id)
        if camera_id is not None:
            q = q.where(segments.c.camera_id == camera_id)
        if root_id is not None:
            q = q.where(segments.c.root_id == root_id)
        if state is not None:
            q = q.where(segments.c.state == state)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as c:
            return [_segment(r) for r in c.execute(q)]

    def overlapping(
        self,
        camera_id: str,
        stream: int,
        start_us: int,
        end_us: int,
        *,
        with_index: bool = False,
        limit: int | None = None,
    ) -> list[Segment]:
        """The segments of one camera stream that overlap [start_us, end_us), oldest first.

        Without ``with_index`` the fragment index blobs are not read (``frag_index`` is None):
        a day of one camera is 1,440 rows and a megabyte of blobs that a timeline never needs.
        An open segment is included when it started before ``end_us``; its ``end_us`` reads as
        its start, and how far it has got is the writers' to say
        (:meth:`vms.recording.writer.Writers.open_segment`)."""
        q = overlapping_query(camera_id, stream, start_us, end_us, with_index, limit)
        if q is None:
            return []
        with self._read() as c:
            found = sorted((_segment(r) for r in c.execute(q)), key=lambda s: (s.start_us, s.id))
        return found if limit is None else found[:limit]

    def iter_segments(self, *, root_id: int | None = None, batch: int = 500) -> Iterator[Segment]:
        """Every segment (of one root) in id order, read ``batch`` rows at a time.

        Keyset pagination: each batch is its own short read (``id > last``), so a pass over
        millions of rows holds one batch of index blobs at a time, never keeps a read
        transaction open for the whole pass (which would stop SQLite's WAL checkpoints), and
        rows changed or deleted behind the cursor do not shift what comes next."""
        last = -1
        while True:
            q = sa.select(segments).where(segments.c.id > last)
            if root_id is not None:
                q = q.where(segments.c.root_id == root_id)
            q = q.order_by(segments.c.id).limit(batch)
            with self._read() as c:
                rows = [_segment(r) for r in c.execute(q)]
            if not rows:
                return
            last = rows[-1].id
            full = len(rows) == batch
            rows.reverse()
            while rows:  # let go of each row as it is handed out: batches never pile up
                yield rows.pop()
            if not full:
                return

    def count_segments(self, *, root_id: int | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(segments)
        if root_id is not None:
            q = q.where(segments.c.root_id == root_id)
        with self._read() as c:
            return int(c.execute(q).scalar_one())

    def overlaps(self) -> list[Overlap]:
        """Segments that start before an earlier segment of the same camera stream ends.

        One window query (the greatest end of every earlier row of the stream), evaluated by
        the database: only the overlapping rows come back."""
        order = (segments.c.start_us, segments.c.id)
        prev_end = (
            sa.func.max(_END)
            .over(partition_by=(segments.c.camera_id, segments.c.stream), order_by=order,
                  rows=(None, -1))
            .label("prev_end_us")
        )  # fmt: skip
        inner = sa.select(
            segments.c.id, segments.c.camera_id, segments.c.stream, segments.c.path,
            segments.c.start_us, prev_end,
        ).subquery()  # fmt: skip
        q = (
            sa.select(inner)
            .where(inner.c.prev_end_us > inner.c.start_us)
            .order_by(inner.c.camera_id, inner.c.stream, inner.c.start_us)
        )
        with self._read() as c:
            return [
                Overlap(r.id, r.camera_id, r.stream, r.path, r.start_us, r.prev_end_us)
                for r in c.execute(q)
            ]

    def quarantine(self, seg_id: int) -> bool:
        """Mark a closed segment whose bytes fail their checksum; its row (checksum included)
        is kept as it was. False when the row is gone or not closed (retention won a race)."""
        s = segments.c
        with self._write() as c:
            rows = c.execute(
                segments.update()
                .where(s.id == seg_id, s.state == CLOSED)
                .values(state=QUARANTINED)
                .returning(s.camera_id, s.stream, s.start_us)
            ).all()
        if self._listeners and rows:
            self._tell([SegmentChange("quarantine", seg_id, r[0], r[1], r[2]) for r in rows])
        return len(rows) == 1

    def oldest(self, root_id: int, limit: int) -> list[Segment]:
        """The root's oldest segments that retention may delete: closed or quarantined."""
        q = (
            sa.select(segments)
            .where(segments.c.root_id == root_id)
            .where(segments.c.state.in_(DELETABLE))
            .order_by(segments.c.start_us, segments.c.id)
            .limit(limit)
        )
        with self._read() as c:
            return [_segment(r) for r in c.execute(q)]

    def last_end_us(self, camera_id: str) -> int | None:
        """End of the camera's latest segment: where its next recording may start at the
        earliest, whatever the wall clock says after a restart."""
        q = sa.select(sa.func.max(_END)).where(segments.c.camera_id == camera_id)
        with self._read() as c:
            value = c.execute(q).scalar_one()
        return None if value is None else int(value)

    def camera_ids(self) -> set[str]:
        """Every camera the catalog has a row for, removed ones included: a removed camera's
        recordings stay (until retention) and must not look like strangers' files."""
        with self._read() as c:
            return {r.id for r in c.execute(sa.select(cameras.c.id))}

    def latest_start_us(self, camera_id: str, root_id: int) -> int | None:
        q = sa.select(sa.func.max(segments.c.start_us)).where(
            segments.c.camera_id == camera_id, segments.c.root_id == root_id
        )
        with self._read() as c:
            value = c.execute(q).scalar_one()
        return None if value is None else int(value)

    def paths_under(self, root_id: int, prefix: str) -> set[str]:
        """Paths of the root's segments that start with ``prefix`` (one day of one camera)."""
        q = sa.select(segments.c.path).where(
            segments.c.root_id == root_id, segments.c.path.startswith(prefix, autoescape=True)
        )
        with self._read() as c:
            return {r.path for r in c.execute(q)}

    def root_bytes(self, root_id: int) -> int:
        q = sa.select(sa.func.coalesce(sa.func.sum(segments.c.bytes), 0)).where(
            segments.c.root_id == root_id
        )
        with self._read() as c:
            return int(c.execute(q).scalar_one())

    def expired(self, camera_id: str, before_us: int, limit: int) -> list[Segment]:
        q = (
            sa.select(segments)
            .where(segments.c.camera_id == camera_id)
            .where(segments.c.state.in_(DELETABLE))
            .where(segments.c.end_us <= before_us)
            .order_by(segments.c.start_us)
            .limit(limit)
        )
        with self._read() as c:
            return [_segment(r) for r in c.execute(q)]

    def ended_after(
        self,
        camera_id: str,
        stream: int,
        after: tuple[int, int] | None,
        before_us: int,
        limit: int,
    ) -> list[Segment]:
        """Closed or quarantined segments of one camera stream that end at or before
        ``before_us`` and after ``after`` (an ``(end_us, id)`` already seen; None: from the
        first), in that order, without their fragment index: retention's record modes walk
        them once each. Open rows hold :data:`OPEN_END_US` and never qualify."""
        s = segments.c
        cols = [c for c in segments.c if c.name != "frag_index"]
        q = sa.select(*cols).where(
            s.camera_id == camera_id, s.stream == stream, s.end_us <= before_us,
            s.state.in_(DELETABLE),
        )  # fmt: skip
        if after is not None:
            end, seg_id = after
            q = q.where(sa.or_(s.end_us > end, sa.and_(s.end_us == end, s.id > seg_id)))
        q = q.order_by(s.end_us, s.id).limit(limit)
        with self._read() as c:
            return [_segment(r) for r in c.execute(q)]

    def delete_segments(self, segs: Sequence[Segment]) -> list[tuple[int, int, str]]:
        """Move segments to garbage in one transaction; returns (garbage id, root id, path)."""
        out = []
        with self._write() as c:
            for s in segs:
                res = c.execute(garbage.insert().values(root_id=s.root_id, path=s.path))
                out.append((int(res.inserted_primary_key[0]), s.root_id, s.path))
            c.execute(segments.delete().where(segments.c.id.in_([s.id for s in segs])))
        if self._listeners and segs:
            self._tell(
                [SegmentChange("delete", s.id, s.camera_id, s.stream, s.start_us) for s in segs]
            )
        return out

    def intervals(self, camera_id: str, stream: int) -> list[tuple[int, int, int, int, int]]:
        """Every segment of one camera stream as ``(start_us, id, state, end_us, bytes)``,
        oldest first, no blobs: what :mod:`vms.recording.timeline` loads. An open row's
        ``end_us`` is :data:`OPEN_END_US`."""
        s = segments.c
        q = (
            sa.select(s.start_us, s.id, s.state, s.end_us, s.bytes)
            .where(s.camera_id == camera_id, s.stream == stream)
            .order_by(s.start_us, s.id)
        )
        with self._read() as c:
            return [(r[0], r[1], r[2], r[3], r[4]) for r in c.execute(q)]

    def garbage(self, root_id: int | None = None) -> list[tuple[int, int, str]]:
        q = sa.select(garbage.c.id, garbage.c.root_id, garbage.c.path)
        if root_id is not None:
            q = q.where(garbage.c.root_id == root_id)
        with self._read() as c:
            return [(r.id, r.root_id, r.path) for r in c.execute(q)]

    def forget_garbage(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            with self._write() as c:
                c.execute(garbage.delete().where(garbage.c.id.in_(ids)))


def overlapping_query(
    camera_id: str,
    stream: int,
    start_us: int,
    end_us: int,
    with_index: bool = False,
    limit: int | None = None,
) -> sa.CompoundSelect | None:
    """The query behind :meth:`Catalog.overlapping`; None when the window is empty.

    A segment overlaps the window when it ends after ``start_us`` and starts before ``end_us``.
    Only its end is in the index (``camera_id, stream, end_us``), and "ends after start" alone is
    a range that runs to the newest row: a window a month back would walk a month of rows and
    look each one up for its start. So the rows are found in three parts, each one bounded range
    of that index:

    1. closed rows that end inside the window: ``start_us < end_us <= end`` (both bounds in the
       index; in end order, which is start order, since a camera stream's segments never overlap);
    2. the closed row that runs past the window's end: only the first row ending after it can
       (no overlap again: any later one starts after that one ends), so ``end_us > end``, first
       by ``end_us``, kept if it starts before ``end``. (Overlapping rows are a defect that
       ``vms check`` reports; a second one crossing ``end`` would be missed here.)
    3. open rows: ``end_us = OPEN_END_US`` (an equality in the index), kept if they start before
       ``end``. Usually one; two for a moment at a rotation, while the closed row is queued.

    The parts are disjoint (open rows hold the sentinel, closed rows never do), so they are
    joined with ``UNION ALL``, and the caller sorts what comes back. Not ``ORDER BY`` on the
    union: SQLite then merges sorted parts and reads each in start order, through
    ``segments_camera_start`` from the camera's first row on, instead of searching the range.
    """
    end = min(end_us, OPEN_END_US - 1)  # below the sentinel: part 1 never meets an open row
    if end <= start_us:
        return None
    s = segments.c
    cols = [c for c in segments.c if with_index or c.name != "frag_index"]
    key = (s.camera_id == camera_id, s.stream == stream)
    # "+ 0": a filter, not an index term. Without statistics (a new SQLite file, or one never
    # analysed) SQLite otherwise takes ``start_us < end`` to ``segments_camera_start`` and reads
    # the camera's rows from its very first one up to ``end``.
    starts_before = s.start_us + 0 < end
    inside: sa.Select[Any] = sa.select(*cols).where(
        *key, s.end_us > start_us, s.end_us <= end, starts_before
    )
    if limit is not None:  # the first ``limit`` by end are the first by start (no overlap)
        inside = inside.order_by(s.end_us).limit(limit).subquery("inside").select()
    after = (
        sa.select(*cols)
        .where(*key, s.end_us > end, s.end_us < OPEN_END_US)
        .order_by(s.end_us)
        .limit(1)
        .subquery("after")
    )
    crossing = sa.select(after).where(after.c.start_us < end)
    open_rows = sa.select(*cols).where(*key, s.end_us == OPEN_END_US, starts_before)
    return sa.union_all(inside, crossing, open_rows)


class _Tx:
    """A write transaction: the SQLite writer lock, and errors mapped to :class:`VmsError`."""

    def __init__(self, engine: Engine, lock: threading.Lock | None, url: str) -> None:
        self.engine, self.lock, self.url = engine, lock, url
        self.ctx: Any = None

    def __enter__(self) -> Connection:
        if self.lock:
            self.lock.acquire()
        try:
            self.ctx = self.engine.begin()
            return self.ctx.__enter__()
        except BaseException as e:
            if self.lock:
                self.lock.release()
            if isinstance(e, sa.exc.SQLAlchemyError):
                raise unavailable(e, self.url) from e
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            self.ctx.__exit__(*exc)
        except sa.exc.SQLAlchemyError as e:
            raise unavailable(e, self.url) from e
        finally:
            if self.lock:
                self.lock.release()
        if isinstance(exc[1], sa.exc.SQLAlchemyError):
            raise unavailable(exc[1], self.url) from exc[1]
