"""Live view over a WebSocket for Media Source Extensions: the messages of one viewer.

A viewer's feed is a sequence of messages, text (JSON) or binary:

- ``{"type": "init", "codecs", "mime", "width", "height", "stream", "streams"}`` then the init
  segment (binary), when the stream (re)starts or its parameter sets change: the player makes a
  new ``SourceBuffer`` for it. ``streams`` gives the camera's streams and their sizes
  (``{"main": [1280, 720], "sub": [320, 240]}``, running ones only), for a player that chooses
  between them. After a switch of stream the message has ``"switch": true``: the player appends
  it to the ``SourceBuffer`` it has (``changeType`` when the codecs differ), the decode times
  going on from the old stream's;
- fragments (binary, ``moof`` + ``mdat``) as frames arrive: the packets queued when the viewer
  is ready for more go out as one fragment (one frame when it keeps up);
- ``{"type": "offline", "since": <ISO time>}`` when the camera's stream is down, and ``init``
  again when it is back;
- ``{"type": "audio", "codec", "played": false, "message"}`` before ``init`` when the stream
  has audio MSE does not play (it plays AAC; G.711 is AAC only with ``live.transcode_audio``):
  the video plays without it;
- ``{"type": "state", "stream", "switching"?}``: the stream the viewer is on, and the one it
  is being switched to, in answer to a select and when the switch is made;
- ``{"type": "error", "message"}`` when the feed ends for good (the camera was removed), or,
  with ``"stream"``, when a select cannot be done (the feed goes on).

The viewer may send ``{"type": "select", "stream": "main" | "sub"}`` (:meth:`MseFeed.select`):
the feed subscribes to that stream's relay as well, and switches when it delivers a video
keyframe, which is at once (the relay replays the current GOP to a new subscriber). Until then
the old stream keeps flowing, so the player never lacks a picture. The new stream's muxer
continues the old one's timeline (:class:`~vms.live.fmp4.LiveMuxer` ``after=``): the replayed
GOP lands right after what the player has, and the player seeks to its live edge, as it does
when it starts. A switch needs the same tracks on both sides (MSE refuses an init segment with
other tracks): from a stream with AAC audio to one without, the init is a plain one (a new
``SourceBuffer``); audio a stream gains is left out.

The feed subscribes to the stream's relay, which starts it at the current GOP (the first picture
at once) and skips a viewer that falls behind to the next keyframe (its queue is bounded): the
fragments then jump forward in decode time, and the player seeks over the hole. A camera that is
changed, disabled or enabled gets a new pipeline, and its old relay ends: the feed looks the
stream up again and follows the new one.

A select arriving while the feed waits for the camera's next packet wakes the wait
(:class:`~vms.live.switch.Waiter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Item, Relay, Subscription
from vms.clock import Clock
from vms.live.audio import NAMES
from vms.live.fmp4 import LiveMuxer, with_params
from vms.live.switch import POLL_S, Waiter, read_ahead, sizes
from vms.media import AAC, VIDEO, Packet, StreamEnd, StreamInfo, StreamStart
from vms.times import iso

log = logging.getLogger(__name__)

Message = str | bytes
# A stream's pipeline as the server runs it now, by stream name; None once the camera (or the
# stream) is gone.
Lookup = Callable[[str], StreamPipeline | None]
# What a browser viewer of a stream reads, while the context lasts (vms.live.source).
Browser = Callable[[str, StreamPipeline], contextlib.AbstractContextManager[Relay]]

STREAMS = ("main", "sub")
BATCH = 32  # the most packets in one fragment (a viewer catching up after a stall)
# A viewer's queue: a whole GOP fits (10 s of 25 fps video with AAC audio is ~720 packets), so
# the replay that starts it is not cut down to the next keyframe.
QUEUE = 1024
LOOKUP_EVERY_S = 0.2  # how often a feed whose relay ended looks for the stream's next one
# A camera being changed is briefly absent (its old pipeline is stopped before the new one is
# added): only a camera absent for this long is gone.
GONE_AFTER_S = 10.0
MAX_NOTES = 8  # messages told and not yet sent, at most


def message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


@dataclasses.dataclass(eq=False)
class _Run:
    """A subscription of the feed to one stream's relay (or what a browser plays of it)."""

    stream: str
    pipeline: StreamPipeline
    relay: Relay
    sub: Subscription
    stack: contextlib.ExitStack
    # Taken from the queue before the switch to this stream (its start, its first keyframe):
    # handled first once it is the current one.
    held: list[Item] = dataclasses.field(default_factory=list)
    keyed: bool = False  # a video keyframe is in ``held``: the switch can be made


