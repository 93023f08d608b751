"""The web client's Playback page in a real browser (Debian's Chromium through Playwright), on
recordings the real server made of two stamped stand-in cameras (each frame carries the wall
clock of its capture, vms.standin.stamp): a seek shows the frame of the instant asked for, read
back from the picture; both cameras play in step; frame steps, trick play, the timeline's
clicks and hover thumbnails; a range dragged on the timeline exported and checked with
``vms verify``; the URL carries the moment."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.support.browser import chromium, served_app
from tests.support.polling import wait_for
from vms.auth.store import Grant
from vms.catalog.store import CLOSED
from vms.config import from_dict
from vms.server import Server
from vms.standin import StandinCamera, gstreamer_available, stamp

pytestmark = [
    pytest.mark.skipif(not gstreamer_available(), reason="needs GStreamer"),
    pytest.mark.serial,  # its recordings come from cameras that must not stall under load
]

PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
FRAME_MS = 40  # 25 fps
RECORDED_S = 14  # recorded before the tests start
STAMP_JS = Path(stamp.__file__).with_name("stamp.js").read_text(encoding="utf-8")


@dataclass
class Site:
    base: str
    server: Server
    data: Path
    browser: Any
    start_us: int  # recordings of both cameras cover [start_us, now)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("ui-playback")
    a = StandinCamera(width=640, height=360, keyint=25, bitrate_kbps=600, stamp=True)
    b = StandinCamera(width=640, height=360, keyint=25, bitrate_kbps=600, stamp=True)
    with a, b:
        cfg = from_dict({
            "data_dir": str(tmp / "data"),
            "storage": {"roots": [{"name": "r", "path": str(tmp / "r"), "create": True,
                                   "min_free_bytes": 0}]},
            "recording": {"segment_seconds": 4},
            "auth": FAST,
            "cameras": [{"id": "cam1", "name": "Hall", "main": {"url": a.url}},
                        {"id": "cam2", "name": "Dock", "main": {"url": b.url}}],
        })  # fmt: skip
        with served_app(cfg) as (base, server), chromium() as browser:
            op = server.auth.add_user("op", PASSWORD, "operator")
            server.auth.store.set_grants(op.id, [Grant("*", None)])

            def first() -> int | None:
                """Where both cameras' recordings begin (a first segment may be dropped: the
                stand-in's timestamps jump at its start, and the recorder starts again)."""
                starts = [server.catalog.segments(camera_id=c) for c in ("cam1", "cam2")]
                return max(min(s.start_us for s in c) for c in starts) if all(starts) else None

            began = wait_for(first, 30, "both cameras recording")
            wait_for(lambda: time.time() * 1e6 > began + RECORDED_S * 1e6, RECORDED_S + 5)
            yield Site(base, server, tmp / "data", browser, first() or began)


def labels(server: Server, camera: str, at_us: int) -> dict[int, float]:
    """The recording's wall-clock label (ms) of each frame of the segment holding ``at_us``,
    by the capture time its stamp carries (ms), read from the stored file frame by frame. The
    server labels a run by the arrival of its first frame (docs/design/time.md), after the
    stand-in's encoder and the network: a label is some 100-200 ms after the stamp."""
    seg = next(s for s in server.catalog.segments(camera_id=camera)
               if s.state == CLOSED and s.start_us <= at_us < s.end_us)  # fmt: skip
    path = server.storage.by_id(seg.root_id).file(seg.path)
    out: dict[int, float] = {}
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        first = None
        for packet in container.demux(video):
            if packet.dts is None:
                continue
            first = packet.dts if first is None else first
            for frame in packet.decode():
                label = seg.start_us / 1000 + float((frame.pts - first) * video.time_base) * 1000
                plane = frame.planes[0]
                got = stamp.read(bytes(plane), frame.width, frame.height, plane.line_size)
                if got is not None:
                    out[stamp.capture_ms(got, int(label))] = label
    assert len(out) > 50, out
    return out


def shown_label(server: Server, camera: str, at_us: int, capture_ms: int) -> float:
    """The label of the frame whose stamp says ``capture_ms`` (near ``at_us``)."""
    for around in (at_us, at_us - 2_000_000, at_us + 2_000_000):
        found = labels(server, camera, around).get(capture_ms)
        if found is not None:
            return found
    raise AssertionError(f"no frame of {camera} captured at {capture_ms} near {at_us}")


def open_playback(site: Site, route: str) -> Any:
    page = site.browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(f"{site.base}/#/{route}")
    page.fill("#name", "op")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector(".pb-tile")
    page.evaluate(STAMP_JS)  # through the driver: the page's policy runs no inline script
    return page


