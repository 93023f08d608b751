"""Detection for the whole server: the model, the detector threads, a detector per watched
camera, and the event bus with its sinks (catalog, MQTT, NATS, webhooks, Parquet).

The server calls :meth:`Detection.open` once, :meth:`attach` for every camera it starts and
:meth:`detach` before it stops one, and :meth:`stop` at the end. The model is loaded when the
first camera asks for detection: a missing or broken model file is one clear error, logged
once, shown on every camera that wanted detection (a health notice) and in :meth:`status`;
those cameras go on recording. Every camera's health changes go out on the bus whether or not
it is watched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vms.clock import Clock
from vms.config import CameraConfig, Config, StreamName
from vms.detect import models
from vms.detect.pool import DetectorPool
from vms.detection_config import DetectStream
from vms.errors import VmsError
from vms.events.bus import EventBus, Sink
from vms.events.model import HealthMessage
from vms.events.snapshots import Snapshots
from vms.events.store import EventStore
from vms.health import CameraHealth

if TYPE_CHECKING:
    from vms.cameras.pipeline import StreamPipeline
    from vms.detect.pipeline import CameraDetector, Job

log = logging.getLogger(__name__)


class Detection:
    def __init__(
        self, config: Config, clock: Clock, store: EventStore, snapshots: Snapshots
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.snapshots = snapshots
        self.bus = EventBus(config.events.queue)
        self.error: str | None = None  # the model's, when it could not be loaded
        self._pool: DetectorPool[Job] | None = None
        self._model_side = 300
        self._detectors: dict[str, CameraDetector] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._tried = False

    def open(self, sinks: list[Sink]) -> None:
        """Start the bus with its sinks (the server picks them: :mod:`vms.notify.sinks`)."""
        for sink in sinks:
            self.bus.add(sink)
        self.bus.start()

    def stop(self, timeout: float = 5.0) -> None:
        for camera_id in list(self._detectors):
            self.detach(camera_id, timeout)
        for unsubscribe in self._unsubscribe.values():
            unsubscribe()
        self._unsubscribe.clear()
        if self._pool is not None:
            self._pool.stop(timeout)
        self.bus.stop(timeout)

    # --- cameras ---------------------------------------------------------------------------

    def attach(self, cfg: CameraConfig, streams: dict[StreamName, StreamPipeline]) -> None:
        """A camera started: its health goes to the bus; its detector starts when it asks."""
        camera_id = cfg.id
        main = streams[StreamName.MAIN]
        self._unsubscribe[camera_id] = main.health.subscribe(self._health)
        if cfg.detect is None or not cfg.detect.enabled or not cfg.enabled:
            return
        if not self.config.detection.enabled:
            return
        pool = self._ensure_pool()
        if pool is None:
            main.health.warn(f"detection is off: {self.error}")
            return
        want = cfg.detect.stream
        name = StreamName.SUB if want == DetectStream.SUB else StreamName.MAIN
        if want == DetectStream.AUTO and StreamName.SUB in streams:
            name = StreamName.SUB
        pipeline = streams.get(name) or main
        # Imported here: it brings OpenCV and SciPy, which a server without detection never
        # needs (a second of start-up and some 150 MB).
        from vms.detect.pipeline import CameraDetector

        detector = CameraDetector(
            camera_id,
            name.value,
            pipeline.relay,
            cfg.detect,
            self.config.detection,
            self.config.events,
            pool=pool,
            bus=self.bus,
            store=self.store,
            snapshots=self.snapshots,
            clock=self.clock,
            model_side=self._model_side,
        )
        with self._lock:
            self._detectors[camera_id] = detector
        detector.start()
        log.info("detection on the %s stream at %g fps", name.value, cfg.detect.fps,
                 extra={"camera": camera_id})  # fmt: skip

    def detach(self, camera_id: str, timeout: float = 5.0) -> None:
        unsubscribe = self._unsubscribe.pop(camera_id, None)
        if unsubscribe is not None:
            unsubscribe()
        with self._lock:
            detector = self._detectors.pop(camera_id, None)
        if detector is not None:
            detector.stop(timeout)

    def _ensure_pool(self) -> DetectorPool[Job] | None:
        with self._lock:
            if self._pool is None and not self._tried:
                self._tried = True
                try:
                    make = models.load(self.config.detection)
                except VmsError as e:
                    self.error = str(e)
                    log.error("detection is off: %s", e)
                    return None
                self._model_side = min(make().input_size)
                self._pool = DetectorPool(make, self.config.detection.threads)
                self._pool.start()
            return self._pool

    def _health(self, health: CameraHealth) -> None:
        self.bus.publish(
            HealthMessage(
                health.camera_id,
                health.state.value,
                self.clock.wall_us(),
                {"last_error": health.last_error},
            )
        )

    # --- what it is doing ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        pool = self._pool
        with self._lock:
            detectors = dict(self._detectors)
        return {
            "error": self.error,
            "inferences": pool.inferences if pool else 0,
            "detector_busy_s": round(pool.busy_s, 3) if pool else 0.0,
            "cameras": {
                cid: {
                    "stream": d.stream,
                    "analysed": d.analysed,
                    "moving": d.moving,
                    "submitted": d.submitted,
                    "skipped": d.skipped,
                    "detections": d.detections,
                    "dropped_packets": d.frames.dropped,
                    "error": d.error,
                }
                for cid, d in detectors.items()
            },
            "sinks": self.bus.stats(),
        }
