"""Motion: where a camera's picture changes, its score per frame, per second and per minute.

:class:`Motion` compares each frame's luma with a running-average background at a small size
(``motion.width``, 320 pixels by default): area-averaged downscale (:func:`shrink`), Gaussian
blur, absolute difference, threshold, masks cleared, dilation, connected areas (their outer
contours). A frame's score is the fraction of the watched (unmasked) picture that changed; its
regions are the boxes of the connected areas of at least ``min_area`` of the picture,
normalised to 0–1.

:class:`MotionMinutes` folds scores into the catalog's row per camera per minute (60 bytes, the
maximum of each second scaled to 0–255); :class:`MotionSwitch` turns per-frame motion into the
ON/OFF messages of MQTT's ``<camera>/motion`` topic.

Traps:

* The Y plane comes straight out of a decoded frame: a strided view whose rows are longer than
  the picture (line padding sliced off). OpenCV reads such a view without a copy as long as
  the pixels of a row are contiguous; nothing here may assume ``y.flags.c_contiguous``.
* The first :data:`TRAINING_FRAMES` frames (and the first after the picture's size changes)
  only train the background: a background made of one frame holds whatever moved in it.
* A change over ``reset_fraction`` of the picture is light, not motion (lights on, an IR
  switch, exposure): the background is replaced by this frame and the frame reports score 0
  and no regions, so it neither turns motion ON nor asks the detector to look everywhere.
* The score's denominator is the *unmasked* area, so that a camera with half its picture
  masked can still reach ``reset_fraction``.
* No clock is read: times come from the frames (wall-clock µs) through the callers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from vms.detection_config import MotionConfig, Polygon
from vms.errors import Kind, VmsError
from vms.events.model import Box, MotionMessage

TRAINING_FRAMES = 2
_BLUR = (5, 5)  # at 320 pixels wide: smooths sensor noise and compression blocks
_DILATE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))  # joins a walker's limbs
SECOND_US = 1_000_000
MINUTE_US = 60_000_000

Luma = npt.NDArray[np.uint8]


@dataclasses.dataclass
class MotionResult:
    score: float  # changed fraction of the watched picture, 0–1
    regions: list[Box]  # normalised to the picture


class Motion:
    """One camera's motion detector. Not thread-safe: one caller, frames in order."""

    def __init__(self, config: MotionConfig, masks: Sequence[Polygon] = ()) -> None:
        self._config = config
        self._masks = [np.asarray(m, dtype=np.float64).reshape(-1, 2) for m in masks]
        self._shape: tuple[int, int] | None = None  # (H, W) of the frames given
        self._small: tuple[int, int] = (0, 0)  # (width, height) motion is computed at
        self._keep: Luma | None = None  # 255 where watched, None: everywhere
        self._watched = 1
        self._background: npt.NDArray[np.float32] | None = None
        self._trained = 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture motion is computed at; (0, 0) before a frame."""
        return self._small

    def update(self, y: Luma) -> MotionResult:
        """Compare one frame's luma (H×W ``uint8``, any row stride) with the background."""
        if y.ndim != 2 or y.dtype != np.uint8 or y.shape[0] < 2 or y.shape[1] < 2:
            raise VmsError(
                Kind.INVALID_ARGUMENT,
                f"motion needs a 2-D uint8 luma plane, not {y.dtype} {y.shape}",
            )
        if y.shape != self._shape:
            self._resize(y.shape[0], y.shape[1])
        blurred = cv2.GaussianBlur(shrink(y, self._small), _BLUR, 0)
        if self._background is None or self._trained < TRAINING_FRAMES:
            if self._background is None:
                self._background = blurred.astype(np.float32)
            else:
                cv2.accumulateWeighted(blurred, self._background, 0.5)
            self._trained += 1
            return MotionResult(0.0, [])
        cfg = self._config
        diff = cv2.absdiff(blurred, cv2.convertScaleAbs(self._background))
        changed = cv2.threshold(diff, cfg.threshold, 255, cv2.THRESH_BINARY)[1]
        if self._keep is not None:
            changed = cv2.bitwise_and(changed, self._keep)
        score = cv2.countNonZero(changed) / self._watched
        if score > cfg.reset_fraction:
            self._background = blurred.astype(np.float32)
            return MotionResult(0.0, [])
        cv2.accumulateWeighted(blurred, self._background, cfg.alpha)
        if score == 0:
            return MotionResult(0.0, [])
        return MotionResult(score, self._regions(changed))

    def reset(self) -> None:
        """Forget the background (the stream restarted): the next frames train again."""
        self._background = None
        self._trained = 0

    def _resize(self, height: int, width: int) -> None:
        w = min(self._config.width, width)
        h = max(2, round(height * w / width))
        self._shape = (height, width)
        self._small = (w, h)
        self._keep = None
        self._watched = w * h
        if self._masks:
            keep = np.full((h, w), 255, dtype=np.uint8)
            scale = np.array([w, h], dtype=np.float64)
            polys = [np.round(m * scale).astype(np.int32) for m in self._masks]
            cv2.fillPoly(keep, polys, 0)
            self._keep = keep
            # A picture masked whole watches nothing; 1 keeps the score's division defined.
            self._watched = max(1, cv2.countNonZero(keep))
        self.reset()

    def _regions(self, changed: npt.NDArray[Any]) -> list[Box]:
        w, h = self._small
        grown = cv2.dilate(changed, _DILATE)
        if self._keep is not None:
            grown = cv2.bitwise_and(grown, self._keep)
        # The outer contours are the connected areas; OpenCV's connectedComponentsWithStats
        # costs 50× more here (0.4 ms against 8 µs at 320×180), even on an empty picture.
        contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_pixels = self._config.min_area * w * h
        regions = []
        for contour in contours:
            if cv2.contourArea(contour) >= min_pixels:
                x, y, bw, bh = cv2.boundingRect(contour)
                regions.append(Box(x / w, y / h, (x + bw) / w, (y + bh) / h))
        return regions


