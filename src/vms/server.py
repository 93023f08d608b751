"""The runtime: builds every part from the config, starts them, stops them, and changes the
set of cameras while running. ``vms.app.create_app`` runs it inside the web app's lifespan.

Nothing is done at construction. :meth:`Server.start`: data-directory lock → catalog (migrated)
→ recorded-interval timelines, audit trail, auth (a setup token when no user exists) → storage
roots identified → crash recovery → camera store → writers (one thread per storage root, one
for catalog rows) → the cameras, seeded from the config into the store, each with one pipeline
per stream (health, recorder when recorded, relay) → retention and audit-checkpoint threads →
export workers → every reader (the RTSP reactor's sessions, PyAV threads). :meth:`Server.stop`
is the reverse: running exports are cancelled, readers stop (each camera has its own stop
event, so one camera can be removed alone), pipelines close their open segments, the writers
finish them (fdatasync, row), retention and the audit thread stop (a last checkpoint), the
lock is released.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from vms.audit.log import AuditLog
from vms.auth.service import bootstrap
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.cameras.secrets import Secrets
from vms.cameras.store import CameraStore
from vms.catalog.store import Catalog
from vms.clock import Clock, SystemClock
from vms.config import CameraConfig, Config, Reader, RecordMode, StreamName, Transport
from vms.detect.service import Detection
from vms.errors import Kind, VmsError
from vms.events.snapshots import Snapshots
from vms.events.store import EventStore
from vms.export.jobs import Exports
from vms.export.source import playback_source
from vms.health import CameraHealth
from vms.ingest.pyav_reader import Ingest
from vms.ingest.rtsp import Reactor, Session
from vms.live.source import LiveSources
from vms.media import MAIN, SUB
from vms.notify import sinks
from vms.playback.thumbnail import Thumbnails
from vms.recording.recorder import Recorder
from vms.recording.recovery import recover
from vms.recording.retention import Retention
from vms.recording.storage import Storage
from vms.recording.timeline import Timelines
from vms.recording.writer import Writers

if TYPE_CHECKING:
    from vms.live.webrtc import WebRtcSessions

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


STREAM_NUMBERS = {StreamName.MAIN: MAIN, StreamName.SUB: SUB}


def _audited(cfg: CameraConfig, old: CameraConfig | None = None) -> dict[str, Any]:
    """What the audit log keeps of a camera change: the fields that changed, by name, and
    whether the password did; never the password or a URL's query."""
    new = cfg.model_dump(exclude={"password"})
    if old is None:
        return {"fields": sorted(k for k, v in new.items() if v is not None)}
    before = old.model_dump(exclude={"password"})
    return {
        "changed": sorted(k for k in new if new[k] != before.get(k)),
        "password_changed": cfg.secret() != old.secret(),
    }


@dataclasses.dataclass
class Camera:
    """One camera as the server runs it: a pipeline and a reader per configured stream."""

    config: CameraConfig
    streams: dict[StreamName, StreamPipeline]
    stop: threading.Event  # this camera's readers only
    sessions: list[Session] = dataclasses.field(default_factory=list)
    threads: list[Ingest] = dataclasses.field(default_factory=list)

    @property
    def main(self) -> StreamPipeline:
        return self.streams[StreamName.MAIN]

    @property
    def health(self) -> CameraHealth:
        """The camera's health: its main stream's."""
        return self.main.health

    @property
    def recorder(self) -> Recorder | None:
        """The main stream's recorder, when the main stream is recorded."""
        return self.main.recorder

    @property
    def relay(self) -> Relay:
        return self.main.relay

    @property
    def recorders(self) -> list[Recorder]:
        return [p.recorder for p in self.streams.values() if p.recorder is not None]


