"""A test RTSP server that speaks a real camera's dialect, replayed from captured replies.

It serves one :class:`~tests.support.captures.Scenario` on 127.0.0.1 (a random port). Replies go
out as captured, CSeq rewritten; the camera's URLs are kept (they name LAN hosts, which the
reader must never connect to: everything has to come here, on one connection), and a method
without a capture gets a clean generic reply. After PLAY it sends real encoded video
(tests/support/rtp_media.py) in RTP at 25 fps on the interleaved channel the SETUP reply named,
or over UDP to the client's ports on 127.0.0.1; and audio when the SDP has G.711 or AAC-LC
(encoded to match its config) on a channel of its own. The sequence numbers, RTP times and
SSRCs are the ones the captured replies announced.

``requests`` and ``problems`` (what the reader did wrong, as seen from here: a SETUP for a URL
no ``a=control`` names, a PLAY not sent to the aggregate control URL) tell a test what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import select
import socket
import threading
import time
from types import TracebackType

from tests.support.captures import Capture, Scenario, Track, aac_config, sdp_tracks
from tests.support.rtp_media import FPS, Clip, aac_frames, packetize
from vms.media import H264, HEVC

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

    def sender_report(self, ntp0: float) -> bytes | None:
        """An RTCP sender report once a second, as cameras send them: the NTP time of the next
        packet (``ntp0``, shared by the session's tracks, plus its media time) and its RTP
        timestamp, so a reader can place the tracks against each other."""
        per_second = max(1, round(1 / self.period))
        if self.count % per_second:
            return None
        media_s = self.count * self.period
        clock = 90000 if self.clip is not None else self.track.clock
        ts = (self.rtptime + round(media_s * clock)) & 0xFFFFFFFF
        ntp = ntp0 + media_s
        whole = int(ntp)
        frac = int((ntp - whole) * (1 << 32))
        return (
            bytes([0x80, 200]) + (6).to_bytes(2, "big") + self.sent.ssrc.to_bytes(4, "big")
            + whole.to_bytes(4, "big") + frac.to_bytes(4, "big") + ts.to_bytes(4, "big")
            + self.sent.packets.to_bytes(4, "big") + (0).to_bytes(4, "big")
        )  # fmt: skip

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
        self.ntp0 = time.time() + 2_208_988_800  # NTP seconds: the tracks' common instant

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
                    sr = s.sender_report(self.ntp0)
                    if sr is not None and s.channel is not None:
                        out.append(b"$" + bytes([s.channel + 1]) + len(sr).to_bytes(2, "big"))
                        out.append(sr)
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