def shrink(y: Luma, size: tuple[int, int]) -> Luma:
    """``y`` downscaled to ``size`` (width, height), averaging areas.

    OpenCV's area resize is fast only for an exact halving (about 10× faster than any other
    factor: 1.4 ms for 1920×1080 → 320×180 in one step on one core, 0.2 ms by halves). So the
    picture is halved (an even crop first, a view) while it is at least twice the target, and
    the last step, under 2×, is bilinear: at that scale it reads the same 2×2 neighbourhoods.
    """
    width, height = size
    while y.shape[1] >= 2 * width and y.shape[0] >= 2 * height:
        h, w = y.shape[0] // 2, y.shape[1] // 2
        y = cast(Luma, cv2.resize(y[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA))
    if y.shape[1] == width and y.shape[0] == height:
        return y
    return cast(Luma, cv2.resize(y, size, interpolation=cv2.INTER_LINEAR))


def score_byte(score: float) -> int:
    """A motion score (0–1) as the catalog's byte (0–255); any motion at all is at least 1."""
    if score <= 0:
        return 0
    return max(1, min(255, round(score * 255)))


class MotionMinutes:
    """Per-second maximum scores gathered into one row per minute: (minute start µs, 60 bytes).

    Minutes are UTC-aligned (start divisible by 60 s). A row is complete when a sample of a
    later minute arrives; a minute without any sample has no row. A sample of an *earlier*
    minute (the wall clock stepped back) also completes the current row and starts one for that
    minute, so the catalog may receive a minute twice: merge the bytes by maximum.
    :meth:`flush` returns the minute under way without forgetting it: a later :meth:`add` goes
    on filling it, and the complete row comes again when the minute ends.
    """

    def __init__(self) -> None:
        self._minute: int | None = None
        self._row = bytearray(60)

    def add(self, t_us: int, score: float) -> list[tuple[int, bytes]]:
        minute = t_us - t_us % MINUTE_US
        done: list[tuple[int, bytes]] = []
        if minute != self._minute:
            if self._minute is not None:
                done.append((self._minute, bytes(self._row)))
            self._minute = minute
            self._row = bytearray(60)
        second = (t_us - minute) // SECOND_US
        value = score_byte(score)
        if value > self._row[second]:
            self._row[second] = value
        return done

    def flush(self) -> list[tuple[int, bytes]]:
        if self._minute is None:
            return []
        return [(self._minute, bytes(self._row))]


class MotionSwitch:
    """Motion ON at the first frame with motion, OFF after ``hold_s`` without any."""

    def __init__(self, camera_id: str, hold_s: float = 5.0) -> None:
        if hold_s < 0:
            raise VmsError(Kind.INVALID_ARGUMENT, "hold_s must not be negative")
        self._camera_id = camera_id
        self._hold_us = round(hold_s * SECOND_US)
        self._on = False
        self._last_us = 0  # the last frame with motion

    @property
    def on(self) -> bool:
        return self._on

    def update(self, active: bool, t_us: int) -> MotionMessage | None:
        if active:
            self._last_us = t_us if not self._on else max(self._last_us, t_us)
            if not self._on:
                self._on = True
                return MotionMessage(self._camera_id, True, t_us)
            return None
        if self._on and t_us - self._last_us >= self._hold_us:
            self._on = False
            return MotionMessage(self._camera_id, False, t_us)
        return None
