"""Timing and loss on real RTSP streams: A/V sync, RTP loss, stalls, RTCP, hostile sizes.

The stand-in camera (GStreamer) is the real sender; the relay in tests/support/bad_rtsp.py sits
between it and the VMS to drop, rewrite or inject chosen RTP packets and to capture what the
VMS sends back (RTCP receiver reports). Audio placement is checked on the files, with ffprobe;
the recorder's share of it also with a real clip fed in the order a camera sends it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from tests.conftest import Rig, make_rig
from tests.support.bad_rtsp import RtpRelay, h264_nal, rtp_fields
from tests.support.polling import wait_for
from vms import config as config_mod
from vms import metrics
from vms.catalog.store import CLOSED, Catalog, Segment
from vms.health import State
from vms.ingest import rtcp, rtp
from vms.ingest.pyav_source import read_clip
from vms.ingest.rtp import Media
from vms.ingest.rtsp_headers import match_rtp_info, parse_rtp_info
from vms.media import H264, VIDEO, Packet, StreamInfo
from vms.recording.recorder import AUDIO_PREROLL
from vms.server import Camera, Server
from vms.standin import StandinCamera, gstreamer_available

needs_standin = pytest.mark.skipif(
    not gstreamer_available(),
    reason="GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, x264enc) missing",
)

KEYINT = 25


def build(
    tmp_path: Path, url: str, *, reader: str = "native", segment_seconds: float = 60, **ingest: Any
) -> Server:
    root = tmp_path / "r1"
    root.mkdir(exist_ok=True)
    cfg = {
        "data_dir": str(tmp_path),
        "storage": {"roots": [{"name": "r1", "path": str(root), "min_free_bytes": 0}]},
        "recording": {"segment_seconds": segment_seconds, "stagger": False},
        "ingest": {
            "reader": reader, "open_timeout_s": 2, "stall_timeout_s": 2,
            "backoff_initial_s": 0.2, "backoff_max_s": 1, **ingest,
        },
        "cameras": [{"id": "cam", "main": {"url": url}}],
    }  # fmt: skip
    server = Server(config_mod.from_dict(cfg))
    server.open()  # cameras built, no reader yet: ``serving`` runs them
    return server


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Camera]:
    server.run()
    try:
        yield server.camera("cam")
    finally:
        server.stop()


def closed_segments(tmp_path: Path) -> list[Segment]:
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        segs = cat.segments(camera_id="cam")
    finally:
        cat.close()
    assert segs and all(s.state == CLOSED for s in segs)
    return segs


def assert_tracks_aligned(tmp_path: Path, segments: list[Segment]) -> None:
    """Every segment's audio starts with its video and ends with it."""
    segs = sorted(segments, key=lambda s: s.start_us)
    for seg in segs:
        spans = track_spans(tmp_path / "r1" / seg.path)
        # The stop closes the last segment wherever it stands: it may hold one video frame
        # whose audio had not arrived yet, and its two tracks need not end together.
        stopped = seg is segs[-1]
        if stopped and "audio" not in spans:
            continue
        assert "audio" in spans, f"segment {seg.id} has no audio"
        (v0, v1), (a0, a1) = spans["video"], spans["audio"]
        where = f"segment {seg.id}: video {v0:.3f}..{v1:.3f} s, audio {a0:.3f}..{a1:.3f} s"
        assert abs(a0 - v0) <= 0.050, where
        assert stopped or abs(a1 - v1) <= 0.100, where


def track_spans(path: Path) -> dict[str, tuple[float, float]]:
    """(first pts, last pts + duration) of each track, in seconds, as ffprobe reads them."""
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-of", "json",
            "-show_entries", "stream=index,codec_type:packet=stream_index,pts_time,duration_time",
            str(path),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found = json.loads(out.stdout)
    kinds = {s["index"]: s["codec_type"] for s in found["streams"]}
    spans: dict[str, tuple[float, float]] = {}
    for p in found["packets"]:
        kind = kinds[p["stream_index"]]
        start = float(p["pts_time"])
        # ffprobe leaves out the duration of some first AAC packets: count those as empty.
        end = start + float(p.get("duration_time", "0").replace("N/A", "0"))
        lo, hi = spans.get(kind, (start, end))
        spans[kind] = (min(lo, start), max(hi, end))
    return spans


# --- 1. A/V sync ---------------------------------------------------------------------------


