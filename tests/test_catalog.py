"""The catalog on SQLite and on PostgreSQL: the same behaviour from the same migrations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from vms.catalog import CLOSED, OPEN, Catalog
from vms.segment import FragmentIndex


@pytest.fixture(params=["sqlite", "postgresql"])
def any_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    cat = Catalog(url)
    yield cat
    cat.close()


def _open(cat: Catalog, root: int, start: int, camera: str = "cam") -> int:
    seg_id, path = cat.open_segment(
        camera_id=camera, root_id=root, start_us=start, codec="h264", width=640,
        height=360, has_audio=False, timescale=90000, day="2026-11-25",
    )  # fmt: skip
    assert path == f"{camera}/2026-11-25/{seg_id}.mp4"
    return seg_id


def test_segment_lifecycle(any_catalog: Catalog) -> None:
    cat = any_catalog
    root = cat.add_root("r1", "uuid-1", 1)
    assert cat.root_by_name("r1") == (root, "uuid-1")
    cat.ensure_camera("cam", "Camera")
    a = _open(cat, root, 1_000_000)
    seg = cat.segment(a)
    assert seg.state == OPEN and seg.bytes == 0, "an open segment claims no bytes"
    index = FragmentIndex()
    index.add(90000, 5000, True, 25)
    index.add(90000, 4000, False, 25)
    cat.close_segment(
        a, end_us=3_000_000, init_bytes=700, size=9700, fragments=2,
        frag_index=index.encode(), crc32=0xFFFFFFFF,
    )  # fmt: skip
    seg = cat.segment(a)
    assert seg.state == CLOSED and seg.crc32 == 0xFFFFFFFF
    assert FragmentIndex.decode(seg.frag_index or b"").entries == index.entries
    b = _open(cat, root, 3_000_000)
    assert [s.id for s in cat.segments(camera_id="cam")] == [a, b]
    assert [s.id for s in cat.segments(camera_id="cam", start_us=3_500_000)] == [b]
    assert [s.id for s in cat.segments(camera_id="cam", end_us=2_000_000)] == [a]
    assert [s.id for s in cat.segments(state=OPEN)] == [b]
    assert cat.root_bytes(root) == 9700
    assert [s.id for s in cat.expired("cam", 3_000_000, 10)] == [a]
    garbage = cat.delete_segments([cat.segment(a)])
    assert [(g[1], g[2]) for g in garbage] == [(root, seg.path)]
    assert cat.garbage(root) == garbage
    cat.forget_garbage(g[0] for g in garbage)
    assert cat.garbage() == []
    assert [s.id for s in cat.segments()] == [b]


def test_migrations_create_the_schema_once(any_catalog: Catalog) -> None:
    again = Catalog(any_catalog.url)  # a second start must not fail or duplicate anything
    with again.engine.connect() as c:
        version = c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == "0001"
    tables = set(sa.inspect(again.engine).get_table_names())
    assert {"roots", "cameras", "segments", "garbage", "alembic_version"} <= tables
    again.close()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with cat.engine.connect() as c:
        assert c.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"
    cat.close()


def test_unreachable_database_is_a_clear_error() -> None:
    from vms.errors import Kind, VmsError

    with pytest.raises(VmsError) as e:
        Catalog("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    assert e.value.kind == Kind.UNAVAILABLE
    assert "secret" not in e.value.message
