"""Signed export: real recorded segments made MP4 by PyAV, the jobs that run it, the signed
manifest and ``vms verify`` (run as the command). The range stream is replaced at the edge by
a recorded segment file (itself an fMP4 range stream: an init segment and its fragments)."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import pytest

from tests.conftest import START_US, make_rig
from tests.support.counter_clip import counter_clip, frame_number
from tests.support.polling import wait_for
from vms.catalog.store import Catalog
from vms.clock import SimulatedClock
from vms.config import ExportConfig
from vms.errors import Kind, VmsError
from vms.export import signing
from vms.export.jobs import FINISHED, JOB_FILE, Exports, Files, Job, RangeStream, State
from vms.export.manifest import MANIFEST, SIGNATURE, ZIP_NAME
from vms.export.remux import BoxReader
from vms.export.source import playback_source
from vms.ingest.pyav_source import read_clip
from vms.recording import mp4

ROOT = Path(__file__).resolve().parents[1]
FPS = 25
SECOND = 1_000_000


@dataclasses.dataclass
class Recording:
    path: Path  # one segment file: ftyp moov (moof mdat)*
    start_us: int
    end_us: int


def _record(tmp: Path, clip: Path) -> Recording:
    catalog = Catalog(f"sqlite:///{tmp / 'catalog.db'}")
    rig = make_rig(tmp, catalog, segment_seconds=30)
    try:
        info, packets = read_clip(clip)
        rig.recorder.stream_started(info)
        for p in packets:
            p.arrival = p.dts / info.video.timescale
            rig.recorder.packet(p)
        rig.stop()
        (seg,) = catalog.segments()
        return Recording(rig.root / seg.path, seg.start_us, seg.end_us)
    finally:
        rig.writers.stop()
        catalog.close()


def ulaw_clip(path: Path, seconds: int) -> Path:
    """H.264 video with G.711 µ-law audio (as many cameras send), in QuickTime."""
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=FPS)
    v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
    v.options = {"g": str(FPS), "preset": "ultrafast"}
    a = out.add_stream("pcm_mulaw", rate=8000)
    a.layout = "mono"
    for i in range(seconds * FPS):
        frame = av.VideoFrame(160, 120, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 7) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = i, Fraction(1, FPS)
        out.mux(v.encode(frame))
        af = av.AudioFrame(format="s16", layout="mono", samples=320)
        af.planes[0].update(bytes(640))
        af.sample_rate, af.pts, af.time_base = 8000, i * 320, Fraction(1, 8000)
        out.mux(a.encode(af))
    out.mux(v.encode())
    out.mux(a.encode())
    out.close()
    return path


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]
) -> dict[str, Recording]:
    """A segment of each kind: 8 s of H.264 (a keyframe a second), 4 s with AAC, 4 s with
    G.711."""
    tmp = tmp_path_factory.mktemp("recorded")
    ulaw = ulaw_clip(tmp / "ulaw.mov", 4)
    out = {}
    for name, clip in (("h264", clips["h264"]), ("aac", clips["aac"]), ("ulaw", ulaw)):
        (tmp / name).mkdir()
        out[name] = _record(tmp / name, clip)
    return out


class SegmentSource:
    """The range stream at the edge: a camera's recorded segment file, whole (its first
    instant is the segment's start), optionally held at a gate until a test opens it."""

    def __init__(self, cameras: dict[str, Recording]) -> None:
        self.cameras = cameras
        self.gate: threading.Event | None = None
        self.waiting = threading.Semaphore(0)  # one release per stream held at the gate
        self.closed = 0

    def __call__(self, camera: str, stream: str, start_us: int, end_us: int) -> RangeStream:
        rec = self.cameras.get(camera)
        if rec is None or end_us <= rec.start_us or start_us >= rec.end_us:
            raise VmsError(Kind.NOT_FOUND, f"no recordings of camera {camera} in the range")
        return RangeStream(
            self._chunks(rec.path), (start_us - rec.start_us) / 1e6, rec.start_us,
            close=self._close,
        )  # fmt: skip

    def _close(self) -> None:
        self.closed += 1

    def _chunks(self, path: Path) -> Iterator[bytes]:
        if self.gate is not None:
            self.waiting.release()
            assert self.gate.wait(30), "the gate was never opened"
        with open(path, "rb") as f:
            while chunk := f.read(50_000):
                yield chunk


