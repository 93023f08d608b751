"""The load generator of ``vms bench viewers``: live viewers in a process of its own, so that the
operating system accounts its CPU apart from the server's. ``protocol`` in the job: ``mse``
(the WebSocket of MSE players), ``llhls`` (an LL-HLS player's requests) or ``webrtc`` (aiortc
as a WHEP client).

``python -m vms.bench.viewer_load`` reads one JSON line on stdin (the job: URL, headers, how
many viewers), connects them, prints ``READY`` once every viewer has its first fragment (or
``FAILED <reason>``), then reads ``GO <t0> <t1>``: the measurement window in
``time.monotonic()`` seconds (CLOCK_MONOTONIC: one clock for every process of the machine).
Inside the window it notes each fragment's arrival by its key
(:func:`vms.bench.direct.frame_key`); after it, it writes the arrivals to ``<out>.keys``,
``.times``, ``.viewers`` and ``.sizes`` (arrays: :data:`ARRAYS`), prints one JSON line of
counts per viewer and
exits once its viewers are closed.

The WebSocket client is written for this: a handshake, then frames parsed in
``data_received`` with one copy of each payload, no decoding, pings answered. A general
client library spent more CPU per message than the server under test.

The LL-HLS viewer does what hls.js does without preload hints, on one keep-alive HTTP/1.1
connection: a blocking playlist reload for the next part (``_HLS_msn``/``_HLS_part``), which
the server answers once that part exists, then a request for each part the playlist lists that
it has not fetched yet. Its fragments are the parts.

The WebRTC viewer is aiortc's peer connection, which decodes what it receives (it has no other
way out): a frame is known by its stamp (the capture time, modulo 2**32 ms) instead of a key,
and its size is not counted. Its delay includes aiortc's jitter buffer and its decoding.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import os
import re
import struct
import sys
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

KEY_BYTES = 64  # as vms.bench.direct.KEY_BYTES: the same frame, the same key
# Each arrival inside the window: its fragment's key, when (monotonic), which viewer, its size.
ARRAYS = {"keys": "I", "times": "d", "viewers": "I", "sizes": "I"}
CONNECT_AT_ONCE = 50  # handshakes in flight at a time
READY_TIMEOUT_S = 60.0


class Viewer(asyncio.Protocol):
    """One WebSocket viewer: counts what arrives; inside the window, notes each fragment."""

    def __init__(self, index: int, load: Load) -> None:
        self.index = index
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first_fragment: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.bytes = 0  # fragment bytes inside the window
        self.fragments = 0
        self.inits = 0
        self.texts: list[str] = []  # the JSON messages (init, offline, error), the first few
        self.lost_at: float | None = None  # when the connection ended, if it did

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_at = time.monotonic()
        for f in (self.handshake, self.first_fragment, self.closed):
            if not f.done():
                f.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                self.texts.append(bytes(buf[:400]).decode("latin-1"))
                assert self.transport is not None
                self.transport.close()
                return
            del buf[: end + 4]
            self.upgraded = True
            self.handshake.set_result(None)
        i, n = 0, len(buf)
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1] & 0x7F
            head = 2
            if b1 == 126:
                if n - i < 4:
                    break
                b1, head = (buf[i + 2] << 8) | buf[i + 3], 4
            elif b1 == 127:
                if n - i < 10:
                    break
                b1, head = struct.unpack_from(">Q", buf, i + 2)[0], 10
            if n - i < head + b1:
                break
            self.frame(b0 & 0x0F, buf[i + head : i + head + b1])
            i += head + b1
        if i:
            del buf[:i]

    def frame(self, opcode: int, payload: bytearray) -> None:
        if opcode == 2:  # binary: the init segment, or a fragment
            if self.inits and payload[4:8] == b"moof":
                if self.load.arrived(self.index, payload):
                    self.bytes += len(payload)
                    self.fragments += 1
                if not self.first_fragment.done():
                    self.first_fragment.set_result(None)
        elif opcode == 1:
            text = bytes(payload).decode(errors="replace")
            if text.startswith('{"type":"init"'):
                self.inits += 1
            if len(self.texts) < 4:
                self.texts.append(text[:300])
        elif opcode == 9:  # ping: answer at once, or the server closes us
            self.send(0xA, bytes(payload))
        elif opcode == 8:
            assert self.transport is not None
            self.transport.close()

    def send(self, opcode: int, payload: bytes) -> None:
        """A masked frame (a client must mask); only control frames here, under 126 bytes."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[k % 4] for k, b in enumerate(payload))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        self.send(0x8, struct.pack(">H", 1000))
        if self.transport is not None:
            self.transport.close()


