"""Recordings played by real players over real HTTP: ffmpeg reads the HLS playlist, headless
Chromium plays ``playback.mp4`` through MediaSource and the playlist through hls.js, and each
reaches the instant asked for. The recordings were made by the real recorder before the server
started: 40 s of frames that show their own number, a keyframe every 4 s, segments of ~8 s."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import START_US, make_rig
from tests.support.browser import chromium, hls_js, served_app
from tests.support.counter_clip import counter_clip, frame_number, record
from vms.auth import local
from vms.auth.store import Grant
from vms.catalog.store import Catalog
from vms.config import from_dict
from vms.times import iso

PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
FRAMES = 1000  # 40 s at 25 fps


class Site:
    def __init__(self, base: str, data: Path, bearer: str) -> None:
        self.base, self.data, self.bearer = base, data, bearer

    def url(self, what: str, start: float, end: float, **more: str) -> str:
        query = {"start": at(start), "end": at(end), **more}
        return f"{self.base}/api/v1/cameras/cam1/{what}?" + "&".join(
            f"{k}={v}" for k, v in query.items()
        )

    def media_token(self) -> str:
        r = httpx.post(f"{self.base}/api/v1/auth/media-token",
                       json={"camera_id": "cam1", "action": "playback"},
                       headers={"Authorization": f"Bearer {self.bearer}"})  # fmt: skip
        assert r.status_code == 200, r.text
        return str(r.json()["token"])


def at(seconds: float) -> str:
    return iso(START_US + int(seconds * 1e6))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("players")
    data = tmp / "data"
    catalog = Catalog(f"sqlite:///{data / 'catalog.db'}")
    rig = make_rig(tmp, catalog, segment_seconds=6, camera="cam1")
    try:
        record(rig, counter_clip(tmp / "cam1.mp4", frames=FRAMES, width=320, height=240))
    finally:
        rig.writers.stop()
        catalog.close()
    cfg = from_dict({
        "data_dir": str(data),
        "storage": {"roots": [{"name": "r1", "path": str(tmp / "root"), "min_free_bytes": 0}]},
        "auth": FAST,
        "cameras": [{"id": "cam1", "enabled": False, "main": {"url": "rtsp://127.0.0.1:9/x"}}],
    })  # fmt: skip
    with served_app(cfg) as (base, server):
        uid = server.auth.add_user("investigator", PASSWORD, "operator").id
        server.auth.store.set_grants(uid, [Grant("cam1", None)])  # the role's actions
        r = httpx.post(f"{base}/api/v1/auth/login",
                       json={"name": "investigator", "password": PASSWORD})  # fmt: skip
        assert r.status_code == 200, r.text
        yield Site(base, data, str(r.json()["access_token"]))


def ffmpeg_frames(url: str, headers: dict[str, str], tmp: Path) -> list[int]:
    """The numbers of the frames ffmpeg decodes from ``url`` (no shell: an argv list)."""
    out = tmp / "frames.gray"
    header_text = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    argv = ["ffmpeg", "-nostdin", "-loglevel", "error", "-headers", header_text,
            "-i", url, "-an", "-f", "rawvideo", "-pix_fmt", "gray", "-y", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    raw = out.read_bytes()
    size = 320 * 240
    numbers = []
    for i in range(0, len(raw), size):
        numbers.append(_number_of_gray(raw[i : i + size], 320))
    return numbers


def _number_of_gray(plane: bytes, width: int) -> int:
    """As counter_clip.frame_number, on a packed grey picture."""
    number = 0
    for band in range(2):
        row = band * 20 + 10
        for col in range(8):
            if plane[row * width + col * 20 + 10] > 128:
                number |= 1 << (band * 8 + col)
    return number


def test_ffmpeg_plays_the_hls_playlist_across_segments(site: Site, tmp_path: Path) -> None:
    headers = local.headers(site.data)
    r = httpx.get(site.url("playback.m3u8", 9.0, 30.0), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    text = r.text
    assert text.startswith("#EXTM3U") and text.rstrip().endswith("#EXT-X-ENDLIST")
    assert "#EXT-X-MAP:URI=" in text and "#EXT-X-BYTERANGE:" in text
    assert "#EXT-X-START:TIME-OFFSET=1.000000" in text  # 9 s is 1 s after the keyframe at 8 s
    assert "token=" not in text  # the local key has no user: its client sends the header
    numbers = ffmpeg_frames(site.url("playback.m3u8", 9.0, 30.0), headers, tmp_path)
    # From the keyframe at 8 s to the end of the GOP holding 30 s, every frame once, in order.
    assert numbers[0] == 200
    assert numbers == list(range(200, 200 + len(numbers)))
    assert numbers[-1] >= 30 * 25 - 1


def test_a_user_playlist_carries_a_media_token_for_its_player(site: Site) -> None:
    token = site.media_token()
    r = httpx.get(site.url("playback.m3u8", 2.0, 12.0, token=token))
    assert r.status_code == 200, r.text
    uris = [line for line in r.text.splitlines() if line and not line.startswith("#")]
    assert uris and all("token=" in u for u in uris)
    assert token not in r.text  # a token of its own, living as long as the playlist plays
    seg = httpx.get(f"{site.base}/api/v1/cameras/cam1/{uris[0]}", headers={"Range": "bytes=0-7"})
    assert seg.status_code == 206 and seg.content[4:8] == b"ftyp"
    assert httpx.get(site.url("playback.m3u8", 2.0, 12.0)).status_code == 401


PAGE = "<!doctype html><html><body><video id=v muted playsinline></video></body></html>"

MSE_PLAY = """async ([url, bearer]) => {
  const plan = await (await fetch(url.replace('/playback.mp4', '/playback'),
                                  {headers: {Authorization: 'Bearer ' + bearer}})).json();
  const video = document.getElementById('v');
  const ms = new MediaSource();
  video.src = URL.createObjectURL(ms);
  await new Promise(r => ms.addEventListener('sourceopen', r, {once: true}));
  const sb = ms.addSourceBuffer(plan.mime);
  const r = await fetch(url, {headers: {Authorization: 'Bearer ' + bearer}});
  const offset = parseFloat(r.headers.get('X-Playback-Offset'));
  const reader = r.body.getReader();
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    sb.appendBuffer(value);
    await new Promise(res => sb.addEventListener('updateend', res, {once: true}));
  }
  ms.endOfStream();
  video.currentTime = offset;
  await video.play();
  return {offset, plan_offset: plan.offset_s};
}"""

HLS_PLAY = """async (url) => {
  const video = document.getElementById('v');
  const hls = new Hls({startPosition: -1});
  const failed = [];
  hls.on(Hls.Events.ERROR, (_e, data) => { if (data.fatal) failed.push(data.details); });
  hls.loadSource(url);
  hls.attachMedia(video);
  await new Promise(r => hls.on(Hls.Events.MANIFEST_PARSED, r));
  await video.play();
  window.hlsFailed = failed;
  return true;
}"""

# The number the shown picture carries, read back from a canvas (as counter_clip does).
SHOWN = """() => {
  const v = document.getElementById('v');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let band = 0; band < 2; band++)
    for (let col = 0; col < 8; col++) {
      const i = ((band * 20 + 10) * c.width + col * 20 + 10) * 4;
      if (px[i] > 128) n |= 1 << (band * 8 + col);
    }
  return {n, t: v.currentTime};
}"""


def _page(browser: Any, base: str) -> Any:
    page = browser.new_page()
    page.route(f"{base}/test/page.html",
               lambda route: route.fulfill(content_type="text/html", body=PAGE))  # fmt: skip
    page.route(f"{base}/test/hls.min.js",
               lambda route: route.fulfill(content_type="text/javascript", body=hls_js()))  # fmt: skip
    page.goto(f"{base}/test/page.html")
    return page


def test_chromium_plays_the_range_stream_through_mse_from_the_instant(site: Site) -> None:
    start = 13.48  # mid-GOP: the stream starts at the keyframe at 12 s
    url = site.url("playback.mp4", start, start + 10)
    with chromium() as browser:
        page = _page(browser, site.base)
        got = page.evaluate(MSE_PLAY, [url, site.bearer])
        assert got["offset"] == pytest.approx(1.48, abs=1e-6) == got["plan_offset"]
        # Playing: time moves on from the instant asked for.
        page.wait_for_function(f"document.getElementById('v').currentTime > {got['offset']} + 1",
                               timeout=30_000)  # fmt: skip
        page.evaluate("document.getElementById('v').pause()")
        shown = page.evaluate(SHOWN)
        # The picture shown is the frame of the time shown (12 s + currentTime), ±1 frame.
        expected = round((12 + shown["t"]) * 25)
        assert abs(shown["n"] - expected) <= 1, (shown, expected)


def test_chromium_plays_the_hls_playlist_through_hls_js(site: Site) -> None:
    token = site.media_token()
    url = site.url("playback.m3u8", 21.0, 35.0, token=token)
    with chromium() as browser:
        page = _page(browser, site.base)
        page.add_script_tag(url=f"{site.base}/test/hls.min.js")
        assert page.evaluate(HLS_PLAY, url)
        # EXT-X-START put the player 1 s into the first media segment (the keyframe at 20 s).
        page.wait_for_function("document.getElementById('v').currentTime > 2", timeout=30_000)
        assert page.evaluate("window.hlsFailed") == []
        page.evaluate("document.getElementById('v').pause()")
        shown = page.evaluate(SHOWN)
        assert shown["t"] >= 1.0
        assert shown["n"] >= 21 * 25, json.dumps(shown)


def test_frame_number_reader_matches_the_clip(tmp_path: Path) -> None:
    """The canvas and grey readers above mirror counter_clip's own reader."""
    import av

    path = counter_clip(tmp_path / "c.mp4", frames=30, width=320, height=240, first=4321)
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert [frame_number(f) for f in frames] == list(range(4321, 4351))
    gray = frames[7].reformat(format="gray").planes[0]
    plane = b"".join(bytes(gray)[r * gray.line_size : r * gray.line_size + 320] for r in range(240))
    assert _number_of_gray(plane, 320) == 4328
