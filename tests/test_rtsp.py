"""The native RTSP reader's protocol pieces, and its handshake against replayed camera replies
(the ingest tests run it against real servers, test_dialects against whole captures)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bad_rtsp import EndlessReplyAfterPlay
from tests.support.captures import load_scenarios
from tests.support.dialect_server import DialectServer
from tests.support.polling import wait_for
from tests.support.rtp_media import Clip, encode_clip
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.clock import SystemClock
from vms.config import CameraConfig, IngestConfig
from vms.health import CameraHealth
from vms.ingest import rtp, rtsp
from vms.ingest import rtsp_headers as headers
from vms.media import AAC, H264, HEVC, MAIN, PCMA, PCMU, dimensions


def session(username: str, password: str) -> rtsp.Session:
    cam = CameraConfig.model_validate(
        {
            "id": "c",
            "main": {"url": "rtsp://10.0.0.9/dir/index.html"},
            "username": username,
            "password": password,
        }
    )
    clock = SystemClock()
    health = CameraHealth("c", clock)
    sink = StreamPipeline("c", MAIN, health, Relay())
    return rtsp.Session(cam, cam.main, sink=sink, health=health, config=IngestConfig(), clock=clock)


def test_digest_response_matches_rfc_2617(monkeypatch: pytest.MonkeyPatch) -> None:
    s = session("Mufasa", "Circle Of Life")
    s.auth = (
        "digest",
        {
            "realm": "testrealm@host.com",
            "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "qop": "auth,auth-int",
            "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
        },
    )
    monkeypatch.setattr(rtsp.os, "urandom", lambda n: bytes.fromhex("0a4f113b"))
    header = s._authorization("GET", "/dir/index.html")
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "nc=00000001" in header and 'cnonce="0a4f113b"' in header


def test_basic_authorization() -> None:
    s = session("admin", "p@ss:/#?%")
    s.auth = ("basic", {})
    assert (
        s._authorization("DESCRIBE", "rtsp://h/") == "Authorization: Basic YWRtaW46cEBzczovIz8l\r\n"
    )


SDP = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=Session
t=0 0
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets=Z0LAHtoCgPaEAAADAAQAAAMAyDxYuoA=,aM4PyA==
a=control:stream=0
m=audio 0 RTP/AVP 97
a=rtpmap:97 MPEG4-GENERIC/48000/1
a=fmtp:97 streamtype=5;profile-level-id=2;mode=AAC-hbr;config=1188;sizelength=13;indexlength=3;indexdeltalength=3
a=control:stream=1
"""


def test_sdp_tracks_and_parameter_sets() -> None:
    video, audio = rtp.parse_sdp(SDP, "rtsp://cam/live/")
    assert video is not None and audio is not None
    assert (video.codec, video.rate, video.control) == (H264, 90000, "rtsp://cam/live/stream=0")
    assert video.params is not None and video.params.complete
    assert (audio.codec, audio.rate, audio.channels, audio.config) == (AAC, 48000, 1, b"\x11\x88")
    pcmu = SDP.replace("MPEG4-GENERIC/48000/1", "PCMU/8000")
    assert rtp.parse_sdp(pcmu, "rtsp://cam/")[1].codec == PCMU  # type: ignore[union-attr]
    hevc = "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=control:trackID=1\r\n"
    v, a = rtp.parse_sdp(hevc, "rtsp://cam/")
    assert v is not None and v.codec == HEVC and v.control == "rtsp://cam/trackID=1" and a is None


def test_rtp_timestamps_are_extended_across_the_wrap() -> None:
    c = rtp.RtpClock()
    assert c.extend(0xFFFFF000) == 0xFFFFF000
    assert c.extend(0x00000E10) == (1 << 32) + 0xE10
    assert c.extend(0xFFFFFF00) == 0xFFFFFF00  # a late packet from before the wrap
    assert c.extend(0x00001C20) == (1 << 32) + 0x1C20


def test_fu_a_and_stap_a_are_reassembled() -> None:
    d = rtp.Depacketizer(H264)
    sps, pps = b"\x67\x42\xc0\x1e", b"\x68\xce\x0f\xc8"
    stap = b"\x18" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert d.push(memoryview(stap), False) is None
    idr = b"\x65" + bytes(range(200))
    start = bytes([0x7C, 0x85]) + idr[1:100]
    end = bytes([0x7C, 0x45]) + idr[100:]
    assert d.push(memoryview(start), False) is None
    assert d.push(memoryview(end), True) == [sps, pps, idr]


