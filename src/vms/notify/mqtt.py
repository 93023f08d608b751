"""The MQTT sink: events, object counts, motion and camera health on Frigate-like topics.

Topics (``<prefix>`` is ``events.mqtt.topic_prefix``):

==============================  ==========================================================
``<prefix>/available``          ``online`` / ``offline``, retained; the last will says ``offline``
``<prefix>/events``             ``{"type", "before", "after"}`` per event change
``<prefix>/<camera>/<label>``   the count of active objects of that label, retained
``<prefix>/<camera>/motion``    ``ON`` / ``OFF``, retained
``<prefix>/<camera>/status``    the camera's health as JSON, retained
==============================  ==========================================================

One connection task owns the broker connection and reconnects with backoff (0.5 s doubling to
30 s, ±20 % jitter); :meth:`MqttSink.deliver` waits while it is away, so the bus's queue holds
what happens meanwhile and it goes out, in order, once the broker is back.

Traps:

- Everything is published at QoS 1, not only events: a retained ``motion OFF`` lost on the way
  would leave Home Assistant showing motion until the next change.
- aiomqtt waits for a QoS 1 acknowledgement until its timeout even when the connection is gone;
  ``deliver`` races the publish against the connection's loss, so a cut costs a reconnect, not
  a timeout. A message whose PUBACK was lost in the cut is sent again on the new connection
  (at least once, as QoS 1 promises). A connection that dies silently (no FIN: a cable, a NAT)
  looks alive until the keepalive (30 s) drops it; meanwhile an unacknowledged message is sent
  again every ``PUBLISH_TIMEOUT_S`` rather than given up. Only a broker that refuses a message
  on a live connection costs it (after ``MAX_TRIES``).
- The loss is noticed through the subscription to our own ``available`` topic: aiomqtt's
  message iterator is its public way of saying the connection dropped.
- The password comes from a ``SecretStr`` and goes only to the client; log lines name the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from typing import Any

import aiomqtt

from vms.detection_config import MqttConfig
from vms.errors import Kind, VmsError
from vms.events.model import CountMessage, EventMessage, HealthMessage, Message, MotionMessage

log = logging.getLogger(__name__)

# A publish that gets no acknowledgement this long on a live connection is sent again.
PUBLISH_TIMEOUT_S = 10.0
# Tries of one message on connections that stay up (a broker refusing it) before giving it up.
MAX_TRIES = 3


def topic_and_payload(prefix: str, message: Message) -> tuple[str, bytes, bool]:
    """Where ``message`` goes, what it says, and whether the broker retains it."""
    if isinstance(message, EventMessage):
        return f"{prefix}/events", _json(message.to_json()), False
    if isinstance(message, CountMessage):
        return f"{prefix}/{message.camera_id}/{message.label}", str(message.count).encode(), True
    if isinstance(message, MotionMessage):
        return f"{prefix}/{message.camera_id}/motion", b"ON" if message.active else b"OFF", True
    if isinstance(message, HealthMessage):
        return f"{prefix}/{message.camera_id}/status", _json(message.to_json()), True
    raise VmsError(Kind.INTERNAL, f"the MQTT sink cannot send a {type(message).__name__}")


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class _Link:
    """One broker connection: the client while it lasts, and the moment it was lost."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.lost = asyncio.Event()


