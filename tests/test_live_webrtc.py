"""Live view over WebRTC (WHEP) from a real RTSP camera: the stand-in camera (H.264 with G.711
audio, and one in H.265) feeds the served app; aiortc as a WHEP client and headless Chromium
play it, the camera's H.264 passed through with no decoder or encoder on the server."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import h264

from tests.support.browser import chromium, served_app
from tests.support.polling import wait_for
from vms.auth import local
from vms.auth.store import Grant
from vms.cameras.relay import Relay
from vms.config import CameraConfig, from_dict
from vms.live.webrtc import RtpClock, VideoPassthrough
from vms.media import (
    H264,
    VIDEO,
    Packet,
    ParameterSets,
    StreamInfo,
    StreamStart,
    VideoInfo,
    length_prefix,
)
from vms.server import Server
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(
    not gstreamer_available(), reason="GStreamer RTSP server (Debian packages) not installed"
)
PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
MAX_SESSIONS = 4
WHEP = "/api/v1/cameras/{}/whep"
STATIC = Path(__file__).resolve().parents[1] / "src" / "vms" / "live" / "static"


class Site:
    def __init__(self, base: str, server: Server, bearer: str) -> None:
        self.base, self.server, self.bearer = base, server, bearer

    def whep(self, camera: str = "cam1", **query: str) -> str:
        url = self.base + WHEP.format(camera)
        return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer}"}

    def media_token(self, camera: str = "cam1") -> str:
        r = httpx.post(f"{self.base}/api/v1/auth/media-token",
                       json={"camera_id": camera, "action": "live"}, headers=self.auth)  # fmt: skip
        assert r.status_code == 200, r.text
        return str(r.json()["token"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("webrtc")
    (tmp / "root").mkdir()
    with (
        StandinCamera(width=320, height=240, keyint=25, audio="pcmu") as cam,
        StandinCamera(width=160, height=128, keyint=25, codec="h265") as hevc,
    ):
        cfg = from_dict({
            "data_dir": str(tmp / "data"),
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "root"), "min_free_bytes": 0}]},
            "auth": FAST,
            "live": {"webrtc_max_sessions": MAX_SESSIONS},
            "ingest": {"open_timeout_s": 5, "stall_timeout_s": 5, "backoff_initial_s": 0.2,
                       "backoff_max_s": 1},
            "cameras": [{"id": "cam1", "main": {"url": cam.url}, "record": "off"},
                        {"id": "hevc", "main": {"url": hevc.url}, "record": "off"},
                        {"id": "dark", "main": {"url": "rtsp://127.0.0.1:9/x"}, "record": "off"}],
        })  # fmt: skip
        with served_app(cfg) as (base, server):
            uid = server.auth.add_user("guard", PASSWORD, "viewer").id
            grants = [Grant(c, None) for c in ("cam1", "hevc", "dark")]
            server.auth.store.set_grants(uid, grants)
            r = httpx.post(f"{base}/api/v1/auth/login",
                           json={"name": "guard", "password": PASSWORD})  # fmt: skip
            assert r.status_code == 200, r.text
            for c in (server.camera("cam1"), server.camera("hevc")):
                wait_for(lambda c=c: c.relay.info is not None, 30, f"{c.config.id} streaming")
            yield Site(base, server, str(r.json()["access_token"]))


# --- aiortc as the WHEP client ---------------------------------------------------------------


async def _offer(audio: bool = True) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def _watch(url: str, headers: dict[str, str], frames: int) -> dict[str, Any]:
    """Play ``url`` until ``frames`` video frames are decoded; what was received."""
    pc = await _offer()
    got: dict[str, Any] = {"video": [], "audio": 0}
    done = asyncio.Event()

    async def consume(track: Any) -> None:
        while True:
            frame = await track.recv()
            if track.kind == "audio":
                got["audio"] += 1
                continue
            got["video"].append(hashlib.sha1(bytes(frame.planes[0])).hexdigest())
            got["size"] = (frame.width, frame.height)
            if len(got["video"]) >= frames and got["audio"]:
                done.set()

    tasks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    async with httpx.AsyncClient() as http:
        r = await http.post(url, content=pc.localDescription.sdp,
                            headers={"Content-Type": "application/sdp", **headers})  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.headers["content-type"] == "application/sdp"
        got["location"] = r.headers["location"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
        try:
            await asyncio.wait_for(done.wait(), 45)
        finally:
            got["delete"] = (await http.delete(url.split("/api/")[0] + got["location"])).status_code
            for t in tasks:
                t.cancel()
            await pc.close()
    return got


def test_aiortc_plays_the_camera_over_whep(site: Site) -> None:
    got = asyncio.run(_watch(site.whep(token=site.media_token()), {}, frames=50))
    assert got["size"] == (320, 240)
    assert len(set(got["video"])) > 10  # the picture changes (the ball moves)
    assert got["audio"] > 0  # the camera's G.711, passed through
    assert got["delete"] == 200
    wait_for(lambda: len(site.server.webrtc) == 0, 10, "the session ended")


# --- headless Chromium through whep.js -------------------------------------------------------

PAGE = "<!doctype html><html><body><video id=v muted playsinline></video></body></html>"

PLAY = """async ([camera, token]) => {
  const v = document.getElementById('v');
  const c = document.createElement('canvas');
  window.shown = 0;
  window.pictures = new Set();
  const count = () => {
    window.shown++;
    if (window.shown % 5 === 0 && v.videoWidth) {
      c.width = v.videoWidth; c.height = v.videoHeight;
      const g = c.getContext('2d');
      g.drawImage(v, 0, 0);
      const px = g.getImageData(0, 0, c.width, c.height).data;
      let sum = 0;
      for (let i = 0; i < px.length; i += 4) sum = (sum * 31 + px[i]) >>> 0;
      window.pictures.add(sum);
    }
    v.requestVideoFrameCallback(count);
  };
  v.requestVideoFrameCallback(count);
  window.states = [];
  window.stop = await window.vmsPlayers.webrtc(v, {
    camera, stream: 'main', base: location.origin, mediaToken: async (action) => token,
    onState: (state) => window.states.push(state), onLatency: (s) => { window.latency = s; },
  });
  return true;
}"""

STATS = """async () => {
  const out = {};
  (await window.stop.pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp') out[s.kind] = {decoded: s.framesDecoded,
      lost: s.packetsLost, received: s.packetsReceived, codec: s.codecId};
    if (s.type === 'codec') out[s.id] = s.mimeType + ' ' + (s.sdpFmtpLine || '');
  });
  return out;
}"""


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Every codec object aiortc makes or uses on this process from now on."""
    import aiortc.rtcrtpreceiver
    from aiortc.codecs import g711

    seen: dict[str, list[Any]] = {"h264": [], "encoded": [], "decoders": [], "pcm": []}
    made = h264.H264Encoder.__init__

    def init(self: h264.H264Encoder) -> None:
        made(self)
        seen["h264"].append(self)

    monkeypatch.setattr(h264.H264Encoder, "__init__", init)
    monkeypatch.setattr(h264.H264Encoder, "_encode_frame",
                        lambda *a: seen["encoded"].append(a) or [])  # fmt: skip
    monkeypatch.setattr(g711.PcmEncoder, "encode", lambda *a: seen["pcm"].append(a) or ([], 0))
    decoder = aiortc.rtcrtpreceiver.get_decoder
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder",
                        lambda codec: seen["decoders"].append(codec) or decoder(codec))  # fmt: skip
    return seen


