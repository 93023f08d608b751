"""Fragmented MP4 made on the fly from a camera's packets, for players of the live stream.

:class:`LiveMuxer` turns a stream's parameters into an init segment and its packets, as they
come from the relay, into ``moof`` + ``mdat`` fragments: one per frame for MSE, a few frames
(a part) for LL-HLS. The boxes are the recorder's (:mod:`vms.recording.mp4`), and the packets
are already in MP4's length-prefixed form (the ingest converts Annex B once, see
:mod:`vms.media`), so a sample is a packet's bytes as they are.

The traps:

- A sample's duration is the gap to the *next* frame, which has not arrived when a live frame
  must go out. The recorder holds one frame back; live view cannot afford a frame of delay, so
  a fragment's last sample gets the last measured frame interval, and every fragment's ``tfdt``
  comes from its own packets' decode time: an estimate that was wrong leaves a sliver of gap or
  overlap that MSE absorbs, never a drift.
- The timeline starts at 0 with the first video packet, or, for a viewer switched from another
  stream of the camera (``after=``), where the other stream's muxer left off: the player appends
  the new init segment and fragments to the same ``SourceBuffer``, so the decode times must go
  on, never back and with no hole, whatever the new stream's own clock says. Forward jumps
  are kept as they are (a slow viewer that skipped to the next keyframe, media lost on the
  way): the player sees a gap in its buffer and seeks over it. A decode time that goes
  backwards (a camera's clock jump) would overwrite what the player has buffered, so the
  timeline is rebased to go on where it was, audio with it.
- Audio and video decode times share one origin (the readers see to it), so audio is placed by
  its own timestamps against the first video packet's instant. Only AAC is carried: MSE plays
  no G.711 in MP4, and an init segment naming a track a browser cannot decode fails as a whole.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

from vms.media import (
    AAC,
    AUDIO,
    VIDEO,
    Packet,
    ParameterSets,
    StreamInfo,
    dimensions,
)
from vms.playback import fragments
from vms.recording import mp4

MP4 = "video/mp4"
NOMINAL_FPS = 25  # the frame interval assumed until two frames have been seen
AAC_FRAME = 1024  # samples in an AAC frame: its duration, whatever the timestamps say
MAX_INTERVAL_S = 2.0  # a larger step between frames is a jump, not a frame interval


@dataclasses.dataclass(slots=True)
class _Sample:
    dts: int  # on the timeline
    cto: int  # pts - dts
    key: bool
    data: bytes


def with_params(info: StreamInfo, params: ParameterSets) -> StreamInfo:
    """``info`` with the parameter sets a keyframe carried in-band (cameras that announce none
    in their SDP)."""
    return dataclasses.replace(info, video=dataclasses.replace(info.video, params=params))


class LiveMuxer:
    """Init segment and fragments for one run of a stream (see the module docstring).

    Raises ValueError when the stream's video has no complete parameter sets: wait for a
    keyframe that carries them (:func:`with_params`). ``after``: the muxer of the stream the
    viewer played until now; this one's timeline goes on where that one's ended.
    """

    def __init__(
        self, info: StreamInfo, *, audio: bool = True, after: LiveMuxer | None = None
    ) -> None:
        video = info.video
        params = video.params
        if params is None or not params.complete:
            raise ValueError("the stream's parameter sets are not known yet")
        width, height = video.width, video.height
        try:
            width, height = dimensions(params)
        except (ValueError, IndexError):
            pass  # the SDP's or the demuxer's size, as the recorder does
        video = dataclasses.replace(video, width=width, height=height)
        keep = info.audio if audio and info.audio is not None and info.audio.codec == AAC else None
        self.info = StreamInfo(video, keep)
        self.width, self.height = width, height
        self.init: bytes = mp4.init_segment(self.info)
        self.codecs: str = ",".join(fragments.codecs(self.init))
        self.mime: str = f'{MP4}; codecs="{self.codecs}"'
        self._sequence = 0
        vts = video.timescale
        self._nominal = max(1, vts // NOMINAL_FPS)
        self._max_step = int(MAX_INTERVAL_S * vts)
        self._offset: int | None = None  # added to a camera dts to place it on the timeline
        self._last: int | None = None  # timeline dts of the last video sample sent
        self._delta = 0  # the last measured frame interval
        self._audio_offset = 0
        self._audio_end: int | None = None  # timeline end of the last audio sample sent
        self._origin = 0  # timeline time of the first video sample
        self.continues = after is not None  # on another muxer's timeline
        if after is not None:
            self._origin = math.ceil(after.end * vts)
            if after.audio_end is not None and self.info.audio is not None:
                self._audio_end = math.ceil(after.audio_end * self.info.audio.timescale)

    @property
    def has_audio(self) -> bool:
        return self.info.audio is not None

    @property
    def end(self) -> Fraction:
        """Where the next video sample goes on the timeline, in seconds: the end of the last
        one sent (its duration estimated, see the module docstring)."""
        vts = self.info.video.timescale
        if self._last is None:
            return Fraction(self._origin, vts)
        return Fraction(self._last + (self._delta or self._nominal), vts)

    @property
    def audio_end(self) -> Fraction | None:
        """The end of the last audio sample sent, in seconds; None before any."""
        a = self.info.audio
        if a is None or self._audio_end is None:
            return None
        return Fraction(self._audio_end, a.timescale)

    def params_changed(self, p: Packet) -> bool:
        """Whether a keyframe carries parameter sets other than this init segment's: the player
        needs a new init segment (a new muxer) from this packet on."""
        return p.params is not None and p.params.complete and p.params != self.info.video.params

    def fragment(self, packets: Sequence[Packet]) -> bytes:
        """One ``moof`` + ``mdat`` holding ``packets`` (video, and AAC audio when the init
        segment has it), in the order given; ``b""`` when none of them goes in. The first
        video packet a muxer is given should be a keyframe."""
        video = self._video_run(p for p in packets if p.kind == VIDEO)
        runs: list[mp4.TrackRun] = []
        data: list[bytes] = []
        if video is not None:
            runs.append(video[0])
            data.extend(video[1])
        if self.info.audio is not None and self._offset is not None:
            audio = self._audio_run([p for p in packets if p.kind == AUDIO])
            if audio is not None:
                runs.append(audio[0])
                data.extend(audio[1])
        if not runs:
            return b""
        self._sequence += 1
        return mp4.fragment_header(self._sequence, runs) + b"".join(data)

    def _video_run(self, packets: Iterable[Packet]) -> tuple[mp4.TrackRun, list[bytes]] | None:
        samples: list[_Sample] = []
        for p in packets:
            if self._offset is None:
                self._offset = self._origin - p.dts
            t = p.dts + self._offset
            prev = samples[-1].dts if samples else self._last
            if samples and t == prev:
                # Several packets of one picture (a multi-slice frame sent in pieces): one
                # sample, or MP4 would get a zero-duration frame.
                samples[-1].data += p.data
                samples[-1].key = samples[-1].key or p.keyframe
                continue
            if prev is not None:
                step = t - prev
                if step <= 0:
                    fix = prev + (self._delta or self._nominal) - t
                    self._rebase(fix)
                    t += fix
                elif step <= self._max_step:
                    self._delta = step
            samples.append(_Sample(t, p.pts - p.dts, p.keyframe, p.data))
        if not samples:
            return None
        times = [s.dts for s in samples]
        durations = [b - a for a, b in itertools.pairwise(times)]
        durations.append(self._delta or self._nominal)
        self._last = times[-1]
        cto = [s.cto for s in samples]
        flags = [mp4.SYNC_FLAGS if s.key else mp4.NON_SYNC_FLAGS for s in samples]
        data = [s.data for s in samples]
        run = mp4.TrackRun(
            mp4.VIDEO_TRACK, times[0], durations, [len(d) for d in data], flags,
            cto if any(cto) else None,
        )  # fmt: skip
        return run, data

    def _rebase(self, fix: int) -> None:
        """The camera's decode time went back: move the video timeline by ``fix`` ticks so it
        goes on where it was, and the audio by the same time."""
        assert self._offset is not None
        self._offset += fix
        a = self.info.audio
        if a is not None:
            self._audio_offset += fix * a.timescale // self.info.video.timescale

    def _audio_run(self, packets: list[Packet]) -> tuple[mp4.TrackRun, list[bytes]] | None:
        a = self.info.audio
        assert a is not None and self._offset is not None
        if not packets:
            return None
        vts = self.info.video.timescale
        # The video origin's instant in audio ticks (shared origin of the two decode times).
        shift = self._offset * a.timescale // vts + self._audio_offset
        start = packets[0].dts + shift
        end = self._audio_end
        if end is not None and start < end:
            start = end  # never overlap what was sent: MSE would drop the frames it covers
        kept = [p for p in packets if p.data]
        origin = self._origin * a.timescale // vts
        if start < origin:
            # Audio from before the first video frame: the timeline starts at the video.
            drop = (origin - start + AAC_FRAME - 1) // AAC_FRAME
            kept = kept[drop:]
            start += drop * AAC_FRAME
        if not kept:
            return None
        self._audio_end = start + AAC_FRAME * len(kept)
        data = [p.data for p in kept]
        run = mp4.TrackRun(mp4.AUDIO_TRACK, start, [AAC_FRAME] * len(kept), [len(d) for d in data])
        return run, data
