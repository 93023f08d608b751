"""One camera's detection: frames → motion → objects where it moved → tracks → zones → events.

The camera's own thread decodes its detect stream (:mod:`vms.detect.frames`) and computes
motion on the Y plane; when something moves it hands the frame to the shared detector pool
(:mod:`vms.detect.pool`), which runs :meth:`CameraDetector.run_job` on one of its threads. The
results are applied under the camera's lock, in frame order: tracker, zones, the event state
machine; snapshots are written before the messages that announce them go on the bus, so a
subscriber that fetches an event's snapshot at once finds it.

While tracks are alive and nothing moves, the pipeline still looks at the tracks' boxes once a
second (a person standing still keeps their track); while events are open and there is nothing
to look at, it still ticks the state machine once a second, so an event ends when its object
has gone even if the scene is empty.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

import cv2
import numpy as np
import numpy.typing as npt

from vms.cameras.relay import Relay
from vms.clock import Clock
from vms.detect import regions
from vms.detect.detector import Detection, Detector
from vms.detect.events import CameraEvents
from vms.detect.frames import Frame, Frames
from vms.detect.motion import Motion, MotionMinutes, MotionSwitch
from vms.detect.pool import DetectorPool
from vms.detect.tracker import Tracker
from vms.detect.zones import Zones
from vms.detection_config import DetectConfig, DetectionConfig
from vms.detection_config import EventsConfig as EventsSettings
from vms.errors import VmsError
from vms.events.bus import EventBus
from vms.events.model import Box, Event, Message, MotionMessage
from vms.events.snapshots import Snapshots
from vms.events.store import EventStore

log = logging.getLogger(__name__)

KEEPALIVE_S = 1.0  # looks at still tracks, and ticks open events, this often
MAX_CROPS = 2  # detector runs per frame at most (vms.detect.regions)
YOUNG_US = 1_000_000  # a track not confirmed this long after it began is not news any more
JPEG_QUALITY = 85


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    frame: Frame
    regions: tuple[Box, ...]  # where something moved; none: only tick the tracks and events


def _inside(region: Box, box: Box, margin: float = 0.5) -> bool:
    """Whether the centre of ``region`` lies in ``box`` widened by ``margin`` of its size."""
    mx, my = margin * (box.x2 - box.x1), margin * (box.y2 - box.y1)
    cx, cy = (region.x1 + region.x2) / 2, (region.y1 + region.y2) / 2
    return box.x1 - mx <= cx <= box.x2 + mx and box.y1 - my <= cy <= box.y2 + my


def draw(image: npt.NDArray[np.uint8], event: Event) -> npt.NDArray[np.uint8]:
    """A copy of ``image`` with the event's box and label drawn."""
    out = image.copy()
    h, w = out.shape[:2]
    b = event.box
    p1 = (int(b.x1 * w), int(b.y1 * h))
    p2 = (int(b.x2 * w), int(b.y2 * h))
    thick = max(1, w // 320)
    cv2.rectangle(out, p1, p2, (0, 200, 255), thick)
    text = f"{event.label} {event.score:.0%}"
    cv2.putText(out, text, (p1[0], max(12, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * thick, (0, 200, 255), thick)  # fmt: skip
    return out


class CameraDetector:
    """Watches one camera stream (see the module); :meth:`start` and :meth:`stop` it."""

    def __init__(
        self,
        camera_id: str,
        stream: str,
        relay: Relay,
        config: DetectConfig,
        detection: DetectionConfig,
        events: EventsSettings,
        *,
        pool: DetectorPool[Job],
        bus: EventBus,
        store: EventStore,
        snapshots: Snapshots,
        clock: Clock,
        model_side: int,
    ) -> None:
        self.name = camera_id
        self.camera_id = camera_id
        self.stream = stream
        self.config = config
        self.pool = pool
        self.bus = bus
        self.store = store
        self.snapshots = snapshots
        self.clock = clock
        # Small enough that a small object is enlarged for the model, not shrunk.
        self.min_side = int(model_side * 0.55)
        self.labels = frozenset(config.labels)
        self.frames = Frames(relay, config.fps, clock, f"{camera_id} ({stream})")
        self.motion = Motion(config.motion, config.masks)
        self.minutes = MotionMinutes()
        self.switch = MotionSwitch(camera_id)
        default = detection.min_score
        self.tracker = Tracker(high=lambda label: config.min_score.get(label, default))
        self.zones = Zones(config.zones, config.masks)
        self.events = CameraEvents(camera_id, stream, config.labels, end_after_s=events.end_after_s)
        self._lock = threading.Lock()  # the tracker, zones and events: one job at a time
        self._thread = threading.Thread(target=self._run, name=f"detect-{camera_id}", daemon=True)
        self._last_look_us = 0
        self._open_events = 0
        self.analysed = 0  # frames motion looked at
        self.moving = 0  # ... that had motion
        self.submitted = 0
        self.detections = 0
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, end open events (their END goes out) and write the motion under way."""
        self.frames.close()
        self._thread.join(timeout)
        self.pool.forget(self)
        with self._lock:
            now = self.clock.wall_us()
            messages: list[Message] = [*self.events.close(now)]
            messages += self.events.count_changes(now)
            if self.switch.on:  # no camera, no motion: a retained ON must not outlive it
                messages.append(MotionMessage(self.camera_id, False, now))
            for message in messages:
                self.bus.publish(message)
        for minute_us, scores in self.minutes.flush():
            self._store_motion(minute_us, scores)

    @property
    def skipped(self) -> int:
        return self.pool.skipped[self.name]

    # --- the camera's thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            for frame in self.frames:
                self._frame(frame)
        except Exception as e:
            self.error = f"detection stopped: {e}"
            log.exception("detection stopped", extra={"camera": self.camera_id})

    def _frame(self, frame: Frame) -> None:
        self.analysed += 1
        result = self.motion.update(frame.luma())
        for minute_us, scores in self.minutes.add(frame.t_us, result.score):
            self._store_motion(minute_us, scores)
        if (change := self.switch.update(bool(result.regions), frame.t_us)) is not None:
            self.bus.publish(change)
        moving: list[Box] = list(result.regions)
        if moving:
            self.moving += 1
        with self._lock:
            tracks = self.tracker.tracks()
        due = frame.t_us - self._last_look_us >= KEEPALIVE_S * 1_000_000
        if not moving and due:
            moving = [t.box for t in tracks]  # still objects: look where they were
        if moving:
            # Something new (motion outside every track, or a track not confirmed yet) is
            # looked at now and first; motion of objects already followed, at half the rate.
            young = frame.t_us - YOUNG_US
            urgent = any(not t.confirmed and t.first_us >= young for t in tracks) or any(
                not any(_inside(m, t.box) for t in tracks) for m in moving
            )
            half = 2_000_000 / self.config.fps
            if not urgent and frame.t_us - self._last_look_us < half:
                return
            self._last_look_us = frame.t_us
            self.submitted += 1
            self.pool.submit(self, Job(frame, tuple(moving)), urgent=urgent)
        elif due and self._open_events:
            self._last_look_us = frame.t_us
            self.pool.submit(self, Job(frame, ()))

    def _store_motion(self, minute_us: int, scores: bytes) -> None:
        try:
            self.store.add_motion(self.camera_id, minute_us, scores)
        except VmsError as e:
            # The catalog is away: this minute's heat strip is lost, detection goes on.
            log.warning("motion not stored: %s", e, extra={"camera": self.camera_id})

    # --- a pool thread -------------------------------------------------------------------

    def run_job(self, detector: Detector, job: Job) -> int:
        frame = job.frame
        image: npt.NDArray[np.uint8] | None = None
        found: list[Detection] = []
        crops = regions.crops(job.regions, frame.width, frame.height, max_crops=MAX_CROPS,
                              min_side=self.min_side)  # fmt: skip
        for c in crops:
            if image is None:
                image = frame.bgr()
            for d in detector.detect(image[c.y : c.y + c.h, c.x : c.x + c.w]):
                d = regions.to_frame(d, c, frame.width, frame.height)
                if d.label in self.labels and not self.zones.masked(d.box):
                    found.append(d)
        found = regions.merge(found)
        self.detections += len(found)
        with self._lock:
            tracks = self.tracker.update(found, frame.t_us)
            changes = self.zones.update(tracks, frame.t_us)
            update = self.events.update(tracks, self.zones, changes, frame.t_us)
            if update.snapshots:
                if image is None:
                    image = frame.bgr()
                for event in update.snapshots:
                    self._snapshot(image, event)
            for message in update.messages:
                self.bus.publish(message)
            for count in update.counts:
                self.bus.publish(count)
            self._open_events = len(self.events.active)
        return len(crops)

    def _snapshot(self, image: npt.NDArray[np.uint8], event: Event) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        ok1, clean = cv2.imencode(".jpg", image, params)
        ok2, boxed = cv2.imencode(".jpg", draw(image, event), params)
        if not (ok1 and ok2):
            return
        try:
            self.snapshots.write(self.camera_id, event.id, clean.tobytes(), boxed.tobytes())
        except OSError as e:
            log.warning("snapshot not written: %s", e.strerror, extra={"camera": self.camera_id})
