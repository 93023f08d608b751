"""Where the detector looks: crops around motion that enlarge small objects, at most a few a
frame, inside the frame; and one detection per object where crops overlap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vms.detect.detector import Detection
from vms.detect.regions import Crop, crops, merge, to_frame
from vms.events.model import Box

W, H = 384, 288


def test_a_small_moving_area_gets_a_crop_larger_than_itself_but_smaller_than_the_frame() -> None:
    (c,) = crops([Box(0.5, 0.5, 0.55, 0.6)], W, H, min_side=160)
    assert (c.w, c.h) == (160, 160)
    # It holds the area, with room around it.
    assert c.x <= 0.5 * W and c.x + c.w >= 0.55 * W
    assert c.y <= 0.5 * H and c.y + c.h >= 0.6 * H


def test_near_areas_share_a_crop_far_ones_get_their_own() -> None:
    near = [Box(0.10, 0.40, 0.14, 0.55), Box(0.16, 0.42, 0.20, 0.57)]
    assert len(crops(near, W, H, min_side=160)) == 1
    far = [Box(0.02, 0.1, 0.06, 0.25), Box(0.9, 0.7, 0.95, 0.9)]
    two = crops(far, W, H, min_side=160)
    assert len(two) == 2
    assert all(c.side == 160 for c in two)


def test_the_crops_are_few_whatever_moves() -> None:
    spots = [Box(x / 10, y / 10, x / 10 + 0.04, y / 10 + 0.08) for x in range(9) for y in range(9)]
    got = crops(spots, W, H, max_crops=2, min_side=160)
    assert 1 <= len(got) <= 2


@given(
    st.lists(
        st.tuples(st.floats(0, 0.95), st.floats(0, 0.95), st.floats(0.01, 1), st.floats(0.01, 1)),
        min_size=1, max_size=12,
    ),
    st.integers(1, 4),
)  # fmt: skip
def test_crops_lie_inside_the_frame_and_cover_every_area(
    raw: list[tuple[float, float, float, float]], most: int
) -> None:
    boxes = [Box(x, y, min(1.0, x + w), min(1.0, y + h)) for x, y, w, h in raw]
    got = crops(boxes, W, H, max_crops=most, min_side=160)
    assert 1 <= len(got) <= most
    for c in got:
        assert c.x >= 0 and c.y >= 0 and c.x + c.w <= W and c.y + c.h <= H
    for b in boxes:  # the centre of every moving area is in some crop
        cx, cy = (b.x1 + b.x2) / 2 * W, (b.y1 + b.y2) / 2 * H
        assert any(c.x - 1 <= cx <= c.x + c.w + 1 and c.y - 1 <= cy <= c.y + c.h + 1 for c in got)


def test_boxes_come_back_to_the_frame_and_duplicates_merge() -> None:
    crop = Crop(100, 50, 200, 200)
    d = to_frame(Detection("person", 0.8, Box(0.25, 0.5, 0.5, 1.0)), crop, 400, 300)
    assert d.box == Box(150 / 400, 150 / 300, 200 / 400, 250 / 300)
    twin = Detection("person", 0.6, Box(d.box.x1 + 0.005, d.box.y1, d.box.x2, d.box.y2))
    other = Detection("car", 0.7, d.box)
    kept = merge([twin, d, other])
    assert sorted((k.label, k.score) for k in kept) == [("car", 0.7), ("person", 0.8)]
