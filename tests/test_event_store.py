"""Events and motion in the catalog, on SQLite and PostgreSQL: writes (new, update, end, again),
the list's filters and keyset pages, the motion rows' max-merge, intervals, expiry; snapshots
on disk."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from vms.catalog.store import Catalog
from vms.errors import Kind, VmsError
from vms.events.model import Box, Change, Event, EventMessage
from vms.events.snapshots import Snapshots
from vms.events.store import MINUTE_US, SECOND_US, EventStore, StoreSink, merge

T0 = 1_790_000_040_000_000  # a whole minute
BOX = Box(0.1, 0.2, 0.3, 0.4)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    cat = Catalog(url)
    yield EventStore(cat)
    cat.close()


def event(
    camera: str = "cam",
    start_us: int = T0,
    end_us: int | None = None,
    label: str = "person",
    zones: list[str] | None = None,
    event_id: str | None = None,
    score: float = 0.6,
) -> Event:
    return Event(
        id=event_id or str(uuid.uuid4()), camera_id=camera, label=label, start_us=start_us,
        end_us=end_us, score=score, top_score=score, box=BOX, zones=list(zones or []),
        path=[(start_us, BOX)],
    )  # fmt: skip


def new(e: Event) -> EventMessage:
    return EventMessage(Change.NEW, e.copy())


def test_new_update_end_and_again(store: EventStore) -> None:
    e = event()
    store.write(new(e))
    assert store.get(e.id) == e
    before = e.copy()
    e.top_score, e.zones, e.current_zones = 0.9, ["door"], ["door"]
    e.path.append((T0 + SECOND_US, Box(0.2, 0.2, 0.4, 0.5)))
    store.write(EventMessage(Change.UPDATE, e.copy(), before))
    got = store.get(e.id)
    assert got.top_score == 0.9 and got.zones == ["door"] and len(got.path) == 2
    ended = e.copy()
    ended.end_us = T0 + 5 * SECOND_US
    store.write(EventMessage(Change.END, ended, e))
    store.write(EventMessage(Change.END, ended, e))  # delivered twice: no error, no change
    assert store.get(e.id) == ended and not store.get(e.id).active
    # A late update (the bus retried it) does not make the ended event active again.
    store.write(EventMessage(Change.UPDATE, e.copy(), before))
    assert store.get(e.id).end_us == ended.end_us
    # An update for an id never seen (its new was lost) inserts it.
    lost = event(start_us=T0 + 1)
    store.write(EventMessage(Change.UPDATE, lost))
    assert store.get(lost.id) == lost
    with pytest.raises(VmsError) as err:
        store.get(str(uuid.uuid4()))
    assert err.value.kind is Kind.NOT_FOUND


def test_list_filters_and_keyset_pages(store: EventStore) -> None:
    made = []
    for i in range(12):
        e = event(
            camera="a" if i % 2 else "b",
            start_us=T0 + (i // 2) * SECOND_US,  # two events share each start: ties on id
            end_us=None if i >= 10 else T0 + 100 * SECOND_US,
            label="car" if i % 3 == 0 else "person",
            zones=["door_1"] if i % 4 == 0 else (["yard"] if i % 4 == 1 else []),
        )
        store.write(new(e))
        made.append(e)
    newest_first = sorted(made, key=lambda e: (e.start_us, e.id), reverse=True)

    def ids(events: list[Event]) -> list[str]:
        return [e.id for e in events]

    assert ids(store.list(cameras=None, limit=100)) == ids(newest_first)
    assert ids(store.list(cameras=["a"])) == ids([e for e in newest_first if e.camera_id == "a"])
    assert store.list(cameras=[]) == []
    assert ids(store.list(cameras=None, label="car")) == ids(
        [e for e in newest_first if e.label == "car"]
    )
    door = [e for e in newest_first if "door_1" in e.zones]
    assert ids(store.list(cameras=None, zone="door_1")) == ids(door) and door
    # "_" in a zone name is no wildcard: "door_1" is not "doorX1", and no prefix matches.
    assert store.list(cameras=None, zone="doorX1") == []
    assert store.list(cameras=None, zone="door") == []
    assert store.list(cameras=None, zone="Door_1") == [], "exact, on both databases"
    assert ids(store.list(cameras=["b"], zone="door_1")) == ids(
        [e for e in door if e.camera_id == "b"]
    )
    window = store.list(cameras=None, start_us=T0 + SECOND_US, end_us=T0 + 3 * SECOND_US)
    assert ids(window) == ids(
        [e for e in newest_first if T0 + SECOND_US <= e.start_us < T0 + 3 * SECOND_US]
    )
    assert {e.id for e in store.list(cameras=None, active=True)} == {e.id for e in made[10:]}
    assert len(store.list(cameras=None, active=False)) == 10
    # Pages of 5, each after the last of the one before, meet every event once, in order.
    seen: list[Event] = []
    before = None
    while True:
        page = store.list(cameras=None, limit=5, before=before)
        seen += page
        if len(page) < 5:
            break
        before = (page[-1].start_us, page[-1].id)
    assert ids(seen) == ids(newest_first)
    # The same with a zone (the query then runs on the zone table's index).
    page1 = store.list(cameras=None, zone="door_1", limit=1)
    page2 = store.list(cameras=None, zone="door_1", limit=5, before=(page1[0].start_us, page1[0].id))
    assert ids(page1 + page2) == ids(door)


def test_zones_follow_the_event(store: EventStore) -> None:
    e = event(zones=["a"])
    store.write(new(e))
    e.zones = ["a", "b"]
    store.write(EventMessage(Change.UPDATE, e.copy()))
    assert [x.id for x in store.list(cameras=None, zone="b")] == [e.id]
    assert [x.id for x in store.list(cameras=None, zone="a")] == [e.id]


def test_motion_rows_merge_to_the_max(store: EventStore) -> None:
    first = bytes([0] * 10 + [50] * 5 + [0] * 45)
    store.add_motion("cam", T0, first)
    store.add_motion("cam", T0, bytes([0] * 12 + [200, 10] + [0] * 44 + [7, 0]))
    got = store.motion("cam", T0, T0 + MINUTE_US)
    assert got == [
        (T0 + 10 * SECOND_US, 50), (T0 + 11 * SECOND_US, 50), (T0 + 12 * SECOND_US, 200),
        (T0 + 13 * SECOND_US, 50), (T0 + 14 * SECOND_US, 50), (T0 + 58 * SECOND_US, 7),
    ]  # fmt: skip
    # A window that starts inside a second includes it; another camera's rows are not mixed in.
    store.add_motion("other", T0, bytes([255] * 60))
    assert store.motion("cam", T0 + 12 * SECOND_US + 1, T0 + 14 * SECOND_US) == [
        (T0 + 12 * SECOND_US, 200), (T0 + 13 * SECOND_US, 50),
    ]  # fmt: skip
    for bad_minute, scores in [(T0 + 1, first), (T0, first[:59]), (T0, first + b"\0")]:
        with pytest.raises(VmsError) as err:
            store.add_motion("cam", bad_minute, scores)
        assert err.value.kind is Kind.INVALID_ARGUMENT


def test_intervals_of_motion_and_of_events(store: EventStore) -> None:
    store.add_motion("cam", T0, bytes([0] * 5 + [1, 3, 0, 9] + [0] * 50 + [4]))
    store.add_motion("cam", T0 + MINUTE_US, bytes([6, 6] + [0] * 58))
    assert store.intervals("cam", T0, T0 + 2 * MINUTE_US, kind="motion") == [
        (T0 + 5 * SECOND_US, T0 + 7 * SECOND_US),
        (T0 + 8 * SECOND_US, T0 + 9 * SECOND_US),
        (T0 + 59 * SECOND_US, T0 + MINUTE_US + 2 * SECOND_US),  # across the minute's edge
    ]
    # Clipped to the window.
    assert store.intervals("cam", T0 + 6 * SECOND_US, T0 + 8_500_000, kind="motion") == [
        (T0 + 6 * SECOND_US, T0 + 7 * SECOND_US), (T0 + 8 * SECOND_US, T0 + 8_500_000),
    ]  # fmt: skip
    assert store.watched("cam", T0 + 30 * SECOND_US, T0 + 90 * SECOND_US)
    assert not store.watched("cam", T0 + 30 * SECOND_US, T0 + 121 * SECOND_US)

    s = SECOND_US
    store.write(new(event(start_us=T0 + 10 * s, end_us=T0 + 20 * s)))
    store.write(new(event(start_us=T0 + 15 * s, end_us=T0 + 30 * s)))  # overlaps: merged
    store.write(new(event(start_us=T0 + 50 * s, end_us=T0 + 60 * s)))
    store.write(new(event(start_us=T0 + 100 * s)))  # active: up to the window's end
    store.write(new(event(camera="other", start_us=T0, end_us=T0 + 200 * s)))
    assert store.intervals("cam", T0, T0 + 300 * s, kind="events") == [
        (T0 + 10 * s, T0 + 30 * s), (T0 + 50 * s, T0 + 60 * s), (T0 + 100 * s, T0 + 300 * s),
    ]  # fmt: skip
    assert store.intervals("cam", T0 + 25 * s, T0 + 55 * s, kind="events") == [
        (T0 + 25 * s, T0 + 30 * s), (T0 + 50 * s, T0 + 55 * s),
    ]  # fmt: skip
    assert store.intervals("cam", T0 + 30 * s, T0 + 50 * s, kind="events") == []
    with pytest.raises(VmsError):
        store.intervals("cam", T0, T0 + s, kind="faces")


def test_expire_events_and_motion(store: EventStore) -> None:
    s = SECOND_US
    old = event(start_us=T0, end_us=T0 + 10 * s, zones=["door"])
    ongoing = event(start_us=T0 + s)  # active: never expired
    recent = event(start_us=T0 + 5 * s, end_us=T0 + 1000 * s)
    other = event(camera="keep", start_us=T0, end_us=T0 + 10 * s)
    for e in (old, ongoing, recent, other):
        store.write(new(e))
    assert [e.id for e in store.expire(T0 + 100 * s, except_cameras=["keep"])] == [old.id]
    assert store.list(cameras=None, zone="door") == []
    assert [e.id for e in store.expire(T0 + 100 * s, cameras=["keep"])] == [other.id]
    assert store.expire(T0 + 100 * s) == []
    assert {e.id for e in store.list(cameras=None)} == {ongoing.id, recent.id}
    # Batches: at most ``limit`` a call, oldest first.
    many = [event(start_us=T0 + 2000 * s + i, end_us=T0 + 2001 * s) for i in range(5)]
    for e in many:
        store.write(new(e))
    assert [e.id for e in store.expire(T0 + 3000 * s, limit=3)] == [
        recent.id, many[0].id, many[1].id
    ]

    for k in range(4):
        store.add_motion("cam", T0 + k * MINUTE_US, bytes([1] * 60))
    assert store.expire_motion(T0 + 2 * MINUTE_US + 1) == 2  # minutes 0 and 1 have ended
    assert store.intervals("cam", T0, T0 + 4 * MINUTE_US, kind="motion") == [
        (T0 + 2 * MINUTE_US, T0 + 4 * MINUTE_US)
    ]


def test_end_active_ends_at_the_last_update(store: EventStore) -> None:
    e = event()
    e.path.append((T0 + 3 * SECOND_US, BOX))
    e.current_zones = ["door"]
    store.write(new(e))
    done = event(end_us=T0 + SECOND_US)
    store.write(new(done))
    (ended,) = store.end_active()
    assert ended.id == e.id and ended.end_us == T0 + 3 * SECOND_US and ended.current_zones == []
    assert store.get(e.id).end_us == T0 + 3 * SECOND_US
    assert store.list(cameras=None, active=True) == []


def test_the_store_sink_writes_events_and_waits_for_the_catalog(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = StoreSink(store, retry=(0.01, 0.02))
    e = event()
    tries = []
    real = store.write

    def flaky(message: EventMessage) -> None:
        tries.append(message)
        if len(tries) < 3:
            raise VmsError(Kind.UNAVAILABLE, "catalog away")
        real(message)

    monkeypatch.setattr(store, "write", flaky)

    async def run() -> None:
        await sink.start()
        assert sink.wants(new(e))
        await sink.deliver(new(e))
        await sink.stop()

    asyncio.run(run())
    assert len(tries) == 3 and store.get(e.id) == e


def test_the_schema_is_migration_0006(store: EventStore) -> None:
    with store.catalog.engine.connect() as c:
        version = c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version >= "0006"  # this migration, or one after it
    assert {"events", "event_zones", "motion"} <= set(
        sa.inspect(store.catalog.engine).get_table_names()
    )


def test_merge() -> None:
    assert merge([(5, 6), (1, 3), (2, 4), (4, 5), (8, 9)]) == [(1, 6), (8, 9)]
    assert merge([]) == []


# --- snapshots -------------------------------------------------------------------------------


def test_snapshots_are_written_whole_and_named_only_by_valid_ids(tmp_path: Path) -> None:
    snaps = Snapshots(tmp_path)
    event_id = str(uuid.uuid4())
    snaps.write("cam", event_id, b"clean", b"boxed")
    assert snaps.path("cam", event_id, box=False) == tmp_path / "events" / "cam" / f"{event_id}.jpg"
    assert snaps.read("cam", event_id, box=False) == b"clean"
    assert snaps.read("cam", event_id, box=True) == b"boxed"
    snaps.write("cam", event_id, b"better", b"better boxed")  # replaced
    assert snaps.read("cam", event_id, box=True) == b"better boxed"
    assert sorted(p.name for p in (tmp_path / "events" / "cam").iterdir()) == sorted(
        [f"{event_id}.jpg", f"{event_id}-box.jpg"]
    ), "no temporary file is left behind"
    snaps.delete("cam", event_id)
    snaps.delete("cam", event_id)  # twice: nothing to do
    with pytest.raises(VmsError) as err:
        snaps.read("cam", event_id, box=False)
    assert err.value.kind is Kind.NOT_FOUND
    for camera, eid in [
        ("../etc", event_id), ("cam", "../../passwd"), ("/abs", event_id),
        ("cam", event_id.upper()), ("cam", event_id + "/x"), ("Cam", event_id),
        ("cam", "a" * 36),
    ]:  # fmt: skip
        with pytest.raises(VmsError) as err:
            snaps.path(camera, eid, box=False)
        assert err.value.kind is Kind.INVALID_ARGUMENT