class FullDisk(Files):
    """A disk that fills up after ``room`` bytes (the file-writing edge)."""

    def __init__(self, room: int) -> None:
        self.room = room

    def create(self, path: Path) -> BinaryIO:
        return _FileOnFullDisk(self, path)


class _FileOnFullDisk(io.FileIO):
    def __init__(self, disk: FullDisk, path: Path) -> None:
        super().__init__(path, "xb+")
        self.disk = disk

    def write(self, b: Any) -> int:
        if self.disk.room < len(b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.disk.room -= len(b)
        return super().write(b)


@pytest.fixture
def exports(
    tmp_path: Path, recorded: dict[str, Recording]
) -> Iterator[tuple[Exports, SegmentSource]]:
    source = SegmentSource({"cam1": recorded["h264"], "cam2": recorded["h264"]})
    ex = Exports(
        ExportConfig(concurrent=2, max_range_hours=1, keep_days=1),
        tmp_path / "data", source, SimulatedClock(START_US + 3600 * SECOND),
    )  # fmt: skip
    ex.start()
    yield ex, source
    if source.gate is not None:
        source.gate.set()
    ex.stop()


def finished(ex: Exports, job: Job, timeout: float = 30) -> Job:
    wait_for(lambda: ex.get(job.id).state in FINISHED, timeout, f"export {job.id} to end")
    return ex.get(job.id)


def top_level(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [b.kind for b in mp4.read_top_level(f, path.stat().st_size)]


def planes(frame: av.VideoFrame) -> bytes:
    return b"".join(bytes(p) for p in frame.planes)


def vms(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "vms", *args], env=env, capture_output=True, text=True, timeout=60
    )


def flip_bit(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


# --- the MP4 -------------------------------------------------------------------------------


def test_an_export_starts_at_the_instant_asked_with_moov_first(
    exports: tuple[Exports, SegmentSource], recorded: dict[str, Recording]
) -> None:
    ex, _ = exports
    rec = recorded["h264"]
    start = rec.start_us + 2_520_000  # between keyframes (2 s and 3 s)
    job = finished(ex, ex.create(["cam1"], start, start + 3 * SECOND, "main", "alice", 7))
    assert job.state == State.DONE, job.error
    assert job.file == "cam1.mp4" and job.files == ["cam1.mp4", MANIFEST, SIGNATURE]
    folder = ex.root / job.id
    assert sorted(p.name for p in folder.iterdir()) == sorted([*job.files, JOB_FILE])
    out = folder / "cam1.mp4"
    assert job.size == out.stat().st_size and job.percent == 100
    kinds = top_level(out)
    assert kinds.index(b"moov") < kinds.index(b"mdat"), kinds

    # The source's frames, by their time from the segment's start.
    with av.open(str(rec.path)) as src:
        source = {round(f.time * FPS): planes(f) for f in src.decode(video=0)}
    with av.open(str(out)) as exported:
        stream = exported.streams.video[0]
        assert exported.start_time == 0 and stream.start_time == 0
        frames = list(exported.decode(stream))
    first = frames[0]
    assert first.time == 0, "the edit list hides the frames before the instant"
    wanted = round(2.52 * FPS)  # frame 63: the instant asked for
    matches = [i for i, p in source.items() if p == planes(first)]
    assert matches and abs(matches[0] - wanted) <= 1, (matches, wanted)
    assert abs(len(frames) - 3 * FPS) <= 1
    assert planes(frames[-1]) == source[wanted + len(frames) - 1]


def test_audio_is_kept_when_aac_and_dropped_with_a_note_when_g711(
    tmp_path: Path, recorded: dict[str, Recording]
) -> None:
    source = SegmentSource({"aac": recorded["aac"], "ulaw": recorded["ulaw"]})
    clock = SimulatedClock(START_US + 3600 * SECOND)
    ex = Exports(ExportConfig(), tmp_path, source, clock)
    ex.start()
    try:
        start = recorded["aac"].start_us + 500_000
        aac = finished(ex, ex.create(["aac"], start, start + 2 * SECOND, "main", "bob", 1))
        start = recorded["ulaw"].start_us + 500_000
        ulaw = finished(ex, ex.create(["ulaw"], start, start + 2 * SECOND, "main", "bob", 1))
    finally:
        ex.stop()
    assert aac.state == ulaw.state == State.DONE, (aac.error, ulaw.error)
    with av.open(str(ex.root / aac.id / "aac.mp4")) as c:
        assert [s.codec_context.name for s in c.streams] == ["h264", "aac"]
        assert c.streams.audio[0].start_time == 0
        assert sum(1 for _ in c.decode(audio=0)) > 0
    with av.open(str(ex.root / ulaw.id / "ulaw.mp4")) as c:
        assert [s.codec_context.name for s in c.streams] == ["h264"]
    assert aac.notes == []
    assert ulaw.notes == ["camera ulaw: audio (pcm_mulaw) dropped: MP4 players do not play it"]
    doc = json.loads((ex.root / ulaw.id / MANIFEST).read_bytes())
    assert doc["notes"] == ulaw.notes


def test_the_reader_ends_a_run_where_the_next_init_starts(recorded: dict[str, Recording]) -> None:
    one = recorded["h264"].path.read_bytes()
    two = recorded["aac"].path.read_bytes()
    reader = BoxReader(one[i : i + 1000] for i in range(0, len(one), 1000))
    got = bytearray()
    while chunk := reader.read(7777):
        got += chunk
    assert bytes(got) == one and not reader.next_run()
    reader = BoxReader([one, two])
    first = b"".join(iter(lambda: reader.read(4096), b""))
    assert first == one and reader.next_run()
    assert b"".join(iter(lambda: reader.read(4096), b"")) == two
    assert not reader.next_run()


# --- the manifest and vms verify -----------------------------------------------------------


def test_the_manifest_is_signed_and_vms_verify_finds_one_changed_bit(
    exports: tuple[Exports, SegmentSource], recorded: dict[str, Recording]
) -> None:
    ex, _ = exports
    rec = recorded["h264"]
    start = rec.start_us + SECOND
    job = finished(ex, ex.create(["cam1"], start, start + 2 * SECOND, "main", "alice", 7))
    folder = ex.root / job.id
    data = (folder / MANIFEST).read_bytes()
    doc = json.loads(data)
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), "canonical"
    signer = ex.signer
    assert signer is not None
    assert signing.verify(signer.public, data, (folder / SIGNATURE).read_bytes())
    assert doc["key_id"] == signer.key_id == signing.key_id(signer.public)
    assert doc["exported_by"] == "alice" and doc["stream"] == "main"
    assert doc["start"] == "2026-09-21T14:13:21.000000Z" and doc["end"].endswith("23.000000Z")
    (entry,) = doc["files"]
    assert entry["name"] == "cam1.mp4" and entry["size"] == job.size
    assert len(entry["sha256"]) == 64 and doc["software"]["name"] == "vms"
    assert doc["cameras"][0]["files"][0]["first"] == doc["start"]
    key_mode = os.stat(ex.data_dir / signing.KEY_FILE).st_mode & 0o777
    assert key_mode == 0o600

    data_dir = str(ex.data_dir)
    ok = vms("verify", str(folder), "--data-dir", data_dir)
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stdout + ok.stderr
    assert vms("verify", str(folder / MANIFEST), "--data-dir", data_dir).returncode == 0
    pem = folder.parent / "key.pem"
    pem.write_text(signing.pem(signer.public))
    assert vms("verify", str(folder), "--public-key", str(pem)).returncode == 0

    media = folder / "cam1.mp4"
    flip_bit(media, media.stat().st_size // 2)
    bad = vms("verify", str(folder), "--data-dir", data_dir)
    assert bad.returncode == 1 and "cam1.mp4: its SHA-256 is not the manifest's" in bad.stdout
    flip_bit(media, media.stat().st_size // 2)
    assert vms("verify", str(folder), "--data-dir", data_dir).returncode == 0

    flip_bit(folder / MANIFEST, data.index(b'"alice"') + 1)  # "alice" -> "`lice"
    bad = vms("verify", str(folder), "--data-dir", data_dir)
    assert bad.returncode == 1 and "manifest.sig: not a signature" in bad.stdout, bad.stdout

    other = signing.pem(signing.load_public(os.urandom(32)))
    (folder.parent / "other.pem").write_text(other)
    flip_bit(folder / MANIFEST, data.index(b'"alice"') + 1)
    wrong = vms("verify", str(folder), "--public-key", str(folder.parent / "other.pem"))
    assert wrong.returncode == 1 and "names key" in wrong.stdout
    usage = vms("verify", str(folder.parent / "nothing-here"), "--data-dir", data_dir)
    assert usage.returncode == 2 and "no such file" in usage.stderr


def test_several_cameras_make_a_zip(
    exports: tuple[Exports, SegmentSource], recorded: dict[str, Recording]
) -> None:
    ex, _ = exports
    start = recorded["h264"].start_us + SECOND
    job = finished(ex, ex.create(["cam1", "cam2"], start, start + 2 * SECOND, "main", "a", 1))
    assert job.state == State.DONE, job.error
    assert job.file == ZIP_NAME and job.files == [ZIP_NAME, MANIFEST, SIGNATURE]
    folder = ex.root / job.id
    assert sorted(p.name for p in folder.iterdir()) == sorted([*job.files, JOB_FILE])
    with zipfile.ZipFile(folder / ZIP_NAME) as z:
        assert sorted(z.namelist()) == ["cam1.mp4", "cam2.mp4", MANIFEST, SIGNATURE]
        assert z.read(MANIFEST) == (folder / MANIFEST).read_bytes()
    doc = json.loads((folder / MANIFEST).read_bytes())
    assert [f["name"] for f in doc["files"]] == ["cam1.mp4", "cam2.mp4"]
    assert [c["id"] for c in doc["cameras"]] == ["cam1", "cam2"]
    data_dir = str(ex.data_dir)
    for target in (folder, folder / ZIP_NAME):
        r = vms("verify", str(target), "--data-dir", data_dir)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "2 file(s) intact" in r.stdout


# --- the jobs ------------------------------------------------------------------------------


def test_at_most_concurrent_jobs_run_the_others_wait_and_cancel_removes_files(
    exports: tuple[Exports, SegmentSource], recorded: dict[str, Recording]
) -> None:
    ex, source = exports
    source.gate = threading.Event()
    start = recorded["h264"].start_us + SECOND
    jobs = [ex.create(["cam1"], start, start + SECOND, "main", "a", 1) for _ in range(4)]
    for _ in range(2):
        assert source.waiting.acquire(timeout=30), "two jobs start"
    states = [ex.get(j.id).state for j in jobs]
    assert states == [State.RUNNING, State.RUNNING, State.QUEUED, State.QUEUED]
    assert not source.waiting.acquire(timeout=0.3), "a third job must not start"

    queued = ex.cancel(jobs[3].id)
    assert queued.state == State.CANCELLED and source.closed == 1
    running = ex.get(jobs[0].id)
    canceller = threading.Thread(target=ex.cancel, args=(running.id,))
    canceller.start()
    wait_for(lambda: ex._runs[running.id].cancel.is_set(), what="the cancel flag")
    source.gate.set()
    canceller.join(30)
    assert ex.get(running.id).state == State.CANCELLED
    assert [p.name for p in (ex.root / running.id).iterdir()] == [JOB_FILE]
    assert finished(ex, jobs[1]).state == State.DONE
    assert finished(ex, jobs[2]).state == State.DONE
    record = json.loads((ex.root / running.id / JOB_FILE).read_text())
    assert record["state"] == "cancelled"
    wait_for(lambda: source.closed == 4, what="every range stream closed")


def test_a_full_disk_fails_the_job_and_removes_its_files(
    tmp_path: Path, recorded: dict[str, Recording]
) -> None:
    source = SegmentSource({"cam1": recorded["h264"]})
    ex = Exports(ExportConfig(), tmp_path, source, SimulatedClock(START_US), files=FullDisk(60_000))
    ex.start()
    try:
        start = recorded["h264"].start_us
        job = finished(ex, ex.create(["cam1"], start, start + 6 * SECOND, "main", "a", 1))
    finally:
        ex.stop()
    assert job.state == State.FAILED
    assert job.error is not None and job.error.startswith("no space left on the disk holding")
    assert [p.name for p in (ex.root / job.id).iterdir()] == [JOB_FILE]


def test_refused_ranges_make_no_job(
    exports: tuple[Exports, SegmentSource], recorded: dict[str, Recording]
) -> None:
    ex, _ = exports
    start = recorded["h264"].start_us
    cases = [
        (["cam1"], start, start, Kind.INVALID_ARGUMENT, "end: must be after start"),
        (["cam1"], start, start + 3601 * SECOND, Kind.INVALID_ARGUMENT, "at most 1 h"),
        (["cam1", "cam1"], start, start + SECOND, Kind.INVALID_ARGUMENT, "different"),
        ([], start, start + SECOND, Kind.INVALID_ARGUMENT, "cameras"),
        (["cam1", "nope"], start, start + SECOND, Kind.NOT_FOUND, "no recordings of camera nope"),
        (["cam1"], start - 60 * SECOND, start - SECOND, Kind.NOT_FOUND, "no recordings"),
    ]
    for cameras, s, e, kind, message in cases:
        with pytest.raises(VmsError) as err:
            ex.create(cameras, s, e, "main", "a", 1)
        assert err.value.kind == kind and message in err.value.message, err.value
    assert ex.jobs() == [] and list(ex.root.iterdir()) == []


def test_a_restart_lists_past_exports_and_fails_the_interrupted_and_old_ones_expire(
    tmp_path: Path, recorded: dict[str, Recording]
) -> None:
    source = SegmentSource({"cam1": recorded["h264"]})
    clock = SimulatedClock(START_US + 3600 * SECOND)
    config = ExportConfig(keep_days=2)
    ex = Exports(config, tmp_path, source, clock)
    ex.start()
    start = recorded["h264"].start_us
    done = finished(ex, ex.create(["cam1"], start, start + SECOND, "main", "a", 1))
    ex.stop()
    # As a server killed while a job ran leaves it: its record says running, a part file.
    interrupted = dataclasses.replace(done, id="0123456789abcdef", state=State.RUNNING)
    folder = ex.root / interrupted.id
    folder.mkdir()
    (folder / JOB_FILE).write_text(json.dumps(interrupted.record()))
    (folder / "cam1.mp4.part").write_bytes(b"half")

    again = Exports(config, tmp_path, source, clock)
    again.start()
    try:
        listed = {j.id: j for j in again.jobs()}
        assert listed[done.id].state == State.DONE and listed[done.id].files == done.files
        assert listed[interrupted.id].state == State.FAILED
        assert listed[interrupted.id].error == "interrupted by restart"
        assert [p.name for p in folder.iterdir()] == [JOB_FILE]
        clock.advance(1.5 * 86400)
        assert again.sweep() == 0
        clock.advance(1 * 86400)
        assert again.sweep() == 2 and again.jobs() == []
        assert list(again.root.iterdir()) == []
    finally:
        again.stop()


# --- over the real range stream ------------------------------------------------------------


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("counted")
    return {
        "a": counter_clip(d / "a.mp4", frames=300),  # 12 s, a keyframe every 4 s
        "b": counter_clip(d / "b.mp4", frames=150, first=1000, width=176, height=144),
    }


def test_over_the_range_stream_the_first_frame_is_the_one_asked_for_and_a_new_size_a_new_file(
    tmp_path: Path, catalog: Catalog, counted: dict[str, Path]
) -> None:
    """The playback plan and range stream of segments the recorder cut every 8 s, a camera
    whose resolution changed at 12 s: frame n was shown at START_US + n × 40 ms."""
    rig = make_rig(tmp_path, catalog, segment_seconds=6)
    try:
        info, packets = read_clip(counted["a"])
        info_b, packets_b = read_clip(counted["b"])
        step = packets[1].dts - packets[0].dts
        for p in packets_b:
            p.dts += len(packets) * step
            p.pts += len(packets) * step
        assert info_b.video.params is not None
        packets_b[0].params = info_b.video.params  # the camera's new parameter sets
        rig.recorder.stream_started(info)
        for p in [*packets, *packets_b]:
            p.arrival = p.dts / info.video.timescale
            rig.recorder.packet(p)
        rig.stop()
        source = playback_source(
            catalog, rig.writers.catalog_thread.open_files, rig.storage, rig.clock, 3600 * SECOND
        )
        ex = Exports(ExportConfig(), tmp_path / "data", source, rig.clock)
        ex.start()
        try:
            at = START_US + 5_500_000  # in the second GOP of the first segment, 1.5 s past it
            one = finished(ex, ex.create(["cam1"], at, START_US + 11 * SECOND, "main", "a", 1))
            both = finished(ex, ex.create(["cam1"], at, START_US + 15 * SECOND, "main", "a", 1))
        finally:
            ex.stop()
    finally:
        rig.writers.stop()
    assert one.state == both.state == State.DONE, (one.error, both.error)
    with av.open(str(ex.root / one.id / "cam1.mp4")) as c:
        numbers = [frame_number(f) for f in c.decode(video=0)]
    # 5.5 s lies between frames 137 (5.48 s) and 138 (5.52 s): either is within one frame.
    assert numbers[0] in (137, 138), numbers[:3]
    assert numbers == list(range(numbers[0], 275)), "to the end, across the segment at 8 s"

    assert both.file == ZIP_NAME
    with zipfile.ZipFile(ex.root / both.id / ZIP_NAME) as z:
        assert sorted(z.namelist()) == ["cam1.2.mp4", "cam1.mp4", MANIFEST, SIGNATURE]
        first, second = (z.read(n) for n in ("cam1.mp4", "cam1.2.mp4"))
    kinds = [b.kind for b in mp4.iter_boxes(second)]
    assert kinds.index(b"moov") < kinds.index(b"mdat")
    with av.open(io.BytesIO(first), "r") as c:
        numbers = [frame_number(f) for f in c.decode(video=0)]
        assert numbers == list(range(138, 300)) and c.streams.video[0].width == 160
    with av.open(io.BytesIO(second), "r") as c:
        frames = list(c.decode(video=0))
        assert [frame_number(f) for f in frames] == list(range(1000, 1075))
        assert (frames[0].width, frames[0].height, frames[0].time) == (176, 144, 0)
    doc = json.loads((ex.root / both.id / MANIFEST).read_bytes())
    files = doc["cameras"][0]["files"]
    assert [f["name"] for f in files] == ["cam1.mp4", "cam1.2.mp4"]
    assert [f["video"] for f in files] == ["h264 160x120", "h264 176x144"]
    assert files[1]["first"] == "2026-09-21T14:13:32.000000Z", "12 s after the recording began"
