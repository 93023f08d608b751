"""The archive ``vms bench seek`` plays back: hours of several cameras, written faster than
real time through the recorder the server runs.

A clip (generated frames, 640x360 at 25 fps, a keyframe every 4 s, about 256 kbit/s) is
encoded once with PyAV, then looped with increasing timestamps into each camera's
:class:`~vms.cameras.pipeline.StreamPipeline` (the sink a camera reader publishes to), whose
:class:`~vms.recording.recorder.Recorder` builds fragments and segments that its root's writer
thread writes and the catalog thread indexes: the files and rows are the server's own. Only
the clock is simulated (:class:`~vms.clock.SimulatedClock`): wall time moves with the media,
so a day of video is labelled as a day.

The recorder never waits on a disk: fed faster than real time it would drop fragments once
its root writer is ``write_backlog_seconds`` behind. The feeder here waits instead, keeping
each camera's queued video under :data:`BACKLOG_S`.

A directory that holds an archive has ``archive.json`` (what was written, and how fast): a
later run with the same cameras and length reuses it (``--data-dir``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import yaml

from vms.bench import write_config
from vms.bench.report import Progress
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.catalog.store import CLOSED, Catalog
from vms.clock import SimulatedClock
from vms.config import load
from vms.errors import Kind, VmsError
from vms.health import CameraHealth
from vms.ingest.pyav_source import read_clip
from vms.media import MAIN, VIDEO, Packet
from vms.recording.recorder import Recorder
from vms.recording.storage import Storage
from vms.recording.writer import Writers
from vms.standin.footage import synthetic_clip

WIDTH, HEIGHT, FPS = 640, 360, 25
GOP = 4 * FPS
BIT_RATE = 256_000
CLIP_SECONDS = 60
SEGMENT_SECONDS = 60
# Video a camera may have queued for the root writer before the feeder waits (seconds).
BACKLOG_S = 20.0
MARKER = "archive.json"
# A disabled camera never connects: its URL only satisfies the configuration.
NO_URL = "rtsp://127.0.0.1:9/archive"


@dataclasses.dataclass
class Archive:
    """What is in a data directory, and how it was written."""

    cameras: list[str]
    start_us: int
    seconds: float  # per camera
    segments: int
    bytes: int
    write_s: float  # wall time of the writer
    clip_kbps: float
    reused: bool = False

    @property
    def end_us(self) -> int:
        return self.start_us + int(self.seconds * 1_000_000)

    def figures(self) -> dict[str, Any]:
        media = self.seconds * len(self.cameras)
        write_s = max(self.write_s, 1e-9)
        return {
            "archive_cameras": len(self.cameras),
            "archive_hours": round(self.seconds / 3600, 3),
            "archive_bytes": self.bytes,
            "archive_gb": round(self.bytes / 1e9, 3),
            "archive_segments": self.segments,
            "archive_kbps_per_camera": round(self.bytes * 8 / 1000 / max(media, 1e-9), 1),
            "clip_kbps": self.clip_kbps,
            "archive_write_s": round(self.write_s, 1),
            "archive_write_mb_per_s": round(self.bytes / 1e6 / write_s, 1),
            "archive_write_x_realtime": round(self.seconds / write_s, 1),
            "archive_reused": self.reused,
        }


def config(directory: Path, port: int, cameras: list[str]) -> Path:
    """``vms serve``'s configuration for ``directory``: one storage root, 60 s segments, and
    the archive's cameras, disabled (they only have recordings)."""
    path = write_config(directory.resolve(), port=port, cameras=[], segment_seconds=SEGMENT_SECONDS)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["cameras"] = [{"id": c, "enabled": False, "main": {"url": NO_URL}} for c in cameras]
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def existing(directory: Path, cameras: list[str], seconds: float) -> Archive | None:
    """The archive already in ``directory`` when it is the one asked for; None when the
    directory holds none. Another archive there is an error, not something to overwrite."""
    marker = directory / MARKER
    if not marker.exists():
        if directory.exists() and any(directory.iterdir()):
            raise VmsError(
                Kind.INVALID_ARGUMENT,
                f"{directory} is not empty and holds no seek archive ({MARKER})",
            )
        return None
    found = Archive(**json.loads(marker.read_text(encoding="utf-8")))
    if found.cameras != cameras or abs(found.seconds - seconds) > 1:
        raise VmsError(
            Kind.INVALID_ARGUMENT,
            f"{directory} holds an archive of {len(found.cameras)} cameras x "
            f"{found.seconds / 3600:g} h, not {len(cameras)} x {seconds / 3600:g} h",
        )
    found.reused = True
    return found


