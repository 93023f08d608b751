"""What the browser tests of the administration pages share: a served app with users, logging
in through the shell's form, the API as a local tool calls it, and screenshots on request.

Screenshots are written only when ``VMS_SCREENSHOTS`` names a folder (docs/screenshots to
refresh the committed ones): a plain test run leaves the working tree alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.browser import chromium, served_app
from tests.support.polling import wait_for
from vms.auth import local
from vms.auth.store import Grant
from vms.config import Config, from_dict
from vms.server import Server

PASSWORD = "a long enough password"
FAST_AUTH = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
VIEWPORT = {"width": 1280, "height": 800}
XSS_NAME = "<img src=x onerror=alert(1)>"


def config(tmp: Path, cameras: list[dict[str, Any]], **more: Any) -> Config:
    (tmp / "r1").mkdir(parents=True, exist_ok=True)
    return from_dict(
        {
            "data_dir": str(tmp / "data"),
            "recording": {"segment_seconds": 2},
            "storage": {"roots": [{"name": "r1", "path": str(tmp / "r1"), "min_free_bytes": 0}]},
            "auth": FAST_AUTH,
            "cameras": cameras,
            **more,
        }
    )


@dataclass
class Site:
    """A running server, its base URL, a browser, and the API as a local tool sees it."""

    base: str
    server: Server
    browser: Any
    api: httpx.Client
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def user(self, name: str, role: str, grants: list[str] | None = None) -> int:
        user = self.server.auth.add_user(name, PASSWORD, role)
        if grants is not None:
            self.server.auth.store.set_grants(user.id, [Grant(c, None) for c in grants])
        return user.id

    @contextlib.contextmanager
    def page(self, name: str, route: str = "", *, theme: str = "dark", lang: str = "en",
             **context: Any) -> Iterator[Any]:  # fmt: skip
        """A browser context logged in as ``name`` through the login form, on ``#/<route>``;
        closed on exit. Every JavaScript dialog (alert, confirm) is recorded in
        :attr:`dialogs` and dismissed; uncaught page errors and missing messages (i18n.js
        warns) in :attr:`errors`."""
        ctx = self.browser.new_context(**{"viewport": VIEWPORT, **context})
        try:
            ctx.add_init_script(f"localStorage.setItem('vms.theme', '{theme}');"
                                f"localStorage.setItem('vms.lang', '{lang}');")  # fmt: skip
            page = ctx.new_page()
            page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: self.errors.append(str(e)))
            page.on("console", lambda m: m.text.startswith("i18n:") and self.errors.append(m.text))
            page.goto(f"{self.base}/#/{route}")
            page.fill("#name", name)
            page.fill("#password", PASSWORD)
            page.click("form.login-card button[type=submit]")
            page.wait_for_selector(".topbar")
            yield page
        finally:
            ctx.close()


@contextlib.contextmanager
def site(cfg: Config) -> Iterator[Site]:
    with served_app(cfg) as (base, server), chromium() as browser:
        headers = local.headers(cfg.data_dir)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            s = Site(base, server, browser, client)
            s.user("admin", "admin")
            yield s


def until(page: Any, script: str, arg: Any = None, timeout: float = 30.0) -> Any:
    """Polls ``script`` (a function of ``arg``) in the page from the test until it answers
    something truthy. Not Playwright's wait_for_function: its polling evaluates a string in
    the page, an eval the page's policy refuses (docs/design/ui.md)."""
    return wait_for(lambda: page.evaluate(script, arg), timeout, script)


def shot(page: Any, name: str) -> None:
    """A screenshot of the page as docs/screenshots/<name>.png, when asked for."""
    folder = os.environ.get("VMS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))
