"""The live player page: ``GET /live`` and its files under ``/live/static/``.

Static files only, with no data in them and no credentials asked: the page logs in through the
API itself (a login form, or ``?token=<access token>``). What may be served is fixed when the
module loads: the files of ``vms/live/static`` whose names are plain (:data:`NAME`), and hls.js
where ``./dev setup`` fetched it (``.cache/vendor`` of a source checkout). A name in a request
is only ever looked up in that table, never joined to a path.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from vms.api.security import PAGE_CSP
from vms.errors import Kind, VmsError, capped

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[1] / "live" / "static"
VENDOR = Path(__file__).resolve().parents[3] / ".cache" / "vendor"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(js|css)")
TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
HEADERS = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"}


def _files() -> dict[str, Path]:
    found = {p.name: p for p in STATIC.iterdir() if p.is_file() and NAME.fullmatch(p.name)}
    hls = sorted(VENDOR.glob("hls.js-*/hls.min.js"))
    if hls:
        found["vendor/hls.min.js"] = hls[-1]
    return found


FILES = _files()


def _file(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise VmsError(Kind.NOT_FOUND, f"no file {capped(name)}")
    kind = TYPES[path.suffix.lstrip(".")]
    return FileResponse(path, media_type=kind, headers=HEADERS)


@router.get("/live")
def page() -> Response:
    return FileResponse(STATIC / "player.html", media_type="text/html; charset=utf-8",
                        headers=HEADERS)  # fmt: skip


@router.get("/live/static/vendor/hls.min.js")
def hls_js() -> Response:
    return _file("vendor/hls.min.js")


@router.get("/live/static/{name}")
def static(name: str) -> Response:
    return _file(name)
