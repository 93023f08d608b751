"""Live view over MSE/WebSocket from a real RTSP camera (the stand-in) recorded by a real server
on a loopback port: a Python WebSocket client gets an init segment and fragments that PyAV
decodes; headless Chromium plays the player page; refusals come before the socket opens; a
camera that goes offline and comes back is told; viewers come and go while recording loses
nothing; a slow viewer skips to a keyframe and still decodes."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
import websockets
from websockets.sync.client import ClientConnection, connect

from tests.support.browser import chromium, served_app
from tests.support.polling import free_port, wait_for
from vms.auth.store import Grant
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.clock import SystemClock
from vms.config import StreamName, from_dict
from vms.health import CameraHealth
from vms.ingest.pyav_source import read_clip
from vms.live.mse import MseFeed
from vms.media import StreamEnd, StreamStart
from vms.recording import mp4
from vms.server import Server
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(
    not gstreamer_available(), reason="GStreamer RTSP server (Debian packages) not installed"
)
PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
INGEST = {"open_timeout_s": 5, "stall_timeout_s": 3, "backoff_initial_s": 0.2, "backoff_max_s": 0.5}
KEYINT = 25


@dataclass
class Site:
    base: str
    server: Server
    bearer: str  # the operator's access token (granted cam1 and flaky)
    flaky: StandinCamera  # flaky's camera: stopped and started by a test

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://")

    def media_token(self, camera: str, action: str = "live") -> str:
        r = httpx.post(f"{self.base}/api/v1/auth/media-token",
                       json={"camera_id": camera, "action": action},
                       headers={"Authorization": f"Bearer {self.bearer}"})  # fmt: skip
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def url(self, camera: str, token: str | None = None, **query: str) -> str:
        q = dict(query)
        if token is not None:
            q["token"] = token
        tail = "&".join(f"{k}={v}" for k, v in q.items())
        return f"{self.ws_base}/api/v1/cameras/{camera}/live.ws" + (f"?{tail}" if tail else "")

    def relay(self, camera: str, stream: StreamName = StreamName.MAIN) -> Relay:
        return self.server.camera(camera).streams[stream].relay


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("live-mse")
    (tmp / "r1").mkdir()
    steady = StandinCamera(width=320, height=240, keyint=KEYINT, bitrate_kbps=500)
    flaky = StandinCamera(width=160, height=120, keyint=KEYINT, bitrate_kbps=200,
                          port=free_port())  # fmt: skip
    with steady, flaky:
        cfg = from_dict({
            "data_dir": str(tmp / "data"),
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "r1"), "min_free_bytes": 0}]},
            "recording": {"segment_seconds": 4},
            "ingest": INGEST,
            "auth": FAST,
            "cameras": [
                {"id": "cam1", "name": "Steady", "main": {"url": steady.url},
                 "sub": {"url": steady.url}},
                {"id": "flaky", "main": {"url": flaky.url}},
                {"id": "other", "main": {"url": steady.url}},
            ],
        })  # fmt: skip
        with served_app(cfg) as (base, server):
            uid = server.auth.add_user("guard", PASSWORD, "operator").id
            server.auth.store.set_grants(uid, [Grant("cam1", None), Grant("flaky", None)])
            r = httpx.post(f"{base}/api/v1/auth/login",
                           json={"name": "guard", "password": PASSWORD})  # fmt: skip
            assert r.status_code == 200, r.text
            site = Site(base, server, str(r.json()["access_token"]), flaky)
            for cam in ("cam1", "flaky"):
                wait_for(lambda c=cam: site.relay(c).info is not None, 30, f"{cam} streaming")
            yield site


def read_until(ws: ClientConnection, want: str, timeout: float = 20) -> list[Any]:
    """Messages up to and including the first JSON message of type ``want``."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        m = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        got.append(m)
        if isinstance(m, str) and json.loads(m)["type"] == want:
            return got


def decode(data: bytes) -> list[Any]:
    with av.open(io.BytesIO(data)) as c:
        return [(f.pts, f.width, f.height) for f in c.decode(c.streams.video[0])]


def first_sync(fragment: bytes) -> bool:
    return mp4.parse_moof(fragment[: next(mp4.iter_boxes(fragment)).size]).keyframe


# --- a Python client --------------------------------------------------------------------------


