"""The relay: one loop wake per batch, bounded per-subscriber queues (a slow subscriber loses
its own packets only, never a stream start), asyncio and thread subscribers."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from vms.cameras import relay as relay_mod
from vms.cameras.relay import BlockingSubscription, Item, Relay, Subscription
from vms.clock import SystemClock
from vms.ingest.pyav_source import open_source, read_clip
from vms.media import (
    AUDIO,
    H264,
    VIDEO,
    Packet,
    StreamEnd,
    StreamInfo,
    StreamStart,
    VideoInfo,
)


def pkt(i: int, key: bool, kind: int = VIDEO) -> Packet:
    return Packet(kind, b"x", i, i, key, 0.0)


INFO = StreamInfo(VideoInfo(H264, 90000, 320, 240, None))
OTHER = StreamInfo(VideoInfo(H264, 90000, 640, 480, None))


def run_in_loop(body: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(asyncio.get_running_loop()), 20)

    asyncio.run(main())


def pts_of(items: list[Item]) -> list[int | str]:
    return [it.pts if isinstance(it, Packet) else type(it).__name__ for it in items]


async def take(sub: Subscription, n: int) -> list[Item]:
    out: list[Item] = []
    async for it in sub:
        out.append(it)
        if len(out) == n:
            break
    return out


def test_one_wake_of_the_loop_per_batch_from_a_thread() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        relay = Relay(loop)
        sub = relay.subscribe(maxlen=1000)
        calls: list[int] = []
        real = loop.call_soon_threadsafe

        def counting(*args: Any, **kw: Any) -> Any:
            calls.append(1)
            return real(*args, **kw)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:

            def reader() -> None:
                relay.publish(StreamStart(INFO))
                for i in range(200):
                    relay.publish(pkt(i, key=i % 50 == 0))

            # The loop is busy (in to_thread's await) while the reader publishes 201 items.
            await asyncio.to_thread(reader)
            got = await take(sub, 201)
        finally:
            loop.call_soon_threadsafe = real  # type: ignore[method-assign]
        assert pts_of(got) == ["StreamStart", *range(200)]
        # to_thread's own completion is one call; the relay adds one per drain, not per item.
        assert relay.drains <= 3 and len(calls) <= 4, (relay.drains, len(calls))

    run_in_loop(body)


def test_a_slow_subscriber_skips_to_a_keyframe_and_never_loses_a_stream_start() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        relay = Relay(loop)
        slow = relay.subscribe(maxlen=4)
        fast = relay.subscribe(maxlen=100)

        def reader() -> None:
            relay.publish(StreamStart(INFO))
            for i in range(10):
                relay.publish(pkt(i, key=i % 5 == 0))
            relay.publish(StreamStart(OTHER))  # a restart with new parameters
            relay.publish(pkt(10, key=False))  # not a keyframe: a new stream starts at one
            relay.publish(pkt(11, key=True))
            relay.publish(pkt(12, key=False, kind=AUDIO))

        await asyncio.to_thread(reader)
        got = await take(fast, 14)
        assert pts_of(got) == ["StreamStart", *range(10), "StreamStart", 11, 12]
        assert isinstance(got[11], StreamStart) and got[11].info == OTHER
        # 0..4 filled the slow queue; 5 (a keyframe) overflowed it: 0..3 dropped, 5..9 kept
        # up to the bound, and so on. Both stream starts survive, in order.
        slow_items = await take(slow, len(slow))
        starts = [it for it in slow_items if isinstance(it, StreamStart)]
        assert [s.info for s in starts] == [INFO, OTHER]
        assert slow.dropped > 0 and fast.dropped == 0
        after = slow_items[slow_items.index(starts[1]) + 1 :]
        assert pts_of(after) == [11, 12]
        # Every run of packets the slow subscriber got starts at a video keyframe.
        first = next(it for it in slow_items if isinstance(it, Packet))
        assert first.keyframe

    run_in_loop(body)


def test_a_new_subscriber_gets_the_running_streams_start_first() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        relay = Relay(loop)
        relay.publish(StreamStart(INFO))  # nobody listens yet: only remembered
        relay.publish(pkt(0, key=True))
        sub = relay.subscribe(replay=False)  # no GOP replay: from the next keyframe
        await asyncio.to_thread(relay.publish, pkt(1, key=False))
        await asyncio.to_thread(relay.publish, pkt(2, key=True))
        got = await take(sub, 2)
        assert pts_of(got) == ["StreamStart", 2]
        relay.publish(StreamEnd("camera lost"))
        assert relay.info is None
        sub.close()
        assert len(relay) == 0

    run_in_loop(body)


def test_iteration_ends_when_the_relay_closes() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        relay = Relay(loop)
        sub = relay.subscribe()
        blocking = relay.subscribe_blocking()
        got_thread: list[Item] = []

        def reader_thread() -> None:
            got_thread.extend(blocking)  # returns once the relay is closed

        consumer = asyncio.create_task(asyncio.to_thread(reader_thread))
        await asyncio.to_thread(relay.publish, StreamStart(INFO))
        await asyncio.to_thread(relay.publish, pkt(0, key=True))
        relay.close()
        got = [it async for it in sub]
        await consumer
        assert pts_of(got) == ["StreamStart", 0]
        assert pts_of(got_thread) == ["StreamStart", 0]

    run_in_loop(body)


def test_thread_subscribers_without_a_loop_and_publish_never_blocks() -> None:
    relay = Relay()
    sub = relay.subscribe_blocking(maxlen=2)
    start = time.perf_counter()
    relay.publish(StreamStart(INFO))
    for i in range(100_000):
        relay.publish(pkt(i, key=i % 1000 == 0))
    # ~0.5 s on a quiet machine; the bound only catches a publish that waits for its reader.
    assert time.perf_counter() - start < 10.0
    assert sub.dropped > 99_000
    relay.publish(pkt(100_000, key=True))
    first = sub.get(0)
    assert isinstance(first, StreamStart)
    nxt = sub.get(0)
    assert isinstance(nxt, Packet) and nxt.pts == 100_000
    relay.publish(pkt(100_001, key=False))
    sub.close()
    assert len(relay) == 0
    assert pts_of(list(sub)) == [100_001]  # a closed subscription's iteration ends when empty


def test_looped_clip_plays_at_real_rate_with_increasing_timestamps(clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264_small"])  # 2 s, 50 frames
    stop = threading.Event()
    src = open_source(clips["h264_small"].as_uri(), stop=stop, clock=SystemClock())
    got: list[Packet] = []
    start = time.monotonic()
    for p in src.packets():
        got.append(p)
        if len(got) == 125:  # two and a half passes
            break
    elapsed = time.monotonic() - start
    src.close()
    dts = [p.dts for p in got]
    step = info.video.timescale // 25
    assert all(b - a == step for a, b in itertools.pairwise(dts)), "timeline must not restart"
    # Paced by timestamps: never faster than real time; a loaded machine may be a little late.
    assert 4.6 <= elapsed <= 10.0, f"played 5 s of video in {elapsed:.2f} s"
    assert [p.keyframe for p in got[::25]] == [True] * 5
    assert got[50].data == packets[0].data


def test_a_new_subscriber_starts_with_the_current_gop() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        relay = Relay(loop)
        relay.publish(StreamStart(INFO))  # nobody listens yet: the GOP is kept all the same
        for i in range(8):
            relay.publish(pkt(i, key=i % 5 == 0))
        relay.publish(pkt(8, key=False, kind=AUDIO))
        sub = relay.subscribe()
        await asyncio.to_thread(relay.publish, pkt(9, key=False))
        got = await take(sub, 6)
        assert pts_of(got) == ["StreamStart", 5, 6, 7, 8, 9]
        # A stream end forgets the GOP: the next stream's subscriber waits for its keyframe.
        relay.publish(StreamEnd("camera lost"))
        relay.publish(StreamStart(OTHER))
        relay.publish(pkt(10, key=False))
        late = relay.subscribe()
        relay.publish(pkt(11, key=True))
        assert pts_of(await take(late, 2)) == ["StreamStart", 11]

    run_in_loop(body)


def test_the_gop_replay_is_bounded() -> None:
    relay = Relay()
    relay.publish(StreamStart(INFO))
    relay.publish(Packet(VIDEO, b"k", 0, 0, True, 100.0))
    relay.publish(Packet(VIDEO, b"p", 1, 1, False, 100.0 + relay_mod.GOP_SECONDS + 1))
    sub = relay.subscribe_blocking()
    assert pts_of([sub.get(0)]) == ["StreamStart"] and sub.get(0) is None  # too long: none kept
    relay.publish(Packet(VIDEO, b"k", 2, 2, True, 200.0))
    big = Packet(VIDEO, bytes(relay_mod.GOP_BYTES), 3, 3, False, 200.1)
    relay.publish(big)
    assert pts_of(list(itertools.islice(iter(sub.get, None), 2))) == [2, 3]
    sub.close()
    late = relay.subscribe_blocking()  # too many bytes: none kept
    assert pts_of([late.get(0)]) == ["StreamStart"] and late.get(0) is None


def test_packets_queued_when_a_subscriber_joins_reach_it_once() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        relay = Relay(loop)
        first = relay.subscribe()
        relay.publish(StreamStart(INFO))
        relay.publish(pkt(0, key=True))
        relay.publish(pkt(1, key=False))  # queued, not drained yet: the loop has not run
        second = relay.subscribe()
        relay.publish(pkt(2, key=False))
        want = ["StreamStart", 0, 1, 2]
        assert pts_of(await take(first, 4)) == want
        assert pts_of(await take(second, 4)) == want
        assert len(second) == 0

    run_in_loop(body)


def test_packets_published_while_a_subscriber_joins_arrive_exactly_once() -> None:
    """A reader publishes from its thread while subscribers join, on the loop and from another
    thread: each sees an unbroken run of packets from a keyframe on, never one twice."""

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        relay = Relay(loop)
        relay.publish(StreamStart(INFO))
        done = threading.Event()  # every subscriber joined: the reader may stop
        blocking: list[BlockingSubscription] = []

        def reader() -> None:
            for i in itertools.count():
                relay.publish(pkt(i, key=i % 10 == 0))
                if i % 100 == 99:
                    # In bursts, until every subscriber has joined.
                    if done.wait(0.001):
                        return

        def joiner() -> None:
            for _ in range(20):
                blocking.append(relay.subscribe_blocking(maxlen=1_000_000))
                time.sleep(0.001)

        threads = [threading.Thread(target=reader), threading.Thread(target=joiner)]
        for t in threads:
            t.start()
        subs = []
        for _ in range(50):
            subs.append(relay.subscribe(maxlen=1_000_000))
            await asyncio.sleep(0.001)
        await asyncio.to_thread(threads[1].join)
        done.set()
        await asyncio.to_thread(threads[0].join)
        relay.close()
        runs = [[x async for x in sub] for sub in subs]
        runs += await asyncio.to_thread(lambda: [list(sub) for sub in blocking])
        for items in runs:
            got = [it.pts for it in items if isinstance(it, Packet)]
            if got:
                assert got[0] % 10 == 0  # starts at a keyframe
                assert got == list(range(got[0], got[-1] + 1))  # none lost, none twice

    run_in_loop(body)
