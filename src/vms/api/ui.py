"""The web client's files: ``GET /`` (the one page) and ``GET /ui/<path>`` (its scripts, styles
and message catalogs, and the vendored Preact, htm and hls.js).

Static files only, with no data in them and no credentials asked: the client logs in through
the API itself. What may be served is fixed when the module loads (:data:`FILES`): the files
under ``vms/web`` whose every path segment is plain (:data:`SEGMENT`, :data:`LEAF`), and the
vendored packages that ``./dev setup`` fetched into ``.cache/vendor`` of a source checkout
(:data:`VENDORED`). A path in a request is only ever looked up in that table, never joined to a
directory, so ``..`` or an encoded slash finds nothing. A file added under ``vms/web`` after the
server started is not served until it restarts.

Traps:

- The page's import map (bare ``preact``, ``preact/hooks``, ``htm`` for the modules) is an
  inline script; the policy allows it by its SHA-256 (:data:`UI_CSP`), computed here from
  ``index.html`` itself, so editing the map cannot leave a stale hash behind. No other inline
  script or style runs.
- Text files are answered gzip-compressed when the browser accepts it (the page-weight budget
  counts compressed bytes); the compressed copy is kept in memory, keyed by the file's size and
  modification time, so an edited file is compressed again. ``Vary: Accept-Encoding`` keeps a
  cache from handing the compressed copy to a client that did not ask for it.
- ``Cache-Control: no-cache`` with an ``ETag``: the browser revalidates each file (304, no body)
  instead of running yesterday's script against today's API.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import threading
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vms.errors import Kind, VmsError, capped

router = APIRouter(include_in_schema=False)

WEB = Path(__file__).resolve().parents[1] / "web"
VENDOR = Path(__file__).resolve().parents[3] / ".cache" / "vendor"
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
LEAF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.(js|mjs|css|json|svg|png|ico|woff2)")
TYPES = {
    "js": "text/javascript; charset=utf-8",
    "mjs": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "json": "application/json",
    "svg": "image/svg+xml",
    "png": "image/png",
    "ico": "image/x-icon",
    "woff2": "font/woff2",
    "html": "text/html; charset=utf-8",
}
COMPRESSIBLE = frozenset({"js", "mjs", "css", "json", "svg", "html"})
# (package directory glob under .cache/vendor, file in it) → the name under /ui/vendor/.
VENDORED = {
    "vendor/preact.mjs": ("preact-*", "preact.mjs"),
    "vendor/hooks.mjs": ("preact-*", "hooks.mjs"),
    "vendor/htm.mjs": ("htm-*", "htm.mjs"),
    "vendor/hls.min.js": ("hls.js-*", "hls.min.js"),
}
INDEX = WEB / "index.html"


def _import_map_hashes(page: str) -> str:
    scripts = re.findall(r'<script type="importmap">(.*?)</script>', page, re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in scripts
    )


def _policy() -> str:
    hashes = _import_map_hashes(INDEX.read_text()) if INDEX.is_file() else ""
    scripts = f"'self' {hashes}".strip()
    # Video plays from MediaSource (blob:) and hls.js runs a worker from a blob:; a snapshot
    # is shown from a blob: or a data: URL. 'self' covers the live WebSocket (same host and
    # port). WebRTC is outside CSP's reach. Styles: files only (Preact sets style properties
    # through the CSSOM, which no policy blocks).
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self'; "
        "img-src 'self' blob: data:; media-src 'self' blob:; worker-src 'self' blob:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; object-src 'none'; "
        "base-uri 'none'"
    )


UI_CSP = _policy()
HEADERS = {"Content-Security-Policy": UI_CSP, "Cache-Control": "no-cache"}


def _files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    if WEB.is_dir():
        for p in sorted(WEB.rglob("*")):
            rel = p.relative_to(WEB).parts
            if not p.is_file() or p == INDEX or not LEAF.fullmatch(rel[-1]):
                continue
            if rel[0] == "vendor" or not all(SEGMENT.fullmatch(s) for s in rel[:-1]):
                continue
            found["/".join(rel)] = p
    for name, (package, file) in VENDORED.items():
        versions = sorted(VENDOR.glob(f"{package}/{file}"))
        if versions:
            found[name] = versions[-1]
    return found


FILES = _files()

_lock = threading.Lock()
# path → (size, mtime_ns, etag, body, gzipped body or None)
_cache: dict[Path, tuple[int, int, str, bytes, bytes | None]] = {}


def _content(path: Path) -> tuple[str, bytes, bytes | None]:
    st = path.stat()
    with _lock:
        hit = _cache.get(path)
    if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2], hit[3], hit[4]
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    packed = gzip.compress(body, 9, mtime=0) if path.suffix[1:] in COMPRESSIBLE else None
    if packed is not None and len(packed) >= len(body):
        packed = None
    with _lock:
        _cache[path] = (st.st_size, st.st_mtime_ns, etag, body, packed)
    return etag, body, packed


def _answer(request: Request, path: Path) -> Response:
    etag, body, packed = _content(path)
    headers = dict(HEADERS, ETag=etag)
    if packed is not None:
        headers["Vary"] = "Accept-Encoding"
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    kind = TYPES[path.suffix.lstrip(".")]
    accepted = request.headers.get("accept-encoding", "")
    if packed is not None and "gzip" in accepted.lower():
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type=kind, headers=headers)
    return Response(body, media_type=kind, headers=headers)


@router.get("/")
def index(request: Request) -> Response:
    return _answer(request, INDEX)


@router.get("/ui/{path:path}")
def static(path: str, request: Request) -> Response:
    found = FILES.get(path)
    if found is None:
        raise VmsError(Kind.NOT_FOUND, f"no file {capped(path)}")
    return _answer(request, found)
