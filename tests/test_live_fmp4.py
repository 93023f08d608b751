"""The live muxer: fragments made from a real clip's packets, as they come from a camera, decode
with PyAV in order and on a continuous timeline; the codec strings name the stream."""

from __future__ import annotations

import dataclasses
import io
import itertools
import re
from pathlib import Path

import av
import pytest

from tests.support.counter_clip import counter_clip, decode
from vms.ingest.pyav_source import read_clip
from vms.live.fmp4 import LiveMuxer, with_params
from vms.media import AUDIO, PCMU, VIDEO, AudioInfo, Packet, length_prefix, length_split
from vms.recording import mp4

FPS = 25


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return counter_clip(tmp_path_factory.mktemp("live") / "c.mp4", frames=60, gop=20)


def _stream(muxer: LiveMuxer, batches: list[list[Packet]]) -> bytes:
    return muxer.init + b"".join(muxer.fragment(b) for b in batches)


def _tfdts(data: bytes) -> list[int]:
    return [
        mp4.parse_moof(data[b.offset : b.offset + b.size]).video_base
        for b in mp4.iter_boxes(data)
        if b.kind == b"moof"
    ]


def test_one_fragment_per_frame_decodes_every_frame_in_order(counter: Path) -> None:
    info, packets = read_clip(counter)
    m = LiveMuxer(info)
    data = _stream(m, [[p] for p in packets])
    frames = decode(data)
    assert [n for _, n, _, _ in frames] == list(range(60))
    times = [t for t, _, _, _ in frames]
    assert times[0] == 0.0
    assert all(abs(b - a - 1 / FPS) < 1e-6 for a, b in itertools.pairwise(times))
    assert (m.width, m.height) == (160, 120)
    steps = {b - a for a, b in itertools.pairwise(_tfdts(data))}
    assert steps == {info.video.timescale // FPS}  # tfdt continuous, frame by frame


def test_batches_of_frames_decode_the_same(counter: Path) -> None:
    info, packets = read_clip(counter)
    m = LiveMuxer(info)
    batches = [packets[i : i + 7] for i in range(0, len(packets), 7)]
    assert [n for _, n, _, _ in decode(_stream(m, batches))] == list(range(60))


def test_timeline_starts_at_zero_whatever_the_camera_clock(counter: Path) -> None:
    info, packets = read_clip(counter)
    for p in packets:
        p.dts += 123_456_789
        p.pts += 123_456_789
    data = _stream(LiveMuxer(info), [[p] for p in packets])
    assert _tfdts(data)[0] == 0
    assert decode(data)[0][:2] == (0.0, 0)


def test_h264_codec_string_names_profile_and_level(counter: Path) -> None:
    info, _ = read_clip(counter)
    m = LiveMuxer(info)
    sps = info.video.params.sps[0] if info.video.params else b""
    assert m.codecs == f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"
    assert m.mime == f'video/mp4; codecs="{m.codecs}"'
    assert not m.has_audio


def test_hevc_plays_and_names_its_codec(clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["hevc"])
    m = LiveMuxer(info)
    assert re.fullmatch(r"hvc1\.1\.6\.L[0-9]+(\.[0-9A-F]{1,2})+", m.codecs), m.codecs
    frames = decode(_stream(m, [[p] for p in packets]))
    assert len(frames) == len([p for p in packets if p.kind == VIDEO])
    assert {(w, h) for _, _, w, h in frames} == {(320, 240)}


def test_aac_audio_goes_along_and_g711_does_not(clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["aac"])
    m = LiveMuxer(info)
    assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", m.codecs), m.codecs
    data = _stream(m, [[p] for p in packets])
    with av.open(io.BytesIO(data)) as c:
        audio = [f for f in c.decode(c.streams.audio[0])]
    sent = len([p for p in packets if p.kind == AUDIO])
    assert len(audio) >= sent - 2  # the first frames may lie before the first video frame
    assert LiveMuxer(info, audio=False).codecs == m.codecs.split(",")[0]

    ulaw = dataclasses.replace(info, audio=AudioInfo(PCMU, 8000, 8000, 1))
    g711 = LiveMuxer(ulaw)
    assert not g711.has_audio and "," not in g711.codecs
    assert b"ulaw" not in g711.init


def test_a_skip_to_the_next_keyframe_jumps_tfdt_and_still_decodes(counter: Path) -> None:
    info, packets = read_clip(counter)
    # A slow viewer's queue dropped frames 5..19 and resumed at the keyframe 20.
    kept = packets[:5] + packets[20:]
    assert packets[20].keyframe
    data = _stream(LiveMuxer(info), [[p] for p in kept])
    tfdts = _tfdts(data)
    step = info.video.timescale // FPS
    assert tfdts[5] - tfdts[4] == 16 * step
    frames = decode(data)
    assert [n for _, n, _, _ in frames] == [*range(5), *range(20, 60)]
    assert frames[5][0] == pytest.approx(20 / FPS)


def test_a_camera_clock_going_back_keeps_the_timeline_going(counter: Path) -> None:
    info, packets = read_clip(counter)
    back = 30 * info.video.timescale
    for p in packets[20:]:
        p.dts -= back
        p.pts -= back
    data = _stream(LiveMuxer(info), [[p] for p in packets])
    tfdts = _tfdts(data)
    step = info.video.timescale // FPS
    assert tfdts == [i * step for i in range(60)]
    assert [n for _, n, _, _ in decode(data)] == list(range(60))


def test_pieces_of_one_picture_are_one_sample(counter: Path) -> None:
    info, packets = read_clip(counter)
    first = packets[0]
    nals = length_split(first.data)
    assert len(nals) >= 2
    # The keyframe sent as two packets with one timestamp (a multi-slice frame in parts).
    a = Packet(VIDEO, length_prefix(nals[:1]), first.pts, first.dts, False, 0.0)
    b = Packet(VIDEO, length_prefix(nals[1:]), first.pts, first.dts, True, 0.0)
    m = LiveMuxer(info)
    frag = m.fragment([a, b, *packets[1:3]])
    data = m.init + frag + b"".join(m.fragment([p]) for p in packets[3:])
    assert [n for _, n, _, _ in decode(data)] == list(range(60))
    assert mp4.parse_moof(frag).samples == 3


def test_parameter_sets_must_be_known(counter: Path) -> None:
    info, packets = read_clip(counter)
    bare = dataclasses.replace(info, video=dataclasses.replace(info.video, params=None))
    with pytest.raises(ValueError, match="parameter sets"):
        LiveMuxer(bare)
    params = info.video.params
    assert params is not None  # in-band on a camera's keyframe: the muxer is made from it
    key = Packet(VIDEO, packets[0].data, 0, 0, True, 0.0, params)
    m = LiveMuxer(with_params(bare, params))
    assert not m.params_changed(key) and not m.params_changed(packets[1])
    other = dataclasses.replace(params, pps=(params.pps[0] + b"\x80",))
    changed = Packet(VIDEO, key.data, 0, 0, True, 0.0, other)
    assert m.params_changed(changed)
    assert m.fragment([]) == b""


def test_audio_only_batches_before_video_are_left_out(clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["aac"])
    m = LiveMuxer(info)
    audio = [p for p in packets if p.kind == AUDIO]
    assert m.fragment(audio[:3]) == b""  # no video yet: no origin to place them by
