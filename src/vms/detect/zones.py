"""Zones and masks: which tracks stand where, and when they enter, leave or loiter.

A track is in a zone when its box's foot point (the bottom centre, :attr:`Box.foot`: where a
person stands) lies inside the zone's polygon, edges included, and the zone cares about its
label (a zone with no labels cares about every label). :meth:`Zones.update` compares the
tracks of a frame with the previous frame's and reports each change once: ``enter``, ``leave``,
and ``loiter`` when a track has stayed ``loiter_s`` (> 0) inside since it entered.

Masks (``detect.masks``) are polygons too: :meth:`Zones.masked` tells the pipeline to drop a
detection whose foot point lies in one (a poster of a person, a road beyond the fence).

Traps:

* A track missing from a frame's list is gone (the tracker dropped it): it leaves every zone
  it was in, at that frame's time, and is forgotten; a later track is a new one.
* A lost track the tracker still holds keeps its last box, so it stays in its zones until it
  is dropped; zones never guess where it went.
* Tentative tracks are placed too: by the time a track is confirmed, :meth:`Zones.of` already
  knows its zones (the event takes them as it starts). A zone change of a track that is never
  confirmed is simply reported and ignored by the events.
* Polygons are normalised ``[x, y]`` pairs and are tested as given (self-intersecting
  polygons follow OpenCV's ``pointPolygonTest``, which is even-odd).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from vms.detect.tracker import Track
from vms.detection_config import Polygon, ZoneConfig
from vms.errors import Kind, VmsError
from vms.events.model import Box

ENTER = "enter"
LEAVE = "leave"
LOITER = "loiter"


@dataclasses.dataclass
class ZoneChange:
    track_id: int
    zone: str
    kind: str  # "enter" | "leave" | "loiter"
    t_us: int


@dataclasses.dataclass
class _Inside:
    since_us: int
    loitering: bool = False


def _contour(polygon: Polygon) -> npt.NDArray[np.float32]:
    return np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)


def _inside(contour: npt.NDArray[np.float32], point: tuple[float, float]) -> bool:
    return bool(cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), False) >= 0)


class Zones:
    """One camera's zones and masks. Not thread-safe: one caller, frames in order."""

    def __init__(self, zones: Sequence[ZoneConfig], masks: Sequence[Polygon] = ()) -> None:
        names = [z.name for z in zones]
        if len(set(names)) != len(names):
            raise VmsError(Kind.INVALID_ARGUMENT, "two zones have the same name")
        self._zones = list(zones)
        self._contours = [_contour(z.polygon) for z in zones]
        self._masks = [_contour(m) for m in masks]
        self._inside: dict[int, dict[str, _Inside]] = {}  # track id → zone name → since when

    @property
    def names(self) -> list[str]:
        return [z.name for z in self._zones]

    def masked(self, box: Box) -> bool:
        """Whether the box's foot point lies in a mask."""
        foot = box.foot
        return any(_inside(m, foot) for m in self._masks)

    def update(self, tracks: Sequence[Track], t_us: int) -> list[ZoneChange]:
        """Place this frame's live tracks; the changes since the previous frame, in order."""
        changes: list[ZoneChange] = []
        seen: set[int] = set()
        for track in tracks:
            seen.add(track.id)
            inside = self._inside.setdefault(track.id, {})
            foot = track.box.foot
            for zone, contour in zip(self._zones, self._contours, strict=True):
                wanted = not zone.labels or track.label in zone.labels
                now = wanted and _inside(contour, foot)
                state = inside.get(zone.name)
                if now and state is None:
                    inside[zone.name] = _Inside(t_us)
                    changes.append(ZoneChange(track.id, zone.name, ENTER, t_us))
                elif not now and state is not None:
                    del inside[zone.name]
                    changes.append(ZoneChange(track.id, zone.name, LEAVE, t_us))
                elif (
                    state is not None
                    and zone.loiter_s > 0
                    and not state.loitering
                    and t_us - state.since_us >= zone.loiter_s * 1e6
                ):
                    state.loitering = True
                    changes.append(ZoneChange(track.id, zone.name, LOITER, t_us))
            if not inside:
                del self._inside[track.id]
        for track_id in [i for i in self._inside if i not in seen]:
            for name in self._inside.pop(track_id):
                changes.append(ZoneChange(track_id, name, LEAVE, t_us))
        return changes

    def of(self, track_id: int) -> list[str]:
        """The zones the track is in now, in the configuration's order."""
        inside = self._inside.get(track_id, {})
        return [z.name for z in self._zones if z.name in inside]

    def loitering(self, track_id: int) -> list[str]:
        """The zones the track loiters in now, in the configuration's order."""
        inside = self._inside.get(track_id, {})
        return [z.name for z in self._zones if z.name in inside and inside[z.name].loitering]
