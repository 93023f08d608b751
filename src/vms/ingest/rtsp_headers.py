"""RTSP replies as field cameras write them, and the ``Authorization`` answer to a challenge.

Parsed leniently where cameras differ harmlessly (spaces, case, repeated or missing headers, an
SSRC in decimal, ``rtptime=-1``) and strictly where a guess would hang or crash the session:
a body size that is not a number, or too large, is an error that says so.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re

from vms.ingest.rtp import Media

MAX_RESPONSE = 64 * 1024  # an RTSP reply, head and body, is never larger


class RtspError(Exception):
    """A session failed; ``str()`` is the operator-facing reason (never holds a secret)."""


@dataclasses.dataclass
class Reply:
    """A reply's status line and headers (the first of each; names lower-cased)."""

    status: int
    reason: str
    headers: dict[str, str]
    # WWW-Authenticate, the one header cameras repeat: one challenge per scheme they offer.
    challenges: list[str]


def parse_head(head: str) -> Reply:
    lines = head.split("\r\n")
    m = re.match(r"RTSP/1\.\d (\d{3}) ?(.*)", lines[0])
    if not m:
        raise RtspError("no valid RTSP answer (garbage on the port)")
    headers: dict[str, str] = {}
    challenges: list[str] = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k, v = k.strip().lower(), v.strip()
        headers.setdefault(k, v)
        if k == "www-authenticate":
            challenges.append(v)
    return Reply(int(m.group(1)), m.group(2).strip()[:60], headers, challenges)


def content_length(value: str) -> int:
    """A reply's body size; a bad or oversized one is an error, never a wait or a crash."""
    value = value.strip()
    if not value:
        return 0
    if not re.fullmatch(r"[0-9]+", value):
        raise RtspError(f"invalid RTSP answer: Content-Length {value[:20]!r} is not a number")
    if int(value) > MAX_RESPONSE:
        raise RtspError(
            f"invalid RTSP answer: a body of {int(value)} bytes (Content-Length) is over the "
            f"{MAX_RESPONSE // 1024} kB limit"
        )
    return int(value)


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:([^\r\n]*)", re.IGNORECASE)


def body_length(buf: bytearray, start: int, end: int) -> int:
    """The body size announced by the reply head ``buf[start:end]``."""
    m = _CONTENT_LENGTH.search(buf, start, end)
    return content_length(m.group(1).decode("latin-1")) if m else 0


def parse_session(value: str) -> tuple[str, int | None]:
    """``Session: 708345999;timeout=60`` → the id and the timeout in seconds (or None)."""
    sid, _, params = value.partition(";")
    m = re.search(r"timeout\s*=\s*(\d+)", params)
    return sid.strip(), (int(m.group(1)) or None) if m else None


# --- Transport, RTP-Info ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transport:
    """What a SETUP reply's ``Transport`` header says about where the RTP goes."""

    tcp: bool
    interleaved: tuple[int, int] | None
    ssrc: int | None


def parse_transport(value: str) -> Transport:
    spec, *params = [p.strip() for p in value.split(",")[0].split(";")]
    fields: dict[str, str] = {}
    for p in params:
        k, _, v = p.partition("=")
        fields[k.strip().lower()] = v.strip().strip('"')
    interleaved = None
    m = re.fullmatch(r"(\d{1,3})(?:-(\d{1,3}))?", fields.get("interleaved", ""))
    if m and int(m.group(1)) <= 255:
        first = int(m.group(1))
        interleaved = (first, int(m.group(2)) if m.group(2) else first + 1)
    tcp = spec.upper().endswith("/TCP") or interleaved is not None
    return Transport(tcp, interleaved, _ssrc(fields.get("ssrc", "")))


def _ssrc(value: str) -> int | None:
    """RFC 2326 writes the SSRC as 8 hex digits; cameras also send fewer digits, a space
    inside, or a decimal number too long to be hex."""
    value = value.replace(" ", "")
    if re.fullmatch(r"[0-9A-Fa-f]{1,8}", value):
        return int(value, 16)
    if value.isdigit() and int(value) < 1 << 32:
        return int(value)
    return None


