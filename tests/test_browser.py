"""The browser the playback and live tests rely on: it starts, reaches the app from its own
origin, and its MediaSource takes the H.264 profiles cameras send."""

from __future__ import annotations

from pathlib import Path

from tests.support.browser import chromium, hls_js, served_app
from vms.config import Config


def test_chromium_reaches_the_app_and_has_mse(tmp_path: Path) -> None:
    cfg = Config.model_validate(
        {"data_dir": str(tmp_path / "data"), "storage": {"roots": [
            {"name": "r0", "path": str(tmp_path / "r0"), "create": True}]}}
    )  # fmt: skip
    with served_app(cfg) as (base, _server), chromium() as browser:
        page = browser.new_page()
        page.route(
            f"{base}/test/page.html",
            lambda route: route.fulfill(
                content_type="text/html", body="<!doctype html><title>t</title>"
            ),
        )
        page.route(
            f"{base}/test/hls.min.js",
            lambda route: route.fulfill(content_type="text/javascript", body=hls_js()),
        )
        page.goto(f"{base}/test/page.html")
        page.add_script_tag(url=f"{base}/test/hls.min.js")
        status = page.evaluate("fetch('/healthz').then(r => r.status)")
        assert status == 200
        assert page.evaluate("MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.64001f\"')")
        assert page.evaluate("Hls.isSupported()")
