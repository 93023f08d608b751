"""Real brokers' clients for tests: an MQTT subscriber on the local Mosquitto, JetStream reads
on the local NATS, and an HTTP receiver for webhooks that answers as a test scripts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiomqtt
import nats
import nats.errors
import nats.js.errors
from nats.js.api import StreamConfig

BROKER = ("127.0.0.1", 1883)
HANG = "hang"


class Subscriber:
    """An aiomqtt client on a thread of its own, keeping (topic, payload, retained) it gets."""

    def __init__(self, topic_filter: str) -> None:
        self.filter = topic_filter
        self.got: list[tuple[str, bytes, bool]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the test subscriber did not connect"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        async with aiomqtt.Client(*BROKER, identifier=f"sub-{uuid.uuid4().hex[:8]}") as c:
            await c.subscribe(self.filter, qos=1)
            self._ready.set()
            with_cancel = asyncio.ensure_future(self._read(c))
            try:
                await with_cancel
            except asyncio.CancelledError:
                return

    async def _read(self, c: aiomqtt.Client) -> None:
        async for m in c.messages:
            self.got.append((str(m.topic), bytes(m.payload), bool(m.retain)))

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in list(self.got) if t == topic]

    def close(self) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)


def clear_retained(prefix: str) -> None:
    """Empty retained payloads delete what a test left on the shared broker."""

    async def main() -> None:
        topics: set[str] = set()
        async with aiomqtt.Client(*BROKER, identifier=f"clr-{uuid.uuid4().hex[:8]}") as c:
            await c.subscribe(f"{prefix}/#")
            try:
                async with asyncio.timeout(0.5):  # retained ones arrive at once on subscribe
                    async for m in c.messages:
                        topics.add(str(m.topic))
            except TimeoutError:
                pass
            for t in topics:
                await c.publish(t, b"", qos=1, retain=True)

    asyncio.run(main())


class Receiver:
    """An HTTP server answering its ``script`` one request after another (the last repeats).

    An answer is a status (with headers) or HANG: no answer until the test ends.
    """

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.requests: list[tuple[float, dict[str, str], bytes, str]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                n = len(receiver.requests)
                receiver.requests.append((time.monotonic(), dict(self.headers), body, self.path))
                answer = receiver.script[min(n, len(receiver.script) - 1)]
                if answer == HANG:
                    receiver.release.wait(30)
                    return
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


SERVER = ("127.0.0.1", 4222)


async def js_call(fn: Callable[[Any], Awaitable[Any]]) -> Any:
    nc = await nats.connect(f"nats://{SERVER[0]}:{SERVER[1]}")
    try:
        return await fn(nc.jetstream())
    finally:
        await nc.close()


def stream_config(name: str) -> StreamConfig | None:
    async def info(js: Any) -> StreamConfig | None:
        try:
            return (await js.stream_info(name)).config
        except nats.js.errors.NotFoundError:
            return None

    return asyncio.run(js_call(info))


def fetch(stream: str, subject: str, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The first ``n`` messages of ``subject`` in ``stream`` (an ephemeral pull consumer)."""

    async def get(js: Any) -> list[dict[str, Any]]:
        sub = await js.pull_subscribe(subject, stream=stream)
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            try:
                for m in await sub.fetch(n - len(got), timeout=1):
                    got.append(json.loads(m.data))
                    await m.ack()
            except nats.errors.TimeoutError:
                continue
        return got

    return asyncio.run(js_call(get))


def stored(stream: str) -> int:
    async def count(js: Any) -> int:
        return int((await js.stream_info(stream)).state.messages)

    return asyncio.run(js_call(count))
