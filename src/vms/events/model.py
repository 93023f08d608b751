"""What the bus carries: events (new, update, end), camera health, motion and object counts.

Times are wall-clock microseconds (UTC) of the frames they describe, as everywhere in the
catalog; boxes are normalised to the picture (0–1), so they hold for any stream's resolution.
Every message turns into the JSON that MQTT, NATS, webhooks and the API send
(:meth:`Event.to_json`), one shape everywhere.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Union


@dataclasses.dataclass(frozen=True, slots=True)
class Box:
    """A box normalised to the picture: left, top, right, bottom in 0–1."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    @property
    def foot(self) -> tuple[float, float]:
        """The bottom centre: where a person stands, the point zones test."""
        return ((self.x1 + self.x2) / 2, self.y2)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_json(self) -> list[float]:
        return [round(self.x1, 4), round(self.y1, 4), round(self.x2, 4), round(self.y2, 4)]

    @classmethod
    def from_json(cls, v: list[float]) -> Box:
        return cls(float(v[0]), float(v[1]), float(v[2]), float(v[3]))


@dataclasses.dataclass
class Event:
    """One object's event on one camera, from its track's confirmation to its end."""

    id: str  # a UUID
    camera_id: str
    label: str
    start_us: int
    score: float  # the latest detection's
    top_score: float
    box: Box  # the latest
    end_us: int | None = None  # None while it lasts
    stream: str = "sub"
    zones: list[str] = dataclasses.field(default_factory=list)  # every zone it entered, in order
    current_zones: list[str] = dataclasses.field(default_factory=list)
    loitering: list[str] = dataclasses.field(default_factory=list)  # zones it lingers in now
    stationary: bool = False
    # (time, box) samples of the track, at most two a second.
    path: list[tuple[int, Box]] = dataclasses.field(default_factory=list)
    snapshot_us: int | None = None  # the frame of the best snapshot, when one was written
    track_id: int = 0

    @property
    def active(self) -> bool:
        return self.end_us is None

    def copy(self) -> Event:
        return dataclasses.replace(
            self,
            zones=list(self.zones),
            current_zones=list(self.current_zones),
            loitering=list(self.loitering),
            path=list(self.path),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "camera": self.camera_id,
            "label": self.label,
            "start_us": self.start_us,
            "end_us": self.end_us,
            "active": self.active,
            "score": round(self.score, 4),
            "top_score": round(self.top_score, 4),
            "box": self.box.to_json(),
            "stream": self.stream,
            "zones": list(self.zones),
            "current_zones": list(self.current_zones),
            "loitering": list(self.loitering),
            "stationary": self.stationary,
            "path": [[t, b.to_json()] for t, b in self.path],
            "snapshot_us": self.snapshot_us,
            "track_id": self.track_id,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        return cls(
            id=str(d["id"]),
            camera_id=str(d["camera"]),
            label=str(d["label"]),
            start_us=int(d["start_us"]),
            end_us=None if d.get("end_us") is None else int(d["end_us"]),
            score=float(d["score"]),
            top_score=float(d["top_score"]),
            box=Box.from_json(d["box"]),
            stream=str(d.get("stream", "sub")),
            zones=list(d.get("zones", [])),
            current_zones=list(d.get("current_zones", [])),
            loitering=list(d.get("loitering", [])),
            stationary=bool(d.get("stationary", False)),
            path=[(int(t), Box.from_json(b)) for t, b in d.get("path", [])],
            snapshot_us=None if d.get("snapshot_us") is None else int(d["snapshot_us"]),
            track_id=int(d.get("track_id", 0)),
        )


class Change(enum.StrEnum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


@dataclasses.dataclass(frozen=True)
class EventMessage:
    """An event began, changed or ended; ``before`` is the previous state (None when new)."""

    change: Change
    after: Event
    before: Event | None = None

    @property
    def camera_id(self) -> str:
        return self.after.camera_id

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.change.value,
            "before": None if self.before is None else self.before.to_json(),
            "after": self.after.to_json(),
        }


@dataclasses.dataclass(frozen=True)
class HealthMessage:
    """A camera's health changed (``state``: online, offline, degraded, starting, disabled)."""

    camera_id: str
    state: str
    t_us: int
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"camera": self.camera_id, "state": self.state, "t_us": self.t_us, **self.detail}


@dataclasses.dataclass(frozen=True)
class MotionMessage:
    """Motion started (``active``) or stopped on a camera."""

    camera_id: str
    active: bool
    t_us: int

    def to_json(self) -> dict[str, Any]:
        return {"camera": self.camera_id, "active": self.active, "t_us": self.t_us}


@dataclasses.dataclass(frozen=True)
class CountMessage:
    """How many active objects of a label a camera sees now (Home Assistant's sensors)."""

    camera_id: str
    label: str
    count: int
    t_us: int

    def to_json(self) -> dict[str, Any]:
        return {
            "camera": self.camera_id, "label": self.label, "count": self.count, "t_us": self.t_us
        }  # fmt: skip


Message = Union[EventMessage, HealthMessage, MotionMessage, CountMessage]  # noqa: UP007
