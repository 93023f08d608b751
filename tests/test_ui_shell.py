"""The web client's shell in a real browser (Debian's Chromium through Playwright) against the
app under uvicorn: the first administrator through the setup token, login, the navigation a
role may see, an ended session back to login and then to the same page and parameters, theme
and language kept across a reload, the page contract (params, setParams, shortcuts, cleanup,
a page that fails to load), a phone's width, and the page-weight budget. Also, without a
browser: how / and /ui/* are served.

Pages here are test modules answered by the browser itself (``Page.route``) in place of
js/pages/<name>.js, so that the shell is tested alone, whatever pages exist.

Screenshots (login, light; the shell, dark) go to docs/screenshots/ when VMS_SCREENSHOTS=1.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.browser import chromium, served_app
from tests.support.polling import wait_for
from vms.api import ui
from vms.api.routes import create_api
from vms.auth.rbac import Action
from vms.auth.store import Grant
from vms.config import Config
from vms.server import Server

PASSWORD = "a long enough password"
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
ALL_PAGES = ["live", "playback", "events", "exports", "cameras", "users", "system"]
BUDGET = 300_000  # bytes of compressed JavaScript (docs/design/ui.md)
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"

# A page module: shows its params and user, counts renders and cleanups, registers "k".
PROBE = """
import { html, render as draw, Empty } from "/ui/js/ui.js";
export const catalog = "common";
export function render(root, ctx) {
  const s = (window.probe ||= { renders: 0, cleanups: 0, keys: 0 });
  s.renders += 1;
  s.ctx = ctx;
  draw(html`<div id="probe">
    <h1 id="title">${ctx.t("nav.playback")}</h1>
    <p id="params">${ctx.params.toString()}</p>
    <p id="who">${ctx.user.name} ${ctx.user.role} ${JSON.stringify(ctx.user.cameras)}</p>
    <${Empty} icon="cameras" title=${ctx.t("empty")} />
  </div>`, root);
  const off = ctx.shortcut("k", () => { s.keys += 1; }, "common.refresh");
  return () => { s.cleanups += 1; off(); draw(null, root); };
}
"""
BROKEN = "export const catalog = 'common'; export function render( {"
# What an empty page looks like (the screenshot).
BLANK = """
import { html, render as draw, Empty } from "/ui/js/ui.js";
export const catalog = "common";
export function render(root, ctx) {
  draw(html`<${Empty} icon="cameras" title=${ctx.t("empty")} />`, root);
  return () => draw(null, root);
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def config(tmp: Path, cameras: list[dict[str, Any]] | None = None) -> Config:
    return Config.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "storage": {"roots": [{"name": "r0", "path": str(tmp / "r0"), "create": True}]},
            "auth": FAST,
            "cameras": cameras or [],
        }
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Server]]:
    # A camera that never answers: enough for pages that list cameras, and no CPU spent.
    dead = [{"id": "a", "name": "Gate", "main": {"url": "rtsp://127.0.0.1:9/none"}}]
    with served_app(config(tmp_path_factory.mktemp("ui-shell"), dead)) as served:
        yield served


def add_user(server: Server, name: str, role: str, cameras: tuple[str, ...] = ("*",)) -> int:
    user = server.auth.add_user(name, PASSWORD, role)
    server.auth.store.set_grants(user.id, [Grant(c, None) for c in cameras])
    return user.id


def new_page(browser: Any, width: int = 1280, height: int = 800, **kw: Any) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height}, **kw)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    return page


PAGE_MODULE = re.compile(r"/ui/js/pages/(\w+)\.js(\?.*)?$")


def serve_pages(page: Any, sources: dict[str, str]) -> dict[str, str]:
    """Page modules answered by the browser from ``sources`` (name → source, changeable
    later); a page not in it goes to the server."""

    def answer(route: Any) -> None:
        found = PAGE_MODULE.search(route.request.url)
        name = found[1] if found else ""
        if name in sources:
            route.fulfill(content_type="text/javascript", body=sources[name])
        else:
            route.continue_()

    page.route(PAGE_MODULE, answer)
    return sources


def log_in(page: Any, name: str, password: str = PASSWORD) -> None:
    page.wait_for_selector("#name")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_selector(".topbar")