def test_a_client_gets_an_init_segment_and_fragments_that_decode(site: Site) -> None:
    with connect(site.url("cam1", site.media_token("cam1"))) as ws:
        init = json.loads(ws.recv(timeout=20))
        assert init["type"] == "init" and init["stream"] == "main"
        assert (init["width"], init["height"]) == (320, 240)
        assert init["codecs"].startswith("avc1.") and init["mime"].startswith("video/mp4")
        segment = ws.recv(timeout=5)
        assert isinstance(segment, bytes) and segment[4:8] == b"ftyp"
        fragments = [ws.recv(timeout=5) for _ in range(40)]
    assert all(isinstance(f, bytes) and f[4:8] == b"moof" for f in fragments)
    # The current GOP came first: the first fragment starts at a keyframe, whenever one joins.
    assert first_sync(fragments[0])
    frames = decode(segment + b"".join(fragments))
    assert len(frames) >= 38
    assert {(w, h) for _, w, h in frames} == {(320, 240)}
    pts = [p for p, _, _ in frames]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)


def test_the_sub_stream_and_the_headers_of_an_api_client(site: Site) -> None:
    headers = {"Authorization": f"Bearer {site.bearer}"}
    with connect(site.url("cam1", stream="sub"), additional_headers=headers) as ws:
        init = json.loads(ws.recv(timeout=20))
        assert init["type"] == "init" and init["stream"] == "sub"
        assert isinstance(ws.recv(timeout=5), bytes)
        assert first_sync(ws.recv(timeout=5))


