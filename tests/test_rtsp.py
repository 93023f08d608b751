"""The native RTSP reader's protocol pieces (the ingest tests run it against real servers)."""

from __future__ import annotations

import pytest

from vms import rtp, rtsp
from vms.clock import SystemClock
from vms.config import CameraConfig, IngestConfig
from vms.fanout import Fanout
from vms.health import CameraHealth
from vms.media import AAC, H264, HEVC, PCMU


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
    return rtsp.Session(
        cam, recorder=None, fanout=Fanout(), health=CameraHealth("c", clock),
        config=IngestConfig(), clock=clock,
    )  # fmt: skip


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
