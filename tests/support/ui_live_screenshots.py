"""Screenshots of the Live wall and the Playback page for docs/screenshots/ (1280×800):
``python -m tests.support.ui_live_screenshots [OUT_DIR]``.

Four stand-in cameras play the real street footage (vms.standin.footage), started a few
seconds apart so that each shows another moment of it; two are watched by the detector, so the
timeline has events and motion to show. The server records them for a minute, then Chromium
logs in and takes the Live wall (dark theme) and the Playback page with a range selected for
export (light theme).
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.support.browser import chromium, served_app
from tests.support.polling import wait_for
from vms.auth.store import Grant
from vms.config import CameraConfig, from_dict
from vms.standin import StandinCamera
from vms.standin.footage import default_cache_dir, scene_frames

PASSWORD = "a long enough password"
NAMES = {"entrance": "Entrance", "lobby": "Lobby", "parking": "Parking", "dock": "Loading dock"}
STREET = [[0.0, 0.25], [1.0, 0.25], [1.0, 1.0], [0.0, 1.0]]
RECORD_S = 60


def log_in(page: Any, base: str, route: str, theme: str) -> None:
    page.add_init_script(f"localStorage.setItem('vms.theme', '{theme}')")
    page.goto(f"{base}/#/{route}")
    page.fill("#name", "operator")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cache = default_cache_dir()
    scene = scene_frames(cache, 640, 480, empty_s=6.0)
    detect = {"fps": 5, "zones": [{"name": "street", "polygon": STREET, "labels": ["person"]}]}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        cams = {}
        for cid in NAMES:
            cams[cid] = stack.enter_context(StandinCamera(frames=scene))
        cfg = from_dict({
            "data_dir": f"{tmp}/data",
            "storage": {"roots": [{"name": "r", "path": f"{tmp}/r", "create": True,
                                   "min_free_bytes": 0}]},
            "recording": {"segment_seconds": 10},
            "detection": {"threads": 1},
            "events": {"end_after_s": 2},
            "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1},
        })  # fmt: skip
        with served_app(cfg) as (base, server), chromium() as browser:
            # A stand-in starts its footage at its first viewer: the cameras are added some
            # seconds apart, so each shows another moment of the street.
            for i, (cid, cam) in enumerate(cams.items()):
                if i:
                    time.sleep(9)
                server.add_camera(CameraConfig.model_validate({
                    "id": cid, "name": NAMES[cid], "main": {"url": cam.url},
                    **({"detect": detect} if cid in ("entrance", "lobby") else {})}))
            user = server.auth.add_user("operator", PASSWORD, "operator")
            server.auth.store.set_grants(user.id, [Grant("*", None)])
            began = time.time()
            time.sleep(RECORD_S)
            ids = ",".join(NAMES)

            page = browser.new_page(viewport={"width": 1280, "height": 800})
            log_in(page, base, f"live?layout=4&cameras={ids}", "dark")
            page.wait_for_function("() => document.querySelectorAll('#wall .tile[data-state=live]')"
                                   ".length === 4", timeout=30_000)  # fmt: skip
            page.click("#wall .tile[data-slot='0']")
            time.sleep(2)
            page.screenshot(path=str(out / "live.png"))
            page.close()

            at_us = int((began + RECORD_S * 0.55) * 1e6)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            log_in(page, base, f"playback?cameras={ids}&t={at_us}", "light")
            page.wait_for_selector(".pb-tile .tile-bar")
            page.wait_for_function("() => [...document.querySelectorAll('.pb-tile')]"
                                   ".every(t => t.dataset.state === 'ready')", timeout=30_000)  # fmt: skip
            box = page.query_selector(".tl-box").bounding_box()
            start, end = (float(page.get_attribute(".tl-box", f"data-{k}")) for k in ("start", "end"))
            x = box["x"] + box["width"] * (at_us - start) / (end - start)
            page.mouse.move(x, box["y"] + 40)
            for _ in range(5):
                page.mouse.wheel(0, -300)
            wait_for(lambda: float(page.get_attribute(".tl-box", "data-end"))
                     - float(page.get_attribute(".tl-box", "data-start")) < 200e6, 10)  # fmt: skip
            time.sleep(1.5)  # the timeline of the new window
            start, end = (float(page.get_attribute(".tl-box", f"data-{k}")) for k in ("start", "end"))

            def x_of(us: float) -> float:
                return box["x"] + box["width"] * (us - start) / (end - start)

            page.keyboard.down("Shift")
            page.mouse.move(x_of(at_us - 8e6), box["y"] + 40)
            page.mouse.down()
            page.mouse.move(x_of(at_us + 6e6), box["y"] + 40, steps=4)
            page.mouse.up()
            page.keyboard.up("Shift")
            box = page.query_selector(".tl-box").bounding_box()  # moved up: the panel is below
            page.mouse.move(x_of(at_us + 14e6), box["y"] + 28 + 38 + 19)
            try:
                page.wait_for_selector(".pb-hover img", timeout=10_000)
            except Exception:
                page.screenshot(path=str(out / "playback-fail.png"))
                raise
            time.sleep(1)
            page.screenshot(path=str(out / "playback.png"))
            page.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/screenshots"))