class MqttSink:
    """Publishes bus messages to an MQTT broker; see the module doc."""

    def __init__(self, config: MqttConfig, *, backoff: tuple[float, float] = (0.5, 30.0)) -> None:
        self.config = config
        self.name = f"mqtt {config.host}:{config.port}"
        self._prefix = config.topic_prefix.rstrip("/")
        self._backoff = backoff
        self._link: _Link | None = None
        self._up = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the sink holds a connection to the broker now."""
        return self._link is not None and not self._link.lost.is_set()

    @property
    def available_topic(self) -> str:
        return f"{self._prefix}/available"

    def wants(self, message: Message) -> bool:
        return isinstance(message, EventMessage | CountMessage | MotionMessage | HealthMessage)

    async def start(self) -> None:
        # Events made in __init__ may belong to no loop yet; these are the bus loop's.
        self._up, self._stopping = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def deliver(self, message: Message) -> None:
        topic, payload, retain = topic_and_payload(self._prefix, message)
        tries = 0
        while True:
            link = await self._wait_link()
            publish = asyncio.ensure_future(
                link.client.publish(topic, payload, qos=1, retain=retain, timeout=math.inf)
            )
            lost = asyncio.ensure_future(link.lost.wait())
            try:
                done, _ = await asyncio.wait(
                    {publish, lost}, timeout=PUBLISH_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                lost.cancel()
                if not publish.done():
                    publish.cancel()
            if publish in done and publish.exception() is None:
                return
            if not done:
                continue  # a silent connection: sent again until the keepalive drops a dead one
            if not link.lost.is_set():
                # paho may refuse a publish on a socket it just found closed before aiomqtt
                # hears of the loss: give the loss a moment to show before counting a try.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.lost.wait(), 1.0)
            if link.lost.is_set():
                continue  # sent again on the next connection
            tries += 1
            if tries >= MAX_TRIES:
                raise VmsError(
                    Kind.UNAVAILABLE,
                    f"MQTT broker {self.config.host}:{self.config.port} did not take a message "
                    f"on {topic} after {tries} tries: {publish.exception()}",
                )

    async def _wait_link(self) -> _Link:
        while True:
            if self._stopping.is_set():
                raise VmsError(Kind.UNAVAILABLE, f"{self.name}: the sink is stopping")
            link = self._link
            if link is not None and not link.lost.is_set():
                return link
            up = asyncio.ensure_future(self._up.wait())
            stop = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({up, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                up.cancel()
                stop.cancel()

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        """The connection task: connect, announce, watch, reconnect with backoff."""
        low, high = self._backoff
        delay = low
        outage = False
        while not self._stopping.is_set():
            link: _Link | None = None
            try:
                async with self._client() as client:
                    await client.subscribe(self.available_topic, qos=1)
                    await client.publish(self.available_topic, b"online", qos=1, retain=True)
                    link = _Link(client)
                    self._link = link
                    self._up.set()
                    delay = low
                    if outage:
                        log.info("%s: connected again", self.name)
                    else:
                        log.info("%s: connected", self.name)
                    outage = False
                    if await self._watch(client):
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            await client.publish(
                                self.available_topic, b"offline", qos=1, retain=True, timeout=2
                            )
                        return  # leaving the block disconnects cleanly: no last will
            except aiomqtt.MqttError as e:
                if not outage:
                    why = f"{e}: {e.__cause__}" if e.__cause__ else str(e)
                    log.warning("%s: broker unreachable or lost (%s); retrying", self.name, why)
                outage = True
            except Exception:  # a bug here must not silence MQTT for good
                log.exception("%s: connection task failed; retrying", self.name)
                outage = True
            finally:
                self._up.clear()
                if link is not None:
                    link.lost.set()
                self._link = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, high)

    async def _watch(self, client: aiomqtt.Client) -> bool:
        """Until the connection drops (raises MqttError) or the sink stops (returns True)."""
        stop = asyncio.ensure_future(self._stopping.wait())
        messages = asyncio.ensure_future(_drain(client))
        try:
            await asyncio.wait({stop, messages}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not messages.done():
                messages.cancel()
        if messages.done() and not messages.cancelled():
            messages.result()  # the MqttError of the loss
        return True

    def _client(self) -> aiomqtt.Client:
        c = self.config
        return aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=None if c.password is None else c.password.get_secret_value(),
            identifier=c.client_id,
            will=aiomqtt.Will(self.available_topic, b"offline", qos=1, retain=True),
            keepalive=30,
            timeout=5,
        )


async def _drain(client: aiomqtt.Client) -> None:
    """Read (and ignore) what arrives; raises MqttError when the connection drops."""
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("the broker closed the connection")
