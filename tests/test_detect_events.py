"""The event state machine: new, update, end; coalesced updates; snapshots; the path; the
stationary rule; counts; close. Then the whole chain from detections (tracker, zones, events),
and properties over random track histories."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vms.detect.detector import Detection
from vms.detect.events import MAX_PATH, CameraEvents, Update
from vms.detect.tracker import Track, Tracker
from vms.detect.zones import ZoneChange, Zones
from vms.detection_config import ZoneConfig
from vms.errors import VmsError
from vms.events.model import Box, Change, CountMessage, EventMessage

T0 = 1_790_000_000_000_000
S = 1_000_000
FRAME_US = 200_000
LABELS = ["person", "car"]
DRIVEWAY = [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]


def at(i: int) -> int:
    return T0 + i * FRAME_US


def trk(
    track_id: int = 1,
    t_us: int = T0,
    *,
    x: float = 0.1,
    score: float = 0.8,
    top: float | None = None,
    label: str = "person",
    first_us: int = T0,
    confirmed: bool = True,
    stationary: bool = False,
) -> Track:
    box = Box(x, 0.2, x + 0.1, 0.6)
    top_score = score if top is None else top
    return Track(track_id, label, box, score, top_score, first_us, t_us, 5, confirmed, stationary)


def counter_ids() -> CameraEvents:
    ids = (f"ev{i}" for i in itertools.count(1))
    return CameraEvents("cam", "sub", LABELS, new_id=lambda: next(ids))


NO_ZONES = Zones([])


def step(events: CameraEvents, t_us: int, *tracks: Track, zones: Zones = NO_ZONES) -> Update:
    changes = zones.update(tracks, t_us)
    return events.update(tracks, zones, changes, t_us)


def kinds(update: Update) -> list[str]:
    return [m.change.value for m in update.messages]


def test_an_event_starts_updates_and_ends() -> None:
    events = counter_ids()
    # Tentative: nothing yet.
    u = step(events, at(0), trk(t_us=at(0), confirmed=False))
    assert u == Update([], [], [])
    u = step(events, at(1), trk(t_us=at(1), score=0.7, top=0.8))
    [new] = u.messages
    assert new.change is Change.NEW and new.before is None
    ev = new.after
    assert (ev.id, ev.camera_id, ev.label, ev.stream, ev.track_id) == (
        "ev1",
        "cam",
        "person",
        "sub",
        1,
    )
    # It starts when the track was first seen, tentative frames included.
    assert ev.start_us == T0 and ev.end_us is None and ev.active
    assert ev.score == 0.7 and ev.top_score == 0.8
    assert ev.path == [(at(1), ev.box)] and ev.snapshot_us == at(1)
    assert u.snapshots == [ev]
    assert u.counts == [CountMessage("cam", "person", 1, at(1))]

    # Small score changes are no news.
    for i in range(2, 6):
        u = step(events, at(i), trk(t_us=at(i), x=0.1 + 0.01 * i, score=0.82, top=0.82))
        assert u.messages == [] and u.counts == [], i
    # A top score 0.05 above the last message's is.
    u = step(events, at(6), trk(t_us=at(6), score=0.85, top=0.85))
    [upd] = u.messages
    assert upd.change is Change.UPDATE
    assert upd.before == ev
    assert upd.after.top_score == 0.85 and upd.after.score == 0.85
    assert upd.after.box == trk(x=0.1).box

    # The track is lost after frame 6; the event ends 2 s later, dated when it was last seen.
    for i in range(7, 16):
        u = step(events, at(i), trk(t_us=at(6), score=0.85))
        assert u.messages == [], i
    u = step(events, at(16), trk(t_us=at(6), score=0.85))
    [end] = u.messages
    assert end.change is Change.END and end.before == upd.after
    assert end.after.end_us == at(6) and not end.after.active
    assert u.counts == [CountMessage("cam", "person", 0, at(16))]
    assert events.active == []


def test_an_event_ends_when_its_track_is_dropped_too() -> None:
    events = counter_ids()
    step(events, at(0), trk(t_us=at(0)))
    assert step(events, at(1)).messages == []  # dropped, but not yet 2 s unseen
    u = step(events, at(10))
    assert kinds(u) == ["end"] and u.messages[0].after.end_us == at(0)


def test_only_wanted_labels_raise_events() -> None:
    events = counter_ids()
    u = step(events, at(0), trk(1, at(0), label="chair"), trk(2, at(0), label="car"))
    assert [m.after.label for m in u.messages] == ["car"]


def test_updates_are_coalesced_to_two_a_second() -> None:
    zones = Zones([ZoneConfig(name="driveway", polygon=DRIVEWAY)])
    events = counter_ids()
    sent = []
    for i in range(50):  # ten seconds at 5 fps, crossing the zone's edge every frame
        x = 0.42 if i % 2 else 0.5
        u = step(events, at(i), trk(t_us=at(i), x=x), zones=zones)
        sent += [(m.change, at(i)) for m in u.messages]
    assert sent[0][0] is Change.NEW
    times = [t for _, t in sent]
    assert all(b - a >= 500_000 for a, b in itertools.pairwise(times))
    assert 15 <= len(sent) <= 21


def test_a_change_inside_the_gap_waits_and_comes_with_the_next_frame_after_it() -> None:
    zones = Zones([ZoneConfig(name="driveway", polygon=DRIVEWAY)])
    events = counter_ids()
    u = step(events, at(0), trk(t_us=at(0), x=0.1), zones=zones)
    assert kinds(u) == ["new"]
    u = step(events, at(1), trk(t_us=at(1), x=0.6), zones=zones)  # enters, 200 ms after new
    assert u.messages == []
    u = step(events, at(2), trk(t_us=at(2), x=0.6, score=0.9, top=0.9), zones=zones)
    assert u.messages == []
    u = step(events, at(3), trk(t_us=at(3), x=0.6, score=0.9, top=0.9), zones=zones)
    [upd] = u.messages  # 600 ms after new: everything since, in one update
    assert upd.after.zones == ["driveway"] and upd.after.current_zones == ["driveway"]
    assert upd.after.top_score == 0.9
    assert upd.before is not None and upd.before.zones == []
    u = step(events, at(4), trk(t_us=at(4), x=0.6, score=0.9, top=0.9), zones=zones)
    assert u.messages == []  # nothing pending


def test_zone_enter_leave_and_loiter_update_the_event() -> None:
    zones = Zones([ZoneConfig(name="driveway", polygon=DRIVEWAY, loiter_s=3)])
    events = counter_ids()
    step(events, at(0), trk(t_us=at(0), x=0.1), zones=zones)
    got = []
    for i in range(1, 40):
        x = 0.6 if i < 30 else 0.1  # in from 0.2 s to 6 s, then out
        u = step(events, at(i), trk(t_us=at(i), x=x), zones=zones)
        got += [(at(i), m.after.current_zones, m.after.loitering) for m in u.messages]
    assert got == [
        (at(3), ["driveway"], []),  # entered at frame 1, sent after the gap
        (at(16), ["driveway"], ["driveway"]),  # 3 s after entering
        (at(30), [], []),
    ]
    assert events.active[0].zones == ["driveway"]


def test_an_event_starting_inside_a_zone_says_so() -> None:
    zones = Zones([ZoneConfig(name="driveway", polygon=DRIVEWAY)])
    events = counter_ids()
    step(events, at(0), trk(t_us=at(0), x=0.6, confirmed=False), zones=zones)
    u = step(events, at(1), trk(t_us=at(1), x=0.6), zones=zones)
    assert u.messages[0].after.zones == ["driveway"]
    assert u.messages[0].after.current_zones == ["driveway"]


def test_snapshots_follow_the_best_score_at_most_once_a_second() -> None:
    events = counter_ids()
    u = step(events, at(0), trk(t_us=at(0), score=0.6))
    assert [e.snapshot_us for e in u.snapshots] == [at(0)]
    scores = [0.7, 0.8, 0.75, 0.7, 0.9, 0.95, 0.5, 0.5, 0.5, 0.5, 0.96]
    snaps = []
    for i, s in enumerate(scores, start=1):
        u = step(events, at(i), trk(t_us=at(i), score=s, top=max([0.6, *scores[:i]])))
        snaps += [(at(i), e.snapshot_us, e.score) for e in u.snapshots]
    # 0.7 and 0.8 are within the first second; 0.9 at 1 s; 0.95 at 1.2 s is too soon after;
    # 0.96 at 2.2 s beats the snapshot's 0.9.
    assert snaps == [(at(5), at(5), 0.9), (at(11), at(11), 0.96)]
    assert events.active[0].snapshot_us == at(11)


def test_the_path_is_sampled_twice_a_second_and_stays_bounded() -> None:
    events = counter_ids()
    for i in range(26):  # 5 s
        step(events, at(i), trk(t_us=at(i), x=0.01 * i))
    path = events.active[0].path
    assert [t for t, _ in path] == [at(i) for i in range(0, 26, 3)]  # 600 ms apart at 5 fps
    long = counter_ids()
    for i in range(3 * MAX_PATH * 3):
        step(long, at(i), trk(t_us=at(i), x=(i % 50) / 100))
    path = long.active[0].path
    assert len(path) <= MAX_PATH
    times = [t for t, _ in path]
    assert (
        times == sorted(times)
        and times[0] == at(0)
        and at(3 * MAX_PATH * 3 - 1) - times[-1] < 3 * S
    )


def test_a_stationary_track_ends_its_event_and_restarts_when_it_moves() -> None:
    events = counter_ids()
    u = step(events, at(0), trk(label="car", t_us=at(0)))
    assert kinds(u) == ["new"]
    # Parked: the tracker says stationary at frame 50.
    for i in range(1, 50):
        assert step(events, at(i), trk(label="car", t_us=at(i))).messages == []
    u = step(events, at(50), trk(label="car", t_us=at(50), stationary=True))
    [upd] = u.messages
    assert upd.change is Change.UPDATE and upd.after.stationary
    for i in range(51, 60):
        assert step(events, at(i), trk(label="car", t_us=at(i), stationary=True)).messages == []
    u = step(events, at(60), trk(label="car", t_us=at(60), stationary=True))
    [end] = u.messages
    assert end.change is Change.END and end.after.end_us == at(50)
    assert u.counts == [CountMessage("cam", "car", 0, at(60))]
    # Still there, still parked: never a new alert.
    for i in range(61, 500):
        assert step(events, at(i), trk(label="car", t_us=at(i), stationary=True)).messages == []
    # It drives off: a new event, starting now.
    u = step(events, at(500), trk(label="car", t_us=at(500), x=0.3))
    [new] = u.messages
    assert new.change is Change.NEW and new.after.id == "ev2"
    assert new.after.start_us == at(500) and not new.after.stationary


def test_stillness_shorter_than_end_after_s_continues_the_event() -> None:
    events = counter_ids()
    step(events, at(0), trk(t_us=at(0)))
    u = step(events, at(5), trk(t_us=at(5), stationary=True))
    assert [(m.change, m.after.stationary) for m in u.messages] == [(Change.UPDATE, True)]
    u = step(events, at(8), trk(t_us=at(8), stationary=False))
    assert [(m.change, m.after.stationary) for m in u.messages] == [(Change.UPDATE, False)]
    assert step(events, at(30), trk(t_us=at(30))).messages == []
    assert len(events.active) == 1


def test_a_track_already_stationary_raises_nothing() -> None:
    events = counter_ids()
    for i in range(20):
        u = step(events, at(i), trk(label="car", t_us=at(i), stationary=True))
        assert u == Update([], [], [])


def test_counts_per_label_change_only_when_they_change() -> None:
    events = counter_ids()
    u = step(events, at(0), trk(1, at(0)), trk(2, at(0)), trk(3, at(0), label="car"))
    assert u.counts == [
        CountMessage("cam", "car", 1, at(0)),
        CountMessage("cam", "person", 2, at(0)),
    ]
    assert (
        step(events, at(1), trk(1, at(1)), trk(2, at(1)), trk(3, at(1), label="car")).counts == []
    )
    # Person 2 and the car are lost; 2 s later they end.
    u = step(events, at(11), trk(1, at(11)), trk(2, at(1)), trk(3, at(1), label="car"))
    assert u.counts == [
        CountMessage("cam", "car", 0, at(11)),
        CountMessage("cam", "person", 1, at(11)),
    ]


def test_close_ends_everything_and_counts_drop_to_zero() -> None:
    events = counter_ids()
    step(events, at(0), trk(1, at(0)), trk(2, at(0), label="car"))
    step(events, at(1), trk(1, at(1)), trk(2, at(0), label="car"))
    ended = events.close(at(2))
    assert sorted((m.change.value, m.after.label, m.after.end_us) for m in ended) == [
        ("end", "car", at(0)),
        ("end", "person", at(1)),
    ]
    assert events.active == []
    assert events.count_changes(at(2)) == [
        CountMessage("cam", "car", 0, at(2)),
        CountMessage("cam", "person", 0, at(2)),
    ]
    assert events.count_changes(at(3)) == []
    assert events.close(at(3)) == []


def test_messages_carry_copies() -> None:
    events = counter_ids()
    [new] = step(events, at(0), trk(t_us=at(0))).messages
    for i in range(1, 6):
        step(events, at(i), trk(t_us=at(i), x=0.1 + 0.05 * i))
    assert new.after.path == [(at(0), trk(x=0.1).box)] and new.after.box == trk(x=0.1).box


def test_a_negative_end_after_is_refused() -> None:
    with pytest.raises(VmsError, match="end_after_s"):
        CameraEvents("cam", "sub", LABELS, end_after_s=-1)


def test_from_detections_to_events() -> None:
    """The chain the pipeline runs: a person walks in, across a driveway and out of sight."""
    tracker = Tracker()
    zones = Zones([ZoneConfig(name="driveway", polygon=DRIVEWAY)])
    events = CameraEvents("cam", "sub", LABELS)
    messages: list[EventMessage] = []
    zone_changes: list[ZoneChange] = []
    for i in range(60):
        x = 0.05 + 0.02 * i
        dets = [Detection("person", 0.8, Box(x, 0.5, x + 0.08, 0.9))] if x < 0.9 else []
        tracks = tracker.update(dets, at(i))
        changes = zones.update(tracks, at(i))
        zone_changes += changes
        messages += events.update(tracks, zones, changes, at(i)).messages
    assert [m.change for m in messages] == [Change.NEW, Change.UPDATE, Change.END]
    new, upd, end = messages
    assert new.after.start_us == at(0) and upd.after.current_zones == ["driveway"]
    assert end.after.zones == ["driveway"] and end.after.end_us == at(42)
    assert len({m.after.id for m in messages}) == 1
    assert [c.kind for c in zone_changes] == ["enter", "leave"]


# Random histories: three objects (two people, a car) come and go, are seen or missed, change
# score, walk in and out of a zone, stand still; frames mostly 200 ms apart, sometimes seconds.
LABEL_OF = {1: "person", 2: "car", 3: "person"}
object_state = st.tuples(
    st.sampled_from([True, True, True, False]),  # the tracker holds it
    st.sampled_from([True, True, False]),  # seen in this frame
    st.sampled_from([0.5, 0.6, 0.8, 0.95]),  # score
    st.sampled_from([0.1, 0.45, 0.6]),  # x: 0.45 and 0.6 stand in the driveway
    st.sampled_from([False, False, False, True]),  # stationary
)
history = st.lists(
    st.tuples(
        st.one_of(st.just(FRAME_US), st.integers(1, 3 * S)),
        st.tuples(object_state, object_state, object_state),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(history)
def test_every_new_gets_exactly_one_end(frames: list[tuple[int, tuple[tuple, ...]]]) -> None:
    zones = Zones([ZoneConfig(name="driveway", polygon=DRIVEWAY, loiter_s=1)])
    events = counter_ids()
    known: dict[int, Track] = {}
    next_id = itertools.count(1)
    t_us = T0
    messages: list[tuple[int, EventMessage]] = []
    counts: dict[str, int] = {}
    sent: dict[str, list[int]] = {}
    for gap, states in frames:
        t_us += gap
        tracks: dict[int, Track] = {}
        for obj, (held, seen, score, x, stationary) in enumerate(states, start=1):
            old = known.get(obj)
            if not held or (old is None and not seen):
                continue  # dropped: it comes back, if ever, as a new track
            if old is None:
                old = trk(
                    next(next_id), t_us, x=x, score=score, label=LABEL_OF[obj], confirmed=False
                )
                old.first_us = t_us
            tracks[obj] = dataclasses.replace(
                old,
                box=trk(x=x).box if seen else old.box,
                score=score if seen else old.score,
                top_score=max(old.top_score, score) if seen else old.top_score,
                last_us=t_us if seen else old.last_us,
                confirmed=old.confirmed or (seen and old.last_us < t_us),
                stationary=old.confirmed and (stationary if seen else old.stationary),
            )
        known = tracks
        ordered = list(tracks.values())
        update = events.update(ordered, zones, zones.update(ordered, t_us), t_us)
        messages += [(t_us, m) for m in update.messages]
        for c in update.counts:
            counts[c.label] = c.count
        active = [e.label for e in events.active]
        assert {k: v for k, v in counts.items() if v} == {k: active.count(k) for k in active}
    messages += [(t_us + 1, m) for m in events.close(t_us + 1)]
    assert events.active == []

    by_event: dict[str, list[EventMessage]] = {}
    for sent_us, m in messages:
        by_event.setdefault(m.after.id, []).append(m)
        sent.setdefault(m.after.id, []).append(sent_us)
    for event_id, chain in by_event.items():
        # Two a second at most (the end is never held back).
        times = sent[event_id][:-1]
        assert all(b - a >= 500_000 for a, b in itertools.pairwise(times))
        assert [m.change for m in chain] == [
            Change.NEW,
            *[Change.UPDATE] * (len(chain) - 2),
            Change.END,
        ]
        assert chain[0].before is None
        for prev, nxt in itertools.pairwise(chain):
            assert nxt.before == prev.after
        end = chain[-1].after
        assert end.end_us is not None and end.start_us <= end.end_us
        assert all(m.after.end_us is None for m in chain[:-1])
    assert all(c.count == 0 for c in events.count_changes(t_us + 2))
