"""Events for tests of the bus and its sinks: made up, with every field filled."""

from __future__ import annotations

import uuid

from vms.events.model import Box, Change, Event, EventMessage

T0_US = 1_790_000_000_000_000  # 2026-09-21T14:13:20Z


def event(
    camera: str = "cam1",
    label: str = "person",
    *,
    start_us: int = T0_US,
    end_us: int | None = None,
    top_score: float = 0.91,
    zones: tuple[str, ...] = ("door",),
) -> Event:
    box = Box(0.1, 0.2, 0.3, 0.6)
    return Event(
        id=str(uuid.uuid4()),
        camera_id=camera,
        label=label,
        start_us=start_us,
        end_us=end_us,
        score=0.8,
        top_score=top_score,
        box=box,
        zones=list(zones),
        current_zones=list(zones),
        path=[(start_us, box), (start_us + 500_000, Box(0.12, 0.2, 0.32, 0.6))],
        snapshot_us=start_us + 200_000,
        track_id=7,
    )


def new(e: Event) -> EventMessage:
    return EventMessage(Change.NEW, e)


def ended(e: Event, end_us: int | None = None) -> EventMessage:
    after = e.copy()
    after.end_us = end_us if end_us is not None else e.start_us + 3_000_000
    return EventMessage(Change.END, after, before=e)
