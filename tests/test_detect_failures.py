"""Detection's bad days: a model that is missing or corrupt (a clear error at start, the camera
records on), and a detector slower than the frame rate (frames skipped and counted, the delay
from a frame to its detection does not grow)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.polling import wait_for
from vms.cameras.relay import Relay
from vms.clock import SystemClock
from vms.config import from_dict
from vms.detect.detector import Detection
from vms.detect.models import model_dir
from vms.detect.pipeline import CameraDetector, Job
from vms.detect.pool import DetectorPool
from vms.detection_config import DetectConfig, DetectionConfig, EventsConfig
from vms.events.bus import EventBus
from vms.events.model import Box
from vms.events.snapshots import Snapshots
from vms.ingest.pyav_source import read_clip
from vms.media import StreamStart
from vms.server import Server
from vms.standin import StandinCamera, gstreamer_available
from vms.standin.footage import default_cache_dir, footage_clip


@pytest.mark.skipif(not gstreamer_available(), reason="GStreamer RTSP server not installed")
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_broken_model_is_one_clear_error_and_the_camera_records_on(
    tmp_path: Path, damage: str
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    if damage == "corrupt":
        for f in model_dir(DetectionConfig()).iterdir():
            shutil.copy(f, models / f.name)
        caffe = models / "MobileNetSSD_deploy.caffemodel"
        data = bytearray(caffe.read_bytes())
        data[len(data) // 2] ^= 0xFF
        caffe.write_bytes(bytes(data))
    rec = tmp_path / "rec"
    with StandinCamera(width=320, height=240, keyint=25) as cam:
        config = from_dict(
            {
                "data_dir": str(tmp_path / "data"),
                "storage": {"roots": [{"name": "r1", "path": str(rec), "create": True}]},
                "detection": {"model_dir": str(models)},
                "cameras": [{"id": "yard", "main": {"url": cam.url}, "detect": {}}],
            }
        )
        server = Server(config)
        server.start()
        try:
            error = server.detection.status()["error"]
            assert error is not None and "MobileNetSSD_deploy.caffemodel" in error
            assert ("missing" if damage == "missing" else "SHA-256") in error
            health = server.camera("yard").health
            assert any("detection is off" in w for w in health.warnings)
            recorder = server.camera("yard").recorder
            assert recorder is not None
            wait_for(lambda: health.frames > 50, 30, "frames recorded")
            assert health.state.value == "online"
        finally:
            server.stop()


class _SlowDetector:
    """Takes 0.4 s a frame: slower than 5 frames a second."""

    labels = ("person",)
    input_size = (300, 300)
    thread_safe = False

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.calls += 1
        time.sleep(0.4)
        return [Detection("person", 0.9, Box(0.4, 0.4, 0.6, 0.9))]


class _Store:
    def add_motion(self, camera_id: str, minute_us: int, scores: bytes) -> None:
        pass


def test_a_slow_detector_skips_frames_and_its_delay_stays_flat(tmp_path: Path) -> None:
    info, packets = read_clip(footage_clip(default_cache_dir()))
    video = [p for p in packets if p.kind == 0][:100]  # 10 s of people walking, at 10 fps
    relay = Relay(None)
    detector = _SlowDetector()
    pool: DetectorPool[Job] = DetectorPool(lambda: detector, threads=1)
    pool.start()
    bus = EventBus(queue=1000)
    bus.start()
    cam = CameraDetector(
        "street", "main", relay, DetectConfig(fps=5), DetectionConfig(), EventsConfig(),
        pool=pool, bus=bus, store=_Store(), snapshots=Snapshots(tmp_path),  # type: ignore[arg-type]
        clock=SystemClock(), model_side=300,
    )  # fmt: skip
    lags: list[float] = []
    run_job = cam.run_job

    def timed(det: object, job: Job) -> int:
        lags.append(time.time() - job.frame.t_us / 1e6)
        return run_job(det, job)  # type: ignore[arg-type]

    cam.run_job = timed  # type: ignore[method-assign]
    cam.start()
    try:
        relay.publish(StreamStart(info))
        start = time.monotonic()
        for i, p in enumerate(video):  # paced as a camera sends them
            wait = start + i * 0.1 - time.monotonic()
            if wait > 0:
                threading.Event().wait(wait)
            p.arrival = time.monotonic()
            relay.publish(p)
        wait_for(lambda: pool.inferences >= 10, 10, "detections")
    finally:
        cam.stop()
        pool.stop()
        bus.stop()
    # About 48 frames analysed after warm-up, at most one detection per 0.4 s: the rest skipped.
    assert cam.skipped >= 10, (cam.skipped, pool.inferences)
    assert 10 <= pool.inferences <= 27
    # A frame waits at most one job (up to two crops of 0.4 s) before its own starts, however
    # long the run: the delay does not grow with a backlog (which would reach seconds).
    assert max(lags) < 2 * 0.4 + 0.35, lags
    assert max(lags[-5:]) < 2 * 0.4 + 0.35
