"""Playback of a time range: the plan read from the catalog and the open segment, and the range
stream PyAV decodes, over recordings the real recorder made of clips whose frames show their
own number (a 4 s GOP, 25 fps: frame n was shown at START_US + n × 40 ms)."""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from tests.conftest import START_US, Rig, make_rig
from tests.support.counter_clip import clip, counter_clip, decode, record
from vms.catalog.store import MAIN, Catalog
from vms.errors import Kind, VmsError
from vms.playback import fragments
from vms.playback.plan import GapReason, Plan, plan
from vms.playback.stream import FileChunks, RangeStream
from vms.recording import mp4
from vms.times import iso

FRAME_US = 40_000
WEEK_US = 7 * 86_400_000_000


@pytest.fixture(scope="session")
def counted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("counted")
    return {
        "a": counter_clip(d / "a.mp4", frames=1000),  # 40 s, a keyframe every 4 s
        "b": counter_clip(d / "b.mp4", frames=300, first=1000, width=176, height=144),
    }


@pytest.fixture
def cam(tmp_path: Path, catalog: Catalog) -> Iterator[Rig]:
    """A recorder cutting segments at the first keyframe after 6 s: one every 8 s."""
    r = make_rig(tmp_path, catalog, segment_seconds=6)
    yield r
    r.writers.stop()


def plan_of(rig: Rig, start_s: float, end_s: float) -> Plan:
    return plan(rig.catalog, rig.writers.catalog_thread.open_files, "cam1", MAIN,
                START_US + int(start_s * 1e6), START_US + int(end_s * 1e6),
                max_range_us=WEEK_US, storage=rig.storage)  # fmt: skip


def body(p: Plan, **kw: object) -> bytes:
    return b"".join(RangeStream(p, **kw).chunks())  # type: ignore[arg-type]


def test_a_range_plays_from_a_keyframe_across_segments_on_one_time_line(
    cam: Rig, counted: dict[str, Path]
) -> None:
    record(cam, counted["a"])
    segs = cam.catalog.segments(camera_id="cam1")
    assert len(segs) == 5 and [s.start_us - START_US for s in segs[:3]] == [0, 8e6, 16e6]
    p = plan_of(cam, 5.5, 21)  # from inside the second GOP of the first segment
    assert p.first_us == START_US + 4_000_000 and p.offset_us == 1_500_000
    assert [piece.segment_id for piece in p.pieces] == [s.id for s in segs[:3]]
    assert len(p.runs) == 1 and not p.gaps
    assert p.pieces[0].fragments()[0].keyframe and p.pieces[0].first == 4
    data = body(p)
    assert len(data) == RangeStream(p).size
    frames = decode(data)
    numbers = [n for _, n, _, _ in frames]
    assert numbers == list(range(100, 100 + len(numbers))), "every frame, in order"
    assert numbers[-1] >= 21 * 25 - 1, "to the end of the range"
    # One time line: output time is the frame's distance from the first frame, across both
    # segment boundaries (at 8 s and 16 s).
    for pts, n, _, _ in frames:
        assert pts == pytest.approx((n - 100) * 0.04, abs=1e-6), n


def test_the_first_frame_at_the_offset_is_the_one_asked_for(
    cam: Rig, counted: dict[str, Path]
) -> None:
    record(cam, counted["a"])
    rnd = random.Random(7)
    for _ in range(6):
        t = rnd.uniform(0.1, 38.0)
        p = plan_of(cam, t, t + 1.0)
        frames = decode(body(p))
        offset = p.offset_us / 1e6
        shown = next(n for pts, n, _, _ in frames if pts >= offset - 1e-6)
        assert abs(shown * 0.04 - t) <= 0.04 + 1e-9, (t, shown, offset)
        assert frames[0][1] % 100 == 0, "the stream starts at a keyframe"


def test_a_resolution_change_sends_a_new_init_and_both_sides_decode(
    cam: Rig, counted: dict[str, Path]
) -> None:
    info, packets = clip(counted["a"])
    end = packets[299].dts + (packets[1].dts - packets[0].dts)  # 12 s of the first clip
    info_b, packets_b = clip(counted["b"], first_dts=end, first_arrival=12.0)
    assert info_b.video.params is not None
    packets_b[0].params = info_b.video.params  # the camera's new parameter sets
    cam.recorder.stream_started(info)
    for pk in [*packets[:300], *packets_b[:150]]:
        cam.recorder.packet(pk)
    cam.stop()
    p = plan_of(cam, 10, 17)
    assert [(r.width, r.height) for r in p.runs] == [(160, 120), (176, 144)]
    assert not p.gaps, "nothing was lost: a new run is no gap"
    data = body(p)
    # MSE takes the second init where it comes; FFmpeg's demuxer reads one moov per file, so
    # each run is decoded as the browser would: its init and the fragments that follow.
    runs = split_at_inits(data)
    assert len(runs) == 2
    first, second = decode(runs[0]), decode(runs[1])
    assert {(w, h) for *_, w, h in first} == {(160, 120)}
    assert {(w, h) for *_, w, h in second} == {(176, 144)}
    assert first[0][1] == 200 and first[-1][1] == 299 and second[0][1] == 1000
    assert second[0][0] == pytest.approx(first[-1][0] + 0.04, abs=1e-6), "times go on"


