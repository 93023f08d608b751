"""Failed logins counted per client address and per user name, and who the client is.

A sliding window in memory: ``failures`` failed logins within ``window_s`` block further
attempts from that address, or on that name, until the oldest of them leaves the window. The
caller asks :meth:`LoginLimiter.check` before verifying a password, so a blocked attempt costs
no argon2 work. Counts are lost on restart (docs/design/security.md, "Rate limiting").

The client address is the TCP peer unless the peer is a trusted proxy; only then is
``X-Forwarded-For`` read (:func:`client_address`).
"""

from __future__ import annotations

import collections
import ipaddress
import math
import threading
from collections.abc import Sequence

from vms.clock import Clock
from vms.errors import rate_limited

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Keys kept at most; past it the oldest entries are dropped, so a flood of addresses cannot
# grow the table without bound (it can only forget some counts early).
MAX_KEYS = 100_000


class LoginLimiter:
    def __init__(self, clock: Clock, failures: int, window_s: float) -> None:
        self.clock = clock
        self.failures = failures
        self.window_s = window_s
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def check(self, address: str, name: str) -> None:
        """RATE_LIMITED (with Retry-After) if the address or the name is blocked."""
        now = self.clock.monotonic()
        with self._lock:
            wait = max(self._wait(f"addr:{address}", now), self._wait(f"name:{name}", now))
        if wait > 0:
            raise rate_limited(
                "too many failed logins: try again later", retry_after_s=math.ceil(wait)
            )

    def failed(self, address: str, name: str) -> None:
        now = self.clock.monotonic()
        with self._lock:
            for key in (f"addr:{address}", f"name:{name}"):
                times = self._seen.pop(key, None) or collections.deque()
                times.append(now)
                while len(times) > self.failures:
                    times.popleft()
                self._seen[key] = times
            while len(self._seen) > MAX_KEYS:
                self._seen.popitem(last=False)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._seen.pop(f"name:{name}", None)

    def _wait(self, key: str, now: float) -> float:
        times = self._seen.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) < self.failures:
            return 0.0
        return times[0] + self.window_s - now


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> str:
    """The client's address: ``peer``, or, when ``peer`` is a trusted proxy, the rightmost
    address of ``X-Forwarded-For`` that is not itself a trusted proxy. Anyone can write that
    header; only the proxies we run append to it truthfully, so it is read from the right and
    only as far as our own proxies go."""
    if peer is None:
        return "unknown"
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",")]
    client = peer
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return client  # garbage from beyond our proxies: stop at the last good hop
        client = str(ip)
        if not _trusted(client, trusted):
            return client
    return client


def _trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip: IPAddress = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
