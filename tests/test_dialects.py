"""Real camera dialects: every captured camera reply in a directory, replayed to the readers.

Each capture file is one scenario (tests/support/dialect_server.py): a test RTSP server answers
with the capture and its siblings, then sends real H.264/H.265 in RTP. All scenarios run at once
in one real :class:`Server` (one camera each, real catalog and storage): TCP captures through
the native reader, UDP ones through PyAV. A capture that describes H.264 or H.265 must give a
recording that decodes; any other must give a clear error in the camera's health.

The captures live outside the repository (``../shared/camera-dialects`` from its root, or
``VMS_DIALECTS_DIR``); new files dropped there are run without a code change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from tests.support.captures import Scenario, capture_files, load_scenarios
from tests.support.dialect_server import DialectServer, Request, Sent
from tests.support.polling import wait_for
from tests.support.rtp_media import MTU, encode_clip, packetize
from vms import config as config_mod
from vms.catalog.store import Catalog
from vms.media import H264, HEVC
from vms.server import Server

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = Path(os.environ.get("VMS_DIALECTS_DIR") or ROOT.parent / "shared" / "camera-dialects")
CAPTURES = capture_files(DIALECTS) if DIALECTS.is_dir() else []
NONE = pytest.mark.skip(reason=f"no camera captures at {DIALECTS} (set VMS_DIALECTS_DIR)")
USER, PASSWORD = "operator", "dialect-s3cret"
CLIP_SIZE = (160, 120)  # encode_clip's
MIN_FRAMES = 20  # on disk per video scenario before the run ends (0.8 s of video)


@dataclasses.dataclass
class Outcome:
    """What one scenario gave: the camera's health, what was recorded, what the server saw."""

    scenario: Scenario
    camera_id: str
    reader: str
    health: dict[str, Any]
    frames_written: int = 0
    decoded: int = 0
    audio_decoded: int = 0
    sizes: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    # The native reader's reading of each track: (SSRC, RTP-Info seq, RTP-Info rtptime).
    understood: dict[str, tuple[int | None, int | None, int | None]] = dataclasses.field(
        default_factory=dict
    )
    sent: dict[str, Sent] = dataclasses.field(default_factory=dict)
    requests: list[Request] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    logs: list[logging.LogRecord] = dataclasses.field(default_factory=list)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclasses.dataclass
class _Camera:
    scenario: Scenario
    server: DialectServer
    id: str


def camera_id(index: int, name: str) -> str:
    return f"c{index:02d}-" + re.sub(r"[^a-z0-9_-]", "-", name.lower())[:56]


def run_dialects(directory: Path, tmp: Path, timeout: float = 45.0) -> dict[str, Outcome]:
    """Run every capture of ``directory`` as a camera of one server; one outcome per capture."""
    scenarios = load_scenarios(directory)
    clips = {H264: encode_clip(H264), HEVC: encode_clip(HEVC)}
    cams = [
        _Camera(s, DialectServer(s, clips).start(), camera_id(i, s.name))
        for i, s in enumerate(scenarios)
    ]
    root = tmp / "r1"
    root.mkdir()
    config = {
        "data_dir": str(tmp),
        "storage": {"roots": [{"name": "r1", "path": str(root), "min_free_bytes": 0}]},
        "recording": {"segment_seconds": 60, "stagger": False},
        "ingest": {
            "reader": "native",
            "open_timeout_s": 3,
            "stall_timeout_s": 3,
            "backoff_initial_s": 0.5,
            "backoff_max_s": 2,
        },
        "cameras": [
            {
                "id": c.id,
                "main": {"url": c.server.url, "transport": "udp" if c.scenario.udp else "tcp"},
                "username": USER,
                "password": PASSWORD,
            }
            for c in cams
        ],
    }
    records = _Records()
    vms_log = logging.getLogger("vms")
    level = vms_log.level
    vms_log.addHandler(records)
    vms_log.setLevel(logging.INFO)
    outcomes: dict[str, Outcome] = {}
    server: Server | None = None
    try:
        server = Server(config_mod.from_dict(config))
        server.start()

        def settled(c: _Camera) -> bool:
            assert server is not None
            cam = server.camera(c.id)
            if c.scenario.expects_video:
                assert cam.recorder is not None
                return cam.recorder.stats.frames_written >= MIN_FRAMES
            return cam.health.reconnects >= 1 and cam.health.last_error is not None

        with contextlib.suppress(AssertionError):  # one that never settles fails on its own
            wait_for(lambda: all(settled(c) for c in cams), timeout, "every scenario")
        sessions = {s.camera.id: s for s in server.reactor.sessions}
        for c in cams:
            cam = server.camera(c.id)
            o = Outcome(
                c.scenario,
                c.id,
                "pyav" if cam.threads else "native",
                cam.health.snapshot(),
                cam.recorder.stats.frames_written if cam.recorder else 0,
            )
            session = sessions.get(c.id)
            for kind, media in (
                ("video", session and session.video),
                ("audio", session and session.audio),
            ):
                if media:
                    o.understood[kind] = (media.ssrc, media.rtp_seq, media.rtp_time)
            outcomes[c.scenario.name] = o
    finally:
        if server is not None:
            server.stop()
        for c in cams:
            c.server.close()
        vms_log.removeHandler(records)
        vms_log.setLevel(level)
    catalog = Catalog(f"sqlite:///{tmp / 'catalog.db'}")
    try:
        for c in cams:
            o = outcomes[c.scenario.name]
            o.requests, o.problems = list(c.server.requests), list(c.server.problems)
            o.sent = dict(c.server.sent)
            o.logs = [r for r in records.records if getattr(r, "camera", None) == c.id]
            for seg in catalog.segments(camera_id=c.id):
                decode(root / seg.path, o)
    finally:
        catalog.close()
    return outcomes