class Load:
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.t0 = float("inf")
        self.t1 = float("-inf")
        self.arrays: dict[str, array.array[Any]] = {
            name: array.array(code) for name, code in ARRAYS.items()
        }
        self.viewers: list[Viewer | HlsViewer | RtcViewer] = []

    def arrived(self, viewer: int, data: bytes | bytearray, key: int | None = None) -> bool:
        """Note a fragment that just arrived (its key from its bytes unless given); True
        when inside the window."""
        now = time.monotonic()
        if not self.t0 <= now <= self.t1:
            return False
        a = self.arrays
        a["keys"].append(zlib.crc32(data[-KEY_BYTES:]) if key is None else key)
        a["times"].append(now)
        a["viewers"].append(viewer)
        a["sizes"].append(len(data))
        return True


_PART = re.compile(r'^#EXT-X-PART:.*URI="([^"]*/parts/(\d+)\.mp4[^"]*)"', re.MULTILINE)
_MAP = re.compile(r'^#EXT-X-MAP:URI="([^"]+)"', re.MULTILINE)


def next_part(playlist: str) -> tuple[int, int]:
    """``(_HLS_msn, _HLS_part)`` of the part after the last one a media playlist lists."""
    msn, index = 0, 0
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PART:"):
            index += 1
        elif line and not line.startswith("#"):  # a segment's URI: the next one begins
            msn, index = msn + 1, 0
    return msn, index


