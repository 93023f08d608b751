"""The web client's Events and Exports pages in a real browser (Chromium) against a real server
recording real footage (people walking, OpenCV's vtest) from a file camera: events written
through the server's event store show with their snapshots, filter, page and open the clip on
Playback; an export started through the API shows its progress, then downloads, and what the
browser saved passes ``vms verify``.

Set ``VMS_SCREENSHOTS=docs/screenshots`` to refresh the committed screenshots.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from tests.support.events import event
from tests.support.events import new as new_event
from tests.support.polling import wait_for
from tests.support.ui_admin import PASSWORD, Site, config, shot, site, until
from vms.catalog.store import CLOSED
from vms.events.model import Event
from vms.export.jobs import Files
from vms.standin.footage import default_cache_dir, footage_clip

TIMEOUT_MS = 30_000
SECOND_US = 1_000_000


@pytest.fixture(scope="module")
def events_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    clip = footage_clip(default_cache_dir())
    cfg = config(
        tmp_path_factory.mktemp("ui-events"),
        [
            {"id": "street", "name": "Street", "main": {"url": clip.as_uri()}},
            {"id": "yard", "name": "Back yard", "enabled": False,
             "main": {"url": "rtsp://127.0.0.1:9/none"}},
        ],
        events={"pre_s": 1, "post_s": 1},
    )  # fmt: skip
    with site(cfg) as s:
        wait_for(lambda: len(closed(s)) >= 3, 60, "three closed segments of the street")
        yield s


def bearer(s: Site, name: str) -> dict[str, str]:
    r = httpx.post(f"{s.base}/api/v1/auth/login", json={"name": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def closed(s: Site) -> list[Any]:
    return s.server.catalog.segments(camera_id="street", state=CLOSED)


def picture(s: Site, at_us: int) -> bytes:
    """A real JPEG of the street at ``at_us`` (the server's own thumbnail)."""
    r = s.api.get("/api/v1/cameras/street/thumbnail.jpg", params={"at": at_us})
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", r.text[:200]
    return r.content


def add_event(s: Site, camera: str, start_us: int, label: str = "person",
              zones: tuple[str, ...] = (), jpeg: bytes | None = None) -> Event:  # fmt: skip
    """An event through the server's event store (tests/support/events.py makes it), with
    ``jpeg`` as its snapshot (none without)."""
    e = event(camera, label, start_us=start_us, end_us=start_us + 2 * SECOND_US, zones=zones)
    if jpeg is None:
        e.snapshot_us = None
    s.server.event_store.write(new_event(e))
    if jpeg is not None:
        s.server.snapshots.write(camera, e.id, jpeg, jpeg)
    return e


def test_events_show_with_snapshots_filter_page_and_open_playback(events_site: Site) -> None:
    s = events_site
    t0 = closed(s)[0].start_us
    span = closed(s)[2].end_us - t0
    pictures = [picture(s, t0 + span * k // 4) for k in range(4)]
    jpeg = pictures[0]
    people = [add_event(s, "street", t0 + i * 100_000, jpeg=pictures[i % 4]) for i in range(52)]
    car = add_event(s, "street", t0 + 6 * SECOND_US, "car", zones=("gate",), jpeg=jpeg)
    dark = add_event(s, "yard", t0 + 7 * SECOND_US, "dog")  # no snapshot
    with s.page("admin", "events") as page:
        first = page.locator(f"[data-event='{dark.id}']")
        first.wait_for(timeout=TIMEOUT_MS)
        # Newest first, 50 a page.
        shown = page.locator("[data-event]").evaluate_all("es => es.map(e => e.dataset.event)")
        assert shown[:2] == [dark.id, car.id] and len(shown) == 50
        assert "No picture" in first.inner_text() and "Back yard" in first.inner_text()
        # Snapshots are real pictures, fetched with a media token.
        img = page.locator(f"[data-event='{car.id}'] img")
        until(page, "i => i.complete && i.naturalWidth > 0", img.element_handle())
        src = urllib.parse.urlsplit(img.get_attribute("src") or "")
        assert src.path == f"/api/v1/events/{car.id}/snapshot.jpg"
        assert "token" in urllib.parse.parse_qs(src.query)
        assert "gate" in page.locator(f"[data-event='{car.id}']").inner_text()
        # Every snapshot on the first screen comes (each a media-token URL, cached per camera).
        until(page, "() => [...document.querySelectorAll('[data-event] img')].slice(0, 8)"
                    ".every(i => i.complete && i.naturalWidth > 0)")
        shot(page, "events")
        # The next page, by the API's cursor.
        page.get_by_role("button", name="Load more").click()
        until(page, "n => document.querySelectorAll('[data-event]').length === n",
              len(people) + 2)
        # Filters: a label, kept in the URL.
        page.fill("input[name=label]", "car")
        page.get_by_role("button", name="Apply").click()
        until(page, "() => document.querySelectorAll('[data-event]').length === 1")
        assert "label=car" in page.url
        page.get_by_role("button", name="Clear").click()
        page.locator("select[name=camera]").select_option("yard")
        page.wait_for_url("**/#/events?camera=yard", timeout=TIMEOUT_MS)
        until(page, "id => document.querySelectorAll('[data-event]').length === 1 "
                    "&& document.querySelector(`[data-event='${id}']`) !== null", dark.id)
        # A bad filter: the API's reason, not a blank page.
        page.goto(f"{s.base}/#/events?label=no%2Fslashes")
        page.locator(".error-box").wait_for(timeout=TIMEOUT_MS)
        assert "label" in page.locator(".error-box").inner_text()
        # A click plays the event on Playback, from its start.
        page.goto(f"{s.base}/#/events?label=car")
        page.locator(f"[data-event='{car.id}']").click()
        page.wait_for_url(f"**/#/playback?cameras=street&t={car.start_us}", timeout=TIMEOUT_MS)
    assert s.errors == [] and s.dialogs == []


class SlowDisk(Files):
    """Export files that take ``room`` bytes each, then wait for :attr:`gate` (the disk the
    export writes to, the edge a test replaces): the job stays running part way through."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.gate = threading.Event()

    def create(self, path: Path) -> BinaryIO:
        return _SlowFile(self, path)


class _SlowFile(io.FileIO):
    def __init__(self, disk: SlowDisk, path: Path) -> None:
        super().__init__(path, "xb+")
        self.disk, self.left = disk, disk.room

    def write(self, b: Any) -> int:
        if self.left < len(b):
            assert self.disk.gate.wait(60), "the disk was never let go"
        self.left -= len(b)
        return super().write(b)


def test_an_export_shows_progress_then_downloads_and_verifies(
    events_site: Site, tmp_path: Path
) -> None:
    s = events_site
    segments = closed(s)
    start, end = segments[0].start_us, segments[2].end_us
    # The disk takes half the media, then waits: the export is seen part way.
    disk = SlowDisk(room=sum(seg.bytes for seg in segments[:3]) // 2)
    s.server.exports.files = disk
    try:
        with s.page("admin", "exports", accept_downloads=True) as page:
            page.get_by_text("No exports yet.").wait_for(timeout=TIMEOUT_MS)
            # Started through the API by the same user (as Playback does).
            r = httpx.post(f"{s.base}/api/v1/exports", headers=bearer(s, "admin"),
                           json={"cameras": ["street"], "start": start, "end": end})
            assert r.status_code == 201, r.text
            job = r.json()["id"]
            row = page.locator(f"tr[data-export='{job}']")
            # Running, part way: the list is polled, the bar moves.
            page.locator(f"tr[data-export='{job}'][data-state=running]").wait_for(
                timeout=TIMEOUT_MS)
            bar = row.locator("progress")
            until(page, "p => Number(p.value) > 0", bar.element_handle())
            assert 0 < float(bar.get_attribute("value") or 0) < 100
            assert "admin" in row.inner_text() and "Street" in row.inner_text()  # who, what
            disk.gate.set()
            page.locator(f"tr[data-export='{job}'][data-state=done]").wait_for(
                timeout=TIMEOUT_MS)
            folder = tmp_path / "download"
            folder.mkdir()
            for selector in ("[data-action=download]", "[data-file='manifest.json']",
                             "[data-file='manifest.sig']"):  # fmt: skip
                with page.expect_download(timeout=TIMEOUT_MS) as got:
                    row.locator(selector).click()
                d = got.value
                assert d.failure() is None
                assert "token=" in d.url  # a link the browser streams to disk
                d.save_as(folder / d.suggested_filename)
            assert sorted(p.name for p in folder.iterdir()) == [
                "manifest.json", "manifest.sig", "street.mp4"]
            vms = Path(sys.executable).parent / "vms"
            checked = subprocess.run(
                [str(vms), "verify", str(folder), "--data-dir", str(s.server.config.data_dir)],
                capture_output=True, text=True, timeout=60, check=False,
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            # Tampered: the same check fails (the download is what was signed, not a copy).
            media = folder / "street.mp4"
            data = bytearray(media.read_bytes())
            data[len(data) // 2] ^= 0xFF
            media.write_bytes(bytes(data))
            tampered = subprocess.run(
                [str(vms), "verify", str(folder), "--data-dir", str(s.server.config.data_dir)],
                capture_output=True, text=True, timeout=60, check=False,
            )
            assert tampered.returncode == 1, tampered.stdout + tampered.stderr
            # Another user's export (an administrator sees every one): a media token would
            # not do, the file comes through the API client with the header.
            r = s.api.post("/api/v1/exports",
                           json={"cameras": ["street"], "start": start, "end": end})
            other = page.locator(f"tr[data-export='{r.json()['id']}'][data-state=done]")
            other.wait_for(timeout=TIMEOUT_MS)
            with page.expect_download(timeout=TIMEOUT_MS) as got:
                other.locator("[data-file='manifest.json']").click()
            assert got.value.failure() is None and got.value.url.startswith("blob:")
            manifest = json.loads(Path(got.value.path()).read_text())
            assert manifest["exported_by"] == "local"
            # Delete, after a confirmation.
            row.locator("[data-action=delete]").click()
            page.locator("dialog[open] [data-action=confirm]").click()
            row.wait_for(state="detached", timeout=TIMEOUT_MS)
            assert s.server.exports.find(job) is None
    finally:
        disk.gate.set()
        s.server.exports.files = Files()
    assert s.errors == [] and s.dialogs == []


def test_a_running_export_is_cancelled_from_the_list(events_site: Site) -> None:
    s = events_site
    segments = closed(s)
    disk = SlowDisk(room=0)
    s.server.exports.files = disk
    try:
        r = s.api.post("/api/v1/exports", json={
            "cameras": ["street"], "start": segments[0].start_us, "end": segments[1].end_us})
        job = r.json()["id"]
        with s.page("admin", "exports") as page:
            row = page.locator(f"tr[data-export='{job}'][data-state=running]")
            row.wait_for(timeout=TIMEOUT_MS)
            # The worker waits on the disk: let it go once the cancel is asked for.
            runs = s.server.exports._runs
            freed = threading.Thread(target=lambda: (
                wait_for(lambda: job not in runs or runs[job].cancel.is_set(), 30, "a cancel"),
                disk.gate.set()))  # fmt: skip
            freed.start()
            row.locator("[data-action=cancel]").click()
            page.locator(f"tr[data-export='{job}'][data-state=cancelled]").wait_for(
                timeout=TIMEOUT_MS)
            freed.join(30)
    finally:
        disk.gate.set()
        s.server.exports.files = Files()
    assert s.errors == []
