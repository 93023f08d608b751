"""Live audio in a codec the viewer's transport carries, when the camera's is not one: AAC to
Opus for WebRTC (which carries Opus and G.711), G.711 to AAC for MSE (which plays AAC in MP4).
Only when ``live.transcode_audio`` asks for it; without it the audio is left out.

An :class:`AudioTranscoder` is one camera stream's audio in one target codec, shared by all its
viewers and running only while someone watches (the lifecycle of
:class:`~vms.live.transcode.Rendition`: started by the first viewer, stopped
:data:`~vms.live.transcode.LINGER_S` after the last). Its thread reads a relay (the camera's,
or the H.264 rendition of an H.265 one), passes the video through untouched and decodes,
resamples and encodes the audio with PyAV into a relay of its own. The stream start it
publishes describes the new audio (AAC's AudioSpecificConfig comes from the opened encoder).

The traps:

- Encoders take whole frames (1024 samples for AAC, 960 for Opus's 20 ms), so a packet in is
  not a packet out. Output timestamps are counted in samples from the first input packet's
  timestamp, not taken from the packets; an encoder's priming (AAC's first packet starts 1024
  samples early, Opus's 312) is kept in the timestamps, so what a decoder plays after
  dropping or playing it lines up with the video.
- Counting samples drifts from the camera's clock when packets are lost or the camera's
  timestamps jump: an input packet more than :data:`MAX_DRIFT_S` from where the count puts
  it starts the encoding over from its own timestamp (what was buffered is flushed first).
- Opus is always 48 kHz (WebRTC's RTP clock for it); AAC keeps the source's rate (8 kHz
  from G.711: Chromium's MSE and FFmpeg play it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from fractions import Fraction

import av
import av.audio.codeccontext

from vms.cameras.relay import Item, Relay
from vms.live.transcode import Converter, Rendition
from vms.media import (
    AAC,
    AUDIO,
    OPUS,
    PCMA,
    PCMU,
    AudioInfo,
    Packet,
    StreamEnd,
    StreamStart,
)

log = logging.getLogger(__name__)

# What can be decoded (every audio codec the ingest keeps) and made.
DECODERS = {AAC: "aac", PCMU: "pcm_mulaw", PCMA: "pcm_alaw"}
# codec -> (FFmpeg encoder, sample format, samples per frame)
ENCODERS = {AAC: ("aac", "fltp", 1024), OPUS: ("libopus", "s16", 960)}
OPUS_RATE = 48_000
BITRATE = 32_000  # per channel: speech and ambient sound from a camera's microphone
MAX_DRIFT_S = 0.2
NAMES = {AAC: "AAC", PCMU: "G.711 µ-law", PCMA: "G.711 A-law", OPUS: "Opus"}


def can_transcode(audio: AudioInfo, into: str) -> bool:
    return audio.codec in DECODERS and into in ENCODERS and audio.codec != into


def converted(audio: AudioInfo, into: str) -> AudioInfo:
    """What ``audio`` becomes in ``into`` (known before anything runs: the codec for an SDP
    answer). For AAC this opens an encoder for its AudioSpecificConfig."""
    rate = OPUS_RATE if into == OPUS else audio.sample_rate
    channels = min(2, max(1, audio.channels))
    config = b""
    if into == AAC:
        config = bytes(_encoder(into, rate, channels).extradata or b"")
    return AudioInfo(into, rate, rate, channels, config)


def _encoder(into: str, rate: int, channels: int) -> av.audio.codeccontext.AudioCodecContext:
    name, fmt, _ = ENCODERS[into]
    enc = av.CodecContext.create(name, "w")
    assert isinstance(enc, av.audio.codeccontext.AudioCodecContext)
    enc.sample_rate = rate
    enc.layout = "stereo" if channels == 2 else "mono"
    enc.format = fmt
    enc.bit_rate = BITRATE * channels
    enc.time_base = Fraction(1, rate)
    enc.open()
    return enc


class AudioTranscoder(Rendition):
    """One relay's audio in ``into`` (see the module); video goes through as it is."""

    def __init__(
        self, source: Relay, loop: asyncio.AbstractEventLoop, name: str, into: str
    ) -> None:
        super().__init__(source, loop, name)
        self.into = into
        self.what = f"transcoding audio to {NAMES.get(into, into)}"
        self.packets_in = 0
        self.packets_out = 0

    def _converter(self) -> Converter:
        return _Audio(self)


