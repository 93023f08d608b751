"""The web client's Live wall in a real browser (Debian's Chromium through Playwright), on real
stand-in RTSP cameras recorded and relayed by the real server: log in through the page, a
4-camera wall whose every tile plays (frames counted with requestVideoFrameCallback, pictures
compared on a canvas), a camera that goes offline and comes back, tiles swapped, enlarged and
picked by keyboard (the enlarged tile plays main, a small one sub), views saved and opened,
snapshot, zoom and sound, tiles out of sight that stop streaming, and a viewer who is shown
only the cameras granted to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import chromium, served_app
from tests.support.polling import free_port, wait_for
from vms.auth.store import Grant
from vms.config import from_dict
from vms.server import Server
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(not gstreamer_available(), reason="needs GStreamer")

PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
INGEST = {"open_timeout_s": 5, "stall_timeout_s": 3, "backoff_initial_s": 0.2, "backoff_max_s": 0.5}
HOSTILE = "<img src=x onerror=alert(1)>"
WALL = ["cam1", "cam2", "cam3", "door"]


@dataclass
class Site:
    base: str
    server: Server
    door: StandinCamera
    browser: Any


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("ui-live")
    cams = [StandinCamera(width=640, height=360, keyint=25, bitrate_kbps=400) for _ in range(3)]
    door = StandinCamera(width=640, height=360, keyint=25, bitrate_kbps=400, port=free_port())
    with cams[0], cams[1], cams[2], door:
        cfg = from_dict({
            "data_dir": str(tmp / "data"),
            "storage": {"roots": [{"name": "r", "path": str(tmp / "r"), "create": True,
                                   "min_free_bytes": 0}]},
            "recording": {"segment_seconds": 4},
            "ingest": INGEST,
            "auth": FAST,
            "cameras": [
                # A sub stream (the same picture): the tile's size chooses which is played.
                {"id": "cam1", "name": "Gate", "main": {"url": cams[0].url},
                 "sub": {"url": cams[0].url}},
                {"id": "cam2", "name": "Yard", "main": {"url": cams[1].url}},
                {"id": "cam3", "name": HOSTILE, "main": {"url": cams[2].url}},
                {"id": "door", "name": "Door", "main": {"url": door.url}},
            ],
        })  # fmt: skip
        with served_app(cfg) as (base, server), chromium() as browser:
            op = server.auth.add_user("op", PASSWORD, "operator")
            server.auth.store.set_grants(op.id, [Grant("*", None)])
            viewer = server.auth.add_user("vic", PASSWORD, "viewer")
            server.auth.store.set_grants(viewer.id, [Grant("cam1", None)])
            for cam in WALL:
                wait_for(lambda c=cam: server.camera(c).main.relay.info is not None, 30, cam)
            yield Site(base, server, door, browser)


def new_page(site: Site, route: str, width: int = 1280, height: int = 800) -> Any:
    """A new page at ``#/<route>`` (the login form, since no one is logged in); the page's
    uncaught errors are collected in ``page.errors`` (Playwright's page takes attributes)."""
    page = site.browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(f"{site.base}/#/{route}")
    page.wait_for_selector("#name")
    return page


def open_page(site: Site, route: str, user: str = "op", width: int = 1280, height: int = 800
              ) -> Any:  # fmt: skip
    """A new page at ``#/<route>``, logged in through the login form as ``user``."""
    page = new_page(site, route, width, height)
    page.fill("#name", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    return page


def tiles(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "#wall .tile", "ts => ts.map(t => ({...t.dataset, name: t.querySelector('.tile-name')"
        ".textContent.trim(), badge: t.querySelector('[role=status]')?.textContent || ''}))"
    )


def wait_states(page: Any, want: dict[str, str], timeout: float = 30) -> None:
    checks = " && ".join(
        f"document.querySelector('#wall .tile[data-camera=\"{c}\"]')?.dataset.state === '{s}'"
        for c, s in want.items()
    )
    page.wait_for_function(f"() => {checks}", timeout=timeout * 1000)


# Frames each tile shows in `ms` (requestVideoFrameCallback), and whether its picture changed
# between the start and the end (a 64x36 canvas copy, pixel by pixel).
PLAYING = """async (ms) => {
  const vids = [...document.querySelectorAll('#wall .tile video')];
  const counts = vids.map(() => 0);
  let on = true;
  vids.forEach((v, i) => {
    const f = () => { if (!on) return; counts[i]++; v.requestVideoFrameCallback(f); };
    v.requestVideoFrameCallback(f);
  });
  const snap = (v) => {
    const c = document.createElement('canvas');
    c.width = 64; c.height = 36;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 64, 36);
    return g.getImageData(0, 0, 64, 36).data;
  };
  const first = vids.map(snap);
  await new Promise((r) => setTimeout(r, ms));
  on = false;
  return vids.map((v, i) => {
    const b = snap(v);
    let changed = 0;
    for (let k = 0; k < b.length; k++) if (Math.abs(b[k] - first[i][k]) > 16) changed++;
    return {camera: v.closest('.tile').dataset.camera, frames: counts[i], changed,
            width: v.videoWidth};
  });
}"""


def test_a_four_camera_wall_plays_every_tile(site: Site) -> None:
    page = new_page(site, "live?layout=4&cameras=" + ",".join(WALL))
    page.fill("#name", "op")
    page.fill("#password", PASSWORD)
    t0 = time.monotonic()
    page.click("button[type=submit]")
    page.wait_for_function("() => document.querySelector('#wall .tile[data-state=live]')",
                           timeout=30_000)  # fmt: skip
    first = time.monotonic() - t0
    wait_states(page, dict.fromkeys(WALL, "live"))
    every = time.monotonic() - t0
    print(f"\nlogin to first live picture {first:.2f} s, to all four {every:.2f} s")
    # Loopback: about 1 s on a quiet machine (printed above); the bound is for a machine
    # shared with the other tests, where a start can wait seconds for a core.
    assert first < 15, first

    shown = tiles(page)
    assert [t["camera"] for t in shown] == WALL
    assert {t["protocol"] for t in shown} == {"webrtc"}  # Chromium: the best protocol
    names = {t["camera"]: t["name"] for t in shown}
    assert names["cam3"] == HOSTILE  # a name with markup is text
    assert page.eval_on_selector_all("#wall img", "is => is.length") == 0
    played = page.evaluate(PLAYING, 2000)
    for p in played:
        assert p["frames"] >= 20, p  # 25 fps for 2 s, give or take the machine
        assert p["changed"] > 20, p  # the ball moved: the picture is live, not a still
        assert p["width"] == 640, p
    assert "layout=4" in page.url and "cameras=cam1%2Ccam2%2Ccam3%2Cdoor" in page.url
    assert page.errors == []
    page.close()


def test_a_camera_offline_says_so_and_recovers(site: Site) -> None:
    page = open_page(site, "live?layout=1&cameras=door")
    wait_states(page, {"door": "live"})
    site.door.stop()
    try:
        wait_states(page, {"door": "offline"})
        page.wait_for_function("() => document.querySelector('#wall .tile [role=status]')"
                               ".textContent.startsWith('Offline since ')")  # fmt: skip
    finally:
        site.door.start()
    wait_states(page, {"door": "live"}, timeout=40)
    played = page.evaluate(PLAYING, 1500)
    assert played[0]["frames"] >= 10 and played[0]["changed"] > 20, played
    page.close()


def test_tiles_swap_pick_enlarge_and_follow_the_keyboard(site: Site) -> None:
    page = open_page(site, "live?layout=4&cameras=cam1,cam2")
    wait_states(page, {"cam1": "live", "cam2": "live"})
    # The elements of the two players, marked to see that a swap restarts neither.
    page.evaluate("for (const c of ['cam1', 'cam2']) "
                  "document.querySelector(`#wall .tile[data-camera=${c}] video`).dataset.mark = c")
    page.drag_and_drop("#wall .tile[data-camera=cam1] .tile-bar",
                       "#wall .tile[data-camera=cam2]")  # fmt: skip
    page.wait_for_function("() => location.hash.includes('cameras=cam2%2Ccam1')")
    order = page.eval_on_selector_all(
        "#wall .tile", "ts => ts.map(t => [t.dataset.camera, getComputedStyle(t).order])"
    )
    assert dict(order)["cam2"] == "0" and dict(order)["cam1"] == "1"
    assert [t["state"] for t in tiles(page)[:2]] == ["live", "live"]
    marks = page.eval_on_selector_all(
        "#wall video[data-mark]", "vs => vs.map(v => [v.closest('.tile').dataset.camera, v.dataset.mark])"
    )
    assert sorted(marks) == [["cam1", "cam1"], ["cam2", "cam2"]]
    # An empty tile given a camera with its picker.
    page.select_option("#wall .tile[data-slot='2'] .tile-pick", "cam2")
    page.wait_for_function("() => document.querySelectorAll('#wall .tile[data-camera=cam2]')"
                           ".length === 2")  # fmt: skip
    page.wait_for_function("() => location.hash.includes('cameras=cam2%2Ccam1%2Ccam2')")

    # 16 tiles: Gate's tile is small, so it plays the sub stream; 2 selects it, Enter enlarges
    # it (main), Escape goes back.
    page.click("[data-layout='16']")
    page.keyboard.press("2")
    assert page.get_attribute("#wall .tile[data-slot='1']", "class").find("selected") >= 0
    gate = "#wall .tile[data-camera=cam1]"
    page.wait_for_function(f"() => document.querySelector(\"{gate}\").dataset.stream === 'sub'",
                           timeout=20_000)  # fmt: skip
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{gate}.enlarged")
    assert page.eval_on_selector_all("#wall .tile", "ts => ts.filter(t => t.offsetWidth).length") == 1
    page.wait_for_function(f"() => document.querySelector(\"{gate}\").dataset.stream === 'main'",
                           timeout=20_000)  # fmt: skip
    page.keyboard.press("Escape")
    page.wait_for_selector(f"{gate}:not(.enlarged)")
    page.dblclick(f"{gate} video", force=True)  # a double click enlarges too, and back
    page.wait_for_selector(f"{gate}.enlarged")
    page.dblclick(f"{gate} video", force=True)
    page.wait_for_selector(f"{gate}:not(.enlarged)")
    assert page.errors == []
    page.close()


def test_views_are_saved_and_opened_from_the_page(site: Site) -> None:
    page = open_page(site, "live?layout=9&cameras=cam2,,cam1")
    wait_states(page, {"cam1": "live", "cam2": "live"})
    page.click("#live-save")
    page.fill("#view-name", "Night <shift>")
    page.click(".live-save button[type=submit]")
    page.wait_for_function("() => document.querySelector('#live-view').value === 'Night <shift>'")
    r = page.evaluate("""async () => {
      const {api} = await import('/ui/js/api.js');
      return api('/api/v1/views/' + encodeURIComponent('Night <shift>'));
    }""")
    assert r["layout"] == "9" and r["cameras"] == ["cam2", None, "cam1"] + [None] * 6
    page.close()
    # A link that names the view opens it.
    again = open_page(site, "live?view=Night%20%3Cshift%3E")
    wait_states(again, {"cam1": "live", "cam2": "live"})
    assert again.get_attribute("#wall", "data-layout") == "9"
    assert again.input_value("#live-view") == "Night <shift>"
    again.close()


def test_snapshot_zoom_and_sound(site: Site, tmp_path: Path) -> None:
    page = open_page(site, "live?layout=1&cameras=cam2")
    wait_states(page, {"cam2": "live"})
    tile = "#wall .tile[data-camera=cam2]"
    with page.expect_download() as got:
        page.click(f"{tile} .tile-snapshot")
    download = got.value
    assert download.suggested_filename.startswith("cam2-")
    assert download.suggested_filename.endswith(".png")
    path = tmp_path / "snap.png"
    download.save_as(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (640, 360)

    box = page.query_selector(tile).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"() => document.querySelector('{tile} video').style.transform"
                           ".includes('scale')")  # fmt: skip
    page.click(f"{tile} .tile-tools button:first-child")  # the zoom's reset, shown while zoomed
    page.wait_for_function(f"() => document.querySelector('{tile} video').style.transform === ''")

    assert page.eval_on_selector(f"{tile} video", "v => v.muted")
    page.click(f"{tile} .tile-audio")
    assert not page.eval_on_selector(f"{tile} video", "v => v.muted")
    assert page.get_attribute(f"{tile} .tile-audio", "aria-pressed") == "true"
    page.close()


# Every RTCPeerConnection the page makes, to count those still open.
COUNT_PEERS = """(() => {
  const Real = window.RTCPeerConnection;
  window.peers = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Real(...args);
    window.peers.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Real.prototype;
})();"""
OPEN_PEERS = "() => window.peers.filter(pc => pc.connectionState !== 'closed').length"


def test_tiles_out_of_sight_stop_streaming(site: Site) -> None:
    # A phone: two columns of 16:9 tiles, the wall longer than the screen.
    page = site.browser.new_page(viewport={"width": 360, "height": 640})
    page.add_init_script(COUNT_PEERS)
    page.goto(f"{site.base}/#/live?layout=16&cameras=cam1,cam2,,,,,,,,,,,,,cam2,cam1")
    page.fill("#name", "op")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#wall .tile[data-state=live]')"
                           ".length === 2")  # fmt: skip
    states = {t["slot"]: t["state"] for t in tiles(page)}
    assert states["14"] == states["15"] == "paused", states  # below the fold: no stream
    assert page.eval_on_selector("#wall .tile[data-slot='15'] video",
                                 "v => !v.srcObject && !v.src")  # fmt: skip
    assert page.evaluate(OPEN_PEERS) == 2
    page.eval_on_selector("#wall .tile[data-slot='15']", "t => t.scrollIntoView()")
    page.wait_for_function("() => document.querySelector(\"#wall .tile[data-slot='15']\")"
                           ".dataset.state === 'live'")  # fmt: skip
    # Scrolled away from the first ones: they stop after a second out of sight.
    page.wait_for_function("() => document.querySelector(\"#wall .tile[data-slot='0']\")"
                           ".dataset.state === 'paused'", timeout=10_000)  # fmt: skip
    page.wait_for_function(f"() => ({OPEN_PEERS})() === 2", timeout=10_000)
    # Two closed, two opened (a connection that a loaded machine let time out is tried again,
    # and counts one more).
    assert page.evaluate("window.peers.length") >= 4
    page.close()


def test_a_viewer_sees_only_the_cameras_granted(site: Site) -> None:
    page = open_page(site, "live?layout=4&cameras=cam1,cam2,nope", user="vic")
    wait_states(page, {"cam1": "live"})
    shown = {t["camera"]: t for t in tiles(page)}
    for camera in ("cam2", "nope"):  # not hers, and not there at all: told apart by nothing
        assert shown[camera]["name"] == camera and shown[camera]["state"] == "paused"
        assert shown[camera]["badge"] == "Camera unavailable"
    options = page.eval_on_selector_all("#wall .tile[data-camera=cam1] .tile-pick option",
                                        "os => os.map(o => o.value)")  # fmt: skip
    assert options == ["", "cam1"]
    assert page.errors == []
    page.close()
