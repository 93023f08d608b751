"""Zones: enter, leave and loiter by the foot point, label filters, tracks that vanish; masks."""

from __future__ import annotations

import pytest

from vms.detect.tracker import Track
from vms.detect.zones import ZoneChange, Zones
from vms.detection_config import ZoneConfig
from vms.errors import VmsError
from vms.events.model import Box

T0 = 1_790_000_000_000_000
S = 1_000_000

# The bottom-right quarter of the picture: a driveway.
DRIVEWAY = [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]
# A triangle on the left: the door.
DOOR = [(0.0, 0.2), (0.3, 0.6), (0.0, 0.9)]


def track(track_id: int, foot_x: float, foot_y: float, label: str = "person") -> Track:
    """A track standing with its feet at (foot_x, foot_y); its head is far above."""
    box = Box(foot_x - 0.05, max(0.0, foot_y - 0.3), foot_x + 0.05, foot_y)
    return Track(track_id, label, box, 0.9, 0.9, T0, T0, 3, True, False)


def test_enter_and_leave_follow_the_foot_point() -> None:
    zones = Zones([ZoneConfig(name="driveway", polygon=DRIVEWAY)])
    assert zones.update([track(1, 0.3, 0.8)], T0) == []
    # Head inside, feet outside: not in.
    assert zones.update([track(1, 0.7, 0.45)], T0 + S) == []
    assert zones.update([track(1, 0.7, 0.8)], T0 + 2 * S) == [
        ZoneChange(1, "driveway", "enter", T0 + 2 * S)
    ]
    assert zones.of(1) == ["driveway"]
    assert zones.update([track(1, 0.75, 0.85)], T0 + 3 * S) == []
    assert zones.update([track(1, 0.3, 0.85)], T0 + 4 * S) == [
        ZoneChange(1, "driveway", "leave", T0 + 4 * S)
    ]
    assert zones.of(1) == []


def test_an_edge_counts_as_inside() -> None:
    zones = Zones([ZoneConfig(name="driveway", polygon=DRIVEWAY)])
    assert [c.kind for c in zones.update([track(1, 0.5, 0.7)], T0)] == ["enter"]


def test_labels_filter_which_tracks_a_zone_sees() -> None:
    zones = Zones(
        [
            ZoneConfig(name="driveway", polygon=DRIVEWAY, labels=["car"]),
            ZoneConfig(name="everything", polygon=DRIVEWAY),
        ]
    )
    changes = zones.update([track(1, 0.7, 0.8), track(2, 0.8, 0.9, label="car")], T0)
    assert sorted((c.track_id, c.zone) for c in changes) == [
        (1, "everything"),
        (2, "driveway"),
        (2, "everything"),
    ]
    assert zones.of(1) == ["everything"]
    assert zones.of(2) == ["driveway", "everything"]


def test_a_track_in_two_zones_and_between_them() -> None:
    zones = Zones(
        [ZoneConfig(name="door", polygon=DOOR), ZoneConfig(name="driveway", polygon=DRIVEWAY)]
    )
    assert [(c.zone, c.kind) for c in zones.update([track(1, 0.1, 0.6)], T0)] == [("door", "enter")]
    assert [(c.zone, c.kind) for c in zones.update([track(1, 0.6, 0.7)], T0 + S)] == [
        ("door", "leave"),
        ("driveway", "enter"),
    ]


def test_loitering_is_reported_once_after_loiter_s_inside() -> None:
    zones = Zones([ZoneConfig(name="door", polygon=DOOR, loiter_s=10)])
    kinds = []
    for i in range(30):  # 15 s inside at 2 frames a second
        for c in zones.update([track(7, 0.1, 0.6)], T0 + i * S // 2):
            kinds.append((c.kind, (c.t_us - T0) / S))
        assert zones.loitering(7) == (["door"] if i >= 20 else [])
    assert kinds == [("enter", 0.0), ("loiter", 10.0)]
    # Leaving ends it; coming back starts the clock again.
    assert [c.kind for c in zones.update([track(7, 0.6, 0.1)], T0 + 20 * S)] == ["leave"]
    assert zones.loitering(7) == []
    assert [c.kind for c in zones.update([track(7, 0.1, 0.6)], T0 + 21 * S)] == ["enter"]
    assert zones.update([track(7, 0.1, 0.6)], T0 + 30 * S) == []
    assert [c.kind for c in zones.update([track(7, 0.1, 0.6)], T0 + 31 * S)] == ["loiter"]


def test_no_loitering_when_loiter_s_is_zero() -> None:
    zones = Zones([ZoneConfig(name="door", polygon=DOOR)])
    for i in range(100):
        changes = zones.update([track(1, 0.1, 0.6)], T0 + i * 10 * S)
        assert all(c.kind != "loiter" for c in changes)


def test_a_track_that_disappears_leaves_its_zones() -> None:
    zones = Zones(
        [ZoneConfig(name="door", polygon=DOOR), ZoneConfig(name="driveway", polygon=DRIVEWAY)]
    )
    zones.update([track(1, 0.1, 0.6), track(2, 0.7, 0.7)], T0)
    changes = zones.update([track(2, 0.7, 0.7)], T0 + S)
    assert changes == [ZoneChange(1, "door", "leave", T0 + S)]
    assert zones.of(1) == [] and zones.of(2) == ["driveway"]
    assert zones.update([], T0 + 2 * S) == [ZoneChange(2, "driveway", "leave", T0 + 2 * S)]
    assert zones.update([], T0 + 3 * S) == []


def test_masks_drop_boxes_standing_in_them() -> None:
    zones = Zones([], masks=[DRIVEWAY])
    assert zones.masked(track(1, 0.7, 0.8).box)
    assert not zones.masked(track(1, 0.7, 0.45).box)  # only the feet count
    assert not Zones([]).masked(track(1, 0.7, 0.8).box)


def test_two_zones_with_one_name_are_refused() -> None:
    zone = ZoneConfig(name="door", polygon=DOOR)
    with pytest.raises(VmsError, match="same name"):
        Zones([zone, zone])
