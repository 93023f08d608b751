"""``vms bench live``: glass-to-glass latency of live view, per protocol, in a real browser.

The camera is the stamped stand-in (:mod:`vms.standin.stamp`): 1280x720 at 25 fps and
2 Mbit/s (640x360 at 1 Mbit/s with ``--quick``), H.264 encoded live (x264 zerolatency, no
B-frames), each frame carrying the wall clock of the moment it was drawn. ``python -m vms
serve`` records it and serves it live.

For each protocol (MSE over WebSocket, WebRTC through WHEP, LL-HLS), headless Chromium opens a
bench page on the server's origin (in place of its ``/healthz`` answer) that loads the player
page's protocol module (``/live/static/{mse,whep,llhls}.js``, each registering
``window.vmsPlayers[name]``) and plays the camera's main stream with media tokens. At every
``requestVideoFrameCallback`` the page reads the stamp back from the shown frame (``stamp.js``,
through a canvas) and notes when the frame is displayed (``performance.timeOrigin +
expectedDisplayTime``): glass-to-glass is that minus the stamp. Chromium, the camera and the
server share one machine, hence one clock.

Beside the browser, :class:`~vms.bench.direct.DirectClient` watches the camera directly for the
whole run (RTSP over TCP, each frame decoded as soon as its last packet arrives): the camera's
own delay (encode + RTSP on loopback), over each protocol's window. The same frame, recognised
by its stamp, arrived there at some instant; ``added`` is the display time minus that instant:
what the VMS and the browser add to what the camera costs anyway.

A protocol whose module the server does not serve (not built yet) is reported as not available;
the run goes on with the others.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

from vms.bench import browser as browser_mod
from vms.bench import cpu_seconds, workdir
from vms.bench.direct import DirectClient
from vms.bench.live_site import LiveSite, live_site
from vms.bench.report import Progress, Result, envelope, spread
from vms.standin import stamp

# The camera: a main stream; --quick, on a small machine, a lighter one (the stand-in draws
# and encodes it, the direct client and Chromium decode it, all on the same cores).
FULL_SIZE = (1280, 720, 2000)
QUICK_SIZE = (640, 360, 1000)
# The player page's protocol modules, and what each needs loaded before it.
MODULES = {
    "webrtc": ["whep.js"],
    "mse": ["mse.js"],
    "llhls": ["vendor/hls.min.js", "llhls.js"],
}
TARGET = {
    "webrtc_p95_ms_max": 150,
    "mse_p95_ms_max": 300,
    "llhls_p95_ms_max": 1500,
    "webrtc_added_p95_ms_max": 100,
}
FIRST_FRAME_TIMEOUT_S = 30

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>vms bench live</title></head>
<body style="margin:0;background:#000">
<video id="v" muted autoplay playsinline style="width:1280px;height:720px"></video>
<script>
window.vmsPlayers = window.vmsPlayers || {};
window.bench = {samples: [], unreadable: 0, callbacks: 0, errors: [], states: [], stop: null};
window.addEventListener('error', (e) => bench.errors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => bench.errors.push(String(e.reason)));
bench.load = (src) => new Promise((resolve) => {
  const s = document.createElement('script');
  s.src = src;
  s.onload = () => resolve(true);
  s.onerror = () => resolve(false);
  document.head.appendChild(s);
});
bench.reset = () => {
  const q = document.getElementById('v').getVideoPlaybackQuality();
  bench.samples = []; bench.unreadable = 0; bench.callbacks = 0;
  bench.quality0 = [q.totalVideoFrames, q.droppedVideoFrames];
};
bench.report = () => {
  const q = document.getElementById('v').getVideoPlaybackQuality();
  return {samples: bench.samples, unreadable: bench.unreadable, callbacks: bench.callbacks,
          errors: bench.errors.slice(0, 5), states: bench.states.slice(-5),
          decoded: q.totalVideoFrames - bench.quality0[0],
          dropped: q.droppedVideoFrames - bench.quality0[1]};
};
bench.start = async (name, options) => {
  const video = document.getElementById('v');
  bench.quality0 = [0, 0];
  const each = (now, meta) => {
    bench.callbacks++;
    const value = window.vmsStamp.read(video);
    if (value === null) bench.unreadable++;
    else {
      const wall = Date.now();
      bench.samples.push([window.vmsStamp.captureMs(value, wall),
                          performance.timeOrigin + meta.expectedDisplayTime,
                          performance.timeOrigin + now]);
    }
    video.requestVideoFrameCallback(each);
  };
  video.requestVideoFrameCallback(each);
  // A fresh media token whenever the player asks (they live a minute), and one to begin with.
  const mediaToken = async (action) => {
    const r = await fetch('/api/v1/auth/media-token', {method: 'POST',
      headers: {'Authorization': 'Bearer ' + options.bearer, 'Content-Type': 'application/json'},
      body: JSON.stringify({camera_id: options.camera, action: action || 'live'})});
    if (!r.ok) throw new Error('media token: HTTP ' + r.status);
    return (await r.json()).token;
  };
  const onState = (state, detail) => bench.states.push([Date.now(), state, detail || null]);
  bench.stop = await window.vmsPlayers[name](video, {camera: options.camera,
    stream: options.stream, base: location.origin, token: await mediaToken('live'),
    mediaToken, onState, onLatency: () => {}});
  video.play().catch(() => {});
  return true;
};
</script></body></html>"""