# --- what field cameras write (tests/support/dialect_server.py replays whole captures) -------

FOSCAM_AUDIO = "m=audio 0 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\nb=AS:64\r\na=control:track2\r\n"
GW_VIDEO = (
    "m=video 0 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000 \r\n"
    "a=control:video\r\n"
    "a=fmtp:96 packetization-mode=1; sprop-parameter-sets="
    "Z00AKpWoHgCJ+WbgICAgQAAAAAE=,aO48gAAAAAE=\r\n"
)


def test_sdp_static_payload_types_and_parameter_sets_with_start_codes() -> None:
    base = "rtsp://10.0.0.5:5050/H264?channel=1&subtype=0"
    video, audio = rtp.parse_sdp("v=0\r\na=control:*\r\n" + GW_VIDEO + FOSCAM_AUDIO, base)
    assert video is not None and video.params is not None
    # The camera's sprop NAL units end with a start code: it is not part of the SPS.
    assert not video.params.sps[0].endswith(b"\x00\x00\x01")
    assert not video.params.pps[0].endswith(b"\x00\x00\x01")
    assert dimensions(video.params) == (1920, 1080)
    # Appended to the whole base, query included, as FFmpeg and live555 do.
    assert video.control == base + "/video" and video.raw_control == "video"
    # A static payload type without an rtpmap line is still G.711.
    assert audio is not None and (audio.codec, audio.rate, audio.payload_type) == (PCMU, 8000, 0)
    # An rtpmap naming another payload type than the m= line's is not that track's.
    for other in ("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "a=rtpmap:0 PCMU/8000\r\n"):
        sdp = GW_VIDEO + "m=audio 0 RTP/AVP 8\r\n" + other
        assert rtp.parse_sdp(sdp, base)[1].codec == PCMA  # type: ignore[union-attr]


def test_sdp_aggregate_control() -> None:
    hik = (
        "v=0\r\na=control:rtsp://10.0.0.6:554/Streaming/Channels/101/?transportmode=unicast\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:rtsp://10.0.0.6:554/"
        "Streaming/Channels/101/trackID=1?transportmode=unicast\r\n"
    )
    base = "rtsp://10.0.0.6:554/Streaming/Channels/101/"
    assert rtp.aggregate_control(hik, base) == (
        "rtsp://10.0.0.6:554/Streaming/Channels/101/?transportmode=unicast"
    )
    video, _ = rtp.parse_sdp(hik, base)
    assert video is not None and video.control.endswith("trackID=1?transportmode=unicast")
    # "*", a relative control, none; and a track's control never counts for the session.
    assert rtp.aggregate_control("v=0\r\na=control:*\r\n" + GW_VIDEO, base) == base
    assert rtp.aggregate_control("v=0\r\na=control:live\r\n", base) == base + "live"
    assert rtp.aggregate_control("v=0\r\n" + GW_VIDEO, base) == base


def test_transport_of_setup_replies() -> None:
    hik = headers.parse_transport('RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=4cacc3d1;mode="play"')
    assert hik == headers.Transport(True, (0, 1), 0x4CACC3D1)
    assert headers.parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc= d6d6627").ssrc == (
        0xD6D6627
    )
    assert headers.parse_transport("RTP/AVP/TCP;interleaved=2-3;ssrc=3735928559").ssrc == (
        3735928559  # decimal: too long to be hex
    )
    gw = "RTP/AVP/TCP;unicast;destination=10.0.0.2;source=10.0.0.1;interleaved=2-3"
    assert headers.parse_transport(gw) == headers.Transport(True, (2, 3), None)
    udp = "RTP/AVP;unicast;mode=PLAY;source=127.0.0.1;client_port=18714-18715;ssrc=0"
    assert headers.parse_transport(udp) == headers.Transport(False, None, 0)
    assert headers.parse_session("        708345999;timeout=60") == ("708345999", 60)
    assert headers.parse_session("9a90de54; timeout=120") == ("9a90de54", 120)
    assert headers.parse_session("F8F8E425") == ("F8F8E425", None)


