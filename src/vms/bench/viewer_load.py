"""The load generator of ``vms bench viewers``: live viewers over WebSocket, in a process of its
own, so that the operating system accounts its CPU apart from the server's.

``python -m vms.bench.viewer_load`` reads one JSON line on stdin (the job: URL, headers, how
many viewers), connects them, prints ``READY`` once every viewer has its first fragment (or
``FAILED <reason>``), then reads ``GO <t0> <t1>``: the measurement window in
``time.monotonic()`` seconds (CLOCK_MONOTONIC: one clock for every process of the machine).
Inside the window it notes each fragment's arrival by its key
(:func:`vms.bench.direct.frame_key`); after it, it writes the arrivals to ``<out>.keys`` and
``<out>.times`` (arrays of uint32 and float64), prints one JSON line of counts per viewer and
exits once its viewers are closed.

The WebSocket client is written for this: a handshake, then frames parsed in
``data_received`` with one copy of each payload, no decoding, pings answered. A general
client library spent more CPU per message than the server under test.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import os
import struct
import sys
import time
import urllib.parse
import zlib
from typing import Any

KEY_BYTES = 64  # as vms.bench.direct.KEY_BYTES: the same frame, the same key
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
                now = time.monotonic()
                load = self.load
                if load.t0 <= now <= load.t1:
                    self.bytes += len(payload)
                    self.fragments += 1
                    load.keys.append(zlib.crc32(payload[-KEY_BYTES:]))
                    load.times.append(now)
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
        self.keys = array.array("I")
        self.times = array.array("d")
        self.viewers: list[Viewer] = []


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


async def _main(job: dict[str, Any]) -> dict[str, Any]:
    load = Load(job)
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    load.viewers = list(
        await asyncio.gather(*(_connect(load, i, gate) for i in range(int(job["viewers"]))))
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
    out = job["out"]
    with open(out + ".keys", "wb") as f:
        load.keys.tofile(f)
    with open(out + ".times", "wb") as f:
        load.times.tofile(f)
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
        "arrivals": len(load.keys),
    }


def main() -> int:
    job = json.loads(sys.stdin.readline())
    result = asyncio.run(_main(job))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
