"""The event bus: bounded queues that drop the oldest, order per sink, a failing sink alone,
publishers that never wait, stop within its timeout."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.polling import wait_for
from vms.errors import Kind, VmsError
from vms.events.bus import EventBus
from vms.events.model import CountMessage, HealthMessage, Message, MotionMessage


def count(i: int, camera: str = "cam") -> CountMessage:
    return CountMessage(camera, "person", i, t_us=i)


class Recorder:
    """A sink that keeps what it got; ``gate`` (when given) holds every delivery until set."""

    def __init__(self, name: str, *, gated: bool = False, only: type | None = None) -> None:
        self.name = name
        self.got: list[Message] = []
        self.gated = gated
        self.only = only
        self.release = threading.Event()
        self.entered = threading.Event()  # a delivery is waiting at the gate
        self.started = threading.Event()
        self.stopped = threading.Event()

    def wants(self, message: Message) -> bool:
        return self.only is None or isinstance(message, self.only)

    async def start(self) -> None:
        self.started.set()

    async def deliver(self, message: Message) -> None:
        if self.gated:
            self.entered.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        self.got.append(message)

    async def stop(self) -> None:
        self.stopped.set()


class Raising(Recorder):
    async def deliver(self, message: Message) -> None:
        if isinstance(message, CountMessage) and message.count % 2:
            raise VmsError(Kind.UNAVAILABLE, "odd count refused by nats://user:hunter2@host:4222")
        await super().deliver(message)


@pytest.fixture
def bus() -> Iterator[EventBus]:
    b = EventBus(queue=10)
    yield b
    b.stop(timeout=1)


def test_full_queue_drops_the_oldest_counts_and_warns_once(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    slow = Recorder("slow", gated=True)
    bus.add(slow)
    bus.start()
    bus.publish(count(0))
    slow.entered.wait(5)  # 0 is being delivered; 1..30 go to a queue of 10
    with caplog.at_level(logging.WARNING, logger="vms.events.bus"):
        for i in range(1, 31):
            bus.publish(count(i))
        assert bus.stats()["slow"] == {"queued": 10, "delivered": 0, "dropped": 20, "failed": 0}
        slow.release.set()
        wait_for(lambda: bus.stats()["slow"]["delivered"] == 11, 5, "the queue to drain")
    assert [m.count for m in slow.got] == [0, *range(21, 31)]  # type: ignore[union-attr]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one when it overflowed, one when it caught up
    assert "slow" in warnings[0] and "full" in warnings[0]
    assert "20 messages were dropped" in warnings[1]


def test_order_is_kept_per_sink_and_wants_filters() -> None:
    bus = EventBus(queue=1000)
    every = Recorder("every")
    health = Recorder("health", only=HealthMessage)
    bus.add(every)
    bus.add(health)
    bus.start()
    try:
        for i in range(300):
            bus.publish(count(i) if i % 3 else HealthMessage("cam", "online", i))
        wait_for(lambda: len(every.got) == 300 and len(health.got) == 100, 5, "delivery")
        assert [m.t_us for m in every.got] == list(range(300))  # type: ignore[union-attr]
        assert [m.t_us for m in health.got] == list(range(0, 300, 3))  # type: ignore[union-attr]
        assert bus.stats()["health"] == {"queued": 0, "delivered": 100, "dropped": 0, "failed": 0}
    finally:
        bus.stop(timeout=1)


def test_a_raising_sink_counts_failures_and_stops_nobody(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    bad = Raising("bad")
    good = Recorder("good")
    bus.add(bad)
    bus.add(good)
    bus.start()
    with caplog.at_level(logging.WARNING, logger="vms.events.bus"):
        for i in range(6):
            bus.publish(count(i))
        wait_for(lambda: len(good.got) == 6 and len(bad.got) == 3, 5, "delivery")
        wait_for(lambda: bus.stats()["bad"]["failed"] == 3, 5, "the failures counted")
    assert bus.stats()["bad"] == {"queued": 0, "delivered": 3, "dropped": 0, "failed": 3}
    lines = [r.getMessage() for r in caplog.records if "bad" in r.getMessage()]
    assert len(lines) == 3
    assert all("odd count refused" in line for line in lines)
    assert not any("hunter2" in line for line in lines)  # the password never reaches a log


def test_publishers_on_many_threads_never_wait_for_a_stuck_sink(bus: EventBus) -> None:
    stuck = Recorder("stuck", gated=True)
    fast = Recorder("fast", only=MotionMessage)
    bus.add(stuck)
    bus.add(fast)
    bus.start()
    worst: list[float] = []

    def publisher(k: int) -> None:
        slowest = 0.0
        for i in range(2000):
            t0 = time.perf_counter()
            bus.publish(count(i, f"cam{k}"))
            slowest = max(slowest, time.perf_counter() - t0)
        bus.publish(MotionMessage(f"cam{k}", True, 0))
        worst.append(slowest)

    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.perf_counter() - t0
    assert stuck.entered.is_set() and not stuck.got
    stats = bus.stats()["stuck"]
    assert stats["queued"] == 10 and stats["dropped"] + 10 + 1 == 8 * 2001
    wait_for(lambda: len(fast.got) == 8, 5, "the other sink's deliveries")
    # 16 000 publishes on 2 busy cores: a publisher that waited for the stuck sink would take
    # seconds each; the slowest single call stays far below that.
    assert elapsed < 10, elapsed
    assert max(worst) < 0.5, worst
    stuck.release.set()


def test_listeners_hear_everything_until_they_unsubscribe(bus: EventBus) -> None:
    heard: list[tuple[str, Message]] = []
    bus.start()
    off = bus.listen(lambda m: heard.append((threading.current_thread().name, m)))
    bus.publish(count(1))
    wait_for(lambda: len(heard) == 1, 5, "the listener")
    assert heard[0][0] == "event-bus"  # called on the bus thread, not the publisher's
    off()
    bus.publish(count(2))
    bus.publish(count(3))
    later: list[Message] = []
    bus.listen(later.append)
    bus.publish(count(4))
    wait_for(lambda: later, 5, "the second listener")
    assert [m.count for _, m in heard] == [1]  # type: ignore[union-attr]


def test_stop_gives_up_a_stuck_sink_within_its_timeout_and_stops_every_sink() -> None:
    bus = EventBus(queue=10)
    stuck = Recorder("stuck", gated=True)
    bus.add(stuck)
    bus.add(good := Recorder("good"))
    bus.start()
    for i in range(5):
        bus.publish(count(i))
    stuck.entered.wait(5)
    wait_for(lambda: len(good.got) == 5, 5, "the good sink")
    t0 = time.monotonic()
    bus.stop(timeout=0.5)
    took = time.monotonic() - t0
    assert 0.4 < took < 3, took
    assert stuck.stopped.is_set() and good.stopped.is_set()
    assert bus.stats()["stuck"] == {"queued": 0, "delivered": 0, "dropped": 5, "failed": 0}
    bus.publish(count(9))  # after stop: ignored, no error
    assert bus.stats()["good"]["queued"] == 0


def test_a_sink_whose_name_repeats_is_numbered_and_add_after_start_is_refused() -> None:
    bus = EventBus(queue=10)
    bus.add(Recorder("webhook"))
    bus.add(Recorder("webhook"))
    bus.start()
    try:
        assert set(bus.stats()) == {"webhook", "webhook#2"}
        with pytest.raises(VmsError):
            bus.add(Recorder("late"))
    finally:
        bus.stop(timeout=1)
    with pytest.raises(VmsError):
        EventBus(queue=0)
