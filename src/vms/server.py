"""The composition root: builds every part from the config, starts them, stops them.

Order of start: catalog (migrated) → storage roots identified → crash recovery → writers (one
thread per storage root, one for catalog rows) → one camera pipeline per enabled camera
(health, recorder, fan-out, ingest thread) → retention thread. Stop is the reverse, driven by
one event: ingest threads see it within a packet (or their read timeout), their recorders hand
the open segments to the writers, which finish them (fdatasync, row), then retention stops.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import threading
from pathlib import Path
from typing import IO

from vms.cameras.relay import Fanout
from vms.catalog.store import Catalog
from vms.clock import Clock, SystemClock
from vms.config import CameraConfig, Config, Reader, RecordMode, Transport
from vms.errors import Kind, VmsError
from vms.health import CameraHealth
from vms.ingest.pyav_reader import Ingest
from vms.ingest.rtsp import Reactor, Session
from vms.recording.recorder import Recorder
from vms.recording.recovery import recover
from vms.recording.retention import Retention
from vms.recording.storage import Storage
from vms.recording.writer import Writers

log = logging.getLogger(__name__)


LOCK_FILE = "vms.lock"


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/vms.lock``, held for as long as a process may
    change recordings: a server while it runs, ``vms check --repair`` while it repairs.

    ``flock`` belongs to the open file: the kernel drops it when the process dies, even by
    ``kill -9``, so a stale lock file never keeps a server from starting."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock; raises :class:`VmsError` when another process holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "ab")  # noqa: SIM115 - held until release()
        except OSError as e:
            message = f"cannot open lock file {self.path}: {e.strerror}"
            raise VmsError(Kind.UNAVAILABLE, message) from e
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise VmsError(
                Kind.UNAVAILABLE,
                f"data directory {self.path.parent} is in use by another vms process "
                f"(a server or vms check --repair holds {self.path})",
            ) from None
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the lock
            self._file = None


def server_holds(data_dir: Path) -> bool:
    """Whether a process holds the data directory's lock (probed without waiting or creating
    anything; a shared lock taken for an instant and released)."""
    try:
        f = open(data_dir / LOCK_FILE, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume a server, whose open segments are left alone
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False


@dataclasses.dataclass
class Camera:
    config: CameraConfig
    health: CameraHealth
    fanout: Fanout
    recorder: Recorder | None
    ingest: Ingest | None


class Server:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.stop_event = threading.Event()
        # Before recovery: it rewrites files and rows, which only one process may do.
        self.lock = DataDirLock(config.data_dir)
        self.lock.acquire()
        try:
            self._build()
        except BaseException:
            self.lock.release()
            raise

    def _build(self) -> None:
        config = self.config
        self.catalog = Catalog(config.catalog_url())
        self.storage = Storage(config.storage.roots, self.catalog, self.clock)
        self.storage.verify()
        if not self.storage.usable():
            problems = "; ".join(f"{r.name}: {r.error}" for r in self.storage.roots)
            raise VmsError(Kind.STORAGE_MISSING, f"no usable storage root: {problems}")
        recovered = recover(self.catalog, self.storage)
        if recovered:
            log.info("recovery closed %d segment(s) left open", recovered)
        for root in self.storage.usable():
            root.sync_usage(self.catalog)
        self.retention = Retention(config, self.catalog, self.storage, self.clock)
        self.writers = Writers(self.catalog, self.clock)
        self.reactor = Reactor(self.clock, self.stop_event)
        self.cameras = [self._camera(c) for c in config.cameras]
        self._retention_thread = threading.Thread(
            target=self.retention.loop, args=(self.stop_event,), name="retention", daemon=True
        )
        self.started = False

    def _camera(self, cfg: CameraConfig) -> Camera:
        self.catalog.ensure_camera(cfg.id, cfg.display_name)
        health = CameraHealth(cfg.id, self.clock, enabled=cfg.enabled)
        fanout = Fanout()
        if not cfg.enabled:
            return Camera(cfg, health, fanout, None, None)
        recorder = None
        if cfg.record == RecordMode.CONTINUOUS:
            recorder = Recorder(
                cfg.id,
                catalog=self.catalog,
                storage=self.storage,
                writers=self.writers,
                clock=self.clock,
                config=self.config.recording,
                health=health,
                on_storage_trouble=self.retention.wake.set,
                roots=cfg.roots,
            )
        native = (
            self.config.ingest.reader == Reader.NATIVE
            and cfg.main.url.startswith("rtsp://")
            and cfg.main.transport == Transport.TCP
        )
        if native:
            self.reactor.add(
                Session(
                    cfg,
                    recorder=recorder,
                    fanout=fanout,
                    health=health,
                    config=self.config.ingest,
                    clock=self.clock,
                )
            )
            return Camera(cfg, health, fanout, recorder, None)
        ingest = Ingest(
            cfg,
            cfg.main,
            recorder=recorder,
            fanout=fanout,
            health=health,
            config=self.config.ingest,
            clock=self.clock,
            stop=self.stop_event,
        )
        return Camera(cfg, health, fanout, recorder, ingest)

    def camera(self, camera_id: str) -> Camera:
        for cam in self.cameras:
            if cam.config.id == camera_id:
                return cam
        raise VmsError(Kind.NOT_FOUND, f"no camera {camera_id!r}")

    def start(self) -> None:
        self._retention_thread.start()
        for cam in self.cameras:
            if cam.ingest is not None:
                cam.ingest.start()
        self.reactor.start()
        self.started = True
        log.info(
            "recording %d camera(s) on %d storage root(s)",
            sum(1 for c in self.cameras if c.recorder is not None),
            len(self.storage.usable()),
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Close every open segment cleanly; safe to call twice."""
        self.stop_event.set()
        self.retention.wake.set()
        deadline = self.clock.monotonic() + timeout  # one budget for all: they stop in parallel
        if not self.reactor.join(timeout):
            log.warning("RTSP reactor did not stop in time")
        for cam in self.cameras:
            if cam.ingest is not None and cam.ingest.thread.is_alive():
                left = max(0.0, deadline - self.clock.monotonic())
                if not cam.ingest.join(left):
                    # Blocked in a read until its socket timeout; its recorder is closed below
                    # and ignores whatever the thread still hands it.
                    log.warning(
                        "ingest thread did not stop in time", extra={"camera": cam.config.id}
                    )
            if cam.recorder is not None:
                cam.recorder.close()
        self.writers.stop(max(timeout, 30.0))  # returns as soon as every file is closed
        if self._retention_thread.is_alive():
            self._retention_thread.join(timeout)
        self.catalog.close()
        self.lock.release()
        self.started = False
