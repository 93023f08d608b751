"""The NATS JetStream sink: events and camera health into a stream, each acknowledged.

``EventMessage`` goes to ``<prefix>.events.<camera>``, ``HealthMessage`` to
``<prefix>.health.<camera>``, both as the JSON of their ``to_json``. The stream
(``events.nats.stream``, subjects ``<prefix>.events.>`` and ``<prefix>.health.>``) is created
when it is missing, at start and after every reconnect; an existing stream of that name is left
as its owner configured it (limits, replicas, retention are theirs to choose).

Traps:

- ``nats.connect`` retries forever when told to (``max_reconnect_attempts=-1``), the first
  connection included; it runs as a task of its own so that a server that is down when the
  VMS starts delays events, never the start, and the sink picks it up when it comes.
- A JetStream publish is a request: while the connection is away, it times out. ``deliver``
  then waits for the reconnection and publishes again; a timeout on a connection that looks
  up but does not answer a ping (it died silently; the pings drop it within a minute) is no
  try either, so only a server that answers yet does not store the message costs it. The
  first copy may still have been buffered and sent by nats-py on reconnecting, so every
  message carries a ``Nats-Msg-Id`` (kept across its tries) and JetStream drops the duplicate
  within its window (2 minutes by default).
- "No responders" means no stream takes the subject (it was deleted): the stream is ensured
  again and the message sent once more; a stream of our name whose subjects do not cover ours
  gives the message up after a few tries instead of looping.
- A URL may carry credentials (``nats://user:pass@host``): every log line and error goes
  through :func:`vms.config.redact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from vms.config import redact
from vms.detection_config import NatsConfig
from vms.errors import Kind, VmsError
from vms.events.model import EventMessage, HealthMessage, Message

log = logging.getLogger(__name__)

# How long one publish waits for JetStream's acknowledgement.
ACK_TIMEOUT_S = 5.0
# Tries of one message while connected (a stream refusing it) before giving it up.
MAX_TRIES = 3

# Errors that mean "the server is away or busy now": wait for the connection and send again.
_TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)


def subject_of(prefix: str, message: Message) -> str:
    if isinstance(message, EventMessage):
        return f"{prefix}.events.{message.camera_id}"
    if isinstance(message, HealthMessage):
        return f"{prefix}.health.{message.camera_id}"
    raise VmsError(Kind.INTERNAL, f"the NATS sink cannot send a {type(message).__name__}")


class NatsSink:
    """Publishes events and health to a JetStream stream; see the module doc."""

    def __init__(self, config: NatsConfig, *, reconnect_wait: float = 1.0) -> None:
        self.config = config
        self._url = redact(config.url)
        self.name = f"nats {self._url}"
        self._prefix = config.subject_prefix
        self._reconnect_wait = reconnect_wait
        self._nc: NatsClient | None = None
        self._connected = asyncio.Event()
        self._stream_ok = False
        self._stream_lock = asyncio.Lock()
        self._outage = False
        self._closing = False
        self._said: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the sink holds a connection to the server now."""
        return self._nc is not None and self._nc.is_connected

    @property
    def subjects(self) -> list[str]:
        return [f"{self._prefix}.events.>", f"{self._prefix}.health.>"]

    def wants(self, message: Message) -> bool:
        return isinstance(message, EventMessage | HealthMessage)

    async def start(self) -> None:
        self._nc = NatsClient()
        self._connected = asyncio.Event()
        self._stream_lock = asyncio.Lock()
        self._task = asyncio.create_task(self._connect(), name=self.name)

    async def _connect(self) -> None:
        while True:
            assert self._nc is not None
            try:
                await self._nc.connect(
                    servers=[self.config.url],
                    name="vms",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,  # the first connection included: never give up
                    reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]
                    connect_timeout=5,
                    ping_interval=20,  # a connection that died silently is dropped in a minute
                    max_outstanding_pings=3,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                break
            except Exception as e:  # noqa: BLE001 - nats-py gave up after all: start afresh
                await self._on_error(e)
                with contextlib.suppress(Exception):
                    await self._nc.close()
                await asyncio.sleep(max(self._reconnect_wait, 1.0))
                self._nc = NatsClient()
        log.info("%s: connected", self.name)
        self._outage, self._said = False, None
        self._connected.set()
        await self._ensure_stream_quietly()

    async def _on_error(self, e: Exception) -> None:
        if not isinstance(e, (*_TRANSIENT, nats.errors.NoServersError)):
            # The server complained (a permission, bad credentials): said once, not at every
            # retry of a connection it keeps refusing.
            if _why(e) != self._said:
                self._said = _why(e)
                log.warning("%s: %s", self.name, self._said)
            return
        if not self._outage:
            self._outage = True
            log.warning("%s: server unreachable or lost (%s); retrying", self.name, _why(e))

    async def _on_disconnected(self) -> None:
        self._connected.clear()
        self._stream_ok = False
        if not self._outage and not self._closing:
            self._outage = True
            log.warning("%s: disconnected; reconnecting", self.name)

    async def _on_reconnected(self) -> None:
        log.info("%s: connected again", self.name)
        self._outage, self._said = False, None
        self._connected.set()
        await self._ensure_stream_quietly()

    async def _ensure_stream_quietly(self) -> None:
        try:
            await self._ensure_stream()
        except Exception as e:  # noqa: BLE001 - deliver ensures it again and reports
            log.warning("%s: stream %s not ready: %s", self.name, self.config.stream, _why(e))

    async def _ensure_stream(self) -> None:
        """Create the stream when it is missing; leave an existing one as it is."""
        async with self._stream_lock:  # the connect task and a delivery may both ask
            await self._ensure_stream_locked()

    async def _ensure_stream_locked(self) -> None:
        if self._stream_ok:
            return
        assert self._nc is not None
        js = self._nc.jetstream()
        try:
            await js.stream_info(self.config.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(StreamConfig(name=self.config.stream, subjects=self.subjects))
                log.info("%s: created stream %s", self.name, self.config.stream)
            except nats.js.errors.BadRequestError:
                # Another server created it between our two calls: then it exists now.
                await js.stream_info(self.config.stream)
        self._stream_ok = True

    async def deliver(self, message: Message) -> None:
        subject = subject_of(self._prefix, message)
        payload = json.dumps(message.to_json(), separators=(",", ":")).encode()
        headers = {"Nats-Msg-Id": uuid.uuid4().hex}  # the same on every try: dedup
        tries = 0
        last: BaseException | None = None
        while tries < MAX_TRIES:
            await self._connected.wait()
            assert self._nc is not None
            try:
                await self._ensure_stream()
                js = self._nc.jetstream()
                await js.publish(
                    subject,
                    payload,
                    timeout=ACK_TIMEOUT_S,
                    stream=self.config.stream,
                    headers=dict(headers),
                )
                return
            except nats.js.errors.NoStreamResponseError as e:
                self._stream_ok = False  # deleted under us, or it does not take our subjects
                last = e
            except _TRANSIENT as e:
                last = e
                if not self._nc.is_connected or not await self._answers():
                    continue  # an outage: wait for the reconnection, it is no try
            except nats.js.errors.APIError as e:
                raise VmsError(
                    Kind.UNAVAILABLE,
                    f"{self.name}: stream {self.config.stream} refused {subject}: {_why(e)}",
                ) from None
            tries += 1
        raise VmsError(
            Kind.UNAVAILABLE,
            f"{self.name}: no acknowledgement for {subject} after {tries} tries: {_why(last)}",
        )

    async def _answers(self) -> bool:
        """Whether the server answers a ping now (a connection that died silently does not)."""
        assert self._nc is not None
        try:
            await self._nc.flush(timeout=2)
        except Exception:  # noqa: BLE001 - any failure means no answer
            return False
        return True

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()  # never connected: stop trying
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._nc is not None and (self._nc.is_connected or self._nc.is_reconnecting):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 3.0)


def _why(e: BaseException | None) -> str:
    if e is None:
        return "unknown"
    text = str(e) or type(e).__name__
    return redact(" ".join(text.split()))[:300]