# The capture times (ms) the two players' pictures carry, read at one moment, and the page's
# clock (data-time, µs) then.
STAMPS = """() => {
  const now = Date.now();
  const out = {clock: Number(document.querySelector('.pb').dataset.time)};
  for (const t of document.querySelectorAll('.pb-tile')) {
    const s = vmsStamp.read(t.querySelector('video'));
    out[t.dataset.camera] = s === null ? null : vmsStamp.captureMs(s, now);
  }
  return out;
}"""
SETTLED = """() => [...document.querySelectorAll('.pb-tile')].every((t) => {
  const v = t.querySelector('video');
  return t.dataset.state === 'ready' && !v.seeking && v.readyState >= 2 && vmsStamp.read(v) !== null;
})"""


def settle(page: Any) -> dict[str, Any]:
    """The stamps once every player shows a frame and nothing moves any more."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 50)))")
    page.wait_for_function(SETTLED, timeout=20_000)

    def still() -> dict[str, Any] | None:
        first = page.evaluate(STAMPS)
        time.sleep(0.3)  # a correction or a late frame would show by then
        return first if page.evaluate(STAMPS) == first else None

    return wait_for(still, 10, "the pictures to hold still")


def x_of(page: Any, at_us: int) -> tuple[float, float]:
    """Where on the screen the timeline's first row shows ``at_us``."""
    box = page.query_selector(".tl-box").bounding_box()
    start, end = (float(page.get_attribute(".tl-box", f"data-{k}")) for k in ("start", "end"))
    return box["x"] + box["width"] * (at_us - start) / (end - start), box["y"] + 28 + 19


def test_a_seek_shows_the_frame_of_the_instant(site: Site) -> None:
    at_us = site.start_us + 6_517_000  # between two frames, and not at a keyframe
    page = open_playback(site, f"playback?cameras=cam1,cam2&t={at_us}")
    got = settle(page)
    assert got["clock"] == at_us
    # The frame shown, found in the stored file by its stamp: its label against the instant.
    # It is the frame being shown at that instant, so labelled at most a frame before it.
    errors = {c: shown_label(site.server, c, at_us, got[c]) - at_us / 1000 for c in ("cam1", "cam2")}
    print(f"\nshown frame's label minus the instant asked for: {errors} ms; stamp minus "
          f"instant: {({c: got[c] - at_us / 1000 for c in ('cam1', 'cam2')})} ms")
    for camera, error in errors.items():
        assert -FRAME_MS - 1 <= error <= 1, (camera, error)

    # A click on the timeline seeks there: the picture follows the clock.
    page.mouse.click(*x_of(page, site.start_us + 10_300_000))
    page.wait_for_function(f"() => document.querySelector('.pb').dataset.time != {at_us}")
    clicked = settle(page)
    assert f"t={clicked['clock']}" in page.url
    for camera in ("cam1", "cam2"):
        label = shown_label(site.server, camera, clicked["clock"], clicked[camera])
        assert -FRAME_MS - 1 <= label - clicked["clock"] / 1000 <= 1, (camera, label)
    assert page.errors == []
    page.close()


def test_cameras_play_in_step_and_step_by_frames(site: Site) -> None:
    at_us = site.start_us + 2_000_000
    page = open_playback(site, f"playback?cameras=cam1,cam2&t={at_us}")
    settle(page)
    page.click("#pb-play")
    page.wait_for_function("() => document.querySelector('.pb').dataset.playing === 'true'")
    gaps = []
    for _ in range(6):
        time.sleep(0.5)
        s = page.evaluate(STAMPS)
        if s["cam1"] is not None and s["cam2"] is not None:
            gaps.append(abs(s["cam1"] - s["cam2"]))
    print(f"\ncam1 - cam2 while playing: {gaps} ms")
    assert len(gaps) >= 4 and max(gaps) <= 300 + 2 * FRAME_MS, gaps  # one clock, 0.3 s slack
    page.keyboard.press("Space")
    page.wait_for_function("() => document.querySelector('.pb').dataset.playing === 'false'")
    before = settle(page)
    assert before["clock"] > at_us + 2_000_000  # it played
    page.keyboard.press("ArrowRight")
    after = wait_for(lambda: (s := settle(page))["cam1"] != before["cam1"] and s, 10, "a step")
    assert after["cam1"] - before["cam1"] == pytest.approx(FRAME_MS, abs=5)
    assert after["cam2"] - before["cam2"] == pytest.approx(FRAME_MS, abs=FRAME_MS + 5)
    page.keyboard.press("ArrowLeft")
    back = wait_for(lambda: (s := settle(page))["cam1"] != after["cam1"] and s, 10, "a step back")
    assert back["cam1"] == before["cam1"]
    page.close()