def test_rtp_info_as_cameras_write_it() -> None:
    bunny = (
        "url=trackID=1;seq=1;rtptime=-1,"
        "url=rtsp://h/vod/mp4:Bunny,115k.mov/trackID=2;seq=7;rtptime=4294967295"
    )
    assert headers.parse_rtp_info(bunny) == [
        headers.RtpInfo("trackID=1", 1, None),  # a bad rtptime is no rtptime
        headers.RtpInfo("rtsp://h/vod/mp4:Bunny,115k.mov/trackID=2", 7, 4294967295),
    ]
    video = rtp.Media(0, H264, 90000, "rtsp://cam/H264?channel=1/video", 0)
    video.raw_control = "video"
    audio = rtp.Media(1, PCMU, 8000, "rtsp://cam/H264?channel=1/audio", 2)
    audio.raw_control = "audio"
    # The camera's own URL for the track only ends like the control.
    gw = "url=rtsp://cam/H264/video;seq=271;rtptime=1621990950"
    headers.match_rtp_info(headers.parse_rtp_info(gw), [video, audio])
    assert (video.rtp_seq, video.rtp_time, audio.rtp_seq) == (271, 1621990950, None)
    reolink = "url=audio;seq=39409;rtptime=3075976528;ssrc=9fc9fff8"
    headers.match_rtp_info(headers.parse_rtp_info(reolink), [video, audio])
    assert (audio.rtp_seq, audio.rtp_time, audio.ssrc) == (39409, 3075976528, 0x9FC9FFF8)


def test_challenge_digest_over_basic_and_unquoted_parameters() -> None:
    basic, digest = 'Basic realm="cam"', 'Digest realm=cam, nonce="n1", qop=auth, stale=FALSE'
    for offered in ([basic, digest], [digest, basic]):
        scheme, p = headers.choose_challenge(offered)
        assert scheme == "digest" and p["qop"] == "auth" and p["nonce"] == "n1"
    sha = 'Digest realm="r", nonce="a", algorithm=SHA-256'
    md5 = 'Digest realm="r", nonce="b", algorithm=MD5'
    assert headers.choose_challenge([sha, md5])[1]["nonce"] == "b"
    assert headers.choose_challenge([basic]) == ("basic", {})
    with pytest.raises(headers.RtspError, match="asks for negotiate"):
        headers.choose_challenge(["Negotiate abc"])


# --- the handshake against replayed replies --------------------------------------------------

PASSWORD = "s3cret-p@ss"
SDP_AV = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=cam\r\nt=0 0\r\na=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
    "a=control:trackID=1\r\nm=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=2\r\n"
)


def reply(*lines: str, body: str = "") -> str:
    return "\r\n".join(lines) + "\r\n\r\n" + body


@pytest.fixture(scope="module")
def h264_clip() -> dict[str, Clip]:
    return {H264: encode_clip(H264, frames=20)}


@contextlib.contextmanager
def replaying(
    tmp_path: Path, clips: dict[str, Clip], files: dict[str, str], name: str
) -> Iterator[DialectServer]:
    """A server answering from ``files`` (capture name → text), for the capture ``name``."""
    d = tmp_path / "captures"
    d.mkdir(exist_ok=True)
    for fname, text in files.items():
        (d / fname).write_bytes(text.encode("latin-1"))
    scenario = next(s for s in load_scenarios(d) if s.name == name)
    with DialectServer(scenario, clips) as server:
        yield server


@contextlib.contextmanager
def reading(url: str) -> Iterator[rtsp.Session]:
    """The native reader on one camera (no recorder), on its own reactor thread."""
    cam = CameraConfig.model_validate(
        {"id": "cam", "main": {"url": url}, "username": "admin", "password": PASSWORD}
    )
    clock = SystemClock()
    stop = threading.Event()
    reactor = rtsp.Reactor(clock, stop)
    config = IngestConfig(
        open_timeout_s=3, stall_timeout_s=3, backoff_initial_s=0.3, backoff_max_s=0.6
    )
    health = CameraHealth("cam", clock)
    sink = StreamPipeline("cam", MAIN, health, Relay())
    session = rtsp.Session(cam, cam.main, sink=sink, health=health, config=config, clock=clock)
    reactor.add(session)
    reactor.start()
    try:
        yield session
    finally:
        stop.set()
        reactor.join(5)


def failure(session: rtsp.Session, timeout: float = 8) -> str:
    health = session.health
    wait_for(lambda: health.reconnects >= 1, timeout, "the session to fail")
    assert health.last_error is not None
    return health.last_error


def test_content_length_not_a_number_is_a_clear_error(
    tmp_path: Path, h264_clip: dict[str, Clip]
) -> None:
    bad = reply("RTSP/1.0 200 OK", "CSeq: 2", "Content-Length: twelve", body=SDP_AV)
    with (
        replaying(tmp_path, h264_clip, {"cam_describe.txt": bad}, "cam_describe") as server,
        reading(server.url) as session,
    ):
        error = failure(session)
    assert error == "invalid RTSP answer: Content-Length 'twelve' is not a number"