def split_at_inits(data: bytes) -> list[bytes]:
    starts = [b.offset for b in mp4.iter_boxes(data) if b.kind == b"ftyp"]
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


def test_a_gap_is_reported_and_output_time_jumps_over_it(
    cam: Rig, counted: dict[str, Path]
) -> None:
    info, packets = clip(counted["a"])
    cam.recorder.stream_started(info)
    for pk in packets[:500]:  # 20 s, then the camera goes away for 30 s
        cam.recorder.packet(pk)
    cam.recorder.stream_stopped()
    cam.clock.advance(50)
    info2, packets2 = clip(counted["a"], first_arrival=100.0)
    cam.recorder.stream_started(info2)
    for pk in packets2[500:800]:
        cam.recorder.packet(pk)
    cam.stop()
    p = plan_of(cam, 14, 70)
    gap, tail = p.gaps
    assert (tail.start_us, tail.end_us) == (START_US + 62_000_000, START_US + 70_000_000)
    assert (gap.start_us - START_US, gap.end_us - START_US, gap.reason) == (
        20_000_000, 50_000_000, GapReason.NOT_RECORDED)  # fmt: skip
    assert len(p.runs) == 2 and p.runs[1].output_start == 38 * p.runs[1].timescale
    frames = decode(body(p))
    before = [f for f in frames if f[1] < 500]
    after = [f for f in frames if f[1] >= 500]
    assert before[-1][1] == 499 and after[0][1] == 500
    assert after[0][0] - before[-1][0] == pytest.approx(30.04, abs=1e-6)


def test_byte_ranges_put_together_are_the_whole_stream(cam: Rig, counted: dict[str, Path]) -> None:
    record(cam, counted["a"])
    p = plan_of(cam, 3, 30)
    stream = RangeStream(p)
    whole = b"".join(stream.chunks())
    assert stream.size == len(whole)
    rnd = random.Random(3)
    cuts = sorted({0, len(whole), *(rnd.randrange(1, len(whole)) for _ in range(12)),
                   p.pieces[0].init_size, p.pieces[0].init_size + 1})  # fmt: skip
    parts = [b"".join(stream.chunks(a, b)) for a, b in itertools.pairwise(cuts)]
    assert [len(x) for x in parts] == [b - a for a, b in itertools.pairwise(cuts)]
    assert b"".join(parts) == whole
    with pytest.raises(ValueError):
        stream.chunks(len(whole), None)


def test_trick_play_has_keyframes_only_forward_and_reverse(
    cam: Rig, counted: dict[str, Path]
) -> None:
    record(cam, counted["a"])
    p = plan_of(cam, 6, 30)  # keyframes at 4, 8, …, 28 s
    assert RangeStream(p, keyframes="forward").size is None
    forward = decode(body(p, keyframes="forward"))
    assert [n for _, n, _, _ in forward] == list(range(100, 800, 100))
    assert [pts for pts, *_ in forward] == pytest.approx([4.0 * i for i in range(7)])
    reverse = decode(body(p, keyframes="reverse"))
    assert [n for _, n, _, _ in reverse] == list(range(700, 0, -100))
    times = [pts for pts, *_ in reverse]
    assert times == sorted(times) and times[0] == 0, "newest first, on increasing times"
    with av.open(io.BytesIO(body(p, keyframes="reverse"))) as c:
        assert not c.streams.audio


def test_video_only_drops_the_audio_track(cam: Rig, clips: dict[str, Path]) -> None:
    record(cam, clips["aac"])
    seg = cam.catalog.segments(camera_id="cam1")[0]
    assert seg.has_audio
    p = plan_of(cam, 0, 4)
    whole = body(p)
    with av.open(io.BytesIO(whole)) as c:
        assert len(c.streams.audio) == 1
    video, audio = fragments.codecs(whole[: p.pieces[0].init_size])
    assert video.startswith("avc1.") and len(video) == 11 and audio == "mp4a.40.2"
    plain = body(p, audio=False)
    init = plain[: next(b.offset for b in mp4.iter_boxes(plain) if b.kind == b"moof")]
    assert fragments.codecs(init) == [video]
    with av.open(io.BytesIO(plain), "r") as c:
        assert not c.streams.audio
    assert len(decode(plain)) == 100


