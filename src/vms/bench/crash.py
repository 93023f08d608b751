"""``vms bench crash``: kill -9 the recorder at random moments, restart it, count what is lost.

A VMS process records K cameras from one 640x360 clip looped as a live camera (``file://``,
paced at 25 fps; 1 s GOP, so 1 s fragments), with short segments (10 s, staggered; camera
ids are picked so that first segments end 1.5–4 s in, which makes kills hit rotations).
Each iteration: start the server, wait until every camera is online and has a fragment on
disk, wait a random 0.3–0.8 s (quick) or 0.3–1.5 s (full), kill -9, note the kill instant. Then,
in this process and with the server dead, run the crash recovery
(``vms.recording.recovery.reindex`` on every open segment, the same steps as ``recover``) and
``vms.recording.check.run`` without repair: anything check reports is a mismatch.

The clip stands in for the RTSP stand-in camera: with its clients killed every second, the
GStreamer stand-in stopped answering (RTSP requests timed out after 10 s) within a few kills.

Seconds lost per camera and kill: kill instant − end of the camera's last indexed fragment (or
the moment the camera went online in that iteration, if later): what was received but is not
on disk. Restart: previous kill → the newest camera's first segment of the next iteration.

Restarts fork a *zygote* (``python -m vms.bench.crash --zygote``) that has already imported the
server, then run what ``vms serve --config`` runs (:func:`vms.serve.run`); the interpreter start
(about 0.6 s) is thus out of the loop, and measured apart: ``cold_start_s`` starts
``python -m vms serve`` itself. Three lanes (servers with their own data directories) run at
once so a quick run fits in 50 s.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vms.bench import VmsProcess, free_port, workdir, write_config
from vms.bench.report import Progress, Result, envelope, spread
from vms.errors import VmsError

SEGMENT_SECONDS = 10.0
TARGET = {"seconds_lost_per_camera_max": 1.0, "mismatches": 0}
ROTATION_WINDOW_US = 1_000_000
# Catalog() runs alembic migrations, whose ``context`` is module-global: opening catalogs from
# several lane threads at once fails with KeyError('config'). One lane at a time.
_CATALOG_LOCK = threading.Lock()


def camera_ids(count: int, lane: int) -> list[str]:
    """Ids whose staggered first segment ends early (see Recorder._first_target)."""
    wanted = [1.5 + 2.5 * i / max(1, count - 1) for i in range(count)]
    ids: list[str] = []
    for target in wanted:
        for n in range(100_000):
            cid = f"l{lane}c{len(ids)}-{n}"
            stagger = zlib.crc32(cid.encode()) % 1000 / 1000
            if abs(SEGMENT_SECONDS * (1 - 0.9 * stagger) - target) < 0.1:
                ids.append(cid)
                break
    return ids


class Zygote:
    """A pre-imported python that forks ``vms serve`` on request; it reaps its children."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vms.bench.crash", "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lock = threading.Lock()
        self._readline()  # "READY"

    def _readline(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError("crash bench zygote died")
        return line

    def spawn(self, config: Path, log_path: Path) -> int:
        assert self.process.stdin is not None
        with self._lock:
            self.process.stdin.write(f"{config}\t{log_path}\n".encode())
            self.process.stdin.flush()
            return int(self._readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _zygote_main() -> int:
    from vms import serve  # imported before fork (with the server and the API): children start warm
    from vms.config import load

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    for line in sys.stdin:
        config, log_path = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            code = 1
            try:
                code = serve.run(load(Path(config)))
            except VmsError as e:
                print(f"vms: {e}", file=sys.stderr, flush=True)  # into the log, as vms serve
            finally:
                os._exit(code)
        out.write(f"{pid}\n")
        out.flush()
    return 0


def _gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.002)
    raise RuntimeError(f"process {pid} survived SIGKILL")


class _PidServer(VmsProcess):
    """A forked server: same API helpers, but only a pid (the zygote is its parent)."""

    def __init__(self, config: Path, port: int, log_path: Path, pid: int) -> None:
        super().__init__(config, port, log_path)
        self._pid = pid

    @property
    def pid(self) -> int:
        return self._pid

    def alive(self) -> bool:
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        os.kill(self._pid, signal.SIGKILL)
        _gone(self._pid)


def _wait_recording(server: VmsProcess, timeout: float) -> None:
    """Until every camera has a fragment on disk (frames_written > 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((c["recording"] or {}).get("frames_written", 0) > 0 for c in server.cameras()):
            return
        time.sleep(0.03)
    raise RuntimeError(f"cameras not recording after {timeout:g} s")


class Lane:
    """One server and its data directory, killed and restarted ``iterations`` times."""

    def __init__(
        self,
        lane: int,
        url: str,
        cameras: int,
        tmp: Path,
        zygote: Zygote,
        quick: bool,
        max_wait: float | None = None,
    ) -> None:
        self.max_wait = max_wait
        self.lane = lane
        self.ids = camera_ids(cameras, lane)
        self.tmp = tmp
        self.zygote = zygote
        self.quick = quick
        self.port = free_port()
        self.config = write_config(
            tmp, port=self.port, cameras=[(c, url) for c in self.ids],
            segment_seconds=SEGMENT_SECONDS, fragment_seconds=1.0, stagger=True,
        )  # fmt: skip
        self.rng = random.Random(lane)
        self.lost: list[float] = []
        self.restarts: list[float] = []
        self.cold_starts: list[float] = []
        self.recovery_s: list[float] = []
        self.kills = self.rotation_hits = self.recovered = self.torn = self.dropped = 0
        self.problems: dict[tuple[Any, ...], str] = {}
        self.checks = 0
        self.error: str | None = None
        self._last_seg_id = 0

    def run(self, iterations: int, tick: Callable[[], None]) -> None:
        try:
            self._run(iterations, tick)
        except Exception as e:  # noqa: BLE001 - reported in the figures, not lost in a thread
            self.error = f"lane {self.lane}: {type(e).__name__}: {e}"

    def _start(self, cold: bool) -> VmsProcess:
        log_path = self.tmp / "vms.log"
        if cold:
            return VmsProcess(self.config, self.port, log_path).start()
        pid = self.zygote.spawn(self.config, log_path)
        return _PidServer(self.config, self.port, log_path, pid)

    def _run(self, iterations: int, tick: Callable[[], None]) -> None:
        # After the first fragment of every camera is on disk. Full: 0.3-1.5 s rather than
        # 0.3-2.5 s, so 500 kills fit in about 10 minutes.
        lo, hi = (0.3, 0.8) if self.quick else (0.3, 1.5)
        if self.max_wait is not None:
            lo, hi = min(lo, self.max_wait), self.max_wait
        prev_kill_us: int | None = None
        for i in range(iterations):
            cold = i == 0 or (not self.quick and i % 50 == 49)
            t0 = time.time()
            server = self._start(cold)
            try:
                server.wait_http(60)
                server.wait_online(len(self.ids), 60)
                online = {c["id"]: int(c["health"]["since_us"]) for c in server.cameras()}
                _wait_recording(server, 30)
                time.sleep(self.rng.uniform(lo, hi))
                kill_us = time.time_ns() // 1000
            finally:
                server.kill()
                server.stop()
            self.kills += 1
            self._after_kill(kill_us, prev_kill_us, online, cold, t0, i == iterations - 1)
            prev_kill_us = kill_us
            tick()

    def _after_kill(
        self,
        kill_us: int,
        prev_kill_us: int | None,
        online: dict[str, int],
        cold: bool,
        t0: float,
        last: bool,
    ) -> None:
        with _CATALOG_LOCK:
            self._recover_and_check(kill_us, prev_kill_us, online, cold, t0, last)

    def _recover_and_check(
        self,
        kill_us: int,
        prev_kill_us: int | None,
        online: dict[str, int],
        cold: bool,
        t0: float,
        last: bool,
    ) -> None:
        from vms.catalog.store import OPEN, Catalog
        from vms.clock import SystemClock
        from vms.config import load
        from vms.recording import check
        from vms.recording.recovery import collect_garbage, recover, reindex
        from vms.recording.storage import Storage

        cfg = load(self.config)
        catalog = Catalog(cfg.catalog_url())
        try:
            storage = Storage(cfg.storage.roots, catalog, SystemClock())
            storage.verify()
            r0 = time.monotonic()
            collect_garbage(catalog, storage)
            dropped_cams: set[str] = set()
            for root in storage.usable():
                for seg in catalog.segments(root_id=root.id, state=OPEN):
                    outcome = reindex(catalog, root, seg)
                    self.recovered += 1
                    if "torn" in outcome:
                        self.torn += 1
                    if "removed" in outcome:
                        self.dropped += 1
                        dropped_cams.add(seg.camera_id)
            # Files whose rows were still queued at the kill: indexed as a start would.
            self.recovered += recover(catalog, storage)
            self.recovery_s.append(time.monotonic() - r0)
            fresh = [s for s in catalog.segments() if s.id > self._last_seg_id]
            self._last_seg_id = max([self._last_seg_id, *(s.id for s in fresh)])
            starts: list[int] = []
            rotation = False
            for cid in self.ids:
                mine = catalog.segments(camera_id=cid)
                last_end = max((s.end_us for s in mine), default=0)
                self.lost.append(max(0, kill_us - max(last_end, online[cid])) / 1e6)
                new = [s for s in fresh if s.camera_id == cid]
                if new:
                    starts.append(min(s.start_us for s in new))
                if new and (
                    (len(new) >= 2 and kill_us - new[-1].start_us <= ROTATION_WINDOW_US)
                    or cid in dropped_cams
                ):
                    rotation = True
            self.rotation_hits += rotation
            if starts and len(starts) == len(self.ids):
                first = max(starts)
                if cold:
                    self.cold_starts.append(first / 1e6 - t0)
                elif prev_kill_us is not None:
                    self.restarts.append((first - prev_kill_us) / 1e6)
            if self.quick or last or self.kills % 10 == 0:
                self.checks += 1
                report = check.run(catalog, storage, server_running=False)
                for p in report.problems:
                    self.problems[(p.segment_id, p.path, p.kind)] = (
                        f"{p.kind}: {p.path}: {p.detail}"
                    )
        finally:
            catalog.close()


def run(args: argparse.Namespace, progress: Progress) -> Result:
    from vms.standin.footage import synthetic_clip

    quick = bool(args.quick)
    # --seconds bounds the random recording time of an iteration.
    kills = int(args.kills or (50 if quick else 500))
    hi = float(args.seconds) if args.seconds else None
    cameras = int(args.cameras or 4)
    lanes_n = 3
    started = time.monotonic()
    with workdir("crash") as tmp_name:
        tmp = Path(tmp_name)
        progress.update("crash: encoding the clip", 0, 1)
        clip = synthetic_clip(tmp / "clip.mp4", width=640, height=360, fps=25, seconds=6, gop=25)
        url = clip.resolve().as_uri()
        zygote = Zygote()
        try:
            lanes = [
                Lane(i, url, cameras, tmp / f"lane{i}", zygote, quick, hi) for i in range(lanes_n)
            ]
            done = [0]
            lock = threading.Lock()

            def tick() -> None:
                with lock:
                    done[0] += 1
                    progress.update("crash: kill -9 / restart", done[0], kills)

            share = [kills // lanes_n + (1 if i < kills % lanes_n else 0) for i in range(lanes_n)]
            threads = [
                threading.Thread(target=lane.run, args=(n, tick), daemon=True)
                for lane, n in zip(lanes, share, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            zygote.close()
    return _result(lanes, quick, cameras, time.monotonic() - started)


def _result(lanes: list[Lane], quick: bool, cameras: int, wall: float) -> Result:
    lost = [x for lane in lanes for x in lane.lost]
    problems = sorted({v for lane in lanes for v in lane.problems.values()})
    errors = [lane.error for lane in lanes if lane.error]
    kills = sum(lane.kills for lane in lanes)
    figures: dict[str, Any] = {
        "kills": kills,
        "cameras_per_server": cameras,
        "servers": len(lanes),
        "seconds_lost_per_camera": spread(lost, 3),
        "seconds_lost_mean": round(sum(lost) / len(lost), 3) if lost else None,
        "mismatches": len(problems),
        "mismatch_examples": problems[:10],
        "checks_run": sum(lane.checks for lane in lanes),
        "kills_hitting_rotation": sum(lane.rotation_hits for lane in lanes),
        "segments_recovered": sum(lane.recovered for lane in lanes),
        "torn_tails_truncated": sum(lane.torn for lane in lanes),
        "segments_without_whole_fragment": sum(lane.dropped for lane in lanes),
        "recovery_s": spread([x for lane in lanes for x in lane.recovery_s], 3),
        "restart_s": spread([x for lane in lanes for x in lane.restarts], 3),
        "cold_start_s": spread([x for lane in lanes for x in lane.cold_starts], 3),
        "wall_seconds": round(wall, 1),
        "errors": errors,
    }
    worst = figures["seconds_lost_per_camera"]["max"]
    ok = (
        not errors
        and kills >= (50 if quick else 500)
        and worst is not None
        and worst <= TARGET["seconds_lost_per_camera_max"]
        and not problems
    )
    return envelope("crash", quick, figures, None, None, ok, TARGET)


def _main(argv: list[str]) -> int:
    if argv == ["--zygote"]:
        return _zygote_main()
    print("usage: python -m vms.bench.crash --zygote (internal)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
