"""Export jobs: queued, run a few at a time in worker threads, kept on disk until they expire.

A job is refused when it is made, not failed later, when its range is bad or a camera has no
recording in it (the range stream's plan is made then, :data:`Source`). At most
``export.concurrent`` jobs run; the others wait in order. A job writes under
``<data_dir>/exports/<id>/``:

- one camera: ``<camera>.mp4`` (and ``<camera>.2.mp4``... where the camera's parameters
  changed within the range); several cameras or files: ``export.zip`` holding them with the
  manifest; then ``manifest.json`` and ``manifest.sig`` next to it;
- ``job.json``: the job's record, so a restarted server lists past exports (a job that was
  queued or running becomes failed, "interrupted by restart").

Every file is written as ``<name>.part`` and renamed when whole. A full disk fails the job
with a message saying so and removes what it wrote; the recorder never waits on an export
(exports are outside the storage roots and run in their own threads). Finished exports are
deleted ``export.keep_days`` after they end.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import logging
import os
import secrets
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from vms.clock import Clock
from vms.config import ExportConfig
from vms.errors import Kind, VmsError
from vms.export import manifest as manifest_mod
from vms.export.manifest import ZIP_NAME
from vms.export.remux import Cancelled, MediaFile, remux
from vms.export.signing import Signer
from vms.times import invalid, iso

log = logging.getLogger(__name__)

EXPORTS_DIR = "exports"
JOB_FILE = "job.json"
PART = ".part"
MAX_CAMERAS = 16
MAX_WAITING = 64  # jobs queued at once, all users together
CANCEL_WAIT_S = 10.0
INTERRUPTED_BY_STOP = "interrupted: the server stopped"
INTERRUPTED_BY_RESTART = "interrupted by restart"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class State(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({State.DONE, State.FAILED, State.CANCELLED})


@dataclasses.dataclass
class RangeStream:
    """What an export reads of one camera: the playback range stream (init, fragments, one
    time line) and where in it the instant asked for lies."""

    chunks: Iterable[bytes]
    offset_s: float  # from the stream's first instant (its time 0) to the instant asked for
    first_us: int  # wall time of the stream's time 0
    gaps: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    close: Callable[[], None] = lambda: None


Source = Callable[[str, str, int, int], RangeStream]
"""``(camera_id, stream, start_us, end_us)`` → the range stream; ``VmsError`` NOT_FOUND when
the camera recorded nothing in the range. Called when a job is made; read when it runs."""


class Files:
    """Where an export's files are written: the edge a test replaces (a full disk)."""

    def create(self, path: Path) -> BinaryIO:
        """``path`` made and opened for writing, seekable, unbuffered (the muxer rereads it)."""
        return open(path, "xb+", buffering=0)


@dataclasses.dataclass
class Job:
    id: str
    cameras: list[str]
    start_us: int
    end_us: int
    stream: str
    created_by: str
    created_by_id: int
    created_us: int
    state: State = State.QUEUED
    percent: float = 0.0
    error: str | None = None
    file: str | None = None  # what a download gives: one mp4 or the zip
    files: list[str] = dataclasses.field(default_factory=list)  # every file offered
    size: int = 0  # bytes of ``file``
    notes: list[str] = dataclasses.field(default_factory=list)
    started_us: int | None = None
    finished_us: int | None = None

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Job:
        fields = {f.name for f in dataclasses.fields(cls)}
        job = cls(**{k: v for k, v in data.items() if k in fields})
        job.state = State(job.state)
        return job


@dataclasses.dataclass
class _Run:
    """What only a job in memory has: its range streams and its cancel flag."""

    streams: list[RangeStream]
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    ended: threading.Event = dataclasses.field(default_factory=threading.Event)


