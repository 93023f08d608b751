"""Web hardening for every answer: security headers, and state-changing requests from other
web pages refused.

**Headers.** Every response carries ``Content-Security-Policy: default-src 'self';
frame-ancestors 'none'; object-src 'none'; base-uri 'none'`` (unless the route set a policy of
its own: the API docs page, see :func:`docs_csp`, and the live player, :data:`PAGE_CSP`),
``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and ``X-Frame-Options:
DENY``. The API answers JSON, so a camera name such as ``<script>`` is data, escaped by JSON and
never run.

**WebSockets** (live view) pass through untouched: the origin check is for requests a page
could make with a user's ambient credentials, and this API has none (no cookies): a WebSocket
carries a media token or a header, which another site's page does not have.

**Origin check.** A ``POST``, ``PUT``, ``PATCH`` or ``DELETE`` that carries an ``Origin``
header is refused with 403 unless that origin is the server's own (its host and port are the
request's ``Host``) or one of ``server.cors_origins``. Browsers send ``Origin`` on every such
request made by a page, so a page of another site cannot change cameras through a user's
browser; clients that are not browsers (the cli, curl, scripts) send none and are not affected.
It is no defence against DNS rebinding (a hostile name pointed at this server is then "the
server's own"): authentication is. ``Origin: null`` (sandboxed frames, files) is refused.

**CORS** is off (no ``Access-Control-*`` header: other origins' pages cannot read answers)
unless ``server.cors_origins`` names origins, which may then call the API.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vms.errors import Kind, VmsError

CSP = "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
# The live player page (vms.api.pages): its own scripts only; the video plays from a MediaSource
# (a blob: URL) and hls.js runs its worker from a blob: too. 'self' covers the page's WebSocket
# (ws: and wss: to its own host and port).
PAGE_CSP = (
    "default-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; "
    "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# No request of this API carries more (a camera with its streams is a few kB); a larger body is
# refused before it is read: by its Content-Length, or once that much has arrived chunked.
MAX_BODY = 1 << 20
_DEFAULT_PORTS = {"http": 80, "https": 443}
CDN = "https://cdn.jsdelivr.net"
FAVICON = "https://fastapi.tiangolo.com"


def docs_csp(page: str) -> str:
    """The policy of the API docs page (FastAPI's Swagger UI): its script and stylesheet come
    from the CDN it names and one inline script starts it, allowed by its hash and nothing
    else. The docs need that CDN to be reachable from the browser; the API never does."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    )
    return (
        f"default-src 'self'; script-src 'self' {CDN} {hashes}; "
        f"style-src 'self' {CDN} 'unsafe-inline'; img-src 'self' data: {FAVICON}; "
        "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
    )


def _endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) of an origin, or None when it is not an http(s) origin."""
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError:
        return None
    if p.scheme not in _DEFAULT_PORTS or not p.hostname:
        return None
    return p.hostname.lower(), port or _DEFAULT_PORTS[p.scheme]


def origin_allowed(origin: str, host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a state-changing request from ``origin`` may go on: the server's own origin
    (same host and port as ``Host``) or one configured."""
    if origin.rstrip("/").lower() in allowed:
        return True
    mine = _endpoint(origin)
    if mine is None or not host:
        return False
    scheme = urlsplit(origin).scheme
    # Host without a port: the default port of the scheme the page used (a proxy in front
    # may speak another scheme to this server).
    theirs = _endpoint(f"{scheme}://{host}")
    return theirs == mine


class SecurityMiddleware:
    """Headers on every answer; state-changing requests from foreign origins refused."""

    def __init__(self, app: ASGIApp, *, allowed_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.allowed = [o.rstrip("/").lower() for o in allowed_origins]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = CSP
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        request_headers = Headers(scope=scope)
        length = request_headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _refuse(_too_large(), scope, receive, send_with_headers)
            return
        if scope["method"] in UNSAFE_METHODS:
            origin = request_headers.get("origin")
            if origin is not None and not origin_allowed(
                origin, request_headers.get("host"), self.allowed
            ):
                refused = VmsError(
                    Kind.FORBIDDEN,
                    "cross-origin request refused: this origin may not change anything here "
                    "(server.cors_origins)",
                )
                await _refuse(refused, scope, receive, send_with_headers)
                return
        if length is None and scope["method"] in UNSAFE_METHODS:
            # Chunked: read it here, up to the bound, and hand the app what was read.
            body = await _bounded_body(receive)
            if body is None:
                await _refuse(_too_large(), scope, receive, send_with_headers)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send_with_headers)


async def _bounded_body(receive: Receive) -> list[Message] | None:
    """The request's messages, or None once they carry more than :data:`MAX_BODY`."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages
        size += len(message.get("body", b""))
        if size > MAX_BODY:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def _too_large() -> VmsError:
    return VmsError(Kind.TOO_LARGE, f"the request body is over {MAX_BODY // 1024} KiB")


async def _refuse(error: VmsError, scope: Scope, receive: Receive, send: Send) -> None:
    answer = JSONResponse(error.to_dict(), status_code=error.kind.http_status)
    await answer(scope, receive, send)


def install(app: FastAPI, cors_origins: Sequence[str]) -> None:
    """CORS (only for ``cors_origins``), then the headers and the origin check around all."""
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Range"],
            # What a player page reads of a playback answer.
            expose_headers=[
                "Content-Range",
                "Accept-Ranges",
                "X-Playback-First",
                "X-Playback-Offset",
            ],
            allow_credentials=True,
        )
    app.add_middleware(SecurityMiddleware, allowed_origins=cors_origins)