def nav(page: Any) -> list[str]:
    return page.eval_on_selector_all(".nav a", "links => links.map(a => a.dataset.page)")


def hash_of(page: Any) -> str:
    return page.evaluate("location.hash")


# --- served files (no browser) ---------------------------------------------------------------


def test_the_page_and_its_files_are_served_with_a_strict_policy() -> None:
    client = TestClient(create_api())
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert policy == ui.UI_CSP
    scripts = policy.split("script-src ")[1].split(";")[0].split()
    importmap = re.search(r'<script type="importmap">(.*?)</script>', page.text, re.DOTALL)
    assert importmap and len(scripts) == 2 and scripts[0] == "'self'"
    assert scripts[1].startswith("'sha256-")  # the import map's hash, and nothing inline else
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy and page.headers["x-frame-options"] == "DENY"
    for name in ["js/app.js", "js/api.js", "js/i18n.js", "js/ui.js", "css/app.css",
                 "i18n/en/common.json", "i18n/pt-BR/common.json", "vendor/preact.mjs",
                 "vendor/hooks.mjs", "vendor/htm.mjs", "vendor/hls.min.js"]:  # fmt: skip
        assert name in ui.FILES, f"{name} not served (./dev setup fetches the vendor files)"
        r = client.get(f"/ui/{name}")  # no credential: static files, no data
        assert r.status_code == 200, name
        assert r.headers["content-security-policy"] == ui.UI_CSP
        assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
        assert r.content == ui.FILES[name].read_bytes()


