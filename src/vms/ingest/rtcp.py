"""RTP control for the native reader: loss statistics, sender reports, receiver reports, RTP-Info.

Each track's RTP timestamps count from a random origin (RFC 3550 §5.1), so two tracks can only
be placed on one time line through something that relates them: the ``rtptime`` of each track in
the PLAY reply's RTP-Info header (RFC 2326 §12.33: every track's value is its timestamp at the
same instant, the start of playback), and RTCP sender reports (an NTP wall-clock time and the RTP
timestamp of the same instant, per track, from one sender clock). :func:`audio_shift` turns one
such pair of anchors into the number of audio ticks to add to audio timestamps.

A receiver report every few seconds tells the camera that someone is listening: some cameras end
a session that sends none, whatever the RTSP keepalives.
"""

from __future__ import annotations

import struct

from vms.ingest.rtp import RtpClock

SR = 200
RR = 201
SDES = 202
NTP_FRACTION = 1 << 32

_SR = struct.Struct(">IQI")  # sender SSRC, NTP timestamp, RTP timestamp
_RR = struct.Struct(">BBHIIIIIII")
_HEADER = struct.Struct(">BBH")
# An anchor (RTP-Info rtptime, a sender report's timestamp) further than this from the track's
# packets is not about this stream (a camera that fills in a stale or made-up value).
ANCHOR_RANGE_S = 10


