"""The event bus: messages from any thread, handed to every sink through a bounded queue each.

A publisher (a detector thread, the camera health monitor, the web app's loop) calls
:meth:`EventBus.publish`, which appends the message to the queue of every sink that wants it and
returns: it takes one short lock per sink and never waits for a sink. The sinks run on the bus's
own thread and asyncio loop, one delivery task per sink, so a broker that is down, a webhook
that hangs or a slow disk never touches the web app's loop nor the other sinks.

Traps:

- A queue that is full drops its *oldest* message (the newest says more about now) and counts
  it; the warning is logged once per outage (when a queue first overflows) and the total once
  it has caught up again, never once per message: a broker down for an hour would otherwise
  write a log line per detection.
- ``Sink.wants`` runs on the publisher's thread, so that unwanted messages never take a place
  in the queue; it must be cheap and must not touch the sink's loop state.
- Delivery is in order per sink: one task per sink awaits ``deliver`` before it takes the next
  message. ``deliver`` waits (reconnecting) while its service is away; that is what fills the
  queue, and it is what the queue bound is for.
- A ``deliver`` that raises costs that one message (counted as failed, one log line naming the
  sink and the reason, passed through :func:`vms.config.redact`), never the sink.
- ``stop`` gives the queues until ``timeout`` to drain, then cancels what is still delivering
  (a sink waiting for a broker that is not coming back), stops every sink and joins the
  thread; what was left undelivered is counted as dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from vms.config import redact
from vms.errors import Kind, VmsError, shorten
from vms.events.model import Message

log = logging.getLogger(__name__)

# The longest a sink's stop() may take once the drain time is spent.
_STOP_GRACE_S = 2.0


class Sink(Protocol):
    """Where the bus delivers messages: a broker, a webhook, a file."""

    name: str

    def wants(self, message: Message) -> bool:
        """Whether this sink takes ``message`` (called on the publisher's thread)."""
        ...

    async def start(self) -> None:
        """Begin (connect in the background); must not fail because the service is away."""
        ...

    async def deliver(self, message: Message) -> None:
        """Return once delivered; wait (reconnecting) while the service is away; raise
        :class:`VmsError` when the message is given up."""
        ...

    async def stop(self) -> None: ...


@dataclasses.dataclass(eq=False)
class _Lane:
    """One sink's queue, counters and delivery task."""

    sink: Sink
    name: str
    limit: int
    queue: collections.deque[Message] = dataclasses.field(default_factory=collections.deque)
    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    overflowing: bool = False  # this outage's warning has been logged
    dropped_in_outage: int = 0
    idle: bool = False  # its task waits for a message: a publisher must wake it
    wake: asyncio.Event | None = None
    task: asyncio.Task[None] | None = None


class EventBus:
    """Hands messages from any thread to every sink's bounded queue; see the module doc."""

    def __init__(self, queue: int = 1000) -> None:
        if queue < 1:
            raise VmsError(Kind.INVALID_ARGUMENT, f"event bus queue must be 1 or more, not {queue}")
        self._limit = queue
        self._lanes: list[_Lane] = []
        self._lock = threading.Lock()  # the queues, counters and flags of every lane
        self._listeners: list[Callable[[Message], None]] = []
        self._listen_lane: _Lane | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._done: asyncio.Event | None = None

    # -- set-up ------------------------------------------------------------------------------

    def add(self, sink: Sink) -> None:
        """Add a sink; only before :meth:`start`. Two sinks of one name are told apart by #2…"""
        if self._started:
            raise VmsError(Kind.INTERNAL, f"sink {sink.name} added after the event bus started")
        names = {lane.name for lane in self._lanes}
        name, n = sink.name, 1
        while name in names:
            n += 1
            name = f"{sink.name}#{n}"
        self._lanes.append(_Lane(sink, name, self._limit))

    def listen(self, callback: Callable[[Message], None]) -> Callable[[], None]:
        """Call ``callback`` with every message, on the bus thread; returns the unsubscribe.

        The callbacks share one queue (of the bus's bound) and must be quick: a slow one delays
        the others, never a sink or a publisher.
        """
        with self._lock:
            self._listeners = [*self._listeners, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [c for c in self._listeners if c is not callback]

        return unsubscribe

    def start(self) -> None:
        """Start the bus thread, its loop, the sinks and their delivery tasks; returns at once."""
        if self._started:
            raise VmsError(Kind.INTERNAL, "the event bus was started twice")
        self._started = True
        self._listen_lane = _Lane(_ListenerSink(self), "listeners", self._limit)
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name="event-bus", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._done = asyncio.Event()
        for lane in self._all_lanes():
            lane.wake = asyncio.Event()
            lane.task = asyncio.create_task(self._drive(lane), name=f"sink {lane.name}")
        ready.set()
        await self._done.wait()

    def _all_lanes(self) -> list[_Lane]:
        return [*self._lanes, *([self._listen_lane] if self._listen_lane else [])]

    # -- publishing --------------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        """Queue ``message`` for every sink that wants it; from any thread; never blocks."""
        if self._stopped:
            return
        wake: list[_Lane] = []
        for lane in self._lanes:
            if not lane.sink.wants(message):
                continue
            if self._put(lane, message):
                wake.append(lane)
        if self._listen_lane is not None and self._listeners and self._put(
            self._listen_lane, message
        ):
            wake.append(self._listen_lane)
        loop = self._loop
        if wake and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: stop() won
                loop.call_soon_threadsafe(_wake_all, wake)

    def _put(self, lane: _Lane, message: Message) -> bool:
        """Append under the lock, dropping the oldest when full; True when its task must wake."""
        overflow = False
        with self._lock:
            if len(lane.queue) >= lane.limit:
                lane.queue.popleft()
                lane.dropped += 1
                lane.dropped_in_outage += 1
                overflow = not lane.overflowing
                lane.overflowing = True
            lane.queue.append(message)
            wake = lane.idle
            lane.idle = False
        if overflow:
            log.warning(
                "event sink %s is behind: its queue of %d is full, dropping the oldest messages",
                lane.name,
                lane.limit,
            )
        return wake

    # -- delivering --------------------------------------------------------------------------

    async def _drive(self, lane: _Lane) -> None:
        """The sink's task: start it, then deliver its queue in order until cancelled."""
        assert lane.wake is not None
        try:
            await lane.sink.start()
        except Exception as e:  # noqa: BLE001 - a sink that cannot start must not stop the bus
            log.error("event sink %s did not start: %s", lane.name, _reason(e))
        while True:
            message = self._take(lane)
            if message is None:
                await lane.wake.wait()
                lane.wake.clear()
                continue
            try:
                await lane.sink.deliver(message)
            except asyncio.CancelledError:
                with self._lock:  # stop() cut it short: it was not delivered
                    lane.dropped += 1
                raise
            except Exception as e:  # noqa: BLE001 - one message lost, never the sink
                with self._lock:
                    lane.failed += 1
                log.warning("event sink %s gave up a message: %s", lane.name, _reason(e))
            else:
                with self._lock:
                    lane.delivered += 1

    def _take(self, lane: _Lane) -> Message | None:
        caught_up = 0
        with self._lock:
            if lane.queue:
                return lane.queue.popleft()
            lane.idle = True
            if lane.overflowing:
                lane.overflowing = False
                caught_up, lane.dropped_in_outage = lane.dropped_in_outage, 0
        if caught_up:
            log.warning("event sink %s caught up; %d messages were dropped", lane.name, caught_up)
        return None

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what can be within ``timeout``, stop the sinks, join the thread."""
        if self._stopped:
            return
        self._stopped = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        future = asyncio.run_coroutine_threadsafe(self._shutdown(deadline), loop)
        try:
            future.result(timeout=max(0.0, timeout) + _STOP_GRACE_S * 2 + 1)
        except Exception as e:  # noqa: BLE001 - stopping goes on whatever a sink did
            log.error("event bus did not stop cleanly: %s", _reason(e))
            loop.call_soon_threadsafe(self._finish)
        thread.join(timeout=_STOP_GRACE_S)

    async def _shutdown(self, deadline: float) -> None:
        lanes = self._all_lanes()
        while time.monotonic() < deadline and any(self._busy(lane) for lane in lanes):
            await asyncio.sleep(0.02)
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left = 0
        with self._lock:
            for lane in lanes:
                left += len(lane.queue)
                lane.dropped += len(lane.queue)
                lane.queue.clear()
        if left:
            log.warning("event bus stopped with %d messages undelivered", left)
        grace = max(deadline - time.monotonic(), _STOP_GRACE_S)
        await asyncio.gather(*(self._stop_sink(lane, grace) for lane in self._lanes))
        self._finish()

    async def _stop_sink(self, lane: _Lane, grace: float) -> None:
        try:
            await asyncio.wait_for(lane.sink.stop(), grace)
        except Exception as e:  # noqa: BLE001 - every sink gets its stop
            log.warning("event sink %s did not stop cleanly: %s", lane.name, _reason(e))

    def _busy(self, lane: _Lane) -> bool:
        with self._lock:
            return bool(lane.queue) or not lane.idle

    def _finish(self) -> None:
        if self._done is not None:
            self._done.set()

    # -- reading -----------------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, int]]:
        """Per sink: messages queued now, delivered, dropped (queue full, stop) and failed."""
        with self._lock:
            return {
                lane.name: {
                    "queued": len(lane.queue),
                    "delivered": lane.delivered,
                    "dropped": lane.dropped,
                    "failed": lane.failed,
                }
                for lane in self._lanes
            }


class _ListenerSink:
    """The in-process listeners, served like a sink (its own queue and task)."""

    name = "listeners"

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def wants(self, message: Message) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def deliver(self, message: Message) -> None:
        for callback in self._bus._listeners:
            try:
                callback(message)
            except Exception as e:  # noqa: BLE001 - one listener's bug is not the others'
                log.warning("event listener %r failed: %s", callback, _reason(e))

    async def stop(self) -> None:
        return None


def _wake_all(lanes: list[_Lane]) -> None:
    for lane in lanes:
        if lane.wake is not None:
            lane.wake.set()


def _reason(e: BaseException) -> str:
    """One line saying why, without a password (URLs are redacted) and at most 300 characters."""
    text = str(e) if isinstance(e, VmsError) else f"{type(e).__name__}: {e}"
    return shorten(redact(" ".join(text.split())), 300)