class Server:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.stop_event = threading.Event()
        self.lock = DataDirLock(config.data_dir)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._cameras: dict[str, Camera] = {}
        self._changing = threading.Lock()  # one camera change at a time
        self.started = False
        self.start_error: VmsError | None = None

    @property
    def cameras(self) -> list[Camera]:
        return list(self._cameras.values())

    def camera(self, camera_id: str) -> Camera:
        cam = self._cameras.get(camera_id)
        if cam is None:
            raise VmsError(Kind.NOT_FOUND, f"no camera {camera_id!r}")
        return cam

    # --- start and stop ------------------------------------------------------------------

    def start(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        prepare: Callable[[Server], None] | None = None,
    ) -> None:
        """Build everything and start recording; ``loop`` is where relays deliver to asyncio
        subscribers (none: subscribers are threads only); ``prepare`` (benchmark instruments)
        adjusts the storage before any reader starts."""
        self.open(loop)
        if prepare is not None:
            try:
                prepare(self)
            except BaseException:
                self.stop()
                raise
        self.run()

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """The first half of :meth:`start`: lock, catalog, storage, recovery, writers, and
        every camera's pipelines, with no reader running yet."""
        self.loop = loop
        # Before recovery: it rewrites files and rows, which only one process may do.
        self.lock.acquire()
        try:
            self._build()
            report = self.store.seed(self.config.cameras, self.clock.wall_us())
            if summary := report.summary():
                log.info("cameras from the configuration file: %s", summary)
                self.audit.append("system", "config.seed", "cameras", {"changes": summary})
            for cfg in self.store.list():
                self._add(cfg)
        except BaseException:
            catalog = getattr(self, "catalog", None)
            if catalog is not None:
                catalog.close()
            self.lock.release()
            raise
        self.started = True

    def run(self) -> None:
        """The second half of :meth:`start`: retention and every camera's readers."""
        self._retention_thread.start()
        self._audit_thread.start()
        self.exports.start()
        self.detection.open(sinks.from_config(self.config, self.event_store))
        for cam in self._cameras.values():
            self._start_readers(cam)
        self.reactor.start()
        log.info(
            "recording %d camera(s) on %d storage root(s)",
            sum(1 for c in self._cameras.values() if c.recorders),
            len(self.storage.usable()),
        )

    def _build(self) -> None:
        config = self.config
        self.catalog = Catalog(config.catalog_url())  # closed by start() if what follows fails
        # Before anything changes a segment row: it listens to the catalog's changes.
        self.timelines = Timelines(self.catalog)
        self.thumbnails = Thumbnails(config.playback.thumbnail_cache)
        self.audit = AuditLog(self.catalog, config.data_dir, self.clock)
        # A setup token is logged when no user exists.
        self.auth = bootstrap(self.catalog, config, self.clock, audit=self.audit)
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
        self.store = CameraStore(
            self.catalog,
            Secrets(config.data_dir),
            clock=self.clock,
            root_names=[r.name for r in config.storage.roots],
        )
        self.event_store = EventStore(self.catalog)
        self.snapshots = Snapshots(config.data_dir)
        # What a crash left open ends at its last update, before any new event begins.
        if ended := self.event_store.end_active():
            log.info("ended %d event(s) left open by the previous run", len(ended))
        self.detection = Detection(config, self.clock, self.event_store, self.snapshots)
        self.retention = Retention(
            config, self.catalog, self.storage, self.clock,
            cameras=lambda: [c.config for c in self.cameras], audit=self.audit,
            events=self.event_store, snapshots=self.snapshots,
        )  # fmt: skip
        self.writers = Writers(self.catalog, self.clock)
        open_files = self.writers.catalog_thread.open_files
        max_us = int(config.export.max_range_hours * 3_600_000_000)
        source = playback_source(self.catalog, open_files, self.storage, self.clock, max_us)
        self.exports = Exports(config.export, config.data_dir, source, self.clock)
        self.exports.open()  # the signing key is made at the first start
        self.reactor = Reactor(self.clock, self.stop_event)
        from vms.live.webrtc import WebRtcSessions  # aiortc loads with a server, not a tool

        self.webrtc: WebRtcSessions = WebRtcSessions(config.live, self.clock)
        # Renditions for browsers (H.265 as H.264, audio a transport cannot carry); each ends
        # with the relay it reads.
        self.live_sources = LiveSources(self.loop)
        self._retention_thread = threading.Thread(
            target=self.retention.loop, args=(self.stop_event,), name="retention", daemon=True
        )
        self._audit_thread = threading.Thread(
            target=self.audit.run_checkpoints, args=(self.stop_event,), name="audit", daemon=True
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Close every open segment cleanly; safe to call twice, and before :meth:`start`."""
        if not self.started:
            return
        self.stop_event.set()
        self.webrtc.close_all_from(self.loop, timeout)  # on the loop, which waits for stop()
        self.retention.wake.set()
        self.exports.stop()  # running exports cancelled: they only read recordings
        deadline = self.clock.monotonic() + timeout  # one budget for all: they stop in parallel
        for cam in self._cameras.values():
            cam.stop.set()
        if not self.reactor.join(timeout):
            log.warning("RTSP reactor did not stop in time")
        for cam in self._cameras.values():
            self._join_threads(cam, deadline)
            for p in cam.streams.values():
                p.close()
        # Open events end and every sink gets what is queued (the catalog is still open).
        self.detection.stop(timeout)
        self.writers.stop(max(timeout, 30.0))  # returns as soon as every file is closed
        for thread in (self._retention_thread, self._audit_thread):
            if thread.is_alive():
                thread.join(timeout)  # the audit thread writes a last checkpoint
        self.catalog.close()
        self.lock.release()
        self.started = False

    def _join_threads(self, cam: Camera, deadline: float) -> None:
        for t in cam.threads:
            if t.thread.is_alive():
                left = max(0.0, deadline - self.clock.monotonic())
                if not t.join(left):
                    # Blocked in a read until its socket timeout; the pipeline is closed next
                    # and its recorder ignores whatever the thread still hands it.
                    log.warning("ingest thread did not stop in time", extra={"camera": t.camera.id})

    # --- cameras at run time -------------------------------------------------------------

    def add_camera(self, cfg: CameraConfig, actor: str = "system") -> Camera:
        """Start a camera while the others record. Its id must be new. ``actor`` (who asked)
        goes to the audit log, as for every change below."""
        with self._changing:
            if cfg.id in self._cameras:
                raise VmsError(Kind.CONFLICT, f"camera {cfg.id!r} exists")
            self.store.add(cfg)  # checked and kept first: a camera that runs is a stored one
            self.audit.append(actor, "camera.create", cfg.id, _audited(cfg))
            return self._start_readers(self._add(cfg))

    def remove_camera(self, camera_id: str, timeout: float = 5.0, actor: str = "system") -> None:
        """Stop a camera: its readers end, its open segments are closed (recordings stay)."""
        with self._changing:
            cam = self.camera(camera_id)
            self.store.remove(camera_id)
            self.audit.append(actor, "camera.delete", camera_id)
            self._stop_camera(cam, timeout)

    def update_camera(
        self, cfg: CameraConfig, timeout: float = 5.0, actor: str = "system"
    ) -> Camera:
        """Apply a camera's new configuration: it reconnects with it; the others are not
        touched. Enabling and disabling a camera is such a change."""
        with self._changing:
            old = self.camera(cfg.id)
            self.store.update(cfg)
            self.audit.append(actor, "camera.update", cfg.id, _audited(cfg, old.config))
            self._stop_camera(old, timeout)
            return self._start_readers(self._add(cfg))

    def set_enabled(
        self, camera_id: str, enabled: bool, timeout: float = 5.0, actor: str = "system"
    ) -> Camera:
        with self._changing:
            old = self.camera(camera_id)
            if old.config.enabled == enabled:
                return old
            self.store.set_enabled(camera_id, enabled)
            self.audit.append(actor, "camera.enable" if enabled else "camera.disable", camera_id)
            self._stop_camera(old, timeout)
            return self._start_readers(self._add(self.store.get(camera_id)))

    def _add(self, cfg: CameraConfig) -> Camera:
        """The camera's pipelines (and recorders), registered; no reader started yet."""
        streams: dict[StreamName, StreamPipeline] = {}
        for name in StreamName:
            if cfg.stream(name) is None:
                continue
            number = STREAM_NUMBERS[name]
            health = CameraHealth(cfg.id, self.clock, enabled=cfg.enabled)
            pipeline = StreamPipeline(cfg.id, number, health, Relay(self.loop))
            if cfg.enabled and cfg.record != RecordMode.OFF and name in cfg.record_streams:
                pipeline.recorder = Recorder(
                    cfg.id,
                    catalog=self.catalog,
                    storage=self.storage,
                    writers=self.writers,
                    clock=self.clock,
                    config=self.config.recording,
                    events=pipeline,
                    on_storage_trouble=self.retention.wake.set,
                    roots=cfg.roots,
                    stream=number,
                )
            streams[name] = pipeline
        cam = Camera(cfg, streams, threading.Event())
        if self.stop_event.is_set():
            cam.stop.set()
        self._cameras[cfg.id] = cam
        return cam

    def _start_readers(self, cam: Camera) -> Camera:
        self.detection.attach(cam.config, cam.streams)  # its health at least goes out
        if cam.config.enabled:
            for name, pipeline in cam.streams.items():
                self._start_reader(cam, name, pipeline)
        return cam

    def _start_reader(self, cam: Camera, name: StreamName, pipeline: StreamPipeline) -> None:
        cfg = cam.config
        stream = cfg.stream(name)
        assert stream is not None
        native = (
            self.config.ingest.reader == Reader.NATIVE
            and stream.url.startswith("rtsp://")
            and stream.transport == Transport.TCP
        )
        if native:
            session = Session(
                cfg,
                stream,
                sink=pipeline,
                health=pipeline.health,
                config=self.config.ingest,
                clock=self.clock,
            )
            cam.sessions.append(session)
            self.reactor.add(session)
            return
        ingest = Ingest(
            cfg,
            stream,
            sink=pipeline,
            health=pipeline.health,
            config=self.config.ingest,
            clock=self.clock,
            stop=cam.stop,
        )
        cam.threads.append(ingest)
        ingest.start()

    def _stop_camera(self, cam: Camera, timeout: float) -> None:
        self.detection.detach(cam.config.id, timeout)  # its open events end first
        cam.stop.set()
        for session in cam.sessions:
            if not self.reactor.remove(session, timeout):
                log.warning("RTSP session did not stop in time", extra={"camera": cam.config.id})
        self._join_threads(cam, self.clock.monotonic() + timeout)
        for p in cam.streams.values():
            p.close()
        del self._cameras[cam.config.id]
