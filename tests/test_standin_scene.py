"""The stand-in camera's scene: vtest's empty street, then its people, and the mark between.

The scene files are cached in :func:`default_cache_dir` (like the detector's model): built once
per size, about 3 s, and reused by every later run; the build itself is tested in ``tmp_path``.
"""

from __future__ import annotations

import itertools
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vms.standin import StandinCamera, gstreamer_available
from vms.standin.footage import (
    VTEST_SYSTEM_PATH,
    Scene,
    default_cache_dir,
    scene_frames,
)

needs_gstreamer = pytest.mark.skipif(
    not gstreamer_available(),
    reason="GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, x264enc) missing",
)

WIDTH, HEIGHT = 384, 288
# A pixel "changed" when its luma moved by more than this: far above H.264's noise on a still
# picture, far below the contrast of a person against the street.
CHANGED_LEVELS = 30
CELL = 8


def luma(frame: np.ndarray, height: int = HEIGHT) -> np.ndarray:
    return frame[:height].astype(np.int16)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) > CHANGED_LEVELS


def hot_cells(mask: np.ndarray) -> int:
    """8×8 cells with more than a quarter of their pixels changed: a person at 384×288 (about
    15×40 pixels) covers several, sensor noise and compression none."""
    rows, cols = mask.shape[0] // CELL, mask.shape[1] // CELL
    cells = mask[: rows * CELL, : cols * CELL].reshape(rows, CELL, cols, CELL).mean(axis=(1, 3))
    return int((cells > 0.25).sum())


@pytest.fixture(scope="module")
def scene() -> Scene:
    return scene_frames(default_cache_dir(), WIDTH, HEIGHT)