def test_eight_times_faster_plays_keyframes(site: Site) -> None:
    page = open_playback(site, f"playback?cameras=cam1&t={site.start_us + 1_000_000}&speed=8")
    settle(page)
    assert "keyframes only" in page.inner_text("#pb-trick")
    start = page.evaluate(STAMPS)
    page.click("#pb-play")
    t0 = time.monotonic()
    page.wait_for_function(
        f"() => Number(document.querySelector('.pb').dataset.time) > {start['clock'] + 8_000_000}",
        timeout=20_000,
    )
    rate = (page.evaluate(STAMPS)["clock"] - start["clock"]) / 1e6 / (time.monotonic() - t0)
    print(f"\nthe clock at 8x went {rate:.1f} s a second")
    assert 4 <= rate <= 10, rate
    page.close()


def test_a_range_is_exported_and_verifies(site: Site, tmp_path: Path) -> None:
    page = open_playback(site, f"playback?cameras=cam1,cam2&t={site.start_us + 8_000_000}")
    settle(page)
    # Zoom the timeline onto the recording: the drag then spans seconds, not minutes.
    at_us = site.start_us + 8_000_000
    page.mouse.move(*x_of(page, at_us))
    for _ in range(12):
        page.mouse.wheel(0, -300)
    page.wait_for_function("() => { const b = document.querySelector('.tl-box');"
                           " return b.dataset.end - b.dataset.start <= 10e6; }")  # fmt: skip
    page.click("#pb-range")
    page.mouse.move(*x_of(page, at_us - 3_000_000))
    page.mouse.down()
    page.mouse.move(*x_of(page, at_us - 1_000_000), steps=5)
    page.mouse.up()
    page.wait_for_selector(".pb-export")
    assert page.eval_on_selector_all(".pb-export-cams input:checked", "i => i.length") == 2
    page.click("#pb-export-start")
    page.wait_for_selector("#pb-open-exports, .pb-export .form-error")
    assert page.query_selector("#pb-open-exports"), page.inner_text(".pb-export")
    token = page.evaluate("async () => (await import('/ui/js/api.js')).accessToken()")
    auth = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{site.base}/api/v1/exports", headers=auth).json()["items"]
    assert len(listed) == 1 and listed[0]["cameras"] == ["cam1", "cam2"]
    job_id = listed[0]["id"]

    def done() -> dict[str, Any] | None:
        job = httpx.get(f"{site.base}/api/v1/exports/{job_id}", headers=auth).json()
        assert job["state"] not in ("failed", "cancelled"), job
        return job if job["state"] == "done" else None

    job = wait_for(done, 60, "the export")
    assert (job["end_us"] - job["start_us"]) / 1e6 == pytest.approx(2, abs=0.1)
    out = tmp_path / "export"
    out.mkdir()
    for name in job["files"]:
        r = httpx.get(f"{site.base}{job['download']}", params={"name": name}, headers=auth)
        assert r.status_code == 200, r.text
        (out / name).write_bytes(r.content)
    ok = subprocess.run([sys.executable, "-m", "vms", "verify", str(out), "--data-dir",
                         str(site.data)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    page.click("#pb-open-exports")
    page.wait_for_function("() => location.hash.startsWith('#/exports')")
    page.close()


def test_hover_shows_a_thumbnail_and_the_link_keeps_the_moment(site: Site) -> None:
    at_us = site.start_us + 5_000_000
    page = open_playback(site, f"playback?cameras=cam2,cam1&t={at_us}")
    settle(page)
    # Hover the playhead's own place, on the second row (cam1).
    x, y = x_of(page, at_us)
    page.mouse.move(x, y + 38)
    page.wait_for_selector(".pb-hover img", timeout=10_000)
    page.wait_for_function("() => document.querySelector('.pb-hover img').naturalWidth === 192")
    src = page.get_attribute(".pb-hover img", "src")
    assert src.startswith("/api/v1/cameras/cam1/thumbnail.jpg?") and "token=" in src
    labels = page.eval_on_selector_all(".tl-label[data-camera]", "ls => ls.map(l => l.textContent)")
    assert labels == ["Dock", "Hall"]
    url = page.url
    assert f"t={at_us}" in url and "cameras=cam2%2Ccam1" in url
    page.close()

    again = open_playback(site, url.split("#/", 1)[1])
    assert settle(again)["clock"] == at_us

    # Go to a date and time typed in the browser's zone (whole seconds).
    target_s = (site.start_us + 9_000_000) // 1_000_000
    local = again.evaluate(
        """(s) => { const d = new Date(s * 1000), p = (n) => String(n).padStart(2, '0');
          return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}` +
                 `:${p(d.getMinutes())}:${p(d.getSeconds())}`; }""",
        target_s,
    )
    again.fill("#pb-goto", local)
    again.press("#pb-goto", "Enter")
    again.wait_for_function(
        f"() => document.querySelector('.pb').dataset.time == {target_s * 1_000_000}"
    )
    assert settle(again)["clock"] == target_s * 1_000_000
    again.close()