@needs_standin
@pytest.mark.parametrize("reader", ["native", "pyav"])
def test_audio_and_video_start_and_end_together_across_restarts(
    tmp_path: Path, reader: str
) -> None:
    """Each restart of the camera draws new random RTP timestamp origins for both tracks."""
    standin = StandinCamera(width=320, height=240, keyint=KEYINT, audio="aac").start()
    try:
        port = standin.port
        srv = build(tmp_path, standin.url, reader=reader, segment_seconds=2)
        with serving(srv) as cam:
            assert cam.recorder is not None
            stats = cam.recorder.stats
            for restart in range(6):
                if restart:
                    standin.stop()
                    wait_for(lambda: cam.health.state == State.OFFLINE, 10, "offline")
                    standin = StandinCamera(
                        width=320, height=240, keyint=KEYINT, audio="aac", port=port
                    ).start()
                wait_for(lambda: cam.health.state == State.ONLINE, 15, "online")
                closed = stats.segments
                wait_for(lambda: stats.segments > closed, 15, "a closed segment")  # noqa: B023
    finally:
        standin.stop()
    segs = closed_segments(tmp_path)
    assert len(segs) >= 6
    assert_tracks_aligned(tmp_path, segs)


RATES = {0: 90000, 1: 90000, 2: 48000, 3: 48000}  # the stand-in's channels: video, audio


class Jump(RtpRelay):
    """Steps the RTP timestamps (and the sender reports' ones) of the audio after the
    ``audio_after``-th video frame and of the video after the ``video_after``-th by ``seconds``:
    a camera whose clock is reset, its audio encoder first."""

    def __init__(
        self, upstream_port: int, *, audio_after: int, video_after: int, seconds: int
    ) -> None:
        super().__init__(upstream_port)
        self.after = {0: video_after, 1: video_after, 2: audio_after, 3: audio_after}
        self.seconds = seconds
        self.frames = 0

    def connected(self) -> None:
        self.frames = 0

    def media(self, channel: int, packet: bytes) -> list[tuple[int, bytes]]:
        if channel in RATES and self.frames >= self.after[channel]:
            at = 16 if channel % 2 else 4  # a sender report's RTP timestamp, or the RTP header's
            if not channel % 2 or packet[1] == 200:
                ts = int.from_bytes(packet[at : at + 4], "big") + self.seconds * RATES[channel]
                packet = packet[:at] + (ts & 0xFFFFFFFF).to_bytes(4, "big") + packet[at + 4 :]
        if channel == 0 and packet[1] & 0x80:
            self.frames += 1
        return [(channel, packet)]


@pytest.fixture(scope="module")
def camera() -> Iterator[StandinCamera]:
    """One H.264 + AAC camera for the relayed cases; snow makes P-frames of ~8 RTP packets."""
    if not gstreamer_available():
        pytest.skip("GStreamer RTSP server missing")
    with StandinCamera(
        width=320, height=240, keyint=KEYINT, audio="aac", pattern="snow"
    ) as standin:
        yield standin


@pytest.mark.parametrize("reader", ["native", "pyav"])
def test_audio_is_rebased_with_video_after_a_camera_timestamp_jump(
    tmp_path: Path, camera: StandinCamera, reader: str
) -> None:
    with Jump(camera.port, audio_after=50, video_after=90, seconds=3600) as relay:
        srv = build(tmp_path, relay.url, reader=reader, segment_seconds=4)
        with serving(srv) as cam:
            assert cam.recorder is not None
            stats = cam.recorder.stats
            wait_for(lambda: stats.timestamp_jumps >= 1, 15, "the jump")
            wait_for(lambda: stats.segments >= 3, 20, "three closed segments")
    assert_tracks_aligned(tmp_path, closed_segments(tmp_path))


class Unplaced(RtpRelay):
    """A camera that gives nothing to place its audio by: no RTP-Info, no sender reports."""

    def reply(self, head: str, body: bytes) -> tuple[str, bytes]:
        lines = [ln for ln in head.split("\r\n") if not ln.lower().startswith("rtp-info:")]
        return "\r\n".join(lines), body

    def media(self, channel: int, packet: bytes) -> list[tuple[int, bytes]]:
        return [] if channel % 2 else [(channel, packet)]


