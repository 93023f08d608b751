"""The web client's calls against the API's OpenAPI schema: a route renamed, removed or given
another method breaks this test, not the user.

The scan reads src/vms/web/js/**/*.js (no build step, so no generated client: this is the
check instead, docs/design/ui.md). It finds

- ``api("...")`` / ``api('...')`` / ``api(`...`)`` calls, ``ctx.api(...)`` too (js/api.js: a
  path under /api/v1, or relative to it), with the ``method:`` of their options (GET when none);
- ``fetch(...)`` calls on a literal /api/v1 URL, with their method (and js/api.js's own
  ``send(...)``, which logs in, refreshes and sets up);
- ``new WebSocket(...)`` on a literal /api/v1 URL (checked against the app's WebSocket routes:
  OpenAPI does not list them);
- any other string literal holding an /api/v1 path (a URL built for a <video>, a player, a
  download link): that path must exist for some method.

Template parts (``${id}``) stand for path parameters: ``/api/v1/cameras/${id}/thumbnail.jpg``
matches ``/api/v1/cameras/{camera_id}/thumbnail.jpg``. A query string, or a template part that
ends the path without a slash before it (``/api/v1/events${query}``), is not part of the path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.routing import APIWebSocketRoute

from vms.api.routes import ROUTERS, create_api

WEB_JS = Path(__file__).resolve().parents[1] / "src" / "vms" / "web" / "js"
PREFIX = "/api/v1"
# A JS string literal: "..." or '...' or `...` (templates may hold ${...} with no backtick).
LITERAL = r"(?:\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`)"
# send(): js/api.js's own low-level call (login, refresh, setup), checked as a fetch.
CALL = re.compile(
    r"(?:(?<![\w.$])|(?<=\bctx\.))(api|fetch|send|new\s+WebSocket)\(\s*(" + LITERAL + ")"
)
ANY_LITERAL = re.compile(LITERAL)
METHOD = re.compile(r"\bmethod\s*:\s*[\"'](\w+)[\"']")


@dataclass(frozen=True)
class Use:
    where: str  # file:line
    kind: str  # "api", "fetch", "ws" or "url"
    method: str | None  # None: any method will do
    path: str  # as written, template parts kept


def _call_args(text: str, start: int) -> str:
    """The text of a call's arguments from `start` (just after the opening parenthesis) to
    its matching close, strings and template parts skipped over roughly (enough here)."""
    depth, i = 1, start
    while i < len(text) and depth:
        c = text[i]
        if c in "\"'`":
            m = ANY_LITERAL.match(text, i)
            i = m.end() if m else i + 1
            continue
        depth += c in "([{"
        depth -= c in ")]}"
        i += 1
    return text[start:i]


def uses_in(text: str, name: str) -> list[Use]:
    found: list[Use] = []
    taken: set[int] = set()
    lines = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(pos: int) -> str:
        return f"{name}:{sum(1 for x in lines if x <= pos)}"

    for m in CALL.finditer(text):
        fn, literal = m[1], m[2]
        path = literal[1:-1]
        taken.add(m.start(2))
        if fn != "api" and PREFIX not in path:
            continue
        args = _call_args(text, m.start(2))
        method = METHOD.search(args[len(literal) :])
        if fn == "api":
            found.append(Use(line(m.start()), "api", (method[1] if method else "GET").upper(),
                             path))  # fmt: skip
        elif fn in ("fetch", "send"):
            found.append(Use(line(m.start()), "fetch", (method[1] if method else "GET").upper(),
                             path))  # fmt: skip
        else:
            found.append(Use(line(m.start()), "ws", None, path))
    for m in ANY_LITERAL.finditer(text):
        if m.start() in taken or PREFIX + "/" not in m[0]:
            continue
        found.append(Use(line(m.start()), "url", None, m[0][1:-1]))
    return found


def scan(root: Path = WEB_JS) -> list[Use]:
    out: list[Use] = []
    for path in sorted(root.rglob("*.js")):
        lines = path.read_text().splitlines()
        # Comment lines hold examples, not calls.
        text = "\n".join("" if x.lstrip().startswith(("//", "/*", "*")) else x for x in lines)
        out += uses_in(text, str(path.relative_to(root)))
    return out


def sample(path: str) -> str | None:
    """The path a call names, template parts filled with a sample segment; None when it is no
    path of this API (a string that only mentions it)."""
    start = path.find(PREFIX + "/")
    if start >= 0:
        path = path[start:]  # after an origin or a ${base}, if any
    elif re.match(r"[a-z]", path):
        path = f"{PREFIX}/{path}"  # api("cameras"): relative to /api/v1
    else:
        return None
    path = path.split("?", 1)[0].split("#", 1)[0]
    # A template part that ends the path with no slash before it: a query string, likely.
    path = re.sub(r"(?<!/)\$\{[^}]*\}$", "", path)
    return re.sub(r"\$\{[^}]*\}", "x1", path)


class Routes:
    def __init__(self) -> None:
        app = create_api()
        schema = app.openapi()
        self.http = {
            (method.upper(), path) for path, ops in schema["paths"].items() for method in ops
        }
        # Included routers keep their routes (FastAPI wraps them): ROUTERS is the table.
        self.ws = {r.path for router in ROUTERS for r in router.routes
                   if isinstance(r, APIWebSocketRoute)}  # fmt: skip
        assert self.ws, "no WebSocket route found: the live view has one"

    @staticmethod
    def _matches(template: str, path: str) -> bool:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        return re.fullmatch(pattern, path) is not None

    def check(self, use: Use) -> str | None:
        """None when the route exists; else what is wrong."""
        path = sample(use.path)
        if path is None:
            return None
        if use.kind == "ws" or path.endswith(".ws"):
            ok = any(self._matches(t, path) for t in self.ws)
            return None if ok else f"no WebSocket route {path}"
        same_path = [(m, t) for m, t in self.http if self._matches(t, path)]
        if not same_path:
            return f"404: no route {path}"
        if use.method is not None and all(m != use.method for m, _ in same_path):
            have = sorted({m for m, _ in same_path})
            return f"405: {use.method} {path} (the route takes {', '.join(have)})"
        return None


@pytest.fixture(scope="module")
def routes() -> Routes:
    return Routes()


def test_every_api_call_of_the_web_client_is_a_route(routes: Routes) -> None:
    uses = scan()
    assert any(u.kind == "api" for u in uses), "the scan found no api() call: is it looking?"
    wrong = [f"{u.where} {u.method or ''} {u.path}: {why}" for u in uses
             if (why := routes.check(u))]  # fmt: skip
    assert not wrong, "the web client calls routes the API does not have:\n" + "\n".join(wrong)


def test_the_check_fails_a_wrong_route(routes: Routes) -> None:
    js = """
      api("/api/v1/auth/me");
      ctx.api(`cameras/${id}/recordings`, { query: {from: 1} });
      api("/api/v1/auth/login", { method: "POST", body });
      fetch(`/api/v1/cameras/${id}/thumbnail.jpg?token=${tok}`);
      new WebSocket(`${base}/api/v1/cameras/${id}/live.ws?token=${t}`);
      const url = `/api/v1/cameras/${id}/playback.mp4?from=${a}`;
      api(`/api/v1/events${query}`);
      api("/api/v1/camera");
      api("/api/v1/auth/me", { method: "DELETE" });
      const u2 = `/api/v1/cameras/${id}/nope.jpg`;
      new WebSocket(`/api/v1/cameras/${id}/live.socket`);
      fetch("/api/v1/auth/login", { method: "PATCH" });
    """
    uses = uses_in(js, "x.js")
    uses.sort(key=lambda u: int(u.where.split(":")[1]))  # in the order written
    assert [u.kind for u in uses] == ["api", "api", "api", "fetch", "ws", "url", "api", "api",
                                      "api", "url", "ws", "fetch"]  # fmt: skip
    verdicts = [routes.check(u) for u in uses]
    assert verdicts[:7] == [None] * 7, list(zip(uses, verdicts, strict=True))[:7]
    assert verdicts[7] == "404: no route /api/v1/camera"
    assert verdicts[8] == "405: DELETE /api/v1/auth/me (the route takes GET)"
    assert verdicts[9] == "404: no route /api/v1/cameras/x1/nope.jpg"
    assert verdicts[10] == "no WebSocket route /api/v1/cameras/x1/live.socket"
    assert (verdicts[11] or "").startswith("405: PATCH /api/v1/auth/login")
