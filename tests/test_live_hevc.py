"""H.265 cameras and audio a transport cannot carry, for browsers: real stand-in RTSP cameras (one
H.265 with AAC, one H.264 with G.711 µ-law) served by the app. aiortc as a WHEP client gets
H.264 (the shared transcode) and, with ``live.transcode_audio``, Opus; hls.js in Chromium plays
the H.265 camera's multivariant playlist through its H.264 variant; an MSE viewer of the G.711
camera gets AAC. Every rendition stops once no one watches."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import av
import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.sync.client import connect

from tests.support.browser import chromium, served_app
from tests.support.polling import wait_for
from vms.api.live_hls import live_of
from vms.auth import local
from vms.auth.store import Grant
from vms.config import StreamName, from_dict
from vms.live import transcode
from vms.live.audio import AudioTranscoder
from vms.live.transcode import Transcoder
from vms.playback import fragments
from vms.server import Server
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(
    not gstreamer_available(), reason="GStreamer RTSP server (Debian packages) not installed"
)
WIDTH, HEIGHT = 320, 240
PASSWORD = "a long enough password"


class Site:
    def __init__(self, base: str, server: Server, bearer: str) -> None:
        self.base, self.server, self.bearer = base, server, bearer

    def media_token(self, camera: str) -> str:
        r = httpx.post(f"{self.base}/api/v1/auth/media-token",
                       json={"camera_id": camera, "action": "live"},
                       headers={"Authorization": f"Bearer {self.bearer}"})  # fmt: skip
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    @property
    def admin(self) -> dict[str, str]:
        return local.headers(self.server.config.data_dir)

    def url(self, camera: str, path: str) -> str:
        return f"{self.base}/api/v1/cameras/{camera}/{path}"

    def renditions(self) -> list[Any]:
        return self.server.live_sources.running()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("hevc")
    (tmp / "root").mkdir()
    with (
        StandinCamera(width=WIDTH, height=HEIGHT, keyint=25, bitrate_kbps=300, codec="h265",
                      audio="aac") as hevc,
        StandinCamera(width=160, height=128, keyint=25, bitrate_kbps=150, audio="pcmu") as g711,
    ):  # fmt: skip
        cfg = from_dict({
            "data_dir": str(tmp / "data"),
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "root"), "min_free_bytes": 0}]},
            "live": {"transcode_audio": True},
            "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1},
            "ingest": {"open_timeout_s": 5, "backoff_initial_s": 0.2, "backoff_max_s": 1},
            "cameras": [{"id": "hevc", "main": {"url": hevc.url}, "record": "off"},
                        {"id": "g711", "main": {"url": g711.url}, "record": "off"}],
        })  # fmt: skip
        with served_app(cfg) as (base, server):
            uid = server.auth.add_user("guard", PASSWORD, "viewer").id
            server.auth.store.set_grants(uid, [Grant("hevc", None), Grant("g711", None)])
            r = httpx.post(f"{base}/api/v1/auth/login",
                           json={"name": "guard", "password": PASSWORD})  # fmt: skip
            assert r.status_code == 200, r.text
            for c in ("hevc", "g711"):
                relay = server.camera(c).relay
                wait_for(lambda r=relay: r.info is not None and r.info.audio is not None, 30,
                         f"{c} streaming")  # fmt: skip
            yield Site(base, server, str(r.json()["access_token"]))


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renditions stop half a second after their last viewer (not ten)."""
    monkeypatch.setattr(transcode, "LINGER_S", 0.5)


