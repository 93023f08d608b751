"""A test RTSP server that speaks a real camera's dialect, replayed from captured replies.

A capture directory holds one reply per file, named ``<camera>_<method>[_<variant>].txt``:
``options``, ``describe``, ``setup``, ``play``, ``teardown``, or ``sdp`` (an SDP body alone,
wrapped here into a DESCRIBE reply). A name without a method answers by its content: an SDP
answers DESCRIBE, a ``Transport`` SETUP, an ``RTP-Info`` PLAY, and an error (401, …) every
request. A SETUP variant naming ``video`` or ``audio`` answers that track's SETUP.

Each capture is one :class:`Scenario`: the capture answers its own method, its siblings (same
camera) answer the other methods, and a clean generic reply fills in any method with no capture.
Replies go out as captured, CSeq rewritten; the camera's URLs are kept (they name LAN hosts,
which the reader must never connect to: everything has to come here, on one connection).

After PLAY the :class:`DialectServer` sends real encoded video (:func:`encode_clip`) in RTP at
25 fps, packetized here (H.264: single NAL, STAP-A, FU-A, or single NAL only for
``packetization-mode=0``; H.265: single, AP, FU), with in-band parameter sets before each
keyframe (the captured sprop parameter sets do not describe this clip), on the interleaved
channel the SETUP reply named, or over UDP to the client's ports on 127.0.0.1; and audio when
the SDP has G.711 or AAC-LC (encoded to match its config) on a channel of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import re
import select
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av

from vms.media import H264, HEVC, annexb_split, has_keyframe, nal_type

METHODS = {
    "options": "OPTIONS",
    "describe": "DESCRIBE",
    "sdp": "DESCRIBE",
    "setup": "SETUP",
    "play": "PLAY",
    "teardown": "TEARDOWN",
}
FPS = 25
MTU = 1400  # RTP payload size above which a NAL unit is fragmented


def capture_files(directory: Path) -> list[Path]:
    """Every capture in ``directory``: all files but the README and the licence."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name != "README.md" and not p.name.startswith("LICENSE")
    )


# --- captures --------------------------------------------------------------------------------


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