class _Audio:
    """One run of the thread: a new encoding for each stream start."""

    def __init__(self, owner: AudioTranscoder) -> None:
        self.owner = owner
        self.encoding: _Encoding | None = None

    def feed(self, item: Item) -> list[Item]:
        encoding = self.encoding
        if isinstance(item, StreamStart):
            audio = item.info.audio
            if audio is None or not can_transcode(audio, self.owner.into):
                self.encoding = None
                return [item]
            self.encoding = _Encoding(audio, self.owner.into)
            return [StreamStart(dataclasses.replace(item.info, audio=self.encoding.out))]
        if isinstance(item, StreamEnd):
            self.encoding = None
            return [*(encoding.flush() if encoding is not None else ()), item]
        if not isinstance(item, Packet) or item.kind != AUDIO or encoding is None:
            return [item]
        self.owner.packets_in += 1
        out = encoding.feed(item)
        self.owner.packets_out += len(out)
        return list(out)


class _Encoding:
    """A decoder, resampler and encoder for one stream's audio, timestamps counted in samples
    (see the module)."""

    def __init__(self, source: AudioInfo, into: str) -> None:
        self.source = source
        self.into = into
        self.out = converted(source, into)
        self._open()

    def _open(self) -> None:
        src, out = self.source, self.out
        dec = av.CodecContext.create(DECODERS[src.codec], "r")
        assert isinstance(dec, av.audio.codeccontext.AudioCodecContext)
        dec.sample_rate = src.sample_rate
        dec.layout = "stereo" if src.channels == 2 else "mono"
        if src.config:
            dec.extradata = src.config
        self.decoder = dec
        self.encoder = _encoder(self.into, out.sample_rate, out.channels)
        _, fmt, frame_size = ENCODERS[self.into]
        self.resampler = av.AudioResampler(
            format=fmt, layout=self.encoder.layout.name, rate=out.sample_rate,
            frame_size=frame_size,
        )  # fmt: skip
        self.base: int | None = None  # output ticks of the first sample of this encoding
        self.expected: int | None = None  # input ticks where the next packet should start
        self.samples = 0  # samples handed to the encoder so far
        self.arrival = 0.0

    def feed(self, p: Packet) -> list[Packet]:
        src = self.source
        out: list[Packet] = []
        drift = MAX_DRIFT_S * src.timescale
        if self.expected is not None and abs(p.pts - self.expected) > drift:
            out += self.flush()
            self._open()
        if self.base is None:
            self.base = p.pts * self.out.timescale // src.timescale
        self.arrival = p.arrival
        packet = av.Packet(p.data)
        packet.pts = packet.dts = p.pts
        packet.time_base = Fraction(1, src.timescale)
        decoded = 0
        for frame in self.decoder.decode(packet):
            decoded += frame.samples
            out += self._encode(self.resampler.resample(frame))
        if decoded:
            self.expected = p.pts + decoded * src.timescale // src.sample_rate
        return out

    def flush(self) -> list[Packet]:
        """What the resampler and the encoder still hold (the stream ended, or a jump)."""
        if self.base is None:
            return []
        out = self._encode(self.resampler.resample(None))
        for enc in self.encoder.encode(None):
            out += self._packet(enc)
        return out

    def _encode(self, frames: list[av.AudioFrame]) -> list[Packet]:
        out: list[Packet] = []
        for frame in frames:
            frame.pts = self.samples
            frame.time_base = Fraction(1, self.out.sample_rate)
            self.samples += frame.samples
            for enc in self.encoder.encode(frame):
                out += self._packet(enc)
        return out

    def _packet(self, enc: av.Packet) -> list[Packet]:
        assert self.base is not None
        pts = self.base + (enc.pts or 0)
        return [Packet(AUDIO, bytes(enc), pts, pts, True, self.arrival)]
