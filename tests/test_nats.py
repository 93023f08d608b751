"""The NATS JetStream sink against the real server (127.0.0.1:4222), each test with a stream
and a subject prefix of its own, deleted afterwards."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig

from tests.support.brokers import SERVER, fetch, js_call, stored, stream_config
from tests.support.events import event, new
from tests.support.polling import wait_for
from tests.support.tcp_proxy import TcpProxy
from vms.detection_config import NatsConfig
from vms.events.bus import EventBus
from vms.events.model import CountMessage, HealthMessage
from vms.notify.nats import NatsSink


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"VMSTEST_{tag}", f"vmstest{tag}"
    yield stream, prefix

    async def delete(js: Any) -> None:
        try:
            await js.delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass

    asyncio.run(js_call(delete))


def test_stream_is_created_and_a_consumer_gets_events_and_health(names: tuple[str, str]) -> None:
    stream, prefix = names
    assert stream_config(stream) is None
    sink = NatsSink(NatsConfig(enabled=True, stream=stream, subject_prefix=prefix))
    bus = EventBus(queue=100)
    bus.add(sink)
    bus.start()
    try:
        config = wait_for(lambda: stream_config(stream), 10, "the stream")
        assert sorted(config.subjects) == [f"{prefix}.events.>", f"{prefix}.health.>"]
        e = event("cam1")
        bus.publish(new(e))
        bus.publish(CountMessage("cam1", "person", 1, 0))  # not for NATS
        bus.publish(HealthMessage("cam2", "offline", 5, {"reason": "timeout"}))
        wait_for(lambda: bus.stats()[sink.name]["delivered"] == 2, 10, "the acks")
        (got,) = fetch(stream, f"{prefix}.events.cam1", 1)
        assert got["type"] == "new" and got["after"]["id"] == e.id
        (health,) = fetch(stream, f"{prefix}.health.cam2", 1)
        assert health == {"camera": "cam2", "state": "offline", "t_us": 5, "reason": "timeout"}
        assert stored(stream) == 2
    finally:
        bus.stop(timeout=2)


def test_an_existing_stream_is_left_as_it_is(names: tuple[str, str]) -> None:
    stream, prefix = names

    async def create(js: Any) -> None:
        await js.add_stream(
            StreamConfig(name=stream, subjects=[f"{prefix}.events.>"], max_msgs=50)
        )

    asyncio.run(js_call(create))
    bus = EventBus(queue=100)
    bus.add(sink := NatsSink(NatsConfig(enabled=True, stream=stream, subject_prefix=prefix)))
    bus.start()
    try:
        bus.publish(new(event("cam1")))
        wait_for(lambda: bus.stats()[sink.name]["delivered"] == 1, 10, "the ack")
        # Health has no subject in this stream: given up after a few tries, counted, logged.
        bus.publish(HealthMessage("cam1", "online", 1))
        wait_for(lambda: bus.stats()[sink.name]["failed"] == 1, 30, "the health message given up")
    finally:
        bus.stop(timeout=2)
    config = stream_config(stream)
    assert config is not None and config.subjects == [f"{prefix}.events.>"]
    assert config.max_msgs == 50


def test_server_away_at_start_and_later_then_back_delivers_everything_once_in_order(
    names: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vms.notify.nats")

    def outages() -> list[str]:
        return [r.getMessage() for r in caplog.records if "unreachable or lost" in r.getMessage()]

    stream, prefix = names
    proxy = TcpProxy(SERVER)
    proxy.cut()  # away before the sink ever connects
    config = NatsConfig(
        enabled=True, url=f"nats://127.0.0.1:{proxy.port}", stream=stream, subject_prefix=prefix
    )
    bus = EventBus(queue=100)
    bus.add(sink := NatsSink(config, reconnect_wait=0.1))
    bus.start()
    try:
        events = [event("cam1", start_us=i) for i in range(4)]
        bus.publish(new(events[0]))
        wait_for(lambda: outages(), 10, "a failed first connection")
        assert bus.stats()[sink.name]["delivered"] == 0
        proxy.restore()
        wait_for(lambda: bus.stats()[sink.name]["delivered"] == 1, 15, "delivery after start")

        proxy.cut()
        wait_for(lambda: not sink.connected, 10, "the sink to notice the cut")
        for e in events[1:]:
            bus.publish(new(e))
        proxy.restore()
        wait_for(lambda: bus.stats()[sink.name]["delivered"] == 4, 30, "delivery after the cut")
        got = fetch(stream, f"{prefix}.events.cam1", 4)
        assert [g["after"]["id"] for g in got] == [e.id for e in events]
        assert stored(stream) == 4  # a publish retried after the cut is not stored twice
        assert bus.stats()[sink.name] == {"queued": 0, "delivered": 4, "dropped": 0, "failed": 0}
        assert len(outages()) == 2  # one line per outage, however many retries it took
    finally:
        bus.stop(timeout=2)
        proxy.close()
