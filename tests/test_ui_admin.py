"""The web client's Cameras, Users and System pages in a real browser (Chromium) against a real
server with a stand-in RTSP camera: a camera added through the form (tested first, then online),
a user who sees only the cameras granted, a camera name with HTML in it shown as text, a user
and an API key made (the key shown once), and the health figures.

Set ``VMS_SCREENSHOTS=docs/screenshots`` to refresh the committed screenshots.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

import vms
from tests.support.events import event
from tests.support.events import new as new_event
from tests.support.polling import wait_for
from tests.support.ui_admin import PASSWORD, XSS_NAME, Site, config, shot, site, until
from vms.auth import Action
from vms.auth.store import Grant
from vms.standin import StandinCamera, gstreamer_available

pytestmark = pytest.mark.skipif(
    not gstreamer_available(), reason="the stand-in camera needs GStreamer's RTSP server"
)
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def door() -> Iterator[StandinCamera]:
    with StandinCamera(width=640, height=360, fps=10, bitrate_kbps=300, keyint=10) as cam:
        yield cam


@pytest.fixture(scope="module")
def admin_site(tmp_path_factory: pytest.TempPathFactory, door: StandinCamera) -> Iterator[Site]:
    cfg = config(
        tmp_path_factory.mktemp("ui-admin"),
        [
            {"id": "door", "name": "Front door", "main": {"url": door.url}},
            {"id": "xss", "name": XSS_NAME, "enabled": False,
             "main": {"url": "rtsp://127.0.0.1:9/none"}},
        ],
    )  # fmt: skip
    with site(cfg) as s:
        wait_for(lambda: s.server.camera("door").health.frames > 0, 30, "the door camera")
        yield s


def test_a_camera_is_added_through_the_form(admin_site: Site) -> None:
    s = admin_site
    with StandinCamera(width=640, height=360, fps=10, bitrate_kbps=300) as lobby, \
            s.page("admin", "cameras") as page:  # fmt: skip
        page.click("[data-action=add]")
        page.keyboard.press("Escape")  # closes it
        page.locator("dialog[open]").wait_for(state="detached", timeout=TIMEOUT_MS)
        page.click("[data-action=add]")
        dialog = page.locator("dialog[open]")
        dialog.locator("#cam-id").fill("lobby")
        dialog.locator("#cam-name").fill("Lobby")
        # A URL the server refuses: the field says why, nothing is added.
        dialog.locator("#cam-url").fill("http://127.0.0.1/x")
        dialog.locator("[data-action=save]").click()
        problem = dialog.locator(".adm-field-error").first
        problem.wait_for(timeout=TIMEOUT_MS)
        assert "scheme" in problem.inner_text()
        assert "lobby" not in [c.config.id for c in s.server.cameras]
        dialog.locator("#cam-url").fill("rtsp://127.0.0.1:9/none")  # edited: the problem goes
        dialog.locator(".adm-field-error").wait_for(state="detached", timeout=TIMEOUT_MS)
        # A stream that does not answer: the test says so.
        dialog.locator("[data-action=test]").click()
        dialog.locator("[data-probe=failed]").wait_for(timeout=TIMEOUT_MS)
        # The real one: codec, resolution and frame rate before saving.
        dialog.locator("#cam-url").fill(lobby.url)
        dialog.locator("[data-action=test]").click()
        dialog.locator("[data-probe=ok]").wait_for(timeout=TIMEOUT_MS)
        assert dialog.locator("[data-probe-field=codec]").inner_text() == "H264"
        assert dialog.locator("[data-probe-field=resolution]").inner_text() == "640×360"
        assert dialog.locator("[data-probe-field=fps]").inner_text().startswith("10")
        assert dialog.locator("[data-probe-field=audio]").inner_text() == "None"
        dialog.locator("#cam-retention").fill("3")
        dialog.locator(".dialog-content").evaluate("e => { e.scrollTop = 0; }")
        shot(page, "cameras")
        dialog.locator("[data-action=save]").click()
        page.locator("dialog[open]").wait_for(state="detached", timeout=TIMEOUT_MS)
        row = page.locator("tr[data-camera=lobby]")
        row.wait_for(timeout=TIMEOUT_MS)
        assert "Lobby" in row.inner_text() and "3 days" in row.inner_text()
        # It goes online by itself (the list is polled).
        page.locator("tr[data-camera=lobby][data-state=online]").wait_for(timeout=TIMEOUT_MS)
        assert "640×360" in row.inner_text()
        cam = s.server.camera("lobby").config
        assert cam.main.url == lobby.url and cam.retention_days == 3
        # Disable from the list, then delete (with a confirmation).
        row.locator("[data-action=disable]").click()
        page.locator("tr[data-camera=lobby][data-state=disabled]").wait_for(timeout=TIMEOUT_MS)
        row.locator("[data-action=delete]").click()
        page.locator("dialog[open] [data-action=confirm]").click()
        row.wait_for(state="detached", timeout=TIMEOUT_MS)
        assert "lobby" not in [c.config.id for c in s.server.cameras]
    assert s.errors == []


def test_a_camera_password_is_write_only(admin_site: Site, door: StandinCamera) -> None:
    s = admin_site
    r = s.api.post("/api/v1/cameras", json={
        "id": "secret", "name": "Secret", "enabled": False, "main": {"url": door.url},
        "username": "op", "password": "hunter2-not-shown"})  # fmt: skip
    assert r.status_code == 201, r.text
    try:
        with s.page("admin", "cameras?camera=secret") as page:
            dialog = page.locator("dialog[open]")
            field = dialog.locator("#cam-password")
            field.wait_for(timeout=TIMEOUT_MS)
            assert field.input_value() == ""
            assert field.get_attribute("placeholder") == "(unchanged)"
            assert "hunter2" not in page.content()
            # A rename keeps the stored password: nothing about it is sent.
            dialog.locator("#cam-name").fill("Secret room")
            dialog.locator("[data-action=save]").click()
            page.locator("dialog[open]").wait_for(state="detached", timeout=TIMEOUT_MS)
        cfg = s.server.camera("secret").config
        assert cfg.name == "Secret room" and cfg.secret() == "hunter2-not-shown"
    finally:
        s.api.delete("/api/v1/cameras/secret")


def test_a_user_sees_only_the_cameras_granted(admin_site: Site) -> None:
    s = admin_site
    mine, theirs = event("door"), event("xss", label="car")
    for e in (mine, theirs):
        s.server.event_store.write(new_event(e))
    s.user("vera", "viewer", grants=["door"])
    with s.page("vera", "events") as page:
        page.locator(f"[data-event='{mine.id}']").wait_for(timeout=TIMEOUT_MS)
        assert page.locator(f"[data-event='{theirs.id}']").count() == 0
        cams = page.locator("select[name=camera] option").evaluate_all(
            "os => os.map(o => o.value)")
        assert cams == ["", "door"]
        nav = page.locator("nav a[data-page]").evaluate_all("as => as.map(a => a.dataset.page)")
        assert "cameras" not in nav and "users" not in nav and "system" not in nav
        # Another camera by URL: not found, exactly as a camera that does not exist.
        page.goto(f"{s.base}/#/events?camera=xss")
        page.get_by_text("Camera “xss” was not found, or you may not see it.").wait_for(
            timeout=TIMEOUT_MS)
        assert page.locator("[data-event]").count() == 0
        # Pages the role does not open: the shell's refusal.
        page.goto(f"{s.base}/#/cameras")
        page.get_by_text("Your account may not open this page.").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("tr[data-camera]").count() == 0

    # A camera manager granted one camera manages that one only.
    s.server.auth.store.put_role("site", frozenset({Action.VIEW, Action.MANAGE}))
    s.user("mona", "site", grants=["door"])
    with s.page("mona", "cameras") as page:
        page.locator("tr[data-camera=door]").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("tr[data-camera]").evaluate_all(
            "rs => rs.map(r => r.dataset.camera)") == ["door"]
        page.goto(f"{s.base}/#/cameras?camera=xss")
        page.get_by_text("Camera “xss” was not found, or you may not see it.").wait_for(
            timeout=TIMEOUT_MS)
    assert s.errors == []


def test_a_camera_name_with_html_is_shown_as_text(admin_site: Site) -> None:
    s = admin_site
    s.server.event_store.write(new_event(event("xss", label="person")))
    with s.page("admin", "cameras") as page:
        for route, where in [("cameras", "tr[data-camera=xss]"),
                             ("system", "tr[data-camera=xss]"),
                             ("events", "select[name=camera]")]:  # fmt: skip
            page.goto(f"{s.base}/#/{route}")
            page.locator(where).first.wait_for(timeout=TIMEOUT_MS)
            if route == "events":
                option = page.locator("select[name=camera] option[value=xss]")
                option.wait_for(state="attached", timeout=TIMEOUT_MS)
                assert option.inner_text() == XSS_NAME
                page.locator("[data-event] .events-camera", has_text=XSS_NAME).first.wait_for(
                    timeout=TIMEOUT_MS)
            else:
                assert XSS_NAME in page.locator(where).inner_text()
            made = page.evaluate("document.querySelectorAll('img[src=\"x\"], [onerror]').length")
            assert made == 0, route
    assert s.dialogs == [] and s.errors == []


def test_users_page_makes_a_user_and_an_api_key_shown_once(admin_site: Site) -> None:
    s = admin_site
    with s.page("admin", "users", permissions=["clipboard-read", "clipboard-write"]) as page:
        page.click("[data-action=add-user]")
        dialog = page.locator("dialog[open]")
        dialog.locator("#user-name").fill("otto")
        dialog.locator("#user-password").fill("short")
        dialog.locator("#user-role").select_option("operator")
        dialog.locator("[data-action=save]").click()
        dialog.locator(".error-box, .adm-field-error").first.wait_for(timeout=TIMEOUT_MS)
        dialog.locator("#user-password").fill(PASSWORD)
        dialog.locator("[data-action=save]").click()
        page.locator("tr[data-user=otto]").wait_for(timeout=TIMEOUT_MS)
        assert "operator" in page.locator("tr[data-user=otto]").inner_text()
        otto = next(u for u in s.server.auth.store.users() if u.name == "otto")
        # One camera, with whatever the role allows there.
        page.locator("tr[data-user=otto] [data-action=grants]").click()
        dialog = page.locator("dialog[open]")
        dialog.locator("tr[data-grant=door] select").select_option("role")
        dialog.locator("[data-action=save]").click()
        page.locator("dialog[open]").wait_for(state="detached", timeout=TIMEOUT_MS)
        assert s.server.auth.store.grants(otto.id) == [Grant("door", None)]
        shot(page, "users")

        page.click("[data-tab=keys]")
        page.click("[data-action=add-key]")
        dialog = page.locator("dialog[open]")
        dialog.locator("#key-name").fill("backup script")
        dialog.locator("#key-owner").select_option(str(otto.id))
        dialog.locator("input[name=key-playback]").check()
        dialog.locator("[data-action=save]").click()
        secret = dialog.locator(".users-secret-value")
        secret.wait_for(timeout=TIMEOUT_MS)
        key = secret.input_value()
        assert len(key) > 20
        dialog.locator("[data-action=copy]").click()
        dialog.get_by_text("Copied").wait_for(timeout=TIMEOUT_MS)
        assert page.evaluate("navigator.clipboard.readText()") == key
        me = httpx.get(f"{s.base}/api/v1/auth/me", headers={"X-API-Key": key}).json()
        assert me["user"]["name"] == "otto" and me["via"] == "api_key"
        assert sorted(me["actions"]) == ["live", "playback", "view"]
        dialog.locator("[data-action=done]").click()
        row = page.locator("tr[data-key='backup script']")
        row.wait_for(timeout=TIMEOUT_MS)
        prefix = row.locator("code").inner_text().rstrip("…")
        assert prefix in key and key not in page.content()  # shown once only

        page.click("[data-tab=roles]")
        page.click("[data-action=add-role]")
        dialog = page.locator("dialog[open]")
        dialog.locator("#role-name").fill("night-shift")
        dialog.locator("input[name=role-playback]").check()
        dialog.locator("[data-action=save]").click()
        page.locator("tr[data-role=night-shift]").wait_for(timeout=TIMEOUT_MS)
        night = next(r for r in s.server.auth.store.roles() if r.name == "night-shift")
        assert night.actions == {Action.VIEW, Action.LIVE, Action.PLAYBACK}
        assert page.locator("tr[data-role=admin] [data-action=edit]").count() == 0  # built in

        page.click("[data-tab=audit]")
        page.locator("[data-verified=true]").wait_for(timeout=TIMEOUT_MS)
        page.locator("tr[data-seq]", has_text="user.create").first.wait_for(timeout=TIMEOUT_MS)
        assert page.locator("tr[data-seq]", has_text="api_key.create").count() == 1
        assert re.search(r"\d+ entries", page.locator(".users-verify").inner_text())
    assert s.errors == []


def test_system_page_shows_health_rates_and_version(admin_site: Site) -> None:
    s = admin_site
    with s.page("admin", "system") as page:
        row = page.locator("tr[data-camera=door][data-state=online]")
        row.wait_for(timeout=TIMEOUT_MS)
        assert page.locator("[data-version]").get_attribute("data-version") == vms.__version__
        assert "Front door" in row.inner_text()
        # The recording rate is a difference of two polls: it appears at the second.
        rate = page.locator("tr[data-camera=door] td[data-rate]")
        until(page, "el => Number(el.dataset.rate) > 0", rate.element_handle())
        assert "bit/s" in rate.inner_text()
        assert page.locator("tr[data-camera=xss][data-state=disabled]").count() == 1
        assert page.locator("tr[data-root=r1][data-state=ok]").count() == 1
        cards = page.locator("[data-card=cameras]").inner_text()
        online = sum(c.health.state == "online" for c in s.server.cameras)
        assert f"{online} of {len(s.server.cameras)} cameras online" in cards
        shot(page, "system")
    assert s.errors == []


def test_pages_fold_to_a_phone_width_in_portuguese(admin_site: Site) -> None:
    s = admin_site
    with s.page("admin", "cameras", theme="light", lang="pt-BR", is_mobile=True,
                viewport={"width": 360, "height": 740}) as page:  # fmt: skip
        page.locator("tr[data-camera=door]").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("h1").inner_text() == "Câmeras"
        assert "Online" in page.locator("tr[data-camera=door]").inner_text()
        for route in ("cameras", "system", "users", "exports", "events"):
            page.goto(f"{s.base}/#/{route}")
            page.locator(".adm-page").wait_for(timeout=TIMEOUT_MS)
            page.wait_for_load_state("networkidle")
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 360, (route, wide)
    assert s.errors == []


def test_a_server_that_cannot_be_reached_is_said_on_every_page(admin_site: Site) -> None:
    s = admin_site
    with s.page("admin", "cameras") as page:
        page.locator("tr[data-camera=door]").wait_for(timeout=TIMEOUT_MS)
        # The network fails under the page (the edge): every data request is dropped.
        page.route("**/api/v1/**", lambda route: route.abort("connectionrefused"))
        for route in ("cameras", "events", "exports", "users", "system"):
            page.goto(f"{s.base}/#/{route}")
            box = page.locator(".adm-page .error-box").first
            box.wait_for(timeout=TIMEOUT_MS)
            assert "The server cannot be reached" in box.inner_text(), route
        page.unroute("**/api/v1/**")
        page.locator(".adm-page .error-box").first.get_by_role("button").click()
        page.locator("tr[data-camera=door]").wait_for(timeout=TIMEOUT_MS)  # tried again
    assert s.errors == []
