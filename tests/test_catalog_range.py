"""The playback query: one camera stream's segments overlapping a window, from its index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from vms.catalog.store import (
    MAIN,
    OPEN,
    OPEN_END_US,
    SUB,
    Catalog,
    overlapping_query,
    segments,
)
from vms.recording.segment import FragmentIndex

S = 1_000_000  # a second, in µs
INDEX = "segments_camera_stream_end"


@pytest.fixture(params=["sqlite", "postgresql"])
def cat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    c = Catalog(url)
    c.add_root("r1", "uuid-1", 1)
    for cam in ("cam", "other"):
        c.ensure_camera(cam, cam)
    yield c
    c.close()


def _open(cat: Catalog, start: int, stream: int = MAIN, camera: str = "cam") -> int:
    return cat.open_segment(
        camera_id=camera, stream=stream, root_id=1, path=f"{camera}/d/{start}-{stream}.mp4",
        start_us=start, media_start=0, codec="h264", width=1, height=1, has_audio=False,
        timescale=90000,
    )  # fmt: skip


def _segment(cat: Catalog, start: int, end: int, stream: int = MAIN, camera: str = "cam") -> int:
    seg_id = _open(cat, start, stream, camera)
    index = FragmentIndex()
    index.add(0, (end - start) * 90000 // S, 1000, True, 25)
    cat.close_segment(
        seg_id, end_us=end, init_bytes=700, size=1700, fragments=1,
        frag_index=index.encode(), crc32=1,
    )  # fmt: skip
    return seg_id


def ids(cat: Catalog, start: int, end: int, stream: int = MAIN, **kw: Any) -> list[int]:
    return [s.id for s in cat.overlapping("cam", stream, start, end, **kw)]


def test_both_bounds_streams_and_the_open_segment(cat: Catalog) -> None:
    a, b, c = (_segment(cat, t * S, (t + 10) * S) for t in (0, 10, 20))
    live = _open(cat, 30 * S)
    sub1, sub2 = _segment(cat, 0, 15 * S, SUB), _segment(cat, 15 * S, 30 * S, SUB)
    _segment(cat, 10 * S, 20 * S, camera="other")

    assert ids(cat, 10 * S, 20 * S) == [b], "a segment that only touches a bound is outside"
    assert ids(cat, 10 * S - 1, 20 * S + 1) == [a, b, c]
    assert ids(cat, 5 * S, 6 * S) == [a], "one segment across the whole window"
    assert ids(cat, 25 * S, 30 * S) == [c], "the open one starts at the end: outside"
    assert ids(cat, 35 * S, 40 * S) == [live], "the open one reaches the live edge"
    assert ids(cat, 0, 3600 * S) == [a, b, c, live]
    assert ids(cat, 0, 3600 * S, limit=2) == [a, b]
    assert ids(cat, 29 * S, 3600 * S, limit=1) == [c]
    assert ids(cat, 40 * S, 30 * S) == [] and ids(cat, 5 * S, 5 * S) == []
    assert ids(cat, 10 * S, 20 * S, SUB) == [sub1, sub2], "the sub stream apart from the main"
    assert ids(cat, 30 * S, 40 * S, SUB) == []
    assert cat.overlapping("nobody", MAIN, 0, 3600 * S) == []

    (seg,) = cat.overlapping("cam", MAIN, 35 * S, 40 * S)
    assert seg.state == OPEN and seg.end_us == seg.start_us == 30 * S, "no sentinel shows"
    assert cat.segment(live).end_us == 30 * S
    assert cat.last_end_us("cam") == 30 * S, "an open row ends, for now, where it starts"
    assert cat.overlaps() == []

    # A rotation: the new segment's row is written before the old one's close is.
    nxt = _open(cat, 40 * S)
    assert ids(cat, 35 * S, 45 * S) == [live, nxt]
    assert ids(cat, 35 * S, 39 * S) == [live]
    index = FragmentIndex([(90000 * 10, 1000, 1 | 250 << 2)])
    cat.close_segment(
        live, end_us=40 * S, init_bytes=700, size=1700, fragments=1,
        frag_index=index.encode(), crc32=1,
    )  # fmt: skip
    assert ids(cat, 39 * S, 41 * S) == [live, nxt]
    assert ids(cat, 40 * S, 41 * S) == [nxt]


def test_index_blobs_are_read_only_when_asked(cat: Catalog) -> None:
    seg_id = _segment(cat, 0, 10 * S)
    statements: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa.event.listen(cat.engine, "before_cursor_execute", seen)
    try:
        (plain,) = cat.overlapping("cam", MAIN, 0, 10 * S)
        assert statements and not any("frag_index" in s for s in statements)
        (full,) = cat.overlapping("cam", MAIN, 0, 10 * S, with_index=True)
        assert any("frag_index" in s for s in statements[1:])
    finally:
        sa.event.remove(cat.engine, "before_cursor_execute", seen)
    assert plain.id == full.id == seg_id
    assert plain.frag_index is None
    assert full.frag_index == cat.segment(seg_id).frag_index and full.frag_index
    assert plain == full.__class__(**{**_fields(full), "frag_index": None})


def _fields(seg: Any) -> dict[str, Any]:
    return {k: getattr(seg, k) for k in seg.__dataclass_fields__}


def _fill(cat: Catalog) -> None:
    """Two days of 1-minute segments for 2 cameras x 2 streams (11,520 rows), each stream
    with its open segment: enough that the planner's choice is about the index."""
    rows = []
    day0 = 1_790_000_000 * S
    for camera in ("cam", "other"):
        for stream in (MAIN, SUB):
            for i in range(2 * 1440):
                start = day0 + i * 60 * S
                last = i == 2 * 1440 - 1
                rows.append(
                    {
                        "camera_id": camera, "stream": stream, "root_id": 1,
                        "path": f"{camera}/d/{start}-{stream}.mp4",
                        "state": OPEN if last else 1, "start_us": start,
                        "end_us": OPEN_END_US if last else start + 60 * S, "media_start": 0,
                        "codec": "h264", "width": 1, "height": 1, "has_audio": False,
                        "timescale": 90000, "init_bytes": 700, "bytes": 1700, "fragments": 1,
                        "frag_index": bytes(720), "crc32": 1,
                    }
                )  # fmt: skip
    with cat.engine.begin() as c:
        c.execute(segments.insert(), rows)