def test_audio_with_nothing_to_place_it_by_goes_by_arrival(
    tmp_path: Path, camera: StandinCamera, caplog: pytest.LogCaptureFixture
) -> None:
    with Unplaced(camera.port) as relay:
        srv = build(tmp_path, relay.url, segment_seconds=2)
        with serving(srv) as cam:
            assert cam.recorder is not None
            stats = cam.recorder.stats
            wait_for(lambda: stats.segments >= 4, 30, "four closed segments")
    with_audio = [s for s in closed_segments(tmp_path) if s.has_audio]
    spans = [track_spans(tmp_path / "r1" / s.path) for s in with_audio]
    placed = [sp for sp in spans if "audio" in sp]
    assert placed, "the audio was never recorded"
    for sp in placed[1:]:  # the first may be the one that waited
        (v0, _), (a0, _) = sp["video"], sp["audio"]
        assert abs(a0 - v0) <= 0.2, sp  # arrival time: within network and read jitter
    assert any("placed by arrival time" in r.getMessage() for r in caplog.records)


# --- 2. RTP loss ---------------------------------------------------------------------------


class Lossy(RtpRelay):
    """Drops chosen sequence numbers: a middle FU-A fragment (never the first or the marker
    packet, so every frame is still seen in part) of the first P-frame at or after each video
    frame number in ``video_at``, and the audio packet at each index in ``audio_at``."""

    def __init__(self, upstream_port: int, *, video_at: list[int], audio_at: list[int]) -> None:
        super().__init__(upstream_port)
        self.video_at, self.audio_at = list(video_at), set(audio_at)
        self.frames: list[tuple[int, bool]] = []  # (RTP timestamp, keyframe) of each video frame
        self.dropped: list[tuple[int, int, int]] = []  # (channel, sequence number, timestamp)
        self.seqs: dict[int, list[int]] = {0: [], 2: []}  # forwarded, per RTP channel
        self.ssrc: dict[int, int] = {}
        self.audio = 0

    def media(self, channel: int, packet: bytes) -> list[tuple[int, bytes]]:
        if channel not in self.seqs:
            return [(channel, packet)]
        seq, ts, marker, ssrc = rtp_fields(packet)
        self.ssrc[channel] = ssrc
        drop = False
        if channel == 0:
            if not self.frames or self.frames[-1][0] != ts:
                self.frames.append((ts, False))
            kind, first = h264_nal(packet)
            if kind == 5:
                self.frames[-1] = (ts, True)
            n = len(self.frames) - 1
            if self.video_at and n >= self.video_at[0] and kind == 1 and not first and not marker:
                drop = not self.dropped or self.dropped[-1][2] != ts
                if drop:
                    self.video_at.pop(0)
        else:
            drop = self.audio in self.audio_at
            self.audio += 1
        if drop:
            self.dropped.append((channel, seq, ts))
            return []
        self.seqs[channel].append(seq)
        return [(channel, packet)]

    def damaged(self) -> list[tuple[int, list[int], int]]:
        """For each video loss whose next keyframe has come: the timestamps of the frame
        before, of the frames from the damaged one up to the keyframe, and of the keyframe."""
        out = []
        stamps = [ts for ts, _ in self.frames]
        for channel, _, ts in self.dropped:
            i = stamps.index(ts) if channel == 0 else -1
            j = next((k for k in range(i + 1, len(stamps)) if self.frames[k][1]), None)
            if i > 0 and j is not None:
                out.append((stamps[i - 1], stamps[i:j], stamps[j]))
        return out


class Collector:
    """Drains a fan-out subscription: the video that the recorder was handed, in order."""

    def __init__(self, cam: Camera) -> None:
        self.sub = cam.relay.subscribe_blocking(maxlen=100_000)
        self.video: list[Packet] = []

    def drain(self) -> list[Packet]:
        while (p := self.sub.get(0)) is not None:
            if isinstance(p, Packet) and p.kind == VIDEO:
                self.video.append(p)
        return self.video

    def stamps(self) -> list[int]:
        """Their RTP timestamps (video dts are the extended RTP timestamps)."""
        return [p.dts & 0xFFFFFFFF for p in self.drain()]


