"""Decoded pictures of one camera stream for detection, at most ``fps`` a second.

:class:`Frames` reads a relay from the caller's thread (a blocking subscription) and decodes
every video packet with PyAV: a P-frame needs every frame before it since the keyframe, so
frames are thinned *after* decoding, not before. FFmpeg releases the GIL while it decodes, so a
thread per camera runs in parallel with the others.

Traps:

- The relay hands out MP4's length-prefixed NAL units; FFmpeg's H.264/H.265 decoders without
  extradata read Annex B (start codes). Each packet is turned back into Annex B, with the
  stream's parameter sets put in front of every keyframe that lacks them in band (cameras that
  send them only in the SDP).
- A frame's time: the packet's arrival on the monotonic clock, moved onto the wall clock when it
  is decoded. Events are compared with recordings (wall-clock µs) and the alert delay is
  measured from the source frame, so it is the arrival, not the decode, that counts.
- A slow detector never holds this thread (the pool drops frames instead), but if this thread
  itself falls behind (decoding slower than real time), the relay's bounded queue drops the
  packets and resumes at the next keyframe; :attr:`Frames.dropped` counts them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from fractions import Fraction
from typing import cast

import av
import av.video.frame
import numpy as np
import numpy.typing as npt

from vms.cameras.relay import BlockingSubscription, Relay
from vms.clock import Clock
from vms.media import HEVC, VIDEO, Packet, StreamEnd, StreamInfo, StreamStart, collect_params
from vms.media import length_split as _length_split

log = logging.getLogger(__name__)

START = b"\x00\x00\x00\x01"
# Packets queued for the decoder thread: several seconds of a sub-stream. Past it, the relay
# drops them and resumes at a keyframe.
QUEUE = 256
# A frame this early for its slot still takes it (arrival jitter), not the one after.
SLACK_S = 0.01


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture and the wall-clock µs of its arrival."""

    picture: av.video.frame.VideoFrame
    t_us: int

    @property
    def width(self) -> int:
        return int(self.picture.width)

    @property
    def height(self) -> int:
        return int(self.picture.height)

    def luma(self) -> npt.NDArray[np.uint8]:
        """The Y plane as a strided view of the decoder's buffer: no copy, no conversion."""
        plane = self.picture.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        return rows[:, : plane.width]

    def bgr(self) -> npt.NDArray[np.uint8]:
        """The whole picture in BGR (a conversion: only for frames a detector looks at)."""
        return cast(npt.NDArray[np.uint8], self.picture.to_ndarray(format="bgr24"))


class _Decoder:
    """One stream start's decoder."""

    def __init__(self, info: StreamInfo) -> None:
        self.info = info
        params = info.video.params
        self.params = [*params.vps, *params.sps, *params.pps] if params else []
        self.codec = info.video.codec
        self.ctx = av.CodecContext.create("hevc" if self.codec == HEVC else "h264", "r")
        self.time_base = Fraction(1, info.video.timescale)

    def decode(self, p: Packet) -> list[av.video.frame.VideoFrame]:
        nals = _length_split(p.data)
        have = collect_params(self.codec, nals)
        if have is not None and have.complete:
            self.params = [*have.vps, *have.sps, *have.pps]
        lead = self.params if p.keyframe and have is None else []
        packet = av.Packet(b"".join(START + n for n in lead + nals))
        packet.pts, packet.dts = p.pts, p.dts
        packet.time_base = self.time_base
        return list(self.ctx.decode(packet))


class Frames:
    """Iterate decoded frames of ``relay``, at most ``fps`` a second (see the module)."""

    def __init__(self, relay: Relay, fps: float, clock: Clock, name: str) -> None:
        self.name = name
        self.fps = fps
        self.clock = clock
        self.decoded = 0
        self.errors = 0
        self._sub: BlockingSubscription = relay.subscribe_blocking(QUEUE)
        self._next_mono = 0.0

    @property
    def dropped(self) -> int:
        return self._sub.dropped

    def close(self) -> None:
        """End the iteration (from any thread)."""
        self._sub.close()

    def __iter__(self) -> Iterator[Frame]:
        decoder: _Decoder | None = None
        period = 1.0 / self.fps
        for item in self._sub:
            if isinstance(item, StreamStart):
                decoder = _Decoder(item.info)
            elif isinstance(item, StreamEnd):
                decoder = None
            elif isinstance(item, Packet) and item.kind == VIDEO and decoder is not None:
                try:
                    pictures = decoder.decode(item)
                except av.error.FFmpegError as e:
                    # A damaged packet (loss the reader could not see): the decoder recovers
                    # at the next keyframe on its own.
                    self.errors += 1
                    if self.errors == 1 or self.errors % 1000 == 0:
                        log.warning("%s: cannot decode a packet (%d so far): %s",
                                    self.name, self.errors, e)  # fmt: skip
                    continue
                for picture in pictures:
                    self.decoded += 1
                    if item.arrival < self._next_mono - SLACK_S:
                        continue
                    # The next slot from this one, not from this frame's arrival: a steady rate
                    # whatever the jitter; from the arrival when a slot was missed (an outage).
                    late = item.arrival - self._next_mono
                    self._next_mono = (self._next_mono if late < period else item.arrival) + period
                    yield Frame(picture, self._wall_us(item.arrival))

    def _wall_us(self, arrival: float) -> int:
        late = self.clock.monotonic() - arrival
        return self.clock.wall_us() - int(max(0.0, late) * 1_000_000)
