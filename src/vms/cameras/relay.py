"""One camera stream's fan-out to its subscribers: live view, detection, playback of the last
minute.

Publishers are threads that must never wait: the reader (stream starts, packets, ends) and the
root writer (:class:`~vms.media.FragmentWritten`). :meth:`Relay.publish` appends the item to a
pending deque and, only when no drain is already scheduled, asks the event loop to drain it:
one wake of the loop (one write to its self-pipe) per *batch* of items, not one syscall per
subscriber per packet on the reader's thread. The drain runs on the loop and hands the batch to
every subscriber.

Each subscriber has a bounded queue. When it is full, the subscriber has fallen behind: its
queued packets are dropped (counted) and it skips ahead to the next video keyframe, because a
decoder cannot resume in the middle of a GOP; :class:`~vms.media.StreamStart`,
:class:`~vms.media.StreamEnd` and :class:`~vms.media.FragmentWritten` items are never dropped
(they are few, and a consumer needs every change of parameters).

A new subscriber first gets the current stream's start, then the current GOP: the relay keeps
the packets since the latest video keyframe (bounded by ``GOP_SECONDS`` and ``GOP_BYTES``; past
them, or after a stream ends, it keeps nothing until the next keyframe), so a viewer's first
picture comes at once instead of at the next keyframe. The trap is the hand-over: the packets a
publisher queued before the subscriber joined must reach it exactly once, either in the replay
or through the next drain. So a subscriber joins *in the queue*: under a short lock (a
publisher keeps the GOP and queues under it too, a few microseconds), :meth:`Relay._add` copies
the GOP and queues a join marker; the drain hands what was queued before the marker to the
present subscribers only, adds the new one there, and gives it everything after. This works
from any thread, the loop's or not.

Subscribers are awaited from asyncio (:meth:`Relay.subscribe`, ``async for item in sub``) or
read from a thread (:meth:`Relay.subscribe_blocking`, ``for item in sub``); a thread subscriber
is fed by the same drain, so it sees items as soon as the loop runs. Without an event loop
(tools and tests that run the recorder alone) the publisher's thread drains, under a lock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Union

from vms.media import VIDEO, FragmentWritten, Packet, StreamEnd, StreamInfo, StreamStart

Item = Union[StreamStart, Packet, FragmentWritten, StreamEnd]  # noqa: UP007 - a runtime alias

DEFAULT_MAXLEN = 512  # ~10 s of 1080p25 video with audio
GOP_SECONDS = 10.0  # the longest GOP kept for new subscribers (by arrival time) ...
GOP_BYTES = 16 << 20  # ... and the most bytes


class _Queue:
    """A subscriber's bounded queue and its skip-to-keyframe rule (the loop's side only)."""

    def __init__(self, maxlen: int) -> None:
        self.items: collections.deque[Item] = collections.deque()
        self.packets = 0  # packets queued: the bound applies to them
        self.maxlen = maxlen
        self.skip = True  # until a video keyframe
        self.behind = False  # skipping because this subscriber overflowed (counted as dropped)
        self.dropped = 0
        self.closed = False

    def offer(self, batch: list[Item]) -> None:
        for it in batch:
            if isinstance(it, Packet):
                if self.packets >= self.maxlen:
                    self._overflow()
                if self.skip:
                    if it.kind != VIDEO or not it.keyframe:
                        self.dropped += self.behind
                        continue
                    self.skip = self.behind = False
                self.items.append(it)
                self.packets += 1
            else:
                if isinstance(it, StreamStart):
                    self.skip = True  # a new stream starts at its first keyframe
                    self.behind = False
                self.items.append(it)

    def _overflow(self) -> None:
        kept = [it for it in self.items if not isinstance(it, Packet)]
        self.dropped += self.packets
        self.items = collections.deque(kept)
        self.packets = 0
        self.skip = self.behind = True

    def pop(self) -> Item | None:
        try:
            it = self.items.popleft()
        except IndexError:
            return None
        if isinstance(it, Packet):
            self.packets -= 1
        return it


class Subscription:
    """An asyncio subscriber: ``async for item in sub``; ends when the relay closes."""

    def __init__(self, relay: Relay, maxlen: int) -> None:
        self._relay = relay
        self._q = _Queue(maxlen)
        self._waiter: asyncio.Future[None] | None = None

    @property
    def dropped(self) -> int:
        """Packets dropped because this subscriber fell behind."""
        return self._q.dropped

    def __len__(self) -> int:
        return len(self._q.items)

    def _offer(self, batch: list[Item]) -> None:
        self._q.offer(batch)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _end(self) -> None:
        self._q.closed = True
        self._offer([])

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        while True:
            it = self._q.pop()
            if it is not None:
                return it
            if self._q.closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        self._relay._remove(self)
        self._q.closed = True


class BlockingSubscription:
    """A thread's subscriber: ``for item in sub`` or ``sub.get(timeout)``."""

    def __init__(self, relay: Relay, maxlen: int) -> None:
        self._relay = relay
        self._q = _Queue(maxlen)
        self._cond = threading.Condition()

    @property
    def dropped(self) -> int:
        return self._q.dropped

    def __len__(self) -> int:
        return len(self._q.items)

    def _offer(self, batch: list[Item]) -> None:
        with self._cond:
            self._q.offer(batch)
            self._cond.notify()

    def _end(self) -> None:
        with self._cond:
            self._q.closed = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Item | None:
        """The next item; None when ``timeout`` passed first or the relay closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                it = self._q.pop()
                if it is not None or self._q.closed:
                    return it
                # Woken for a batch that held nothing for us (skipped packets): wait on.
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def __iter__(self) -> Iterator[Item]:
        while True:
            with self._cond:
                while not self._q.items and not self._q.closed:
                    self._cond.wait()
                it = self._q.pop()
            if it is None:
                return
            yield it

    def close(self) -> None:
        self._relay._remove(self)
        self._end()


_Sub = Union[Subscription, BlockingSubscription]  # noqa: UP007 - a runtime alias


class _Join:
    """A subscriber joining, queued among the items (see the module docstring)."""

    __slots__ = ("first", "sub")

    def __init__(self, sub: _Sub, first: list[Item]) -> None:
        self.sub = sub
        self.first = first  # the stream's start and the GOP, as they were when it joined


class Relay:
    """The fan-out of one camera stream (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._pending: collections.deque[Item | _Join] = collections.deque()
        self._scheduled = False
        self._inline = threading.Lock()  # drains on publishers' threads when there is no loop
        self._subs: tuple[_Sub, ...] = ()
        self._closed = False
        self._lock = threading.Lock()  # orders a publish against a subscriber joining
        self._gop: list[Packet] = []  # since the latest video keyframe; empty when none is kept
        self._gop_bytes = 0
        self._joining = 0  # join markers queued, not drained yet
        self.info: StreamInfo | None = None  # the running stream's parameters; None when down
        self.drains = 0  # wakes of the loop (or inline drains) so far

    # --- publishers (any thread) ---------------------------------------------------------

    def publish(self, item: Item) -> None:
        with self._lock:
            if isinstance(item, Packet):
                self._keep(item)
            elif isinstance(item, StreamStart):
                self.info = item.info
                self._gop, self._gop_bytes = [], 0
            elif isinstance(item, StreamEnd):
                self.info = None
                self._gop, self._gop_bytes = [], 0
            if not (self._subs or self._joining) or self._closed:
                return  # closed: a reader that outlived its stop must not reach ended subscribers
            self._pending.append(item)
        self._wake()

    def _keep(self, p: Packet) -> None:
        """The current GOP: restarted at each video keyframe, dropped when it grows too long."""
        gop = self._gop
        if p.kind == VIDEO and p.keyframe:
            self._gop, self._gop_bytes = [p], len(p.data)
            return
        if not gop:
            return
        self._gop_bytes += len(p.data)
        if self._gop_bytes > GOP_BYTES or p.arrival - gop[0].arrival > GOP_SECONDS:
            self._gop, self._gop_bytes = [], 0
        else:
            gop.append(p)

    def _wake(self) -> None:
        loop = self._loop
        if loop is None:
            with self._inline:
                self._drain()
            return
        # Trap: set the flag before scheduling and clear it in the drain *before* popping, so
        # an item appended while a drain runs is either popped by it or schedules the next.
        if self._scheduled:
            return
        self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the server is stopping
            self._scheduled = False

    def _drain(self) -> None:
        self._scheduled = False
        self.drains += 1
        pending = self._pending
        batch: list[Item | _Join] = []
        while True:
            try:
                batch.append(pending.popleft())
            except IndexError:
                break
        start = 0
        for i, it in enumerate(batch):
            if isinstance(it, _Join):
                self._offer_all(batch[start:i])  # before it joined: not for it
                start = i + 1
                self._join(it)
        self._offer_all(batch[start:] if start else batch)

    def _offer_all(self, items: list[Item | _Join]) -> None:
        if items:
            for sub in self._subs:
                sub._offer(items)  # type: ignore[arg-type]  # no _Join left in it

    def _join(self, j: _Join) -> None:
        with self._lock:
            self._joining -= 1
            if j.sub._q.closed:
                return  # closed before it joined
            if j.first:
                j.sub._offer(j.first)
            self._subs = (*self._subs, j.sub)  # copy-on-write: read without a lock

    # --- subscribers ---------------------------------------------------------------------

    def subscribe(self, maxlen: int = DEFAULT_MAXLEN, *, replay: bool = True) -> Subscription:
        """An asyncio subscriber; call on the relay's event loop. With ``replay`` it starts with
        the current GOP, else at the next keyframe."""
        sub = Subscription(self, maxlen)
        self._add(sub, replay)
        return sub

    def subscribe_blocking(
        self, maxlen: int = DEFAULT_MAXLEN, *, replay: bool = True
    ) -> BlockingSubscription:
        """A subscriber read from a thread (subscribed from any thread)."""
        sub = BlockingSubscription(self, maxlen)
        self._add(sub, replay)
        return sub

    def _add(self, sub: _Sub, replay: bool) -> None:
        with self._lock:
            info = self.info
            first: list[Item] = []
            if info is not None:
                first = [StreamStart(info), *(self._gop if replay else ())]
            if self._closed:
                sub._offer(first)
                sub._end()
                return
            self._joining += 1
            self._pending.append(_Join(sub, first))
        self._wake()

    def _remove(self, sub: _Sub) -> None:
        self._subs = tuple(s for s in self._subs if s is not sub)

    def close(self) -> None:
        """The stream is gone (camera removed, server stopping): every subscriber's iteration
        ends once it has read what was queued."""
        self._closed = True
        loop = self._loop
        if loop is None:
            with self._inline:
                self._end_all()
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._end_all)

    def _end_all(self) -> None:
        self._drain()
        for sub in self._subs:
            sub._end()

    def __len__(self) -> int:
        return len(self._subs)