def test_content_length_over_the_reply_limit_fails_at_once(
    tmp_path: Path, h264_clip: dict[str, Clip]
) -> None:
    big = reply("RTSP/1.0 200 OK", "CSeq: 2", "Content-Length: 104857600", body=SDP_AV)
    with (
        replaying(tmp_path, h264_clip, {"cam_describe.txt": big}, "cam_describe") as server,
        reading(server.url) as session,
    ):
        error = failure(session, timeout=2)  # not after the 3 s open timeout
    assert "104857600 bytes (Content-Length) is over the 64 kB limit" in error


def test_digest_is_chosen_when_basic_is_offered_too(
    tmp_path: Path, h264_clip: dict[str, Clip]
) -> None:
    challenge = reply(
        "RTSP/1.0 401 Unauthorized",
        "CSeq: 2",
        'WWW-Authenticate: Basic realm="cam"',
        'WWW-Authenticate: Digest realm="cam", nonce="5f3a", qop=auth',
    )
    files = {"cam_describe.txt": challenge}
    with (
        replaying(tmp_path, h264_clip, files, "cam_describe") as server,
        reading(server.url) as session,
    ):
        assert "401 Unauthorized" in failure(session)
    answers = [
        r.headers.get("authorization", "") for r in server.requests if r.method == "DESCRIBE"
    ]
    assert answers[0] == ""
    assert answers[1].startswith("Digest ") and "qop=auth" in answers[1]
    assert session.health.warnings == []


