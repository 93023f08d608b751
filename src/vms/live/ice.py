"""The STUN and TURN servers of the configuration (``live.stun_servers``, ``live.turn_servers``),
in the three forms they are needed in: for the server's own peer connections (aiortc), for a
browser's ``RTCPeerConnection`` (``GET /api/v1/live/ice-servers``, JSON in the shape of
``RTCIceServer``), and as the ``Link`` headers of a WHEP answer (RFC 9725 §4.6).

The traps:

- A TURN password is a credential: it goes only to a caller allowed to watch live (the routes
  that send it are guarded), never into a log line or an error message. The configuration keeps
  it a ``SecretStr``; it is unwrapped here, at the last moment, and nowhere else.
- A browser gathers its candidates before it sends its offer (this server does not trickle), so
  it needs the servers *before* the WHEP ``POST``: the player (``whep.js``) asks the route
  first. The answer's Link headers are for WHEP clients that take them from there, as RFC 9725
  has it.
- A Link header's values are quoted strings: ``"`` and ``\\`` are escaped, and the configuration
  admits printable ASCII only (no CR or LF can end the header early).
- aiortc, given no servers at all, asks Google's STUN server: it is given an empty list instead.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCIceServer

from vms.config import LiveConfig, TurnServer

REL = "ice-server"


def aiortc_servers(config: LiveConfig) -> list[RTCIceServer]:
    """For the server's own peer connections (an empty list, never None)."""
    servers = [RTCIceServer(urls=url) for url in config.stun_servers]
    for t in config.turn_servers:
        username, credential = _credentials(t)
        servers.append(RTCIceServer(urls=t.url, username=username, credential=credential))
    return servers


def browser_servers(config: LiveConfig) -> list[dict[str, Any]]:
    """For a browser's ``RTCPeerConnection({iceServers})``: STUN servers together, then each
    TURN server with its credentials."""
    out: list[dict[str, Any]] = []
    if config.stun_servers:
        out.append({"urls": list(config.stun_servers)})
    for t in config.turn_servers:
        username, credential = _credentials(t)
        server: dict[str, Any] = {"urls": [t.url]}
        if username is not None:
            server["username"] = username
        if credential is not None:
            server["credential"] = credential
        out.append(server)
    return out


def link_headers(config: LiveConfig) -> list[str]:
    """The values of a WHEP answer's ``Link`` headers, one per server."""
    out = [f'<{url}>; rel="{REL}"' for url in config.stun_servers]
    for t in config.turn_servers:
        value = f'<{t.url}>; rel="{REL}"'
        username, credential = _credentials(t)
        if username is not None:
            value += f"; username={_quoted(username)}"
        if credential is not None:
            value += f'; credential={_quoted(credential)}; credential-type="password"'
        out.append(value)
    return out


def _credentials(t: TurnServer) -> tuple[str | None, str | None]:
    return t.username or None, t.credential.get_secret_value() or None


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
