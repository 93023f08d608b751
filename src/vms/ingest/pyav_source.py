"""Media sources: PyAV opens a camera (RTSP/RTSPS) or a clip played in a loop as a live camera.

Every call here blocks (network, file) and runs in the camera's ingest thread, never on the
event loop. PyAV's ``timeout=(open, read)`` arms FFmpeg's interrupt callback, so no call blocks
longer than the open timeout or, once streaming, the stall timeout.

Trap: PyAV's error messages carry the URL it was given, credentials included. Errors leave this
module through :func:`describe`, which keeps the FFmpeg reason and drops the URL.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import av.error

from vms.clock import Clock
from vms.config import redact
from vms.errors import Kind, VmsError
from vms.media import (
    AAC,
    AUDIO,
    H264,
    HEVC,
    PCMA,
    PCMU,
    VIDEO,
    AudioInfo,
    Packet,
    StreamInfo,
    VideoInfo,
    annexb_split,
    collect_params,
    dimensions,
    has_keyframe,
    length_prefix,
    length_split,
    params_from_extradata,
)

TIMED_OUT = "timed out (no data)"

# What FFmpeg may open beneath a camera's URL. RTSP runs over tcp (interleaved) or rtp/udp, and
# RTSPS over tls; nothing else: no file, pipe, concat, subfile, data or http. A clip is a file.
RTSP_PROTOCOLS = "rtsp,rtsps,tcp,udp,rtp,tls"
FILE_PROTOCOLS = "file"

VIDEO_CODECS = {"h264": H264, "hevc": HEVC}
AUDIO_CODECS = {"aac": AAC, "pcm_mulaw": PCMU, "pcm_alaw": PCMA}


def describe(e: BaseException) -> str:
    """An operator-facing reason for a source failure, without the URL or its secrets."""
    if isinstance(e, VmsError):
        return e.message
    if isinstance(e, TimeoutError | av.error.ExitError):  # socket timeout; interrupted open
        return TIMED_OUT
    if isinstance(e, av.error.FFmpegError):
        return redact(e.strerror or type(e).__name__)
    if isinstance(e, OSError):
        return redact(e.strerror or type(e).__name__)
    return redact(f"{type(e).__name__}: {e}")


def _ticks(value: int, tb: Fraction) -> int:
    """A timestamp in ``tb`` units as ticks of ``1/tb.denominator``."""
    return value * tb.numerator


class Source:
    """An opened stream. ``packets()`` yields until the stream ends, stalls or ``stop`` is set."""

    def __init__(
        self,
        container: Any,
        *,
        live: bool,
        stop: threading.Event,
        clock: Clock,
    ) -> None:
        self.container = container
        self.live = live
        self.stop = stop
        self.clock = clock
        vs = next((s for s in container.streams.video), None)
        if vs is None:
            raise VmsError(Kind.UNAVAILABLE, "the stream has no video track")
        codec = VIDEO_CODECS.get(vs.codec_context.name)
        if codec is None:
            raise VmsError(
                Kind.UNAVAILABLE,
                f"video codec {vs.codec_context.name} is not supported (H.264/H.265)",
            )
        self.vstream = vs
        self.vtb = Fraction(vs.time_base)
        extradata = vs.codec_context.extradata
        params = params_from_extradata(codec, extradata)
        # Trap: decide the packet format per stream, never per packet. A length prefix such as
        # 00 00 01 95 looks exactly like a 3-byte start code. avcC/hvcC extradata (MP4 files)
        # starts with version 1; RTSP gives Annex B extradata or none.
        self.annexb = not extradata or extradata[0] == 0
        width, height = vs.codec_context.width or 0, vs.codec_context.height or 0
        if params is not None and params.complete:
            with contextlib.suppress(ValueError, IndexError):
                width, height = dimensions(params)
        video = VideoInfo(codec, self.vtb.denominator, width, height, params)
        self.astream = None
        audio = None
        for s in container.streams.audio:
            acodec = AUDIO_CODECS.get(s.codec_context.name)
            if acodec is not None and s.codec_context.sample_rate:
                self.astream = s
                ctx = s.codec_context
                channels = ctx.channels if hasattr(ctx, "channels") else ctx.layout.nb_channels
                audio = AudioInfo(
                    acodec, ctx.sample_rate, ctx.sample_rate, channels, bytes(ctx.extradata or b"")
                )
                break
        self.atb = Fraction(self.astream.time_base) if self.astream is not None else Fraction(1)
        self.info = StreamInfo(video, audio)
        self.codec = codec

    def close(self) -> None:
        with contextlib.suppress(av.error.FFmpegError):
            self.container.close()

    def _video(self, p: Any, now: float, offset: int) -> Packet | None:
        if p.pts is None or not p.size:
            return None
        raw = bytes(p)
        codec = self.codec
        key = bool(p.is_keyframe)
        params = None
        if self.annexb:
            nals = annexb_split(raw)
            data = length_prefix(nals)
            if not key:
                key = has_keyframe(codec, nals)
            if key:
                params = collect_params(codec, nals)
        else:
            data = raw
            if key:
                params = collect_params(codec, length_split(raw))
        pts = _ticks(p.pts, self.vtb) + offset
        dts = pts if p.dts is None else _ticks(p.dts, self.vtb) + offset
        return Packet(VIDEO, data, pts, dts, key, now, params)

    def _audio(self, p: Any, now: float) -> Packet | None:
        if p.pts is None or not p.size:
            return None
        assert self.info.audio is not None
        rate = self.info.audio.timescale
        pts = int(p.pts * self.atb * rate)
        dts = pts if p.dts is None else int(p.dts * self.atb * rate)
        return Packet(AUDIO, bytes(p), pts, dts, True, now, None)

    def packets(self) -> Iterator[Packet]:
        streams = [self.vstream] + ([self.astream] if self.astream is not None else [])
        if self.live:
            for p in self.container.demux(streams):
                if self.stop.is_set():
                    return
                now = self.clock.monotonic()
                out = self._video(p, now, 0) if p.stream is self.vstream else self._audio(p, now)
                if out is not None:
                    yield out
            raise VmsError(Kind.UNAVAILABLE, "the camera ended the stream")
        yield from self._loop(streams)

    def _loop(self, streams: list[Any]) -> Iterator[Packet]:
        """Play a clip at its own rate, forever, with timestamps that keep increasing."""
        offset = 0  # video ticks added on each pass through the clip
        start = self.clock.monotonic()
        origin: int | None = None
        rate = self.info.audio.timescale if self.info.audio else 1
        while not self.stop.is_set():
            first_raw: int | None = None
            last_raw: int | None = None
            step = 0
            for p in self.container.demux(streams):
                if p.stream is not self.vstream:
                    out = self._audio(p, self.clock.monotonic())
                    if out is not None:
                        shift = offset * rate // self.vtb.denominator
                        out.pts += shift
                        out.dts += shift
                        yield out
                    continue
                pkt = self._video(p, 0.0, offset)
                if pkt is None:
                    continue
                raw = pkt.dts - offset
                if first_raw is None:
                    first_raw = raw
                if last_raw is not None:
                    step = raw - last_raw
                last_raw = raw
                if origin is None:
                    origin = pkt.dts
                wait = start + (pkt.dts - origin) / self.vtb.denominator - self.clock.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    return
                pkt.arrival = self.clock.monotonic()
                yield pkt
            if first_raw is None or last_raw is None:
                raise VmsError(Kind.UNAVAILABLE, "the clip has no video packets")
            offset += last_raw - first_raw + (step or 1)
            self.container.seek(0)


def open_source(
    url: str,
    *,
    transport: str = "tcp",
    open_timeout: float = 10.0,
    read_timeout: float = 10.0,
    stop: threading.Event,
    clock: Clock,
) -> Source:
    """Open a camera or clip. Raises VmsError(UNAVAILABLE) with a reason fit for an operator."""
    scheme = urlsplit(url).scheme
    try:
        if scheme == "file":
            path = Path(unquote(urlsplit(url).path))
            if not path.is_file():
                raise VmsError(Kind.UNAVAILABLE, f"clip {path} does not exist")
            container = av.open(str(path), "r", options={"protocol_whitelist": FILE_PROTOCOLS})
            return Source(container, live=False, stop=stop, clock=clock)
        options = {
            "rtsp_transport": transport,
            "analyzeduration": "2000000",
            "probesize": "1000000",
            # FFmpeg's own socket timeout (µs) detects a stalled stream. PyAV's read timeout
            # is NOT used: its interrupt callback takes the GIL on every poll inside FFmpeg's
            # reads, and with 200 ingest threads that contention cost more than the reading.
            "timeout": str(int(read_timeout * 1_000_000)),
            "protocol_whitelist": RTSP_PROTOCOLS,
        }
        started = time.monotonic()
        try:
            container = av.open(url, "r", options=options, timeout=(open_timeout, None))
        except (av.error.InvalidDataError, av.error.ExitError):
            # FFmpeg's RTSP demuxer reports its interrupted open (no answer, or no valid RTSP
            # answer, before the open timeout) as "Invalid data": say what happened instead.
            if time.monotonic() - started < open_timeout * 0.9:
                raise
            raise VmsError(
                Kind.UNAVAILABLE,
                f"timed out: no valid RTSP answer within {open_timeout:g} s",
            ) from None
        try:
            return Source(container, live=True, stop=stop, clock=clock)
        except VmsError:
            container.close()
            raise
    except VmsError:
        raise
    except (av.error.FFmpegError, OSError) as e:
        raise VmsError(Kind.UNAVAILABLE, describe(e)) from None


def read_clip(path: Path) -> tuple[StreamInfo, list[Packet]]:
    """Every packet of a clip at once, unpaced (a replayed camera for tests and benchmarks)."""
    stop = threading.Event()
    container = av.open(str(path), "r")
    try:
        src = Source(container, live=False, stop=stop, clock=_NoClock())
        streams = [src.vstream] + ([src.astream] if src.astream is not None else [])
        out: list[Packet] = []
        for p in container.demux(streams):
            pkt = src._video(p, 0.0, 0) if p.stream is src.vstream else src._audio(p, 0.0)
            if pkt is not None:
                out.append(pkt)
        return src.info, out
    finally:
        container.close()


class _NoClock:
    def wall_us(self) -> int:
        return 0

    def monotonic(self) -> float:
        return 0.0