def _no_audio_transcoding(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    live = site.server.config.live.model_copy(update={"transcode_audio": False})
    monkeypatch.setattr(site.server, "config", site.server.config.model_copy(update={"live": live}))
    monkeypatch.setattr(site.server.webrtc, "config", live)


# --- WebRTC (aiortc as the WHEP client) -------------------------------------------------------


async def _whep(site: Site, camera: str, frames: int, audio: int) -> dict[str, Any]:
    """Watch ``camera`` until ``frames`` video frames (and ``audio`` audio frames) are decoded."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    got: dict[str, Any] = {"video": [], "audio": []}
    done = asyncio.Event()

    async def consume(track: Any) -> None:
        while True:
            frame = await track.recv()
            if track.kind == "audio":
                peak = int(abs(frame.to_ndarray().astype("int32")).max())
                got["audio"].append((frame.sample_rate, peak))
            else:
                got["video"].append(frame.to_ndarray(format="gray").tobytes())
                got["size"] = (frame.width, frame.height)
            if len(got["video"]) >= frames and len(got["audio"]) >= audio:
                done.set()

    tasks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    async with httpx.AsyncClient(headers=site.admin, timeout=30) as http:
        r = await http.post(site.url(camera, "whep"), content=pc.localDescription.sdp,
                            headers={"Content-Type": "application/sdp"})  # fmt: skip
        assert r.status_code == 201, r.text
        got["answer"] = r.text
        await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
        try:
            await asyncio.wait_for(done.wait(), 45)
            got["renditions"] = site.renditions()
        finally:
            got["delete"] = (await http.delete(site.base + r.headers["location"])).status_code
            for t in tasks:
                t.cancel()
            await pc.close()
    return got


def _section(sdp: str, kind: str) -> str:
    return next(s for s in sdp.split("m=")[1:] if s.startswith(kind))


def test_whep_of_an_hevc_camera_gets_h264_and_its_aac_as_opus(site: Site, quick: None) -> None:
    got = asyncio.run(_whep(site, "hevc", frames=40, audio=25))
    video, audio = _section(got["answer"], "video"), _section(got["answer"], "audio")
    assert "H264/90000" in video and "H265" not in video
    assert "opus/48000" in audio and "a=sendonly" in audio
    assert got["size"] == (WIDTH, HEIGHT)  # decoded by aiortc's H.264 decoder
    assert len(set(got["video"])) > 10  # the picture changes (the ball moves)
    assert {rate for rate, _ in got["audio"]} == {48_000}  # Opus, decoded
    assert max(peak for _, peak in got["audio"]) > 1000  # the camera's tone, not silence
    kinds = {type(r) for r in got["renditions"]}
    assert kinds == {Transcoder, AudioTranscoder}  # the two, chained, while it played
    assert got["delete"] == 200
    wait_for(lambda: not site.renditions(), 10, "the renditions stopped after the session")


def test_without_transcode_audio_the_answer_has_no_audio_and_video_plays(
    site: Site, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_audio_transcoding(site, monkeypatch)
    got = asyncio.run(_whep(site, "hevc", frames=25, audio=0))
    audio = _section(got["answer"], "audio")
    assert "a=sendonly" not in audio and "a=sendrecv" not in audio  # nothing is sent
    assert got["audio"] == [] and len(got["video"]) >= 25
    assert {type(r) for r in got["renditions"]} == {Transcoder}
    wait_for(lambda: not site.renditions(), 10, "the transcode stopped after the session")


# --- LL-HLS: hls.js in Chromium on the multivariant playlist ---------------------------------

PAGE = "<!doctype html><html><body><video id=v muted playsinline></video></body></html>"
PLAY = """async ([camera, bearer, token]) => {
  const video = document.getElementById('v');
  window.frames_ = 0;
  const count = () => { window.frames_++; video.requestVideoFrameCallback(count); };
  video.requestVideoFrameCallback(count);
  window.states_ = [];
  window.stop_ = await window.vmsPlayers.llhls(video, {
    camera, stream: 'main', base: '', token: bearer, mediaToken: async () => token,
    onState: (s, d) => window.states_.push(d ? `${s}: ${d}` : s),
  });
  return true;
}"""


def test_hls_js_in_chromium_plays_an_hevc_camera_through_its_h264_variant(
    site: Site, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_of(site.server).streams, "idle_s", 2.0)
    r = httpx.get(site.url("hevc", "live/master.m3u8"), headers=site.admin, timeout=30)
    assert r.status_code == 200, r.text
    assert not site.renditions(), "listing the H.264 variant starts nothing"
    lines = r.text.splitlines()
    infs = [x for x in lines if x.startswith("#EXT-X-STREAM-INF:")]
    uris = [x for x in lines if x.startswith("../live.m3u8")]
    assert len(infs) == len(uris) == 2, r.text
    native, h264 = (re.search(r'CODECS="([^"]+)"', x)[1] for x in infs)  # type: ignore[index]
    assert re.fullmatch(r"(hvc1|hev1)\.[^,]+,mp4a\.40\.2", native), native
    assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", h264), h264
    assert all(f"RESOLUTION={WIDTH}x{HEIGHT}" in x for x in infs)
    assert "codec=" not in uris[0] and "stream=main&codec=h264" in uris[1]
    # The H.264 variant's init segment says what the master said.
    variant = httpx.get(f"{site.base}/api/v1/cameras/hevc/live/{uris[1]}", headers=site.admin,
                        timeout=30)  # fmt: skip
    assert variant.status_code == 200, variant.text
    init_uri = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', variant.text)[-1]
    assert "codec=h264" in init_uri
    init = httpx.get(f"{site.base}/api/v1/cameras/hevc/{init_uri}", headers=site.admin)
    assert ",".join(fragments.codecs(init.content)) == h264
    assert [type(x) for x in site.renditions()] == [Transcoder]

    with chromium() as browser:
        page = browser.new_page()
        page.route(f"{site.base}/test/page.html",
                   lambda route: route.fulfill(content_type="text/html", body=PAGE))  # fmt: skip
        page.goto(f"{site.base}/test/page.html")
        page.add_script_tag(url=f"{site.base}/live/static/llhls.js")
        assert page.evaluate(PLAY, ["hevc", site.bearer, site.media_token("hevc")])
        page.wait_for_function("window.frames_ >= 25", timeout=30_000)
        stats = page.evaluate("window.stop_.stats()")
        assert page.evaluate("document.getElementById('v').videoWidth") == WIDTH
        assert page.evaluate("document.getElementById('v').webkitAudioDecodedByteCount") > 0
        assert page.evaluate("window.states_") == ["connecting", "live"]
        page.evaluate("window.stop_()")
    assert stats["stream"] == "main"
    # hls.js dropped the H.265 variant (Chromium decodes no HEVC) and played the H.264 one.
    relay = site.server.camera("hevc").relay
    streams = live_of(site.server).streams
    assert streams.running(("hevc", StreamName.MAIN, "h264"), relay, touch=False) is not None
    assert streams.running(("hevc", StreamName.MAIN), relay, touch=False) is None
    # Nobody fetches any more: the segmenter stops, then the transcode.
    wait_for(lambda: not site.renditions(), 30, "the H.264 rendition stopped")
    assert streams.running(("hevc", StreamName.MAIN, "h264"), relay, touch=False) is None


# --- MSE: G.711 as AAC --------------------------------------------------------------------------


def _mse(site: Site, camera: str, messages: int) -> tuple[list[dict[str, Any]], bytes]:
    url = site.url(camera, "live.ws").replace("http://", "ws://")
    said: list[dict[str, Any]] = []
    data = b""
    with connect(url, additional_headers=site.admin) as ws:
        for _ in range(messages):
            m = ws.recv(timeout=30)
            if isinstance(m, str):
                said.append(json.loads(m))
            else:
                data += m
    return said, data


def test_mse_of_a_g711_camera_gets_aac_when_asked_and_is_told_otherwise(
    site: Site, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    said, data = _mse(site, "g711", 80)
    init = said[0]
    assert init["type"] == "init" and init["codecs"].startswith("avc1.")
    assert init["codecs"].endswith(",mp4a.40.2"), init  # the init segment has the AAC track
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.sample_rate == 8000
        audio = [p for p in c.demux(stream) if p.size]
    assert len(audio) >= 5  # ~8 AAC frames a second at 8 kHz, among ~2 s of fragments
    with av.open(io.BytesIO(data)) as c:
        assert sum(f.samples for p in c.demux(audio=0) for f in p.decode()) >= 5 * 1024
    wait_for(lambda: not site.renditions(), 10, "the audio transcode stopped")

    _no_audio_transcoding(site, monkeypatch)
    said, data = _mse(site, "g711", 10)
    assert said[0]["type"] == "audio" and said[0]["played"] is False, said
    assert "G.711" in said[0]["message"] and "transcode_audio" in said[0]["message"]
    assert said[1]["type"] == "init" and "mp4a" not in said[1]["codecs"]
    assert not site.renditions()
