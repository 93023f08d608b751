"""``vms bench viewers``: how many live viewers of one stream one server serves.

The camera is the stamped stand-in at 640x360, 25 fps, 1 Mbit/s (a keyframe every 2 s);
``python -m vms serve`` records it and serves it live, to viewers over MSE's WebSocket and over
LL-HLS (one protocol after the other). The load generator is :mod:`vms.bench.viewer_load`, in
processes of its own (at most :data:`PER_PROCESS` viewers each), so that the server's CPU and
the generator's are accounted apart by the operating system. The viewers ramp up in steps
(100, 250, 500, 1000; 100 with ``--quick``); at each step they all connect and get their first
fragment (an LL-HLS part), then a window of ``--seconds`` (20; 5 quick) is measured:

* **server-added delay**: :class:`~vms.bench.direct.DirectClient` watches the camera directly
  all along and notes when each frame arrived there; a viewer's fragment ends with the same
  bytes as its last frame, so its arrival minus that frame's direct arrival is what the VMS
  added (RTSP reader, relay, muxing, WebSocket or HTTP) plus the viewer process's own
  wake-up. Both are ``time.monotonic()``: one clock for every process of the machine. An
  LL-HLS part is published when the frame after its last arrives: a frame interval more.
* **bytes**: each viewer's fragment bytes in the window over the bytes of the frames the
  camera sent that those fragments cover (fMP4 headers make it a little over 1); each must
  get >= 95 %, and stay connected throughout.
* **recording undisturbed**: the recorder's dropped frames (``/metrics``) over the ramp, and
  after a clean stop the segments in the catalog (as ``vms bench recording`` counts them).
* **CPU** of the server and of the load generator (user + system, from the operating
  system); the server's beyond its idle load (recording, measured first) per viewer, and
  how many viewers 16 cores would serve at that rate.

A step meets the target when every viewer got >= 95 % of the bytes and stayed connected, the
delay's P95 is <= 100 ms and no recorded frame was lost; the ramp stops at the first step
that does not. The figure is the largest step that did, per protocol. A protocol the server
does not serve (not built yet) is reported as not available.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

from vms.bench import cpu_seconds, workdir
from vms.bench.direct import DirectClient
from vms.bench.live_site import CAMERA, LiveSite, live_site
from vms.bench.recording import _catalog_frames
from vms.bench.report import Progress, Result, envelope, spread
from vms.bench.viewer_load import ARRAYS

WIDTH, HEIGHT, KBPS = 640, 360, 1000
PER_PROCESS = 250
# aiortc decodes every frame it receives: a WebRTC viewer costs its process far more.
PER_PROCESS_WEBRTC = 10
TARGET = {"viewers": 1000, "added_p95_ms_max": 100, "bytes_ratio_min": 0.95, "frames_lost": 0}
METRICS = {
    "vms_camera_frames_total",
    "vms_camera_frames_recorded_total",
    "vms_camera_frames_dropped_total",
    "vms_camera_frames_dropped_backlog_total",
    "vms_camera_frames_discarded_total",
}
READY_TIMEOUT_S = 120.0
PROJECTED_CORES = 16
ROUTES = {
    "mse": f"/api/v1/cameras/{CAMERA}/live.ws",
    "llhls": f"/api/v1/cameras/{CAMERA}/live.m3u8",
    "webrtc": f"/api/v1/cameras/{CAMERA}/whep",
}
# Held to the target; WebRTC viewers are counted per core (the "also report").
TARGETED = ("mse", "llhls")
WEBRTC_STEPS = {"quick": [5], "full": [10, 25, 50]}
STAMP_MASK = 0xFFFFFFFF  # a WebRTC viewer's key: the frame's stamp, modulo 2**32 ms


class Generator:
    """One load generator process (:mod:`vms.bench.viewer_load`)."""

    def __init__(self, job: dict[str, Any], log: IO[bytes]) -> None:
        self.job = job
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vms.bench.viewer_load"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        )  # fmt: skip
        self.lines: list[str] = []
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._write(json.dumps(job))

    def _write(self, line: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write((line + "\n").encode())
            self.process.stdin.flush()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._arrived:
                self.lines.append(raw.decode(errors="replace").strip())
                self._arrived.notify_all()
        with self._arrived:
            self.lines.append("")  # end of output
            self._arrived.notify_all()

    def line(self, n: int, timeout: float) -> str:
        """The ``n``-th line of its output ("" once it ended without one)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.lines) > n, timeout):
                return f"FAILED nothing in {timeout:g} s"
            return self.lines[n]

    def go(self, t0: float, t1: float) -> None:
        self._write(f"GO {t0!r} {t1!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def handshake(base: str, path: str, headers: dict[str, str]) -> str:
    """The status line a WebSocket handshake on ``path`` gets."""
    parts = urllib.parse.urlsplit(base)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 30) as s:
        head = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket",
                "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]  # fmt: skip
        head += [f"{k}: {v}" for k, v in headers.items()]
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        return s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")