def _plan(cat: Catalog, start: int, end: int, limit: int | None) -> str:
    q = overlapping_query("cam", MAIN, start, end, limit=limit)
    assert q is not None
    sql = str(q.compile(cat.engine, compile_kwargs={"literal_binds": True}))
    explain = "EXPLAIN QUERY PLAN " if cat.url.startswith("sqlite") else "EXPLAIN "
    with cat.engine.connect() as c:
        return "\n".join(str(r[-1]) for r in c.exec_driver_sql(explain + sql))


def _assert_searches_index(cat: Catalog, plan: str) -> None:
    """Each of the three parts (inside the window, across its end, the open rows) is a search
    of ``segments_camera_stream_end``, and nothing reads the table in order."""
    if cat.url.startswith("sqlite"):
        reads = [line for line in plan.splitlines() if "segments" in line.split(" USING")[0]]
        assert len(reads) == 3, plan
        assert all(line.startswith(f"SEARCH segments USING INDEX {INDEX} (") for line in reads)
        assert "SCAN segments" not in plan
    else:
        assert "Seq Scan" not in plan, plan
        uses = plan.count(f"Index Scan using {INDEX} on segments")
        assert uses + plan.count(f"Bitmap Index Scan on {INDEX}") == 3, plan


@pytest.mark.parametrize("limit", [None, 100])
def test_the_query_searches_its_index(cat: Catalog, limit: int | None) -> None:
    _fill(cat)
    day0 = 1_790_000_000 * S
    windows = ((day0 + 3600 * S, day0 + 7200 * S), (day0 + 47 * 3600 * S, OPEN_END_US))
    if cat.url.startswith("sqlite"):
        # A SQLite file no one has analysed: the planner goes by its rules of thumb alone.
        for start, end in windows:
            _assert_searches_index(cat, _plan(cat, start, end, limit))
    with cat.engine.begin() as c:
        c.execute(sa.text("ANALYZE"))
    for start, end in windows:
        _assert_searches_index(cat, _plan(cat, start, end, limit))
        found = cat.overlapping("cam", MAIN, start, end, limit=limit)
        assert [s.start_us for s in found] == [start + i * 60 * S for i in range(60)]
    assert found[-1].state == OPEN, "the last window reaches the open segment"