def _stamp_js() -> str:
    return Path(stamp.__file__).with_name("stamp.js").read_text(encoding="utf-8")


def _measure(
    site: LiveSite, browser: Any, name: str, seconds: float, warmup: float, progress: Progress
) -> dict[str, Any]:
    """One protocol in a fresh page: samples of ``seconds`` after ``warmup`` from the first
    stamped frame shown."""
    # The page must come from the server itself: Chromium's local network access checks
    # refuse a WebSocket to 127.0.0.1 from a page Playwright made up (Page.route), which has
    # no address. So a real answer of the server's (its health) is replaced by the bench page,
    # whose inline scripts its CSP would refuse: bypass_csp.
    context = browser.new_context(viewport={"width": 1280, "height": 720}, bypass_csp=True)
    page = context.new_page()
    try:
        page.goto(f"{site.base}/healthz")
        page.set_content(PAGE)
        page.add_script_tag(content=_stamp_js())
        for module in MODULES[name]:
            if not page.evaluate("(src) => bench.load(src)", f"/live/static/{module}"):
                if module.startswith("vendor/"):
                    continue  # the protocol module may bring its own
                return {"available": False, "reason": f"/live/static/{module} is not served"}
        if not page.evaluate("(n) => typeof window.vmsPlayers[n] === 'function'", name):
            return {"available": False, "reason": f"no window.vmsPlayers.{name}"}
        options = {"camera": site.camera, "stream": "main", "bearer": site.bearer}
        progress.update(f"live: {name} first frame", 0, 1)
        t0 = time.monotonic()
        page.evaluate("([n, o]) => bench.start(n, o)", [name, options])
        try:
            page.wait_for_function("() => bench.samples.length > 0",
                                   timeout=FIRST_FRAME_TIMEOUT_S * 1000)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - what the page saw says more than a timeout
            seen = page.evaluate("() => bench.report()")
            raise RuntimeError(
                f"no stamped frame in {FIRST_FRAME_TIMEOUT_S} s: {type(e).__name__}; states "
                f"{seen['states']}, errors {seen['errors']}, {seen['callbacks']} frames shown, "
                f"{seen['unreadable']} without a readable stamp"
            ) from None
        first_frame_s = time.monotonic() - t0
        end = time.monotonic() + warmup
        while (now := time.monotonic()) < end:
            progress.update(f"live: {name} warm-up", warmup - (end - now), warmup)
            time.sleep(min(0.25, end - now))
        page.evaluate("() => bench.reset()")
        cpu0, w0, wall0 = cpu_seconds([site.vms.ps()]), time.monotonic(), time.time() * 1000
        end = w0 + seconds
        while (now := time.monotonic()) < end:
            progress.update(f"live: {name} measuring", seconds - (end - now), seconds)
            time.sleep(min(0.25, end - now))
        report = page.evaluate("() => bench.report()")
        cpu = cpu_seconds([site.vms.ps()]) - cpu0
        elapsed = time.monotonic() - w0
        with contextlib.suppress(Exception):  # a player that fails to stop is not measured
            page.evaluate("async () => { if (bench.stop) await bench.stop(); }")
        report.update(
            available=True,
            first_frame_s=round(first_frame_s, 3),
            window_ms=[wall0, time.time() * 1000],
            seconds=round(elapsed, 2),
            server_cpu_pct=round(cpu / elapsed * 100, 1),
        )
        return report
    except Exception as e:  # noqa: BLE001 - one protocol failing is reported, the others run
        text = str(e).splitlines()[0][:600] if str(e) else type(e).__name__
        return {"available": True, "failed": f"{type(e).__name__}: {text}"}
    finally:
        context.close()


