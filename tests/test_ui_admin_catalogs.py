"""The administration pages' messages, beyond what every page's check covers
(tests/test_ui_catalogs.py): keys of the modules a page shares (js/pages/admin/*.js, the storage
table of cameras.js shown on System too) are in the catalog of each page that runs them, and
the keys made from the server's own names (states, record modes, actions) exist for every name
the server has, so a new state in Python breaks this test rather than showing a raw key."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from vms.auth.rbac import Action
from vms.config import RecordMode
from vms.export.jobs import State as ExportState
from vms.health import State

WEB = Path(__file__).resolve().parents[1] / "src" / "vms" / "web"
PAGES = WEB / "js" / "pages"
LANGS = ("en", "pt-BR")
T_CALL = re.compile(r"(?<![\w.$])t\(\s*(?:\"([^\"\n]+)\"|`([^`$\n]+)`)")

# Module (or a function in it) → the page catalogs it runs under.
SHARED = {
    "admin/keys.js": ["users"],
    "admin/audit.js": ["users"],
    "cameras.js#StorageRoots": ["cameras", "system"],
}


def catalog(lang: str, name: str) -> dict[str, Any]:
    return json.loads((WEB / "i18n" / lang / f"{name}.json").read_text())


def keys_in(text: str) -> set[str]:
    return {a or b for a, b in T_CALL.findall(text)}


def function_text(path: Path, name: str) -> str:
    text = path.read_text()
    start = text.index(f"function {name}(")
    end = text.find("\nfunction ", start + 1)
    end2 = text.find("\nexport function ", start + 1)
    ends = [e for e in (end, end2) if e > 0]
    return text[start : min(ends) if ends else len(text)]


@pytest.mark.parametrize("lang", LANGS)
def test_shared_modules_find_their_keys_in_every_page_that_runs_them(lang: str) -> None:
    checked = 0
    for where, pages in SHARED.items():
        file, _, function = where.partition("#")
        path = PAGES / file
        text = function_text(path, function) if function else path.read_text()
        keys = keys_in(text)
        assert keys, where
        for page in pages:
            missing = sorted(keys - set(catalog(lang, page)))
            assert not missing, f"{where} under {page} ({lang}): {missing}"
            checked += len(keys)
    assert checked > 50


FAMILIES: list[tuple[str, str, list[str]]] = [
    ("cameras", "state_{}", [s.value for s in State]),
    ("system", "state_{}", [s.value for s in State]),
    ("system", "count_{}", [s.value for s in State if s is not State.ONLINE]),
    ("exports", "state_{}", [s.value for s in ExportState]),
    ("cameras", "record_{}", [m.value for m in RecordMode]),
    ("cameras", "storage_state_{}", ["ok", "degraded", "refused"]),
    ("system", "storage_state_{}", ["ok", "degraded", "refused"]),
    ("users", "action_{}", [a.value for a in Action]),
    ("users", "action_{}_help", [a.value for a in Action]),
    ("users", "tab_{}", ["users", "roles", "keys", "audit"]),
]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("page", "pattern", "names"), FAMILIES)
def test_keys_made_from_the_servers_names_exist(
    lang: str, page: str, pattern: str, names: list[str]
) -> None:
    messages = catalog(lang, page)
    missing = [pattern.format(n) for n in names if pattern.format(n) not in messages]
    assert not missing, f"{lang}/{page}.json lacks {missing}"


def test_the_event_labels_offered_are_translated() -> None:
    text = (PAGES / "events.js").read_text()
    labels = json.loads(re.search(r"const LABELS = (\[[^\]]*\]);", text)[1])  # type: ignore[index]
    assert "person" in labels
    for lang in LANGS:
        messages = catalog(lang, "events")
        assert [f"label_{x}" for x in labels if f"label_{x}" not in messages] == [], lang


def test_pages_render_server_names_through_their_families() -> None:
    # The families above are what the code builds: a renamed template breaks this.
    cameras = (PAGES / "cameras.js").read_text()
    assert "t(`state_${h.state}`)" in cameras and "t(`record_${cam.record}`)" in cameras
    assert "t(`storage_state_${r.state}`)" in cameras
    assert "t(`state_${job.state}`)" in (PAGES / "exports.js").read_text()
    system = (PAGES / "system.js").read_text()
    assert "t(`state_${h.state}`)" in system and "t(`count_${s}`" in system
    keys = (PAGES / "admin" / "keys.js").read_text()
    assert "t(`action_${a}`)" in keys and "t(`action_${a}_help`)" in keys
    assert "t(`tab_${name}`)" in (PAGES / "users.js").read_text()