class HlsViewer:
    """One LL-HLS viewer (see the module docstring)."""

    def __init__(self, index: int, load: Load) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self.load = load
        self.first_fragment: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.bytes = 0
        self.fragments = 0
        self.inits = 0
        self.texts: list[str] = []
        self.lost_at: float | None = None
        self.stopping = False
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        parts = urllib.parse.urlsplit(load.job["url"])
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.playlist = parts.path + (f"?{parts.query}" if parts.query else "")
        self.dir = parts.path.rsplit("/", 1)[0] + "/"

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in self.load.job.get("headers", {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None:
            raise ValueError(f"no Content-Length in the answer to {target}")
        return status, await self.reader.readexactly(int(length.group(1)))

    async def run(self) -> None:
        try:
            await self._play()
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            if not self.stopping:
                self.texts.append(f"{type(e).__name__}: {e}"[:300])
                self.lost_at = time.monotonic()
        finally:
            if self.writer is not None:
                self.writer.close()
            for f in (self.first_fragment, self.closed):
                if not f.done():
                    f.set_result(None)

    async def _play(self) -> None:
        status, body = await self.get(self.playlist)
        if status != 200:
            raise ValueError(f"playlist: HTTP {status}: {body[:200]!r}")
        text = body.decode()
        init = _MAP.search(text)
        if init is not None:
            status, _ = await self.get(self.dir + init.group(1))
            self.inits += status == 200
        # Start with the parts to come, as a player joining at the live edge would.
        fetched = max((int(m.group(2)) for m in _PART.finditer(text)), default=-1)
        sep = "&" if "?" in self.playlist else "?"
        while not self.stopping:
            msn, part = next_part(text)
            status, body = await self.get(f"{self.playlist}{sep}_HLS_msn={msn}&_HLS_part={part}")
            if status != 200:
                # Not there in time (503) or too far ahead (400): start again from the edge.
                if len(self.texts) < 4:
                    self.texts.append(f"playlist: HTTP {status}: {body[:120]!r}")
                status, body = await self.get(self.playlist)
                if status != 200:
                    raise ValueError(f"playlist: HTTP {status}: {body[:200]!r}")
            text = body.decode()
            for m in _PART.finditer(text):
                number = int(m.group(2))
                if number <= fetched or self.stopping:
                    continue
                status, data = await self.get(self.dir + m.group(1))
                if status != 200:
                    raise ValueError(f"part {number}: HTTP {status}: {data[:200]!r}")
                fetched = number
                if self.load.arrived(self.index, data):
                    self.bytes += len(data)
                    self.fragments += 1
                if not self.first_fragment.done():
                    self.first_fragment.set_result(None)

    def close(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()


class RtcViewer:
    """One WHEP viewer through aiortc (see the module docstring)."""

    def __init__(self, index: int, load: Load) -> None:
        loop = asyncio.get_running_loop()
        self.index = index
        self.load = load
        self.first_fragment: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.bytes = 0
        self.fragments = 0
        self.inits = 0
        self.texts: list[str] = []
        self.lost_at: float | None = None
        self.stopping = False
        self.pc: Any = None
        self.resource: str | None = None
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from vms.bench.direct import stamp_of

        job = self.load.job
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        track_ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_track(track: Any) -> None:
            if track.kind == "video" and not track_ready.done():
                track_ready.set_result(track)

        pc.on("track", on_track)
        try:
            await pc.setLocalDescription(await pc.createOffer())
            answer, self.resource = await asyncio.to_thread(
                _whep_post, job["url"], job.get("headers", {}), pc.localDescription.sdp
            )
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            track = await asyncio.wait_for(track_ready, READY_TIMEOUT_S)
            self.inits = 1
            while not self.stopping:
                frame = await track.recv()
                value = stamp_of(frame)
                if value is None:
                    continue
                if self.load.arrived(self.index, b"", key=value & 0xFFFFFFFF):
                    self.fragments += 1
                if not self.first_fragment.done():
                    self.first_fragment.set_result(None)
        except Exception as e:  # noqa: BLE001 - aiortc raises its own; the viewer reports it
            if not self.stopping:
                self.texts.append(f"{type(e).__name__}: {e}"[:300])
                self.lost_at = time.monotonic()
        finally:
            for f in (self.first_fragment, self.closed):
                if not f.done():
                    f.set_result(None)

    def close(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()

    async def shut(self) -> None:
        """End the session (DELETE on its resource) and the peer connection."""
        if self.resource is not None:
            with contextlib.suppress(OSError, ValueError):
                await asyncio.to_thread(_whep_delete, self.resource,
                                        self.load.job.get("headers", {}))  # fmt: skip
        if self.pc is not None:
            await self.pc.close()


def _whep_post(url: str, headers: dict[str, str], offer: str) -> tuple[str, str]:
    """The SDP answer and the session's resource URL."""
    headers = {**headers, "Content-Type": "application/sdp"}
    request = urllib.request.Request(url, data=offer.encode(), method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.read().decode(), urllib.parse.urljoin(url, r.headers["Location"])


def _whep_delete(url: str, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, method="DELETE", headers=headers)
    with urllib.request.urlopen(request, timeout=30):
        pass


def _request(url: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode()]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _connect(load: Load, index: int, gate: asyncio.Semaphore) -> Viewer:
    host, port, request = _request(load.job["url"], load.job.get("headers", {}))
    viewer = Viewer(index, load)
    async with gate:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(lambda: viewer, host, port)
        except OSError as e:
            viewer.texts.append(f"connect: {e}")
            viewer.lost_at = time.monotonic()
            return viewer
        transport.write(request)
        await viewer.handshake
    return viewer


async def _start_hls(load: Load, index: int, gate: asyncio.Semaphore) -> HlsViewer:
    viewer = HlsViewer(index, load)
    async with gate:  # joins spread out as the WebSocket handshakes are
        viewer.task = asyncio.create_task(viewer.run())
        await asyncio.wait([viewer.first_fragment], timeout=READY_TIMEOUT_S)
    return viewer


async def _start_rtc(load: Load, index: int, gate: asyncio.Semaphore) -> RtcViewer:
    viewer = RtcViewer(index, load)
    async with gate:
        viewer.task = asyncio.create_task(viewer.run())
        await asyncio.wait([viewer.first_fragment], timeout=READY_TIMEOUT_S)
    return viewer


async def _main(job: dict[str, Any]) -> dict[str, Any]:
    load = Load(job)
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    starts: dict[str, Callable[[Load, int, asyncio.Semaphore], Awaitable[Any]]] = {
        "mse": _connect, "llhls": _start_hls, "webrtc": _start_rtc,
    }  # fmt: skip
    start = starts[job.get("protocol", "mse")]
    load.viewers = list(
        await asyncio.gather(*(start(load, i, gate) for i in range(int(job["viewers"]))))
    )
    pending = [v.first_fragment for v in load.viewers if v.lost_at is None]
    if pending:
        await asyncio.wait(pending, timeout=READY_TIMEOUT_S)
    missing = [v for v in load.viewers if v.lost_at is not None or not v.first_fragment.done()]
    loop = asyncio.get_running_loop()
    if missing:
        why = missing[0].texts[:1] or ["no fragment"]
        print(f"FAILED {len(missing)} viewers without a first fragment: {why[0][:300]!r}",
              flush=True)  # fmt: skip
    else:
        print("READY", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    words = line.split()
    if len(words) == 3 and words[0] == "GO":
        load.t0, load.t1 = float(words[1]), float(words[2])
        await asyncio.sleep(max(0.0, load.t1 - time.monotonic()) + 0.2)
    for v in load.viewers:
        v.close()
    await asyncio.wait([v.closed for v in load.viewers], timeout=10)
    rtc = [v.shut() for v in load.viewers if isinstance(v, RtcViewer)]
    if rtc:
        await asyncio.wait_for(asyncio.gather(*rtc, return_exceptions=True), 30)
    out = job["out"]
    for name, values in load.arrays.items():
        with open(f"{out}.{name}", "wb") as f:
            values.tofile(f)
    return {
        "viewers": [
            {
                "bytes": v.bytes,
                "fragments": v.fragments,
                "inits": v.inits,
                "lost_in_window": v.lost_at is not None and v.lost_at <= load.t1,
                "texts": v.texts[:2] if v.lost_at is not None and v.lost_at <= load.t1 else [],
            }
            for v in load.viewers
        ],
        "arrivals": len(load.arrays["keys"]),
    }


def main() -> int:
    job = json.loads(sys.stdin.readline())
    result = asyncio.run(_main(job))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