class Track:
    """What the reader knows about one received RTP stream (one SETUP'd track).

    ``expected`` is the next sequence number; the reader compares each packet's number with it
    (the only per-packet work here) and calls :meth:`jumped` when they differ.
    """

    def __init__(self, channel: int, rate: int, *, video: bool) -> None:
        self.channel = channel
        self.rate = rate
        self.video = video
        self.clock = RtpClock()
        self.expected = -1  # no packet yet
        self.ssrc = 0
        self.lost = 0  # packets lost, cumulative (RFC 3550 A.3, since ``base``)
        self.base = 0  # extended sequence number of the first packet
        self.cycles = 0  # sequence number wraps, counted at each report
        self.highest = 0  # highest sequence number at the last report
        self.prior_expected = 0
        self.prior_lost = 0
        self.rtptime: int | None = None  # RTP-Info: the timestamp at the start of playback
        self.sr_ntp: int | None = None  # the last sender report: NTP time (32.32) ...
        self.sr_rtp = 0  # ... and the RTP timestamp of the same instant
        self.sr_at = 0.0  # monotonic arrival of that report

    def jumped(self, seq: int, ssrc: int) -> int:
        """A packet whose number is not the expected one: how many packets were lost.

        A first packet starts the statistics. A number behind the expected one (a duplicate, or a
        sender that restarted its numbering) or a new SSRC starts them again and counts no loss.
        """
        gap = (seq - self.expected) & 0xFFFF
        if self.expected < 0 or gap >= 0x8000 or ssrc != self.ssrc:
            if self.expected >= 0 and ssrc != self.ssrc:
                # A new sender: its timestamps count from a new random origin.
                self.clock = RtpClock()
                self.rtptime = self.sr_ntp = None
            self.ssrc = ssrc
            self.base = self.highest = seq
            self.cycles = self.lost = self.prior_expected = self.prior_lost = 0
            return 0
        self.lost += gap
        return gap

    def anchor(self, ts: int) -> int | None:
        """``ts`` extended like this track's packets; None before the first packet, or when
        it lies further than :data:`ANCHOR_RANGE_S` from them."""
        ext = self.clock.nearest(ts)
        latest = self.clock.nearest(self.clock.last or 0)
        if ext is None or latest is None or abs(ext - latest) > ANCHOR_RANGE_S * self.rate:
            return None
        return ext

    def sender_report(self, ntp: int, rtp: int, now: float) -> None:
        self.sr_ntp, self.sr_rtp, self.sr_at = ntp, rtp, now

    def receiver_report(self, ssrc: int, now: float) -> bytes:
        """An RR packet (RFC 3550 §6.4.2) with one report block about this stream."""
        highest = (self.expected - 1) & 0xFFFF
        if highest < self.highest:
            self.cycles += 1 << 16  # wrapped since the last report (< 65,536 packets in between)
        self.highest = highest
        extended = self.cycles + highest
        expected = extended - self.base + 1
        interval = expected - self.prior_expected
        lost_interval = self.lost - self.prior_lost
        self.prior_expected, self.prior_lost = expected, self.lost
        fraction = min(255, (lost_interval << 8) // interval) if interval > 0 else 0
        fraction = max(0, fraction)
        cumulative = min(self.lost, 0x7FFFFF)
        lsr = dlsr = 0
        if self.sr_ntp is not None:
            lsr = (self.sr_ntp >> 16) & 0xFFFFFFFF
            dlsr = min(int((now - self.sr_at) * 65536), 0xFFFFFFFF)
        return _RR.pack(
            0x81, RR, 7, ssrc,
            self.ssrc, (fraction << 24) | cumulative, extended & 0xFFFFFFFF, 0, lsr, dlsr,
        )  # fmt: skip


class Sync:
    """Where audio goes on the video's time line: ``shift`` audio ticks added to each extended
    audio timestamp make ``audio_dts / audio_rate`` and ``video_dts / video_rate`` count from one
    origin (the video's extended RTP timestamps, unchanged). None while unknown."""

    def __init__(self, video: Track, audio: Track) -> None:
        self.video = video
        self.audio = audio
        self.shift: int | None = None

    def start(self) -> int | None:
        """The shift from RTP-Info, or else from sender reports; None while neither is known
        (or before each track's first packet, which extends the anchors)."""
        v, a = self.video, self.audio
        if v.rtptime is not None and a.rtptime is not None:
            ve, ae = v.anchor(v.rtptime), a.anchor(a.rtptime)
            if ve is not None and ae is not None:
                self.shift = audio_shift(v.rate, ve, a.rate, ae)
                return self.shift
        self.shift = self._from_reports()
        return self.shift

    def _from_reports(self) -> int | None:
        v, a = self.video, self.audio
        if v.sr_ntp is None or a.sr_ntp is None:
            return None
        ve, ae = v.anchor(v.sr_rtp), a.anchor(a.sr_rtp)
        if ve is None or ae is None:
            return None
        ntp_delta = ((a.sr_ntp - v.sr_ntp + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63)
        return audio_shift(v.rate, ve, a.rate, ae, ntp_delta)

    def sender_report(self, tolerance_s: float) -> float | None:
        """After a track's sender report: follow RTCP where it places audio more than
        ``tolerance_s`` from where it is (it tracks drift; RTP-Info was a one-off). Returns the
        correction in seconds when there was one."""
        shift = self._from_reports()
        old = self.shift
        if shift is None or (old is not None and abs(shift - old) <= tolerance_s * self.audio.rate):
            return None
        self.shift = shift
        return None if old is None else (shift - old) / self.audio.rate


def receiver_reports(tracks: list[Track], ssrc: int, sdes: bytes, now: float) -> bytes:
    """An RR + SDES compound packet for each track that has received packets, each framed for
    the track's interleaved RTCP channel."""
    out = []
    for t in tracks:
        if t.expected >= 0:
            rtcp = t.receiver_report(ssrc, now) + sdes
            out.append(bytes((0x24, t.channel + 1)) + len(rtcp).to_bytes(2, "big") + rtcp)
    return b"".join(out)


def sender_report(packet: memoryview) -> tuple[int, int, int] | None:
    """(sender SSRC, NTP time, RTP timestamp) of the SR in a compound RTCP packet, or None."""
    i, n = 0, len(packet)
    while i + 4 <= n:
        b0, pt, words = _HEADER.unpack_from(packet, i)
        if b0 >> 6 != 2:
            return None
        size = 4 * (words + 1)
        if pt == SR and size >= 28 and i + size <= n:
            ssrc, ntp, rtp = _SR.unpack_from(packet, i + 4)
            return ssrc, ntp, rtp
        i += size
    return None


def sdes_cname(ssrc: int, cname: bytes) -> bytes:
    """An SDES packet with one CNAME item: RFC 3550 §6.1 wants one in every compound packet."""
    chunk = struct.pack(">IBB", ssrc, 1, len(cname)) + cname + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _HEADER.pack(0x81, SDES, len(chunk) // 4) + chunk


def audio_shift(
    video_rate: int, video_anchor: int, audio_rate: int, audio_anchor: int, ntp_delta: int = 0
) -> int:
    """Audio ticks to add to an (extended) audio timestamp to share the video's origin.

    ``video_anchor`` and ``audio_anchor`` are the extended timestamps of the two tracks at two
    instants ``ntp_delta`` apart (audio's minus video's, in 1/2^32 s): the same instant for
    RTP-Info, the two tracks' last sender reports for RTCP. Then the audio at ``audio_anchor`` is
    the video's ``video_anchor + ntp_delta × video_rate``, expressed in audio ticks.
    """
    num = (video_anchor * NTP_FRACTION + ntp_delta * video_rate) * audio_rate
    den = video_rate * NTP_FRACTION
    return (num + den // 2) // den - audio_anchor