def refusal(url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(websockets.exceptions.InvalidStatus) as e:
        connect(url, **kw)
    r = e.value.response
    return r.status_code, json.loads(r.body or b"{}")


def test_refused_before_the_socket_opens(site: Site) -> None:
    token = site.media_token("cam1")
    assert refusal(site.url("cam1"))[0] == 401
    status, body = refusal(site.url("cam1", "not-a-token"))
    assert status == 401 and body["error"] == "unauthenticated"
    assert refusal(site.url("cam1", site.media_token("cam1", "playback")))[0] == 401
    assert refusal(site.url("flaky", token))[0] == 401  # a token for another camera
    bad = {"Authorization": "Bearer nope"}
    assert refusal(site.url("cam1"), additional_headers=bad)[0] == 401
    # A camera the user may not see is as unknown as one that does not exist.
    headers = {"Authorization": f"Bearer {site.bearer}"}
    assert refusal(site.url("other"), additional_headers=headers)[0] == 404
    assert refusal(site.url("nope"), additional_headers=headers)[0] == 404
    status, body = refusal(site.url("flaky", stream="sub"), additional_headers=headers)
    assert status == 404 and body["details"] == [{"field": "stream", "problem": "not configured"}]
    status, body = refusal(site.url("cam1", token, stream="third"))
    assert status == 400 and body["details"][0]["field"] == "stream"


def test_who_watched_which_camera_live_is_audited(site: Site) -> None:
    auth = site.server.auth
    uid = auth.add_user("watcher", PASSWORD, "viewer").id
    auth.store.set_grants(uid, [Grant("cam1", None)])
    r = httpx.post(f"{site.base}/api/v1/auth/login",
                   json={"name": "watcher", "password": PASSWORD})  # fmt: skip
    watcher = Site(site.base, site.server, str(r.json()["access_token"]), site.flaky)
    for _ in range(2):  # a player that reconnects at once: one entry a minute, not one each
        with connect(watcher.url("cam1", watcher.media_token("cam1"))) as ws:
            assert json.loads(ws.recv(timeout=20))["type"] == "init"
    (e,) = site.server.audit.query(actor="watcher", action="live", limit=10)
    assert (e.action, e.target, e.actor_ip) == ("live", "cam1", "127.0.0.1")
    assert e.details == {"protocol": "mse", "stream": "main"}


# --- cameras that come and go, viewers that come and go --------------------------------------


def test_a_camera_offline_while_watched_is_told_and_resumes(site: Site) -> None:
    with connect(site.url("flaky", site.media_token("flaky"))) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "init"
        site.flaky.stop()
        offline = json.loads(read_until(ws, "offline")[-1])
        assert offline["since"].endswith("Z")
        site.flaky.start()
        back = json.loads(read_until(ws, "init", timeout=30)[-1])
        assert back["stream"] == "main" and (back["width"], back["height"]) == (160, 120)
        segment = ws.recv(timeout=10)
        assert isinstance(segment, bytes) and segment[4:8] == b"ftyp"
        fragment = ws.recv(timeout=10)
        assert first_sync(fragment)
        assert decode(segment + fragment)


def test_a_camera_disabled_and_enabled_is_followed(site: Site) -> None:
    with connect(site.url("flaky", site.media_token("flaky"))) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "init"
        site.server.set_enabled("flaky", False)
        read_until(ws, "offline")
        site.server.set_enabled("flaky", True)
        read_until(ws, "init", timeout=30)
        assert isinstance(ws.recv(timeout=10), bytes)


async def _viewer(url: str, abort: bool) -> int:
    """One viewer: joins, reads its init and a few fragments, then leaves: politely, or by
    cutting the connection in the middle of a message."""
    async with websockets.connect(url, max_size=None) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "init"
        got = 0
        for _ in range(4):
            m = await asyncio.wait_for(ws.recv(), 10)
            got += isinstance(m, bytes)
        if abort:
            ws.transport.abort()  # no close handshake: the server finds out when it writes
    return got


def test_fifty_viewers_join_and_leave_while_recording_loses_nothing(site: Site) -> None:
    cam = site.server.camera("cam1")
    rec = cam.recorder
    assert rec is not None
    relay = site.relay("cam1")
    before = len(relay)
    dropped = rec.stats.frames_dropped
    written = rec.stats.frames_written
    start = time.monotonic()
    token = site.media_token("cam1")

    async def crowd() -> list[int]:
        return await asyncio.gather(
            *(_viewer(site.url("cam1", token), abort=i % 2 == 1) for i in range(50))
        )

    assert all(got >= 3 for got in asyncio.run(crowd()))
    wait_for(lambda: len(relay) == before, 20, "every viewer's subscription closed")
    elapsed = time.monotonic() - start
    wait_for(lambda: rec.stats.frames_written - written >= 25 * elapsed * 0.8, 20, "recording")
    assert rec.stats.frames_dropped == dropped
    assert rec.stats.frames_dropped_backlog == 0 and rec.stats.frames_lost_writing == 0
    assert cam.health.frames_discarded == 0


def test_a_viewer_gone_mid_message_is_unsubscribed(site: Site) -> None:
    relay = site.relay("cam1")
    before = len(relay)
    url = site.url("cam1", site.media_token("cam1"))
    raw = socket.create_connection(("127.0.0.1", int(site.base.rsplit(":", 1)[1])))
    path = url.split("/", 3)[3]
    raw.sendall(
        f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    raw.recv(100)  # a part of the first messages, no more
    wait_for(lambda: len(relay) == before + 1, 10, "the viewer subscribed")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()  # a reset, in the middle of a message
    wait_for(lambda: len(relay) == before, 20, "the subscription closed")


# --- a slow viewer, at the feed itself ---------------------------------------------------------


def test_a_slow_viewer_skips_to_a_keyframe_and_still_decodes(clips: dict[str, Path]) -> None:
    info, packets = read_clip(clips["h264"])  # 8 s, a keyframe a second
    assert sum(p.keyframe for p in packets) == 8

    async def body() -> list[bytes | str]:
        relay = Relay(asyncio.get_running_loop())
        pipeline = StreamPipeline("c", 0, CameraHealth("c", SystemClock()), relay)
        feed = MseFeed(lambda name: pipeline if name == "main" else None, "main", SystemClock(),
                       queue=30)  # fmt: skip
        messages = feed.messages()
        got: list[bytes | str] = []
        relay.publish(StreamStart(info))
        for p in packets[:10]:
            relay.publish(p)
        got += [await anext(messages) for _ in range(3)]  # init, init segment, a fragment
        # The viewer reads nothing while 4.4 s, then 3.2 s of video arrive: its queue of 30
        # packets overflows; what it gets after each burst starts at a keyframe.
        for p in packets[10:120]:
            relay.publish(p)
        await asyncio.sleep(0)  # the relay's drain
        while feed.queued:
            got.append(await asyncio.wait_for(anext(messages), 5))
        for p in packets[120:]:
            relay.publish(p)
        relay.publish(StreamEnd("camera lost"))
        while not (isinstance(got[-1], str) and json.loads(got[-1])["type"] == "offline"):
            got.append(await asyncio.wait_for(anext(messages), 5))
        await messages.aclose()
        assert len(relay) == 0 and feed.dropped > 0
        return got

    got = asyncio.run(body())
    binary = [m for m in got if isinstance(m, bytes)]
    moofs = [mp4.parse_moof(f) for f in binary[1:]]
    holes = [b.video_base - (a.video_base + a.video_duration) for a, b in itertools.pairwise(moofs)]
    assert all(h >= 0 for h in holes) and any(h > 0 for h in holes), holes
    assert all(m.keyframe for m, h in zip(moofs[1:], holes, strict=True) if h > 0)
    frames = decode(b"".join(binary))
    assert len(frames) == sum(m.samples for m in moofs) < len(packets)
    pts = [p for p, _, _ in frames]
    assert pts == sorted(pts)


# --- the player page -----------------------------------------------------------------------


def test_the_page_and_its_files(site: Site) -> None:
    with httpx.Client(base_url=site.base) as http:
        page = http.get("/live")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "media-src 'self' blob:" in csp and "script-src" not in csp
        assert "frame-ancestors 'none'" in csp and page.headers["x-frame-options"] == "DENY"
        js = http.get("/live/static/mse.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        for bad in ["../pages.py", "..%2Fmse.py", "player.html", "mse.js%00", "%2e%2e/fmp4.py",
                    "MSE.JS", "nope.js", "vendor/x.js", "..%2F..%2Fapi%2Fpages.py"]:  # fmt: skip
            r = http.get(f"/live/static/{bad}")
            assert r.status_code == 404, bad


def test_chromium_plays_live_over_mse(site: Site) -> None:
    with chromium() as browser:
        page = browser.new_page()
        problems: list[str] = []
        missing: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto(f"{site.base}/live?token={site.bearer}&camera=cam1&protocol=mse")
        page.wait_for_function("() => window.vmsLive && window.vmsLive.state === 'live'",
                               timeout=30_000)  # fmt: skip
        page.wait_for_function("() => window.vmsLive.frames > 10", timeout=30_000)
        snap = """() => {
            const v = document.getElementById('video');
            const c = document.createElement('canvas');
            c.width = v.videoWidth; c.height = v.videoHeight;
            const g = c.getContext('2d');
            g.drawImage(v, 0, 0);
            return Array.from(g.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 97 == 0));
        }"""
        first = page.evaluate(snap)
        frames = page.evaluate("window.vmsLive.frames")
        page.wait_for_function(f"() => window.vmsLive.frames > {frames + 10}", timeout=30_000)
        assert page.evaluate(snap) != first, "the picture changes"
        # It plays near the live edge (not through the GOP it was given first), and says so.
        page.wait_for_function(
            "() => window.vmsLive.latency !== null && window.vmsLive.latency < 0.5",
            timeout=30_000,
        )
        assert page.inner_text("#latency").endswith(" ms")
        assert page.evaluate("document.getElementById('video').videoWidth") == 320
        # Only protocol modules not installed (yet) may be missing; no other error (a CSP
        # refusal would be one).
        modules = {f"{site.base}/live/static/{m}" for m in ("whep.js", "llhls.js")}
        assert set(missing) <= modules, missing
        tolerated = ("Failed to load resource", "Refused to execute script")
        assert all(p.startswith(tolerated) for p in problems), problems


def test_chromium_logs_in_and_follows_a_camera_offline_and_back(site: Site) -> None:
    state = "() => window.vmsLive && window.vmsLive.state"
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{site.base}/live?camera=flaky&protocol=mse")
        page.fill("input[name=name]", "guard")
        page.fill("input[name=password]", PASSWORD)
        page.click("#login button")
        page.wait_for_function(f"{state} === 'live'", timeout=30_000)
        options = page.eval_on_selector_all("#camera option", "os => os.map(o => o.value)")
        assert sorted(options) == ["cam1", "flaky"]  # only what the user may see
        site.server.set_enabled("flaky", False)
        page.wait_for_function(f"{state} === 'offline'", timeout=30_000)
        assert "offline since" in page.inner_text("#state")
        site.server.set_enabled("flaky", True)
        page.wait_for_function(f"{state} === 'live'", timeout=30_000)
        frames = page.evaluate("window.vmsLive.frames")
        page.wait_for_function(f"() => window.vmsLive.frames > {frames + 5}", timeout=30_000)