def _figures(report: dict[str, Any], direct: DirectClient) -> dict[str, Any]:
    """A protocol's figures from its page's samples and the direct client's arrivals."""
    if not report.get("available") or "failed" in report:
        return {k: v for k, v in report.items() if k in ("available", "reason", "failed")}
    arrived = {a.captured_ms: a.wall_ms for a in direct.arrivals if a.captured_ms is not None}
    shown: dict[int, float] = {}
    for captured, displayed, _callback in report["samples"]:
        shown.setdefault(int(captured), displayed)  # a frame seen twice: its first showing
    glass = [d - c for c, d in shown.items()]
    start, end = report["window_ms"]
    camera = [a.wall_ms - a.captured_ms for a in direct.arrivals
              if a.captured_ms is not None and start <= a.wall_ms <= end]  # fmt: skip
    added = [d - arrived[c] for c, d in shown.items() if c in arrived]
    seconds = report["seconds"]
    return {
        "available": True,
        "frames_shown": len(shown),
        "fps_shown": round(len(shown) / seconds, 2) if seconds else None,
        "frames_unreadable": report["unreadable"],
        "frames_decoded": report["decoded"],
        "frames_dropped": report["dropped"],
        "first_frame_s": report["first_frame_s"],
        "glass_to_glass_ms": spread(glass, 1),
        "camera_delay_ms": spread(camera, 1),
        "added_ms": spread(added, 1),
        "added_frames_matched": len(added),
        "server_cpu_pct": report["server_cpu_pct"],
        "page_errors": report["errors"],
        "player_states": [s[1] for s in report["states"]],
    }


def run(args: argparse.Namespace, progress: Progress) -> Result:
    quick = bool(args.quick)
    seconds = float(args.seconds or (5 if quick else 20))
    warmup = 0.5 if quick else 3.0
    names = list(MODULES)
    if getattr(args, "protocols", None):
        names = [n.strip() for n in args.protocols.split(",") if n.strip()]
        unknown = sorted(set(names) - set(MODULES))
        if unknown:
            raise SystemExit(f"vms bench live: unknown protocol(s) {', '.join(unknown)}")
    protocols: dict[str, Any] = {}
    width, height, kbps = QUICK_SIZE if quick else FULL_SIZE
    with workdir("live") as tmp_name:
        tmp = Path(tmp_name)
        with (
            live_site(tmp, progress, width=width, height=height, kbps=kbps) as site,
            DirectClient(site.cam.url) as direct,
            browser_mod.chromium() as browser,
        ):
            direct.wait_frames(25, 30)
            for name in names:
                report = _measure(site, browser, name, seconds, warmup, progress)
                protocols[name] = _figures(report, direct)
            alive = site.vms.alive()
    span = (direct.arrivals[-1].monotonic - direct.arrivals[0].monotonic) or 1.0
    measured = round(sum(a.size for a in direct.arrivals) * 8 / span / 1000)
    figures: dict[str, Any] = {
        "seconds_per_protocol": seconds,
        "camera": {
            "width": width,
            "height": height,
            "fps": 25,
            "kbps": kbps,
            "measured_kbps": measured,
        },
        "direct_frames": len(direct.arrivals),
        "direct_unreadable": direct.unreadable,
        "protocols": protocols,
        "server_alive_at_end": alive,
    }
    return envelope("live", quick, figures, None, None, _ok(protocols, alive), _target(quick))


def _p95(protocol: dict[str, Any], key: str) -> float | None:
    value = protocol.get(key, {}).get("p95")
    return None if value is None else float(value)


def _ok(protocols: dict[str, Any], alive: bool) -> bool:
    limits = {"webrtc": "webrtc_p95_ms_max", "mse": "mse_p95_ms_max", "llhls": "llhls_p95_ms_max"}
    for name, key in limits.items():
        p = protocols.get(name)
        p95 = None if p is None else _p95(p, "glass_to_glass_ms")
        if p95 is None or p95 > TARGET[key]:
            return False
    added = _p95(protocols["webrtc"], "added_ms")
    return alive and added is not None and added <= TARGET["webrtc_added_p95_ms_max"]


def _target(quick: bool) -> dict[str, Any]:
    target: dict[str, Any] = dict(TARGET)
    target["note"] = (
        "P95 glass-to-glass on loopback per protocol; added = display time minus the same "
        "frame's arrival at a direct RTSP client. A protocol not available fails the target."
    )
    if quick:
        target["note"] += " --quick measures 5 s per protocol instead of 20."
    return target
