"""``vms bench api``: many clients on the recordings of one camera-day and the camera list,
while live cameras record.

Set-up: the catalog of a fresh data directory is given one camera-day of camera ``archive``
(a disabled camera, so it only has recordings): 1,440 closed segments of 60 s, each with the
index blob of 60 one-second fragments the recorder would have written, inserted through
:class:`~vms.catalog.store.Catalog` before the server starts (the files do not exist: the
route answers from the catalog alone). A few VMS cameras record one stand-in camera
(320x240) meanwhile, so that "recording undisturbed" is measured, not assumed.

The server is ``python -m vms serve`` in its own process; this process is the load generator:
``clients`` asyncio tasks, each with its own keep-alive HTTP/1.1 connection and exactly one
request in flight, alternating the day's recordings and the camera list. Latency is measured
here, from send to the whole body read; a request counts when it completes inside the window
(after the warm-up). An error is a non-2xx answer or an exception (timeout, reset).

Closed loop: with ``clients`` requests always in flight, latency is ``clients / throughput``
(Little's law) once the server is saturated, so the P95 target is a throughput target too.
The CPU of both processes comes from the operating system (user + system). On a 2-core box
the client and the server share the cores: the client's CPU is reported for that reason.

Frames lost: after a clean stop, the live cameras' segments in the catalog (samples indexed
against 25 fps × media duration, and gaps between segments, as ``vms bench recording``
counts them), plus the frames the recorders dropped during the window (``/metrics``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from vms.bench import VmsProcess, camera_metrics, cpu_seconds, free_port, workdir, write_config
from vms.bench.recording import FPS, _catalog_frames
from vms.bench.report import Progress, Result, envelope, percentile, spread
from vms.catalog.store import Catalog
from vms.clock import SystemClock
from vms.config import load
from vms.media import MAIN
from vms.recording.segment import FragmentIndex
from vms.recording.storage import Storage
from vms.standin import StandinCamera

ARCHIVE = "archive"
DAY_US = 86_400_000_000
SEGMENTS = 1440
SEGMENT_US = 60_000_000
FRAGMENTS = 60
TIMESCALE = 90_000
# About 1 Mbit/s: the sizes only make the rows' byte counts and blobs realistic.
FRAGMENT_BYTES = 125_000
INIT_BYTES = 812
TARGET = {"clients": 200, "p95_s_max": 0.1, "errors": 0, "frames_lost": 0}
METRICS = {
    "vms_camera_frames_total",
    "vms_camera_frames_recorded_total",
    "vms_camera_frames_dropped_total",
    "vms_camera_frames_dropped_backlog_total",
    "vms_camera_frames_discarded_total",
    "vms_camera_reconnects_total",
}
ROUTES = ("recordings", "cameras")
ERROR_EXAMPLES = 5


def request(
    base: str, route: str, day_start_us: int, auth: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """The URL and headers of one request: the only place that knows the routes; ``auth``
    is the server's local API key header."""
    if route == "recordings":
        query = f"start={day_start_us}&end={day_start_us + DAY_US}"
        return f"{base}/api/v1/cameras/{ARCHIVE}/recordings?{query}", auth
    return f"{base}/api/v1/cameras", auth


def seed_archive(config: Path, day_start_us: int) -> float:
    """One camera-day of closed segments for :data:`ARCHIVE`; returns the seconds it took."""
    t0 = time.monotonic()
    cfg = load(config)
    catalog = Catalog(cfg.catalog_url())
    try:
        storage = Storage(cfg.storage.roots, catalog, SystemClock())
        storage.verify()
        root = storage.usable()[0]
        assert root.id is not None
        catalog.ensure_camera(ARCHIVE, ARCHIVE)
        day = datetime.datetime.fromtimestamp(day_start_us / 1e6, datetime.UTC).strftime("%Y-%m-%d")
        for i in range(SEGMENTS):
            start = day_start_us + i * SEGMENT_US
            index = FragmentIndex()
            for f in range(FRAGMENTS):
                # Sizes vary as a real stream's do; the first fragment holds the keyframe.
                size = FRAGMENT_BYTES + (zlib.crc32(f"{i}/{f}".encode()) % 20_000) - 10_000
                index.add(f * TIMESCALE, TIMESCALE, size, keyframe=True, samples=FPS)
            seg_id = catalog.open_segment(
                camera_id=ARCHIVE, stream=MAIN, root_id=root.id,
                path=f"{ARCHIVE}/{day}/{start}-main.mp4", start_us=start, media_start=0,
                codec="avc1.64001f", width=1280, height=720, has_audio=False, timescale=TIMESCALE,
            )  # fmt: skip
            blob = index.encode()
            catalog.close_segment(
                seg_id, end_us=start + SEGMENT_US, init_bytes=INIT_BYTES,
                size=INIT_BYTES + index.size, fragments=len(index), frag_index=blob,
                crc32=zlib.crc32(blob),
            )  # fmt: skip
    finally:
        catalog.close()
    return time.monotonic() - t0


