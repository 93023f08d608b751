"""The Parquet sink: every ended event, one row each, in a file per day for analytics.

Layout under ``directory`` (UTC date of the event's start)::

    date=2026-09-21/part-141320-0001.parquet   rows written at a flush, while the day is open
    events-2026-09-20.parquet                  a past day, compacted into one file

Rows are buffered and written as a part file every ``flush_s``, every ``flush_rows`` rows and
at stop. Once a later date has been written, a day is past: its parts (and its compacted file,
when late events came in after it) are merged into ``events-YYYY-MM-DD.parquet``. Columns:
:data:`SCHEMA`. Read the whole directory with :func:`read_events` (or any Parquet reader that
skips names starting with ``.``, as ``pyarrow.dataset`` and Spark do).

Crash safety: a reader never sees a half-written file, nor a row twice.

- Every file is written under a hidden name (``.…tmp``), fsynced, then renamed: visible files
  are always complete. Hidden leftovers of a crash are removed at the next start.
- Compacting day D: (1) write ``.events-D.parquet.tmp`` (old compacted file + parts, one row
  per event id) and fsync it; (2) rename ``date=D`` to the hidden ``.date=D.compacting`` (its
  parts leave the readers' view at once); (3) rename the tmp file to ``events-D.parquet``;
  (4) remove the hidden directory. A crash before (2) leaves the parts as they were (the tmp
  is removed and D compacted again); a crash between (2) and (3) hides D's new rows until the
  next start, which finishes (3) and (4) from the complete tmp file; after (3), only (4)
  remains.

Traps: one sink writes a directory (one server); the part name's HHMMSS is the writing time,
the date the event's start, so a late event of yesterday lands in yesterday and is merged again.
A flush that fails (disk full) keeps its rows for the next one (at most :data:`MAX_HELD`,
the oldest dropped beyond) and logs; ``deliver`` counts a buffered row as delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from vms.errors import Kind, VmsError
from vms.events.model import Change, EventMessage, Message

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("camera", pa.string()),
        ("label", pa.string()),
        ("start_us", pa.int64()),
        ("end_us", pa.int64()),
        ("top_score", pa.float64()),
        ("zones", pa.list_(pa.string())),
        ("stream", pa.string()),
        ("snapshot_us", pa.int64()),
        ("path_len", pa.int32()),
    ]
)
# Rows held while flushes fail; beyond this the oldest are dropped.
MAX_HELD = 100_000

_DAY_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_DAY_FILE = re.compile(r"^events-(\d{4}-\d{2}-\d{2})\.parquet$")
_HIDDEN_DAY_DIR = re.compile(r"^\.date=(\d{4}-\d{2}-\d{2})\.compacting$")


def row_of(message: EventMessage) -> dict[str, Any]:
    e = message.after
    return {
        "id": e.id,
        "camera": e.camera_id,
        "label": e.label,
        "start_us": e.start_us,
        "end_us": e.end_us,
        "top_score": e.top_score,
        "zones": list(e.zones),
        "stream": e.stream,
        "snapshot_us": e.snapshot_us,
        "path_len": len(e.path),
    }


def day_of(t_us: int) -> str:
    return datetime.datetime.fromtimestamp(t_us / 1e6, datetime.UTC).strftime("%Y-%m-%d")


def read_events(directory: Path) -> pa.Table:
    """Every row under ``directory``: compacted days and open parts (hidden files skipped)."""
    if not directory.is_dir():
        return SCHEMA.empty_table()
    return ds.dataset(directory, format="parquet", schema=SCHEMA).to_table()


class ParquetSink:
    """Writes ended events to daily Parquet files; see the module doc."""

    name = "parquet"

    def __init__(self, directory: Path, *, flush_s: float = 60, flush_rows: int = 1000) -> None:
        if flush_s <= 0 or flush_rows < 1:
            raise VmsError(
                Kind.INVALID_ARGUMENT,
                f"parquet flush_s ({flush_s}) must be > 0 and flush_rows ({flush_rows}) ≥ 1",
            )
        self.directory = directory
        self.flush_s = flush_s
        self.flush_rows = flush_rows
        self._rows: list[dict[str, Any]] = []
        self._seq = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # The files themselves: a flush cut short by a cancel goes on in its thread while the
        # next one starts; they must not write and compact at once.
        self._io = threading.Lock()
        self._failing = False
        self._compact_failing = False

    def wants(self, message: Message) -> bool:
        return isinstance(message, EventMessage) and message.change is Change.END

    async def start(self) -> None:
        self._lock, self._stopping = asyncio.Lock(), asyncio.Event()
        await asyncio.to_thread(self._recover)
        self._timer = asyncio.create_task(self._tick(), name="parquet flush")

    async def deliver(self, message: Message) -> None:
        if not isinstance(message, EventMessage) or message.after.end_us is None:
            raise VmsError(Kind.INTERNAL, "the parquet sink takes ended events only")
        self._rows.append(row_of(message))
        if len(self._rows) >= self.flush_rows:
            await self.flush()

    async def stop(self) -> None:
        self._stopping.set()
        if self._timer is not None:
            await self._timer  # lets a flush under way finish
            self._timer = None
        await self.flush()

    async def _tick(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the buffered rows now (a part per day), then compact the past days."""
        async with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return
            try:
                await asyncio.to_thread(self._write, rows)
            except (OSError, pa.ArrowException) as e:
                held = (rows + self._rows)[-MAX_HELD:]
                lost = len(rows) + len(self._rows) - len(held)
                self._rows = held
                if not self._failing or lost:
                    log.error(
                        "parquet %s: writing %d events failed (%s); kept for the next flush%s",
                        self.directory,
                        len(rows),
                        e,
                        f", {lost} oldest dropped" if lost else "",
                    )
                self._failing = True
                return
            if self._failing:
                log.info("parquet %s: writing again", self.directory)
                self._failing = False

    # -- on a worker thread --------------------------------------------------------------------

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self._io:
            self._write_parts(rows)
            self._compact_past_or_log()

    def _compact_past_or_log(self) -> None:
        try:
            self._compact_past()
        except (OSError, pa.ArrowException) as e:
            if not self._compact_failing:  # tried again at every flush; said once
                log.error("parquet %s: compacting failed: %s", self.directory, e)
            self._compact_failing = True
        else:
            self._compact_failing = False

    def _write_parts(self, rows: list[dict[str, Any]]) -> None:
        by_day: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(day_of(row["start_us"]), []).append(row)
        now = datetime.datetime.now(datetime.UTC).strftime("%H%M%S")
        for day, day_rows in sorted(by_day.items()):
            folder = self.directory / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            while True:
                self._seq += 1
                path = folder / f"part-{now}-{self._seq:04d}.parquet"
                if not path.exists():
                    break
            _write_atomic(pa.Table.from_pylist(day_rows, schema=SCHEMA), path)

    def _recover(self) -> None:
        """Finish or undo what a crash left, then compact the past days."""
        with self._io:
            self._recover_locked()

    def _recover_locked(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for entry in self.directory.iterdir():
            m = _HIDDEN_DAY_DIR.match(entry.name)
            if m:
                tmp = _tmp_of(self.directory / f"events-{m.group(1)}.parquet")
                if tmp.exists():  # complete: it was fsynced before the folder was hidden
                    os.replace(tmp, self.directory / f"events-{m.group(1)}.parquet")
                shutil.rmtree(entry, ignore_errors=True)
                log.info("parquet %s: finished compacting %s after a crash", entry, m.group(1))
        for tmp in self.directory.glob("**/.*.tmp"):
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        self._compact_past_or_log()

    def _compact_past(self) -> None:
        """Compact every day with parts that is older than the newest day holding data."""
        open_days = {
            m.group(1): p
            for p in self.directory.iterdir()
            if p.is_dir() and (m := _DAY_DIR.match(p.name))
        }
        days = set(open_days) | {
            m.group(1) for p in self.directory.iterdir() if (m := _DAY_FILE.match(p.name))
        }
        if not days:
            return
        newest = max(days)
        for day, folder in sorted(open_days.items()):
            if day < newest:
                self._compact(day, folder)

    def _compact(self, day: str, folder: Path) -> None:
        final = self.directory / f"events-{day}.parquet"
        parts = sorted(folder.glob("part-*.parquet"))
        if not parts:
            shutil.rmtree(folder)  # nothing but leftovers: the day is already in its file
            return
        sources = ([final] if final.exists() else []) + parts
        table = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in sources])
        table = _one_row_per_id(table)
        tmp = _tmp_of(final)
        _write_file(table, tmp)  # (1)
        hidden = self.directory / f".date={day}.compacting"
        os.replace(folder, hidden)  # (2)
        _fsync_dir(self.directory)
        os.replace(tmp, final)  # (3)
        _fsync_dir(self.directory)
        shutil.rmtree(hidden)  # (4)
        log.info("parquet %s: compacted %s (%d events)", self.directory, day, table.num_rows)


def _one_row_per_id(table: pa.Table) -> pa.Table:
    """The last row of each id (a later file's), sorted by start."""
    index = pa.array(range(table.num_rows), pa.int64())
    last = (
        table.select(["id"])
        .append_column("i", index)
        .group_by("id", use_threads=False)
        .aggregate([("i", "max")])
        .column("i_max")
    )
    table = table.take(pc.sort_indices(last))
    return table.sort_by([("start_us", "ascending"), ("id", "ascending")])


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = _tmp_of(path)
    _write_file(table, tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_file(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
