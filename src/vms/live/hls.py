"""Live HLS of one camera stream: Low-Latency HLS parts (RFC 8216bis) and whole segments for
plain HLS players, cut from the relay's packets as they come, kept in memory.

**Parts** (``EXT-X-PART``) hold at most :data:`PART_TARGET_S` of video, each one ``moof`` +
``mdat`` of the live muxer (:class:`~vms.live.fmp4.LiveMuxer`). A keyframe always starts a
part, so every GOP opens with an independent part (``INDEPENDENT=YES``) where a player may
join. Cutting only when a part is full would leave a one-frame part before each keyframe (12 +
12 + 1 frames for a 25-frame GOP), so once a GOP has been seen its frames are shared out
evenly: the fewest parts of at most the target each (9 + 8 + 8 frames for that GOP); a part
that would still pass the target (the GOP grew, a frame came late) is cut when full. A part
ends where the next one begins, so it is published when the next video frame arrives: its
duration is then known, not guessed (one frame interval of delay).

**Segments** (``EXTINF``) are a run of whole parts, cut at a keyframe once they last
:data:`SEGMENT_TARGET_S`; a segment's bytes are its parts' bytes one after the other, a complete
fMP4 segment for players that ignore parts (ffmpeg, Safari without LL-HLS). With a GOP longer
than the target a segment lasts until the next keyframe, and at most :data:`MAX_SEGMENT_S`
(then it is cut at a part and the next segment starts without a keyframe: a camera that never
sends one must not grow memory). A stream's first segment ends at its second keyframe: players
start only once a segment is complete, and the relay hands a new subscriber the GOP under way,
so the first viewer waits one GOP at most.

**Target duration.** ``EXT-X-TARGETDURATION`` may not change while a playlist lives, but a long
GOP is only known once it has been seen. It starts at the target (2) and rises to the longest
segment (rounded to the nearest second, as RFC 8216 compares ``EXTINF``) when a camera's GOP
is longer; it never falls. hls.js and ffmpeg follow a change; a camera with GOPs of at most
2 s never causes one.

**Numbers.** Media sequence numbers start at the wall clock's seconds and part numbers at a
hundred times that: a stream makes fewer segments and a hundred times fewer parts than
seconds pass, so a segmenter started again later does not reuse a URI of an earlier one.
Parts are named by their own number, not by segment and index: the next part's URI (the
``EXT-X-PRELOAD-HINT``) must be valid before anyone knows whether a keyframe will start a new
segment with it.

**Discontinuities.** Each stream start (the camera reconnected) and each change of parameter
sets starts a new muxer, whose decode time starts again at 0: the next segment carries
``EXT-X-DISCONTINUITY``, and a new ``EXT-X-MAP`` when the init segment differs.

:class:`Segmenter` is the synchronous part (items in, playlist and media out);
:class:`LiveStream` feeds it from a relay subscription on the event loop and lets requests
wait for a part; :class:`LiveStreams` starts one per camera stream on demand and stops it
when no one has asked for :data:`IDLE_S`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Hashable, Sequence

from vms.cameras.relay import Item, Relay
from vms.clock import Clock
from vms.live.fmp4 import LiveMuxer, with_params
from vms.media import VIDEO, Packet, StreamEnd, StreamInfo, StreamStart
from vms.times import iso

log = logging.getLogger(__name__)

PART_TARGET_S = 0.5
# PART-HOLD-BACK, in part targets: hls.js plays this far behind the newest part. RFC 8216bis
# asks for at least two and advises three; two keeps LL-HLS near 1.1 s glass-to-glass (its
# budget is 1.5 s), and parts that share out a GOP evenly are shorter than the target (three
# of them fit).
HOLD_BACK_PARTS = 2
SEGMENT_TARGET_S = 2.0
MAX_SEGMENT_S = 12.0
WINDOW = 6  # complete segments kept (and listed)
IDLE_S = 30.0  # a segmenter no one asked anything for this long stops
VERSION = 9
MAX_STEP_S = 2.0  # a larger step between frames is a jump (as the muxer judges it)

# Where a resource is served: (kind, number) -> URI; kind is "init", "segment" or "part".
Uri = Callable[[str, int], str]
# The relay a stream reads instead of the camera's, held while the stream runs.
Via = Callable[[], contextlib.AbstractContextManager[Relay]]


@dataclasses.dataclass(frozen=True, slots=True)
class Init:
    number: int
    data: bytes
    codecs: str
    width: int
    height: int


@dataclasses.dataclass(frozen=True, slots=True)
class Part:
    number: int
    msn: int
    index: int  # within its segment
    duration: float  # seconds
    independent: bool
    data: bytes
    published: float  # monotonic seconds


@dataclasses.dataclass(slots=True)
class Segment:
    msn: int
    init: Init
    discontinuity: bool
    start_us: int  # wall time of its first frame's arrival
    parts: list[Part] = dataclasses.field(default_factory=list)
    complete: bool = False

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)

    @property
    def data(self) -> bytes:
        return b"".join(p.data for p in self.parts)


def parts_per_gop(gop: int, delta: int, target: int) -> int:
    """The fewest parts of at most ``target`` ticks a GOP of ``gop`` frames ``delta`` ticks
    apart splits into, the frames shared out evenly (parts differ by one frame at most)."""
    n = max(1, math.ceil(gop * delta / target))
    while n < gop and math.ceil(gop / n) * delta > target:
        n += 1
    return n


class Segmenter:
    """One camera stream's parts and segments (see the module); feed it the relay's items."""

    def __init__(
        self,
        clock: Clock,
        *,
        part_s: float = PART_TARGET_S,
        segment_s: float = SEGMENT_TARGET_S,
        window: int = WINDOW,
    ) -> None:
        self.clock = clock
        self.part_s, self.segment_s, self.window = part_s, segment_s, window
        self.segments: collections.deque[Segment] = collections.deque()
        self.discontinuity_sequence = 0
        self.target = max(1, math.ceil(segment_s))
        self.live = False  # a stream runs (a start seen, no end since)
        self.ended: str | None = None  # why the stream last ended
        first = clock.wall_us() // 1_000_000
        self.next_msn = first
        self.next_part = first * 100
        self._init: Init | None = None
        self._info: StreamInfo | None = None
        self._muxer: LiveMuxer | None = None
        self._discontinuity = False
        self._pending: list[Packet] = []  # the part being filled
        self._independent = False
        self._ts = 1  # video timescale
        self._t = 0  # the last video frame's time on this muxer's timeline (ticks)
        self._last_dts = 0
        self._delta = 0  # the last frame interval (ticks)
        self._part_start = 0
        self._segment_start = 0
        self._since_key = 0  # frames since the last keyframe
        self._gop = 0  # frames in the last whole GOP (0: none seen yet)
        self._first = False  # the segment being cut is its muxer's first
        self._parts = 1  # parts that GOP split into

    # --- what players see ----------------------------------------------------------------

    @property
    def position(self) -> tuple[int, int] | None:
        """(msn, index) of the newest published part; None before the first."""
        for seg in reversed(self.segments):
            if seg.parts:
                return seg.msn, seg.parts[-1].index
        return None

    @property
    def ready(self) -> bool:
        """Whether a segment is complete: players start no sooner (hls.js calls a playlist of
        parts only empty, ffmpeg waits for segments)."""
        return any(seg.complete for seg in self.segments)

    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist holds segment ``msn`` complete (``part`` None) or its part
        ``part``, or anything later (RFC 8216bis blocking reload)."""
        for seg in reversed(self.segments):
            if seg.msn > msn and seg.parts:
                return True
            if seg.msn == msn:
                # A segment that ended with fewer parts: the next part is a later segment's.
                return seg.complete if part is None else len(seg.parts) > part
        return False

    def too_far(self, msn: int, part: int | None) -> bool:
        """Whether a blocking reload asks further ahead than RFC 8216bis lets a client: a
        segment more than two after the newest, or a part more than the Advance Part Limit
        (three divided by the part target under a second, else three) after the newest."""
        last_msn, last_part = self.position or (self.next_msn, -1)
        if msn > last_msn + 2:
            return True
        if part is None or msn < last_msn:
            return False
        limit = int(3 / self.part_s) if self.part_s < 1 else 3
        # A later segment's parts come after whatever the newest one still gets: counted low.
        ahead = part - last_part if msn == last_msn else part + 1
        return ahead > limit

    def segment(self, msn: int) -> Segment | None:
        for seg in self.segments:
            if seg.msn == msn:
                return seg
        return None

    def part(self, number: int) -> Part | None:
        for seg in reversed(self.segments):
            if seg.parts and seg.parts[0].number <= number:
                i = number - seg.parts[0].number
                return seg.parts[i] if i < len(seg.parts) else None
        return None

    def init(self, number: int) -> Init | None:
        for seg in self.segments:
            if seg.init.number == number:
                return seg.init
        init = self._init
        return init if init is not None and init.number == number else None

    @property
    def current_init(self) -> Init | None:
        return self._init

    def playlist(self, uri: Uri, reports: Sequence[str] = ()) -> str:
        """The media playlist (call once :attr:`position` is not None); ``reports`` are the
        other renditions' ``EXT-X-RENDITION-REPORT`` lines (:meth:`report`)."""
        segs = [s for s in self.segments if s.parts]
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{VERSION}",
            f"#EXT-X-TARGETDURATION:{self.target}",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
            f"PART-HOLD-BACK={HOLD_BACK_PARTS * self.part_s:.3f}",
            f"#EXT-X-PART-INF:PART-TARGET={self.part_s:.3f}",
            f"#EXT-X-MEDIA-SEQUENCE:{segs[0].msn if segs else self.next_msn}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}",
        ]
        # Parts are listed for the last three target durations only (RFC 8216bis 6.2.2).
        listed_from = len(segs)
        span = 0.0
        while listed_from > 0 and span < 3 * self.target:
            listed_from -= 1
            span += segs[listed_from].duration
        init: Init | None = None
        for i, seg in enumerate(segs):
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.init is not init:
                init = seg.init
                lines.append(f'#EXT-X-MAP:URI="{uri("init", init.number)}"')
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{pdt(seg.start_us)}")
            if i >= listed_from:
                for p in seg.parts:
                    flag = ",INDEPENDENT=YES" if p.independent else ""
                    lines.append(f'#EXT-X-PART:DURATION={p.duration:.5f},'
                                 f'URI="{uri("part", p.number)}"{flag}')  # fmt: skip
            if seg.complete:
                lines.append(f"#EXTINF:{seg.duration:.5f},")
                lines.append(uri("segment", seg.msn))
        if self.live:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{uri("part", self.next_part)}"')
        return "\n".join([*lines, *reports, ""])

    def report(self, playlist_uri: str) -> str | None:
        """This rendition's ``EXT-X-RENDITION-REPORT`` for another rendition's playlist (a
        player switching to it asks for the right part at once); None before a part."""
        pos = self.position
        if pos is None:
            return None
        return f'#EXT-X-RENDITION-REPORT:URI="{playlist_uri}",LAST-MSN={pos[0]},LAST-PART={pos[1]}'

    # --- what the relay sends ------------------------------------------------------------

    def feed(self, item: Item) -> bool:
        """Take one relay item; True when a part (or the end of a stream) was published."""
        if isinstance(item, Packet):
            return self._packet(item)
        if isinstance(item, StreamStart):
            done = self._flush()
            self._info, self._muxer = item.info, None
            self.live, self.ended = True, None
            return done
        if isinstance(item, StreamEnd):
            self._flush()
            self._info = self._muxer = None
            self.live, self.ended = False, item.reason
            return True
        return False  # FragmentWritten: the recorder's business

    def _packet(self, p: Packet) -> bool:
        if p.kind != VIDEO:
            if self._pending and self._muxer is not None and self._muxer.has_audio:
                self._pending.append(p)
            return False
        muxer = self._muxer
        if muxer is None or (p.keyframe and muxer.params_changed(p)):
            return self._restart(p)
        dts = p.dts
        step = dts - self._last_dts
        if step == 0:  # another slice of the same picture
            self._pending.append(p)
            return False
        self._last_dts = dts
        if 0 < step <= MAX_STEP_S * self._ts:
            self._delta = step
        # The muxer puts a frame that goes back in time one interval on; forward jumps stay.
        self._t += step if step > 0 else self._delta
        t, delta = self._t, self._delta
        since_segment = t - self._segment_start
        long_enough = 2 * since_segment + delta >= 2 * self.segment_s * self._ts
        new_segment = (p.keyframe and (long_enough or self._first)
                       ) or since_segment >= MAX_SEGMENT_S * self._ts  # fmt: skip
        i, gop, n = self._since_key, self._gop, self._parts
        even = 0 < i < gop and i * n // gop > (i - 1) * n // gop
        full = t + delta - self._part_start > self.part_s * self._ts
        published = False
        if new_segment or p.keyframe or even or full:
            published = self._close_part(t - self._part_start, end_segment=new_segment)
            if new_segment:
                self._start_segment(p)
                self._first = False
            self._part_start = t
            self._independent = p.keyframe
        if p.keyframe:
            if self._since_key and delta:
                self._gop = self._since_key
                self._parts = parts_per_gop(self._gop, delta, int(self.part_s * self._ts))
            self._since_key = 0
        self._since_key += 1
        self._pending.append(p)
        return published

    def _restart(self, p: Packet) -> bool:
        """A new muxer from keyframe ``p`` (the first of a stream, or new parameter sets)."""
        info = self._info
        if info is None or not p.keyframe:
            return False  # before a stream start, or waiting for its first keyframe
        if p.params is not None and p.params.complete and p.params != info.video.params:
            info = self._info = with_params(info, p.params)
        try:
            muxer = LiveMuxer(info)
        except ValueError:
            return False  # no parameter sets yet: wait for a keyframe that carries them
        published = self._flush()
        self._muxer = muxer
        if self._init is None or self._init.data != muxer.init:
            number = self._init.number + 1 if self._init is not None else 0
            self._init = Init(number, muxer.init, muxer.codecs, muxer.width, muxer.height)
        self._ts = info.video.timescale
        self._t = self._part_start = self._segment_start = 0
        self._last_dts = p.dts
        self._delta = self._since_key = self._gop = 0
        self._start_segment(p)
        self._first = True
        self._independent = True
        self._since_key = 1
        self._pending.append(p)
        return published

    def _start_segment(self, p: Packet) -> None:
        assert self._init is not None
        age_us = int((self.clock.monotonic() - p.arrival) * 1e6)
        self.segments.append(
            Segment(self.next_msn, self._init, self._discontinuity,
                    self.clock.wall_us() - max(0, age_us))
        )  # fmt: skip
        self.next_msn += 1
        self._discontinuity = False
        self._segment_start = self._t
        complete = sum(1 for s in self.segments if s.complete)
        while complete > self.window:
            complete -= self.segments.popleft().complete
            head = self.segments[0]
            if head.discontinuity:
                # Its tag leaves the playlist with the segment before it: the sequence counts it.
                head.discontinuity = False
                self.discontinuity_sequence += 1

    def _close_part(self, duration_ticks: int, *, end_segment: bool) -> bool:
        """Publish the pending packets as a part of the newest segment."""
        if not self._pending or self._muxer is None or not self.segments:
            return False
        seg = self.segments[-1]
        data = self._muxer.fragment(self._pending)
        self._pending = []
        if data:
            seg.parts.append(
                Part(self.next_part, seg.msn, len(seg.parts), duration_ticks / self._ts,
                     self._independent, data, self.clock.monotonic())
            )  # fmt: skip
            self.next_part += 1
        if end_segment and seg.parts:
            seg.complete = True
            self.target = max(self.target, round(seg.duration))
        return bool(data)

    def _flush(self) -> bool:
        """The stream stops or starts again: publish what is pending (its last frame lasting
        the last interval) and end the segment; what follows is a discontinuity."""
        if self._muxer is None:
            return False
        published = self._close_part(self._t + (self._delta or self._ts // 25) - self._part_start,
                                     end_segment=True)  # fmt: skip
        if self.segments and not self.segments[-1].parts:
            self.segments.pop()  # started, nothing in it
        self._discontinuity = bool(self.segments)
        self._muxer = None
        return published


def pdt(us: int) -> str:
    """EXT-X-PROGRAM-DATE-TIME wants milliseconds (``iso`` gives six decimals)."""
    return iso(us)[:-4] + "Z"


class LiveStream:
    """A :class:`Segmenter` fed by a subscription to ``relay`` on the running event loop, until
    :meth:`stop`, the relay's end, or :data:`IDLE_S` without a :meth:`touch`. With ``via`` it
    reads the relay ``via()`` gives instead (a rendition of the camera's: the H.264 of an
    H.265 stream), held while it runs; ``relay`` stays the camera's, which says whether this
    stream is still the camera's current one."""

    def __init__(
        self, relay: Relay, clock: Clock, idle_s: float, on_stop: Callable[[LiveStream], None],
        via: Via | None = None,
    ) -> None:  # fmt: skip
        self.relay = relay
        self.clock = clock
        self.segmenter = Segmenter(clock)
        self.idle_s = idle_s
        self.last_asked = clock.monotonic()
        self.stopped = False
        self._on_stop = on_stop
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._held = contextlib.ExitStack()
        self._sub = (self._held.enter_context(via()) if via is not None else relay).subscribe()
        self._task = loop.create_task(self._run(), name="live-hls")
        self._timer = loop.call_later(idle_s, self._check_idle)

    def touch(self) -> None:
        """Someone asked: keep going."""
        self.last_asked = self.clock.monotonic()

    async def until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` (checked after each part published), at most ``timeout``
        seconds; False when it timed out, the stream ended or this stopped first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            left = deadline - loop.time()
            if left <= 0 or self.stopped or self.segmenter.ended is not None:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass
        return True

    def stop(self) -> None:
        self._task.cancel()
        self._sub.close()  # a task cancelled before it ran never reaches its finally
        self._halt()

    async def _run(self) -> None:
        try:
            async for item in self._sub:
                if self.segmenter.feed(item):
                    self._wake()
        except Exception:  # a bug: this stream's viewers get 404s and start it again
            log.exception("live HLS segmenter stopped")
        finally:
            self._sub.close()
            self._halt()

    def _wake(self) -> None:
        # Waiters hold the old event: set it, and later waits take the new one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _halt(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._timer.cancel()
        self._held.close()  # a rendition it read: released (it lingers, then stops)
        self._wake()
        self._on_stop(self)

    def _check_idle(self) -> None:
        idle = self.clock.monotonic() - self.last_asked
        if idle >= self.idle_s:
            self.stop()
        else:
            self._timer = asyncio.get_running_loop().call_later(
                self.idle_s - idle, self._check_idle
            )


class LiveStreams:
    """A server's live HLS streams by key (camera and stream), each started on the first
    request and stopped :data:`IDLE_S` after the last. Use on the event loop only."""

    def __init__(self, clock: Clock, idle_s: float = IDLE_S) -> None:
        self.clock = clock
        self.idle_s = idle_s
        self._streams: dict[Hashable, LiveStream] = {}

    def open(self, key: Hashable, relay: Relay, via: Via | None = None) -> LiveStream:
        """The running stream of ``key``, started if there is none (or its camera's relay was
        replaced: the camera was changed or restarted); ``via``: see :class:`LiveStream`."""
        stream = self.running(key, relay)
        if stream is None:
            old = self._streams.get(key)
            if old is not None:
                old.stop()
            stream = LiveStream(relay, self.clock, self.idle_s, lambda s: self._forget(key, s),
                                via)  # fmt: skip
            self._streams[key] = stream
        return stream

    def running(self, key: Hashable, relay: Relay, *, touch: bool = True) -> LiveStream | None:
        """The running stream of ``key`` on ``relay`` (touched, unless ``touch`` is False);
        None when there is none."""
        stream = self._streams.get(key)
        if stream is None or stream.stopped or stream.relay is not relay:
            return None
        if touch:
            stream.touch()
        return stream

    def _forget(self, key: Hashable, stream: LiveStream) -> None:
        if self._streams.get(key) is stream:
            del self._streams[key]

    def stop(self) -> None:
        for stream in list(self._streams.values()):
            stream.stop()

    def __len__(self) -> int:
        return len(self._streams)
