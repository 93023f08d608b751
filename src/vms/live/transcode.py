"""H.265 to H.264 for browsers that decode no HEVC: once per camera stream, shared by all its
viewers, and only while someone watches.

A :class:`Transcoder` reads its source relay from a thread of its own (decoding and encoding
release the GIL in FFmpeg), decodes with PyAV and encodes with libx264 (``ultrafast``,
``zerolatency``, no B-frames), and publishes the result to its own :class:`Relay`, which live
players subscribe to as they would to a camera's. A keyframe in is a keyframe out, so a viewer
joins at the source's GOP boundaries and the recorder's cadence is kept; audio goes through as
it is. :meth:`Transcoder.acquire` starts it for the first viewer; :meth:`release` lets it run
:data:`LINGER_S` more seconds (a viewer that reconnects, or switches tiles, finds it warm) and
then stops it. That lifecycle is :class:`Rendition`'s, which the audio transcoder
(:mod:`vms.live.audio`) shares. :func:`h264_codecs` says what the rendition's codec string will
be before one runs (a multivariant playlist lists it).

The trap: the relay hands out packets in MP4's length-prefixed form, which FFmpeg's HEVC
decoder reads only with an ``hvcC`` in its extradata; rather than building one, each packet is
turned back into Annex B (start codes), the decoder's native input, with the parameter sets put
in front of every keyframe that lacks them. And x264 takes the frame rate for its level from
the time base unless told one: 1/90000 would make every SPS claim level 6.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from fractions import Fraction
from typing import Protocol

import av
import av.video.codeccontext
from av.video.frame import PictureType

from vms.cameras.relay import BlockingSubscription, Item, Relay
from vms.media import (
    H264,
    HEVC,
    VIDEO,
    Packet,
    StreamEnd,
    StreamInfo,
    StreamStart,
    VideoInfo,
    annexb_split,
    collect_params,
    length_prefix,
    length_split,
)

log = logging.getLogger(__name__)

LINGER_S = 10.0
START = b"\x00\x00\x00\x01"
TIMESCALE = 90_000
NOMINAL_FPS = 30  # for the SPS's level only (see _encoder)


def annexb(data: bytes, params: list[bytes] | None = None) -> bytes:
    """A length-prefixed access unit as Annex B, ``params`` (NAL units) first when given."""
    nals = length_split(data)
    return b"".join(START + n for n in (params or []) + nals)


class Rendition:
    """A rendition of a source relay made on a thread of its own, published to its own
    :class:`Relay` for as long as someone watches (see the module). :meth:`acquire` and
    :meth:`release` are called on the event loop's thread; subclasses say how items convert."""

    what = "transcoding"  # for the log

    def __init__(self, source: Relay, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.source = source
        self.loop = loop
        self.name = name
        self.relay = Relay(loop)
        self.viewers = 0
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.TimerHandle | None = None
        self._sub: BlockingSubscription | None = None

    def acquire(self) -> Relay:
        """A viewer arrives: the relay to subscribe to (started if it was not)."""
        self.viewers += 1
        if self._stopping is not None:
            self._stopping.cancel()
            self._stopping = None
        if self._thread is None:
            # A stopped one's relay has ended: a new one. Its thread is handed the relay it
            # publishes to, so that an old thread still finishing never ends the new relay.
            relay = self.relay = Relay(self.loop)
            sub = self.source.subscribe_blocking()
            self._sub = sub
            self._thread = threading.Thread(
                target=self._run, args=(sub, relay), name=f"{self.what} {self.name}", daemon=True
            )
            self._thread.start()
            log.info("%s: %s for live viewers", self.name, self.what)
        return self.relay

    def release(self) -> None:
        """A viewer left: stop :data:`LINGER_S` after the last one."""
        self.viewers = max(0, self.viewers - 1)
        if self.viewers == 0 and self._thread is not None and self._stopping is None:
            self._stopping = self.loop.call_later(LINGER_S, self.stop)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        """Stop now (its subscription ends, its thread finishes on its own)."""
        self._stopping = None
        if self._sub is not None:
            self._sub.close()
        self._sub = None
        self._thread = None
        log.info("%s: %s stopped (no viewer)", self.name, self.what)

    def _converter(self) -> Converter:
        raise NotImplementedError

    # --- the thread ------------------------------------------------------------------------

    def _run(self, sub: BlockingSubscription, relay: Relay) -> None:
        converter = self._converter()
        try:
            for item in sub:
                for out in converter.feed(item):
                    relay.publish(out)
        except Exception:
            log.exception("%s: %s failed", self.name, self.what)
            relay.publish(StreamEnd(f"{self.what} failed"))
        # The source ended (the camera restarts with a new relay) or this was stopped: so do
        # the viewers' subscriptions, and they look for the camera's stream again.
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server stopped
            self.loop.call_soon_threadsafe(relay.close)


class Converter(Protocol):
    """What a rendition's thread does with each item of its source: the items to publish."""

    def feed(self, item: Item) -> list[Item]: ...


class Transcoder(Rendition):
    """One camera stream's H.264 rendition (see the module)."""

    what = "transcoding H.265 to H.264"

    def __init__(self, source: Relay, loop: asyncio.AbstractEventLoop, name: str) -> None:
        super().__init__(source, loop, name)
        self.frames_in = 0

    def _converter(self) -> Converter:
        return _Video(self)


class _Video:
    """The video of one run of the thread: H.265 decoded and encoded again, all else as it
    is (a stream that turns out not to be H.265 goes through untouched)."""

    def __init__(self, owner: Transcoder) -> None:
        self.owner = owner
        self.session: _Session | None = None

    def feed(self, item: Item) -> list[Item]:
        session = self.session
        if isinstance(item, StreamStart):
            self.session = _Session(item.info) if item.info.video.codec == HEVC else None
            return [] if self.session is not None else [item]  # not H.265: as it is
        if isinstance(item, StreamEnd):
            self.session = None
            return [*(session.flush() if session is not None else ()), item]
        if not isinstance(item, Packet) or session is None:
            return [item]
        if item.kind != VIDEO:
            return [item] if session.started else []
        self.owner.frames_in += 1
        return list(session.feed(item))


class _Session:
    """One connection's decoder and encoder (a new stream start makes a new one)."""

    def __init__(self, info: StreamInfo) -> None:
        self.info = info
        params = info.video.params
        self.params = [*params.vps, *params.sps, *params.pps] if params else []
        self.decoder = av.CodecContext.create("hevc", "r")
        self.encoder: av.video.codeccontext.VideoCodecContext | None = None
        self.started = False

    def feed(self, p: Packet) -> list[StreamStart | Packet]:
        nals = length_split(p.data)
        have = collect_params(HEVC, nals)
        if have is not None and have.complete:
            self.params = [*have.vps, *have.sps, *have.pps]
        data = annexb(p.data, self.params if p.keyframe and have is None else None)
        packet = av.Packet(data)
        packet.pts, packet.dts = p.pts, p.dts
        packet.time_base = Fraction(1, self.info.video.timescale)
        return self._encode(self.decoder.decode(packet), p.arrival)

    def flush(self) -> list[StreamStart | Packet]:
        """The frames the decoder and the encoder still hold (the stream ended)."""
        out = self._encode(self.decoder.decode(None), 0.0)
        if self.encoder is not None:
            for enc in self.encoder.encode(None):
                out += self._emit(enc, 0.0)
        return out

    def _encode(self, frames: list[av.VideoFrame], arrival: float) -> list[StreamStart | Packet]:
        out: list[StreamStart | Packet] = []
        for frame in frames:
            if frame.format.name != "yuv420p":  # 10-bit or full-range sources
                frame = frame.reformat(format="yuv420p")
            if self.encoder is None:
                self.encoder = _encoder(frame.width, frame.height)
            # A decoder with reordering gives frames later than their packets: the frame's own
            # key flag, not the packet's, says where the source's keyframes are.
            frame.pict_type = PictureType.I if frame.key_frame else PictureType.NONE
            # A bare decoder gives its frames no time base: their pts are the packets'.
            frame.pts = (frame.pts or 0) * TIMESCALE // self.info.video.timescale
            frame.time_base = Fraction(1, TIMESCALE)
            for enc in self.encoder.encode(frame):
                out += self._emit(enc, arrival)
        return out

    def _emit(self, enc: av.Packet, arrival: float) -> list[StreamStart | Packet]:
        nals = annexb_split(bytes(enc))
        out: list[StreamStart | Packet] = []
        params = collect_params(H264, nals)
        if not self.started:
            if not enc.is_keyframe or params is None or not params.complete:
                return out  # a viewer can only start at a keyframe with its parameter sets
            assert self.encoder is not None
            video = VideoInfo(H264, TIMESCALE, self.encoder.width, self.encoder.height, params)
            out.append(StreamStart(StreamInfo(video, self.info.audio)))
            self.started = True
        pts = enc.pts or 0
        dts = enc.dts if enc.dts is not None else pts
        out.append(Packet(VIDEO, length_prefix(nals), pts, dts, enc.is_keyframe, arrival,
                          params))  # fmt: skip
        return out


def _encoder(width: int, height: int) -> av.video.codeccontext.VideoCodecContext:
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.video.codeccontext.VideoCodecContext)
    enc.width, enc.height = width, height
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, TIMESCALE)
    # Timestamps say when frames are (x264 takes them as variable frame rate); the rate only
    # sets the level in the SPS, which from the time base alone would claim 90 000 fps.
    enc.framerate = Fraction(NOMINAL_FPS)
    # Keyframes where the source has them (pict_type I), never on x264's own schedule.
    params = "bframes=0:keyint=infinite:scenecut=0:repeat-headers=1"
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": params}
    return enc


@functools.lru_cache(maxsize=32)
def h264_codecs(width: int, height: int) -> str:
    """The RFC 6381 codec string (``avc1.…``) of this module's H.264 at that size, known
    before any transcoder runs (a multivariant playlist lists it): one black frame encoded
    with the same settings (tens of milliseconds: call it from a worker thread)."""
    enc = _encoder(width, height)
    frame = av.VideoFrame(width, height, "yuv420p")
    frame.pts, frame.pict_type = 0, PictureType.I
    data = b"".join(bytes(p) for p in [*enc.encode(frame), *enc.encode(None)])
    params = collect_params(H264, annexb_split(data))
    if params is None or not params.sps:
        raise ValueError(f"libx264 made no SPS for {width}x{height}")
    return "avc1." + params.sps[0][1:4].hex()
