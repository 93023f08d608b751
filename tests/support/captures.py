"""Captured camera replies, as scenarios for the dialect server (tests/support/dialect_server.py).

A capture directory holds one reply per file, named ``<camera>_<method>[_<variant>].txt``:
``options``, ``describe``, ``setup``, ``play``, ``teardown``, or ``sdp`` (an SDP body alone,
wrapped into a DESCRIBE reply). A name without a method answers by its content: an SDP answers
DESCRIBE, a ``Transport`` SETUP, an ``RTP-Info`` PLAY, and an error (401, …) every request. A
SETUP variant naming ``video`` or ``audio`` answers that track's SETUP.

Each capture is one :class:`Scenario`: the capture answers its own method, its siblings (same
camera) answer the other methods, and a clean generic reply (the server's) fills in any method
with no capture. What a reader should make of it (``expects_video``, ``expects_audio``, ``udp``)
is read from the captures here, independently of the reader's own parsing.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

METHODS = {
    "options": "OPTIONS",
    "describe": "DESCRIBE",
    "sdp": "DESCRIBE",
    "setup": "SETUP",
    "play": "PLAY",
    "teardown": "TEARDOWN",
}


def capture_files(directory: Path) -> list[Path]:
    """Every capture in ``directory``: all files but the README and the licence."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name != "README.md" and not p.name.startswith("LICENSE")
    )


@dataclasses.dataclass(frozen=True)
class Capture:
    name: str  # the file's name without .txt
    camera: str
    method: str | None  # None: answers every request
    variant: str
    status: int
    lines: tuple[str, ...]  # status line and headers, as captured
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        for line in self.lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == name:
                return v.strip()
        return None

    def reply(self, cseq: str) -> bytes:
        """The reply as captured, with the request's CSeq."""
        out, seen = [self.lines[0]], False
        for line in self.lines[1:]:
            k, sep, _ = line.partition(":")
            if sep and k.strip().lower() == "cseq":
                line, seen = f"{k}: {cseq}", True
            out.append(line)
        if not seen:
            out.insert(1, f"CSeq: {cseq}")
        return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + self.body


def load_capture(path: Path) -> Capture:
    raw = path.read_bytes()
    stem = path.name.removesuffix(".txt")
    if raw.startswith(b"RTSP/"):
        sep = raw.find(b"\r\n\r\n")
        head, body = (raw, b"") if sep < 0 else (raw[:sep], raw[sep + 4 :])
        lines = tuple(head.decode("latin-1").split("\r\n"))
    else:  # an SDP body alone
        lines = (
            "RTSP/1.0 200 OK",
            "Content-Type: application/sdp",
            f"Content-Length: {len(raw)}",
        )
        body = raw
    status = int(lines[0].split()[1])
    tokens = stem.split("_")
    at = next((i for i, t in enumerate(tokens) if t.lower() in METHODS and i > 0), None)
    if at is not None:
        camera, method = "_".join(tokens[:at]), METHODS[tokens[at].lower()]
        variant = "_".join(tokens[at + 1 :])
        return Capture(stem, camera, method, variant, status, lines, body)
    capture = Capture(stem, tokens[0], None, "", status, lines, body)
    return dataclasses.replace(capture, method=_method_of(capture))


def _method_of(c: Capture) -> str | None:
    if not c.ok:
        return None
    if c.body.lstrip().startswith(b"v="):
        return "DESCRIBE"
    if c.header("transport") is not None:
        return "SETUP"
    if c.header("rtp-info") is not None or c.header("range") is not None:
        return "PLAY"
    return "OPTIONS"


@dataclasses.dataclass(frozen=True)
class Track:
    kind: str  # "video", "audio", "application"…
    payload_type: int
    encoding: str  # upper-case rtpmap name, or "PCMU"/"PCMA" for static payload types
    control: str
    fmtp: dict[str, str]
    clock: int = 90000  # the rtpmap's clock rate

    @property
    def sendable_audio(self) -> bool:
        """G.711, or AAC-LC with its config (both are sent; other audio is not)."""
        return self.encoding in ("PCMU", "PCMA") or aac_config(self) is not None