def clip(path: Path) -> Path:
    if not path.exists():
        synthetic_clip(
            path, width=WIDTH, height=HEIGHT, fps=FPS, seconds=CLIP_SECONDS, gop=GOP,
            bit_rate=BIT_RATE,
        )  # fmt: skip
    return path


def write(
    directory: Path, cameras: list[str], seconds: float, start_us: int, progress: Progress
) -> Archive:
    """Record ``seconds`` of the clip for every camera into ``directory`` (its configuration
    written by :func:`config`), then mark it with ``archive.json``."""
    source = clip(directory / "clip.mp4")
    info, packets = read_clip(source)
    ts = info.video.timescale
    step = packets[1].dts - packets[0].dts
    loop_ticks = packets[-1].dts - packets[0].dts + step
    clip_kbps = sum(len(p.data) for p in packets) * 8 / 1000 / (loop_ticks / ts)
    cfg = load(directory / "vms.yaml")
    clock = SimulatedClock(start_us)
    catalog = Catalog(cfg.catalog_url())
    storage = Storage(cfg.storage.roots, catalog, clock)
    storage.verify()
    if not storage.usable():
        catalog.close()
        raise RuntimeError(f"the archive's storage root is not usable: {storage.roots[0].error}")
    writers = Writers(catalog, clock)
    recording = cfg.recording.model_copy(update={"write_backlog_seconds": 4 * BACKLOG_S})
    sinks: list[StreamPipeline] = []
    for cam in cameras:
        catalog.ensure_camera(cam, cam)
        sink = StreamPipeline(cam, MAIN, CameraHealth(cam, clock), Relay())
        sink.recorder = Recorder(
            cam, catalog=catalog, storage=storage, writers=writers, clock=clock,
            config=recording, events=sink,
        )  # fmt: skip
        sinks.append(sink)
    frames = int(seconds * FPS)
    phase = f"seek: writing {len(cameras)} x {seconds / 3600:g} h"
    t0 = time.monotonic()
    try:
        for sink in sinks:
            sink.started(info)
        for n in range(frames):
            loop, i = divmod(n, len(packets))
            src = packets[i]
            dts = src.dts + loop * loop_ticks
            pts = src.pts + loop * loop_ticks
            for sink in sinks:
                sink.packet(Packet(VIDEO, src.data, pts, dts, src.keyframe, dts / ts))
            clock.advance(1 / FPS)
            if n % FPS == 0:
                _wait_for_writer(sinks, ts)
                if n % (60 * FPS) == 0:
                    progress.update(phase, n, frames)
        for sink in sinks:
            sink.stopped("end of the archive")
        if not writers.flush(600):
            raise RuntimeError("the archive's writers did not finish in 600 s")
        write_s = time.monotonic() - t0
        progress.update(phase, frames, frames)
        segments = [s for c in cameras for s in catalog.segments(camera_id=c, state=CLOSED)]
    finally:
        writers.stop()
        catalog.close()
    dropped = sum(s.recorder.stats.frames_dropped for s in sinks if s.recorder is not None)
    if dropped:
        raise RuntimeError(f"the archive's recorders dropped {dropped} frames")
    archive = Archive(
        cameras=cameras, start_us=start_us, seconds=frames / FPS, segments=len(segments),
        bytes=sum(s.bytes for s in segments), write_s=write_s, clip_kbps=round(clip_kbps, 1),
    )  # fmt: skip
    record = dataclasses.asdict(archive)
    del record["reused"]
    (directory / MARKER).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return archive


def _wait_for_writer(sinks: list[StreamPipeline], timescale: int) -> None:
    """Wait while any camera has more than :data:`BACKLOG_S` of video queued for its root
    writer: the recorder would drop, not wait, past ``write_backlog_seconds``."""
    limit = BACKLOG_S * timescale
    for sink in sinks:
        st = sink.recorder.stats if sink.recorder is not None else None
        while st is not None and st.queued_ticks - st.written_ticks > limit:
            time.sleep(0.005)
