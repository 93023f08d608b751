"""The recorder against a real catalog and real files, fed with replayed real media."""

from __future__ import annotations

import dataclasses
import itertools
import struct
from pathlib import Path

import av
import pytest

from tests.conftest import START_US, Rig, make_rig
from vms.catalog.store import CLOSED, Catalog, Segment
from vms.ingest.pyav_source import read_clip
from vms.media import VIDEO, Packet, StreamInfo, length_split
from vms.recording import mp4, recovery
from vms.recording.segment import FragmentIndex


def feed(rig: Rig, info: StreamInfo, packets: list[Packet]) -> None:
    rig.recorder.stream_started(info)
    for p in packets:
        rig.recorder.packet(p)
    rig.stop()


def with_arrival(packets: list[Packet], timescale: int) -> list[Packet]:
    """Arrival times as a live camera would give them: one frame interval apart."""
    for p in packets:
        p.arrival = p.dts / timescale
    return packets


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def check_segments(rig: Rig) -> list[Segment]:
    """Invariants every recording must hold; returns the closed segments in order."""
    segs = rig.catalog.segments(camera_id="cam1")
    assert segs, "nothing recorded"
    for prev, seg in itertools.pairwise(segs):
        assert seg.start_us >= prev.end_us, "segments overlap"
    for seg in segs:
        assert seg.state == CLOSED
        assert seg.end_us > seg.start_us, "empty or negative segment"
        path = rig.root / seg.path
        assert path.stat().st_size == seg.bytes
        index = FragmentIndex.decode(seg.frag_index or b"")
        frags = list(index.fragments(seg.init_bytes))
        assert frags[0].keyframe, "segment must start at a keyframe"
        assert all(f.duration <= seg.timescale for f in frags), "fragment longer than 1 s"
        with open(path, "rb") as f:
            for frag in frags:
                f.seek(frag.offset + 4)
                assert f.read(4) == b"moof"
        assert (seg.end_us - seg.start_us) == index.duration * 1_000_000 // seg.timescale
        assert decoded_frames(path) == sum(fr.samples for fr in frags)
    return segs


def total_samples(segs: list[Segment]) -> int:
    return sum(
        fr.samples for s in segs for fr in FragmentIndex.decode(s.frag_index or b"").fragments(0)
    )