def test_chromium_plays_the_camera_through_whep_js(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vms.live.webrtc")
    seen = _spy(monkeypatch)  # Chromium is the only client: aiortc here is the server's
    token = site.media_token()
    with chromium() as browser:
        page = browser.new_page()
        page.route(f"{site.base}/test/page.html",
                   lambda route: route.fulfill(content_type="text/html", body=PAGE))  # fmt: skip
        page.route(f"{site.base}/test/whep.js",
                   lambda route: route.fulfill(content_type="text/javascript",
                                               body=(STATIC / "whep.js").read_text()))  # fmt: skip
        page.goto(f"{site.base}/test/page.html")
        page.add_script_tag(url=f"{site.base}/test/whep.js")
        assert page.evaluate(PLAY, ["cam1", token])
        page.wait_for_function("window.shown > 60 && window.pictures.size > 5", timeout=45_000)
        page.wait_for_function("window.latency !== undefined", timeout=10_000)
        assert page.evaluate("window.states") == ["connecting", "live"]
        # What the browser adds on loopback (jitter buffer, decoding, half the round trip).
        assert 0 < page.evaluate("window.latency") < 0.5
        stats = page.evaluate(STATS)
        assert stats["video"]["decoded"] > 60, stats
        assert stats["video"]["lost"] == 0, stats
        assert stats["audio"]["received"] > 0, stats  # the camera's G.711
        assert stats[stats["video"]["codec"]].startswith("video/H264"), stats
        assert len(site.server.webrtc) == 1
        page.evaluate("window.stop()")
        wait_for(lambda: len(site.server.webrtc) == 0, 10, "the session ended")
    assert "(the viewer ended it)" in caplog.text  # by its DELETE, before the peer closed
    # The camera's H.264 went out as it came: an H.264 "encoder" object was made for the RTP
    # packing but never opened a codec, nothing was encoded or decoded on the server.
    assert seen["h264"] and all(e.codec is None for e in seen["h264"])
    assert seen["encoded"] == [] and seen["pcm"] == [] and seen["decoders"] == []


# --- bad input, limits, the session's end -----------------------------------------------------


def _offer_sdp(audio: bool = True) -> str:
    """A real offer from aiortc (its peer closed at once: the session is only answered)."""

    async def make() -> str:
        pc = await _offer(audio)
        sdp = str(pc.localDescription.sdp)
        await pc.close()
        return sdp

    return asyncio.run(make())


def _post(site: Site, body: str | bytes, camera: str = "cam1", headers: dict[str, str] | None = None,
          **query: str) -> httpx.Response:  # fmt: skip
    sent = {"Content-Type": "application/sdp"} | (site.auth if headers is None else headers)
    return httpx.post(site.whep(camera, **query), content=body, headers=sent, timeout=30)


def test_a_malformed_offer_is_refused_with_a_message(site: Site) -> None:
    offer = _offer_sdp()
    cases = {
        "hello": "not an SDP offer",
        "v=0\r\nm=video not-a-port UDP/TLS/RTP/SAVPF 96\r\n": "malformed",
        offer.replace("m=video", "m=text"): "no video",
        offer.replace("a=recvonly", "a=sendonly"): "must be recvonly",
        "\r\n".join(ln for ln in offer.split("\r\n") if not ln.startswith("a=ice-ufrag")):
            "no ICE credentials",
        offer.replace("H264", "H263"): "no H.264",
    }  # fmt: skip
    for body, says in cases.items():
        r = _post(site, body)
        assert r.status_code == 400, (says, r.text)
        assert says in r.json()["message"], (says, r.json())
    r = _post(site, offer, headers={"Content-Type": "text/plain"} | site.auth)
    assert r.status_code == 400 and "application/sdp" in r.json()["message"]
    assert _post(site, b"v=0\xff\xfe").status_code == 400
    assert _post(site, "v=0\r\n" + "a=x\r\n" * 20_000).status_code == 413
    assert _post(site, offer, stream="side").status_code == 400
    assert _post(site, offer, colour="red").status_code == 400
    assert len(site.server.webrtc) == 0


def test_who_and_what_may_be_watched(site: Site) -> None:
    offer = _offer_sdp()
    assert _post(site, offer, headers={}).status_code == 401
    assert _post(site, offer, headers={}, token="not-a-token").status_code == 401
    playback = httpx.post(f"{site.base}/api/v1/auth/media-token", headers=site.auth,
                          json={"camera_id": "cam1", "action": "playback"})  # fmt: skip
    assert playback.status_code == 403  # a viewer: live only
    assert _post(site, offer, headers={}, token=site.media_token("hevc")).status_code == 401
    r = _post(site, offer, camera="unseen")
    assert r.status_code == 404 and "no camera" in r.json()["message"]
    r = _post(site, offer, stream="sub")
    assert r.status_code == 404 and "no sub stream" in r.json()["message"]
    r = _post(site, offer, camera="dark")
    assert r.status_code == 503 and "not running" in r.json()["message"]
    assert len(site.server.webrtc) == 0


def test_sessions_are_limited_and_end_on_delete(site: Site) -> None:
    offer = _offer_sdp(audio=False)
    before = site.server.audit.query(action="live", target="cam1", newest=True)
    resources = []
    for _ in range(MAX_SESSIONS):
        r = _post(site, offer)
        assert r.status_code == 201, r.text
        assert r.headers["cache-control"] == "no-store"
        assert "m=video" in r.text and "a=sendonly" in r.text and "a=candidate:" in r.text
        resources.append(r.headers["location"])
    assert len(site.server.webrtc) == MAX_SESSIONS
    r = _post(site, offer)
    assert r.status_code == 503 and "WebRTC viewers" in r.json()["message"]
    # Trickle ICE and ICE restarts are not taken: 405, as WHEP has it.
    assert httpx.patch(site.base + resources[0], content="a=x").status_code == 405
    # Only the user who opened a session ends it (the local key is no user).
    local_key = httpx.delete(site.base + resources[0].split("?")[0],
                             headers=local.headers(site.server.config.data_dir))  # fmt: skip
    assert local_key.status_code == 404
    # The resource URL carries its own token: DELETE needs nothing else.
    for n, resource in enumerate(resources, 1):
        assert httpx.delete(site.base + resource).status_code == 200
        assert len(site.server.webrtc) == MAX_SESSIONS - n
    assert httpx.delete(site.base + resources[0]).status_code == 404
    after = site.server.audit.query(action="live", target="cam1", newest=True)
    assert after and after[-1].details == {"protocol": "webrtc", "stream": "main"}
    assert after[-1].actor == "guard"
    assert len(after) <= len(before) + 1  # one entry a minute per caller, camera and stream


def test_rtp_time_follows_the_camera_and_stays_near_the_send_time() -> None:
    rtp = RtpClock(90_000, origin=100.0)
    # Live: the camera's 40 ms spacing, whatever the jitter of the send times.
    stamps = [rtp.stamp(3600 * i, 90_000, 100.0 + 0.04 * i + (0.01 if i % 2 else 0))
              for i in range(10)]  # fmt: skip
    assert [b - a for a, b in itertools.pairwise(stamps)] == [3600] * 9
    assert rtp.stamp(3600 * 9, 90_000, 100.5) == stamps[-1]  # a second slice of that picture
    # A backlog sent at once (a GOP handed over at the start): a tick apart past the slack,
    # then the live edge at the send time.
    rtp = RtpClock(90_000, origin=0.0)
    burst = [rtp.stamp(3600 * i, 90_000, 10.0) for i in range(25)]
    assert all(b > a for a, b in itertools.pairwise(burst))
    assert burst[-1] - burst[0] < 0.2 * 90_000
    assert abs(rtp.stamp(3600 * 25, 90_000, 10.04) - 10.04 * 90_000) <= 0.15 * 90_000
    # A camera that came back with new timestamps: forward from where it was.
    again = rtp.stamp(0, 90_000, 20.0)
    assert again == 20 * 90_000
    assert rtp.stamp(3600, 90_000, 20.04) == again + 3600


def test_a_viewer_resumes_when_its_camera_returns_and_ends_when_it_is_removed(site: Site) -> None:
    server = site.server
    headers = local.headers(server.config.data_dir)  # the local key: every camera
    cam = StandinCamera(width=160, height=128, keyint=10).start()
    port = cam.port
    back: list[StandinCamera] = []
    try:
        config = {"id": "flaky", "main": {"url": cam.url}, "record": "off"}
        relay = server.add_camera(CameraConfig.model_validate(config)).relay
        wait_for(lambda: relay.info is not None, 30, "the camera streaming")

        async def watch() -> None:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            told: list[dict[str, Any]] = []
            channel = pc.createDataChannel("vms")  # where the server says offline / online
            # (Its state messages, the stream sent, are not what this test is about.)
            channel.on("message", lambda text: told.append(json.loads(text))
                       if json.loads(text)["type"] != "state" else None)  # fmt: skip
            await pc.setLocalDescription(await pc.createOffer())
            frames = [0]

            async def consume(track: Any) -> None:
                while True:
                    await track.recv()
                    frames[0] += 1

            async def until(what: str, predicate: Any) -> None:
                await asyncio.to_thread(wait_for, predicate, 30, what)

            tasks = []
            pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
            async with httpx.AsyncClient() as http:
                r = await http.post(site.whep("flaky"), content=pc.localDescription.sdp,
                                    headers={"Content-Type": "application/sdp", **headers})  # fmt: skip
                assert r.status_code == 201, r.text
            await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
            await until("frames", lambda: frames[0] >= 10)
            await asyncio.to_thread(cam.stop)
            await until("the camera offline", lambda: relay.info is None)
            await until("the viewer told", lambda: told)
            assert told[0]["type"] == "offline" and told[0]["since"].endswith("Z")
            seen = frames[0]
            back.append(await asyncio.to_thread(StandinCamera(width=160, height=128, keyint=10,
                                                              port=port).start))  # fmt: skip
            await until("frames again", lambda: frames[0] >= seen + 10)
            assert told[1:] == [{"type": "online"}]
            assert len(server.webrtc) == 1  # the same session all along
            await asyncio.to_thread(server.remove_camera, "flaky")
            await until("the session ended", lambda: len(server.webrtc) == 0)
            await until("the peer told", lambda: pc.connectionState in ("closed", "failed"))
            for t in tasks:
                t.cancel()
            await pc.close()

        asyncio.run(watch())
    finally:
        cam.stop()
        for c in back:
            c.stop()


class _Session:
    """What a track asks of its session: the clock, and where to say what happened."""

    def __init__(self) -> None:
        self.t = 0.0
        self.said: list[str] = []

    def now(self) -> float:
        return self.t

    def ended(self, reason: str) -> None:
        self.said.append(reason)

    def stream_started(self) -> None:
        self.said.append("started")

    def stream_ended(self) -> None:
        self.said.append("ended")


def test_a_viewer_behind_skips_to_the_next_keyframe_but_a_start_s_backlog_is_sent() -> None:
    sps, pps = b"\x67\x42\xc0\x1f\x01", b"\x68\xce\x3c\x80"
    info = StreamInfo(VideoInfo(H264, 90_000, 320, 240, ParameterSets(H264, (sps,), (pps,))))
    relay = Relay()  # no loop: publishing hands items over at once
    session = _Session()

    def frame(n: int, arrival: float) -> Packet:
        key = n % 25 == 0
        data = length_prefix([(b"\x65" if key else b"\x41") + bytes([n])])
        return Packet(VIDEO, data, n * 3600, n * 3600, key, arrival)

    async def run() -> list[Any]:
        track = VideoPassthrough(session, relay, now=0.0)  # type: ignore[arg-type]
        relay.publish(StreamStart(info))
        for n in range(25):  # a GOP two seconds old when the viewer starts: sent, squeezed
            relay.publish(frame(n, n * 0.04))
        session.t = 3.0
        got = [await track.recv() for _ in range(25)]
        relay.publish(frame(25, 3.0))  # the live edge: caught up
        got.append(await track.recv())
        session.t = 5.0  # the sender fell 1.9 s behind: the rest of this GOP goes
        for n in range(26, 50):
            relay.publish(frame(n, 3.1 + (n - 26) * 0.04))
        relay.publish(frame(50, 4.96))
        got.append(await track.recv())
        track.stop()
        return [got, track.dropped, track.skips]

    got, dropped, skips = asyncio.run(run())
    assert len(got) == 27 and (dropped, skips) == (24, 1)
    assert bytes(got[-1]).endswith(b"\x65\x32")  # frame 50, a keyframe, is the next one sent
    # Every keyframe carries the stream's parameter sets, in Annex B form.
    assert bytes(got[0]).startswith(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps)
    stamps = [p.pts for p in got]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert stamps[24] - stamps[0] <= 0.15 * 90_000  # the backlog within the clock's slack
    assert session.said == ["started"]
