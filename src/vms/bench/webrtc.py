"""WebRTC viewers per core: the server's CPU for each WHEP viewer of one camera stream.

The server is ``python -m vms serve`` in its own process, recording nothing, with one stand-in
camera (1080p25 H.264 of the "snow" pattern, which fills its 2 Mbit/s). This process is the
load: aiortc WHEP clients that receive every RTP packet but decode nothing (their receivers'
decoder is replaced by a counter of the frames and bytes they assembled, in this process only:
the server's work is the same, the clients' CPU stays small). CPU comes from the operating
system (user + system): over a window with no viewer (the camera's ingest alone), then over the
same window with each number of viewers asked for; the CPU a viewer costs is the difference
divided by the viewers. Each viewer must receive at least 95 % of the frames the server
received from the camera in the window.

    python -m vms.bench.webrtc [--viewers 1,5,10] [--seconds 10] [--width 1920 --height 1080]
                               [--kbps 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from vms.bench import VmsProcess, cpu_seconds, free_port, workdir, write_config
from vms.bench.report import Progress, Result, emit, envelope
from vms.standin import StandinCamera

FPS = 25
# "snow" is the one test pattern that really fills 2 Mbit/s at 1080p ("ball" gives ~150 kbit/s).
PATTERN = "snow"
MIN_FRAMES = 0.95  # of the frames sent in the window, per viewer


class _Counter:
    """A receiver's decoder that counts the frames it is given and decodes none."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def decode(self, encoded_frame: Any) -> list[Any]:
        self.frames += 1
        self.bytes += len(encoded_frame.data)
        return []


def _no_decoding() -> list[_Counter]:
    import aiortc.rtcrtpreceiver

    made: list[_Counter] = []

    def get_decoder(codec: Any) -> _Counter:
        made.append(_Counter())
        return made[-1]

    aiortc.rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[assignment]
    return made


class Viewer:
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.resource: str | None = None

    async def open(self, http: httpx.AsyncClient) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        r = await http.post(
            self.url,
            content=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", **self.headers},
        )
        if r.status_code != 201:
            raise RuntimeError(f"WHEP answered {r.status_code}: {r.text[:300]}")
        self.resource = r.headers["location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))

    async def close(self, http: httpx.AsyncClient, base: str) -> None:
        if self.resource is not None:
            await http.delete(base + self.resource, headers=self.headers)
        await self.pc.close()


_CLOSED = re.compile(r"WebRTC viewer \S+ of cam closed .*: \d+ packets sent, (\d+) dropped")


def _dropped(vms: VmsProcess) -> int:
    """Packets the server's WebRTC sessions dropped (skipping to a keyframe), as they logged
    when they closed."""
    return sum(int(m[1]) for m in _CLOSED.finditer(vms.log_path.read_text(errors="replace")))


def _camera_frames(vms: VmsProcess) -> int:
    """Video frames the server has received from the camera so far."""
    return int(vms.metrics({"vms_camera_frames_total"})["vms_camera_frames_total"]["cam"])


async def _window(
    vms: VmsProcess, viewers: list[Viewer], decoders: list[_Counter], seconds: float
) -> dict[str, Any]:
    server, me = vms.ps(), psutil.Process()
    camera0 = await asyncio.to_thread(_camera_frames, vms)
    frames0 = [d.frames for d in decoders]
    bytes0 = sum(d.bytes for d in decoders)
    cpu0, mine0, t0 = cpu_seconds([server]), cpu_seconds([me]), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, mine1, t1 = cpu_seconds([server]), cpu_seconds([me]), time.monotonic()
    wall = t1 - t0
    frames = [d.frames - f for d, f in zip(decoders, frames0, strict=True)]
    sent = await asyncio.to_thread(_camera_frames, vms) - camera0
    size = sum(d.bytes for d in decoders) - bytes0
    return {
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 2),
        "clients_cpu_pct": round(100 * (mine1 - mine0) / wall, 2),
        "camera_fps": round(sent / wall, 1),
        "frames_min_pct": round(100 * min(frames) / sent, 1) if frames and sent else None,
        "kbit_s_per_viewer": round(8 * size / wall / 1000 / len(viewers)) if viewers else None,
    }


