"""``vms bench recording``: N cameras recorded by one VMS process against the ffmpeg peer.

One stand-in camera (1080p25 H.264, 2 Mbit/s, keyint 50; its RTSP media is shared, so one
encode serves every client) and N VMS cameras pointing at it. The VMS runs as a separate
process so its CPU (user + system, from the OS) and RSS are measured from outside. RSS per
camera subtracts the RSS of the same server with no cameras, measured first.

Lost frames come from the catalog after a clean stop: per segment, the samples indexed against
25 fps × its media duration (a frame lost on the way leaves a longer dts delta, so the duration
still covers it), plus the wall-clock gaps between a camera's segments. The peer is one
``ffmpeg -c copy -f segment`` process per camera against the same camera, measured after ours
(not at the same time), and its frames are counted by demuxing its files. The peer records a
sample of the cameras (40 by default, ``--peer-cameras``): its cost is one process per camera,
so CPU and memory per camera do not depend on how many run, while the stand-in (GStreamer's RTSP
server) stopped accepting ffmpeg clients after 60 of 80 on a 2-core machine.

CPU is also reported per 30 s window of the run and for the steady state (from 60 s on, once
every camera has rotated: the first segments are staggered over up to one segment length), since
the cost of the first minute (no rotation, no writeback yet) is not the cost of the next hours.
``--slow-root`` puts a tenth of the cameras on a root whose writes and syncs take 2 s each: the
cameras on the other root must lose nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import psutil

from vms.bench import (
    VmsProcess,
    cpu_seconds,
    free_port,
    rss_bytes,
    workdir,
    write_config,
)
from vms.bench.report import Progress, Result, envelope, ratios, spread
from vms.catalog.store import Catalog
from vms.recording.segment import FragmentIndex
from vms.standin import StandinCamera

FPS = 25
MIB = 1 << 20
# "snow" is the one test pattern that really fills 2 Mbit/s at 1080p ("ball" gives ~150 kbit/s).
PATTERN = "snow"
SCRAPE_INTERVAL_S = 5.0
TARGET = {
    "cameras": 200,
    "frames_lost": 0,
    "cpu_per_camera_ratio_max": round(1 / 3, 4),
    "rss_per_camera_mib_max": 5.0,
}
# A gap between two segments of one camera longer than this is lost time (1.5 frames).
GAP_SLACK_US = 60_000
METRICS = {
    "vms_camera_frames_total",
    "vms_camera_frames_recorded_total",
    "vms_camera_frames_dropped_total",
    "vms_camera_frames_dropped_backlog_total",
    "vms_camera_reconnects_total",
    "vms_camera_packet_to_disk_seconds",
    "vms_camera_segment_sync_seconds_count",
    "vms_camera_segment_sync_seconds_sum",
}
WINDOW_S = 30.0
STEADY_FROM_S = 60.0


def run(args: argparse.Namespace, progress: Progress) -> Result:
    quick = bool(args.quick)
    n = int(args.cameras or (10 if quick else 200))
    # Full runs last long enough for every camera to rotate at least twice (60 s segments).
    seconds = float(args.seconds or (12 if quick else 150))
    slow = bool(getattr(args, "slow_root", False))
    warmup = 3.0 if quick else 5.0
    with (
        workdir("recording") as tmp_name,
        StandinCamera(
            width=1920, height=1080, fps=FPS, bitrate_kbps=2000, keyint=50, pattern=PATTERN
        ) as cam,
    ):
        tmp = Path(tmp_name)
        camera_ps = psutil.Process(cam.pid)
        progress.note(f"stand-in camera {cam.url} (pid {cam.pid}); {n} cameras x {seconds:g} s")
        baseline = _baseline_rss(tmp / "baseline", progress)
        ours = _ours(cam, camera_ps, n, seconds, warmup, tmp / "ours", baseline, progress, slow)
        peer = None
        if not args.no_peer and not slow:
            # Each phase starts from a fresh camera, so neither inherits the other's state (a
            # gst-rtsp-server that 200 clients just left has been seen to stop answering new
            # ones, and to abort on a TCP backlog assertion when clients fell behind).
            peer_n = min(n, int(getattr(args, "peer_cameras", None) or PEER_CAMERAS))
            first_error: str | None = None
            # Another try, on another fresh camera, when ffmpeg could not start recording
            # (the first try's error stays in the result).
            for attempt in (1, 2, 3):
                cam.stop()
                cam.start()
                camera_ps = psutil.Process(cam.pid)
                progress.note(f"fresh stand-in camera for the peer: {cam.url}")
                try:
                    peer = _peer(
                        cam, camera_ps, peer_n, seconds, warmup, tmp / f"peer{attempt}",
                        progress, connect_s=40.0 if quick else 120.0,
                    )  # fmt: skip
                except RuntimeError as e:  # our figures stand; say why there is no ratio
                    progress.note(f"peer, try {attempt}: {e}")
                    peer = {"error": str(e)}
                    first_error = first_error or str(e)
                    continue
                peer["camera_restarted"] = ours["camera_error"] is not None
                peer["first_try_error"] = first_error
                break
    ratio = ratios(ours, peer, ["cpu_per_camera_pct", "rss_per_camera_mib"])
    if slow:  # the question is only whether the other root's cameras lost anything
        ok = ours["camera_error"] is None and ours["slow_root"]["fast_frames_lost"] == 0
        return envelope("recording", quick, ours, None, None, ok, TARGET)
    ok = (
        ours["camera_error"] is None
        and (quick or n >= TARGET["cameras"])
        and ours["frames_lost"] == TARGET["frames_lost"]
        and ours["rss_per_camera_mib"] <= TARGET["rss_per_camera_mib_max"]
        and ratio is not None
        and ratio["cpu_per_camera_pct"] is not None
        and ratio["cpu_per_camera_pct"] <= TARGET["cpu_per_camera_ratio_max"]
    )
    return envelope("recording", quick, ours, peer, ratio, ok, TARGET)


def _baseline_rss(tmp: Path, progress: Progress) -> int:
    """RSS of the same server with no cameras, settled for a second."""
    progress.update("baseline: 0-camera server", 0, 1)
    port = free_port()
    tmp.mkdir(parents=True)
    cfg = write_config(tmp, port=port, cameras=[], segment_seconds=60)
    with VmsProcess(cfg, port, tmp / "vms.log") as vms:
        vms.wait_http(60)
        time.sleep(1.0)
        rss = rss_bytes([vms.ps()])
    progress.update("baseline: 0-camera server", 1, 1)
    return rss


def _camera_cpu(camera_ps: psutil.Process, cpu0: float, elapsed: float) -> dict[str, Any]:
    pct = max(0.0, cpu_seconds([camera_ps]) - cpu0) / elapsed * 100
    note = None
    if pct > 80:
        note = f"stand-in camera used {pct:.0f}% of a core: it may be the bottleneck"
    return {"camera_server_cpu_pct": round(pct, 1), "camera_server_note": note}


def _camera_error(cam: StandinCamera) -> str | None:
    if cam.running():
        return None
    tail = [ln for ln in cam.stderr_tail().splitlines() if ln.strip()]
    return "stand-in camera died: " + (tail[-1] if tail else "no message")


def _ours(
    cam: StandinCamera,
    camera_ps: psutil.Process,
    n: int,
    seconds: float,
    warmup: float,
    tmp: Path,
    baseline: int,
    progress: Progress,
    slow: bool = False,
) -> dict[str, Any]:
    url = cam.url
    tmp.mkdir(parents=True)
    port = free_port()
    ids = [f"cam{i:03d}" for i in range(n)]
    slow_ids = ids[: max(1, n // 10)] if slow else []
    roots = {"fast": ids[len(slow_ids) :], "slow": slow_ids} if slow else None
    cfg_path = write_config(
        tmp, port=port, cameras=[(i, url) for i in ids], segment_seconds=60, stagger=True,
        roots=roots,
    )  # fmt: skip
    vms = VmsProcess(cfg_path, port, tmp / "vms.log", "slow" if slow else None).start()
    try:
        vms.wait_http(60)
        vms.wait_online(n, 60 + n * 0.5, progress, "ours: cameras online")
        _sleep_with_bar(warmup, progress, "ours: warm-up")
        proc = vms.ps()
        m0 = vms.metrics(METRICS)
        cpu0, cam0, t0 = cpu_seconds([proc]), cpu_seconds([camera_ps]), time.monotonic()
        delays: list[float] = []
        rss_samples: list[int] = []
        cpu_marks: list[tuple[float, float]] = [(0.0, cpu0)]
        scraped = t0 - SCRAPE_INTERVAL_S  # the first scrape after one second
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(min(1.0, max(0.0, seconds - elapsed)))
            cpu_marks.append((time.monotonic() - t0, cpu_seconds([proc])))
            # A scrape every 5 s, as a Prometheus server would (its cost is in our CPU).
            if time.monotonic() - scraped >= SCRAPE_INTERVAL_S:
                scraped = time.monotonic()
                m = vms.metrics(METRICS)
                delays.extend(m["vms_camera_packet_to_disk_seconds"].values())
            rss_samples.append(rss_bytes([proc]))
            progress.update("ours: measuring", time.monotonic() - t0, seconds)
            if not cam.running():
                break
        m1 = vms.metrics(METRICS)
        reader_round = vms.metrics({"vms_reader_longest_round_seconds"})
        cpu1, t1 = cpu_seconds([proc]), time.monotonic()
        camera = _camera_cpu(camera_ps, cam0, t1 - t0)
        camera["camera_error"] = _camera_error(cam)
        # What one /metrics scrape costs the server: the CPU of three scrapes in a row, less
        # what recording used over the same wall time.
        rate = (cpu1 - cpu0) / max(t1 - t0, 1e-9)
        c0, w0 = cpu_seconds([proc]), time.monotonic()
        for _ in range(3):
            vms.metrics(METRICS)
        scrape_s = max(0.0, cpu_seconds([proc]) - c0 - rate * (time.monotonic() - w0)) / 3
        alive = vms.alive()
    finally:
        progress.update("ours: stopping (SIGTERM)", 0, 1)
        rc = vms.stop(60)
    elapsed = t1 - t0
    cpu_pct = (cpu1 - cpu0) / elapsed * 100
    rss = max(rss_samples) if rss_samples else 0
    received = {c: m1["vms_camera_frames_total"].get(c, 0) - m0["vms_camera_frames_total"].get(c, 0)
                for c in ids}  # fmt: skip
    window_fps = [received[c] / elapsed for c in ids]
    disk = _catalog_frames(tmp / "data" / "catalog.db", ids)
    syncs = sum(m1["vms_camera_segment_sync_seconds_count"].values())
    sync_s = sum(m1["vms_camera_segment_sync_seconds_sum"].values())
    extra: dict[str, Any] = {}
    if slow:
        fast_ids = [c for c in ids if c not in slow_ids]
        fast = _catalog_frames(tmp / "data" / "catalog.db", fast_ids)
        extra["slow_root"] = {
            "slow_cameras": len(slow_ids),
            "delay_per_write_and_sync_s": 2.0,
            "fast_frames_lost": fast["lost"],
            "fast_gaps": fast["gaps"],
            "fast_frames_dropped_backlog": int(
                sum(m1["vms_camera_frames_dropped_backlog_total"].get(c, 0) for c in fast_ids)
            ),
            "slow_frames_dropped_backlog": int(
                sum(m1["vms_camera_frames_dropped_backlog_total"].get(c, 0) for c in slow_ids)
            ),
        }
    return {
        "cameras": n,
        "seconds": round(elapsed, 2),
        "cpu_per_camera_pct": round(cpu_pct / n, 3),
        "cpu_total_pct": round(cpu_pct, 1),
        "cpu_per_camera_pct_by_window": _windows(cpu_marks, n),
        "cpu_per_camera_pct_steady": _window_cpu(cpu_marks, n, STEADY_FROM_S, elapsed),
        "cpu_per_camera_pct_30_90s": _window_cpu(cpu_marks, n, 30.0, 90.0),
        "fdatasync_per_rotation_s": round(sync_s / syncs, 4) if syncs else None,
        "rotations": int(syncs),
        "reader_longest_round_s": reader_round["vms_reader_longest_round_seconds"].get(""),
        "rss_bytes": rss,
        "rss_baseline_bytes": baseline,
        "rss_per_camera_mib": round((rss - baseline) / n / MIB, 3),
        "frames_expected": disk["expected"],
        "frames_recorded": disk["recorded"],
        "frames_lost": disk["lost"],
        "gaps": disk["gaps"],
        "gap_seconds": disk["gap_seconds"],
        "recorded_seconds": disk["covered_seconds"],
        "segments": disk["segments"],
        "window_fps_received": {
            "min": round(min(window_fps), 2),
            "mean": round(sum(window_fps) / n, 2),
        },
        "frames_dropped": int(sum(m1["vms_camera_frames_dropped_total"].values())),
        "reconnects": int(sum(m1["vms_camera_reconnects_total"].values())),
        "packet_to_disk_s": spread(delays),
        **camera,
        "metrics_scrape_cpu_s": round(scrape_s, 4),
        "server_alive_at_end": alive,
        "server_exit_code": rc,
        **extra,
    }


def _window_cpu(marks: list[tuple[float, float]], n: int, start: float, end: float) -> float | None:
    """CPU % of a core per camera between two offsets of the run (None if not covered)."""
    inside = [m for m in marks if start <= m[0] <= end + 0.5]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < (end - start) * 0.8:
        return None
    (ta, ca), (tb, cb) = inside[0], inside[-1]
    return round((cb - ca) / (tb - ta) * 100 / n, 3)


def _windows(marks: list[tuple[float, float]], n: int) -> list[dict[str, Any]]:
    out = []
    start = 0.0
    while start + WINDOW_S <= marks[-1][0] + 0.5:
        pct = _window_cpu(marks, n, start, start + WINDOW_S)
        out.append({"from_s": start, "to_s": start + WINDOW_S, "cpu_per_camera_pct": pct})
        start += WINDOW_S
    return out


def _sleep_with_bar(seconds: float, progress: Progress, phase: str) -> None:
    t0 = time.monotonic()
    while (done := time.monotonic() - t0) < seconds:
        progress.update(phase, done, seconds)
        time.sleep(min(0.5, seconds - done))


def _catalog_frames(db: Path, ids: list[str]) -> dict[str, Any]:
    """Samples indexed vs 25 fps × media duration, and gaps between segments, per camera."""
    catalog = Catalog(f"sqlite:///{db}")
    expected = recorded = lost = gaps = segments = 0
    gap_us = covered_us = 0
    try:
        for cid in ids:
            prev_end: int | None = None
            for seg in catalog.segments(camera_id=cid):
                segments += 1
                index = FragmentIndex.decode(seg.frag_index or b"")
                samples = sum(f.samples for f in index.fragments(0))
                exp = round(index.duration / seg.timescale * FPS) if seg.timescale else 0
                expected += exp
                recorded += samples
                lost += max(0, exp - samples)
                covered_us += seg.end_us - seg.start_us
                if prev_end is not None and seg.start_us - prev_end > GAP_SLACK_US:
                    gaps += 1
                    gap_us += seg.start_us - prev_end
                    lost += round((seg.start_us - prev_end) / 1e6 * FPS)
                prev_end = seg.end_us
    finally:
        catalog.close()
    return {
        "expected": expected,
        "recorded": recorded,
        "lost": lost,
        "gaps": gaps,
        "gap_seconds": round(gap_us / 1e6, 3),
        "covered_seconds": round(covered_us / 1e6, 1),
        "segments": segments,
    }


PEER_CAMERAS = 40  # the peer's sample of the cameras (see the module's docstring)
PEER_WAVE = 20  # ffmpeg processes started (and probing) at a time


def _peer(
    cam: StandinCamera,
    camera_ps: psutil.Process,
    n: int,
    seconds: float,
    warmup: float,
    tmp: Path,
    progress: Progress,
    connect_s: float = 120.0,
) -> dict[str, Any]:
    """One ``ffmpeg -c copy -f segment`` process per camera (how Frigate records)."""
    procs: list[subprocess.Popen[bytes]] = []
    dirs = [tmp / f"cam{i:03d}" for i in range(n)]
    url = cam.url
    logs = tmp / "ffmpeg.log"
    tmp.mkdir(parents=True)
    with open(logs, "ab") as log_file:
        try:

            def spawn(d: Path) -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    [
                        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                        # -timeout (µs): an ffmpeg whose camera went quiet gives up and is
                        # started again instead of waiting forever for its first packet.
                        "-rtsp_transport", "tcp", "-timeout", "10000000", "-i", url,
                        "-c", "copy", "-f", "segment",
                        "-segment_time", "10", "-reset_timestamps", "1", str(d / "%05d.mp4"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                )  # fmt: skip

            # In waves: each ffmpeg decodes ~5 s of 1080p while it probes the stream, and 200
            # probing at once starved a 2-core machine (0 of 200 had written a file after
            # 260 s, even spread 100 ms apart). A wave starts once the previous one records.
            # The first ffmpeg goes alone: the stand-in's gst-rtsp-server (1.22) aborts now and
            # then ("gst_rtsp_media_get_rates: assertion failed") when several ffmpeg PLAYs
            # (each with "Range: npt=0.000-", which seeks the shared media) meet it starting:
            # 1 in 30 fresh cameras with 4 ffmpeg at once under load, 0 in 35 with one first.
            for first in [0, *range(1, n, PEER_WAVE)]:
                for d in dirs[first : 1 if first == 0 else first + PEER_WAVE]:
                    d.mkdir()
                    procs.append(spawn(d))
                    time.sleep(0.05)
                wave = slice(0, len(procs))
                _wait_files(dirs[wave], procs, spawn, connect_s, progress, logs, cam)
            _sleep_with_bar(warmup, progress, "peer: warm-up")
            ps = [psutil.Process(p.pid) for p in procs]
            cpu0, cam0, t0 = cpu_seconds(ps), cpu_seconds([camera_ps]), time.monotonic()
            rss_samples: list[int] = []
            uss = 0
            while (elapsed := time.monotonic() - t0) < seconds:
                time.sleep(min(1.0, max(0.0, seconds - elapsed)))
                rss_samples.append(rss_bytes(ps))
                if not uss:
                    for p in ps:
                        with contextlib.suppress(psutil.Error):
                            uss += p.memory_full_info().uss
                progress.update("peer: measuring", time.monotonic() - t0, seconds)
                if not cam.running():
                    break
            cpu1, t1 = cpu_seconds(ps), time.monotonic()
            camera = _camera_cpu(camera_ps, cam0, t1 - t0)
            camera["camera_error"] = _camera_error(cam)
            alive = sum(1 for p in procs if p.poll() is None)
        finally:
            progress.update("peer: stopping (SIGINT)", 0, 1)
            _stop_all(procs)
    elapsed = t1 - t0
    cpu_pct = (cpu1 - cpu0) / elapsed * 100
    rss = max(rss_samples) if rss_samples else 0
    frames = _count_files(dirs, progress)
    return {
        "cameras": n,
        "seconds": round(elapsed, 2),
        "cpu_per_camera_pct": round(cpu_pct / n, 3),
        "cpu_total_pct": round(cpu_pct, 1),
        "rss_bytes": rss,
        "rss_per_camera_mib": round(rss / n / MIB, 3),
        "uss_per_camera_mib": round(uss / n / MIB, 3),
        "frames_expected": frames["expected"],
        "frames_recorded": frames["recorded"],
        "frames_lost": frames["lost"],
        "recorded_seconds": frames["covered_seconds"],
        "segments": frames["files"],
        "unreadable_files": frames["unreadable"],
        **camera,
        "processes_alive_at_end": alive,
    }


def _wait_files(
    dirs: list[Path],
    procs: list[subprocess.Popen[bytes]],
    spawn: Callable[[Path], subprocess.Popen[bytes]],
    timeout: float,
    progress: Progress,
    log_path: Path,
    cam: StandinCamera,
) -> None:
    """Until every ffmpeg wrote a file. One that gave up first (a camera busy with 200
    handshakes can refuse a few) is started again, as a supervisor would."""
    started = time.monotonic()
    deadline = started + timeout
    ready = 0
    while time.monotonic() < deadline and cam.running():  # a camera that died: say so now
        ready = 0
        for i, d in enumerate(dirs):
            if any(f.stat().st_size > 0 for f in d.iterdir()):
                ready += 1
            elif procs[i].poll() is not None:
                procs[i] = spawn(d)
        progress.update("peer: ffmpeg connected", ready, len(dirs))
        if ready == len(dirs):
            return
        time.sleep(0.2)
    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
    camera = cam.stderr_tail(600).strip().splitlines()[-3:]
    raise RuntimeError(
        f"ffmpeg peer: only {ready}/{len(dirs)} processes wrote a file in "
        f"{time.monotonic() - started:.0f} s; "
        f"ffmpeg said: {' | '.join(tail) or 'nothing'}; "
        f"the camera (running: {cam.running()}) said: {' | '.join(camera) or 'nothing'}"
    )


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)  # ffmpeg finishes the open segment's moov on SIGINT
    deadline = time.monotonic() + 30
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _count_files(dirs: list[Path], progress: Progress) -> dict[str, Any]:
    """Video packets in the peer's files vs 25 fps × each file's pts span."""
    expected = recorded = lost = files = unreadable = 0
    covered = 0.0
    for i, d in enumerate(dirs):
        progress.update("peer: counting frames", i, len(dirs))
        for path in sorted(d.glob("*.mp4")):
            files += 1
            try:
                with av.open(str(path)) as container:
                    stream = container.streams.video[0]
                    pts = [p.pts for p in container.demux(stream) if p.size and p.pts is not None]
                    tb = float(stream.time_base or 0)
            except (av.error.FFmpegError, IndexError):
                unreadable += 1
                continue
            if not pts:
                continue
            span = (max(pts) - min(pts)) * tb + 1 / FPS
            exp = round(span * FPS)
            expected += exp
            recorded += len(pts)
            lost += max(0, exp - len(pts))
            covered += span
    return {
        "expected": expected,
        "recorded": recorded,
        "lost": lost,
        "files": files,
        "unreadable": unreadable,
        "covered_seconds": round(covered, 1),
    }
