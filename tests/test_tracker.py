"""The ByteTrack tracker: ids held through a crossing and an occlusion, low-score rescue,
confirmation, loss, the stationary flag, labels; ids never reused (property)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vms.detect.detector import Detection
from vms.detect.tracker import Track, Tracker
from vms.errors import VmsError
from vms.events.model import Box

T0 = 1_790_000_000_000_000
FRAME_US = 200_000  # 5 fps


def person(
    x: float, y: float = 0.4, score: float = 0.9, w: float = 0.08, h: float = 0.3
) -> Detection:
    return Detection("person", score, Box(x, y, x + w, y + h))


def at(i: int) -> int:
    return T0 + i * FRAME_US


def by_id(tracks: list[Track]) -> dict[int, Track]:
    return {t.id: t for t in tracks}


def nearest(tracks: list[Track], x: float) -> Track:
    return min(tracks, key=lambda t: abs(t.box.x1 - x))


def test_a_track_is_confirmed_after_min_hits_and_keeps_its_id() -> None:
    tracker = Tracker(min_hits=2)
    [t1] = tracker.update([person(0.1)], at(0))
    assert not t1.confirmed and t1.hits == 1 and t1.first_us == at(0)
    [t2] = tracker.update([person(0.12)], at(1))
    assert t2.id == t1.id and t2.confirmed and t2.hits == 2
    assert t2.box == person(0.12).box and t2.last_us == at(1)


def test_a_one_frame_detection_never_becomes_a_track() -> None:
    tracker = Tracker(min_hits=2)
    tracker.update([person(0.1)], at(0))
    assert tracker.update([], at(1)) == []  # a tentative track dies at its first miss
    [t] = tracker.update([person(0.1)], at(2))
    assert not t.confirmed and t.id == 2


def test_min_hits_of_one_confirms_at_once() -> None:
    [t] = Tracker(min_hits=1).update([person(0.1)], at(0))
    assert t.confirmed


def test_ids_hold_when_two_people_cross() -> None:
    tracker = Tracker()
    ids: dict[str, int] = {}
    for i in range(25):
        a = person(0.1 + 0.03 * i, y=0.40)
        b = person(0.8 - 0.03 * i, y=0.42)
        tracks = tracker.update([a, b], at(i))
        if i == 1:
            ids = {"a": nearest(tracks, a.box.x1).id, "b": nearest(tracks, b.box.x1).id}
            assert ids["a"] != ids["b"]
        if i >= 1:
            got = by_id(tracks)
            assert got[ids["a"]].box == a.box, i
            assert got[ids["b"]].box == b.box, i
    assert len(tracker.tracks()) == 2


def test_ids_hold_when_one_hides_behind_the_other_while_crossing() -> None:
    tracker = Tracker()
    ids: dict[str, int] = {}
    for i in range(25):
        a = person(0.1 + 0.03 * i, y=0.40)
        b = person(0.8 - 0.03 * i, y=0.42)
        hidden = 10 <= i <= 12  # b is behind a for three frames
        tracks = tracker.update([a] if hidden else [a, b], at(i))
        if i == 1:
            ids = {"a": nearest(tracks, a.box.x1).id, "b": nearest(tracks, b.box.x1).id}
        if i >= 1:
            got = by_id(tracks)
            assert got[ids["a"]].box == a.box, i
            if hidden:
                assert got[ids["b"]].last_us == at(9), i  # lost, not gone
            else:
                assert got[ids["b"]].box == b.box, i
    assert sorted(by_id(tracker.tracks())) == sorted(ids.values())


def test_a_three_frame_occlusion_keeps_the_id_where_the_last_box_would_not() -> None:
    # Walking 0.03 a frame with a box 0.08 wide: after four frames the box has moved past its
    # old place (IoU 0), so only the predicted position finds it again.
    tracker = Tracker()
    track_id = None
    for i in range(16):
        visible = not 6 <= i <= 8
        tracks = tracker.update([person(0.05 + 0.03 * i)] if visible else [], at(i))
        assert len(tracks) == 1, i
        track_id = track_id or tracks[0].id
        assert tracks[0].id == track_id
        assert tracks[0].last_us == (at(i) if visible else at(5))


def test_a_low_score_detection_rescues_a_track_but_starts_none() -> None:
    tracker = Tracker(high=0.5, low=0.1)
    for i in range(3):
        [t] = tracker.update([person(0.1 + 0.01 * i)], at(i))
    for i in range(3, 8):  # half hidden: the detector is unsure
        [r] = tracker.update([person(0.1 + 0.01 * i, score=0.3)], at(i))
        assert r.id == t.id and r.last_us == at(i) and r.score == 0.3
    assert r.top_score == 0.9
    # Alone, a low-score detection is no track, and one below `low` is nothing at all.
    fresh = Tracker(high=0.5, low=0.1)
    assert fresh.update([person(0.5, score=0.3)], at(0)) == []
    assert fresh.update([person(0.5, score=0.05)], at(1)) == []


def test_a_low_score_detection_does_not_confirm_a_tentative_track() -> None:
    tracker = Tracker(min_hits=2)
    tracker.update([person(0.1)], at(0))
    assert tracker.update([person(0.1, score=0.3)], at(1)) == []


def test_per_label_thresholds() -> None:
    tracker = Tracker(high=lambda label: 0.8 if label == "car" else 0.4, min_hits=1)
    car = Detection("car", 0.6, Box(0.5, 0.5, 0.7, 0.7))
    tracks = tracker.update([person(0.1, score=0.45), car], at(0))
    assert [t.label for t in tracks] == ["person"]


def test_labels_are_never_mixed() -> None:
    tracker = Tracker(min_hits=1)
    box = Box(0.2, 0.2, 0.4, 0.6)
    [p] = tracker.update([Detection("person", 0.9, box)], at(0))
    tracks = tracker.update([Detection("dog", 0.9, box)], at(1))
    assert sorted(t.label for t in tracks) == ["dog", "person"]
    assert by_id(tracks)[p.id].last_us == at(0)


def test_a_lost_track_is_gone_after_max_lost_s() -> None:
    tracker = Tracker(max_lost_s=2.0)
    tracker.update([person(0.1)], at(0))
    [t] = tracker.update([person(0.1)], at(1))
    assert tracker.boxes() == [t.box]
    assert len(tracker.update([], at(1) + 2_000_000)) == 1  # exactly max_lost_s: still held
    assert tracker.update([], at(1) + 2_000_001) == []
    assert tracker.boxes() == []
    [new] = tracker.update([person(0.1)], at(20))
    assert new.id != t.id


def test_top_score_is_the_best_while_matched() -> None:
    tracker = Tracker()
    scores = [0.6, 0.9, 0.7, 0.8]
    for i, s in enumerate(scores):
        [t] = tracker.update([person(0.1, score=s)], at(i))
        assert t.score == s and t.top_score == max(scores[: i + 1])


def test_a_track_that_stands_still_becomes_stationary_and_moving_clears_it() -> None:
    tracker = Tracker(stationary_s=10, stationary_move=0.02)
    jitter = [0.0, 0.004, -0.003, 0.002, -0.004]
    i = 0
    for i in range(51):  # ten seconds at 5 fps, with a standing person's jitter
        [t] = tracker.update([person(0.5 + jitter[i % 5], y=0.4 + jitter[(i + 2) % 5])], at(i))
        assert t.stationary == (i == 50), i
    # A step under the threshold keeps it still; walking away clears it at once.
    [t] = tracker.update([person(0.51)], at(51))
    assert t.stationary
    [t] = tracker.update([person(0.53)], at(52))
    assert not t.stationary
    for i in range(53, 80):
        [t] = tracker.update([person(0.53 + 0.01 * (i - 52))], at(i))
        assert not t.stationary


def test_tracks_returned_are_copies() -> None:
    tracker = Tracker(min_hits=1)
    [t] = tracker.update([person(0.1)], at(0))
    t.box = Box(0, 0, 0, 0)
    tracker.update([person(0.1)], at(1))
    assert tracker.tracks()[0].box == person(0.1).box


@pytest.mark.parametrize(
    "kwargs",
    [
        {"match_iou": 0},
        {"match_iou": 1.5},
        {"min_hits": 0},
        {"max_lost_s": -1},
        {"stationary_s": -1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(VmsError):
        Tracker(**kwargs)  # type: ignore[arg-type]


coord = st.floats(0, 0.9, allow_nan=False)
detection = st.builds(
    lambda x, y, w, h, s, label: Detection(label, s, Box(x, y, x + w, y + h)),
    coord,
    coord,
    st.floats(0.02, 0.3),
    st.floats(0.02, 0.3),
    st.floats(0, 1),
    st.sampled_from(["person", "car"]),
)
frames = st.lists(
    st.tuples(st.integers(1, 3_000_000), st.lists(detection, max_size=6)), max_size=25
)


@settings(max_examples=80, deadline=None)
@given(frames)
def test_ids_are_never_reused(sequence: list[tuple[int, list[Detection]]]) -> None:
    tracker = Tracker(max_lost_s=1.0)
    t_us = T0
    gone: set[int] = set()
    live: set[int] = set()
    highest = 0
    for step, dets in sequence:
        t_us += step
        tracks = tracker.update(dets, t_us)
        ids = [t.id for t in tracks]
        assert len(ids) == len(set(ids))
        now = set(ids)
        assert not now & gone
        for t in tracks:
            if t.id not in live:
                assert t.id > highest
                highest = t.id
            assert t_us - t.last_us <= 1_000_000
            assert t.first_us <= t.last_us <= t_us
            assert t.top_score >= t.score
        gone |= live - now
        live = now
