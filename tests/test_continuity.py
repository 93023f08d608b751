"""One decode time line across a run's files, as ffprobe reads them: a real stand-in camera,
a real server process rotating every 2 s, killed with SIGKILL and started again.

storage.md and time.md: within a run each file's first sample starts where the previous file's
last one ended, on the video and on the audio time line; continuity survives rotation and
recovery after a kill (recovery closes the open segment on the time line it was written on);
a new connection after a restart starts a new run at 0.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_rig
from tests.support.polling import wait_for
from vms.catalog.store import CLOSED, OPEN, Catalog, Segment
from vms.ingest.pyav_source import read_clip
from vms.media import AUDIO
from vms.recording.recovery import scan
from vms.recording.segment import FragmentIndex
from vms.standin import StandinCamera, gstreamer_available

needs_standin = pytest.mark.skipif(
    not gstreamer_available(), reason="GStreamer RTSP server (Debian packages) not installed"
)


def _config(tmp_path: Path, url: str) -> Path:
    """The server's config: its catalog is the ``catalog`` fixture's file (data_dir)."""
    root = tmp_path / "root"
    root.mkdir()
    path = tmp_path / "vms.yaml"
    path.write_text(
        f"data_dir: {tmp_path}\n"
        "server: {port: 0}\n"
        "recording: {segment_seconds: 2, stagger: false}\n"
        "ingest: {open_timeout_s: 5, stall_timeout_s: 5, backoff_initial_s: 0.2,"
        " backoff_max_s: 1}\n"
        f"storage: {{roots: [{{name: r1, path: {root}, min_free_bytes: 0}}]}}\n"
        f"cameras:\n  - {{id: cam, main: {{url: '{url}'}}}}\n"
    )
    return path


def _serve(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vms", "serve", "--config", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(30)


def packets(path: Path, stream: str) -> list[tuple[int, int | None]]:
    """(dts, duration) of every packet of the file's video ("v") or audio ("a") track, in the
    track's time base, as ffprobe reads them. (It gives the first AAC packet no duration.)"""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries",
         "packet=dts,duration", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return [
        (int(p["dts"]), int(p["duration"]) if "duration" in p else None)
        for p in json.loads(out)["packets"]
    ]


def assert_one_time_line(root: Path, run: list[Segment]) -> None:
    """Each file of the run starts, video and audio, where the previous one ended."""
    assert run[0].media_start == 0, "a run starts at 0"
    for prev, seg in itertools.pairwise(run):
        duration = FragmentIndex.decode(prev.frag_index or b"").duration
        assert seg.media_start == prev.media_start + duration, (prev.path, seg.path)
        assert seg.start_us == prev.end_us
        for stream in ("v", "a"):
            before, after = packets(root / prev.path, stream), packets(root / seg.path, stream)
            assert before and after, f"no {stream} packets in {prev.path} or {seg.path}"
            last_dts, last_duration = before[-1]
            assert last_duration is not None
            assert after[0][0] == last_dts + last_duration, (stream, prev.path, seg.path)
        first_video = packets(root / seg.path, "v")[0][0]
        assert first_video == seg.media_start


@needs_standin
def test_decode_time_runs_on_across_rotation_and_recovery(tmp_path: Path, catalog: Catalog) -> None:
    root = tmp_path / "root"

    def closed() -> list[Segment]:
        return [s for s in catalog.segments(camera_id="cam") if s.state == CLOSED]

    def open_row() -> Segment | None:
        return next((s for s in catalog.segments(camera_id="cam") if s.state == OPEN), None)

    def written(seg: Segment | None) -> bool:
        return seg is not None and len(scan(root / seg.path).index) > 0

    with StandinCamera(width=320, height=240, keyint=25, audio="aac") as camera:
        cfg = _config(tmp_path, camera.url)
        proc = _serve(cfg)
        try:
            # Three rotations, and the fourth segment open with a fragment on disk.
            wait_for(lambda: len(closed()) >= 3, 40, "three closed segments")
            wait_for(lambda: written(open_row()), 10, "a fragment of the open segment")
        finally:
            _stop(proc, signal.SIGKILL)
        first_run = catalog.segments(camera_id="cam")
        assert first_run[-1].state == OPEN, "the kill left the open segment"
        proc = _serve(cfg)
        try:
            # Recovery closes it; the new connection records two more.
            wait_for(lambda: len(closed()) >= len(first_run) + 2, 40, "segments after restart")
        finally:
            _stop(proc, signal.SIGTERM)
        assert proc.returncode == 0, (proc.stderr.read() if proc.stderr else b"").decode()[-2000:]

    segs = catalog.segments(camera_id="cam")
    assert all(s.state == CLOSED for s in segs)
    assert all(s.has_audio for s in segs)
    starts = [i for i, s in enumerate(segs) if s.media_start == 0]
    assert starts[0] == 0 and len(starts) == 2, [s.media_start for s in segs]
    before, after = segs[: starts[1]], segs[starts[1] :]
    # The rotations, and the segment the kill left open, which recovery closed (and any file
    # whose row was still queued, which it indexed): one time line.
    assert [s.id for s in before[: len(first_run)]] == [s.id for s in first_run]
    assert len(before) >= 4
    assert_one_time_line(root, before)
    # The restart is a new connection: a new run, from 0, continuous again.
    assert len(after) >= 2
    assert_one_time_line(root, after)


@pytest.mark.parametrize(("shift_ms", "seam_ms"), [(5, 0), (100, 100)])
def test_audio_goes_on_at_the_seam_unless_its_timestamps_moved_away(
    tmp_path: Path, catalog: Catalog, clips: dict[str, Path], shift_ms: int, seam_ms: int
) -> None:
    """The camera's audio timestamps move later by ``shift_ms`` a second into the first file
    (a track re-anchored by a sender report). Inside the file the audio stays contiguous; at
    the next file a small move is rounding and the run's audio goes on where it left off, a
    large one is where the audio is and shows as a gap of that size at the seam."""
    rig = make_rig(tmp_path, catalog, segment_seconds=2)
    info, media = read_clip(clips["aac"])
    assert info.audio is not None
    rate = info.audio.timescale
    for p in media:
        p.arrival = p.dts / (rate if p.kind == AUDIO else info.video.timescale)
        if p.kind == AUDIO and p.dts >= rate:
            p.dts += shift_ms * rate // 1000
            p.pts += shift_ms * rate // 1000
    rig.recorder.stream_started(info)
    for p in media:
        rig.recorder.packet(p)
    rig.stop()
    rig.writers.stop()
    first, second = catalog.segments(camera_id="cam1")
    assert second.media_start > 0, "one run"
    before, after = packets(rig.root / first.path, "a"), packets(rig.root / second.path, "a")
    last_dts, last_duration = before[-1]
    assert last_duration is not None
    assert after[0][0] - (last_dts + last_duration) == seam_ms * rate // 1000
