"""Retention's record modes, event retention and event expiry, on catalog rows and real files
of a real storage root, with a simulated clock: motion mode keeps only segments near motion
once ``decide_after_s`` has passed, events mode only those near events, a minute without a
motion row keeps its recording, continuous cameras are untouched, segments overlapping events
outlive ``retention_days`` up to ``event_retention_days``, and old events go with their
snapshots."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import START_US
from vms.audit.log import AuditLog
from vms.catalog.store import MAIN, OPEN, SUB, Catalog
from vms.clock import SimulatedClock
from vms.config import Config, from_dict
from vms.events.model import Box, Change, Event, EventMessage
from vms.events.snapshots import Snapshots
from vms.events.store import MINUTE_US, SECOND_US, EventStore
from vms.recording.retention import DAY_US, Retention
from vms.recording.storage import Storage

S = SECOND_US
# A whole minute a little after the clock's start: segments are laid from there.
BASE = START_US - START_US % MINUTE_US + MINUTE_US
SEG_S = 10


class Site:
    """A storage root with rows and files, an event store and retention on one clock."""

    def __init__(self, tmp: Path, cameras: list[dict[str, Any]], **extra: Any) -> None:
        self.root_dir = tmp / "root"
        self.root_dir.mkdir(parents=True)
        self.config: Config = from_dict(
            {
                "data_dir": str(tmp / "data"),
                "storage": {"roots": [{"name": "r1", "path": str(self.root_dir),
                                       "min_free_bytes": 0}]},
                "recording": {"decide_after_s": 120},
                "events": {"pre_s": 5, "post_s": 5, "keep_days": 30} | extra.pop("events", {}),
                "cameras": [{"main": {"url": "rtsp://h/s"}, "sub": {"url": "rtsp://h/t"}} | c
                            for c in cameras],
                **extra,
            }
        )  # fmt: skip
        self.clock = SimulatedClock(START_US)
        self.catalog = Catalog(f"sqlite:///{tmp / 'catalog.db'}")
        self.storage = Storage(self.config.storage.roots, self.catalog, self.clock)
        self.storage.verify()
        self.events = EventStore(self.catalog)
        self.snapshots = Snapshots(self.config.data_dir)
        self.audit = AuditLog(self.catalog, self.config.data_dir, self.clock)
        self.retention = Retention(
            self.config, self.catalog, self.storage, self.clock, audit=self.audit,
            events=self.events, snapshots=self.snapshots,
        )  # fmt: skip
        for cam in self.config.cameras:
            self.catalog.ensure_camera(cam.id, cam.id)

    def segment(self, camera: str, start_us: int, end_us: int | None, stream: int = MAIN) -> int:
        """A segment row and its file; ``end_us`` None leaves it open."""
        root = self.storage.roots[0]
        path = f"{camera}/{stream}/{start_us}.mp4"
        root.file(path).parent.mkdir(parents=True, exist_ok=True)
        root.file(path).write_bytes(b"x" * 1000)
        seg_id = self.catalog.open_segment(
            camera_id=camera, stream=stream, root_id=root.id or 0, path=path, start_us=start_us,
            media_start=0, codec="h264", width=320, height=240, has_audio=False, timescale=90000,
        )  # fmt: skip
        if end_us is not None:
            self.catalog.close_segment(seg_id, end_us=end_us, init_bytes=100, size=1000,
                                       fragments=1, frag_index=b"", crc32=0)  # fmt: skip
            root.add_closed(1000)
        return seg_id

    def run(self, camera: str, start_us: int, count: int, stream: int = MAIN) -> list[int]:
        """``count`` closed segments of ``SEG_S`` seconds one after another."""
        return [
            self.segment(camera, start_us + k * SEG_S * S, start_us + (k + 1) * SEG_S * S, stream)
            for k in range(count)
        ]

    def watched(self, camera: str, start_us: int, minutes: int, moving: dict[int, int]) -> None:
        """Motion rows for ``minutes`` minutes from ``start_us``; ``moving`` maps a time (µs)
        to its second's score."""
        for m in range(minutes):
            minute = start_us + m * MINUTE_US
            scores = bytearray(60)
            for t, score in moving.items():
                if minute <= t < minute + MINUTE_US:
                    scores[(t - minute) // S] = score
            self.events.add_motion(camera, minute, bytes(scores))

    def event(self, camera: str, start_us: int, end_us: int | None) -> Event:
        e = Event(id=str(uuid.uuid4()), camera_id=camera, label="person", start_us=start_us,
                  end_us=end_us, score=0.8, top_score=0.8, box=Box(0, 0, 1, 1))  # fmt: skip
        self.events.write(EventMessage(Change.NEW, e))
        return e

    def left(self, camera: str, stream: int = MAIN) -> list[tuple[int, int]]:
        """(start, end) in seconds from BASE of the camera stream's segments, open ones too."""
        out = []
        for s in self.catalog.segments(camera_id=camera):
            if s.stream == stream:
                end = None if s.state == OPEN else (s.end_us - BASE) // S
                out.append(((s.start_us - BASE) // S, end))
        return sorted(out, key=lambda x: x[0])

    def files(self, camera: str) -> int:
        return sum(1 for p in (self.root_dir / camera).rglob("*.mp4"))

    def at(self, us: int) -> None:
        """Move the clock (both of them) forward to ``us``."""
        self.clock.advance((us - self.clock.wall_us()) / 1e6)

    def close(self) -> None:
        self.catalog.close()


@pytest.fixture
def site_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Site] = []

    def make(cameras: list[dict[str, Any]], **extra: Any) -> Site:
        site = Site(tmp_path / str(len(made)), cameras, **extra)
        made.append(site)
        return site

    yield make
    for site in made:
        site.close()


def test_motion_mode_keeps_only_segments_near_motion_after_decide_after_s(
    site_factory: Any,
) -> None:
    both = ["main", "sub"]
    site = site_factory([{"id": "m", "record": "motion", "record_streams": both}, {"id": "c"}])
    for cam in ("m", "c"):
        site.run(cam, BASE, 12)  # 0–120 s, ten-second segments
        site.watched(cam, BASE - MINUTE_US, 4, {BASE + 25 * S: 30})  # one second moves at 25 s
    site.run("m", BASE, 12, stream=SUB)  # the sub stream is judged the same way
    site.event("m", BASE + 70 * S, BASE + 75 * S)
    live = site.segment("m", BASE + 120 * S, None)  # open: never judged
    everything = [(k * SEG_S, (k + 1) * SEG_S) for k in range(12)]

    site.at(BASE + 130 * S)  # 120 s after the first segment ended: it alone is judged
    assert site.retention.run_once() == 2, "only what ended 120 s ago is judged: 0–10 s"
    assert site.left("m")[:2] == [(10, 20), (20, 30)]

    site.at(BASE + 240 * S)
    site.retention.run_once()
    # Motion at 25–26 s, widened by 5 s each side: 20–31 s keeps 20–30 and 30–40. The event
    # at 70–75 s, widened: 65–80 s keeps 60–70 and 70–80 (80–90 only touches its end).
    kept = [(20, 30), (30, 40), (60, 70), (70, 80)]
    assert site.left("m") == [*kept, (120, None)]
    assert site.left("m", SUB) == kept
    assert site.files("m") == 2 * len(kept) + 1, "the files went with their rows"
    assert site.left("c") == everything, "a continuous camera keeps everything"
    # The open one closes; judged on a later pass, once it too ended 120 s ago.
    site.catalog.close_segment(live, end_us=BASE + 135 * S, init_bytes=100, size=1000,
                               fragments=1, frag_index=b"", crc32=0)  # fmt: skip
    site.storage.roots[0].add_closed(1000)
    site.at(BASE + 252 * S)  # judged again (10 s on), but it ended only 117 s ago
    assert site.retention.run_once() == 0
    site.at(BASE + 262 * S)
    assert site.retention.run_once() == 1
    assert site.left("m") == kept
    entries = site.audit.query(action="retention.")
    assert sum(e.details["segments"] for e in entries) == 2 * (12 - len(kept)) + 1
    assert all(e.details["cameras"] == ["m"] for e in entries)
    assert all("record: motion" in e.details["reason"] for e in entries)


def test_events_mode_keeps_only_segments_near_events(site_factory: Any) -> None:
    site = site_factory([{"id": "e", "record": "events"}])
    site.run("e", BASE, 6)
    site.watched("e", BASE - MINUTE_US, 3, {BASE + k * S: 200 for k in range(60)})  # busy
    site.event("e", BASE + 32 * S, BASE + 33 * S)
    site.at(BASE + 60 * S + 200 * S)
    site.retention.run_once()
    assert site.left("e") == [(20, 30), (30, 40)], "motion alone keeps nothing in events mode"


def test_an_active_event_keeps_everything_after_its_start(site_factory: Any) -> None:
    site = site_factory([{"id": "e", "record": "events"}])
    site.run("e", BASE, 6)
    site.watched("e", BASE - MINUTE_US, 3, {})
    site.event("e", BASE + 41 * S, None)  # still going (or a crash left it open)
    site.at(BASE + 60 * S + 200 * S)
    site.retention.run_once()
    assert site.left("e") == [(30, 40), (40, 50), (50, 60)]


def test_a_minute_without_motion_rows_keeps_its_recordings(
    site_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    site = site_factory([{"id": "m", "record": "motion"}])
    site.run("m", BASE, 12)
    # Watched from BASE - 1 min to BASE + 1 min only: the detector stopped at 60 s.
    site.watched("m", BASE - MINUTE_US, 2, {})
    site.at(BASE + 400 * S)
    with caplog.at_level(logging.WARNING, logger="vms.recording.retention"):
        site.retention.run_once()
    # 0–50 s were watched (with 5 s after them); 50–60 s reaches 65 s, not watched: kept.
    assert site.left("m") == [(k * SEG_S, (k + 1) * SEG_S) for k in range(5, 12)]
    assert "motion was not measured" in caplog.text


def test_segments_near_events_outlive_retention_days(site_factory: Any) -> None:
    site = site_factory(
        [{"id": "c", "retention_days": 1, "event_retention_days": 3},
         {"id": "plain", "retention_days": 1}]
    )  # fmt: skip
    for cam in ("c", "plain"):
        site.run(cam, BASE, 6)
        site.event(cam, BASE + 22 * S, BASE + 24 * S)
    site.at(BASE + DAY_US + 60 * S)
    site.retention.run_once()
    assert site.left("c") == [(10, 20), (20, 30)], "the event's, widened by 5 s, stay"
    assert site.left("plain") == [], "event_retention_days not set: retention_days for all"
    site.at(BASE + 2 * DAY_US)
    assert site.retention.run_once() == 0
    site.at(BASE + 3 * DAY_US + 60 * S)
    site.retention.run_once()
    assert site.left("c") == []
    reasons = {e.details["reason"] for e in site.audit.query(action="retention.delete")}
    assert reasons == {"older than 1 days", "older than 1 days, no event", "older than 3 days"}


def test_old_events_go_with_their_snapshots_and_motion(site_factory: Any) -> None:
    site = site_factory(
        [{"id": "a"}, {"id": "long", "event_retention_days": 5}], events={"keep_days": 1}
    )
    old = site.event("a", BASE, BASE + 5 * S)
    kept = site.event("long", BASE, BASE + 5 * S)
    ongoing = site.event("a", BASE + 10 * S, None)
    for e in (old, kept, ongoing):
        site.snapshots.write(e.camera_id, e.id, b"jpeg", b"jpeg+box")
    site.watched("a", BASE, 2, {BASE: 9})
    site.retention.run_once()
    assert site.retention.deleted_events == 0
    site.at(BASE + DAY_US + 10 * MINUTE_US)
    site.retention.run_once()
    assert {e.id for e in site.events.list(cameras=None)} == {kept.id, ongoing.id}
    assert not site.snapshots.path("a", old.id, box=False).exists()
    assert not site.snapshots.path("a", old.id, box=True).exists()
    assert site.snapshots.path("long", kept.id, box=True).exists()
    assert site.events.motion("a", BASE, BASE + 2 * MINUTE_US) == []
    (entry,) = site.audit.query(action="retention.events")
    assert entry.details == {"events": 1, "reason": "ended more than 1 days ago", "cameras": ["a"]}
    site.at(BASE + 5 * DAY_US + 10 * MINUTE_US)
    site.retention.run_once()
    assert [e.id for e in site.events.list(cameras=None)] == [ongoing.id]
    assert not site.snapshots.path("long", kept.id, box=False).exists()