@dataclasses.dataclass
class Load:
    """What the load generator saw inside the measurement window."""

    latencies: dict[str, list[float]]
    errors: int
    error_examples: list[str]
    seconds: float
    server_cpu_s: float
    client_cpu_s: float
    metrics_before: dict[str, dict[str, float]]
    metrics_after: dict[str, dict[str, float]]


def _scrape(base: str, auth: dict[str, str]) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=auth),
                                timeout=30) as r:  # fmt: skip
        return camera_metrics(r.read().decode(), METRICS)


class _Connection:
    """One keep-alive HTTP/1.1 connection with one request in flight: a client of a few tens
    of µs a request. httpx spent ~4 ms of CPU on each, so with both on 2 cores the load
    generator, not the server, set the pace (bench/README.md)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        found = dict(
            (k.strip().lower(), v.strip()) for k, _, v in (f.partition(":") for f in fields if f)
        )
        if "content-length" not in found:
            raise ValueError(f"no Content-Length in the answer ({status_line})")
        body = await self.reader.readexactly(int(found["content-length"]))
        if found.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def generate(
    base: str,
    clients: int,
    warmup: float,
    seconds: float,
    day_start_us: int,
    server: psutil.Process,
    progress: Progress,
    auth: dict[str, str],
) -> Load:
    """``clients`` tasks, each with one request in flight, for ``warmup + seconds``."""
    me = psutil.Process()
    latencies: dict[str, list[float]] = {r: [] for r in ROUTES}
    errors = [0]
    examples: list[str] = []
    t_start = time.monotonic()
    window = [t_start + warmup, t_start + warmup + seconds]
    parts = urllib.parse.urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    async def worker(n: int) -> None:
        conn = _Connection(host, port)
        try:
            while time.monotonic() < window[1]:
                route = ROUTES[n % 2]
                n += 1
                url, headers = request(base, route, day_start_us, auth)
                t0 = time.monotonic()
                failure = None
                try:
                    status, body = await conn.get(url[len(base) :], headers)
                    if not 200 <= status < 300:
                        text = body[:200].decode(errors="replace")
                        failure = f"HTTP {status} on {route}: {text}"
                except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                    conn.close()
                    failure = f"{type(e).__name__} on {route}: {e}"
                t1 = time.monotonic()
                if not window[0] <= t1 <= window[1]:
                    continue
                if failure is None:
                    latencies[route].append(t1 - t0)
                else:
                    errors[0] += 1
                    if len(examples) < ERROR_EXAMPLES and failure not in examples:
                        examples.append(failure)
        finally:
            conn.close()

    async def clock() -> tuple[float, float, float, float, float, float, Any, Any]:
        while (now := time.monotonic()) < window[0]:
            progress.update(f"api: warm-up ({clients} clients)", now - t_start, warmup)
            await asyncio.sleep(min(0.25, window[0] - now))
        m0 = await asyncio.to_thread(_scrape, base, auth)
        # The window is what was measured: from here, whatever the loop's own delays were.
        w0, s0, c0 = time.monotonic(), cpu_seconds([server]), cpu_seconds([me])
        window[0] = w0
        window[1] = w0 + seconds
        while (now := time.monotonic()) < window[1]:
            progress.update(f"api: measuring ({clients} clients)", now - w0, seconds)
            await asyncio.sleep(min(0.25, window[1] - now))
        w1, s1, c1 = time.monotonic(), cpu_seconds([server]), cpu_seconds([me])
        m1 = await asyncio.to_thread(_scrape, base, auth)
        return w0, w1, s0, s1, c0, c1, m0, m1

    tasks = [asyncio.create_task(worker(i)) for i in range(clients)]
    w0, w1, s0, s1, c0, c1, m0, m1 = await clock()
    await asyncio.gather(*tasks)
    return Load(latencies, errors[0], examples, w1 - w0, s1 - s0, c1 - c0, m0, m1)


def _live_config(directory: Path, port: int, url: str, live: list[str]) -> Path:
    """``write_config``'s file, with :data:`ARCHIVE` added as a disabled camera."""
    path = write_config(
        directory, port=port, cameras=[(c, url) for c in live], segment_seconds=60, stagger=True
    )
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["cameras"].append({"id": ARCHIVE, "enabled": False, "main": {"url": url}})
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def run(args: argparse.Namespace, progress: Progress) -> Result:
    quick = bool(args.quick)
    clients = int(getattr(args, "clients", None) or (50 if quick else TARGET["clients"]))
    seconds = float(args.seconds or (10 if quick else 60))
    warmup = 2.0 if quick else 5.0
    n_live = int(args.cameras or (4 if quick else 10))
    day_start = (time.time_ns() // 1000 // DAY_US - 1) * DAY_US  # yesterday, UTC
    live = [f"live{i:02d}" for i in range(n_live)]
    with (
        workdir("api") as tmp_name,
        StandinCamera(width=320, height=240, fps=FPS, bitrate_kbps=256, keyint=FPS) as cam,
    ):
        tmp = Path(tmp_name)
        port = free_port()
        cfg_path = _live_config(tmp, port, cam.url, live)
        progress.update("api: one camera-day in the catalog", 0, 1)
        seed_s = seed_archive(cfg_path, day_start)
        progress.update("api: one camera-day in the catalog", 1, 1)
        vms = VmsProcess(cfg_path, port, tmp / "vms.log").start()
        try:
            vms.wait_http(60)
            vms.wait_online(n_live, 60, progress, "api: live cameras online")
            # The answer every client should get: checked once, before the load.
            url, headers = request(vms.base, "recordings", day_start, vms.headers())
            day = httpx.get(url, headers=headers, timeout=30).json()
            auth = vms.headers()
            load_ = asyncio.run(
                generate(vms.base, clients, warmup, seconds, day_start, vms.ps(), progress, auth)
            )
            alive = vms.alive()
        finally:
            progress.update("api: stopping the server", 0, 1)
            rc = vms.stop(60)
        disk = _catalog_frames(tmp / "data" / "catalog.db", live)
    return _result(quick, clients, n_live, load_, disk, day, seed_s, alive, rc, live)


def _delta(load_: Load, name: str, ids: list[str]) -> int:
    before, after = load_.metrics_before[name], load_.metrics_after[name]
    return int(sum(after.get(c, 0) - before.get(c, 0) for c in ids))


def _result(
    quick: bool,
    clients: int,
    n_live: int,
    load_: Load,
    disk: dict[str, Any],
    day: dict[str, Any],
    seed_s: float,
    alive: bool,
    rc: int | None,
    live: list[str],
) -> Result:
    every = [x for r in ROUTES for x in load_.latencies[r]]
    requests = len(every)
    elapsed = max(load_.seconds, 1e-9)
    received = _delta(load_, "vms_camera_frames_total", live)
    dropped = (
        _delta(load_, "vms_camera_frames_dropped_total", live)
        + _delta(load_, "vms_camera_frames_dropped_backlog_total", live)
        + _delta(load_, "vms_camera_frames_discarded_total", live)
    )
    overall = spread(every, 4)
    p99 = percentile(every, 99.0)
    figures: dict[str, Any] = {
        "clients": clients,
        "seconds": round(load_.seconds, 2),
        "requests": requests,
        "requests_per_s": round(requests / elapsed, 1),
        "latency_s": {
            "p50": overall["p50"],
            "p95": overall["p95"],
            "p99": None if p99 is None else round(p99, 4),
            "max": overall["max"],
        },
        "latency_s_by_route": {r: spread(load_.latencies[r], 4) for r in ROUTES},
        "requests_by_route": {r: len(load_.latencies[r]) for r in ROUTES},
        "errors": load_.errors,
        "error_examples": load_.error_examples,
        "server_cpu_pct": round(load_.server_cpu_s / elapsed * 100, 1),
        "client_cpu_pct": round(load_.client_cpu_s / elapsed * 100, 1),
        "server_cpu_ms_per_request": round(load_.server_cpu_s / requests * 1000, 3)
        if requests
        else None,
        "archive_segments": SEGMENTS,
        "archive_runs_in_answer": len(day.get("runs", [])),
        "archive_seed_s": round(seed_s, 1),
        "live_cameras": n_live,
        "live_fps_received": round(received / elapsed / max(1, n_live), 2),
        "frames_dropped_in_window": dropped,
        "reconnects_in_window": _delta(load_, "vms_camera_reconnects_total", live),
        "frames_recorded": disk["recorded"],
        "frames_lost": disk["lost"] + dropped,
        "gaps": disk["gaps"],
        "server_alive_at_end": alive,
        "server_exit_code": rc,
    }
    p95 = figures["latency_s"]["p95"]
    ok = (
        (quick or clients >= TARGET["clients"])
        and requests > 0
        and p95 is not None
        and p95 <= TARGET["p95_s_max"]
        and load_.errors == 0
        and figures["frames_lost"] == 0
        and alive
    )
    target: dict[str, Any] = dict(TARGET)
    if quick:
        target["note"] = f"--quick runs {clients} clients; the target is for {TARGET['clients']}"
    return envelope("api", quick, figures, None, None, ok, target)
