"""The web client's message catalogs (src/vms/web/i18n/<lang>/<catalog>.json): English and
Brazilian Portuguese have the same catalogs with the same keys and the same placeholders, and
every key the JavaScript asks for with a literal, ``t("...")``, exists where the client will look
for it at run time (js/i18n.js): ``"<catalog>.<key>"`` in that catalog, any other key in the
page's own catalog or in ``common``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

WEB = Path(__file__).resolve().parents[1] / "src" / "vms" / "web"
I18N = WEB / "i18n"
JS = WEB / "js"
LANGS = ("en", "pt-BR")
PLURAL_FORMS = {"zero", "one", "two", "few", "many", "other"}
# t("key") or t('key') or t(`key`) (or ctx.t(...)) with no ${...} in it: a literal key. Template keys with parts
# (t(`common.nav.${name}`)) are the code's business; the literal ones are checked here.
T_CALL = re.compile(
    r"(?:(?<![\w.$])|(?<=\bctx\.))t\(\s*(?:\"([^\"\n]+)\"|'([^'\n]+)'|`([^`$\n]+)`)"
)
PAGE_CATALOG = re.compile(r"export\s+const\s+catalog\s*=\s*[\"']([\w-]+)[\"']")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def catalogs(lang: str) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((I18N / lang).glob("*.json"))}


def placeholders(message: Any) -> set[str]:
    texts = message.values() if isinstance(message, dict) else [message]
    return {name for text in texts for name in PLACEHOLDER.findall(text)}


def code(path: Path) -> str:
    """The file without its comment lines (their examples are not calls)."""
    lines = path.read_text().splitlines()
    return "\n".join(x for x in lines if not x.lstrip().startswith(("//", "/*", "*")))


def keys_used(path: Path) -> list[str]:
    return [next(g for g in m.groups() if g) for m in T_CALL.finditer(code(path))]


def test_both_languages_have_the_same_catalogs_and_keys() -> None:
    en, pt = catalogs("en"), catalogs("pt-BR")
    assert "common" in en, "the shell's catalog is missing"
    assert set(en) == set(pt), f"catalogs of one language only: {set(en) ^ set(pt)}"
    for name in en:
        only_en = set(en[name]) - set(pt[name])
        only_pt = set(pt[name]) - set(en[name])
        assert not only_en, f"{name}: keys missing in pt-BR: {sorted(only_en)}"
        assert not only_pt, f"{name}: keys missing in en: {sorted(only_pt)}"
        for key, message in en[name].items():
            assert placeholders(message) == placeholders(pt[name][key]), (name, key)


@pytest.mark.parametrize("lang", LANGS)
def test_every_message_is_text_or_plural_forms(lang: str) -> None:
    for name, messages in catalogs(lang).items():
        assert isinstance(messages, dict), name
        for key, message in messages.items():
            if isinstance(message, dict):
                assert "other" in message and set(message) <= PLURAL_FORMS, (lang, name, key)
                assert all(isinstance(v, str) and v.strip() for v in message.values())
            else:
                assert isinstance(message, str) and message.strip(), (lang, name, key)


def test_every_literal_key_in_the_javascript_exists() -> None:
    found = catalogs("en")
    every = set().union(*(set(c) for c in found.values()))
    checked = 0
    for path in sorted(JS.rglob("*.js")):
        rel = path.relative_to(WEB)
        page = None
        if path.parent == JS / "pages":
            declared = PAGE_CATALOG.search(path.read_text())
            assert declared, f"{rel}: a page module must export its catalog"
            page = declared[1]
            for lang in LANGS:
                assert (I18N / lang / f"{page}.json").is_file(), f"{rel}: no {lang}/{page}.json"
        for key in keys_used(path):
            checked += 1
            prefix, _, rest = key.partition(".")
            if rest and prefix in found and (page is None or prefix in (page, "common")):
                assert rest in found[prefix], f"{rel}: t({key!r}): no {rest!r} in {prefix}"
            elif page is not None:
                assert key in found[page] or key in found["common"], (
                    f"{rel}: t({key!r}) is in neither {page} nor common"
                )
            else:  # shared code runs under whichever page is open
                assert key in every, f"{rel}: t({key!r}) is in no catalog"
    assert checked >= 40  # the scan finds the shell's own keys: it is looking at the code


def test_the_scan_sees_keys_in_all_their_spellings(tmp_path: Path) -> None:
    source = tmp_path / "x.js"
    source.write_text(
        'a = t("one.key"); b = t(\'two\', {n: 1}); c = html`${t(`three`)}`;\n'
        "d = t(`dyn.${x}`); e = fmt.t('no'); f = set('no'); g = ctx.t(\"four\");\n"
        '  // t("in.a.comment")\n'
    )
    assert keys_used(source) == ["one.key", "two", "three", "four"]