def _metrics_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                   name: str) -> int:  # fmt: skip
    return int(after[name].get(CAMERA, 0) - before[name].get(CAMERA, 0))


def _lost(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> int:
    names = ("vms_camera_frames_dropped_total", "vms_camera_frames_dropped_backlog_total",
             "vms_camera_frames_discarded_total")  # fmt: skip
    return sum(_metrics_delta(before, after, n) for n in names)


def _step(
    site: LiveSite, direct: DirectClient, protocol: str, viewers: int, seconds: float,
    tmp: Path, progress: Progress,
) -> dict[str, Any]:  # fmt: skip
    """One step of the ramp: ``viewers`` connected, then a window of ``seconds`` measured."""
    url = f"{site.base}{ROUTES[protocol]}?stream=main"
    processes = math.ceil(viewers / (PER_PROCESS_WEBRTC if protocol == "webrtc" else PER_PROCESS))
    sizes = [viewers // processes + (1 if i < viewers % processes else 0) for i in range(processes)]
    phase = f"viewers: {viewers} {protocol} connecting"
    progress.update(phase, 0, 1)
    out = tmp / f"load-{protocol}-{viewers}"
    with open(f"{out}.log", "ab") as log:
        gens = [
            Generator(
                {
                    "protocol": protocol,
                    "url": url,
                    "headers": site.vms.headers(),
                    "viewers": size,
                    "out": f"{out}-{i}",
                },
                log,
            )
            for i, size in enumerate(sizes)
        ]
        try:
            ready = [g.line(0, READY_TIMEOUT_S) for g in gens]
            failed = [r for r in ready if r != "READY"]
            if failed:
                return {"viewers": viewers, "ok": False, "failed": failed[0][:300]}
            t0 = time.monotonic() + 0.5
            t1 = t0 + seconds
            for g in gens:
                g.go(t0, t1)
            children = [psutil.Process(g.process.pid) for g in gens]
            time.sleep(max(0.0, t0 - time.monotonic()))
            m0 = site.vms.metrics(METRICS)
            s0, c0, w0 = cpu_seconds([site.vms.ps()]), cpu_seconds(children), time.monotonic()
            while (now := time.monotonic()) < t1:
                progress.update(f"viewers: {viewers} {protocol}", now - t0, seconds)
                time.sleep(min(0.25, max(0.0, t1 - now)))
            s1, c1, w1 = cpu_seconds([site.vms.ps()]), cpu_seconds(children), time.monotonic()
            m1 = site.vms.metrics(METRICS)
            results = [json.loads(g.line(1, 60) or "{}") for g in gens]
            for g in gens:
                g.process.wait(30)
        finally:
            for g in gens:
                g.stop()
    arrays = {name: array.array(code) for name, code in ARRAYS.items()}
    offset = 0
    for i, size in enumerate(sizes):
        for name, values in arrays.items():
            with open(f"{out}-{i}.{name}", "rb") as f:
                part = array.array(values.typecode, f.read())
            if name == "viewers":  # numbered from 0 in each process
                part = array.array(values.typecode, (v + offset for v in part))
            values.extend(part)
        offset += size
    return _step_figures(protocol, viewers, processes, results, arrays, direct, (t0, t1),
                         (s1 - s0, c1 - c0, w1 - w0), _lost(m0, m1),
                         _metrics_delta(m0, m1, "vms_camera_frames_total"))  # fmt: skip


def _keys(direct: DirectClient, by_stamp: bool) -> list[int | None]:
    """The direct client's frames' keys, as a viewer of the protocol knows them."""
    if not by_stamp:
        return [a.key for a in direct.arrivals]
    return [None if a.captured_ms is None else a.captured_ms & STAMP_MASK for a in direct.arrivals]


def _bytes_ratios(
    arrays: dict[str, array.array[Any]], direct: DirectClient, by_stamp: bool
) -> list[float]:
    """Per viewer: the bytes it received after its first fragment in the window, over the
    bytes the camera sent for the frames those fragments cover (the frames after the first
    fragment's last, up to the last fragment's last). A viewer skipped ahead, or missing
    fragments, gets less than 1; fMP4 headers put a whole stream a little over 1. A WebRTC
    viewer's frames are counted instead of bytes (``by_stamp``)."""
    index = {k: n for n, k in enumerate(_keys(direct, by_stamp)) if k is not None}
    cumulative = [0]
    for a in direct.arrivals:
        cumulative.append(cumulative[-1] + (1 if by_stamp else a.size))
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    got: dict[int, int] = {}
    for key, viewer, size in zip(arrays["keys"], arrays["viewers"], arrays["sizes"], strict=True):
        n = index.get(key)
        if n is None:
            continue
        if viewer not in first:
            first[viewer], got[viewer] = n, 0
        else:
            got[viewer] += 1 if by_stamp else size
        last[viewer] = n
    ratios = []
    for viewer, n0 in first.items():
        expected = cumulative[last[viewer] + 1] - cumulative[n0 + 1]
        ratios.append(got[viewer] / expected if expected > 0 else 0.0)
    return ratios


def _step_figures(
    protocol: str, viewers: int, processes: int, results: list[dict[str, Any]],
    arrays: dict[str, array.array[Any]], direct: DirectClient, window: tuple[float, float],
    cpu: tuple[float, float, float], lost: int, received: int,
) -> dict[str, Any]:  # fmt: skip
    t0, t1 = window
    by_stamp = protocol == "webrtc"
    arrived = {
        k: a.monotonic for k, a in zip(_keys(direct, by_stamp), direct.arrivals, strict=True)
    }
    in_window = [a for a in direct.arrivals if t0 <= a.monotonic <= t1]
    stream_bytes = sum(a.size for a in in_window)
    keys, times = arrays["keys"], arrays["times"]
    added = [1000 * (t - arrived[k]) for k, t in zip(keys, times, strict=True) if k in arrived]
    per_viewer = [v for r in results for v in r.get("viewers", [])]
    ratios = _bytes_ratios(arrays, direct, by_stamp)
    ratios += [0.0] * (viewers - len(ratios))  # a viewer with nothing matched got nothing
    dropped_out = sum(1 for v in per_viewer if v["lost_in_window"])
    server_s, load_s, elapsed = cpu
    delay = spread(added, 1)
    ok = (
        len(per_viewer) == viewers
        and dropped_out == 0
        and min(ratios) >= TARGET["bytes_ratio_min"]
        and delay["p95"] is not None and delay["p95"] <= TARGET["added_p95_ms_max"]
        and lost == 0
    )  # fmt: skip
    return {
        "viewers": viewers,
        "ok": ok,
        "load_processes": processes,
        "seconds": round(elapsed, 2),
        "added_ms": delay,
        "fragments": len(keys),
        "fragments_unmatched": len(keys) - len(added),
        "stream_kbps": round(stream_bytes * 8 / (t1 - t0) / 1000),
        "bytes_per_viewer": None if by_stamp else spread([v["bytes"] for v in per_viewer], 0),
        ("frames_ratio" if by_stamp else "bytes_ratio"): {
            "min": round(min(ratios), 3),
            **spread(ratios, 3),
        },
        "viewers_disconnected": dropped_out,
        "disconnect_examples": [v["texts"] for v in per_viewer if v["texts"]][:2],
        "server_cpu_pct": round(server_s / elapsed * 100, 1),
        "load_cpu_pct": round(load_s / elapsed * 100, 1),
        "frames_received_by_server": received,
        "frames_lost": lost,
    }


def _baseline(site: LiveSite, seconds: float) -> float:
    """The server's CPU % with no viewer (recording the camera)."""
    s0, w0 = cpu_seconds([site.vms.ps()]), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds([site.vms.ps()]) - s0) / (time.monotonic() - w0) * 100


def _available(site: LiveSite, protocol: str) -> str | None:
    """None when the server serves ``protocol``, else why not."""
    headers = site.vms.headers()
    if protocol == "mse":
        status = handshake(site.base, f"{ROUTES['mse']}?stream=main", headers)
        return None if " 101 " in status + " " else status
    if protocol == "webrtc":
        # A malformed offer: 400 where the route exists.
        sdp = {**headers, "Content-Type": "application/sdp"}
        url = f"{site.base}{ROUTES['webrtc']}?stream=main"
        r = httpx.post(url, content=b"v=0\r\n", headers=sdp, timeout=30)
        return None if r.status_code == 400 else f"HTTP {r.status_code}: {r.text[:200]}"
    r = httpx.get(f"{site.base}{ROUTES['llhls']}?stream=main", headers=headers, timeout=30)
    return None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"


def _summary(steps: list[dict[str, Any]], idle_pct: float) -> dict[str, Any]:
    """One protocol's ramp: the most viewers that met the target, and CPU per viewer."""
    passed = [s for s in steps if s["ok"]]
    best = passed[-1] if passed else None
    # CPU per viewer from the largest step that ran whole (the most viewers, the least noise).
    ran = [s for s in steps if "server_cpu_pct" in s]
    ref = ran[-1] if ran else None
    per_viewer = None
    if ref is not None and ref["server_cpu_pct"] > idle_pct:
        per_viewer = round((ref["server_cpu_pct"] - idle_pct) / ref["viewers"], 4)
    return {
        "available": True,
        "max_viewers_meeting_target": best["viewers"] if best else 0,
        "added_ms_at_max": best["added_ms"] if best else None,
        "server_cpu_pct_per_viewer": per_viewer,
        "viewers_per_core": round(100 / per_viewer) if per_viewer else None,
        "projected_viewers_16_cores": round(PROJECTED_CORES * 100 / per_viewer)
        if per_viewer
        else None,
        "load_cpu_pct_per_viewer": round(ref["load_cpu_pct"] / ref["viewers"], 4) if ref else None,
        "steps": steps,
    }


def run(args: argparse.Namespace, progress: Progress) -> Result:
    quick = bool(args.quick)
    seconds = float(args.seconds or (5 if quick else 20))
    if getattr(args, "viewers", None):
        steps = [int(x) for x in str(args.viewers).split(",") if x.strip()]
    else:
        steps = [100] if quick else [100, 250, 500, 1000]
    names = list(ROUTES)
    if getattr(args, "protocols", None):
        names = [n.strip() for n in args.protocols.split(",") if n.strip()]
        unknown = sorted(set(names) - set(ROUTES))
        if unknown:
            raise SystemExit(f"vms bench viewers: unknown protocol(s) {', '.join(unknown)}")
    protocols: dict[str, Any] = {}
    with workdir("viewers") as tmp_name:
        tmp = Path(tmp_name)
        with (
            live_site(tmp, progress, width=WIDTH, height=HEIGHT, kbps=KBPS) as site,
            DirectClient(site.cam.url) as direct,
        ):
            direct.wait_frames(25, 30)
            idle_pct = _baseline(site, 2.0 if quick else 5.0)
            m0 = site.vms.metrics(METRICS)
            for name in names:
                why = _available(site, name)
                if why is not None:
                    protocols[name] = {"available": False, "reason": why}
                    continue
                ramp: list[dict[str, Any]] = []
                ladder = steps
                if name == "webrtc" and not getattr(args, "viewers", None):
                    ladder = WEBRTC_STEPS["quick" if quick else "full"]
                for n in ladder:
                    ramp.append(_step(site, direct, name, n, seconds, tmp, progress))
                    if not ramp[-1]["ok"] and name in TARGETED:
                        break
                protocols[name] = _summary(ramp, idle_pct)
            m1 = site.vms.metrics(METRICS)
            alive = site.vms.alive()
        disk = _catalog_frames(tmp / "data" / "catalog.db", [CAMERA])
        camera = [a.wall_ms - a.captured_ms for a in direct.arrivals if a.captured_ms is not None]
    figures: dict[str, Any] = {
        "stream": {"width": WIDTH, "height": HEIGHT, "fps": 25, "kbps": KBPS},
        "seconds_per_step": seconds,
        "protocols": protocols,
        "server_idle_cpu_pct": round(idle_pct, 1),
        "camera_delay_ms": spread(camera, 1),
        "frames_lost": _lost(m0, m1),
        "recorded_frames_lost": disk["lost"],
        "recorded_gaps": disk["gaps"],
        "server_alive_at_end": alive,
    }
    goal = max(steps) if quick else TARGET["viewers"]
    ok = (
        all(protocols.get(n, {}).get("max_viewers_meeting_target", 0) >= goal for n in TARGETED)
        and figures["frames_lost"] == 0
        and alive
    )  # fmt: skip
    target: dict[str, Any] = dict(TARGET)
    target["note"] = (
        "MSE and LL-HLS each: the largest step where every viewer got >= 95 % of the stream's "
        "bytes and stayed connected, server-added delay P95 <= 100 ms and no frame lost; the "
        "projection to 16 cores scales the server's CPU per viewer linearly (one server "
        "process runs one event loop: it needs one process per core to get there). WebRTC "
        "viewers (aiortc clients, which decode) are counted per core, not held to the target"
    )
    if quick:
        target["note"] += f"; --quick ramps to {max(steps)} viewers, the target is 1000"
    return envelope("viewers", quick, figures, None, None, ok, target)
