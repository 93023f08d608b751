"""Live view over a WebSocket for Media Source Extensions: the messages of one viewer.

A viewer's feed is a sequence of messages, text (JSON) or binary:

- ``{"type": "init", "codecs", "mime", "width", "height", "stream"}`` then the init segment
  (binary), when the stream (re)starts or its parameter sets change: the player makes a new
  ``SourceBuffer`` for it;
- fragments (binary, ``moof`` + ``mdat``) as frames arrive: the packets queued when the viewer
  is ready for more go out as one fragment (one frame when it keeps up);
- ``{"type": "offline", "since": <ISO time>}`` when the camera's stream is down, and ``init``
  again when it is back;
- ``{"type": "audio", "codec", "played": false, "message"}`` before ``init`` when the stream
  has audio MSE does not play (it plays AAC; G.711 is AAC only with ``live.transcode_audio``):
  the video plays without it;
- ``{"type": "error", "message"}`` when the feed ends for good (the camera was removed).

The feed subscribes to the stream's relay, which starts it at the current GOP (the first picture
at once) and skips a viewer that falls behind to the next keyframe (its queue is bounded): the
fragments then jump forward in decode time, and the player seeks over the hole. A camera that is
changed, disabled or enabled gets a new pipeline, and its old relay ends: the feed looks the
stream up again and follows the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Item, Relay, Subscription
from vms.clock import Clock
from vms.live.audio import NAMES
from vms.live.fmp4 import LiveMuxer, with_params
from vms.media import AAC, VIDEO, Packet, StreamEnd, StreamInfo, StreamStart
from vms.times import iso

log = logging.getLogger(__name__)

Message = str | bytes
# The stream's pipeline as the server runs it now; None once the camera (or stream) is gone.
Lookup = Callable[[], StreamPipeline | None]
# What a browser viewer of a stream reads, while the context lasts (vms.live.source).
Browser = Callable[[StreamPipeline], contextlib.AbstractContextManager[Relay]]

BATCH = 32  # the most packets in one fragment (a viewer catching up after a stall)
# A viewer's queue: a whole GOP fits (10 s of 25 fps video with AAC audio is ~720 packets), so
# the replay that starts it is not cut down to the next keyframe.
QUEUE = 1024
LOOKUP_EVERY_S = 0.2  # how often a feed whose relay ended looks for the stream's next one
# A camera being changed is briefly absent (its old pipeline is stopped before the new one is
# added): only a camera absent for this long is gone.
GONE_AFTER_S = 10.0


def message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


class MseFeed:
    """The messages of one viewer of one stream (see the module docstring)."""

    def __init__(
        self, lookup: Lookup, stream: str, clock: Clock, *, queue: int = QUEUE,
        browser: Browser | None = None,
    ) -> None:  # fmt: skip
        self._lookup = lookup
        self._browser = browser
        self._stream = stream
        self._clock = clock
        self._queue = queue
        self.dropped = 0  # packets the relay dropped for this viewer (it fell behind)
        self._online: bool | None = None  # as last told to the viewer
        self._sub: Subscription | None = None

    @property
    def queued(self) -> int:
        """Items waiting in this viewer's relay queue."""
        return 0 if self._sub is None else len(self._sub)

    async def messages(self) -> AsyncGenerator[Message, None]:
        """The feed; ends when the camera is gone. Close it (``aclose``) to unsubscribe."""
        pipeline = self._lookup()
        while pipeline is not None:
            with self._relay(pipeline) as relay:
                sub = self._sub = relay.subscribe(self._queue)
                try:
                    # The camera's own relay says whether it is offline: a transcoder that
                    # has just started has no picture yet, and that is no outage.
                    if pipeline.relay.info is None and self._online is not False:
                        self._online = False
                        yield message("offline", since=iso(pipeline.health.since_us))
                    async for m in self._follow(sub):
                        yield m
                finally:
                    self.dropped += sub.dropped
                    sub.close()
                    self._sub = None
            pipeline = await self._next(pipeline)
        yield message("error", message="the camera was removed")

    def _relay(self, pipeline: StreamPipeline) -> contextlib.AbstractContextManager[Relay]:
        """The stream's relay, or what a browser plays of it (an H.265 stream's H.264)."""
        if self._browser is None:
            return contextlib.nullcontext(pipeline.relay)
        return self._browser(pipeline)

    async def _next(self, old: StreamPipeline) -> StreamPipeline | None:
        """The stream's pipeline after ``old``'s relay ended (the camera restarts with a new
        one), or None when the camera is gone."""
        absent_since: float | None = None
        while True:
            now = self._lookup()
            if now is not None and now is not old:
                return now
            if now is None:
                t = self._clock.monotonic()
                absent_since = t if absent_since is None else absent_since
                if t - absent_since >= GONE_AFTER_S:
                    return None
            await asyncio.sleep(LOOKUP_EVERY_S)

    async def _follow(self, sub: Subscription) -> AsyncIterator[Message]:
        info: StreamInfo | None = None
        muxer: LiveMuxer | None = None
        held: Item | None = None  # taken from the queue while batching; handled next
        while True:
            if held is not None:
                item, held = held, None
            else:
                try:
                    item = await anext(sub)
                except StopAsyncIteration:
                    return
            if isinstance(item, StreamStart):
                info, muxer, self._online = item.info, None, True
                if info.audio is not None and info.audio.codec != AAC:
                    yield message(
                        "audio", codec=info.audio.codec, played=False,
                        message=f"the camera's {NAMES.get(info.audio.codec, info.audio.codec)} "
                        "audio is not played (MSE "
                        "plays AAC; the server's live.transcode_audio makes AAC of it)",
                    )  # fmt: skip
            elif isinstance(item, StreamEnd):
                info, muxer = None, None
                if self._online is not False:
                    self._online = False
                    yield message("offline", since=iso(self._clock.wall_us()))
            elif isinstance(item, Packet) and info is not None:
                batch = [item]
                while len(sub) and len(batch) < BATCH:
                    nxt = await anext(sub)  # queued: returns at once
                    if not isinstance(nxt, Packet):
                        held = nxt
                        break
                    batch.append(nxt)
                while batch:
                    if muxer is None or muxer.params_changed(batch[0]):
                        muxer, batch = self._start(info, batch)
                        if muxer is None:
                            break
                        yield self._init(muxer)
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

    def _start(
        self, info: StreamInfo, batch: list[Packet]
    ) -> tuple[LiveMuxer | None, list[Packet]]:
        """A muxer from the first video keyframe of ``batch`` whose parameter sets are known
        (in the stream's description or in-band), and the batch from that keyframe on."""
        for i, p in enumerate(batch):
            if p.kind != VIDEO or not p.keyframe:
                continue
            params = p.params if p.params is not None and p.params.complete else None
            try:
                return LiveMuxer(info if params is None else with_params(info, params)), batch[i:]
            except ValueError:
                continue  # parameter sets still unknown: a later keyframe may bring them
        return None, []

    def _init(self, muxer: LiveMuxer) -> str:
        return message(
            "init", codecs=muxer.codecs, mime=muxer.mime, width=muxer.width,
            height=muxer.height, stream=self._stream,
        )  # fmt: skip