class Exports:
    """The export jobs of one server. :meth:`open` loads past jobs, :meth:`start` starts the
    workers, :meth:`stop` cancels what runs."""

    def __init__(
        self,
        config: ExportConfig,
        data_dir: Path,
        source: Source,
        clock: Clock,
        *,
        files: Files | None = None,
    ) -> None:
        self.config = config
        self.root = Path(data_dir) / EXPORTS_DIR
        self.data_dir = Path(data_dir)
        self.source = source
        self.clock = clock
        self.files = files or Files()
        self._jobs: dict[str, Job] = {}
        self._runs: dict[str, _Run] = {}
        self._queue: list[str] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._stopped = threading.Event()  # the sweeper's wake-up; the workers wait on _cond
        self._threads: list[threading.Thread] = []
        self.signer: Signer | None = None

    # --- life ----------------------------------------------------------------------------

    def open(self) -> None:
        """The signing key (made at the first start), the past jobs, the expired ones gone."""
        self.signer = Signer(self.data_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._load()
        self.sweep()

    def start(self) -> None:
        """:meth:`open` if not done yet, and the worker threads."""
        if self.signer is None:
            self.open()
        for i in range(self.config.concurrent):
            t = threading.Thread(target=self._work, name=f"export-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        sweeper = threading.Thread(target=self._sweep_loop, name="export-sweep", daemon=True)
        sweeper.start()
        self._threads.append(sweeper)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers: running jobs end (failed, "interrupted"), queued ones too."""
        with self._cond:
            self._stopping = True
            self._stopped.set()
            for run in self._runs.values():
                run.cancel.set()
            for job_id in self._queue:
                run = self._runs[job_id]
                self._end(self._jobs[job_id], State.FAILED, INTERRUPTED_BY_STOP)
                for s in run.streams:
                    s.close()
            self._queue.clear()
            self._cond.notify_all()
        deadline = self.clock.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - self.clock.monotonic()))
        self._threads.clear()

    def _load(self) -> None:
        for d in sorted(self.root.iterdir()):
            try:
                job = Job.of(json.loads((d / JOB_FILE).read_text()))
            except (OSError, ValueError, TypeError) as e:
                log.warning("export %s: no readable job record (%s): left alone", d.name, e)
                continue
            if job.state not in FINISHED:
                self._remove_files(d, keep_record=True)
                job.state, job.error = State.FAILED, INTERRUPTED_BY_RESTART
                job.finished_us = self.clock.wall_us()
                self._save(job)
            self._jobs[job.id] = job

    # --- jobs ----------------------------------------------------------------------------

    def create(
        self,
        cameras: list[str],
        start_us: int,
        end_us: int,
        stream: str,
        created_by: str,
        created_by_id: int,
    ) -> Job:
        """A new job, queued; refused (400, 404) when it cannot produce anything."""
        if end_us <= start_us:
            raise invalid("end", "must be after start")
        hours = (end_us - start_us) / 3_600_000_000
        if hours > self.config.max_range_hours:
            raise invalid(
                "end",
                f"the range is {hours:.4g} h long; an export may cover at most "
                f"{self.config.max_range_hours:g} h (export.max_range_hours)",
            )
        if not cameras or len(cameras) > MAX_CAMERAS or len(set(cameras)) != len(cameras):
            raise invalid("cameras", f"1 to {MAX_CAMERAS} different camera ids")
        job = Job(
            id=secrets.token_hex(8),
            cameras=list(cameras),
            start_us=start_us,
            end_us=end_us,
            stream=stream,
            created_by=created_by,
            created_by_id=created_by_id,
            created_us=self.clock.wall_us(),
        )
        streams: list[RangeStream] = []
        try:
            for cam in cameras:  # raises NOT_FOUND for a camera with nothing in the range
                streams.append(self.source(cam, stream, start_us, end_us))
            self._enqueue(job, streams)
        except BaseException:
            for s in streams:
                s.close()
            raise
        log.info("export %s queued: %s", job.id, ", ".join(cameras))
        return job

    def _enqueue(self, job: Job, streams: list[RangeStream]) -> None:
        with self._cond:
            if self._stopping:
                raise VmsError(Kind.UNAVAILABLE, "the server is stopping")
            if len(self._queue) >= MAX_WAITING:
                raise VmsError(
                    Kind.UNAVAILABLE, f"{MAX_WAITING} exports are waiting already; try later"
                )
            (self.root / job.id).mkdir(parents=True)
            self._save(job)
            self._jobs[job.id] = job
            self._runs[job.id] = _Run(streams)
            self._queue.append(job.id)
            self._cond.notify()

    def find(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise VmsError(Kind.NOT_FOUND, f"no export {job_id!r}")
        return job

    def jobs(self) -> list[Job]:
        """Every job, newest first."""
        with self._cond:
            jobs = list(self._jobs.values())
        return sorted(jobs, key=lambda j: (j.created_us, j.id), reverse=True)

    def path(self, job: Job, name: str) -> Path:
        """A file of a finished job (one it names); NOT_FOUND otherwise."""
        if job.state != State.DONE or name not in job.files:
            raise VmsError(Kind.NOT_FOUND, f"export {job.id} has no file {name!r}")
        return self.root / job.id / name

    def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job (its files removed); waits a little for it to stop."""
        with self._cond:
            job = self.get(job_id)
            run = self._runs.get(job_id)
            if job.state in FINISHED or run is None:
                return job
            run.cancel.set()
            if job.state == State.QUEUED:
                self._queue.remove(job_id)
                self._end(job, State.CANCELLED, None)
                for s in run.streams:
                    s.close()
                return job
        run.ended.wait(CANCEL_WAIT_S)
        return job

    def delete(self, job_id: str) -> None:
        """Forget a finished job and remove its files."""
        with self._cond:
            job = self.get(job_id)
            if job.state not in FINISHED:
                raise VmsError(Kind.CONFLICT, f"export {job_id} is {job.state}: cancel it first")
            del self._jobs[job_id]
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def sweep(self) -> int:
        """Delete the jobs that ended more than ``keep_days`` ago; how many."""
        keep_us = int(self.config.keep_days * 86_400_000_000)
        now = self.clock.wall_us()
        old = [
            j.id
            for j in list(self._jobs.values())
            if j.state in FINISHED and (j.finished_us or j.created_us) + keep_us < now
        ]
        for job_id in old:
            try:
                self.delete(job_id)
            except VmsError:
                continue
        if old:
            log.info("deleted %d export(s) older than %g days", len(old), self.config.keep_days)
        return len(old)

    def _sweep_loop(self) -> None:
        interval = min(3600.0, self.config.keep_days * 86400 / 10)
        while not self._stopped.wait(interval):
            try:
                self.sweep()
            except Exception:
                log.exception("export sweep failed")

    # --- the workers ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or bool(self._queue))
                if self._stopping:
                    return
                job = self._jobs[self._queue.pop(0)]
                run = self._runs[job.id]
                job.state, job.started_us = State.RUNNING, self.clock.wall_us()
            self._save(job)
            log.info("export %s running", job.id)
            try:
                self._run(job, run)
            finally:
                for s in run.streams:
                    s.close()

    def _run(self, job: Job, run: _Run) -> None:
        folder = self.root / job.id
        try:
            self._export(job, run, folder)
        except Cancelled:
            self._remove_files(folder, keep_record=True)
            if self._stopping:
                self._end(job, State.FAILED, INTERRUPTED_BY_STOP)
            else:
                self._end(job, State.CANCELLED, None)
        except OSError as e:
            self._remove_files(folder, keep_record=True)
            if e.errno in _NO_SPACE:
                message = (
                    f"no space left on the disk holding {self.root}: the export's files were "
                    "removed; free some space and export again (recording is not affected)"
                )
            else:
                message = f"cannot write the export in {folder}: {e.strerror or e}"
            self._end(job, State.FAILED, message)
        except VmsError as e:
            self._remove_files(folder, keep_record=True)
            self._end(job, State.FAILED, e.message)
        except Exception as e:
            log.exception("export %s failed", job.id)
            self._remove_files(folder, keep_record=True)
            self._end(job, State.FAILED, f"internal error: {type(e).__name__}")
        finally:
            run.ended.set()

    def _export(self, job: Job, run: _Run, folder: Path) -> None:
        total_s = (job.end_us - job.start_us) / 1e6 * len(job.cameras)
        written: list[tuple[Path, str]] = []  # part file, final name
        cameras: list[dict[str, Any]] = []
        notes: list[str] = []
        for i, (camera, rs) in enumerate(zip(job.cameras, run.streams, strict=True)):
            duration_s = (job.end_us - max(job.start_us, rs.first_us)) / 1e6
            done_before = i * (job.end_us - job.start_us) / 1e6

            def create(n: int, camera: str = camera) -> tuple[Path, BinaryIO]:
                name = f"{camera}.mp4" if n == 0 else f"{camera}.{n + 1}.mp4"
                part = folder / (name + PART)
                written.append((part, name))
                return part, self.files.create(part)

            def progress(s: float, base: float = done_before) -> None:
                job.percent = round(min(99.0, 100 * (base + s) / total_s), 1)

            try:
                result = remux(
                    rs.chunks, offset_s=rs.offset_s, duration_s=duration_s, create=create,
                    progress=progress, cancelled=run.cancel.is_set,
                )  # fmt: skip
            except VmsError as e:
                if e.kind != Kind.NOT_FOUND or len(job.cameras) == 1:
                    raise VmsError(e.kind, f"camera {camera}: {e.message}") from None
                notes.append(f"camera {camera}: {e.message}")
                continue
            notes += [f"camera {camera}: {n}" for n in result.notes]
            cameras.append(self._describe(camera, rs, job, result.files, written))
        if run.cancel.is_set():
            raise Cancelled()
        if not written:
            raise VmsError(Kind.NOT_FOUND, "no video in the range: " + "; ".join(notes))
        self._finish(job, folder, written, cameras, notes)

    @staticmethod
    def _describe(
        camera: str,
        rs: RangeStream,
        job: Job,
        files: list[MediaFile],
        written: list[tuple[Path, str]],
    ) -> dict[str, Any]:
        names = dict(written)
        first_us = max(job.start_us, rs.first_us)
        return {
            "id": camera,
            "files": [
                {
                    "name": names[f.path],
                    "first": iso(first_us + round(f.start_s * 1e6)),
                    "duration_s": round(f.duration_s, 6),
                    "video": f.video,
                    "audio": f.audio,
                }
                for f in files
            ],
            "gaps": [{"start": iso(s), "end": iso(e)} for s, e in rs.gaps],
        }

    def _finish(
        self,
        job: Job,
        folder: Path,
        written: list[tuple[Path, str]],
        cameras: list[dict[str, Any]],
        notes: list[str],
    ) -> None:
        assert self.signer is not None
        entries = [manifest_mod.file_entry(part, name) for part, name in written]
        doc = manifest_mod.build(
            export_id=job.id,
            cameras=cameras,
            start=iso(job.start_us),
            end=iso(job.end_us),
            stream=job.stream,
            files=entries,
            exported_by=job.created_by,
            exported_at=iso(self.clock.wall_us()),
            key_id=self.signer.key_id,
            notes=notes,
        )
        data, signature = manifest_mod.signed(doc, self.signer)
        if len(written) == 1:
            part, name = written[0]
            main = name
            part.rename(folder / name)
        else:
            main = ZIP_NAME
            self._zip(folder / (ZIP_NAME + PART), written, data, signature)
            for part, _ in written:
                part.unlink()
            (folder / (ZIP_NAME + PART)).rename(folder / ZIP_NAME)
        for name, content in ((manifest_mod.MANIFEST, data), (manifest_mod.SIGNATURE, signature)):
            part = folder / (name + PART)
            with self.files.create(part) as f:
                f.write(content)
            part.rename(folder / name)
        job.file = main
        job.files = [main, manifest_mod.MANIFEST, manifest_mod.SIGNATURE]
        job.size = (folder / main).stat().st_size
        job.notes = notes
        self._end(job, State.DONE, None)

    def _zip(
        self, path: Path, written: list[tuple[Path, str]], data: bytes, signature: bytes
    ) -> None:
        # Stored, not deflated: H.264 does not compress, and a stored member reads at disk speed.
        with (
            self.files.create(path) as f,
            zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z,
        ):
            for part, name in written:
                z.write(part, name)
            z.writestr(manifest_mod.MANIFEST, data)
            z.writestr(manifest_mod.SIGNATURE, signature)

    def _end(self, job: Job, state: State, error: str | None) -> None:
        # The state last: readers in other threads take a job that says it ended as whole.
        job.error, job.finished_us = error, self.clock.wall_us()
        if state == State.DONE:
            job.percent = 100.0
        job.state = state
        self._runs.pop(job.id, None)
        self._save(job)
        log.info("export %s %s%s", job.id, state, f": {error}" if error else "")

    # --- files ---------------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        folder = self.root / job.id
        tmp = folder / (JOB_FILE + PART)
        try:
            tmp.write_text(json.dumps(job.record()))
            tmp.rename(folder / JOB_FILE)
        except OSError as e:
            log.warning("export %s: cannot write its record: %s", job.id, e.strerror or e)

    @staticmethod
    def _remove_files(folder: Path, *, keep_record: bool) -> None:
        for p in folder.iterdir() if folder.is_dir() else ():
            if keep_record and p.name == JOB_FILE:
                continue
            try:
                os.unlink(p)
            except OSError as e:
                log.warning("cannot remove %s: %s", p, e.strerror)
