"""Motion: synthetic scenes (a bright rectangle moving over noise, a still scene, a mask, lights
switched on), real footage (people walking), per-minute score rows and the ON/OFF switch."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest

from vms.detect.motion import Motion, MotionMinutes, MotionSwitch, score_byte, shrink
from vms.detection_config import MotionConfig
from vms.errors import VmsError
from vms.events.model import Box, MotionMessage
from vms.standin.footage import default_cache_dir, footage_clip

W, H = 640, 360
PAD = 64  # line padding of a decoded frame's plane: the rows are longer than the picture
RECT_W, RECT_H = 60, 80


def noise(rng: np.random.Generator, level: int = 100) -> npt.NDArray[np.uint8]:
    """A grey picture with sensor noise, as a strided view (rows of W + PAD bytes)."""
    plane = rng.normal(level, 6, size=(H, W + PAD)).clip(0, 255).astype(np.uint8)
    return plane[:, :W]


def with_rect(frame: npt.NDArray[np.uint8], x: int, y: int) -> npt.NDArray[np.uint8]:
    frame[y : y + RECT_H, x : x + RECT_W] = 230
    return frame


def rect_box(x: int, y: int) -> Box:
    return Box(x / W, y / H, (x + RECT_W) / W, (y + RECT_H) / H)


def contains(outer: Box, inner: Box, slack: float = 0.01) -> bool:
    return (
        outer.x1 <= inner.x1 + slack
        and outer.y1 <= inner.y1 + slack
        and outer.x2 >= inner.x2 - slack
        and outer.y2 >= inner.y2 - slack
    )


def warm(motion: Motion, rng: np.random.Generator, frames: int = 5) -> None:
    for _ in range(frames):
        assert motion.update(noise(rng)).score == 0


def test_the_first_frames_train_and_report_nothing() -> None:
    rng = np.random.default_rng(1)
    motion = Motion(MotionConfig())
    # Even a rectangle that jumps about is not motion while the background is being learnt.
    for i in range(2):
        result = motion.update(with_rect(noise(rng), 100 + 200 * i, 100))
        assert result.score == 0 and result.regions == []
    assert motion.update(with_rect(noise(rng), 500, 100)).score > 0


def test_a_moving_rectangle_is_covered_by_a_region() -> None:
    rng = np.random.default_rng(2)
    motion = Motion(MotionConfig())
    warm(motion, rng)
    assert motion.size == (320, 180)
    for i in range(15):
        x, y = 40 + 30 * i, 60 + 10 * i
        frame = with_rect(noise(rng), x, y)
        assert not frame.flags.c_contiguous
        result = motion.update(frame)
        assert 0 < result.score < 0.2
        assert any(contains(r, rect_box(x, y)) for r in result.regions), (i, result.regions)
        # No region strays far from where the rectangle is or was.
        for r in result.regions:
            assert r.x1 >= (x - 40) / W and r.x2 <= (x + RECT_W + 10) / W, r


def test_a_still_scene_has_no_motion_after_warm_up() -> None:
    rng = np.random.default_rng(3)
    motion = Motion(MotionConfig())
    still = with_rect(noise(rng), 200, 100)
    for i in range(30):
        frame = noise(rng)
        frame[100 : 100 + RECT_H, 200 : 200 + RECT_W] = still[
            100 : 100 + RECT_H, 200 : 200 + RECT_W
        ]
        result = motion.update(frame)
        if i >= 2:
            assert result.score == 0 and result.regions == [], i


def test_a_mask_hides_the_motion_under_it() -> None:
    rng = np.random.default_rng(4)
    mask = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]  # the left half
    masked = Motion(MotionConfig(), masks=[mask])
    unmasked = Motion(MotionConfig())
    for m in (masked, unmasked):
        warm(m, np.random.default_rng(5))
    for i in range(10):
        frame = with_rect(noise(rng), 20 + 15 * i, 150)  # stays in the left half
        result = masked.update(frame.copy())
        assert result.score == 0 and result.regions == [], i
        assert unmasked.update(frame.copy()).score > 0
    # Outside the mask it is seen, and scored against the watched half only.
    frame = with_rect(noise(rng), 450, 150)
    result = masked.update(frame)
    assert any(contains(r, rect_box(450, 150)) for r in result.regions)
    assert all(r.x1 >= 0.5 for r in result.regions)


def test_a_global_brightness_jump_resets_the_background() -> None:
    rng = np.random.default_rng(6)
    motion = Motion(MotionConfig())
    warm(motion, rng)
    lit = motion.update(noise(rng, level=180))  # lights on: the whole picture changes
    assert lit.score == 0 and lit.regions == []
    # The lit scene is the background now: nothing moves in it.
    for _ in range(5):
        assert motion.update(noise(rng, level=180)).regions == []
    x, y = 300, 200
    result = motion.update(with_rect(noise(rng, level=180), x, y))
    assert any(contains(r, rect_box(x, y)) for r in result.regions)


def test_small_changes_below_min_area_are_no_region() -> None:
    rng = np.random.default_rng(7)
    motion = Motion(MotionConfig(min_area=0.05))
    warm(motion, rng)
    result = motion.update(with_rect(noise(rng), 300, 100))  # 2 % of the picture
    assert result.score > 0 and result.regions == []


def test_a_strided_plane_gives_what_a_contiguous_one_does() -> None:
    a, b = Motion(MotionConfig()), Motion(MotionConfig())
    rng = np.random.default_rng(8)
    for i in range(8):
        frame = with_rect(noise(rng), 30 * i, 100)
        assert a.update(frame) == b.update(np.ascontiguousarray(frame))


def test_a_new_picture_size_trains_again() -> None:
    rng = np.random.default_rng(9)
    motion = Motion(MotionConfig(width=160))
    warm(motion, rng)
    big = rng.normal(100, 6, size=(720, 1280)).clip(0, 255).astype(np.uint8)
    assert motion.update(big).score == 0
    assert motion.size == (160, 90)


def test_a_picture_narrower_than_the_motion_width_is_not_enlarged() -> None:
    motion = Motion(MotionConfig(width=320))
    motion.update(np.zeros((120, 160), dtype=np.uint8))
    assert motion.size == (160, 120)


@pytest.mark.parametrize("shape", [(1080, 1920), (576, 704), (360, 640), (241, 321)])
def test_shrink_averages_to_the_asked_size(shape: tuple[int, int]) -> None:
    h, w = shape
    y = np.full((h, w + 32), 77, dtype=np.uint8)[:, :w]
    small = shrink(y, (320, round(h * 320 / w)))
    assert small.shape == (round(h * 320 / w), 320)
    assert (small == 77).all()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10, 3), dtype=np.uint8),
        np.zeros((10, 10), dtype=np.float32),
        np.zeros((1, 10), dtype=np.uint8),
    ],
)
def test_bad_planes_are_refused(bad: npt.NDArray[np.generic]) -> None:
    with pytest.raises(VmsError, match="2-D uint8 luma plane"):
        Motion(MotionConfig()).update(bad)  # type: ignore[arg-type]


def test_real_footage_moves_in_most_frames() -> None:
    clip = footage_clip(default_cache_dir())
    motion = Motion(MotionConfig())
    scores = []
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= 200:
                break
            plane = frame.planes[0]
            luma = np.frombuffer(plane, dtype=np.uint8).reshape(frame.height, plane.line_size)
            result = motion.update(luma[:, : frame.width])
            scores.append(result.score)
            if result.score > 0:
                for r in result.regions:
                    assert 0 <= r.x1 < r.x2 <= 1 and 0 <= r.y1 < r.y2 <= 1
    after_warm_up = scores[5:]
    moving = sum(1 for s in after_warm_up if s > 0)
    assert moving >= 0.8 * len(after_warm_up), moving
    # People walking are a small part of the picture, never a reset.
    assert max(after_warm_up) < 0.3


def test_motion_minutes_keep_the_maximum_of_each_second() -> None:
    minute = 1_790_000_040_000_000  # a whole minute
    m = MotionMinutes()
    assert m.flush() == []
    assert m.add(minute + 0, 0.1) == []
    assert m.add(minute + 400_000, 0.5) == []
    assert m.add(minute + 900_000, 0.2) == []  # second 0: max 0.5
    assert m.add(minute + 59_999_999, 1.0) == []  # second 59
    assert m.add(minute + 30_000_000, 0.0) == []  # second 30: still nothing
    row = m.flush()
    assert row == m.flush()  # flushing forgets nothing
    [(start, data)] = row
    assert start == minute and len(data) == 60
    assert data[0] == 128 and data[59] == 255 and data[30] == 0 and sum(data[1:59]) == 0
    done = m.add(minute + 60_000_000 + 5_000_000, 0.001)
    assert done == [(minute, data)]
    [(start, data)] = m.flush()
    assert start == minute + 60_000_000 and data[5] == 1  # any motion at all is at least 1
    # Two minutes later: the one under way is done, the empty one between has no row.
    done = m.add(minute + 3 * 60_000_000, 0.3)
    assert [s for s, _ in done] == [minute + 60_000_000]


def test_motion_minutes_after_the_clock_steps_back() -> None:
    minute = 1_790_000_040_000_000
    m = MotionMinutes()
    m.add(minute + 61_000_000, 0.5)
    done = m.add(minute + 1_000_000, 0.5)
    assert [s for s, _ in done] == [minute + 60_000_000]
    assert m.flush()[0][0] == minute


def test_score_byte() -> None:
    assert [score_byte(s) for s in (0, 1e-9, 0.5, 1, 2, -1)] == [0, 1, 128, 255, 255, 0]


def test_motion_switch_holds_on_for_hold_s() -> None:
    s = MotionSwitch("cam", hold_s=5)
    t = 1_790_000_000_000_000
    assert s.update(False, t) is None
    assert s.update(True, t + 1_000_000) == MotionMessage("cam", True, t + 1_000_000)
    assert s.on
    assert s.update(True, t + 2_000_000) is None
    assert s.update(False, t + 6_900_000) is None  # 4.9 s after the last motion
    assert s.update(True, t + 7_000_000) is None  # motion again: the hold starts over
    assert s.update(False, t + 11_999_999) is None
    assert s.update(False, t + 12_000_000) == MotionMessage("cam", False, t + 12_000_000)
    assert not s.on
    assert s.update(False, t + 20_000_000) is None
    assert s.update(True, t + 21_000_000) == MotionMessage("cam", True, t + 21_000_000)


def test_motion_switch_refuses_a_negative_hold() -> None:
    with pytest.raises(VmsError, match="hold_s"):
        MotionSwitch("cam", hold_s=-1)