def test_the_empty_street_has_no_people_and_the_footage_has(scene: Scene) -> None:
    assert scene.fps == 10
    assert scene.first_people == 60  # 6 s at vtest's 10 frames a second
    assert scene.frame_count == 60 + 795
    empty = luma(scene.read_frame(0))
    assert np.array_equal(luma(scene.read_frame(scene.first_people - 1)), empty)
    cells = (HEIGHT // CELL) * (WIDTH // CELL)
    footage = range(scene.first_people, scene.frame_count)
    for index in footage[::53]:
        hot = hot_cells(changed(luma(scene.read_frame(index)), empty))
        # People are there (vtest always shows a few) and nothing else moved: the street
        # around them matches the empty one.
        assert 8 <= hot <= cells // 10, (index, hot)
    # A person left standing in the median would be missing from a median of other frames:
    # the empty street is the same from any sample of the clip.
    others = np.stack([luma(scene.read_frame(index)) for index in footage[3::7]])
    other_empty = np.median(others, axis=0)
    assert hot_cells(changed(other_empty, empty)) <= 2


def test_the_static_scene_is_the_empty_street(scene: Scene) -> None:
    static = scene_frames(default_cache_dir(), WIDTH, HEIGHT, static=True)
    assert static.static and static.first_people is None
    assert (static.frame_count, static.fps) == (1, scene.fps)
    assert np.array_equal(static.read_frame(0), scene.read_frame(0))
    camera = StandinCamera(frames=static)
    assert "--frames-mark" not in camera.command
    with pytest.raises(ValueError, match="scene with people"):
        camera.wait_mark(0, timeout=0.1)


def test_a_scene_is_built_once_and_again_when_incomplete(scene: Scene, tmp_path: Path) -> None:
    vtest = VTEST_SYSTEM_PATH
    if not vtest.is_file():
        vtest = default_cache_dir() / "vtest.avi"  # where the fixture's build fetched it
    (tmp_path / "vtest.avi").symlink_to(vtest)
    built = scene_frames(tmp_path, 64, 48, empty_s=0.5)
    assert (built.first_people, built.frame_count) == (5, 5 + 795)
    assert built.path.stat().st_size == built.frame_count * 64 * 48 * 3 // 2
    assert built.path.parent == tmp_path
    stamp = built.path.stat().st_mtime_ns
    assert scene_frames(tmp_path, 64, 48, empty_s=0.5) == built
    assert built.path.stat().st_mtime_ns == stamp
    # Cut short (a build killed half-way, a full disk): made again, not played half.
    with built.path.open("r+b") as file:
        file.truncate(built.frame_size * 7)
    assert scene_frames(tmp_path, 64, 48, empty_s=0.5) == built
    assert built.path.stat().st_size == built.frame_count * built.frame_size
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize(
    ("width", "height", "empty_s", "message"),
    [
        (100, 288, 6.0, "multiple of 8"),
        (384, 287, 6.0, "height even"),
        (8, 8, 6.0, "multiple of 8"),
        (384, 288, -1.0, "non-negative"),
        (384, 288, float("nan"), "non-negative"),
    ],
)
def test_bad_scene_parameters(
    tmp_path: Path, width: int, height: int, empty_s: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        scene_frames(tmp_path, width, height, empty_s=empty_s)
    assert list(tmp_path.iterdir()) == []


@needs_gstreamer
def test_the_server_refuses_a_file_that_is_not_whole_frames(tmp_path: Path) -> None:
    path = tmp_path / "short.i420"
    path.write_bytes(bytes(1000))
    scene = Scene(path, 64, 48, Fraction(10), 1, None)
    with pytest.raises(RuntimeError, match="not a whole number of 64x48 I420 frames"):
        StandinCamera(frames=scene).start()


@needs_gstreamer
def test_the_mark_comes_when_people_appear_in_the_stream(scene: Scene) -> None:
    assert scene.first_people is not None
    empty_s = scene.first_people / scene.fps
    pictures: list[tuple[float, np.ndarray]] = []
    with StandinCamera(frames=scene, bitrate_kbps=400, keyint=20) as camera:
        started = time.time()
        options = {"rtsp_transport": "tcp"}
        with av.open(camera.url, options=options, timeout=(10, 5)) as container:
            stream = container.streams.video[0]
            deadline = time.monotonic() + empty_s + 8
            for packet in container.demux(stream):
                for frame in packet.decode():
                    pictures.append((time.time(), frame.to_ndarray(format="gray")))
                marks = camera.marks()
                if marks and time.time() > marks[0] + 1.5:
                    break
                assert time.monotonic() < deadline, "no mark within the scene's empty part"
        marks = camera.marks()
    assert len(marks) == 1  # one a loop, and a loop is 85 s
    assert started < marks[0] < started + empty_s + 2
    lumas = [picture.astype(np.int16) for _, picture in pictures]
    # The first picture in which a good many pixels changed at once: the people.
    change = next(
        (i for i in range(1, len(lumas)) if changed(lumas[i], lumas[i - 1]).mean() > 0.003),
        None,
    )
    assert change is not None, "the picture never changed"
    assert change >= 20, f"only {change} pictures before the change"
    still = lumas[change - 1]
    for index in range(1, change):
        # Still: nothing but the encoder refining its first picture (a mean of up to ~2.5
        # levels at 400 kbit/s), no pixel moving as a person would.
        assert changed(lumas[index], lumas[index - 1]).mean() < 0.0005, index
        assert changed(lumas[index], still).mean() < 0.001, index
    for index in range(change, len(lumas)):
        assert changed(lumas[index], still).mean() > 0.005, index
    assert np.abs(lumas[change] - still).mean() > 2 * np.abs(lumas[change - 1] - still).mean() + 1
    # The mark is taken when the frame goes into the encoder; PyAV gives the picture ~20 ms
    # plus one frame period later (its demuxer holds a frame until the next one begins).
    seen = pictures[change][0]
    assert abs(seen - marks[0]) <= 0.5, seen - marks[0]


@needs_gstreamer
def test_each_loop_of_the_scene_gives_one_mark(tmp_path: Path) -> None:
    # A one-second scene of ten grey levels, people "appearing" in frame 3.
    path = tmp_path / "short.i420"
    path.write_bytes(b"".join(bytes([16 + 20 * i]) * (64 * 48 * 3 // 2) for i in range(10)))
    scene = Scene(path, 64, 48, Fraction(10), 10, 3)
    assert scene.loop_s == 1.0
    with StandinCamera(frames=scene, bitrate_kbps=100, keyint=10) as camera:
        with av.open(camera.url, options={"rtsp_transport": "tcp"}, timeout=(10, 5)) as container:
            deadline = time.monotonic() + 10
            for _ in container.demux(container.streams.video[0]):
                if len(camera.marks()) >= 4:
                    break
                assert time.monotonic() < deadline, f"marks: {camera.marks()}"
        first = camera.marks()[0]
        assert camera.wait_mark(first, timeout=0) == camera.marks()[1]
        with pytest.raises(TimeoutError):
            camera.wait_mark(time.time() + 60, timeout=0.2)
    marks = camera.marks()
    gaps = [later - earlier for earlier, later in itertools.pairwise(marks)]
    assert all(abs(gap - 1.0) < 0.25 for gap in gaps), gaps