@functools.cache
def aac_frames(rate: int, channels: int) -> list[bytes]:
    """Raw AAC-LC frames (1024 samples each) of a quiet tone, encoded with PyAV."""
    layout = "mono" if channels == 1 else "stereo"
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = rate, layout, "fltp"
    out = []
    for n in range(25):
        frame = av.AudioFrame(format="fltp", layout=layout, samples=1024)
        for plane in frame.planes:
            plane.update(bytes(((k // 4) % 64) for k in range(4 * 1024)))
        frame.sample_rate, frame.pts = rate, n * 1024
        out += [bytes(p) for p in ctx.encode(frame)]
    return out


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


# --- media -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Clip:
    codec: str
    frames: list[list[bytes]]  # access units as NAL units, keyframes led by parameter sets


def encode_clip(codec: str, *, frames: int = 50, width: int = 160, height: int = 120) -> Clip:
    """A short clip encoded with PyAV: keyframe every 10 frames, no B-frames (as cameras)."""
    gop = "keyint=10:min-keyint=10:scenecut=0"
    if codec == H264:
        name, options = "libx264", {"preset": "ultrafast", "x264-params": gop}
    else:
        name = "libx265"
        options = {"preset": "ultrafast", "x265-params": gop + ":bframes=0:log-level=error"}
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"  # type: ignore[attr-defined]
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS)  # type: ignore[attr-defined]
    ctx.options = options
    units: list[bytes] = []
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for j, plane in enumerate(frame.planes):
            # A moving pattern: frames of 0.5–2 kB around the MTU and keyframes of about
            # 5 kB, so that every packetization (single, aggregate, fragments) is used.
            w = width >> (j > 0)
            if j == 0:
                data = bytes(
                    ((k % w + 3 * i) * 2 ^ (k // w * 3 + i)) & 0xFF
                    for k in range(plane.buffer_size)
                )
            else:
                data = bytes([(100 + j * 30 + i) & 0xFF]) * plane.buffer_size
            plane.update(data)
        frame.pts = i
        units += [bytes(p) for p in ctx.encode(frame)]  # type: ignore[attr-defined]
    units += [bytes(p) for p in ctx.encode(None)]  # type: ignore[attr-defined]
    params_types = {32, 33, 34} if codec == HEVC else {7, 8}
    nal_units = [annexb_split(u) for u in units]
    params = [n for n in nal_units[0] if nal_type(codec, n) in params_types]
    out = []
    for nals in nal_units:
        rest = [n for n in nals if nal_type(codec, n) not in params_types]
        out.append(params + rest if has_keyframe(codec, rest) else rest)
    return Clip(codec, out)


def packetize(codec: str, nals: list[bytes], *, single_only: bool = False) -> list[bytes]:
    """RTP payloads for one access unit (RFC 6184 / RFC 7798)."""
    hevc = codec == HEVC
    out: list[bytes] = []
    group: list[bytes] = []

    def flush() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            if hevc:  # AP: the payload header takes the lowest TID of its NAL units
                tid = min(n[1] & 0x07 for n in group)
                head = bytes([48 << 1, tid])
            else:  # STAP-A: the highest NRI
                head = bytes([max(n[0] & 0x60 for n in group) | 24])
            out.append(head + b"".join(len(n).to_bytes(2, "big") + n for n in group))
        group.clear()

    for nal in nals:
        if single_only:
            out.append(nal)
        elif len(nal) > MTU:
            flush()
            out.extend(_fragments(hevc, nal))
        else:
            if sum(2 + len(n) for n in group) + 2 + len(nal) + 2 > MTU:
                flush()
            group.append(nal)
    flush()
    return out


def _fragments(hevc: bool, nal: bytes) -> list[bytes]:
    if hevc:
        t = (nal[0] >> 1) & 0x3F
        head, fu, data = bytes([(nal[0] & 0x81) | (49 << 1), nal[1]]), t, nal[2:]
    else:
        head, fu, data = bytes([(nal[0] & 0xE0) | 28]), nal[0] & 0x1F, nal[1:]
    chunks = [data[i : i + MTU - 3] for i in range(0, len(data), MTU - 3)]
    out = []
    for k, chunk in enumerate(chunks):
        flags = (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
        out.append(head + bytes([flags | fu]) + chunk)
    return out


# --- the server ------------------------------------------------------------------------------


@dataclasses.dataclass
class Request:
    connection: int
    method: str
    url: str
    headers: dict[str, str]


@dataclasses.dataclass
class Sent:
    """One track as sent after the last PLAY, to compare with what the reader understood."""

    ssrc: int
    ssrc_told: bool  # the SETUP reply's Transport or the RTP-Info named this SSRC
    info: tuple[int | None, int | None] | None  # the PLAY reply's RTP-Info (seq, rtptime)
    packets: int = 0


class _Stream:
    """One track's RTP, paced at its own rate."""

    def __init__(
        self,
        track: Track,
        dest: tuple[int | None, int | None],
        sent: Sent,
        seq: int,
        rtptime: int,
        clip: Clip | None,
    ) -> None:
        self.track = track
        self.channel, self.port = dest  # interleaved channel, or the client's UDP port
        self.sent = sent
        self.seq = seq
        self.rtptime = rtptime
        self.clip = clip
        self.period = 1 / FPS if clip is not None else 0.02
        config = aac_config(track)
        self.aac = aac_frames(*config) if config else []
        if config:
            self.rate = config[0]
            self.period = 1024 / self.rate
        self.next = time.monotonic()
        self.count = 0

    def packets(self) -> list[bytes]:
        """The RTP packets of the next video frame, AAC frame or 20 ms of G.711."""
        t = self.track
        if self.clip is not None:
            nals = self.clip.frames[self.count % len(self.clip.frames)]
            ts = self.rtptime + self.count * 90000 // FPS
            single = self.clip.codec == H264 and t.fmtp.get("packetization-mode", "0") == "0"
            payloads = packetize(self.clip.codec, nals, single_only=single)
        elif self.aac:  # RFC 3640 AAC-hbr: 16 bits of AU headers, one 13+3-bit header
            au = self.aac[self.count % len(self.aac)]
            ts = self.rtptime + self.count * 1024 * t.clock // self.rate
            payloads = [b"\x00\x10" + (len(au) << 3).to_bytes(2, "big") + au]
        else:  # G.711 silence, 8 kHz
            ts = self.rtptime + self.count * 160
            payloads = [(b"\xff" if t.encoding == "PCMU" else b"\xd5") * 160]
        self.count += 1
        out = []
        for k, payload in enumerate(payloads):
            marker = 0x80 if k == len(payloads) - 1 else 0
            out.append(
                bytes([0x80, marker | t.payload_type])
                + self.seq.to_bytes(2, "big")
                + (ts & 0xFFFFFFFF).to_bytes(4, "big")
                + self.sent.ssrc.to_bytes(4, "big")
                + payload
            )
            self.seq = (self.seq + 1) & 0xFFFF
        self.sent.packets += len(out)
        return out


class DialectServer:
    """Serves one :class:`Scenario` on 127.0.0.1 (a random port); ``url`` is its address.

    ``requests`` and ``problems`` (what the reader did wrong, as seen from here) tell the test
    what happened; ``sent`` holds each track's stream after the last PLAY.
    """

    def __init__(self, scenario: Scenario, clips: dict[str, Clip]) -> None:
        self.scenario = scenario
        self.clips = clips
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/{scenario.capture.camera}"
        self.requests: list[Request] = []
        self.problems: list[str] = []
        self.sent: dict[str, Sent] = {}
        self.connections = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> DialectServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> DialectServer:
        self._acceptor.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=2)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on this socket
            s.close()
        for t in threads:
            t.join(timeout=2)
        self._udp.close()

    def methods(self) -> list[str]:
        with self._lock:
            return [r.method for r in self.requests]

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
                thread = threading.Thread(target=self._serve, args=(conn, index), daemon=True)
                self._sockets.append(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        try:
            _Connection(self, conn, index).run()
        except OSError:
            pass
        except Exception as e:  # noqa: BLE001 - a harness bug shows in the test, not lost in a thread
            with self._lock:
                self.problems.append(f"server error: {type(e).__name__}: {e}")
        finally:
            conn.close()


class _Connection:
    def __init__(self, server: DialectServer, conn: socket.socket, index: int) -> None:
        self.server = server
        self.scenario = server.scenario
        self.conn = conn
        self.index = index
        self.buf = b""
        self.sdp = ""
        self.describe_url = ""
        self.content_base = ""
        self.tracks: list[Track] = []
        self.dest: dict[str, tuple[int | None, int | None]] = {}  # kind → (channel, UDP port)
        self.streams: list[_Stream] = []
        # Where each track starts when no captured RTP-Info says (the generic PLAY tells).
        self.start = {k: (random.randrange(1 << 16), random.randrange(1 << 32)) for k in KINDS}

    def run(self) -> None:
        while not self.server._stop.is_set():
            now = time.monotonic()
            wait = min([s.next - now for s in self.streams] + [0.2])
            readable, _, _ = select.select([self.conn], [], [], max(0.0, wait))
            if readable:
                data = self.conn.recv(65536)
                if not data:
                    return
                self.buf += data
                while (request := self._next_request()) is not None:
                    self._handle(request)
            now = time.monotonic()
            out = []
            for s in self.streams:
                if now >= s.next:
                    for rtp in s.packets():
                        if s.channel is not None:
                            out.append(b"$" + bytes([s.channel]) + len(rtp).to_bytes(2, "big"))
                            out.append(rtp)
                        elif s.port is not None:
                            self.server._udp.sendto(rtp, ("127.0.0.1", s.port))
                    # Paced at the stream's rate; after a delay, catch up at most a second.
                    s.next = max(s.next + s.period, now - 1.0)
            if out:
                self.conn.sendall(b"".join(out))

    def _next_request(self) -> Request | None:
        while self.buf.startswith(b"$"):  # interleaved RTCP from the client
            if len(self.buf) < 4:
                return None
            size = 4 + int.from_bytes(self.buf[2:4], "big")
            if len(self.buf) < size:
                return None
            self.buf = self.buf[size:]
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        size = end + 4 + int(headers.get("content-length", "0") or 0)
        if len(self.buf) < size:
            return None
        self.buf = self.buf[size:]
        method, url, *_ = [*lines[0].split(" "), "", ""]
        request = Request(self.index, method, url, headers)
        with self.server._lock:
            self.server.requests.append(request)
        return request

    def _problem(self, text: str) -> None:
        with self.server._lock:
            self.server.problems.append(text)

    # --- replies -------------------------------------------------------------------------

    def _handle(self, r: Request) -> None:
        kind = self._kind(r.url) if r.method == "SETUP" else None
        capture = self.scenario.answer(r.method, kind)
        cseq = r.headers.get("cseq", "0")
        reply = capture.reply(cseq) if capture is not None else self._generic(r, cseq)
        self.conn.sendall(reply)
        if capture is not None and not capture.ok:
            return
        if r.method == "DESCRIBE":
            self.sdp = capture.body.decode("utf-8", "replace") if capture else self._generic_sdp()
            self.tracks = sdp_tracks(self.sdp)
            self.describe_url = r.url
            base = capture.header("content-base") if capture else f"{r.url}/"
            self.content_base = base or ""
        elif r.method == "SETUP" and kind is not None:
            asked = r.headers.get("transport", "")
            told = (capture.header("transport") if capture else None) or asked
            m = re.search(r"interleaved=(\d+)", told)
            port = re.search(r"client_port=(\d+)", asked)
            udp = int(port.group(1)) if port and m is None else None
            self.dest[kind] = (int(m.group(1)) if m else None, udp)
        elif r.method == "PLAY":
            self._check_play_url(r.url)
            self._play(capture, r)
        elif r.method == "TEARDOWN":
            self.streams = []

    def _kind(self, url: str) -> str | None:
        """Which SDP track a SETUP's URL names (the control appended to a base, or as is)."""
        for t in self.tracks:
            c = t.control
            if c and c != "*" and (url == c or url.endswith("/" + c)):
                return t.kind
        self._problem(f"SETUP for {url}, which no a=control of the SDP names")
        return None

    def _check_play_url(self, url: str) -> None:
        """PLAY goes to the aggregate control URL: the session-level a=control (RFC 2326
        C.1.1); for ``*`` or none, the Content-Base or the URL described."""
        session = re.split(r"\r?\nm=", "\n" + self.sdp)[0]
        control = next(
            (ln[10:].strip() for ln in session.splitlines() if ln.startswith("a=control:")), "*"
        )
        if "://" in control:
            ok = url == control
        elif control != "*":
            ok = url.endswith("/" + control)
        else:
            bases = {self.describe_url, self.content_base, self.content_base.rstrip("/")}
            ok = url in bases
        if not ok:
            self._problem(f"PLAY for {url}, not the aggregate control URL ({control})")

    def _play(self, capture: Capture | None, r: Request) -> None:
        info = (capture.header("rtp-info") if capture else None) or self._generic_rtp_info(r)
        self.streams = []
        video = next((t for t in self.tracks if t.kind == "video"), None)
        audio = next((t for t in self.tracks if t.kind == "audio"), None)
        for track in (video, audio):
            if track is None or track.kind not in self.dest:
                continue
            dest = self.dest[track.kind]
            if track is video and track.encoding in ("H264", "H265"):
                clip: Clip | None = self.server.clips[H264 if track.encoding == "H264" else HEVC]
            elif track is audio and track.sendable_audio:
                if dest[0] is not None and dest[0] == self.dest.get("video", (None,))[0]:
                    continue  # the camera put it on the video's channel: a reader drops it
                clip = None
            else:
                continue
            if dest == (None, None):
                continue  # TCP asked, UDP answered: nowhere to send
            seq, rtptime = self.start[track.kind]
            entry = _rtp_info_entry(info, track.control)
            if entry is not None:
                seq = entry[0] if entry[0] is not None else seq
                rtptime = entry[1] if entry[1] is not None else rtptime
            ssrc = self._ssrc(track.kind, info, track.control)
            sent = Sent(
                ssrc if ssrc is not None else random.randrange(1 << 32), ssrc is not None, entry
            )
            self.streams.append(_Stream(track, dest, sent, seq, rtptime, clip))
            with self.server._lock:
                self.server.sent[track.kind] = sent

    def _ssrc(self, kind: str, info: str, control: str) -> int | None:
        """The SSRC the SETUP reply's Transport names, else the PLAY reply's RTP-Info."""
        setup = self.scenario.answer("SETUP", kind)
        transport = (setup.header("transport") if setup else None) or ""
        m = re.search(r"ssrc=\s*([0-9A-Fa-f]{1,8})\b", transport)
        if m:
            return int(m.group(1), 16)
        for entry in re.split(r",\s*(?=url=)", info):
            m = re.search(r";\s*ssrc=([0-9A-Fa-f]{1,8})\b", entry)
            url = entry.partition(";")[0].removeprefix("url=")
            if m and control and (url == control or url.endswith("/" + control)):
                return int(m.group(1), 16)
        return None

    def _generic(self, r: Request, cseq: str) -> bytes:
        """A clean answer, as GStreamer's RTSP server would give it."""
        session = f"{self.server.port:08X}"
        head = ["RTSP/1.0 200 OK", f"CSeq: {cseq}", "Server: dialect-generic"]
        body = b""
        if r.method == "OPTIONS":
            head.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif r.method == "DESCRIBE":
            body = self._generic_sdp().encode()
            head += ["Content-Type: application/sdp", f"Content-Base: {r.url}/"]
        elif r.method == "SETUP":
            asked = r.headers.get("transport", "")
            m = re.search(r"client_port=(\d+)-(\d+)", asked)
            if "interleaved" not in asked and m:
                asked = f"RTP/AVP;unicast;client_port={m.group(1)}-{m.group(2)};server_port=9-10"
            head += [f"Transport: {asked}", f"Session: {session};timeout=60"]
        elif r.method == "PLAY":
            head += [f"Session: {session}", "Range: npt=0.000-"]
            info = self._generic_rtp_info(r)
            if info:
                head.append(f"RTP-Info: {info}")
        else:
            head.append(f"Session: {session}")
        if body:
            head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    def _generic_rtp_info(self, r: Request) -> str:
        entries = []
        for t in self.tracks:
            if t.kind in self.dest and t.control:
                url = t.control if "://" in t.control else r.url.rstrip("/") + "/" + t.control
                seq, rtptime = self.start[t.kind]
                entries.append(f"url={url};seq={seq};rtptime={rtptime}")
        return ",".join(entries)

    def _generic_sdp(self) -> str:
        return "\r\n".join(
            [
                "v=0",
                "o=- 1 1 IN IP4 127.0.0.1",
                "s=dialect-generic",
                "t=0 0",
                "a=control:*",
                "m=video 0 RTP/AVP 96",
                "a=rtpmap:96 H264/90000",
                "a=fmtp:96 packetization-mode=1",
                "a=control:trackID=1",
                "",
            ]
        )


KINDS = ("video", "audio")


def _rtp_info_entry(info: str, control: str) -> tuple[int | None, int | None] | None:
    """(seq, rtptime) of the RTP-Info entry naming ``control``; a value not a number is None."""
    for entry in re.split(r",\s*(?=url=)", info):
        fields = dict(p.strip().partition("=")[::2] for p in entry.split(";"))
        url = fields.get("url", "")
        if control and (url == control or url.endswith("/" + control)):
            seq, rtptime = fields.get("seq", ""), fields.get("rtptime", "")
            return (
                int(seq) if seq.isdigit() else None,
                int(rtptime) if rtptime.isdigit() else None,
            )
    return None