def test_clip_becomes_contiguous_decodable_segments(rig: Rig, clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264"])
    feed(rig, info, with_arrival(packets, info.video.timescale))
    segs = check_segments(rig)
    assert total_samples(segs) == len(packets) == 200
    assert len(segs) == 2  # 8 s at 4 s a segment, cut at keyframes
    assert segs[1].start_us == segs[0].end_us, "rotation must leave no gap"
    assert rig.recorder.stats.frames_dropped == 0


def test_long_gop_gives_fragments_of_at_most_one_second(tmp_path: Path, catalog: Catalog) -> None:
    from vms.standin.footage import synthetic_clip

    clip = synthetic_clip(tmp_path / "gop75.mp4", width=160, height=120, seconds=6, gop=75)
    rig = make_rig(tmp_path, catalog, segment_seconds=60)
    info, packets = read_clip(clip)
    feed(rig, info, with_arrival(packets, info.video.timescale))
    segs = check_segments(rig)
    frags = list(FragmentIndex.decode(segs[0].frag_index or b"").fragments(0))
    assert [f.samples for f in frags] == [25] * 6
    assert [f.keyframe for f in frags] == [True, False, False, True, False, False]


def test_camera_timestamps_jumping_by_hours(rig: Rig, clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264"])
    ts = info.video.timescale
    with_arrival(packets, ts)
    hours = 3600 * ts
    for i, p in enumerate(packets):
        shift = (3 * hours if i >= 60 else 0) - (5 * hours if i >= 130 else 0)
        p.dts += shift
        p.pts += shift
    feed(rig, info, packets)
    segs = check_segments(rig)
    assert rig.recorder.stats.timestamp_jumps == 2
    assert total_samples(segs) == 200
    span = segs[-1].end_us - segs[0].start_us
    assert 7_900_000 <= span <= 8_100_000, "jumps must not stretch or fold the timeline"


def test_server_clock_stepping_back_and_forward(rig: Rig, clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264"])
    with_arrival(packets, info.video.timescale)
    rig.recorder.stream_started(info)
    for i, p in enumerate(packets):
        if i == 100:
            rig.clock.step(-7200)  # NTP or an operator steps the clock back two hours
        rig.recorder.packet(p)
    rig.stop()
    rig.clock.step(+3 * 3600)
    feed(rig, info, with_arrival(read_clip(clips["h264"])[1], info.video.timescale))
    segs = check_segments(rig)
    assert total_samples(segs) == 400


def _with_inband_params(p: Packet, info: StreamInfo) -> Packet:
    params = info.video.params
    assert params is not None
    prefix = b"".join(struct.pack(">I", len(n)) + n for n in (*params.sps, *params.pps))
    return Packet(VIDEO, prefix + p.data, p.pts, p.dts, True, p.arrival, params)


def test_parameter_sets_only_with_a_later_keyframe(rig: Rig, clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264"])
    with_arrival(packets, info.video.timescale)
    bare = dataclasses.replace(info, video=dataclasses.replace(info.video, params=None))
    packets[25] = _with_inband_params(packets[25], info)
    feed(rig, bare, packets)
    segs = check_segments(rig)
    assert rig.recorder.stats.frames_dropped == 25, "the first GOP has nothing to decode it with"
    assert total_samples(segs) == 175


def test_idr_split_in_two_packets_with_one_pts(tmp_path: Path, catalog: Catalog) -> None:
    from vms.standin.footage import synthetic_clip

    clip = synthetic_clip(tmp_path / "slices.mp4", width=320, height=240, seconds=4, gop=25)
    rig = make_rig(tmp_path, catalog)
    info, packets = read_clip(clip)
    with_arrival(packets, info.video.timescale)
    split: list[Packet] = []
    for p in packets:
        nals = length_split(p.data)
        if p.keyframe and len(nals) >= 2:
            cut = len(p.data) - (4 + len(nals[-1]))
            split.append(Packet(VIDEO, p.data[:cut], p.pts, p.dts, True, p.arrival))
            split.append(Packet(VIDEO, p.data[cut:], p.pts, p.dts, True, p.arrival))
        else:
            split.append(p)
    assert len(split) > len(packets), "the clip should have multi-NAL keyframes"
    feed(rig, info, split)
    segs = check_segments(rig)
    assert total_samples(segs) == len(packets)
    assert rig.recorder.stats.timestamp_jumps == 0


def test_resolution_change_starts_a_new_segment(rig: Rig, clips: dict[str, Path]) -> None:
    info, big = read_clip(clips["h264"])
    small_info, small = read_clip(clips["h264_small"])
    ts = info.video.timescale
    assert small_info.video.timescale == ts
    base = big[-1].dts + ts // 25
    small[0] = _with_inband_params(small[0], small_info)
    for p in small:
        p.dts += base
        p.pts += base
    feed(rig, info, with_arrival(big + small, ts))
    segs = check_segments(rig)
    assert [(s.width, s.height) for s in segs] == [(320, 240), (320, 240), (160, 120)]
    assert total_samples(segs) == 250


def test_hevc(rig: Rig, clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["hevc"])
    assert info.video.codec == "hevc"
    feed(rig, info, with_arrival(packets, info.video.timescale))
    segs = check_segments(rig)
    assert {s.codec for s in segs} == {"hevc"}
    assert total_samples(segs) == len(packets) == 100


def test_aac_audio_is_recorded(rig: Rig, clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["aac"])
    assert info.audio is not None and info.audio.codec == "aac"
    for p in packets:
        p.arrival = 0.0
    feed(rig, info, packets)
    segs = check_segments(rig)
    assert all(s.has_audio for s in segs)
    with av.open(str(rig.root / segs[0].path)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        audio_frames = sum(1 for _ in c.decode(audio=0))
    seconds = (segs[0].end_us - segs[0].start_us) / 1e6
    assert audio_frames == pytest.approx(seconds * 48000 / 1024, abs=3)


class ManualClock:
    """Wall and monotonic time set by the test, one step per packet."""

    def __init__(self, wall_us: int) -> None:
        self.wall = wall_us
        self.mono = 0.0

    def wall_us(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_slow_camera_clock_reanchors_with_a_gap_of_about_a_second(
    tmp_path: Path, catalog: Catalog, clips: dict[str, Path]
) -> None:
    rig = make_rig(tmp_path, catalog, segment_seconds=10)
    clock = ManualClock(START_US)
    rig.recorder.clock = clock
    info, clip = read_clip(clips["h264"])
    ts = info.video.timescale
    rig.recorder.stream_started(info)
    laps = 15  # 2 minutes of media; the wall clock runs 1 % faster than the camera's
    for lap in range(laps):
        for p in clip:
            dts = p.dts + lap * 200 * (ts // 25)
            q = Packet(VIDEO, p.data, dts, dts, p.keyframe, dts / ts, p.params)
            clock.mono = q.arrival * 1.01
            clock.wall = START_US + int(clock.mono * 1_000_000)
            rig.recorder.packet(q)
    rig.stop()
    segs = check_segments(rig)
    gaps = [b.start_us - a.end_us for a, b in itertools.pairwise(segs)]
    assert sum(1 for g in gaps if g == 0) >= len(gaps) - 2, (
        "runs stay contiguous between re-anchors"
    )
    reanchors = [g for g in gaps if g > 0]
    assert reanchors and all(1_000_000 < g < 1_200_000 for g in reanchors), gaps
    assert total_samples(segs) == laps * 200


def test_after_a_restart_with_the_clock_set_back_nothing_overlaps(
    tmp_path: Path, catalog: Catalog, clips: dict[str, Path]
) -> None:
    rig = make_rig(tmp_path, catalog)
    info, packets = read_clip(clips["h264"])
    feed(rig, info, with_arrival(packets, info.video.timescale))
    last_end = rig.catalog.segments()[-1].end_us
    again = make_rig(tmp_path, catalog)  # a new process: a new recorder on the same catalog
    again.clock.step(-3600)
    info, packets = read_clip(clips["h264"])
    feed(again, info, with_arrival(packets, info.video.timescale))
    segs = check_segments(again)
    assert segs[2].start_us >= last_end


def test_first_segments_are_staggered_across_cameras(
    tmp_path: Path, catalog: Catalog, clips: dict[str, Path]
) -> None:
    info, _ = read_clip(clips["h264"])
    firsts = {}
    for cam in ("gate", "lobby", "yard"):
        rig = make_rig(tmp_path, catalog, segment_seconds=8, camera=cam, stagger=True)
        feed(rig, info, with_arrival(read_clip(clips["h264"])[1], info.video.timescale))
        first = rig.catalog.segments(camera_id=cam)[0]
        firsts[cam] = first.end_us - first.start_us
    assert len(set(firsts.values())) == 3, firsts  # rotations fall at different moments
    assert all(1_000_000 <= d <= 8_000_000 for d in firsts.values())


def test_health_listeners_see_state_changes() -> None:
    from vms.clock import SystemClock
    from vms.health import CameraHealth, State

    health = CameraHealth("cam", SystemClock())
    seen: list[State] = []
    unsubscribe = health.subscribe(lambda h: seen.append(h.state))
    health.stream_up("h264", 640, 360)
    health.record_failed("storage full on root r1")
    health.record_failed("storage full on root r1")  # no change, no call
    health.record_ok()
    health.stream_down("Connection refused")
    unsubscribe()
    health.stream_up("h264", 640, 360)
    assert seen == [State.ONLINE, State.DEGRADED, State.ONLINE, State.OFFLINE]
    # Online again: no error now; the one that cleared is kept apart.
    assert health.last_error is None and health.previous_error == "Connection refused"


def _tfdts(path: Path, seg: Segment) -> list[int]:
    """The video decode time of every fragment, read from the file's moof boxes."""
    out = []
    with open(path, "rb") as f:
        for frag in FragmentIndex.decode(seg.frag_index or b"").fragments(seg.init_bytes):
            f.seek(frag.offset)
            out.append(mp4.parse_moof(f.read(frag.size)).video_base)
    return out


def test_a_run_of_segments_has_one_decode_time_line(rig: Rig, clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264"])
    feed(rig, info, with_arrival(packets, info.video.timescale))
    feed(rig, info, with_arrival(read_clip(clips["h264"])[1], info.video.timescale))
    segs = check_segments(rig)
    assert len(segs) == 4
    first, second, third, _ = segs
    assert first.media_start == 0, "a connection starts a run"
    duration = FragmentIndex.decode(first.frag_index or b"").duration
    assert second.media_start == duration, "the next segment continues the decode time"
    assert _tfdts(rig.root / second.path, second)[0] == second.media_start
    assert third.media_start == 0, "a new connection starts a new run"
    inits = [(rig.root / s.path).read_bytes()[: s.init_bytes] for s in (first, second)]
    assert inits[0] == inits[1], "one init segment serves the whole run"


def test_lost_media_ends_the_fragment_and_is_marked_in_the_index(
    rig: Rig, clips: dict[str, Path]
) -> None:
    info, packets = read_clip(clips["h264"])
    packets = with_arrival(packets, info.video.timescale)
    rig.recorder.stream_started(info)
    for p in packets[:30]:
        rig.recorder.packet(p)
    rig.recorder.gap()  # what the reader says after RTP loss; it drops frames to a keyframe
    for p in packets[50:]:
        rig.recorder.packet(p)
    rig.stop()
    segs = check_segments(rig)
    assert total_samples(segs) == len(packets) - 20
    frags = list(FragmentIndex.decode(segs[0].frag_index or b"").fragments(segs[0].init_bytes))
    gaps = [f for f in frags if f.gap]
    assert len(gaps) == 1, "the hole is marked once"
    tick = info.video.timescale // 25
    after = frags[frags.index(gaps[0]) + 1]
    assert after.start == 50 * tick, "the next fragment starts at the keyframe's true time"
    assert _tfdts(rig.root / segs[0].path, segs[0])[frags.index(after)] == 50 * tick
    assert gaps[0].start + gaps[0].duration == after.start
    rebuilt = recovery.scan(rig.root / segs[0].path)
    assert rebuilt.index.encode() == segs[0].frag_index, "recovery rebuilds the same gap"
