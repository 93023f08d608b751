"""Shared fixtures: real clips encoded once per session, a recorder wired to a real catalog."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
import sqlalchemy as sa

from vms import config as config_mod
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.catalog.store import Catalog
from vms.clock import SimulatedClock
from vms.health import CameraHealth
from vms.media import MAIN
from vms.recording.recorder import Recorder
from vms.recording.storage import Storage
from vms.recording.writer import Writers
from vms.standin.footage import synthetic_clip

POSTGRES_URL = os.environ.get(
    "VMS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
START_US = 1_790_000_000_000_000  # 2026-09-21, a fixed wall clock for simulated time


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "h264": synthetic_clip(d / "h264.mp4", width=320, height=240, fps=25, seconds=8, gop=25),
        "h264_small": synthetic_clip(
            d / "h264-small.mp4", width=160, height=120, fps=25, seconds=2, gop=25
        ),
        "hevc": synthetic_clip(
            d / "hevc.mp4", width=320, height=240, fps=25, seconds=4, codec="libx265", gop=25
        ),
        "aac": audio_clip(d / "aac.mp4", seconds=4),
    }


def audio_clip(path: Path, seconds: int) -> Path:
    """H.264 video with an AAC audio track (silence with a tone), 25 fps, 48 kHz."""
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
    v.options = {"g": "25", "preset": "ultrafast"}
    a = out.add_stream("aac", rate=48000)
    a.layout = "mono"
    samples = 0
    for i in range(seconds * 25):
        frame = av.VideoFrame(160, 120, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 7) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = i, Fraction(1, 25)
        for p in v.encode(frame):
            out.mux(p)
        while samples < (i + 1) * 48000 // 25:
            af = av.AudioFrame(format="fltp", layout="mono", samples=1024)
            af.planes[0].update(bytes(4 * 1024))
            af.sample_rate, af.pts, af.time_base = 48000, samples, Fraction(1, 48000)
            samples += 1024
            for p in a.encode(af):
                out.mux(p)
    for s in (v, a):
        for p in s.encode():
            out.mux(p)
    out.close()
    return path


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield cat
    cat.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"vms_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}: {e}")
    url = sa.engine.make_url(POSTGRES_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclasses.dataclass
class Rig:
    """A recorder wired to a real catalog and a real storage root, on a simulated clock."""

    recorder: Recorder
    catalog: Catalog
    storage: Storage
    clock: SimulatedClock
    health: CameraHealth
    root: Path
    writers: Writers
    pipeline: StreamPipeline

    def stop(self) -> None:
        """End the stream and wait until its files and rows are written."""
        self.recorder.stream_stopped()
        assert self.writers.flush(), "writers did not finish"


@pytest.fixture
def rig(tmp_path: Path, catalog: Catalog) -> Iterator[Rig]:
    r = make_rig(tmp_path, catalog)
    yield r
    r.writers.stop()


def make_rig(
    tmp_path: Path,
    catalog: Catalog,
    *,
    segment_seconds: float = 4.0,
    camera: str = "cam1",
    stagger: bool = False,
) -> Rig:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    cfg = config_mod.from_dict(
        {
            "storage": {"roots": [{"name": "r1", "path": str(root), "min_free_bytes": 0}]},
            # Tests feed media faster than real time: let the writer fall far behind.
            "recording": {
                "segment_seconds": segment_seconds,
                "stagger": stagger,
                "write_backlog_seconds": 600,
            },
        }
    )
    clock = SimulatedClock(START_US)
    storage = Storage(cfg.storage.roots, catalog, clock)
    storage.verify()
    catalog.ensure_camera(camera, camera)
    health = CameraHealth(camera, clock)
    pipeline = StreamPipeline(camera, MAIN, health, Relay())
    writers = Writers(catalog, clock)
    rec = Recorder(
        camera, catalog=catalog, storage=storage, writers=writers, clock=clock,
        config=cfg.recording, events=pipeline,
    )  # fmt: skip
    pipeline.recorder = rec
    return Rig(rec, catalog, storage, clock, health, root, writers, pipeline)
