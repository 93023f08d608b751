"""The MQTT sink against the real broker (Mosquitto on 127.0.0.1:1883), each test under a topic
prefix of its own whose retained messages are cleared afterwards."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.support.brokers import BROKER, Subscriber, clear_retained
from tests.support.events import event, new
from tests.support.polling import wait_for
from tests.support.tcp_proxy import TcpProxy
from vms.detection_config import MqttConfig
from vms.events.bus import EventBus
from vms.events.model import CountMessage, HealthMessage, MotionMessage
from vms.notify.mqtt import MqttSink


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
