"""The media of one playing native RTSP session: RTP and RTCP in, packets out.

:class:`Receiver` runs on the reactor thread (docs/design/concurrency.md), called for each
interleaved packet that the session (``rtsp.py``) reads. It reassembles video access units and
audio frames, publishes them to the stream's sink (``vms.media.StreamSink``), and keeps what
the session needs to judge the stream:

- **Time.** Video keeps its extended RTP timestamps; audio is shifted onto the video's time line
  (RTP-Info, then RTCP sender reports: ``rtcp.Sync``), so that the recorder can place it by
  timestamp (docs/design/time.md, "Audio").
- **Loss.** A sequence gap drops the damaged access unit and every video frame up to the next
  keyframe, and tells the sink where media is missing (``StreamSink.gap``).
- **Stalls.** ``last_video`` is when the last complete video frame arrived: a camera whose
  video stopped while its audio or RTCP flows on is stalled.
- **Receiver reports** for the session to send every few seconds.

The per-packet path is a sequence compare, the header, and the depacketizer; RTCP is parsed only
for RTCP packets.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from vms.clock import Clock
from vms.health import CameraHealth
from vms.ingest.rtcp import Sync, Track, receiver_reports, sdes_cname, sender_report
from vms.ingest.rtp import MAX_ACCESS_UNIT, Depacketizer, Media
from vms.media import (
    AAC,
    AUDIO,
    VIDEO,
    Packet,
    StreamInfo,
    StreamSink,
    collect_params,
    has_keyframe,
    length_prefix,
)

# RTP-Info and RTCP placing audio further apart than this: RTCP wins (logged once a session).
SYNC_TOLERANCE_S = 0.010
# Audio that cannot be placed for this long is worth a warning.
UNMAPPED_FALLBACK_S = 3.0
# Audio held while its place is unknown: the newest ~1.3 s (AAC at 48 kHz, 20 ms G.711).
HELD_AUDIO = 64


class Receiver:
    """One session's tracks from PLAY on; a new connection gets a new receiver."""

    def __init__(
        self,
        video: Media,
        audio: Media | None,
        info: StreamInfo,
        *,
        sink: StreamSink,
        health: CameraHealth,
        clock: Clock,
        log: logging.LoggerAdapter[Any],
        now: float,
    ) -> None:
        self.info = info
        self.sink = sink
        self.health = health
        self.clock = clock
        self.log = log
        self.depay = Depacketizer(video.codec)
        self.codec = video.codec
        self.audio_codec = audio.codec if audio is not None else ""
        # RTP-Info's rtptime (read into each Media by the handshake): both tracks' times at the
        # same instant, the first anchor of audio on the video's time line.
        tracks = [Track(video.channel, video.rate, video=True)]
        tracks[0].rtptime = video.rtp_time
        if audio is not None:
            tracks.append(Track(audio.channel, audio.rate, video=False))
            tracks[1].rtptime = audio.rtp_time
        self.tracks = tracks
        self.rtp_routes = {t.channel: t for t in tracks}
        self.rtcp_routes = {t.channel + 1: t for t in tracks}
        self.sync = Sync(tracks[0], tracks[1]) if audio is not None else None
        self.unmapped_since: float | None = None
        self.unmapped_logged = self.moved_logged = False
        self.held: list[tuple[bytes, int]] = []  # audio waiting for its place: (payload, ts)
        self.last_video = now  # the last complete video frame (or PLAY)
        self.last_video_ts: int | None = None  # its extended RTP timestamp
        self.need_key = False  # after a loss: drop video up to a keyframe
        self.oversized = 0
        self.ssrc = int.from_bytes(os.urandom(4), "big")  # ours, in receiver reports
        self.sdes = sdes_cname(self.ssrc, b"vms")

    # --- RTP -----------------------------------------------------------------------------

    def rtp(self, t: Track, rtp: memoryview) -> None:
        seq = (rtp[2] << 8) | rtp[3]
        if seq != t.expected:
            self._out_of_sequence(t, seq, rtp)
        t.expected = (seq + 1) & 0xFFFF
        b0 = rtp[0]
        hdr = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10 and len(rtp) >= hdr + 4:
            hdr += 4 + 4 * ((rtp[hdr + 2] << 8) | rtp[hdr + 3])
        end = len(rtp)
        if b0 & 0x20:  # padding
            end -= rtp[end - 1]
        if hdr > end:
            return
        ts = (rtp[4] << 24) | (rtp[5] << 16) | (rtp[6] << 8) | rtp[7]
        if t.video:
            nals = self.depay.push(rtp[hdr:end], bool(rtp[1] & 0x80))
            if nals:
                self._frame(nals, t.clock.extend(ts))
            elif nals is not None:
                self._dropped()
        elif self.sync is not None:
            ext = t.clock.extend(ts)
            shift = self.sync.shift
            if shift is None:
                shift = self._map_audio(ext)
                if shift is None:
                    self._hold(rtp[hdr:end], ext)
                    return
            self._audio(rtp[hdr:end], ext + shift)

    def _out_of_sequence(self, t: Track, seq: int, rtp: memoryview) -> None:
        """A packet that is not the expected next one: the first, a loss, or a new sender."""
        first = t.expected < 0
        ssrc = int.from_bytes(rtp[8:12], "big")
        if not first and ssrc != t.ssrc and self.sync is not None:
            self.sync.shift = None  # a new sender, new timestamp origins: place audio anew
        self.health.rtp_lost += t.jumped(seq, ssrc)
        if t.video:
            if t.clock.last is None:
                # The first packet (of this sender). The video clock is otherwise extended per
                # frame: this lets audio be placed from now on, not once a frame is whole.
                t.clock.extend(int.from_bytes(rtp[4:8], "big"))
            if not first:
                self._video_lost()

    def _video_lost(self) -> None:
        """Drop the damaged access unit and every frame up to the next keyframe (a decoder
        cannot continue past a hole), and tell the sink that media is missing here."""
        self.depay.lost()
        self.need_key = True
        self.sink.gap()

    def _dropped(self) -> None:
        """The depacketizer dropped an access unit: damaged by a loss, or too large."""
        self.health.frames_discarded += 1
        if self.depay.oversized != self.oversized:
            if not self.oversized:
                self.log.warning(
                    "dropped an access unit over %d MiB (later ones are only counted); "
                    "video resumes at the next keyframe",
                    MAX_ACCESS_UNIT >> 20,
                )
            self.oversized = self.depay.oversized
            self.need_key = True
            self.sink.gap()

    def _frame(self, nals: list[bytes], ts: int) -> None:
        codec = self.codec
        key = has_keyframe(codec, nals)
        now = self.clock.monotonic()
        self.last_video = now
        self.last_video_ts = ts
        if self.need_key:
            if not key:
                self.health.frames_discarded += 1
                return
            self.need_key = False
        params = collect_params(codec, nals) if key else None
        self.sink.packet(Packet(VIDEO, length_prefix(nals), ts, ts, key, now, params))

    def _audio(self, payload: memoryview, ts: int) -> None:
        now = self.clock.monotonic()
        frames: list[tuple[bytes, int]] = []
        if self.audio_codec == AAC:
            if len(payload) < 2:
                return
            header_bits = (payload[0] << 8) | payload[1]
            count = header_bits // 16  # 13-bit size + 3-bit index per AU
            q = 2 + (header_bits + 7) // 8
            if q > len(payload):
                return
            for k in range(count):
                size = ((payload[2 + 2 * k] << 8) | payload[3 + 2 * k]) >> 3
                frames.append((bytes(payload[q : q + size]), ts + 1024 * k))
                q += size
        else:
            frames.append((bytes(payload), ts))
        for data, t in frames:
            self.sink.packet(Packet(AUDIO, data, t, t, True, now, None))

    # --- time and RTCP -------------------------------------------------------------------

    def _map_audio(self, audio_ts: int) -> int | None:
        """Audio's shift onto the video's time line, from RTP-Info or else sender reports;
        when it becomes known, the audio held meanwhile goes first.

        A camera that gives neither (RTP-Info for video only, no sender reports: seen on an NVR)
        gets its audio placed by arrival after :data:`UNMAPPED_FALLBACK_S`: this packet is
        taken to be as old as the newest video frame's arrival says; within network jitter
        (tens of ms). A sender report arriving later still corrects it."""
        assert self.sync is not None
        shift = self.sync.start()
        if shift is None:
            now = self.clock.monotonic()
            if self.unmapped_since is None:
                self.unmapped_since = now
            elif now - self.unmapped_since > UNMAPPED_FALLBACK_S and self.last_video_ts is not None:
                v, a = self.sync.video, self.sync.audio
                video_now = self.last_video_ts + round((now - self.last_video) * v.rate)
                shift = self.sync.shift = (video_now * a.rate + v.rate // 2) // v.rate - audio_ts
                if not self.unmapped_logged:
                    self.unmapped_logged = True
                    self.log.warning(
                        "audio placed by arrival time (within tens of ms): the camera sends "
                        "neither RTP-Info for it nor RTCP sender reports"
                    )
                self.held = []  # its place is only known from now on
                return shift
            return None
        self._release(shift)
        return shift

    def _release(self, shift: int) -> None:
        held, self.held = self.held, []
        for payload, ts in held:
            self._audio(memoryview(payload), ts + shift)

    def _hold(self, payload: memoryview, ts: int) -> None:
        """Keep audio whose place is not known yet, the newest :data:`HELD_AUDIO` packets.

        Held, not dropped: audio of an instant often arrives before the first video packet of
        that instant (without which RTP-Info cannot be used), and the recorder places audio by
        its timestamp, so audio delivered late still lands where it belongs. Bounded: without
        RTP-Info it waits for both tracks' sender reports (seconds), and a camera that sends
        neither must not grow memory.
        """
        self.held.append((bytes(payload), ts))
        if len(self.held) > HELD_AUDIO:
            del self.held[0]

    def rtcp(self, t: Track, packet: memoryview) -> None:
        sr = sender_report(packet)
        if sr is None:
            return
        t.sender_report(sr[1], sr[2], self.clock.monotonic())
        sync = self.sync
        if sync is None:
            return
        moved = sync.sender_report(SYNC_TOLERANCE_S)
        if self.held and sync.shift is not None:
            self._release(sync.shift)
        if moved is not None and not self.moved_logged:
            self.moved_logged = True
            self.log.info("RTCP moves audio by %+.0f ms against the video", moved * 1000)

    def reports(self, now: float) -> bytes:
        """Receiver reports for every track that has received packets, framed to send."""
        return receiver_reports(self.tracks, self.ssrc, self.sdes, now)
