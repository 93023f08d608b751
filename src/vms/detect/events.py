"""The event state machine of one camera: tracks in, event messages (new, update, end) out.

Each frame the detector ran on, :meth:`CameraEvents.update` takes the tracker's live tracks,
the zones (already updated with them) and their changes, and returns what to publish:

* **new**: a confirmed track of a wanted label, seen in this frame, that has no event and is
  not stationary. The event starts at the track's first frame (its tentative frames count: the
  clip should show the object arrive), or, for a track that moved again after standing still,
  at this frame.
* **update**: the top score rose by at least :data:`SCORE_STEP` since the last message, the
  track entered or left a zone, began loitering, or became stationary or moving again. At most
  two messages a second per event (:data:`MIN_GAP_US`): a change inside the gap waits and goes
  out with the first frame after it, carrying every change since.
* **end**: the track has not been seen for ``end_after_s`` (``end_us``: the last frame it was
  seen in), or it has been stationary for ``end_after_s`` (``end_us``: the frame it was found
  stationary in).

The stationary rule: *a stationary object never raises an event, and an event does not outlast
its object's stillness.* A track that becomes stationary gets an update saying so; if it is
still stationary ``end_after_s`` later its event ends (a car that parks: one event, from arrival
to parking). While it stays stationary nothing starts; when the tracker says it moves again a
new event starts. So a parked car, or a person who waits, is reported once per stay and never
re-alerts, and no event stays open for the hours a car is parked (the events recording mode
keeps what overlaps an event). A parked car that is in the picture when detection starts cannot
be told from one arriving until the tracker has watched it ``stationary_s``: it raises one event,
which ends when it is found stationary.

Traps:

* Messages carry copies (:meth:`Event.copy`): the bus hands them to other threads while this
  object goes on changing its own. ``before`` is the state the previous message carried.
* The snapshot (``Update.snapshots``) is asked for in the frame itself, since the frame is gone
  afterwards: at the start, then whenever the track's score beats the snapshot's, at most once a
  second (:data:`SNAPSHOT_GAP_US`). A better frame inside that second is lost unless a later one
  beats it too.
* The path is sampled at most twice a second; past :data:`MAX_PATH` samples every other one is
  dropped and the interval doubles, so an hour-long event carries a bounded, even path.
* Zone changes of a track absent from the frame's tracks (the tracker dropped it) are ignored:
  the event keeps the zones its object was last seen in.
* Counts (active events per label) are sent only when one changes, 0 included. After
  :meth:`close`, :meth:`count_changes` gives the drops to 0.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence

from vms.detect.tracker import Track
from vms.detect.zones import ENTER, ZoneChange, Zones
from vms.errors import Kind, VmsError
from vms.events.model import Change, CountMessage, Event, EventMessage

SCORE_STEP = 0.05
MIN_GAP_US = 500_000  # between two messages of one event
PATH_GAP_US = 500_000  # between two path samples (at first)
SNAPSHOT_GAP_US = 1_000_000
MAX_PATH = 240


@dataclasses.dataclass
class Update:
    messages: list[EventMessage]
    # Events whose best frame is this frame: write their snapshot now (at most once a second
    # per event); ``snapshot_us`` is this frame's time.
    snapshots: list[Event]
    counts: list[CountMessage]  # only counts that changed


@dataclasses.dataclass
class _Live:
    event: Event
    published: Event  # what the last message carried
    sent_us: int  # when
    last_seen_us: int
    path_us: int
    path_gap_us: int
    snapshot_us: int
    snapshot_score: float
    stationary_us: int | None = None  # when its track was found stationary
    pending: bool = False  # a change waits for MIN_GAP_US


def _uuid() -> str:
    return str(uuid.uuid4())


class CameraEvents:
    """One camera's events. Not thread-safe: one caller, frames in order."""

    def __init__(
        self,
        camera_id: str,
        stream: str,
        labels: Sequence[str],
        *,
        end_after_s: float = 2.0,
        new_id: Callable[[], str] = _uuid,
    ) -> None:
        if end_after_s < 0:
            raise VmsError(Kind.INVALID_ARGUMENT, "end_after_s must not be negative")
        self._camera_id = camera_id
        self._stream = stream
        self._labels = frozenset(labels)
        self._end_after_us = round(end_after_s * 1e6)
        self._new_id = new_id
        self._live: dict[int, _Live] = {}  # track id → its event
        self._had_event: set[int] = set()  # live tracks that had an event already
        self._counts: dict[str, int] = {}  # as last reported

    @property
    def active(self) -> list[Event]:
        """The events under way (copies)."""
        return [live.event.copy() for live in self._live.values()]

    def update(
        self, tracks: Sequence[Track], zones: Zones, changes: Sequence[ZoneChange], t_us: int
    ) -> Update:
        """One frame's tracks, zones and zone changes; what to publish and snapshot."""
        messages: list[EventMessage] = []
        snapshots: list[Event] = []
        by_id = {t.id: t for t in tracks}
        by_track: dict[int, list[ZoneChange]] = {}
        for change in changes:
            by_track.setdefault(change.track_id, []).append(change)

        for track_id, live in list(self._live.items()):
            track = by_id.get(track_id)
            if track is not None:
                self._follow(live, track, zones, by_track.get(track_id, []), t_us, snapshots)
            end_us = self._end_of(live, t_us)
            if end_us is not None:
                messages.append(self._end(live, end_us))
                del self._live[track_id]
            elif live.pending and t_us - live.sent_us >= MIN_GAP_US:
                messages.append(self._send(live, Change.UPDATE, t_us))

        for track in tracks:
            if (
                track.id not in self._live
                and track.confirmed
                and not track.stationary
                and track.label in self._labels
                and track.last_us >= t_us
            ):
                live = self._start(track, zones, t_us)
                self._live[track.id] = live
                self._had_event.add(track.id)
                messages.append(EventMessage(Change.NEW, live.published))
                snapshots.append(live.published)
        self._had_event &= by_id.keys()
        return Update(messages, snapshots, self.count_changes(t_us))

    def close(self, t_us: int) -> list[EventMessage]:
        """End every event under way (the camera stopped); each at its object's last sight."""
        messages = []
        for live in self._live.values():
            end_us = live.stationary_us if live.stationary_us is not None else live.last_seen_us
            messages.append(self._end(live, min(end_us, t_us)))
        self._live.clear()
        self._had_event.clear()
        return messages

    def count_changes(self, t_us: int) -> list[CountMessage]:
        """The counts of active events per label that changed since they were last reported."""
        now: dict[str, int] = {}
        for live in self._live.values():
            now[live.event.label] = now.get(live.event.label, 0) + 1
        out = []
        for label in sorted(now.keys() | self._counts.keys()):
            count = now.get(label, 0)
            if count != self._counts.get(label, 0):
                out.append(CountMessage(self._camera_id, label, count, t_us))
            self._counts[label] = count
        return out

    def _start(self, track: Track, zones: Zones, t_us: int) -> _Live:
        again = track.id in self._had_event
        event = Event(
            id=self._new_id(),
            camera_id=self._camera_id,
            label=track.label,
            start_us=t_us if again else min(track.first_us, t_us),
            score=track.score,
            top_score=track.score if again else track.top_score,
            box=track.box,
            stream=self._stream,
            zones=zones.of(track.id),
            current_zones=zones.of(track.id),
            loitering=zones.loitering(track.id),
            path=[(t_us, track.box)],
            snapshot_us=t_us,
            track_id=track.id,
        )
        published = event.copy()
        return _Live(
            event=event,
            published=published,
            sent_us=t_us,
            last_seen_us=track.last_us,
            path_us=t_us,
            path_gap_us=PATH_GAP_US,
            snapshot_us=t_us,
            snapshot_score=track.score,
        )

    def _follow(
        self,
        live: _Live,
        track: Track,
        zones: Zones,
        changes: list[ZoneChange],
        t_us: int,
        snapshots: list[Event],
    ) -> None:
        """Bring the event up to its track; mark it pending when something worth saying
        changed, and ask for a snapshot when this frame is its best so far."""
        event = live.event
        seen = track.last_us > live.last_seen_us
        if seen:
            live.last_seen_us = track.last_us
            event.score = track.score
            event.box = track.box
            event.top_score = max(event.top_score, track.score)
            # 0.85 - 0.8 is 0.04999… in binary: a step is a step within a rounding error.
            if event.top_score - live.published.top_score >= SCORE_STEP - 1e-9:
                live.pending = True
            if t_us - live.path_us >= live.path_gap_us:
                event.path.append((t_us, track.box))
                live.path_us = t_us
                if len(event.path) > MAX_PATH:
                    event.path = event.path[::2]
                    live.path_gap_us *= 2
        if changes:
            for change in changes:
                if change.kind == ENTER and change.zone not in event.zones:
                    event.zones.append(change.zone)
            event.current_zones = zones.of(track.id)
            event.loitering = zones.loitering(track.id)
            live.pending = True
        if track.stationary != event.stationary:
            event.stationary = track.stationary
            live.stationary_us = t_us if track.stationary else None
            live.pending = True
        if (
            seen
            and track.score > live.snapshot_score
            and t_us - live.snapshot_us >= SNAPSHOT_GAP_US
        ):
            live.snapshot_us = t_us
            live.snapshot_score = track.score
            event.snapshot_us = t_us
            snapshots.append(event.copy())

    def _end_of(self, live: _Live, t_us: int) -> int | None:
        """When the event ended, if it has."""
        if t_us - live.last_seen_us >= self._end_after_us:
            return live.last_seen_us
        if live.stationary_us is not None and t_us - live.stationary_us >= self._end_after_us:
            return live.stationary_us
        return None

    def _send(self, live: _Live, change: Change, t_us: int) -> EventMessage:
        after = live.event.copy()
        message = EventMessage(change, after, live.published)
        live.published = after
        live.sent_us = t_us
        live.pending = False
        return message

    def _end(self, live: _Live, end_us: int) -> EventMessage:
        live.event.end_us = end_us
        return self._send(live, Change.END, end_us)
