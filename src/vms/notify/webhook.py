"""The webhook sink: one signed JSON POST per event or health change, retried with backoff.

The request::

    POST <url>
    Content-Type: application/json
    X-VMS-Timestamp: 1790000000
    X-VMS-Signature: sha256=<hex HMAC-SHA256(secret, "1790000000" + "." + body)>

    {"kind": "event", "data": {...}}

``kind`` is ``event`` (``data``: ``{"type", "before", "after"}``) or ``health`` (``data``: the
camera's health). The timestamp is Unix seconds when the try was sent, and it is signed with
the body, so a receiver that checks both (:func:`verify` with ``max_age_s``) rejects a body
replayed later as well as one altered. A receiver in Python::

    from vms.notify.webhook import verify
    ok = verify(secret, request.headers["X-VMS-Timestamp"], await request.body(),
                request.headers["X-VMS-Signature"], max_age_s=300)

Any other language: compute HMAC-SHA256 with the secret as key over the timestamp header's
bytes, one ``.`` and the body's raw bytes, hex-encode it, and compare it in constant time
with the part of ``X-VMS-Signature`` after ``sha256=``.

Retries: a timeout, a connection error, 5xx, 408 or 429 is tried again after a pause that
doubles from ``backoff[0]`` up to ``backoff[1]`` (±20 % jitter, so that many messages do not
all retry at once); a ``Retry-After`` header (seconds or an HTTP date) replaces the pause,
capped at ``backoff[1]``. Any other 4xx, or a redirect, is given up at once: trying again
would not change the answer. After ``max_tries`` the message is given up.

Traps:

- Redirects are never followed: a receiver that answers 3xx could send the signed body (and
  our retries) anywhere; it is a configuration error to fix, reported as such.
- ``timeout_s`` bounds the whole call (connect, send, wait, read), not each phase.
- The sink's name (logs, stats) is the URL without user, password and query string: those
  may carry a token. The secret is never logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import logging
import random
import time

import httpx

from vms.detection_config import WebhookConfig
from vms.errors import Kind, VmsError
from vms.events.model import CountMessage, EventMessage, HealthMessage, Message, MotionMessage

log = logging.getLogger(__name__)

_KIND: dict[type, str] = {
    EventMessage: "event",
    HealthMessage: "health",
    MotionMessage: "motion",
    CountMessage: "count",
}


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-VMS-Signature`` value: ``sha256=`` and the hex HMAC of ``timestamp.body``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    max_age_s: float | None = None,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` signs ``timestamp`` and ``body`` with ``secret`` (constant time).

    With ``max_age_s``, a timestamp further than that from ``now`` (default: the clock) is
    refused too: a captured request replayed later does not pass.
    """
    if max_age_s is not None:
        try:
            age = abs((time.time() if now is None else now) - int(timestamp))
        except ValueError:
            return False
        if age > max_age_s:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode())


def body_of(message: Message) -> bytes:
    """The JSON body posted for ``message``."""
    value = {"kind": _KIND[type(message)], "data": message.to_json()}
    return json.dumps(value, separators=(",", ":")).encode()


def display_url(url: str) -> str:
    """``url`` as logs and metrics name it: scheme, host and port only. User, password, query
    and path may all carry a secret (chat services put the token in the path)."""
    u = httpx.URL(url)
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}"


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (from seconds or an HTTP date); None when absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class WebhookSink:
    """POSTs events and health to a URL, signed; see the module doc."""

    def __init__(
        self, config: WebhookConfig, *, backoff: tuple[float, float] = (1.0, 60.0)
    ) -> None:
        if not 0 < backoff[0] <= backoff[1]:
            raise VmsError(Kind.INVALID_ARGUMENT, f"webhook backoff {backoff}: not 0 < low ≤ high")
        self.config = config
        self.url = display_url(config.url)
        self.name = f"webhook {self.url}"
        self._backoff = backoff
        self._client: httpx.AsyncClient | None = None

    def wants(self, message: Message) -> bool:
        return isinstance(message, EventMessage | HealthMessage)

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=self.config.timeout_s,
            headers={"User-Agent": "vms-webhook"},
        )

    async def deliver(self, message: Message) -> None:
        if self._client is None:
            raise VmsError(Kind.INTERNAL, f"{self.name}: delivered to before start")
        body = body_of(message)
        secret = self.config.secret.get_secret_value()
        low, high = self._backoff
        pause = low
        why = ""
        for attempt in range(1, self.config.max_tries + 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-VMS-Timestamp": timestamp,
                "X-VMS-Signature": sign(secret, timestamp, body),
            }
            wait: float | None = None
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    r = await self._client.post(self.config.url, content=body, headers=headers)
            except (TimeoutError, httpx.TimeoutException):
                why = f"no answer within {self.config.timeout_s:g} s"
            except httpx.TransportError as e:
                why = f"connection failed ({type(e).__name__})"
            else:
                status = r.status_code
                if 200 <= status < 300:
                    return
                why = f"HTTP {status}"
                if 300 <= status < 400:
                    raise VmsError(
                        Kind.INVALID_ARGUMENT,
                        f"{self.name} answered a redirect ({why}), which is never followed; "
                        "given up",
                    )
                if status < 500 and status not in (408, 429):
                    raise VmsError(
                        Kind.INVALID_ARGUMENT, f"{self.name} refused the message ({why}); given up"
                    )
                wait = retry_after_s(r.headers.get("Retry-After"))
            if attempt == self.config.max_tries:
                break
            if wait is None:
                wait = pause * random.uniform(0.8, 1.2)  # the jitter goes either side of the cap
                pause = min(pause * 2, high)
            else:
                wait = min(wait, high)
            log.debug("%s: try %d failed (%s); again in %.2f s", self.name, attempt, why, wait)
            await asyncio.sleep(wait)
        raise VmsError(
            Kind.UNAVAILABLE,
            f"{self.name}: given up after {self.config.max_tries} tries (last: {why})",
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
