"""The MQTT sink against the real broker (Mosquitto on 127.0.0.1:1883), each test under a topic
prefix of its own whose retained messages are cleared afterwards."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator

import aiomqtt
import pytest

from tests.support.events import event, new
from tests.support.polling import wait_for
from tests.support.tcp_proxy import TcpProxy
from vms.detection_config import MqttConfig
from vms.events.bus import EventBus
from vms.events.model import CountMessage, HealthMessage, MotionMessage
from vms.notify.mqtt import MqttSink

BROKER = ("127.0.0.1", 1883)


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


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"vmstest/{uuid.uuid4().hex[:10]}"
    yield p
    clear_retained(p)


def config(prefix: str, port: int = BROKER[1]) -> MqttConfig:
    return MqttConfig(
        enabled=True, port=port, topic_prefix=prefix, client_id=f"vms-{uuid.uuid4().hex[:8]}"
    )


def test_events_counts_motion_status_and_availability_reach_a_subscriber(prefix: str) -> None:
    sub = Subscriber(f"{prefix}/#")
    bus = EventBus(queue=100)
    bus.add(MqttSink(config(prefix)))
    bus.start()
    try:
        wait_for(lambda: sub.payloads(f"{prefix}/available") == [b"online"], 10, "online")
        e = event("cam1")
        bus.publish(new(e))
        bus.publish(MotionMessage("cam1", True, e.start_us))
        bus.publish(CountMessage("cam1", "person", 1, e.start_us))
        bus.publish(HealthMessage("cam1", "degraded", e.start_us, {"reason": "fps low"}))
        wait_for(lambda: sub.payloads(f"{prefix}/cam1/status"), 10, "the health message")
        (event_json,) = sub.payloads(f"{prefix}/events")
        got = json.loads(event_json)
        assert got["type"] == "new" and got["before"] is None
        assert got["after"]["id"] == e.id and got["after"]["label"] == "person"
        assert sub.payloads(f"{prefix}/cam1/motion") == [b"ON"]
        assert sub.payloads(f"{prefix}/cam1/person") == [b"1"]
        status = json.loads(sub.payloads(f"{prefix}/cam1/status")[0])
        assert status == {
            "camera": "cam1", "state": "degraded", "t_us": e.start_us, "reason": "fps low"
        }  # fmt: skip
        assert bus.stats()[f"mqtt 127.0.0.1:{BROKER[1]}"]["delivered"] == 4
    finally:
        bus.stop(timeout=2)
        sub.close()
    # A subscriber that comes later gets the retained state, and the clean stop's offline.
    late = Subscriber(f"{prefix}/#")
    try:
        wait_for(lambda: len(late.got) >= 4, 10, "the retained messages")
        retained = {t: p for t, p, r in late.got if r}
        assert retained == {
            f"{prefix}/available": b"offline",
            f"{prefix}/cam1/motion": b"ON",
            f"{prefix}/cam1/person": b"1",
            f"{prefix}/cam1/status": sub.payloads(f"{prefix}/cam1/status")[0],
        }
        assert f"{prefix}/events" not in retained
    finally:
        late.close()


def test_broker_cut_will_says_offline_and_what_was_published_meanwhile_arrives_after(
    prefix: str,
) -> None:
    proxy = TcpProxy(BROKER)
    sub = Subscriber(f"{prefix}/#")
    bus = EventBus(queue=100)
    bus.add(MqttSink(config(prefix, proxy.port), backoff=(0.1, 0.5)))
    bus.start()
    try:
        wait_for(lambda: sub.payloads(f"{prefix}/available") == [b"online"], 10, "online")
        bus.publish(MotionMessage("cam1", True, 1))
        wait_for(lambda: sub.payloads(f"{prefix}/cam1/motion") == [b"ON"], 10, "motion ON")

        proxy.cut()  # the sink's connection dies without a DISCONNECT: the broker sends the will
        wait_for(
            lambda: sub.payloads(f"{prefix}/available") == [b"online", b"offline"],
            10,
            "the last will",
        )
        events = [event("cam1", start_us=i) for i in range(3)]
        for e in events:
            bus.publish(new(e))
        bus.publish(MotionMessage("cam1", False, 2))
        assert not sub.payloads(f"{prefix}/events")

        proxy.restore()
        wait_for(lambda: sub.payloads(f"{prefix}/cam1/motion") == [b"ON", b"OFF"], 15, "OFF")
        ids = [json.loads(p)["after"]["id"] for p in sub.payloads(f"{prefix}/events")]
        assert ids == [e.id for e in events]  # all of them, in order, once each
        assert sub.payloads(f"{prefix}/available")[-1] == b"online"
        stats = bus.stats()[f"mqtt 127.0.0.1:{proxy.port}"]
        assert stats == {"queued": 0, "delivered": 5, "dropped": 0, "failed": 0}
    finally:
        bus.stop(timeout=2)
        sub.close()
        proxy.close()