@dataclasses.dataclass(frozen=True)
class RtpInfo:
    """One track's entry of a PLAY reply's ``RTP-Info``; a value out of range is None."""

    url: str
    seq: int | None
    rtptime: int | None
    ssrc: int | None = None  # RTSP 2.0's, which some RTSP 1.0 cameras send too


def parse_rtp_info(value: str) -> list[RtpInfo]:
    out = []
    # Entries are separated by commas, which a URL may contain too: split before "url=" only.
    for entry in re.split(r",\s*(?=url=)", value.strip()):
        fields: dict[str, str] = {}
        for p in entry.split(";"):
            k, _, v = p.partition("=")
            fields[k.strip().lower()] = v.strip()
        if fields.get("url"):
            seq, rtptime = _number(fields.get("seq"), 16), _number(fields.get("rtptime"), 32)
            out.append(RtpInfo(fields["url"], seq, rtptime, _ssrc(fields.get("ssrc", ""))))
    return out


def _number(value: str | None, bits: int) -> int | None:
    if value is None or not value.isdigit() or int(value) >= 1 << bits:
        return None  # e.g. rtptime=-1
    return int(value)


def match_rtp_info(infos: list[RtpInfo], tracks: list[Media]) -> None:
    """Give each track its RTP-Info entry (``rtp_seq``, ``rtp_time``, and ``ssrc`` when the
    SETUP reply named none).

    Cameras name the track in RTP-Info as the absolute control URL, as the relative control,
    as a URL of their own that ends with the control (``…/H264/video`` for ``video``), or
    (behind a proxy) with another host: then the last path segment decides.
    """
    for media in tracks:
        raw = media.raw_control
        found = [
            i
            for i in infos
            if i.url == media.control or (raw and (i.url == raw or i.url.endswith("/" + raw)))
        ]
        if not found:
            tail = media.control.rstrip("/").rsplit("/", 1)[-1]
            found = [i for i in infos if i.url.rstrip("/").rsplit("/", 1)[-1] == tail]
        if not found and len(infos) == 1 and len(tracks) == 1:
            found = infos  # one of each: nothing else it can be
        if found:
            media.rtp_seq, media.rtp_time = found[0].seq, found[0].rtptime
            if media.ssrc is None:
                media.ssrc = found[0].ssrc


# --- authentication --------------------------------------------------------------------------

# A challenge parameter, quoted or not (cameras write ``algorithm=MD5``, ``qop=auth``).
_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,"]+))')

Auth = tuple[str, dict[str, str]]  # ("basic" | "digest", challenge parameters)


def choose_challenge(challenges: list[str]) -> Auth:
    """The scheme to answer: Digest whenever offered, since Basic sends the password itself."""
    offers = []
    for c in challenges:
        scheme, _, rest = c.strip().partition(" ")
        params = {k.lower(): a or b for k, a, b in _AUTH_PARAM.findall(rest)}
        offers.append((scheme.lower(), params))
    digest = [o for o in offers if o[0] == "digest"]
    if digest:
        # MD5 is what we compute; prefer it when a camera also offers e.g. SHA-256.
        md5 = [o for o in digest if o[1].get("algorithm", "md5").lower() == "md5"]
        return (md5 or digest)[0]
    other = [o[0] for o in offers if o[0] not in ("basic", "")]
    if other and not any(o[0] == "basic" for o in offers):
        raise RtspError(f"401 Unauthorized: the camera asks for {other[0]} authentication")
    return "basic", {}  # offered, or no challenge at all


def authorization(auth: Auth, method: str, url: str, user: str, secret: str, nc: int) -> str:
    """The ``Authorization`` header line answering ``auth`` (``nc``: the Digest nonce count)."""
    scheme, p = auth
    if scheme == "basic":
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        return f"Authorization: Basic {token}\r\n"
    realm, nonce = p.get("realm", ""), p.get("nonce", "")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # RFC 2617 mandates MD5

    ha1, ha2 = md5(f"{user}:{realm}:{secret}"), md5(f"{method}:{url}")
    head = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{url}"'
    if "auth" in [q.strip() for q in p.get("qop", "").split(",")]:
        count, cnonce = f"{nc:08x}", os.urandom(8).hex()
        response = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        head += f', qop=auth, nc={count}, cnonce="{cnonce}"'
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in p:
        head += f', opaque="{p["opaque"]}"'
    return f'Authorization: {head}, response="{response}"\r\n'