def decode(path: Path, o: Outcome) -> None:
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            o.decoded += 1
            o.sizes.add((frame.width, frame.height))
    with av.open(str(path)) as c:
        if c.streams.audio:
            o.audio_decoded += sum(1 for _ in c.decode(audio=0))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    if not DIALECTS.is_dir():
        pytest.skip(f"no camera captures at {DIALECTS} (set VMS_DIALECTS_DIR)")
    yield run_dialects(DIALECTS, tmp_path_factory.mktemp("dialects"))


# --- checks --------------------------------------------------------------------------------


def clear_error(error: str | None) -> str:
    """``error`` if it reads as an operator's message; fails the test otherwise."""
    assert error, "no error reported"
    assert "internal error" not in error and "Traceback" not in error, error
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", error), f"a Python error: {error}"
    assert PASSWORD not in error
    return error


def check(o: Outcome) -> None:
    name = o.scenario.name
    assert not o.problems, f"{name}: {o.problems}"
    for r in o.logs:
        assert r.exc_info is None, f"{name}: traceback logged: {r.getMessage()}"
        assert PASSWORD not in r.getMessage()
        assert "internal error" not in r.getMessage(), r.getMessage()
    methods = [r.method for r in o.requests]
    if o.scenario.expects_video:
        assert o.decoded > 0, f"{name} ({o.reader}): nothing decodable recorded; health {o.health}"
        assert o.health["state"] == "online", o.health
        # The whole handshake went to this server, on the session's one connection, whatever
        # hosts the camera's URLs named.
        play = next(r for r in o.requests if r.method == "PLAY")
        first = [r.method for r in o.requests if r.connection == play.connection]
        assert {"DESCRIBE", "SETUP", "PLAY"} <= set(first), first
        assert o.sizes == {CLIP_SIZE}, "the in-band SPS, not the camera's sprop, sets the size"
        if o.scenario.expects_audio:
            assert o.audio_decoded > 0, f"{name}: the audio sent was not recorded"
        for kind, (ssrc, seq, rtptime) in o.understood.items():
            sent = o.sent.get(kind)
            if sent is None:
                continue
            if sent.ssrc_told:
                assert ssrc == sent.ssrc, f"{kind} SSRC: read {ssrc}, told {sent.ssrc:08x}"
            if sent.info is not None:
                assert (seq, rtptime) == sent.info, f"{kind} RTP-Info: read {(seq, rtptime)}"
    else:
        error = clear_error(o.health["last_error"])
        assert o.health["state"] == "offline", o.health
        status = o.scenario.capture.status
        if status == 401:
            assert "401" in error or "Unauthorized" in error, error
            # With credentials, the reader answered the challenge (with Digest when offered).
            answers = [
                r.headers["authorization"] for r in o.requests if "authorization" in r.headers
            ]
            assert answers, methods
            if "Digest" in (o.scenario.capture.header("www-authenticate") or ""):
                assert all(a.startswith("Digest ") for a in answers), answers
        elif o.scenario.capture.ok and o.scenario.sdp is not None:
            assert "H.264" in error or "video" in error, error


@pytest.mark.parametrize(
    "name", [p.name.removesuffix(".txt") for p in CAPTURES] or [pytest.param("none", marks=NONE)]
)
def test_capture(outcomes: dict[str, Outcome], name: str) -> None:
    check(outcomes[name])


def test_every_capture_ran(outcomes: dict[str, Outcome]) -> None:
    ran = outcomes.values()
    video = sum(1 for o in ran if o.decoded)
    errors = sum(1 for o in ran if not o.scenario.expects_video and o.health["last_error"])
    readers = {r: sum(1 for o in ran if o.reader == r) for r in ("native", "pyav")}
    print(
        f"\ncamera dialects: ran {len(ran)} captures from {DIALECTS}: {video} recorded video, "
        f"{errors} gave an error; readers: {readers}"
    )
    assert len(ran) == len(CAPTURES)


def test_a_new_capture_is_run_without_a_code_change(tmp_path: Path) -> None:
    """A capture dropped into a directory is a scenario: here a camera without H.264/H.265."""
    captures = tmp_path / "captures"
    captures.mkdir()
    (captures / "README.md").write_text("About these captures.")
    (captures / "LICENSE-MIT.txt").write_text("Not a capture either.")
    mjpeg = "v=0\r\ns=MJPEG\r\nt=0 0\r\nm=video 0 RTP/AVP 26\r\na=control:track1\r\n"
    (captures / "oldcam_sdp.txt").write_text(mjpeg)
    run = tmp_path / "run"
    run.mkdir()
    outcomes = run_dialects(captures, run, timeout=15)
    assert list(outcomes) == ["oldcam_sdp"]
    o = outcomes["oldcam_sdp"]
    assert not o.scenario.expects_video
    check(o)
    assert o.health["last_error"] == (
        "the stream has no H.264 or H.265 video track (it offers video JPEG)"
    )


def test_the_clips_exercise_every_packetization() -> None:
    """Single NAL units, aggregates and fragments, for both codecs (the reader's depacketizer
    must see them all)."""
    for codec, aggregate, fragment in ((H264, {24}, {28}), (HEVC, {48}, {49})):
        clip = encode_clip(codec)
        kinds = {
            (p[0] >> 1) & 0x3F if codec == HEVC else p[0] & 0x1F
            for frame in clip.frames
            for p in packetize(codec, frame)
        }
        assert kinds & aggregate and kinds & fragment, kinds
        assert kinds - aggregate - fragment, f"no single NAL unit packet: {kinds}"
        single = {
            len(p) for frame in clip.frames for p in packetize(codec, frame, single_only=True)
        }
        assert max(single) > MTU  # packetization-mode=0: whole NAL units, however large
