"""The Parquet sink: ended events in part files per day, flushed by rows, time and stop; a past
day compacted into one file; crashes at every step of compaction leave a readable directory
that the next start repairs."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.events import T0_US, ended, event, new
from tests.support.polling import wait_for
from vms.errors import VmsError
from vms.events.bus import EventBus
from vms.events.model import Change, EventMessage
from vms.notify import parquet as parquet_mod
from vms.notify.parquet import SCHEMA, ParquetSink, read_events

DAY_US = 86_400_000_000
DAY1, DAY2 = "2026-09-21", "2026-09-22"  # T0_US is 2026-09-21T14:13:20Z


def files(d: Path, hidden: bool = False) -> list[str]:
    """Files under ``d``; those being written (hidden) only when asked."""
    names = (str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
    return sorted(n for n in names if hidden or not (n.startswith(".") or "/." in n))


def ids(d: Path) -> list[str]:
    return sorted(read_events(d).column("id").to_pylist())


async def write(sink: ParquetSink, *messages: EventMessage) -> None:
    for m in messages:
        await sink.deliver(m)
    await sink.flush()


def test_ended_events_only_with_every_column_flushed_at_flush_rows(tmp_path: Path) -> None:
    bus = EventBus(queue=100)
    bus.add(ParquetSink(tmp_path, flush_s=60, flush_rows=3))
    bus.start()
    try:
        es = [event("cam1", start_us=T0_US + i, zones=("door", "yard")) for i in range(4)]
        for e in es:
            bus.publish(new(e))
            bus.publish(EventMessage(Change.UPDATE, e, e))
        for e in es[:3]:
            bus.publish(ended(e))
        wait_for(lambda: files(tmp_path), 10, "a part file")
        (part,) = files(tmp_path)
        assert part.startswith(f"date={DAY1}/part-") and part.endswith("-0001.parquet")
        table = pq.read_table(tmp_path / part)
        assert table.schema.equals(SCHEMA)
        rows = table.to_pylist()
        assert [r["id"] for r in rows] == [e.id for e in es[:3]]
        assert rows[0] == {
            "id": es[0].id, "camera": "cam1", "label": "person", "start_us": T0_US,
            "end_us": T0_US + 3_000_000, "top_score": 0.91, "zones": ["door", "yard"],
            "stream": "sub", "snapshot_us": T0_US + 200_000, "path_len": 2,
        }  # fmt: skip
        bus.publish(ended(es[3]))  # one row, below flush_rows: written at stop
    finally:
        bus.stop(timeout=5)
    assert len(files(tmp_path)) == 2
    assert ids(tmp_path) == sorted(e.id for e in es)
    assert bus.stats()["parquet"] == {"queued": 0, "delivered": 4, "dropped": 0, "failed": 0}


def test_rows_are_flushed_every_flush_s(tmp_path: Path) -> None:
    bus = EventBus(queue=100)
    bus.add(ParquetSink(tmp_path, flush_s=0.2, flush_rows=1000))
    bus.start()
    try:
        e = event()
        bus.publish(ended(e))
        wait_for(lambda: files(tmp_path), 10, "the timed flush")
        assert ids(tmp_path) == [e.id]
    finally:
        bus.stop(timeout=5)


def test_a_past_day_is_compacted_once_a_later_day_is_written(tmp_path: Path) -> None:
    async def main() -> None:
        sink = ParquetSink(tmp_path)
        await sink.start()
        a, b, c = (event(start_us=T0_US + i) for i in range(3))
        await write(sink, ended(a))
        await write(sink, ended(b))
        assert len(files(tmp_path)) == 2  # two parts of a day still open
        tomorrow = event(start_us=T0_US + DAY_US)
        await write(sink, ended(tomorrow))
        assert [f.split("/")[0] for f in files(tmp_path)] == [f"date={DAY2}", f"events-{DAY1}.parquet"]
        assert f"events-{DAY1}.parquet" in files(tmp_path)
        assert not (tmp_path / f"date={DAY1}").exists()
        day1 = pq.read_table(tmp_path / f"events-{DAY1}.parquet")
        assert day1.schema.equals(SCHEMA) and day1.column("id").to_pylist() == [a.id, b.id]
        # An event of yesterday that ends today lands in yesterday and is merged again.
        await write(sink, ended(c, end_us=T0_US + DAY_US + 5))
        day1 = pq.read_table(tmp_path / f"events-{DAY1}.parquet")
        assert day1.column("id").to_pylist() == [a.id, b.id, c.id]
        assert [f for f in files(tmp_path) if f.startswith(f"date={DAY1}")] == []
        assert ids(tmp_path) == sorted([a.id, b.id, c.id, tomorrow.id])
        await sink.stop()

    asyncio.run(main())


CRASH_POINTS = ["before hiding the parts", "before the rename", "before removing the parts"]


@pytest.mark.parametrize("where", CRASH_POINTS)
def test_a_crash_mid_compaction_leaves_every_row_readable_once_and_start_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    a, b = event(start_us=T0_US), event(start_us=T0_US + 1)
    tomorrow = event(start_us=T0_US + DAY_US)

    real_replace, real_rmtree = os.replace, shutil.rmtree

    def crash_replace(src: Any, dst: Any) -> None:
        if where == CRASH_POINTS[0] and ".compacting" in str(dst):
            raise OSError("crash")
        if where == CRASH_POINTS[1] and str(dst).endswith(f"events-{DAY1}.parquet"):
            raise OSError("crash")
        real_replace(src, dst)

    def crash_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if where == CRASH_POINTS[2] and ".compacting" in str(path):
            raise OSError("crash")
        real_rmtree(path, *args, **kwargs)

    async def crash() -> None:
        sink = ParquetSink(tmp_path)
        await sink.start()
        await write(sink, ended(a))
        await write(sink, ended(b))
        monkeypatch.setattr(parquet_mod.os, "replace", crash_replace)
        monkeypatch.setattr(parquet_mod.shutil, "rmtree", crash_rmtree)
        await write(sink, ended(tomorrow))  # compacts day 1: the "crash" stops it midway
        monkeypatch.undo()

    asyncio.run(crash())
    seen = ids(tmp_path)
    assert len(seen) == len(set(seen))  # never a row twice
    if where != CRASH_POINTS[1]:
        assert seen == sorted([a.id, b.id, tomorrow.id])
    else:  # the day's new rows are hidden until the next start finishes the rename
        assert seen == [tomorrow.id]

    async def restart() -> None:
        sink = ParquetSink(tmp_path)
        await sink.start()
        await sink.stop()

    asyncio.run(restart())
    assert ids(tmp_path) == sorted([a.id, b.id, tomorrow.id])
    left = files(tmp_path, hidden=True)
    assert f"events-{DAY1}.parquet" in left
    assert not any(f.startswith((".", f"date={DAY1}")) or "/." in f for f in left), left
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_failed_flush_keeps_its_rows_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        sink = ParquetSink(tmp_path)
        await sink.start()
        def full_disk(*args: Any, **kwargs: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(parquet_mod.pq, "write_table", full_disk)
        e = event()
        await write(sink, ended(e))
        assert files(tmp_path) == []
        monkeypatch.undo()
        await sink.flush()
        assert ids(tmp_path) == [e.id]
        assert files(tmp_path, hidden=True) == files(tmp_path)
        await sink.stop()

    asyncio.run(main())


def test_bad_settings_and_unended_events_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VmsError):
        ParquetSink(tmp_path, flush_rows=0)
    with pytest.raises(VmsError):
        ParquetSink(tmp_path, flush_s=0)
    sink = ParquetSink(tmp_path)
    e = event()
    assert not sink.wants(new(e)) and sink.wants(ended(e))
    with pytest.raises(VmsError):
        asyncio.run(sink.deliver(EventMessage(Change.END, e)))  # no end time
    assert read_events(tmp_path / "missing").num_rows == 0
    assert isinstance(read_events(tmp_path / "missing"), pa.Table)
