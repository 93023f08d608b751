"""The in-memory timeline answers as the catalog's rows did: runs, gaps, pages, over many
windows, while segments close, are deleted, quarantined and forgotten, and under threads."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vms.api.recordings
from vms.api.recordings import recordings
from vms.catalog.store import MAIN, OPEN, QUARANTINED, SUB, Catalog, Segment
from vms.recording.timeline import RUN_GAP_US, Timeline, Timelines

S = 1_000_000
T0 = 1_700_000_000 * S
NOW = T0 + 10 * 86_400 * S  # after every segment: the live edge never cuts a window here
LIVE_US = 30 * S  # how far the open segment at the end is written


def _open(cat: Catalog, start: int, stream: int = MAIN) -> int:
    return cat.open_segment(
        camera_id="cam", stream=stream, root_id=1, path=f"cam/d/{start}-{stream}.mp4",
        start_us=start, media_start=0, codec="h264", width=1, height=1, has_audio=False,
        timescale=90000,
    )  # fmt: skip


def _close(cat: Catalog, seg_id: int, end: int, size: int) -> None:
    cat.close_segment(
        seg_id, end_us=end, init_bytes=700, size=size, fragments=1, frag_index=b"", crc32=1
    )


@dataclasses.dataclass
class Live:
    end_us: int


@dataclasses.dataclass
class Writers:
    """The writers as the route asks them: how far an open segment is written."""

    live: dict[int, int] = dataclasses.field(default_factory=dict)

    def open_segment(self, camera_id: str, stream: int, *, seg_id: int | None = None) -> Any:
        end = self.live.get(seg_id or -1)
        return None if end is None else Live(end)


@dataclasses.dataclass
class Clock:
    now: int = NOW

    def wall_us(self) -> int:
        return self.now


@dataclasses.dataclass
class FakeServer:
    catalog: Catalog
    timelines: Timelines
    writers: Writers = dataclasses.field(default_factory=Writers)
    clock: Clock = dataclasses.field(default_factory=Clock)


def reference(server: FakeServer, start_us: int, end_us: int, per_page: int) -> Any:
    """Runs, quarantined count and page end as the route built them from the catalog's rows
    (``Catalog.overlapping``), segment by segment."""
    runs: list[dict[str, Any]] = []
    quarantined = 0
    window_end = end_us
    segs = server.catalog.overlapping("cam", MAIN, start_us, end_us, limit=per_page)
    if len(segs) == per_page and segs[-1].start_us > start_us:
        window_end = segs[-1].start_us
        segs = segs[:-1]
    for seg in segs:
        if seg.state == QUARANTINED:
            quarantined += 1
            continue
        seg_end = seg.end_us
        if seg.state == OPEN:
            live = server.writers.open_segment("cam", MAIN, seg_id=seg.id)
            seg_end = max(seg_end, live.end_us if live else seg_end)
        if seg_end <= start_us or seg.start_us >= window_end:
            continue
        s, e = max(seg.start_us, start_us), min(seg_end, window_end)
        if runs and s - runs[-1]["end_us"] <= RUN_GAP_US:
            run = runs[-1]
            run["end_us"] = max(run["end_us"], e)
            run["segments"] += 1
            run["bytes"] += seg.bytes
            run["open"] = run["open"] or seg.state == OPEN
        else:
            runs.append({"start_us": s, "end_us": e, "segments": 1, "bytes": seg.bytes,
                         "open": seg.state == OPEN})  # fmt: skip
    return [tuple(r.values()) for r in runs], quarantined, window_end


def answer(server: FakeServer, start_us: int, end_us: int) -> Any:
    body = recordings(server, "cam", start_us, end_us, limit=10_000)  # type: ignore[arg-type]
    runs = [(r.start_us, r.end_us, r.segments, r.bytes, r.open) for r in body.runs]
    return runs, body.quarantined_segments, body.end_us


def check(server: FakeServer, start_us: int, end_us: int, per_page: int) -> None:
    old = vms.api.recordings.SEGMENTS_PER_PAGE
    vms.api.recordings.SEGMENTS_PER_PAGE = per_page
    try:
        got = answer(server, start_us, end_us)
    finally:
        vms.api.recordings.SEGMENTS_PER_PAGE = old
    assert got == reference(server, start_us, end_us, per_page), (start_us, end_us, per_page)


def build(cat: Catalog, rng: random.Random, n: int, writers: Writers) -> tuple[int, int]:
    """``n`` segments from T0: mostly back to back, some a hair apart (a run still), some
    just past RUN_GAP_US, some hours apart; a few quarantined, an open row left among them (a
    file whose sync failed) and the live one at the end. Returns the span."""
    t = T0
    for i in range(n):
        gap = rng.choice([0, 0, 0, 0, 1, RUN_GAP_US, RUN_GAP_US + 1, 7 * S, 3 * 3600 * S])
        t += gap
        dur = rng.choice([60 * S, 60 * S, 59 * S + 960_000, 2 * S, 1])
        seg_id = _open(cat, t)
        if i == n // 2:
            t += dur  # left open: no writer knows it
            continue
        _close(cat, seg_id, t + dur, rng.randrange(1000, 2_000_000))
        if rng.random() < 0.05:
            assert cat.quarantine(seg_id)
        t += dur
    live = _open(cat, t + rng.choice([0, S]))
    writers.live[live] = t + LIVE_US
    return T0, t + LIVE_US


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeServer, int, int]]:
    cat = Catalog(f"sqlite:///{tmp_path_factory.mktemp('tl') / 'c.db'}")
    cat.add_root("r1", "uuid-1", 1)
    cat.ensure_camera("cam", "cam")
    server = FakeServer(cat, Timelines(cat))
    lo, hi = build(cat, random.Random(7), 400, server.writers)
    _close(cat, _open(cat, T0 + 5 * S, SUB), T0 + 50 * S, 1)  # another stream: not counted
    yield server, lo, hi
    cat.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.floats(-0.05, 1.05),
    length=st.one_of(st.integers(1, 3 * S), st.floats(0, 1.1)),
    per_page=st.sampled_from([2, 3, 5, 50, 10_080]),
)
def test_windows_answer_as_the_catalog_rows(
    archive: tuple[FakeServer, int, int], a: float, length: int | float, per_page: int
) -> None:
    server, lo, hi = archive
    start = lo + int(a * (hi - lo))
    end = start + (length if isinstance(length, int) else max(1, int(length * (hi - lo))))
    check(server, start, end, per_page)


def test_bounds_on_segment_edges(archive: tuple[FakeServer, int, int]) -> None:
    server, lo, hi = archive
    edges = sorted({e for s in server.catalog.segments(camera_id="cam") for e in (s.start_us,
                    s.end_us)})  # fmt: skip
    rng = random.Random(1)
    for _ in range(300):
        a, b = sorted(rng.sample(edges, 2))
        for start, end in ((a, b), (a - 1, b + 1), (a + 1, b - 1)):
            if end > start:
                check(server, start, end, rng.choice([2, 5, 10_080]))
    check(server, lo - 86_400 * S, hi + 86_400 * S, 10_080)


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    c.add_root("r1", "uuid-1", 1)
    c.ensure_camera("cam", "cam")
    yield c
    c.close()


def same_as_loaded(cat: Catalog, t: Timeline) -> None:
    fresh = Timeline("cam", MAIN)
    fresh.load(cat)
    names = ("starts", "ends", "ids", "bytes", "heads", "q_starts", "q_ends", "q_ids", "opens")
    assert {n: list(getattr(t, n)) for n in names} == {n: list(getattr(fresh, n)) for n in names}


def test_follows_closes_deletes_quarantines_and_forgets(cat: Catalog) -> None:
    """Each change the catalog makes reaches the loaded timeline: it stays what a load reads."""
    server = FakeServer(cat, Timelines(cat))
    rng = random.Random(3)
    lo, hi = build(cat, rng, 60, server.writers)
    check(server, lo, hi, 10_080)  # loaded here
    (t,) = server.timelines._timelines.values()
    for _ in range(150):
        rows: list[Segment] = cat.segments(camera_id="cam")
        op = rng.choice(["close", "close", "delete", "delete_middle", "quarantine", "forget"])
        if op == "close":
            # After everything, the open segments' written part included: no overlap.
            latest = max([s.end_us for s in rows] + list(server.writers.live.values()))
            start = latest + rng.choice([0, 1, RUN_GAP_US, S, 3600 * S])
            _close(cat, _open(cat, start), start + rng.choice([S, 60 * S]), rng.randrange(1, 9))
        elif op == "delete":  # retention: the oldest
            cat.delete_segments([s for s in rows if s.state != OPEN][: rng.randrange(1, 4)])
        elif op == "delete_middle":  # another root's oldest: among this root's segments
            done = [s for s in rows if s.state != OPEN]
            cat.delete_segments(rng.sample(done, min(2, len(done))))
        elif op == "quarantine":
            closed = [s for s in rows if s.state == 1]
            if closed:
                assert cat.quarantine(rng.choice(closed).id)
        else:
            for s in rows:
                if s.state == OPEN and s.id not in server.writers.live:
                    cat.forget_segment(s.id)
        same_as_loaded(cat, t)
        hi = max(hi, max(s.end_us for s in cat.segments(camera_id="cam")) + S)
        check(server, lo, hi, 10_080)
        a, b = sorted(rng.randrange(lo, hi) for _ in range(2))
        check(server, a, b + 1, rng.choice([2, 10_080]))
    assert len(t) > 0


def test_invalidate_reads_the_catalog_again(cat: Catalog, tmp_path: Path) -> None:
    server = FakeServer(cat, Timelines(cat))
    lo, hi = build(cat, random.Random(5), 20, server.writers)
    check(server, lo, hi, 10_080)
    # A change this process's catalog object never made (another process's): not seen...
    other = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        victim = next(s for s in other.segments(camera_id="cam") if s.state == 1)
        other.delete_segments([victim])
    finally:
        other.close()
    with pytest.raises(AssertionError):
        check(server, lo, hi, 10_080)
    server.timelines.invalidate("someone-else")
    with pytest.raises(AssertionError):
        check(server, lo, hi, 10_080)
    server.timelines.invalidate("cam")  # ...until the camera's timeline is dropped
    check(server, lo, hi, 10_080)


def test_a_failing_change_drops_every_timeline(cat: Catalog) -> None:
    server = FakeServer(cat, Timelines(cat))
    lo, hi = build(cat, random.Random(9), 10, server.writers)
    check(server, lo, hi, 10_080)
    (t,) = server.timelines._timelines.values()

    def broken(*_: Any) -> None:
        raise RuntimeError("boom")

    t.apply = broken  # type: ignore[method-assign]
    start = hi + S
    _close(cat, _open(cat, start), start + S, 5)  # written all the same
    assert not t.loaded
    del t.apply
    check(server, lo, start + 2 * S, 10_080)


def test_readers_never_see_a_torn_timeline(cat: Catalog) -> None:
    """Back-to-back minutes of 100 bytes, closed at one end and deleted at the other while
    readers ask: every answer is one block whose length, segments and bytes agree."""
    timelines = Timelines(cat)
    t = T0
    for _ in range(50):
        _close(cat, _open(cat, t), t + 60 * S, 100)
        t += 60 * S
    timelines.window("cam", MAIN, 0, 2**62, 10_080)
    stop = threading.Event()
    seen: list[int] = []
    bad: list[Any] = []

    def read() -> None:
        while not stop.is_set():
            w = timelines.window("cam", MAIN, 0, 2**62, 10_080)
            blocks = [it for it in w.items if not it.open]  # the open row comes and goes
            if len(blocks) != 1 or len(w.items) > 2:
                bad.append(w)
                continue
            (it,) = blocks
            if it.end_us - it.start_us != it.segments * 60 * S or it.bytes != 100 * it.segments:
                bad.append(w)
            seen.append(it.segments)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        for _ in range(200):
            _close(cat, _open(cat, t), t + 60 * S, 100)
            t += 60 * S
            oldest = cat.segments(camera_id="cam", limit=1)
            cat.delete_segments(oldest)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert not bad, bad[:3]
    assert len(seen) > 100 and set(seen) <= {49, 50, 51}
