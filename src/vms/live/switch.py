"""What a live viewer needs to switch between a camera's streams (its renditions, main and sub)
without a black frame: the MSE feed (:mod:`vms.live.mse`) and the WebRTC video track
(:mod:`vms.live.webrtc`) both use it.

A switch subscribes to the new stream's relay while the old stream keeps flowing, reads the new
subscription ahead (:func:`read_ahead`) until it holds a video keyframe, and only then drops
the old one: a decoder can start only at a keyframe, and the relay replays the current GOP to a
new subscriber, so the keyframe is there at once, at the next drain of the relay.

The traps:

- The viewer's task waits for the old stream's next packet, and a switch asked by another task
  (the WebSocket's reader, the data channel's callback) must not wait for it: a camera that is
  offline sends nothing for a long time. :meth:`Waiter.wake` cancels the wait; the cancelled
  wait leaves the packet it waited for in the subscription's queue (the queue pops only after
  the wait).
- While a switch is under way, the viewer waits on two subscriptions. Rather than a task per
  packet (twice the cost of a viewer that keeps up), it waits on the old one for at most
  :data:`POLL_S` at a time and looks at the new one in between: a switch is short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from vms.cameras.relay import Item, Relay, Subscription
from vms.media import VIDEO, Packet, StreamInfo, dimensions

POLL_S = 0.02  # while switching, how often the new stream is looked at when the old is quiet


def size_of(info: StreamInfo) -> tuple[int, int]:
    """A stream's picture size: its parameter sets', else its description's."""
    params = info.video.params
    if params is not None and params.complete:
        try:
            return dimensions(params)
        except (ValueError, IndexError):
            pass
    return info.video.width, info.video.height


def sizes(relays: Mapping[str, Relay | None]) -> dict[str, list[int]]:
    """The picture sizes of a camera's running streams, for a player that chooses between
    them (``{"main": [1280, 720], "sub": [320, 240]}``)."""
    out = {}
    for name, relay in relays.items():
        info = None if relay is None else relay.info
        if info is not None:
            out[name] = list(size_of(info))
    return out


def is_keyframe(item: Item) -> bool:
    return isinstance(item, Packet) and item.kind == VIDEO and item.keyframe


async def read_ahead(sub: Subscription, held: list[Item]) -> bool:
    """Move what ``sub`` has queued into ``held``, up to and including its first video
    keyframe; True once ``held`` ends with one (the switch can be made). Never waits."""
    if held and is_keyframe(held[-1]):
        return True
    while len(sub):
        item = await anext(sub)  # queued: returns at once
        held.append(item)
        if is_keyframe(item):
            return True
    return False


class Waiter:
    """A viewer's wait for its stream's next item, which another task may cut short.

    The wait is cut short by cancelling the waiting task, marked as ours so that the
    cancellation is taken back (``Task.uncancel``) and told apart from one that comes from
    outside, which goes on. It is what ``asyncio.timeout`` does, without an object and a
    context manager for each packet: this wait is on every viewer's path for every packet.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[object] | None = None  # waiting now
        self._woken = False

    async def next(self, sub: Subscription, timeout: float | None = None) -> Item | None:
        """``sub``'s next item; None when woken (:meth:`wake`) or after ``timeout`` seconds.
        StopAsyncIteration when the relay ended."""
        if len(sub):
            return await anext(sub)  # queued: returns at once
        task = self._task = asyncio.current_task()
        assert task is not None
        timer = None if timeout is None else task.get_loop().call_later(timeout, self.wake)
        try:
            return await anext(sub)
        except asyncio.CancelledError:
            # Ours only: a cancellation from outside as well must go on.
            if self._woken:
                self._woken = False
                if task.uncancel() == 0:
                    return None
            raise
        finally:
            self._task = None
            if timer is not None:
                timer.cancel()

    def wake(self) -> None:
        """End the wait under way, if any (on the loop, from another task)."""
        task = self._task
        if task is not None and not self._woken:
            self._woken = True
            task.cancel()