def test_files_are_compressed_and_revalidated() -> None:
    client = TestClient(create_api())
    raw = ui.FILES["js/app.js"].read_bytes()
    r = client.get("/ui/js/app.js", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.headers["vary"] == "Accept-Encoding"
    assert r.content == raw  # httpx undid the gzip: the same bytes
    packed = client.get("/ui/js/app.js", headers={"Accept-Encoding": "gzip"},
                        extensions={"decode": False})  # fmt: skip
    size = int(packed.headers["content-length"])
    assert size < len(raw) / 2, (size, len(raw))
    assert gzip.decompress(ui._content(ui.FILES["js/app.js"])[2] or b"") == raw
    plain = client.get("/ui/js/app.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == raw
    again = client.get("/ui/js/app.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    "path",
    ["/ui/../pyproject.toml", "/ui/%2e%2e/pyproject.toml", "/ui/js/..%2f..%2fapi%2fui.py",
     "/ui/index.html", "/ui/js", "/ui/", "/ui/vendor/preact-11.2.0/preact.mjs",
     "/ui/js/app.js.map", "/ui/js/pages%2f..%2fapp.js", "/ui//js/app.js", "/ui/JS/APP.JS"],
)  # fmt: skip
def test_only_the_table_of_files_is_served(path: str) -> None:
    r = TestClient(create_api()).get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert r.json()["error"] == "not_found"


# --- the browser -----------------------------------------------------------------------------


def test_first_admin_through_the_setup_token(tmp_path: Path, browser: Any) -> None:
    with served_app(config(tmp_path)) as (base, server):
        page = new_page(browser)
        serve_pages(page, {"users": PROBE})
        page.goto(f"{base}/#/users?tab=roles")
        page.wait_for_selector("#token")
        assert page.input_value("#token") == ""  # never filled in for whoever comes first
        for field, value in [("#token", "not-the-token"), ("#name", "boss"),
                             ("#password", PASSWORD), ("#confirm", PASSWORD + "!")]:  # fmt: skip
            page.fill(field, value)
        page.click("button[type=submit]")
        assert "differ" in page.inner_text(".form-error")
        page.fill("#confirm", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector(".form-error >> text=not valid")
        assert server.auth.store.count_users() == 0
        token = server.auth.new_setup_token()
        assert token and token not in page.content()
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_selector("#probe")
        assert [(u.name, u.role) for u in server.auth.store.users()] == [("boss", "admin")]
        assert nav(page) == ALL_PAGES
        assert hash_of(page) == "#/users?tab=roles"  # where the user was going
        assert page.inner_text("#params") == "tab=roles"
        # Done: the form is gone, the token spent.
        other = new_page(browser)
        other.goto(base)
        other.wait_for_selector("#name")
        assert other.query_selector("#token") is None and other.query_selector(".link") is None
        assert server.auth.new_setup_token() is None
        assert not page.errors and not other.errors


def test_a_viewer_sees_only_the_pages_it_may(app: tuple[str, Server], browser: Any) -> None:
    base, server = app
    add_user(server, "vera", "viewer", ("a",))
    page = new_page(browser)
    serve_pages(page, {"live": PROBE})
    refreshes: list[str] = []
    page.on("request", lambda r: r.url.endswith("/auth/refresh") and refreshes.append(r.url))
    page.goto(f"{base}/")
    log_in(page, "vera")
    assert refreshes == []  # a browser that never logged in here asks for no refresh
    assert nav(page) == ["live", "events"]
    assert hash_of(page) == "#/live"  # the first page it may open
    assert page.inner_text("#who") == 'vera viewer ["a"]'
    page.evaluate("location.hash = '#/users'")
    page.wait_for_selector(".page-users .empty >> text=may not open")
    assert page.query_selector(".nav a.active") is None
    # A wrong password is refused and says so; the form stays.
    page.click("#logout")
    page.wait_for_selector("#name")
    page.fill("#name", "vera")
    page.fill("#password", "wrong password!")
    page.click("button[type=submit]")
    page.wait_for_selector(".form-error >> text=Wrong user name or password")
    assert not page.errors


def test_an_ended_session_goes_to_login_and_back(app: tuple[str, Server], browser: Any) -> None:
    base, server = app
    uid = add_user(server, "otto", "operator")
    server.auth.store.put_role("operator2", frozenset(
        {Action.VIEW, Action.LIVE, Action.PLAYBACK, Action.EXPORT}))  # fmt: skip
    page = new_page(browser)
    serve_pages(page, {"playback": PROBE})
    page.goto(f"{base}/#/playback?camera=a&t=1700000000000000")
    log_in(page, "otto")
    page.wait_for_selector("#probe")
    assert page.inner_text("#params") == "camera=a&t=1700000000000000"
    assert nav(page) == ["live", "playback", "events", "exports"]
    me = "window.probe.ctx.api('/api/v1/auth/me').then(r => r.user.role, e => e.status)"

    # The access token dies (a new role), the refresh cookie lives: renewed unseen.
    server.auth.store.update_user(uid, server.clock.wall_us(), role="operator2")
    assert page.evaluate(me) == "operator2"
    assert page.query_selector(".login") is None

    # The login dies too (a new password): back to login, then to the same page and params.
    new = PASSWORD + " 2"
    server.auth.store.update_user(uid, server.clock.wall_us(),
                                  password_hash=server.auth.passwords.hash(new))  # fmt: skip
    assert page.evaluate(me) == 401
    page.wait_for_selector(".login .notice")
    assert page.evaluate("window.probe.cleanups") == 1  # the page was told to stop
    assert hash_of(page) == "#/playback?camera=a&t=1700000000000000"
    log_in(page, "otto", new)
    page.wait_for_selector("#probe")
    assert page.inner_text("#params") == "camera=a&t=1700000000000000"
    assert page.evaluate("window.probe.renders") == 2
    assert not page.errors


def test_the_page_contract(app: tuple[str, Server], browser: Any) -> None:
    base, server = app
    add_user(server, "pat", "operator")
    page = new_page(browser)
    sources = serve_pages(page, {"playback": PROBE, "exports": BROKEN})
    page.goto(f"{base}/#/playback?camera=a")
    log_in(page, "pat")
    page.wait_for_selector("#probe")
    # setParams writes the URL and does not render the page again.
    page.evaluate("window.probe.ctx.setParams({t: 42, camera: null})")
    assert hash_of(page) == "#/playback?t=42"
    assert page.evaluate("window.probe.ctx.params.toString()") == "t=42"
    page.evaluate("window.probe.ctx.setParams({speed: 2}, {replace: true})")
    assert hash_of(page) == "#/playback?t=42&speed=2"
    # about:blank, the page, one pushed entry (the replaced one added none)
    assert page.evaluate("[window.probe.renders, history.length]") == [1, 3]
    # Back: the page again, with the parameters of that entry.
    page.go_back()
    # (polled from here: wait_for_function evaluates a string, which the page's CSP forbids)
    wait_for(lambda: page.evaluate("window.probe.renders") == 2, 10, "the page rendered again")
    assert page.inner_text("#params") == "camera=a"
    # A page's shortcut, listed in the help with the shell's; Escape closes the help.
    page.keyboard.press("k")
    assert page.evaluate("window.probe.keys") == 1
    page.keyboard.press("?")
    page.wait_for_selector("dialog[open] .shortcuts")
    listed = page.inner_text("dialog[open] .shortcuts")
    assert "Refresh" in listed and "Full screen" in listed
    page.keyboard.press("k")  # a dialog has the keyboard
    assert page.evaluate("window.probe.keys") == 1
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog[open]", state="detached")
    # A toast shows text as text, markup and all.
    evil = '<img src=x onerror="window.pwned=1">'
    page.evaluate(f"window.probe.ctx.toast({json.dumps(evil)}, 'error')")
    assert page.inner_text(".toast-error span") == evil
    assert page.query_selector(".toasts img") is None and page.evaluate("window.pwned") is None
    # The shared table: cells are text, a column may render its own; no row says so.
    table = page.evaluate("""async () => {
      const ui = await import("/ui/js/ui.js");
      const el = document.body.appendChild(document.createElement("div"));
      const columns = [{ key: "name", label: "Name" },
                       { key: "n", label: "N", align: "end", render: (r) => r.n * 2 }];
      ui.render(ui.html`<${ui.Table} columns=${columns} rows=${[{ id: 1, name: "<b>x</b>", n: 2 }]} />`, el);
      const cells = [...el.querySelectorAll("td")].map((td) => td.textContent.trim());
      ui.render(ui.html`<${ui.Table} columns=${columns} rows=${[]} />`, el);
      const empty = el.textContent.trim();
      el.remove();
      return [cells, empty];
    }""")
    assert table == [["<b>x</b>", "4"], "Nothing here yet."]
    # Leaving: the page cleans up, its shortcut goes with it; a page that fails to load says so.
    page.evaluate("window.probe.ctx.navigate('exports', {range: '1-2'})")
    page.wait_for_selector(".page-exports .error-box >> text=could not be loaded")
    assert page.evaluate("window.probe.cleanups") == 2
    page.keyboard.press("k")
    assert page.evaluate("window.probe.keys") == 1
    assert hash_of(page) == "#/exports?range=1-2"
    sources["exports"] = PROBE  # mended: "Try again" loads it
    page.click(".page-exports .error-box button")
    page.wait_for_selector(".page-exports #probe")
    assert page.inner_text("#params") == "range=1-2"
    page.evaluate("location.hash = '#/nowhere'")
    page.wait_for_selector(".empty >> text=no such page")


def test_theme_and_language_persist(app: tuple[str, Server], browser: Any) -> None:
    base, server = app
    add_user(server, "lia", "operator")
    page = new_page(browser, color_scheme="light", locale="en-US", timezone_id="America/Sao_Paulo")
    serve_pages(page, {"playback": PROBE})
    page.goto(f"{base}/#/playback")
    log_in(page, "lia")
    page.wait_for_selector("#probe")
    # (ICU's narrow and no-break spaces made plain, whichever this Chromium's ICU uses)
    formats = ("(f => [f.time(0), f.bytes(1500000), f.duration(125), f.number(1234.5)]"
               ".map(x => x.replace(/[\\u202f\\u00a0]/g, ' ')))(window.probe.ctx.fmt)")  # fmt: skip
    # µs since the epoch, UTC, shown in the browser's zone (UTC-3) and locale.
    assert page.evaluate(formats) == ["9:00:00 PM", "1.5 MB", "2 min 05 s", "1,234.5"]
    bg = "getComputedStyle(document.body).backgroundColor"
    light = page.evaluate(bg)
    assert page.get_attribute("#theme", "data-theme-now") == "light"
    page.click("#theme")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate(bg) != light
    page.select_option("#language", "pt-BR")
    page.wait_for_selector(".nav a >> text=Ao vivo")
    page.wait_for_selector("#title >> text=Reprodução")  # the page rendered again, in pt-BR
    assert page.evaluate(formats) == ["21:00:00", "1,5 MB", "2 min 05 s", "1.234,5"]
    page.reload()
    page.wait_for_selector("#probe")  # the session survives a reload (the refresh cookie)
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate("document.documentElement.lang") == "pt-BR"
    assert page.inner_text("#title") == "Reprodução"
    assert "Ao vivo" in page.inner_text(".nav")
    assert page.input_value("#language") == "pt-BR"
    page.click("#logout")
    page.wait_for_selector(".login h1 >> text=Entrar")
    assert page.evaluate(bg) != light  # the login keeps the theme too
    assert not page.errors


def test_a_phone_gets_a_menu(app: tuple[str, Server], browser: Any) -> None:
    base, server = app
    add_user(server, "phil", "admin")
    page = new_page(browser, width=360, height=740, is_mobile=True, has_touch=True)
    serve_pages(page, {"live": PROBE})
    page.goto(base)
    log_in(page, "phil")
    page.wait_for_selector("#probe")
    assert not page.is_visible(".nav")
    page.click(".menu-button")
    page.wait_for_selector(".nav a >> text=System")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.keyboard.press("Escape")
    page.wait_for_selector(".nav", state="hidden")
    page.click(".menu-button")
    page.click(".nav a[data-page=playback]")
    page.wait_for_selector(".nav", state="hidden")  # the menu folds once a page is chosen
    assert hash_of(page) == "#/playback"


def _scripts(page: Any) -> Any:
    """Compressed bytes of each script the page loads, from Chromium's network log (CDP)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    kinds: dict[str, tuple[str, str]] = {}
    sizes: dict[str, int] = {}
    cdp.on("Network.responseReceived",
           lambda e: kinds.__setitem__(e["requestId"], (e["type"], e["response"]["url"])))  # fmt: skip
    cdp.on("Network.loadingFinished",
           lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))  # fmt: skip

    def scripts() -> dict[str, int]:
        return {kinds[r][1]: n for r, n in sizes.items() if r in kinds and kinds[r][0] == "Script"}

    return scripts


def _settled(page: Any, read: Any) -> dict[str, int]:
    """The scripts once no new one has arrived for a second."""
    seen, since = dict(read()), time.monotonic()
    deadline = since + 20
    while time.monotonic() - since < 1.0:
        assert time.monotonic() < deadline, "the page kept loading scripts"
        page.wait_for_timeout(100)  # the browser's loop, not a guess: polled until quiet
        now = read()
        if now != seen:
            seen, since = dict(now), time.monotonic()
    return seen


def test_the_javascript_budget(app: tuple[str, Server], browser: Any) -> None:
    base, server = app
    add_user(server, "bud", "admin")
    page = new_page(browser)
    read = _scripts(page)
    page.goto(base)
    page.wait_for_selector("#name")
    login = _settled(page, read)
    log_in(page, "bud")
    page.wait_for_selector(".page-live")
    live = _settled(page, read)
    total = sum(live.values())
    print(f"\nJS on the login page: {sum(login.values())} B compressed in {len(login)} files; "
          f"after login on #/live: {total} B in {len(live)} files")  # fmt: skip
    for url, n in sorted(live.items(), key=lambda x: -x[1]):
        print(f"  {n:8d}  {url.removeprefix(base)}")
    assert any(u.endswith("/ui/vendor/preact.mjs") for u in login)  # it is measuring
    assert not any("hls" in u for u in login), "hls.js is for HLS only"
    assert total <= BUDGET, f"{total} B of JavaScript over the {BUDGET} B budget"


def test_screenshots(app: tuple[str, Server], browser: Any, tmp_path: Path) -> None:
    base, server = app
    add_user(server, "operator", "admin")
    page = new_page(browser, color_scheme="light")
    page.goto(base)
    page.wait_for_selector("#name")
    page.fill("#name", "operator")
    page.screenshot(path=tmp_path / "login.png")
    dark = new_page(browser, color_scheme="dark")
    serve_pages(dark, {"live": BLANK})
    dark.goto(base)
    log_in(dark, "operator")
    dark.wait_for_selector(".page-live .empty")
    assert dark.get_attribute("#theme", "data-theme-now") == "dark"
    dark.screenshot(path=tmp_path / "shell.png")
    for name in ("login", "shell"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        if os.environ.get("VMS_SCREENSHOTS") == "1":
            SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / f"{name}.png", SHOTS / f"{name}.png")
