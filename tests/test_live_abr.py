"""A camera's main and sub streams as renditions of live view: a viewer over MSE or WebRTC is
switched between them at a keyframe, on one timeline, without a black frame; the player in
Chromium chooses by the tile's size; the STUN and TURN servers reach the browser.

A real camera (two stand-in RTSP servers: main 1280x720, sub 320x240) feeds a real server on a
loopback port; a Python WebSocket client, an aiortc WHEP client and headless Chromium watch.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.sync.client import ClientConnection, connect

from tests.support.browser import chromium, served_app
from tests.support.polling import free_port, wait_for
from tests.support.stun import stun_server
from vms.auth.rbac import Action, Scope
from vms.auth.store import Grant
from vms.cameras.pipeline import StreamPipeline
from vms.cameras.relay import Relay
from vms.clock import SystemClock
from vms.config import StreamName, from_dict
from vms.errors import VmsError
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
TURN_USER, TURN_SECRET = "viewer", 'a "TURN" secret\\'
MAIN, SUB = (1280, 720), (320, 240)


@dataclass
class Site:
    base: str
    server: Server
    bearer: str  # a viewer granted cam1 and solo
    uid: int  # theirs
    stun: str
    turn: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer}"}

    def media_token(self, camera: str = "cam1") -> str:
        r = httpx.post(f"{self.base}/api/v1/auth/media-token", headers=self.auth,
                       json={"camera_id": camera, "action": "live"})  # fmt: skip
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    def ws(self, camera: str = "cam1", **query: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in {"token": self.media_token(camera), **query}.items())
        return f"{self.base.replace('http://', 'ws://')}/api/v1/cameras/{camera}/live.ws?{q}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("live-abr")
    (tmp / "r1").mkdir()
    turn = f"turn:127.0.0.1:{free_port()}?transport=tcp"  # refused at once: nothing to wait
    with (
        StandinCamera(width=MAIN[0], height=MAIN[1], keyint=25, bitrate_kbps=1500) as main,
        StandinCamera(width=SUB[0], height=SUB[1], keyint=25, bitrate_kbps=300) as sub,
        stun_server() as stun_port,
    ):
        stun = f"stun:127.0.0.1:{stun_port}"
        cfg = from_dict({
            "data_dir": str(tmp / "data"),
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "r1"), "min_free_bytes": 0}]},
            "auth": FAST,
            "ingest": {"open_timeout_s": 5, "stall_timeout_s": 5, "backoff_initial_s": 0.2,
                       "backoff_max_s": 1},
            "live": {"stun_servers": [stun],
                     "turn_servers": [{"url": turn, "username": TURN_USER,
                                       "credential": TURN_SECRET}]},
            "cameras": [
                {"id": "cam1", "main": {"url": main.url}, "sub": {"url": sub.url},
                 "record": "off"},
                {"id": "solo", "main": {"url": sub.url}, "record": "off"},
                {"id": "hidden", "main": {"url": sub.url}, "record": "off"},
                # H.265 both: a browser gets each through its own shared transcode.
                {"id": "hevc", "main": {"url": clips["hevc"].as_uri()},
                 "sub": {"url": clips["hevc"].as_uri()}, "record": "off"},
            ],
        })  # fmt: skip
        with served_app(cfg) as (base, server):
            uid = server.auth.add_user("guard", PASSWORD, "viewer").id
            grants = [Grant(c, None) for c in ("cam1", "solo", "hevc")]
            server.auth.store.set_grants(uid, grants)
            r = httpx.post(f"{base}/api/v1/auth/login",
                           json={"name": "guard", "password": PASSWORD})  # fmt: skip
            assert r.status_code == 200, r.text
            for cam, stream in [("cam1", StreamName.MAIN), ("cam1", StreamName.SUB),
                                ("solo", StreamName.MAIN), ("hevc", StreamName.SUB)]:  # fmt: skip
                relay = server.camera(cam).streams[stream].relay
                wait_for(lambda r=relay: r.info is not None, 30, f"{cam} {stream} streaming")
            yield Site(base, server, str(r.json()["access_token"]), uid, stun, turn)


# --- MSE: a Python WebSocket client -----------------------------------------------------------


def _json(m: Any) -> dict[str, Any] | None:
    return json.loads(m) if isinstance(m, str) else None


def _until_init(ws: ClientConnection, timeout: float = 15) -> tuple[list[Any], dict[str, Any]]:
    """The messages before the next init message, and that init."""
    before: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        m = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        msg = _json(m)
        if msg is not None and msg["type"] == "init":
            return before, msg
        before.append(m)


def _moof(fragment: bytes) -> mp4.FragmentInfo:
    return mp4.parse_moof(fragment[: next(mp4.iter_boxes(fragment)).size])


def _frames(data: bytes) -> set[tuple[int, int]]:
    with av.open(io.BytesIO(data)) as c:
        return {(f.width, f.height) for f in c.decode(c.streams.video[0])}


def test_mse_switches_to_sub_and_back_at_keyframes_on_one_timeline(site: Site) -> None:
    runs: list[tuple[dict[str, Any], bytes, list[bytes]]] = []  # (init, segment, fragments)
    told: list[dict[str, Any]] = []
    with connect(site.ws("cam1")) as ws:
        init = json.loads(ws.recv(timeout=20))
        assert init["type"] == "init" and init["stream"] == "main" and "switch" not in init
        assert init["streams"] == {"main": list(MAIN), "sub": list(SUB)}
        runs.append((init, ws.recv(timeout=5), [ws.recv(timeout=5) for _ in range(10)]))
        for stream in ("sub", "main"):
            ws.send(json.dumps({"type": "select", "stream": stream}))
            before, init = _until_init(ws)
            told += [m for m in map(_json, before) if m is not None]
            # Until the switch, the old stream's fragments kept coming.
            runs[-1][2].extend(m for m in before if isinstance(m, bytes))
            runs.append((init, ws.recv(timeout=5), [ws.recv(timeout=5) for _ in range(30)]))
    assert told == [
        {"type": "state", "stream": "main", "switching": "sub", "streams": init["streams"]},
        {"type": "state", "stream": "sub", "streams": init["streams"]},
        {"type": "state", "stream": "sub", "switching": "main", "streams": init["streams"]},
        {"type": "state", "stream": "main", "streams": init["streams"]},
    ]
    assert [(i["stream"], i.get("switch"), (i["width"], i["height"])) for i, _, _ in runs] == [
        ("main", None, MAIN), ("sub", True, SUB), ("main", True, MAIN)
    ]  # fmt: skip
    for init, segment, fragments in runs:
        assert segment[4:8] == b"ftyp" and all(f[4:8] == b"moof" for f in fragments)
        assert _moof(fragments[0]).keyframe  # each stream starts at a keyframe
        assert _frames(segment + b"".join(fragments)) == {(init["width"], init["height"])}
    # One timeline: each stream's first fragment starts where the last one ended, exactly;
    # decode times never go back.
    moofs = [[_moof(f) for f in fragments] for _, _, fragments in runs]
    for old, new in itertools.pairwise(moofs):
        assert new[0].video_base == old[-1].video_base + old[-1].video_duration
    bases = [m.video_base for m in itertools.chain(*moofs)]
    assert all(b > a for a, b in itertools.pairwise(bases)), bases


def _switched_to_sub(url: str) -> tuple[dict[str, Any], dict[str, Any], list[mp4.FragmentInfo]]:
    """The first init, the one after a select of sub, and the fragments of both."""
    with connect(url) as ws:
        first = json.loads(ws.recv(timeout=30))
        assert first["type"] == "init", first
        moofs = [_moof(m) for m in [ws.recv(timeout=30) for _ in range(6)][1:]]
        ws.send(json.dumps({"type": "select", "stream": "sub"}))
        before, init = _until_init(ws, timeout=30)
        moofs += [_moof(m) for m in before if isinstance(m, bytes)]
        switched = len(moofs)
        assert ws.recv(timeout=30)[4:8] == b"ftyp"
        moofs += [_moof(ws.recv(timeout=30)) for _ in range(5)]
    assert moofs[switched].keyframe
    bases = [m.video_base for m in moofs]
    assert all(b > a for a, b in itertools.pairwise(bases)), bases
    return first, init, moofs


def test_mse_switches_the_streams_of_an_hevc_camera_transcoded_or_not(site: Site) -> None:
    url = site.ws("hevc")
    first, init, _ = _switched_to_sub(url)
    # Each stream through its own shared transcode: H.264 before and after.
    assert first["codecs"].startswith("avc1.") and init["codecs"].startswith("avc1."), init
    assert init["switch"] and init["stream"] == "sub"
    transcoders = site.server.live_sources._transcoders
    assert {key for key, tc in transcoders.items() if tc.running} >= {("hevc", "main"),
                                                                       ("hevc", "sub")}
    # A player that decodes H.265 (hevc=true) switches what the camera sends.
    first, init, _ = _switched_to_sub(site.ws("hevc", hevc="true"))
    assert first["codecs"].startswith(("hvc1.", "hev1.")), first
    assert init["codecs"].startswith(("hvc1.", "hev1.")) and init["switch"], init


def test_mse_refuses_a_stream_the_camera_lacks_and_goes_on(site: Site) -> None:
    with connect(site.ws("solo")) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "init"
        for sent, says in [
            ({"type": "select", "stream": "sub"}, "has no sub stream"),
            ({"type": "select", "stream": "third"}, "no stream 'third'"),
            ({"type": "play"}, "expected"),
            ("not json", "expected"),
        ]:
            ws.send(sent if isinstance(sent, str) else json.dumps(sent))
            errors = []
            while not errors:
                msg = _json(ws.recv(timeout=10))
                if msg is not None:
                    assert msg["type"] == "error", msg
                    errors.append(msg)
            assert says in errors[0]["message"], errors
        # Selecting the stream it is on: told so; the feed goes on.
        ws.send(json.dumps({"type": "select", "stream": "main"}))
        got = [ws.recv(timeout=10) for _ in range(10)]
    states = [m for m in map(_json, got) if m is not None]
    assert states == [{"type": "state", "stream": "main", "streams": {"main": list(SUB)}}]
    assert sum(isinstance(m, bytes) for m in got) == 9


# --- WebRTC: aiortc as the WHEP client -------------------------------------------------------


def test_webrtc_switches_to_sub_on_the_data_channel(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def watch() -> tuple[httpx.Response, list[tuple[int, int]], list[dict[str, Any]]]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        channel = pc.createDataChannel("vms")
        told: list[dict[str, Any]] = []
        channel.on("message", lambda text: told.append(json.loads(text)))
        await pc.setLocalDescription(await pc.createOffer())
        sizes: list[tuple[int, int]] = []

        async def consume(track: Any) -> None:
            while True:
                frame = await track.recv()
                sizes.append((frame.width, frame.height))

        async def until(what: str, predicate: Any) -> None:
            await asyncio.to_thread(wait_for, predicate, 30, what)

        tasks = []
        pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{site.base}/api/v1/cameras/cam1/whep", content=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp", **site.auth}, timeout=30,
            )  # fmt: skip
            assert r.status_code == 201, r.text
            await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
            try:
                await until("main's frames", lambda: sizes.count(MAIN) >= 5)
                await until("the channel open", lambda: channel.readyState == "open" and told)
                channel.send(json.dumps({"type": "select", "stream": "sub"}))
                await until("sub's frames", lambda: sizes[-5:] == [SUB] * 5)
                channel.send(json.dumps({"type": "select", "stream": "third"}))
                await until("the refusal", lambda: told[-1]["type"] == "error")
            finally:
                await http.delete(site.base + r.headers["location"])
                for t in tasks:
                    t.cancel()
                await pc.close()
        return r, sizes, told

    r, sizes, told = asyncio.run(watch())
    # The picture changed size once, from main's to sub's: no frame of another size between.
    assert [k for k, _ in itertools.groupby(sizes)] == [MAIN, SUB]
    streams = {"main": list(MAIN), "sub": list(SUB)}
    assert told == [
        {"type": "state", "stream": "main", "streams": streams},
        {"type": "state", "stream": "main", "switching": "sub", "streams": streams},
        {"type": "state", "stream": "sub", "streams": streams},
        {"type": "error", "message": "no stream 'third': main or sub", "stream": "third"},
    ]
    # The answer names the STUN and TURN servers (RFC 9725 §4.6), TURN with its credentials.
    assert r.headers.get_list("link") == [
        f'<{site.stun}>; rel="ice-server"',
        f'<{site.turn}>; rel="ice-server"; username="{TURN_USER}"; '
        'credential="a \\"TURN\\" secret\\\\"; credential-type="password"',
    ]
    assert r.headers["cache-control"] == "no-store"
    assert TURN_SECRET not in caplog.text and "TURN" + '\\" secret' not in caplog.text
    assert "switched to the sub stream" in caplog.text


# --- the ICE servers route -------------------------------------------------------------------


def test_the_ice_servers_go_to_viewers_only(site: Site) -> None:
    url = f"{site.base}/api/v1/live/ice-servers"
    want = {"ice_servers": [
        {"urls": [site.stun], "username": None, "credential": None},
        {"urls": [site.turn], "username": TURN_USER, "credential": TURN_SECRET},
    ]}  # fmt: skip
    r = httpx.get(url, headers=site.auth)
    assert r.status_code == 200 and r.json() == want
    assert r.headers["cache-control"] == "no-store"
    # A player without headers: its media token, with the camera it is for.
    token = site.media_token("cam1")
    assert httpx.get(url, params={"token": token, "camera_id": "cam1"}).json() == want
    for params in [{}, {"token": token}, {"token": token, "camera_id": "solo"},
                   {"token": "nope", "camera_id": "cam1"}]:  # fmt: skip
        r = httpx.get(url, params=params)
        assert r.status_code == 401, (params, r.text)
        assert TURN_SECRET not in r.text
    # A camera the user may not watch is no camera at all.
    r = httpx.get(url, params={"token": token, "camera_id": "hidden"})
    assert r.status_code == 401
    # A credential without live: no TURN credentials.
    scope = Scope(frozenset({Action.VIEW}), frozenset({"cam1"}))
    key, _ = site.server.auth.new_api_key(site.uid, "no live", scope)
    r = httpx.get(url, headers={"X-API-Key": key})
    assert r.status_code == 403 and TURN_SECRET not in r.text


@pytest.mark.parametrize(
    ("live", "field"),
    [
        ({"stun_servers": ["stun:h>x"]}, "live.stun_servers[0]"),
        ({"turn_servers": [{"url": 'turn:h"x'}]}, "live.turn_servers[0].url"),
        ({"turn_servers": [{"url": "turn:h", "username": "\u00e9"}]}, "username"),
        ({"turn_servers": [{"url": "turn:h", "credential": "s3cret\r\nLink: x"}]}, "credential"),
    ],
)
def test_ice_servers_a_link_header_cannot_carry_are_refused(live: Any, field: str) -> None:
    with pytest.raises(VmsError) as e:
        from_dict({"live": live})
    assert field in e.value.message
    assert "s3cret" not in e.value.message


# --- the player in Chromium ------------------------------------------------------------------

# From a moment on: every frame presented, the longest wait between two (a stall), and the
# times the element was emptied (a new MediaSource: a black picture until the next frame).
WATCH = """() => {
  const v = document.getElementById('video');
  window.watch = {frames: 0, gap: 0, last: performance.now(), emptied: 0, src: v.src};
  v.addEventListener('emptied', () => window.watch.emptied++);
  const tick = (now) => {
    const w = window.watch;
    w.gap = Math.max(w.gap, now - w.last);
    w.last = now;
    w.frames++;
    v.requestVideoFrameCallback(tick);
  };
  v.requestVideoFrameCallback(tick);
}"""


def test_the_player_chooses_sub_for_a_small_tile_and_main_for_a_big_one(site: Site) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 320, "height": 700})
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{site.base}/live?token={site.bearer}&camera=cam1&protocol=mse")
        assert page.input_value("#stream") == "auto"
        # A tile some 300 px wide: sub, whose picture is as good there.
        page.wait_for_function("() => window.vmsLive.stream === 'sub'", timeout=30_000)
        page.wait_for_function(
            "() => document.getElementById('video').videoWidth === 320 && window.vmsLive.frames > 10",
            timeout=30_000,
        )  # fmt: skip
        assert page.get_attribute("#video", "data-stream") == "sub"
        assert page.inner_text("#rendition") == "sub (auto)"
        page.evaluate(WATCH)
        # A big tile: main again, once the choice is 5 s old; frames go on across the switch.
        page.set_viewport_size({"width": 1400, "height": 900})
        page.wait_for_function("() => window.vmsLive.stream === 'main'", timeout=30_000)
        page.wait_for_function(
            "() => document.getElementById('video').videoWidth === 1280", timeout=30_000
        )
        frames = page.evaluate("window.watch.frames")
        page.wait_for_function(f"() => window.watch.frames > {frames + 15}", timeout=30_000)
        watch = page.evaluate("window.watch")
        assert watch["gap"] < 1000, watch  # no stall: the old stream played until the switch
        # The same MediaSource all along: no black picture in between.
        assert watch["emptied"] == 0 and page.evaluate("document.getElementById('video').src") \
            == watch["src"], watch
        assert page.evaluate("window.vmsLive.state") == "live"
        # A choice by hand stays (no reconnection: the same WebSocket switches).
        page.select_option("#stream", "sub")
        page.wait_for_function(
            "() => document.getElementById('video').videoWidth === 320", timeout=30_000
        )
        assert page.inner_text("#rendition") == "sub"
    assert problems == []


RULE = """() => {
  const c = window.vmsAbr.chooser();
  const both = {main: true, sub: true};
  const at = (now, current, shown, behind = false, has = both) =>
    c.decide({now, current, shown, main: 1280, behind, has});
  const out = [at(0, 'main', 700)];  // 55 % of main's width: sub, at once
  c.chose(0);
  out.push(at(1000, 'sub', 1280));  // held 5 s
  out.push(at(5000, 'sub', 900));  // 70 %: between the two, kept
  out.push(at(5000, 'sub', 1000));  // 78 %: main
  c.chose(5000);
  out.push(at(6000, 'main', 100));  // held
  out.push(at(10000, 'main', 1280, true));  // delivery falls behind: sub
  c.chose(10000);
  out.push(at(20000, 'sub', 1280));  // big, keeping up, but main failed 10 s ago
  out.push(at(40000, 'sub', 1280));  // 30 s later: main again
  out.push(at(50000, 'main', 100, false, {main: true, sub: false}));  // no sub to go to
  return out;
}"""


def test_the_automatic_choice_holds_and_backs_off(site: Site) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{site.base}/live")
        page.add_script_tag(url=f"{site.base}/live/static/abr.js")
        assert page.evaluate(RULE) == ["sub", None, None, "main", None, "sub", None, "main", None]


PAGE = "<!doctype html><html><body><video id=v muted playsinline></video></body></html>"
WHEP_PLAY = """async ([camera, token]) => {
  const v = document.getElementById('v');
  v.style.width = '240px';
  window.renditions = [];
  window.stop = await window.vmsPlayers.webrtc(v, {
    camera, stream: 'auto', base: location.origin, mediaToken: async () => token,
    onRendition: (s) => window.renditions.push(s),
  });
  return true;
}"""


def test_whep_js_gathers_with_the_servers_and_chooses_sub_for_a_small_tile(site: Site) -> None:
    with chromium() as browser:
        page = browser.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "ice-servers" in r.url else None)
        page.route(f"{site.base}/test/page.html",
                   lambda route: route.fulfill(content_type="text/html", body=PAGE))  # fmt: skip
        page.goto(f"{site.base}/test/page.html")
        for script in ("abr.js", "whep.js"):
            page.add_script_tag(url=f"{site.base}/live/static/{script}")
        assert page.evaluate(WHEP_PLAY, ["cam1", site.media_token()])
        servers = page.evaluate("window.stop.pc.getConfiguration().iceServers")
        assert [s["urls"] for s in servers] == [[site.stun], [site.turn]]
        assert servers[1]["username"] == TURN_USER and servers[1]["credential"] == TURN_SECRET
        assert len(asked) == 1 and "camera_id=cam1" in asked[0]
        # It starts on main, is told the streams' sizes, and goes to sub at once. The picture
        # and the server's word that it switched come apart (media and the data channel).
        page.wait_for_function("() => document.getElementById('v').videoWidth === 320 "
                               "&& window.renditions.length >= 2", timeout=30_000)  # fmt: skip
        assert page.evaluate("window.renditions") == ["main", "sub"]
        assert page.evaluate("window.stop.rendition") == "sub"
        page.evaluate("window.stop()")
    wait_for(lambda: len(site.server.webrtc) == 0, 10, "the session ended")


# --- the feed itself: a select while the current stream sends nothing ------------------------


def test_a_select_is_done_while_the_current_stream_is_offline(clips: dict[str, Path]) -> None:
    main_info, main_packets = read_clip(clips["h264"])
    sub_info, sub_packets = read_clip(clips["h264_small"])

    async def body() -> list[Any]:
        loop = asyncio.get_running_loop()
        pipelines = {
            name: StreamPipeline("c", 0, CameraHealth("c", SystemClock()), Relay(loop))
            for name in ("main", "sub")
        }
        feed = MseFeed(pipelines.get, "main", SystemClock())
        messages = feed.messages()
        main, sub = pipelines["main"].relay, pipelines["sub"].relay
        main.publish(StreamStart(main_info))
        main.publish(main_packets[0])
        got = [await asyncio.wait_for(anext(messages), 5) for _ in range(3)]
        for p in main_packets[1:30]:  # one fragment each, as they come
            main.publish(p)
            got.append(await asyncio.wait_for(anext(messages), 5))
        main.publish(StreamEnd("camera lost"))
        got.append(await asyncio.wait_for(anext(messages), 5))  # offline
        sub.publish(StreamStart(sub_info))
        for p in sub_packets[:20]:
            sub.publish(p)
        # The feed waits for main, which sends nothing more: the select wakes it.
        waiting = asyncio.ensure_future(anext(messages))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        feed.select("sub")
        got.append(await asyncio.wait_for(waiting, 5))
        got += [await asyncio.wait_for(anext(messages), 5) for _ in range(4)]
        await messages.aclose()
        assert len(main) == len(sub) == 0  # both subscriptions closed
        return got

    got = asyncio.run(body())
    texts = [json.loads(m) for m in got if isinstance(m, str)]
    assert [t["type"] for t in texts] == ["init", "offline", "state", "state", "init"]
    assert texts[2]["switching"] == "sub"
    # Main is offline: only the streams running are given.
    assert texts[3] == {"type": "state", "stream": "sub", "streams": {"sub": [160, 120]}}
    assert texts[4]["switch"] and (texts[4]["width"], texts[4]["height"]) == (160, 120)
    moofs = [_moof(m) for m in got if isinstance(m, bytes) and m[4:8] == b"moof"]
    assert len(moofs) == 30 + 1  # sub's GOP so far, in one fragment
    # On after main's last frame, though main went offline in between.
    assert moofs[30].video_base == moofs[29].video_base + moofs[29].video_duration
    assert moofs[30].keyframe
