"""The catalog: which segments exist, where, and what time each fragment covers.

SQLAlchemy Core over SQLite (WAL) by default or PostgreSQL. One row per segment, not per
fragment: the fragment index is a compact blob (see :class:`vms.segment.FragmentIndex`).
The schema is created and upgraded only by Alembic migrations (``vms/migrations``).
"""

from __future__ import annotations

import builtins
import dataclasses
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from vms.errors import Kind, VmsError

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
)

OPEN, CLOSED = 0, 1

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
    sa.Index("segments_camera_start", "camera_id", "start_us"),
    sa.Index("segments_root_start", "root_id", "start_us"),
    sa.Index("segments_state", "state"),
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


def _segment(row: Any) -> Segment:
    return Segment(**{k: row._mapping[k] for k in Segment.__dataclass_fields__})


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a garbage row must be durable before its file is unlinked.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


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
        try:
            self.engine = sa.create_engine(url, **kwargs)
            if url.startswith("sqlite"):
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            migrate(self.engine)
        except sa.exc.SQLAlchemyError as e:
            raise VmsError(Kind.UNAVAILABLE, f"catalog {self.safe_url}: {e}") from e
        # SQLite serialises writers anyway; a process-wide lock avoids busy retries.
        self._write_lock = threading.Lock() if url.startswith("sqlite") else None

    @property
    def safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def _write(self) -> Any:
        return _Tx(self.engine, self._write_lock)

    # --- roots and cameras -------------------------------------------------------------

    def root_by_name(self, name: str) -> tuple[int, str] | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(roots.c.id, roots.c.uuid).where(roots.c.name == name)).first()
        return (row.id, row.uuid) if row else None

    def add_root(self, name: str, uuid: str, created_us: int) -> int:
        with self._write() as c:
            result = c.execute(roots.insert().values(name=name, uuid=uuid, created_us=created_us))
            return int(result.inserted_primary_key[0])

    def ensure_camera(self, camera_id: str, name: str) -> None:
        with self._write() as c:
            row = c.execute(sa.select(cameras.c.name).where(cameras.c.id == camera_id)).first()
            if row is None:
                c.execute(cameras.insert().values(id=camera_id, name=name))
            elif row.name != name:
                c.execute(cameras.update().where(cameras.c.id == camera_id).values(name=name))

    # --- segments ------------------------------------------------------------------------

    def open_segment(
        self,
        *,
        camera_id: str,
        root_id: int,
        start_us: int,
        codec: str,
        width: int,
        height: int,
        has_audio: bool,
        timescale: int,
        day: str,
    ) -> tuple[int, str]:
        """Insert an open segment that claims no bytes yet; returns (id, relative path)."""
        with self._write() as c:
            result = c.execute(
                segments.insert().values(
                    camera_id=camera_id, root_id=root_id, path="", state=OPEN,
                    start_us=start_us, end_us=start_us, codec=codec, width=width,
                    height=height, has_audio=has_audio, timescale=timescale, init_bytes=0,
                    bytes=0, fragments=0,
                )
            )  # fmt: skip
            seg_id = int(result.inserted_primary_key[0])
            path = f"{camera_id}/{day}/{seg_id}.mp4"
            c.execute(segments.update().where(segments.c.id == seg_id).values(path=path))
        return seg_id, path

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
        with self._write() as c:
            c.execute(
                segments.update()
                .where(segments.c.id == seg_id)
                .values(
                    state=CLOSED, end_us=end_us, init_bytes=init_bytes, bytes=size,
                    fragments=fragments, frag_index=frag_index, crc32=crc32,
                )
            )  # fmt: skip

    def segment(self, seg_id: int) -> Segment:
        with self.engine.connect() as c:
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
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int | None = None,
    ) -> list[Segment]:
        """Segments, oldest first, overlapping [start_us, end_us) when given."""
        q = sa.select(segments).order_by(segments.c.start_us, segments.c.id)
        if camera_id is not None:
            q = q.where(segments.c.camera_id == camera_id)
        if root_id is not None:
            q = q.where(segments.c.root_id == root_id)
        if state is not None:
            q = q.where(segments.c.state == state)
        if start_us is not None:
            q = q.where(sa.or_(segments.c.end_us > start_us, segments.c.state == OPEN))
        if end_us is not None:
            q = q.where(segments.c.start_us < end_us)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as c:
            return [_segment(r) for r in c.execute(q)]

    def last_end_us(self, camera_id: str) -> int | None:
        """End of the camera's latest segment: where its next recording may start at the
        earliest, whatever the wall clock says after a restart."""
        q = sa.select(sa.func.max(segments.c.end_us)).where(segments.c.camera_id == camera_id)
        with self.engine.connect() as c:
            value = c.execute(q).scalar_one()
        return None if value is None else int(value)

    def root_bytes(self, root_id: int) -> int:
        q = sa.select(sa.func.coalesce(sa.func.sum(segments.c.bytes), 0)).where(
            segments.c.root_id == root_id
        )
        with self.engine.connect() as c:
            return int(c.execute(q).scalar_one())

    def expired(self, camera_id: str, before_us: int, limit: int) -> list[Segment]:
        q = (
            sa.select(segments)
            .where(segments.c.camera_id == camera_id)
            .where(segments.c.state == CLOSED)
            .where(segments.c.end_us <= before_us)
            .order_by(segments.c.start_us)
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [_segment(r) for r in c.execute(q)]

    def delete_segments(self, segs: Sequence[Segment]) -> list[tuple[int, int, str]]:
        """Move segments to garbage in one transaction; returns (garbage id, root id, path)."""
        out = []
        with self._write() as c:
            for s in segs:
                res = c.execute(garbage.insert().values(root_id=s.root_id, path=s.path))
                out.append((int(res.inserted_primary_key[0]), s.root_id, s.path))
            c.execute(segments.delete().where(segments.c.id.in_([s.id for s in segs])))
        return out

    def garbage(self, root_id: int | None = None) -> list[tuple[int, int, str]]:
        q = sa.select(garbage.c.id, garbage.c.root_id, garbage.c.path)
        if root_id is not None:
            q = q.where(garbage.c.root_id == root_id)
        with self.engine.connect() as c:
            return [(r.id, r.root_id, r.path) for r in c.execute(q)]

    def forget_garbage(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if ids:
            with self._write() as c:
                c.execute(garbage.delete().where(garbage.c.id.in_(ids)))


class _Tx:
    def __init__(self, engine: Engine, lock: threading.Lock | None) -> None:
        self.engine, self.lock = engine, lock
        self.ctx: Any = None

    def __enter__(self) -> Connection:
        if self.lock:
            self.lock.acquire()
        try:
            self.ctx = self.engine.begin()
            return self.ctx.__enter__()
        except BaseException:
            if self.lock:
                self.lock.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            self.ctx.__exit__(*exc)
        finally:
            if self.lock:
                self.lock.release()