def test_rtp_loss_drops_the_damaged_frames_up_to_the_next_keyframe(
    tmp_path: Path, camera: StandinCamera, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Lossy(camera.port, video_at=[40, 90], audio_at=[120]) as relay:
        srv = build(tmp_path, relay.url)
        cam = srv.camera("cam")
        recorder = cam.recorder
        assert recorder is not None
        gaps: list[int] = []  # video frames delivered when gap() was called
        gap = recorder.gap
        monkeypatch.setattr(recorder, "gap", lambda: (gaps.append(cam.health.frames), gap())[1])
        got = Collector(cam)
        with serving(srv):

            def resumed() -> bool:
                damaged = relay.damaged()
                return len(damaged) == 2 and damaged[-1][2] in got.stamps()

            wait_for(resumed, 20, "the keyframe after the second loss")
    stamps = got.stamps()
    skipped = cam.health.frames - len(stamps)  # before the first keyframe, not in the collector
    losses = relay.damaged()
    for before, frames, key in losses:
        assert not set(stamps) & set(frames), "a damaged frame, or one that depends on it"
        i = stamps.index(before)  # the last frame before the loss, then the next keyframe
        assert stamps[i + 1] == key, f"frames {stamps[i : i + 3]}, keyframe {key}"
    assert len(gaps) == len(losses), "one gap() a loss"
    for (before, _, _), called in zip(losses, gaps, strict=True):
        assert called == skipped + stamps.index(before) + 1, "gap() between the two"
    damaged = sum(len(frames) for _, frames, _ in relay.damaged())
    assert cam.health.rtp_lost == len(relay.dropped) == 3
    assert cam.health.frames_discarded == damaged
    text = metrics.render(srv).decode()
    assert 'vms_camera_rtp_lost_total{camera="cam"} 3' in text
    assert f'vms_camera_frames_discarded_total{{camera="cam"}} {damaged}' in text


# --- 3. Stalls: no video -------------------------------------------------------------------


class VideoStops(RtpRelay):
    """Forwards everything until ``stop`` is set, then no more video RTP (RTCP and audio go on);
    or, with ``channel``, sends the video on that interleaved channel, never agreed in SETUP."""

    def __init__(self, upstream_port: int, *, channel: int | None = None) -> None:
        super().__init__(upstream_port)
        self.stop = threading.Event()
        self.channel = channel
        self.audio_after_stop = 0

    def media(self, channel: int, packet: bytes) -> list[tuple[int, bytes]]:
        if channel == 0 and self.channel is not None:
            return [(self.channel, packet)]
        if self.stop.is_set():
            if channel == 0:
                return []
            self.audio_after_stop += channel == 2
        return [(channel, packet)]


@pytest.mark.parametrize("reader", ["native", "pyav"])
def test_video_stopping_while_audio_flows_is_a_stall(
    tmp_path: Path, camera: StandinCamera, reader: str
) -> None:
    with VideoStops(camera.port) as relay:
        srv = build(tmp_path, relay.url, reader=reader)
        with serving(srv) as cam:
            wait_for(lambda: cam.health.state == State.ONLINE, 15, "online")
            stopped = time.monotonic()
            relay.stop.set()
            wait_for(lambda: cam.health.state == State.OFFLINE, 10, "offline")
            after = time.monotonic() - stopped
            error = cam.health.last_error or ""
            assert "stalled" in error and "no video" in error, error
            assert after <= 2 + 1.5, f"offline {after:.1f} s after the video stopped (2 s)"
            assert relay.audio_after_stop > 0, "the audio went on"


def test_video_on_a_channel_never_set_up_is_a_stall(tmp_path: Path, camera: StandinCamera) -> None:
    with VideoStops(camera.port, channel=6) as relay:
        srv = build(tmp_path, relay.url)
        cam = srv.camera("cam")
        seen: list[State] = []
        cam.health.subscribe(lambda h: seen.append(h.state))
        with serving(srv):
            wait_for(lambda: cam.health.state == State.OFFLINE, 8, "offline")
            error = cam.health.last_error or ""
            assert "stalled" in error and "no video" in error, error
            wait_for(lambda: relay.requests.count("PLAY") >= 2, 8, "a new session")
    assert State.ONLINE not in seen


# --- 4. RTCP receiver reports --------------------------------------------------------------


def test_receiver_reports_on_each_tracks_rtcp_channel(
    tmp_path: Path, camera: StandinCamera
) -> None:
    """Well-formed RR + SDES compound packets every ~5 s, counting the losses the relay made."""
    with Lossy(camera.port, video_at=list(range(20, 80, 10)), audio_at=[]) as relay:
        srv = build(tmp_path, relay.url)

        def reports(channel: int) -> list[tuple[float, bytes]]:
            return [(t, p) for t, c, p in list(relay.from_client) if c == channel]

        with serving(srv):
            wait_for(lambda: len(reports(1)) >= 2 and len(reports(3)) >= 2, 15, "two reports")
    senders = set()
    for channel in (1, 3):
        found = reports(channel)
        assert 4.0 <= found[1][0] - found[0][0] <= 6.5, "about 5 s apart"
        srs = {
            int.from_bytes(p[8:16], "big") >> 16 & 0xFFFFFFFF
            for c, p in relay.server_rtcp
            if c == channel and p[1] == 200
        }
        previous = relay.seqs[channel - 1][0] - 1
        previous_lost = 0
        for _, packet in found:
            b0, pt, words, sender, media, lost, highest, jitter, lsr, dlsr = struct.unpack_from(
                ">BBHIIIIIII", packet
            )
            assert (b0, pt, words) == (0x81, 201, 7), "V=2, one report block, RR, 32 bytes"
            senders.add(sender)
            assert media == relay.ssrc[channel - 1]
            assert highest & 0xFFFF in relay.seqs[channel - 1] and highest >= previous
            cumulative = lost & 0xFFFFFF
            assert lost >> 24 == (cumulative - previous_lost) * 256 // (highest - previous)
            previous, previous_lost = highest, cumulative
            assert jitter == 0
            assert lsr == 0 or lsr in srs, "LSR: the middle of a sender report's NTP time"
            assert dlsr / 65536 <= 6.5 if lsr else dlsr == 0
            sdes = packet[32:]
            b0, pt, words, ssrc, item, size = struct.unpack_from(">BBHIBB", sdes)
            assert (b0, pt, ssrc, item) == (0x81, 202, sender, 1), "SDES with our CNAME"
            assert len(sdes) == 4 * (words + 1) and size and sdes[10 : 10 + size].isascii()
        fractions = [p[12] for _, p in found]
        if channel == 1:  # the relay dropped six video packets in the first seconds
            assert previous_lost == 6 and fractions[0] > 0
        else:
            assert previous_lost == 0 and not any(fractions)
    assert len(senders) == 1


# --- 5. Hostile sizes ----------------------------------------------------------------------


class NoSprop(RtpRelay):
    """A camera whose SDP carries no parameter sets: the SPS comes only in-band."""

    def reply(self, head: str, body: bytes) -> tuple[str, bytes]:
        return head, re.sub(rb"sprop-parameter-sets=[^;\r\n]*;?", b"", body)


def test_size_from_an_in_band_sps_survives_a_reconnect(
    tmp_path: Path, camera: StandinCamera
) -> None:
    with NoSprop(camera.port) as relay:
        srv = build(tmp_path, relay.url)
        with serving(srv) as cam:
            h = cam.health
            wait_for(lambda: h.state == State.ONLINE and h.width, 15, "online with a size")
            assert (h.width, h.height) == (320, 240)
            for reconnects in (1, 2):
                relay.disconnect()
                wait_for(lambda: h.reconnects >= reconnects, 10, "a reconnect")  # noqa: B023
                frames = h.frames
                # A GOP and more: the first keyframe after the reconnect has come.
                wait_for(lambda: h.frames >= frames + KEYINT + 5, 15, "frames")  # noqa: B023
                assert (h.width, h.height) == (320, 240)


class Oversized(RtpRelay):
    """Sends a 20 MB NAL unit (FU-A, 60 kB a packet) after the video frames numbered in ``at``
    of each connection, renumbering the real packets after it so that nothing looks lost."""

    SIZE = 20 << 20
    CHUNK = 60_000

    def __init__(self, upstream_port: int, *, at: list[list[int]]) -> None:
        super().__init__(upstream_port)
        self.at = at  # for each connection in turn
        self.payload = os.urandom(1 << 16) * (self.SIZE >> 16)
        self.sent = 0

    def connected(self) -> None:
        self.frames = self.added = 0
        self.now = self.at.pop(0) if self.at else []

    def media(self, channel: int, packet: bytes) -> list[tuple[int, bytes]]:
        if channel != 0:
            return [(channel, packet)]
        seq, ts, marker, ssrc = rtp_fields(packet)
        seq = (seq + self.added) & 0xFFFF
        out = [(0, packet[:2] + seq.to_bytes(2, "big") + packet[4:])]
        self.frames += marker
        if marker and self.frames in self.now:
            for at in range(0, self.SIZE, self.CHUNK):
                last = at + self.CHUNK >= self.SIZE
                fu = (0x80 if not at else 0) | (0x40 if last else 0) | 5  # an IDR slice
                head = struct.pack(">BBHII", 0x80, (0x80 if last else 0) | 96, 0, ts + 1, ssrc)
                seq = (seq + 1) & 0xFFFF
                head = head[:2] + seq.to_bytes(2, "big") + head[4:]
                out.append((0, head + bytes([0x7C, fu]) + self.payload[at : at + self.CHUNK]))
                self.added += 1
            self.sent += 1
        return out


def test_an_oversized_access_unit_is_dropped_and_counted(
    tmp_path: Path, camera: StandinCamera, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vms.ingest.receiver")
    with Oversized(camera.port, at=[[30, 60], [30]]) as relay:
        # Reading 20 MB takes the reader seconds (256 kB a round): no stall meanwhile.
        srv = build(tmp_path, relay.url, stall_timeout_s=10)
        cam = srv.camera("cam")
        got = Collector(cam)
        with serving(srv):
            wait_for(lambda: relay.sent >= 2, 20, "two huge NAL units")
            relay.disconnect()
            wait_for(lambda: cam.health.reconnects >= 1 and relay.sent >= 3, 20, "another")
            frames = cam.health.frames
            wait_for(lambda: cam.health.frames > frames + KEYINT + 5, 15, "video after it")
    video = got.drain()
    assert len(video) > 3 * KEYINT
    assert all(len(p.data) < 8 << 20 for p in video)
    assert cam.health.frames_discarded >= relay.sent >= 3
    assert cam.health.rtp_lost == 0
    logged = [r for r in caplog.records if "over 8 MiB" in r.getMessage()]
    assert len(logged) == 2, "once a session"


# --- the pieces ----------------------------------------------------------------------------


def test_rtp_info_and_sender_reports_of_the_stand_in_agree() -> None:
    """Values the stand-in sent in one session: RTP-Info in the PLAY reply, then each track's
    first sender report. Both anchors must place the audio at the same spot (within 1 ms)."""
    header = (
        "url=rtsp://127.0.0.1:34069/cam/stream=0;seq=10955;rtptime=3911688158, "
        "url=rtsp://127.0.0.1:34069/cam/stream=1;seq=2676;rtptime=869441427"
    )

    def times(header: str, *controls: str) -> list[int | None]:
        tracks = [Media(VIDEO, "h264", 90000, c, 0) for c in controls]
        match_rtp_info(parse_rtp_info(header), tracks)
        return [t.rtp_time for t in tracks]

    base = "rtsp://127.0.0.1:34069/cam/"
    video, audio = times(header, base + "stream=0", base + "stream=1")
    assert (video, audio) == (3911688158, 869441427)
    # Behind a proxy, or with paths only, the last segment matches.
    assert times(header, "rtsp://proxy/cam/stream=1") == [869441427]
    assert times("url=trackID=2;rtptime=7", "rtsp://c/x/trackID=2") == [7]
    assert times("", base + "stream=0", base + "stream=1") == [None, None]
    assert video is not None and audio is not None
    by_info = rtcp.audio_shift(90000, video, 48000, audio)
    ntp_v, ntp_a = round(4004664219.871163 * 2**32), round(4004664219.464277 * 2**32)
    by_reports = rtcp.audio_shift(90000, 3911900941, 48000, 869535381, ntp_a - ntp_v)
    assert abs(by_info - by_reports) <= 48
    # The audio at RTP-Info's instant is the video's at the same instant, in audio ticks.
    assert audio + by_info == round(video * 48000 / 90000)


def test_sender_report_in_a_compound_packet() -> None:
    rr = struct.pack(">BBHI", 0x80, 201, 1, 7)
    sr = struct.pack(">BBHIQIII", 0x80, 200, 6, 0xABC, 123 << 32, 4242, 1, 2)
    assert rtcp.sender_report(memoryview(rr + sr)) == (0xABC, 123 << 32, 4242)
    assert rtcp.sender_report(memoryview(rr)) is None
    assert rtcp.sender_report(memoryview(b"\x00" * 40)) is None  # not version 2


def test_loss_statistics_across_the_sequence_wrap() -> None:
    t = rtcp.Track(0, 90000, video=True)
    assert t.jumped(65530, 9) == 0  # the first packet
    t.expected = 65534
    assert t.jumped(2, 9) == 4  # 65534, 65535, 0 and 1 lost
    t.expected = 3
    report = t.receiver_report(1, now=0.0)
    _, _, _, _, media, lost, highest, *_ = struct.unpack(">BBHIIIIIII", report)
    assert (media, lost & 0xFFFFFF, highest) == (9, 4, 65536 + 2)
    assert lost >> 24 == 4 * 256 // 9  # 9 expected, 4 lost
    assert t.jumped(100, 10) == 0, "a new SSRC starts over"


def test_an_access_unit_over_the_cap_is_dropped_whole() -> None:
    d = rtp.Depacketizer(H264)
    chunk = bytes(60_000)
    assert d.push(memoryview(b"\x7c\x85" + chunk), False) is None  # FU-A start, IDR
    for _ in range(rtp.MAX_ACCESS_UNIT // len(chunk) + 10):
        assert d.push(memoryview(b"\x7c\x05" + chunk), False) is None
        held = sum(map(len, d.fu or [])) + sum(map(len, d.nals))
        assert held <= rtp.MAX_ACCESS_UNIT
    assert d.push(memoryview(b"\x7c\x45" + chunk), True) == []  # its end: dropped
    assert d.oversized == 1
    assert d.push(memoryview(b"\x41\x9a"), True) == [b"\x41\x9a"]  # the next frame is whole
    d.push(memoryview(b"\x7c\x85" + chunk), False)
    d.lost()  # packets lost: the frame being received is dropped through its marker
    assert d.push(memoryview(b"\x7c\x45" + chunk), True) == []
    assert d.oversized == 1


def early_audio(clip: Path, lead_s: float, shift_s: float = 0.0) -> tuple[StreamInfo, list[Packet]]:
    """A clip's packets in the order a camera sends them when its audio of an instant arrives
    ``lead_s`` before its video (audio timestamps moved by ``shift_s``)."""
    info, packets = read_clip(clip)
    assert info.audio is not None
    for p in packets:
        if p.kind == VIDEO:
            p.arrival = p.dts / info.video.timescale
        else:
            p.dts += round(shift_s * info.audio.timescale)
            p.arrival = p.dts / info.audio.timescale - lead_s - shift_s
    return info, sorted(packets, key=lambda p: p.arrival)


def recorded_spans(rig: Rig) -> list[dict[str, tuple[float, float]]]:
    segs = rig.catalog.segments(camera_id="cam1")
    assert segs and all(s.state == CLOSED for s in segs)
    return [track_spans(rig.root / s.path) for s in segs]


def test_audio_is_split_between_segments_by_timestamp_not_arrival(
    tmp_path: Path, catalog: Catalog, clips: dict[str, Path]
) -> None:
    rig = make_rig(tmp_path, catalog, segment_seconds=2)
    info, packets = early_audio(clips["aac"], lead_s=0.05)
    rig.recorder.stream_started(info)
    for p in packets:
        rig.recorder.packet(p)
    rig.stop()
    spans = recorded_spans(rig)
    assert len(spans) >= 2
    for i, s in enumerate(spans):
        (v0, v1), (a0, a1) = s["video"], s["audio"]
        assert abs(a0 - v0) <= 0.025, (i, s)  # within an AAC frame (21 ms)
        if i < len(spans) - 1:
            assert abs(a1 - v1) <= 0.025, (i, s)


def test_audio_far_ahead_of_the_video_is_still_written(
    tmp_path: Path, catalog: Catalog, clips: dict[str, Path]
) -> None:
    """Audio whose timestamps run seconds ahead is misplaced, not early: it is written."""
    rig = make_rig(tmp_path, catalog, segment_seconds=60)
    info, packets = early_audio(clips["aac"], lead_s=0.0, shift_s=2.0)
    rig.recorder.stream_started(info)
    for p in packets:
        rig.recorder.packet(p)
    rig.stop()
    audio = sum(1 for p in packets if p.kind != VIDEO)
    with av.open(str(rig.root / rig.catalog.segments(camera_id="cam1")[0].path)) as c:
        written = sum(1 for p in c.demux(audio=0) if p.size)
    assert written >= audio - AUDIO_PREROLL
