"""Tracks: one identity per object across frames, by ByteTrack's two-stage IoU association.

Each :meth:`Tracker.update` is one frame the detector ran on. Its detections are split by
score: *high* (≥ ``high(label)``) and *low* (``low`` ≤ score < high; below ``low`` they are
dropped). Then, with the assignment that minimises the summed ``1 − IoU``
(:func:`scipy.optimize.linear_sum_assignment`), only between boxes of one label and with an IoU
of at least ``match_iou``:

1. high detections are matched to the confirmed tracks (those lost lately included);
2. low detections rescue the confirmed tracks left over (a person half hidden behind a car
   scores low; ByteTrack's point is that the track keeps going on such a detection rather than
   being lost and reborn under a new id);
3. the high detections left are matched to the tentative tracks;
4. the high detections still left start tentative tracks.

A tentative track is confirmed after ``min_hits`` consecutive matches and dropped at its first
miss; a confirmed track is dropped ``max_lost_s`` after its last match.

Traps:

* Tracks are matched where they are *predicted* to be: the box's centre moves on at the
  track's velocity (smoothed, per µs) for the time since its last match. Two people crossing,
  or one hidden for a few frames, keep their ids because each track is looked for ahead of
  itself; a track that stood still predicts no move. Prediction runs at most ``max_lost_s``.
* A track's ``box`` is its last *matched* box, never the prediction: zones and events act on
  what was seen.
* Stationary: the centre of a matched box is compared with an anchor (where the track last
  moved); beyond ``stationary_move`` (normalised, straight-line distance) the anchor moves there
  and the track is moving; within it for ``stationary_s`` the track is stationary. Detection
  jitter of a standing person is a few thousandths; a walker leaves 0.02 in well under a second.
* Ids come from a counter and are never reused, not even after every track is gone.
* :meth:`Tracker.update` returns copies: the tracker keeps changing its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from vms.detect.detector import Detection
from vms.errors import Kind, VmsError
from vms.events.model import Box

_FAR = 1e6  # the cost of a pair that may not be matched
_SMOOTH = 0.5  # weight of the newest velocity measure


@dataclasses.dataclass
class Track:
    id: int
    label: str
    box: Box  # the last matched box, normalised
    score: float  # the last matched detection's
    top_score: float  # the best while matched
    first_us: int
    last_us: int  # the last match
    hits: int  # matches so far
    confirmed: bool
    stationary: bool


@dataclasses.dataclass
class _State:
    track: Track
    vx: float = 0.0  # centre velocity, normalised units per µs
    vy: float = 0.0
    anchor: tuple[float, float] = (0.0, 0.0)  # the centre where it last moved
    anchor_us: int = 0


def _centre(box: Box) -> tuple[float, float]:
    return ((box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2)


def _iou_matrix(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """IoU of every box in ``a`` (N×4) with every box in ``b`` (M×4): N×M."""
    ix = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _boxes(boxes: Sequence[Box]) -> npt.NDArray[np.float64]:
    return np.array([(b.x1, b.y1, b.x2, b.y2) for b in boxes], dtype=np.float64).reshape(-1, 4)


class Tracker:
    """One camera's tracks. Not thread-safe: one caller, frames in order."""

    def __init__(
        self,
        *,
        high: float | Callable[[str], float] = 0.5,
        low: float = 0.1,
        match_iou: float = 0.3,
        min_hits: int = 2,
        max_lost_s: float = 2.0,
        stationary_s: float = 10.0,
        stationary_move: float = 0.02,
    ) -> None:
        if not 0 < match_iou <= 1:
            raise VmsError(Kind.INVALID_ARGUMENT, "match_iou must be in (0, 1]")
        if min_hits < 1:
            raise VmsError(Kind.INVALID_ARGUMENT, "min_hits must be at least 1")
        if max_lost_s < 0 or stationary_s < 0 or stationary_move < 0:
            raise VmsError(Kind.INVALID_ARGUMENT, "times and distances must not be negative")
        if callable(high):
            self._high = high
        else:
            fixed = float(high)
            self._high = lambda _label: fixed
        self._low = low
        self._match_iou = match_iou
        self._min_hits = min_hits
        self._max_lost_us = round(max_lost_s * 1e6)
        self._stationary_us = round(stationary_s * 1e6)
        self._stationary_move = stationary_move
        self._ids = itertools.count(1)
        self._states: list[_State] = []

    def update(self, detections: Sequence[Detection], t_us: int) -> list[Track]:
        """Apply one frame's detections (boxes normalised to the frame); the live tracks."""
        high: list[Detection] = []
        low: list[Detection] = []
        for d in detections:
            if d.score >= self._high(d.label):
                high.append(d)
            elif d.score >= self._low:
                low.append(d)
        confirmed = [s for s in self._states if s.track.confirmed]
        tentative = [s for s in self._states if not s.track.confirmed]

        pairs, confirmed_left, high_left = self._match(confirmed, high, t_us)
        rescued, _, _ = self._match(confirmed_left, low, t_us)
        grown, tentative_left, high_left = self._match(tentative, high_left, t_us)
        for state, det in (*pairs, *rescued, *grown):
            self._hit(state, det, t_us)

        missed = {id(s) for s in tentative_left}
        self._states = [
            s
            for s in self._states
            if id(s) not in missed and t_us - s.track.last_us <= self._max_lost_us
        ]
        for det in high_left:
            self._states.append(self._start(det, t_us))
        return [dataclasses.replace(s.track) for s in self._states]

    def tracks(self) -> list[Track]:
        """The live tracks, as the last :meth:`update` left them (copies)."""
        return [dataclasses.replace(s.track) for s in self._states]

    def boxes(self) -> list[Box]:
        """The last matched boxes of the live tracks (the pipeline re-checks them when nothing
        moves, so that an object standing still keeps its track)."""
        return [s.track.box for s in self._states]

    def _predict(self, state: _State, t_us: int) -> Box:
        box = state.track.box
        dt = min(max(0, t_us - state.track.last_us), self._max_lost_us)
        dx, dy = state.vx * dt, state.vy * dt
        return Box(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)

    def _match(
        self, states: list[_State], dets: list[Detection], t_us: int
    ) -> tuple[list[tuple[_State, Detection]], list[_State], list[Detection]]:
        """The best one-to-one pairs of ``states`` and ``dets``; the states and dets left."""
        if not states or not dets:
            return [], states, dets
        iou = _iou_matrix(
            _boxes([self._predict(s, t_us) for s in states]), _boxes([d.box for d in dets])
        )
        labels_t = np.array([s.track.label for s in states], dtype=object)
        labels_d = np.array([d.label for d in dets], dtype=object)
        allowed = (labels_t[:, None] == labels_d[None, :]) & (iou >= self._match_iou)
        cost = np.where(allowed, 1.0 - iou, _FAR)
        rows, cols = linear_sum_assignment(cost)
        pairs = [(states[r], dets[c]) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]
        used_s = {id(s) for s, _ in pairs}
        used_d = {id(d) for _, d in pairs}
        return (
            pairs,
            [s for s in states if id(s) not in used_s],
            [d for d in dets if id(d) not in used_d],
        )

    def _start(self, det: Detection, t_us: int) -> _State:
        track = Track(
            id=next(self._ids),
            label=det.label,
            box=det.box,
            score=det.score,
            top_score=det.score,
            first_us=t_us,
            last_us=t_us,
            hits=1,
            confirmed=self._min_hits <= 1,
            stationary=False,
        )
        return _State(track, anchor=_centre(det.box), anchor_us=t_us)

    def _hit(self, state: _State, det: Detection, t_us: int) -> None:
        track = state.track
        old = _centre(track.box)
        new = _centre(det.box)
        dt = t_us - track.last_us
        if dt > 0:
            vx, vy = (new[0] - old[0]) / dt, (new[1] - old[1]) / dt
            if track.hits == 1:
                state.vx, state.vy = vx, vy
            else:
                state.vx = _SMOOTH * vx + (1 - _SMOOTH) * state.vx
                state.vy = _SMOOTH * vy + (1 - _SMOOTH) * state.vy
        track.box = det.box
        track.score = det.score
        track.top_score = max(track.top_score, det.score)
        track.last_us = max(track.last_us, t_us)
        track.hits += 1
        if track.hits >= self._min_hits:
            track.confirmed = True
        ax, ay = state.anchor
        if math.hypot(new[0] - ax, new[1] - ay) >= self._stationary_move:
            state.anchor, state.anchor_us = new, t_us
            track.stationary = False
        elif t_us - state.anchor_us >= self._stationary_us:
            track.stationary = True