def sdp_tracks(sdp: str) -> list[Track]:
    """A plain reading of an SDP's m= sections (the harness's own, not the reader's)."""
    tracks = []
    for block in re.split(r"\r?\nm=", "\n" + sdp)[1:]:
        lines = block.splitlines()
        head = lines[0].split()
        if len(head) < 4:
            continue
        pt = int(head[3]) if head[3].isdigit() else -1
        attrs = [ln[2:].strip() for ln in lines[1:] if ln.startswith("a=")]
        encoding = {0: "PCMU", 8: "PCMA"}.get(pt, "")
        clock = 8000 if encoding else 90000
        fmtp: dict[str, str] = {}
        control = ""
        for a in attrs:
            if a.startswith(f"rtpmap:{pt} "):
                encoding, _, rate = a.split(" ", 1)[1].strip().partition("/")
                encoding = encoding.upper()
                clock = int(rate.split("/")[0]) if rate.split("/")[0].isdigit() else clock
            elif a.startswith(f"fmtp:{pt} "):
                for p in a.split(" ", 1)[1].split(";"):
                    k, _, v = p.partition("=")
                    fmtp[k.strip().lower()] = v.strip()
            elif a.startswith("control:"):
                control = a[8:].strip()
        tracks.append(Track(head[0], pt, encoding, control, fmtp, clock))
    return tracks


_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def aac_config(track: Track) -> tuple[int, int] | None:
    """(sample rate, channels) of an AAC-LC track's AudioSpecificConfig, or None."""
    if track.encoding != "MPEG4-GENERIC":
        return None
    try:
        config = bytes.fromhex(track.fmtp.get("config", ""))
    except ValueError:
        return None
    if len(config) < 2 or config[0] >> 3 != 2:  # object type 2: AAC-LC
        return None
    index, channels = ((config[0] & 7) << 1) | (config[1] >> 7), (config[1] >> 3) & 0xF
    if index >= len(_AAC_RATES) or not 1 <= channels <= 2:
        return None
    return _AAC_RATES[index], channels


def video_track(sdp: str) -> Track | None:
    return next(
        (t for t in sdp_tracks(sdp) if t.kind == "video" and t.encoding in ("H264", "H265")), None
    )


class Scenario:
    """One capture under test, with its siblings and generic replies around it."""

    def __init__(self, capture: Capture, captures: list[Capture]) -> None:
        self.capture = capture
        self.siblings = [
            c for c in captures if c.camera == capture.camera and c is not capture and c.method
        ]

    @property
    def name(self) -> str:
        return self.capture.name

    def answer(self, method: str, kind: str | None = None) -> Capture | None:
        """The capture that answers ``method`` (for a SETUP, of the ``kind`` track)."""
        if self.capture.method is None:
            return self.capture
        candidates = [c for c in (self.capture, *self.siblings) if c.method == method]
        if not candidates:
            return None

        def rank(c: Capture) -> tuple[int, bool, bool, str]:
            tokens = set(c.variant.split("_"))
            fit = 0 if kind in tokens else 2 if tokens & {"video", "audio"} else 1
            return fit, c is not self.capture, c.variant != "", c.name

        return min(candidates, key=rank)

    @property
    def sdp(self) -> str | None:
        """The SDP this scenario's DESCRIBE answers with (None: a generic one)."""
        c = self.answer("DESCRIBE")
        return c.body.decode("utf-8", "replace") if c is not None and c.ok else None

    @property
    def udp(self) -> bool:
        """Whether the camera's SETUP reply sends RTP over UDP (then read through PyAV)."""
        c = self.answer("SETUP", "video")
        transport = (c.header("transport") if c is not None else None) or ""
        spec = transport.split(";")[0].upper()
        return bool(transport) and "interleaved" not in transport and not spec.endswith("/TCP")

    @property
    def expects_video(self) -> bool:
        """Whether a reader should record video: every reply it needs is a success and the
        SDP describes H.264 or H.265."""
        needed = [self.answer(m, "video") for m in ("OPTIONS", "DESCRIBE", "SETUP", "PLAY")]
        if any(c is not None and not c.ok for c in needed):
            return False
        sdp = self.sdp
        return sdp is None or video_track(sdp) is not None

    @property
    def expects_audio(self) -> bool:
        """Whether audio is sent (a reader should record it): the SDP has a G.711 or AAC-LC
        track and its SETUP reply gives it a channel of its own (or UDP ports)."""
        sdp = self.sdp
        tracks = sdp_tracks(sdp) if sdp is not None else []
        audio = next((t for t in tracks if t.kind == "audio"), None)
        if not self.expects_video or audio is None or not audio.sendable_audio:
            return False
        a, v = self.answer("SETUP", "audio"), self.answer("SETUP", "video")
        if a is None or v is None or self.udp:
            return a is None or a.ok
        return a.ok and _channel(a) != _channel(v)


def _channel(c: Capture) -> int | None:
    m = re.search(r"interleaved=(\d+)", c.header("transport") or "")
    return int(m.group(1)) if m else None


def load_scenarios(directory: Path) -> list[Scenario]:
    captures = [load_capture(p) for p in capture_files(directory)]
    return [Scenario(c, captures) for c in captures]