async def _measure(
    vms: VmsProcess, counts: list[int], seconds: float, progress: Progress
) -> dict[str, Any]:
    decoders = _no_decoding()
    url = vms.base + "/api/v1/cameras/cam/whep"
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        progress.update("no viewer", 0, 1)
        out["0"] = await _window(vms, [], [], seconds)
        for n in counts:
            progress.update(f"{n} viewers", 0, 1)
            viewers = [Viewer(url, vms.headers()) for _ in range(n)]
            before = len(decoders)
            for v in viewers:
                await v.open(http)
            deadline = time.monotonic() + 30
            while len(decoders) < before + n or any(d.frames < FPS for d in decoders[before:]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{n} viewers: not every one received a second of video")
                await asyncio.sleep(0.1)
            out[str(n)] = await _window(vms, viewers, decoders[before:], seconds)
            for v in viewers:
                await v.close(http, vms.base)
            await asyncio.sleep(1)  # the sessions end (and log what they sent) before the next
            out[str(n)]["server_dropped_packets"] = _dropped(vms) - sum(
                w.get("server_dropped_packets", 0) for w in out.values()
            )
    return out


def run(args: argparse.Namespace, progress: Progress) -> Result:
    counts = [int(n) for n in args.viewers.split(",")]
    with (
        workdir("webrtc") as tmp,
        StandinCamera(
            width=args.width,
            height=args.height,
            fps=FPS,
            bitrate_kbps=args.kbps,
            keyint=2 * FPS,
            pattern=PATTERN,
        ) as cam,
    ):
        port = free_port()
        path = write_config(
            Path(tmp), port=port, cameras=[("cam", cam.url)], segment_seconds=60, log_level="info"
        )
        cfg = yaml.safe_load(path.read_text())
        cfg["cameras"][0]["record"] = "off"
        cfg["live"] = {"webrtc_max_sessions": max(counts) + 1}
        path.write_text(yaml.safe_dump(cfg))
        with VmsProcess(path, port, Path(tmp) / "vms.log") as vms:
            vms.wait_http()
            vms.wait_online(1, 30)
            time.sleep(2)  # past the start's own work
            windows = asyncio.run(_measure(vms, counts, args.seconds, progress))
    progress.done()
    base = windows["0"]["server_cpu_pct"]
    # Per viewer, and per viewer and Mbit/s: the stand-in's frame rate (so the stream's bit
    # rate) sags when the machine is busy, and a viewer's cost follows its packets.
    per = {n: round((w["server_cpu_pct"] - base) / int(n), 2) for n, w in windows.items()
           if n != "0"}  # fmt: skip
    per_mbit = {n: round(per[n] / (w["kbit_s_per_viewer"] / 1000), 2) for n, w in windows.items()
                if n != "0" and w["kbit_s_per_viewer"]}  # fmt: skip
    most = str(max(counts))
    at_rate = per_mbit.get(most, 0) * args.kbps / 1000
    figures = {
        "stream": f"{args.width}x{args.height}@{FPS} {args.kbps} kbit/s H.264",
        "seconds": args.seconds,
        "windows": windows,
        "cpu_pct_per_viewer": per,
        "cpu_pct_per_viewer_mbit_s": per_mbit,
        f"cpu_pct_per_viewer_at_{args.kbps}_kbit_s": round(at_rate, 2),
        "viewers_per_core": round(100 / at_rate) if at_rate > 0 else None,
    }
    ok = all(
        w["frames_min_pct"] is None or w["frames_min_pct"] >= 100 * MIN_FRAMES
        for w in windows.values()
    )
    return envelope(
        "webrtc",
        False,
        figures,
        None,
        None,
        ok,
        {"frames_received_per_viewer_pct": 100 * MIN_FRAMES},
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vms.bench.webrtc")
    p.add_argument("--viewers", default="1,5,10", help="viewer counts, one window each")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--kbps", type=int, default=2000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args, Progress(enabled=not args.json))
    if args.json:
        print(json.dumps(result))
    else:
        emit(result, False)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