def test_basic_only_over_plain_rtsp_is_warned_once(
    tmp_path: Path, h264_clip: dict[str, Clip], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vms")
    challenge = reply("RTSP/1.0 401 Unauthorized", "CSeq: 1", 'WWW-Authenticate: Basic realm="x"')
    with (
        replaying(tmp_path, h264_clip, {"cam_options.txt": challenge}, "cam_options") as server,
        reading(server.url) as session,
    ):
        wait_for(lambda: session.health.reconnects >= 3, 10, "three attempts")
    assert any(r.headers.get("authorization", "").startswith("Basic ") for r in server.requests)
    notice = (
        "the camera offers only Basic authentication over plain RTSP: its password crosses the "
        "network in clear text"
    )
    assert session.health.warnings == [notice]
    assert session.health.snapshot()["warnings"] == [notice]
    warned = [r for r in caplog.records if "Basic authentication" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert getattr(warned[0], "camera", None) == "cam"
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


def test_keepalive_within_the_cameras_session_timeout(
    tmp_path: Path, h264_clip: dict[str, Clip]
) -> None:
    setup = reply(
        "RTSP/1.0 200 OK",
        "CSeq: 3",
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
        "Session: 77A1;timeout=2",
    )
    with (
        replaying(tmp_path, h264_clip, {"cam_setup.txt": setup}, "cam_setup") as server,
        reading(server.url) as session,
    ):
        wait_for(lambda: session.health.frames > 0, 8, "video")
        wait_for(lambda: "GET_PARAMETER" in server.methods(), 3, "a keepalive within 2 s")
    keepalive = next(r for r in server.requests if r.method == "GET_PARAMETER")
    assert keepalive.headers["session"] == "77A1"


def test_setup_answered_with_udp_is_a_clear_error(
    tmp_path: Path, h264_clip: dict[str, Clip]
) -> None:
    setup = reply(
        "RTSP/1.0 200 OK",
        "CSeq: 3",
        "Transport: RTP/AVP;unicast;client_port=18714-18715;server_port=40004-40005",
        "Session: 231970;timeout=60",
    )
    with (
        replaying(tmp_path, h264_clip, {"cam_setup.txt": setup}, "cam_setup") as server,
        reading(server.url) as session,
    ):
        error = failure(session)
    assert "answered SETUP with RTP over UDP" in error and "transport: udp" in error
    assert "PLAY" not in server.methods()


def test_audio_put_on_the_videos_channel_is_dropped(
    tmp_path: Path, h264_clip: dict[str, Clip]
) -> None:
    describe = reply(
        "RTSP/1.0 200 OK", "CSeq: 2", "Content-Type: application/sdp",
        f"Content-Length: {len(SDP_AV)}", body=SDP_AV,
    )  # fmt: skip
    setup = reply("RTSP/1.0 200 OK", "CSeq: 3", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
    files = {"cam_describe.txt": describe, "cam_setup.txt": setup}
    with (
        replaying(tmp_path, h264_clip, files, "cam_setup") as server,
        reading(server.url) as session,
    ):
        wait_for(lambda: session.health.frames >= 10, 8, "video")
        assert session.audio is None  # only the video's channel is read
        assert session.info is not None and session.info.audio is None
    assert server.methods().count("SETUP") == 2


def test_error_replies_say_what_the_camera_said(tmp_path: Path, h264_clip: dict[str, Clip]) -> None:
    missing = reply("RTSP/1.0 404 Stream Not Found", "CSeq: 2")
    with (
        replaying(tmp_path, h264_clip, {"cam_describe.txt": missing}, "cam_describe") as server,
        reading(server.url) as session,
    ):
        assert failure(session) == "DESCRIBE failed: RTSP 404 Stream Not Found"
    empty = reply("RTSP/1.0 200 OK", "CSeq: 2", "Content-Type: text/plain")
    with (
        replaying(tmp_path, h264_clip, {"cam_describe.txt": empty}, "cam_describe") as server,
        reading(server.url) as session,
    ):
        assert "holds no stream description" in failure(session)


def test_a_reply_that_never_ends_during_play_is_bounded() -> None:
    with EndlessReplyAfterPlay() as server, reading(server.url) as session:
        # Data keeps coming (never a stall): only the bound ends the session.
        assert "a reply without an end after 64 kB" in failure(session)


def test_challenges_at_setup_and_play_are_answered() -> None:
    s = session("admin", PASSWORD)
    mine, peer = socket.socketpair()
    peer.settimeout(2)
    s.sock = mine
    try:
        video = rtp.Media(0, H264, 90000, "rtsp://10.0.0.9/dir/trackID=1", 0)
        s.video, s.setting, s.step = video, video, "setup"
        s._response(401, {"www-authenticate": 'Digest realm="r", nonce="n"'}, "")
        assert peer.recv(4096).startswith(b"SETUP rtsp://10.0.0.9/dir/trackID=1 RTSP/1.0")
        s.auth_tried = False  # a camera may ask again for PLAY (a new nonce)
        s._response(200, {"session": "42"}, "")
        assert peer.recv(4096).startswith(b"PLAY rtsp://10.0.0.9/dir/index.html RTSP/1.0")
        s._response(401, {"www-authenticate": 'Digest realm="r", nonce="m"'}, "")
        again = peer.recv(4096).decode()
        assert again.startswith("PLAY ") and 'nonce="m"' in again and "Session: 42" in again
    finally:
        mine.close()
        peer.close()


def test_a_keepalive_reply_body_is_not_read_as_media() -> None:
    s = session("admin", PASSWORD)
    s.video = rtp.Media(0, H264, 90000, "rtsp://10.0.0.9/dir/trackID=1", 0)
    s._playing()
    # A GET_PARAMETER reply whose body holds a '$' and what looks like a frame header.
    body = b"$\x00\x00\x20x"
    keepalive = b"RTSP/1.0 200 OK\r\nCSeq: 9\r\nContent-Length: 5\r\n\r\n" + body
    idr = b"\x80\xe0\x00\x01\x00\x00\x0e\x10\x00\x00\x00\x01" + b"\x65" + bytes(100)
    s.buf += keepalive + b"$\x00" + len(idr).to_bytes(2, "big") + idr
    s._interleaved()
    assert s.health.frames == 1 and not s.buf


def test_aac_channels_come_from_its_config() -> None:
    anpviz = (
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n"
        "m=audio 0 RTP/AVP 0\r\na=rtpmap:0 MPEG4-GENERIC/16000/2\r\na=fmtp:0 config=1408\r\n"
        "a=control:trackID=2\r\n"
    )
    _, audio = rtp.parse_sdp(anpviz, "rtsp://cam/")
    assert audio is not None and (audio.codec, audio.rate, audio.config) == (
        AAC,
        16000,
        b"\x14\x08",
    )
    assert audio.channels == 1  # what the config says, not the rtpmap's "/2"


def test_the_reactor_reads_more_often_while_a_camera_is_watched_live() -> None:
    from vms.ingest.rtsp import LIVE_ROUND_S, ROUND_S, pause

    assert pause(0.002, watched=False) == pytest.approx(ROUND_S - 0.002)
    assert pause(0.002, watched=True) == pytest.approx(LIVE_ROUND_S - 0.002)
    assert pause(0.2, watched=True) < 0  # a long round: no sleep at all
    assert LIVE_ROUND_S <= ROUND_S / 4
