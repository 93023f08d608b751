"""The Live wall recovers by itself. The server stops under an open wall (its tiles say they are
reconnecting, the page stays), starts again on the same address with the same data, and every
tile plays again, with no reload and no new login. A protocol the server refuses while the
camera is online (no WebRTC viewer allowed) gives way to the next one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.browser import WALL_FRAMES, chromium, served_app
from tests.support.polling import free_port, wait_for
from vms.auth.store import Grant
from vms.config import from_dict
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(not gstreamer_available(), reason="needs GStreamer")

PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
STATES = "() => [...document.querySelectorAll('#wall .tile:not(.tile-empty)')].map(t => t.dataset.state)"


def test_the_wall_plays_again_after_the_server_restarts(tmp_path: Path) -> None:
    a = StandinCamera(width=640, height=360, keyint=25, bitrate_kbps=300)
    b = StandinCamera(width=640, height=360, keyint=25, bitrate_kbps=300)
    with a, b, chromium() as browser:
        cfg = from_dict({
            "data_dir": str(tmp_path / "data"),
            "storage": {"roots": [{"name": "r", "path": str(tmp_path / "r"), "create": True,
                                   "min_free_bytes": 0}]},
            "auth": FAST,
            "cameras": [{"id": "a", "main": {"url": a.url}}, {"id": "b", "main": {"url": b.url}}],
        })  # fmt: skip
        port = free_port()
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        with served_app(cfg, port) as (base, server):
            op = server.auth.add_user("op", PASSWORD, "operator")
            server.auth.store.set_grants(op.id, [Grant("*", None)])
            page.goto(f"{base}/#/live?layout=4&cameras=a,b")
            page.fill("#name", "op")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            wait_for(lambda: page.evaluate(STATES) == ["live", "live"], 30, "the wall playing")
        # The server is gone: the tiles say so, the page stays where it was.
        wait_for(lambda: "live" not in page.evaluate(STATES), 30, "the tiles to notice")
        assert set(page.evaluate(STATES)) <= {"reconnecting", "connecting", "offline"}
        assert page.query_selector("#wall") and not page.query_selector("#name")
        gone = time.monotonic()
        with served_app(cfg, port):
            wait_for(lambda: page.evaluate(STATES) == ["live", "live"], 60, "the wall again")
            back = time.monotonic() - gone
            before = page.evaluate(WALL_FRAMES)
            wait_for(lambda: all(n > m + 25 for n, m in zip(page.evaluate(WALL_FRAMES), before,
                                                             strict=True)), 20, "frames")  # fmt: skip
            assert not page.query_selector("#name")  # no new login
        print(f"\nplaying again {back:.1f} s after the server went down (its restart included)")
        page.close()


def test_a_tile_refused_webrtc_plays_over_mse(tmp_path: Path) -> None:
    # No WebRTC viewer allowed: the WHEP offer is refused with 503, which the WebRTC player
    # takes for "offline"; the server sees the camera online, so the tile tries MSE.
    cam = StandinCamera(width=640, height=360, keyint=25, bitrate_kbps=300)
    with cam, chromium() as browser:
        cfg = from_dict({
            "data_dir": str(tmp_path / "data"),
            "storage": {"roots": [{"name": "r", "path": str(tmp_path / "r"), "create": True,
                                   "min_free_bytes": 0}]},
            "auth": FAST,
            "live": {"webrtc_max_sessions": 0},
            "cameras": [{"id": "a", "main": {"url": cam.url}}],
        })  # fmt: skip
        with served_app(cfg) as (base, server):
            op = server.auth.add_user("op", PASSWORD, "operator")
            server.auth.store.set_grants(op.id, [Grant("*", None)])
            wait_for(lambda: server.camera("a").main.relay.info is not None, 30, "streaming")
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/#/live?layout=1&cameras=a")
            page.fill("#name", "op")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            tile = "#wall .tile[data-camera=a]"
            page.wait_for_function(f"() => document.querySelector('{tile}')?.dataset.state === 'live'",
                                   timeout=30_000)  # fmt: skip
            assert page.get_attribute(tile, "data-protocol") == "mse"
            page.close()
