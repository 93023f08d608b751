"""The catalog on SQLite and on PostgreSQL: the same behaviour from the same migrations."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from vms.catalog.store import CLOSED, OPEN, QUARANTINED, Catalog
from vms.recording.segment import FragmentIndex


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
    return cat.open_segment(
        camera_id=camera, stream=0, root_id=root, path=f"{camera}/2026-11-25/{start}-main.mp4",
        start_us=start, media_start=0, codec="h264", width=640, height=360, has_audio=False,
        timescale=90000,
    )  # fmt: skip


def test_segment_lifecycle(any_catalog: Catalog) -> None:
    cat = any_catalog
    root = cat.add_root("r1", "uuid-1", 1)
    assert cat.root_by_name("r1") == (root, "uuid-1")
    cat.ensure_camera("cam", "Camera")
    a = _open(cat, root, 1_000_000)
    seg = cat.segment(a)
    assert seg.state == OPEN and seg.bytes == 0, "an open segment claims no bytes"
    index = FragmentIndex()
    index.add(0, 90000, 5000, True, 25)
    index.add(90000, 90000, 4000, False, 25)
    cat.close_segment(
        a, end_us=3_000_000, init_bytes=700, size=9700, fragments=2,
        frag_index=index.encode(), crc32=0xFFFFFFFF,
    )  # fmt: skip
    seg = cat.segment(a)
    assert seg.state == CLOSED and seg.crc32 == 0xFFFFFFFF
    assert FragmentIndex.decode(seg.frag_index or b"").entries == index.entries
    b = _open(cat, root, 3_000_000)
    assert [s.id for s in cat.segments(camera_id="cam")] == [a, b]
    assert [s.id for s in cat.overlapping("cam", 0, 3_500_000, 9_000_000)] == [b]
    assert [s.id for s in cat.overlapping("cam", 0, 0, 2_000_000)] == [a]
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
    assert version == "0007"
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


def test_segment_ids_are_never_reused(any_catalog: Catalog) -> None:
    cat = any_catalog
    root = cat.add_root("r1", "uuid-1", 1)
    cat.ensure_camera("cam", "Camera")
    a = _open(cat, root, 1_000_000)
    cat.forget_segment(a)  # the newest row goes: SQLite would hand its id out again
    b = _open(cat, root, 2_000_000)
    assert b > a


def test_upgrade_from_0001_rewrites_fragment_indexes(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    import vms.catalog.store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    cfg = AlembicConfig()
    cfg.set_main_option(
        "script_location", str(Path(vms.catalog.store.__file__).parent / "migrations")
    )
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text("INSERT INTO roots VALUES (1, 'r1', 'u', 0)"))
        conn.execute(sa.text("INSERT INTO cameras VALUES ('cam', 'Cam')"))
        # 0001's index: flags = keyframe | samples << 1
        old = struct.pack("<III", 90000, 5000, 1 | 25 << 1) + struct.pack("<III", 9, 4, 24 << 1)
        conn.execute(
            sa.text(
                "INSERT INTO segments (id, camera_id, root_id, path, state, start_us, end_us,"
                " codec, width, height, has_audio, timescale, init_bytes, bytes, fragments,"
                " frag_index, crc32) VALUES (7, 'cam', 1, 'cam/d/7.mp4', 1, 0, 1, 'h264', 1, 1,"
                " 0, 90000, 700, 9700, 2, :blob, 0)"
            ),
            {"blob": old},
        )
    engine.dispose()
    cat = Catalog(url)
    seg = cat.segment(7)
    frags = list(FragmentIndex.decode(seg.frag_index or b"").fragments(seg.init_bytes))
    assert [(f.keyframe, f.samples, f.gap) for f in frags] == [
        (True, 25, False),
        (False, 24, False),
    ]
    assert seg.stream == 0 and seg.media_start == 0
    cat.close()


def test_a_hole_in_the_media_is_marked_on_the_fragment_before_it() -> None:
    index = FragmentIndex()
    index.add(0, 90000, 100, True, 25)
    index.add(90000, 45000, 100, False, 12)
    index.add(180000, 90000, 100, True, 25)  # 45000 ticks lost before this one
    frags = list(FragmentIndex.decode(index.encode()).fragments(0))
    assert [f.start for f in frags] == [0, 90000, 180000]
    assert [f.gap for f in frags] == [False, True, False]
    assert index.duration == 270000


def test_an_unreachable_catalog_is_unavailable_not_a_driver_error(tmp_path: Path) -> None:
    from vms.errors import Kind, VmsError

    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    (tmp_path / "c.db").unlink()
    (tmp_path / "c.db").mkdir()  # the file is gone and cannot be recreated
    cat.engine.dispose()
    with pytest.raises(VmsError) as e:
        cat.camera_ids()
    assert e.value.kind == Kind.UNAVAILABLE
    cat.close()


def test_rows_stream_in_keyset_batches(
    any_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat = any_catalog
    root = cat.add_root("r1", "uuid-1", 1)
    other = cat.add_root("r2", "uuid-2", 1)
    cat.ensure_camera("cam", "Camera")
    ids = [_open(cat, root if i % 3 else other, 1_000_000 * (i + 1)) for i in range(12)]
    reads = 0
    real = cat._read

    def counting() -> Any:
        nonlocal reads
        reads += 1
        return real()

    monkeypatch.setattr(cat, "_read", counting)
    mine = [i for n, i in enumerate(ids) if n % 3]
    stream = cat.iter_segments(root_id=root, batch=3)
    first = next(stream)
    assert first.id == mine[0] and reads == 1, "rows are read a batch at a time, on demand"
    cat.forget_segment(mine[5])  # a row deleted ahead of the cursor is not returned
    rest = [s.id for s in stream]
    assert [first.id, *rest] == [i for i in mine if i != mine[5]]
    assert reads == 3, "7 rows in batches of 3: 3 reads, the last one short"
    assert cat.count_segments(root_id=root) == 7 and cat.count_segments() == 11


def test_quarantine_overlaps_and_what_retention_may_delete(any_catalog: Catalog) -> None:
    cat = any_catalog
    root = cat.add_root("r1", "uuid-1", 1)
    cat.ensure_camera("cam", "Camera")
    index = FragmentIndex()
    index.add(0, 90000, 5000, True, 25)
    a, b, c = (_open(cat, root, start) for start in (1_000_000, 2_000_000, 3_000_000))
    for seg_id, end in ((a, 2_000_000), (b, 3_500_000)):
        cat.close_segment(
            seg_id, end_us=end, init_bytes=700, size=5700, fragments=1,
            frag_index=index.encode(), crc32=7,
        )  # fmt: skip
    assert cat.quarantine(a) and not cat.quarantine(c), "only a closed segment is quarantined"
    assert cat.segment(a).state == QUARANTINED and cat.segment(a).crc32 == 7
    assert cat.segment(c).state == OPEN
    assert [s.id for s in cat.oldest(root, 10)] == [a, b], "never the open one"
    assert [s.id for s in cat.expired("cam", 10_000_000, 10)] == [a, b]
    (overlap,) = cat.overlaps()
    assert (overlap.id, overlap.start_us, overlap.earlier_end_us) == (c, 3_000_000, 3_500_000)