def test_the_open_segment_plays_as_far_as_it_is_written(cam: Rig, counted: dict[str, Path]) -> None:
    info, packets = clip(counted["a"])
    cam.recorder.stream_started(info)
    for pk in packets[:260]:  # 10.4 s: the second segment (from 8 s) is open
        cam.recorder.packet(pk)
    assert cam.writers.flush()
    p = plan_of(cam, 9, 60)
    (piece,) = p.pieces
    assert piece.open and piece.start_us == START_US + 8_000_000
    frames = decode(body(p))
    assert frames[0][1] == 200 and frames[-1][1] >= 240, "the whole fragments written so far"
    cam.stop()


def test_a_corrupt_fragment_ends_its_piece_with_a_warning_and_the_rest_plays(
    cam: Rig, counted: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    record(cam, counted["a"])
    p = plan_of(cam, 0, 24)
    middle = p.pieces[1]
    bad = middle.fragments()[5]  # 13 s
    with open(middle.file, "r+b") as f:
        f.seek(bad.offset)
        f.write(b"\xff" * 16)
    with caplog.at_level(logging.WARNING, logger="vms.playback.stream"):
        frames = decode(body(p))
    assert any(f"segment {middle.segment_id}" in r.getMessage() for r in caplog.records)
    numbers = [n for _, n, _, _ in frames]
    assert numbers == [*range(0, 325), *range(400, 600)], "the rest of that segment is a gap"
    assert frames[325][0] == pytest.approx(16.0, abs=1e-6), "and a hole in the time line"


def test_a_file_unlinked_while_it_is_read_is_read_to_its_end(
    cam: Rig, counted: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    record(cam, counted["a"])
    p = plan_of(cam, 0, 24)
    chunks = RangeStream(p).chunks()
    head = [next(chunks), next(chunks)]  # the init and the first fragment of the first file
    os.unlink(p.pieces[0].file)  # retention, while the response is being read
    os.unlink(p.pieces[2].file)  # and a file not opened yet
    with caplog.at_level(logging.WARNING, logger="vms.playback.stream"):
        rest = list(chunks)
    frames = decode(b"".join(head + rest))
    assert [n for _, n, _, _ in frames] == list(range(0, 400))
    assert "cannot open it" in caplog.text


def test_quarantined_segments_are_a_gap(cam: Rig, counted: dict[str, Path]) -> None:
    record(cam, counted["a"])
    segs = cam.catalog.segments(camera_id="cam1")
    assert cam.catalog.quarantine(segs[1].id)
    p = plan_of(cam, 0, 24)
    assert [piece.segment_id for piece in p.pieces] == [segs[0].id, segs[2].id]
    assert [(g.start_us, g.end_us, g.reason) for g in p.gaps] == [
        (segs[1].start_us, segs[1].end_us, GapReason.QUARANTINED)]  # fmt: skip
    assert len(p.runs) == 2, "the time line does not go on over it"


def test_bad_ranges_are_refused(cam: Rig, counted: dict[str, Path]) -> None:
    record(cam, counted["a"])
    with pytest.raises(VmsError) as e:
        plan_of(cam, 5, 5)
    assert e.value.kind is Kind.INVALID_ARGUMENT and "end" in e.value.message
    with pytest.raises(VmsError) as e:
        plan_of(cam, 0, 8 * 86_400)
    assert e.value.kind is Kind.INVALID_ARGUMENT and "7 days" in e.value.message
    with pytest.raises(VmsError) as e:
        plan_of(cam, 100, 200)
    assert e.value.kind is Kind.NOT_FOUND
    start, end = iso(START_US + 100_000_000), iso(START_US + 200_000_000)
    assert e.value.message == f"no recordings of camera cam1 between {start} and {end}"


def test_a_tfdt_of_version_0_is_rebuilt_when_the_time_does_not_fit(
    cam: Rig, counted: dict[str, Path]
) -> None:
    record(cam, counted["a"])
    p = plan_of(cam, 0, 4)
    piece = p.pieces[0]
    frag = piece.fragments()[0]
    with open(piece.file, "rb") as f:
        f.seek(frag.offset)
        stored = f.read(frag.size)
    v0 = _tfdt_v0(stored)
    parsed = fragments.parse(v0)
    assert parsed.track(1) is not None and parsed.track(1).version == 0  # type: ignore[union-attr]
    small = fragments.retime(v0, parsed, {1: 1234})
    assert len(small) == len(v0) and fragments.parse(small).trafs[0].base == 1234
    big = fragments.retime(v0, parsed, {1: 1 << 33})
    again = fragments.parse(big)
    assert again.trafs[0].version == 1 and again.trafs[0].base == 1 << 33
    v = again.track(1)
    assert (
        v is not None
        and big[v.data_at : v.data_at + sum(v.sizes)]
        == (v0[parsed.trafs[0].data_at : parsed.trafs[0].data_at + sum(parsed.trafs[0].sizes)])
    )


def _tfdt_v0(frag: bytes) -> bytes:
    """The fragment as a writer with 32-bit ``tfdt`` would have written it."""
    parsed = fragments.parse(frag)
    runs = [mp4.TrackRun(t.track_id, t.base, t.durations, t.sizes, t.flags, t.cto)
            for t in parsed.trafs]  # fmt: skip
    head = bytearray(mp4.fragment_header(parsed.sequence, runs))
    payload = b"".join(frag[t.data_at : t.data_at + sum(t.sizes)] for t in parsed.trafs)
    # Rewrite each tfdt as version 0: 4 bytes shorter, every size and offset after it adjusted.
    out = bytearray()
    pos = 0
    for t in fragments.parse(bytes(head) + payload).trafs:
        out += head[pos : t.tfdt_at]
        out += (16).to_bytes(4, "big") + b"tfdt" + bytes(4) + t.base.to_bytes(4, "big")
        pos = t.tfdt_at + 20
    out += head[pos:]
    return _fix_sizes(bytes(out), len(parsed.trafs)) + payload


def _fix_sizes(head: bytes, trafs: int) -> bytes:
    """moof, traf sizes and trun data offsets after each tfdt shrank by 4 bytes."""
    out = bytearray(head)
    moof_size = int.from_bytes(out[0:4], "big") - 4 * trafs
    out[0:4] = moof_size.to_bytes(4, "big")
    pos = 8 + 16
    for _ in range(trafs):
        size = int.from_bytes(out[pos : pos + 4], "big") - 4
        out[pos : pos + 4] = size.to_bytes(4, "big")
        trun = pos + 8 + 16 + 16
        offset = int.from_bytes(out[trun + 16 : trun + 20], "big") - 4 * trafs
        out[trun + 16 : trun + 20] = offset.to_bytes(4, "big")
        pos += size
    return bytes(out)


def test_plan_is_a_frozen_value(cam: Rig, counted: dict[str, Path]) -> None:
    record(cam, counted["a"])
    p = plan_of(cam, 0, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.pieces[0].first = 1  # type: ignore[misc]
    frags = p.pieces[0].fragments()
    assert frags[0].offset == p.pieces[0].init_size and frags[0].media_start == 0
    assert all(b.offset == a.offset + a.size for a, b in itertools.pairwise(frags))
    assert p.pieces[1].fragments()[0].start_us == START_US + 8_000_000


def test_media_lost_inside_a_segment_is_a_gap(cam: Rig, counted: dict[str, Path]) -> None:
    info, packets = clip(counted["a"])
    cam.recorder.stream_started(info)
    for pk in packets[:50]:
        cam.recorder.packet(pk)
    cam.recorder.gap()  # RTP loss: frames 50 to 99 never arrive
    for pk in packets[100:300]:
        cam.recorder.packet(pk)
    cam.stop()
    p = plan_of(cam, 0, 12)
    assert len(p.runs) == 1 and p.pieces[0].segment_start_us == START_US
    assert [(g.start_us - START_US, g.end_us - START_US, g.reason) for g in p.gaps] == [
        (2_000_000, 4_000_000, GapReason.LOST)]  # fmt: skip
    frames = decode(body(p))
    assert [n for _, n, _, _ in frames] == [*range(50), *range(100, 300)]
    assert frames[50][0] == pytest.approx(4.0, abs=1e-6), "the hole stays in the time line"


def test_an_hevc_recording_plays_and_names_its_codec(cam: Rig, clips: dict[str, Path]) -> None:
    record(cam, clips["hevc"])
    p = plan_of(cam, 0, 4)
    data = body(p)
    (video,) = fragments.codecs(data[: p.pieces[0].init_size])
    # Main profile (1, compatible with Main and Main 10: 6), main tier, a level, and the
    # constraint bytes with the progressive-source bit.
    m = re.fullmatch(r"hvc1\.1\.6\.L([0-9]+)\.([0-9A-F]{1,2})", video)
    assert m is not None and int(m[1]) >= 30 and int(m[2], 16) & 0x80, video
    assert len(decode(data)) == 100


def test_a_stored_file_is_read_through_a_descriptor_the_reader_owns(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(100)))
    fd = os.open(path, os.O_RDONLY)
    assert b"".join(FileChunks(fd, 10, 95, chunk=16)) == bytes(range(10, 95))
    with pytest.raises(OSError):
        os.fstat(fd)  # closed at the end
    fd = os.open(path, os.O_RDONLY)
    FileChunks(fd, 0, 100).close()  # a client gone before the first byte
    with pytest.raises(OSError):
        os.fstat(fd)