class MseFeed:
    """The messages of one viewer of one camera (see the module docstring)."""

    def __init__(
        self, lookup: Lookup, stream: str, clock: Clock, *, queue: int = QUEUE,
        browser: Browser | None = None, streams: Sequence[str] = STREAMS,
    ) -> None:  # fmt: skip
        self._lookup = lookup
        self._browser = browser
        self._stream = stream  # the stream the viewer is on (or will be, once it runs)
        self._streams = tuple(streams)
        self._clock = clock
        self._queue = queue
        self.dropped = 0  # packets the relay dropped for this viewer (it fell behind)
        self._online: bool | None = None  # as last told to the viewer
        self._cur: _Run | None = None
        self._pending: _Run | None = None  # the stream being switched to
        self._requests: list[str] = []  # streams selected, not yet handled
        self._notes: list[str] = []  # messages told, not yet sent
        self._waiter = Waiter()
        self._info: StreamInfo | None = None
        self._muxer: LiveMuxer | None = None
        # The last muxer that sent the viewer media (the stream may have ended since): what a
        # switch continues, the player having it in its SourceBuffer.
        self._sent: LiveMuxer | None = None
        self._after: LiveMuxer | None = None  # the next muxer continues this one's timeline

    @property
    def queued(self) -> int:
        """Items waiting in this viewer's relay queue."""
        return 0 if self._cur is None else len(self._cur.sub)

    @property
    def stream(self) -> str:
        return self._stream

    def select(self, stream: str) -> None:
        """Switch the viewer to ``stream`` (see the module docstring); the feed answers with a
        ``state`` or an ``error`` message. Call on the feed's event loop."""
        self._requests.append(stream)
        self._waiter.wake()

    def tell(self, text: str) -> None:
        """Send the viewer a message (from another task: the feed's is the one that sends).
        A viewer that keeps sending what it should not while reading nothing is told only
        the first few times: the messages are not kept without end."""
        if len(self._notes) < MAX_NOTES:
            self._notes.append(text)
        self._waiter.wake()

    async def messages(self) -> AsyncGenerator[Message, None]:
        """The feed; ends when the camera is gone. Close it (``aclose``) to unsubscribe."""
        try:
            pipeline = self._lookup(self._stream)
            while pipeline is not None:
                run = self._open(self._stream, pipeline)
                self._cur = run
                # The camera's own relay says whether it is offline: a transcoder that has
                # just started has no picture yet, and that is no outage.
                if pipeline.relay.info is None and self._online is not False:
                    self._online = False
                    yield message("offline", since=iso(pipeline.health.since_us))
                async for m in self._follow():
                    yield m
                ended = self._cur
                assert ended is not None
                self._close(ended)
                self._cur = None
                pipeline = await self._next(ended.pipeline)
            yield message("error", message="the camera was removed")
        finally:
            for left in (self._cur, self._pending):
                if left is not None:
                    self._close(left)
            self._cur = self._pending = None

    def _open(self, stream: str, pipeline: StreamPipeline) -> _Run:
        stack = contextlib.ExitStack()
        try:
            if self._browser is None:
                relay = pipeline.relay
            else:
                relay = stack.enter_context(self._browser(stream, pipeline))
            sub = relay.subscribe(self._queue)
        except BaseException:
            stack.close()
            raise
        return _Run(stream, pipeline, relay, sub, stack)

    def _close(self, run: _Run) -> None:
        self.dropped += run.sub.dropped
        run.sub.close()
        run.stack.close()

    async def _next(self, old: StreamPipeline) -> StreamPipeline | None:
        """The stream's pipeline after ``old``'s relay ended (the camera restarts with a new
        one), or None when the camera is gone."""
        absent_since: float | None = None
        while True:
            now = self._lookup(self._stream)
            if now is not None and now is not old:
                return now
            if now is None:
                t = self._clock.monotonic()
                absent_since = t if absent_since is None else absent_since
                if t - absent_since >= GONE_AFTER_S:
                    return None
            await asyncio.sleep(LOOKUP_EVERY_S)

    # --- selecting a stream ------------------------------------------------------------------

    def _answer(self, stream: str) -> list[str]:
        """Handle a select of ``stream``: the messages that answer it."""
        cur = self._cur
        assert cur is not None
        pending = self._pending
        if stream not in self._streams:
            known = " or ".join(self._streams)
            return [message("error", message=f"no stream {stream[:20]!r}: {known}",
                            stream=stream[:20])]  # fmt: skip
        if pending is not None and pending.stream == stream:
            return [self._state()]
        if stream == cur.stream:
            self._drop_pending()
            return [self._state()]
        pipeline = self._lookup(stream)
        if pipeline is None:
            return [message("error", message=f"the camera has no {stream} stream", stream=stream)]
        self._drop_pending()
        run = self._open(stream, pipeline)
        if run.relay is cur.relay:
            # A browser is given one H.264 stream for both (an H.265 camera): nothing to switch.
            self._close(run)
            cur.stream = self._stream = stream
            return [self._state()]
        self._pending = run
        return [self._state()]

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._close(self._pending)
            self._pending = None

    def _state(self) -> str:
        fields: dict[str, Any] = {"stream": self._stream}
        if self._pending is not None:
            fields["switching"] = self._pending.stream
        return message("state", **fields, streams=self._sizes())

    def _switch(self) -> str:
        """Make the stream being switched to the current one; its state message."""
        old, new = self._cur, self._pending
        assert old is not None and new is not None
        self._close(old)
        self._cur, self._pending = new, None
        self._stream = new.stream
        self._after = self._sent
        self._muxer = self._info = None
        return self._state()

    # --- the current stream --------------------------------------------------------------------

    async def _take(self) -> Item | None:
        """The next item of the current stream; None when a select came, or the stream being
        switched to has its keyframe (the caller looks). StopAsyncIteration when the current
        stream's relay ended."""
        cur = self._cur
        assert cur is not None
        if cur.held:
            return cur.held.pop(0)
        while True:
            if self._requests or self._notes:
                return None
            pending = self._pending
            if pending is not None:
                pending.keyed = await read_ahead(pending.sub, pending.held)
                if pending.keyed:
                    return None
                if not len(pending.sub) and self._lookup(pending.stream) is not pending.pipeline:
                    # Its relay ended before the switch (the camera changed): select it anew.
                    self._drop_pending()
                    self._requests.append(pending.stream)
                    return None
            item = await self._waiter.next(cur.sub, None if pending is None else POLL_S)
            if item is not None:
                return item

    async def _follow(self) -> AsyncIterator[Message]:
        """The current stream's messages (switching streams on the way) until its relay ends."""
        held: Item | None = None  # taken from the queue while batching; handled next
        while True:
            if held is not None:
                item: Item | None = held
                held = None
            else:
                cur = self._cur
                assert cur is not None
                try:
                    if cur.held or self._requests or self._notes or self._pending is not None:
                        item = await self._take()
                    else:
                        item = await self._waiter.next(cur.sub)  # the common case, at once
                except StopAsyncIteration:
                    if self._pending is not None:
                        # Its relay ended (the camera changed): go on with the other one.
                        yield self._switch()
                        continue
                    return
            if item is None:
                for m in self._handle_requests():
                    yield m
                continue
            cur = self._cur
            assert cur is not None
            if isinstance(item, StreamStart):
                self._info, self._muxer, self._online = item.info, None, True
                audio = item.info.audio
                if audio is not None and audio.codec != AAC:
                    yield message(
                        "audio", codec=audio.codec, played=False,
                        message=f"the camera's {NAMES.get(audio.codec, audio.codec)} "
                        "audio is not played (MSE "
                        "plays AAC; the server's live.transcode_audio makes AAC of it)",
                    )  # fmt: skip
            elif isinstance(item, StreamEnd):
                self._info, self._muxer = None, None
                if self._online is not False:
                    self._online = False
                    yield message("offline", since=iso(self._clock.wall_us()))
            elif isinstance(item, Packet) and self._info is not None:
                batch = [item]
                while cur.held and len(batch) < BATCH:
                    nxt = cur.held.pop(0)
                    if not isinstance(nxt, Packet):
                        held = nxt
                        break
                    batch.append(nxt)
                while held is None and len(cur.sub) and len(batch) < BATCH:
                    nxt = await anext(cur.sub)  # queued: returns at once
                    if not isinstance(nxt, Packet):
                        held = nxt
                        break
                    batch.append(nxt)
                while batch:
                    muxer = self._muxer
                    if muxer is None or muxer.params_changed(batch[0]):
                        after = self._after if muxer is None else None
                        muxer, batch = self._start(self._info, batch, after)
                        self._muxer = muxer
                        if muxer is None:
                            break
                        self._after, self._sent = None, muxer
                        yield self._init(muxer, switch=muxer.continues)
                        yield muxer.init
                    # Parameter sets that change inside the batch start a new init segment.
                    cut = next(
                        (i for i, p in enumerate(batch) if i and muxer.params_changed(p)),
                        len(batch),
                    )
                    data = muxer.fragment(batch[:cut])
                    if data:
                        yield data
                    batch = batch[cut:]

    def _handle_requests(self) -> list[Message]:
        out: list[Message] = list(self._notes)
        self._notes.clear()
        if self._requests:
            # The latest select wins: those before it would be undone at once.
            out += self._answer(self._requests[-1])
            self._requests.clear()
        if self._pending is not None and self._pending.keyed:
            out.append(self._switch())
        return out

    def _start(
        self, info: StreamInfo, batch: list[Packet], after: LiveMuxer | None
    ) -> tuple[LiveMuxer | None, list[Packet]]:
        """A muxer from the first video keyframe of ``batch`` whose parameter sets are known
        (in the stream's description or in-band), and the batch from that keyframe on; its
        timeline continues ``after``'s when the tracks allow it."""
        for i, p in enumerate(batch):
            if p.kind != VIDEO or not p.keyframe:
                continue
            params = p.params if p.params is not None and p.params.complete else None
            full = info if params is None else with_params(info, params)
            try:
                return _continued(full, after), batch[i:]
            except ValueError:
                continue  # parameter sets still unknown: a later keyframe may bring them
        return None, []

    def _init(self, muxer: LiveMuxer, *, switch: bool) -> str:
        extra: dict[str, Any] = {"switch": True} if switch else {}
        return message(
            "init", codecs=muxer.codecs, mime=muxer.mime, width=muxer.width,
            height=muxer.height, stream=self._stream, streams=self._sizes(), **extra,
        )  # fmt: skip

    def _sizes(self) -> dict[str, list[int]]:
        pipelines = {name: self._lookup(name) for name in self._streams}
        return sizes({name: p.relay for name, p in pipelines.items() if p is not None})


def _continued(info: StreamInfo, after: LiveMuxer | None) -> LiveMuxer:
    """A muxer for ``info``, on ``after``'s timeline when the player can append it to the same
    ``SourceBuffer``: the same tracks (audio the new stream adds is left out; audio it lacks
    makes a plain muxer, a new ``SourceBuffer``)."""
    if after is None:
        return LiveMuxer(info)
    has_aac = info.audio is not None and info.audio.codec == AAC
    if after.has_audio and not has_aac:
        return LiveMuxer(info)
    return LiveMuxer(info, audio=after.has_audio, after=after)
