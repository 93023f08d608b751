"""A native RTSP client for RTSP over TCP: every camera on one reactor thread.

FFmpeg's RTSP client (through PyAV) costs two ``recvfrom`` and a ``poll`` per RTP packet and a GIL
round trip per frame per camera thread; with 200 cameras the GIL contention costs more than the
reading (docs/design/concurrency.md, "Measured"). This reader runs every session as a
non-blocking state machine on one thread with ``selectors``, reads up to 256 kB per ``recv``
and waits a few milliseconds between rounds so that each read carries many RTP packets.

Scope: RTSP 1.0 over TCP (interleaved), Basic and Digest authentication, H.264 and H.265 video
(single NAL, STAP-A/AP, FU-A/FU), AAC (mpeg4-generic, AU headers) and G.711 audio. UDP and
RTSPS stay on PyAV (``ingest.reader`` chooses). A session that fails (refused, unauthorised,
no answer, stalled, garbage) reports why and is retried with the same backoff as the PyAV
ingest. Once a session plays, its media (RTP and RTCP) is ``receiver.py``'s.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import logging
import os
import queue
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from vms.clock import Clock
from vms.config import CameraConfig, IngestConfig, StreamConfig
from vms.health import CameraHealth
from vms.ingest.backoff import Backoff
from vms.ingest.receiver import Receiver
from vms.ingest.rtp import Media, aggregate_control, offered, parse_sdp
from vms.ingest.rtsp_headers import (
    MAX_RESPONSE,
    RtspError,
    authorization,
    body_length,
    choose_challenge,
    content_length,
    match_rtp_info,
    parse_head,
    parse_rtp_info,
    parse_session,
    parse_transport,
)
from vms.media import AudioInfo, StreamInfo, StreamSink, VideoInfo, dimensions

log = logging.getLogger(__name__)

# A read round every 50 ms: ~20 reads a second a camera, each carrying ~12 kB of RTP at
# 2 Mbit/s. Shorter rounds cost system calls, and live view pays up to a round of latency: so
# while someone watches a camera live (its sink says ``watched``), rounds are 10 ms.
ROUND_S = 0.05
LIVE_ROUND_S = 0.01
KEEPALIVE_S = 25.0
TICK_S = 0.1
CONNECT_SPREAD_S = 0.02  # timers (retries, open and stall timeouts, keepalives) at this resolution
BASIC_IN_CLEAR = (
    "the camera offers only Basic authentication over plain RTSP: "
    "its password crosses the network in clear text"
)
REPORT_S = 5.0  # RTCP receiver reports


def pause(busy: float, watched: bool) -> float:
    """How long the reactor sleeps after a round that took ``busy`` seconds."""
    return (LIVE_ROUND_S if watched else ROUND_S) - busy


# Name resolution is the one blocking call a session makes; two threads do it for all of them.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="rtsp-dns")


class Session:
    """One camera's RTSP session, driven by the reactor thread only."""

    def __init__(
        self,
        camera: CameraConfig,
        stream: StreamConfig,
        *,
        sink: StreamSink,
        health: CameraHealth,
        config: IngestConfig,
        clock: Clock,
    ) -> None:
        self.camera = camera
        self.sink = sink
        self.health = health
        self.config = config
        self.clock = clock
        self.log = logging.LoggerAdapter(log, {"camera": camera.id})
        parts = urllib.parse.urlsplit(stream.url)
        self.host = parts.hostname or ""
        self.port = parts.port or 554
        self.url = stream.url
        self.backoff = Backoff(config)
        self.sock: socket.socket | None = None
        self.retry_at = 0.0
        self.warned_basic = False  # once per camera, not once per reconnection
        self._reset()

    def _reset(self) -> None:
        self.step = "idle"
        self.buf = bytearray()
        self.cseq = 0
        self.session_id = ""
        self.auth: tuple[str, dict[str, str]] | None = None
        self.auth_tried = False
        self.video: Media | None = None
        self.audio: Media | None = None
        self.setups: list[Media] = []
        self.opened_at = 0.0
        self.last_keepalive = 0.0
        self.next_report = 0.0
        self.playing_since = 0.0
        self.rx: Receiver | None = None  # the media, once playing
        self.pending = ""
        self.info: StreamInfo | None = None
        self.nc = 0  # Digest nonce count
        self.setting: Media | None = None
        self.resolving: concurrent.futures.Future[list[Any]] | None = None
        self.control_url = self.url  # the SDP's aggregate control: PLAY and TEARDOWN go there
        self.keepalive_s = KEEPALIVE_S  # shorter when the camera's session timeout is
        self.reason = ""  # the last reply's reason phrase

    # --- requests ------------------------------------------------------------------------

    def _send(self, method: str, url: str, extra: str = "") -> None:
        assert self.sock is not None
        self.cseq += 1
        head = f"{method} {url} RTSP/1.0\r\nCSeq: {self.cseq}\r\nUser-Agent: vms\r\n"
        if self.session_id:
            head += f"Session: {self.session_id}\r\n"
        if self.auth is not None:
            head += self._authorization(method, url)
        self.sock.sendall((head + extra + "\r\n").encode())
        self.pending = method

    def _authorization(self, method: str, url: str) -> str:
        assert self.auth is not None
        self.nc += 1
        user, secret = self.camera.username or "", self.camera.secret() or ""
        return authorization(self.auth, method, url, user, secret, self.nc)

    # --- reactor callbacks ---------------------------------------------------------------

    def start(self, sel: selectors.BaseSelector) -> None:
        """Resolve the host (off this thread: DNS can block for seconds), then connect."""
        self._reset()
        now = self.clock.monotonic()
        self.opened_at = now
        self.step = "resolving"
        self.resolving = _RESOLVER.submit(
            socket.getaddrinfo, self.host, self.port, type=socket.SOCK_STREAM
        )

    def _connect(self, sel: selectors.BaseSelector) -> None:
        assert self.resolving is not None
        try:
            infos = self.resolving.result()
        except OSError as e:
            raise RtspError(f"cannot resolve {self.host}: {e.strerror}") from None
        finally:
            self.resolving = None
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise RtspError(os.strerror(err))
        self.sock = sock
        self.step = "connecting"
        sel.register(sock, selectors.EVENT_WRITE, self)

    def writable(self, sel: selectors.BaseSelector) -> None:
        assert self.sock is not None
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise RtspError(_strerror(err))
        sel.modify(self.sock, selectors.EVENT_READ, self)
        self.step = "options"
        self._send("OPTIONS", self.url)

    def readable(self, scratch: memoryview) -> bool:
        """Read what is there into ``scratch`` (shared, reused); False when the peer closed.

        ``recv_into`` a preallocated buffer: ``recv(256 kB)`` would allocate and shrink a
        256 kB object on every call, 10,000 times a second with 200 cameras.
        """
        assert self.sock is not None
        try:
            n = self.sock.recv_into(scratch)
        except BlockingIOError:
            return True
        except OSError as e:
            raise RtspError(e.strerror or "read failed") from None
        if not n:
            return False
        self.buf += scratch[:n]
        if self.step == "playing":
            self._interleaved()
        else:
            self._responses()
        return True

    def tick(self, now: float, sel: selectors.BaseSelector) -> None:
        if self.step == "resolving" and self.resolving is not None and self.resolving.done():
            self._connect(sel)
        if self.step == "playing":
            # Video, not any byte: RTCP, keepalive replies and audio flow on while a camera's
            # video has stopped, or travels on a channel it never agreed to.
            assert self.rx is not None
            if now - self.rx.last_video > self.config.stall_timeout_s:
                raise RtspError(
                    f"stalled: no video for {self.config.stall_timeout_s:g} s (timed out)"
                )
            if now - self.last_keepalive > self.keepalive_s:
                self.last_keepalive = now
                self._send("GET_PARAMETER", self.url)
            if now >= self.next_report:  # some cameras end a session that sends none
                self.next_report = now + REPORT_S
                reports = self.rx.reports(now)
                if reports and self.sock is not None:
                    self.sock.sendall(reports)
        elif now - self.opened_at > self.config.open_timeout_s:
            raise RtspError(
                f"timed out: no valid RTSP answer within {self.config.open_timeout_s:g} s"
            )

    # --- handshake -----------------------------------------------------------------------

    def _responses(self) -> None:
        while True:
            if self.step == "play" and self.buf[:1] == b"$":
                # Some servers send media before the PLAY reply; the reply is skipped there.
                self._playing()
                self._interleaved()
                return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_RESPONSE or (self.buf and not self.buf.startswith(b"R")):
                    raise RtspError("no valid RTSP answer (garbage on the port)")
                return
            reply = parse_head(bytes(self.buf[:end]).decode("latin-1"))
            length = content_length(reply.headers.get("content-length", ""))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length]).decode("utf-8", "replace")
            del self.buf[: end + 4 + length]
            self.reason = reply.reason
            self._response(reply.status, reply.headers, body, reply.challenges)
            if self.step == "playing":
                self._interleaved()
                return

    def _response(
        self, status: int, headers: dict[str, str], body: str, challenges: list[str] | None = None
    ) -> None:
        if status == 401:
            if self.auth_tried or self.camera.username is None:
                raise RtspError("401 Unauthorized (check the camera's username and password)")
            self.auth_tried = True
            self.auth = self._challenge(challenges or [headers.get("www-authenticate", "")])
            self._resend()
            return
        if not 200 <= status < 300:
            raise RtspError(f"{self.pending} failed: RTSP {status} {self.reason}".rstrip())
        if self.step == "options":
            self.step = "describe"
            self._send("DESCRIBE", self.url, "Accept: application/sdp\r\n")
        elif self.step == "describe":
            if "m=" not in body:
                raise RtspError("the camera's DESCRIBE answer holds no stream description (SDP)")
            base = headers.get("content-base") or headers.get("content-location") or self.url
            self.video, self.audio = parse_sdp(body, base)
            if self.video is None:
                raise RtspError(
                    f"the stream has no H.264 or H.265 video track (it offers {offered(body)})"
                )
            self.control_url = aggregate_control(body, base)
            self.setups = [m for m in (self.video, self.audio) if m is not None]
            self.step = "setup"
            self._setup_next()
        elif self.step == "setup":
            self._transport(headers.get("transport", ""))
            sid, timeout = parse_session(headers.get("session", ""))
            if sid:
                self.session_id = sid
            if timeout:
                # Keep the session alive well within the camera's timeout (RFC 2326: 60 s).
                self.keepalive_s = min(KEEPALIVE_S, max(1.0, timeout / 2))
            if self.setups:
                self._setup_next()
            else:
                self.step = "play"
                # No Range: a live camera plays from now. (A shared GStreamer media even seeks
                # itself on "Range: npt=0-", stepping every other viewer's timestamps.)
                self._send("PLAY", self.control_url)
        elif self.step == "play":
            tracks = [m for m in (self.video, self.audio) if m is not None]
            match_rtp_info(parse_rtp_info(headers.get("rtp-info", "")), tracks)
            self._playing()

    def _challenge(self, challenges: list[str]) -> tuple[str, dict[str, str]]:
        auth = choose_challenge(challenges)
        if auth[0] == "basic" and self.url.startswith("rtsp:") and not self.warned_basic:
            self.warned_basic = True
            self.log.warning(BASIC_IN_CLEAR)
            self.health.warn(BASIC_IN_CLEAR)
        return auth

    def _resend(self) -> None:
        if self.step == "options":
            self._send("OPTIONS", self.url)
        elif self.step == "describe":
            self._send("DESCRIBE", self.url, "Accept: application/sdp\r\n")
        elif self.step == "setup" and self.setting is not None:
            self._setup(self.setting)
        elif self.step == "play":
            self._send("PLAY", self.control_url)

    def _setup_next(self) -> None:
        media = self.setups.pop(0)
        self.setting = media
        self._setup(media)

    def _setup(self, media: Media) -> None:
        ch = media.channel
        self._send(
            "SETUP", media.control, f"Transport: RTP/AVP/TCP;unicast;interleaved={ch}-{ch + 1}\r\n"
        )

    def _transport(self, value: str) -> None:
        """Take the SETUP reply's Transport: the channel the camera chose, its SSRC."""
        media = self.setting
        if not value or media is None:
            return  # no Transport: the camera took ours as it was
        t = parse_transport(value)
        if not t.tcp:
            raise RtspError(
                "the camera answered SETUP with RTP over UDP although TCP was asked for "
                "(set transport: udp for this camera)"
            )
        media.ssrc = t.ssrc
        if t.interleaved is None:
            return
        video = self.video
        if media is not video and video is not None and t.interleaved[0] == video.channel:
            # Two tracks on one channel cannot be told apart: keep the video.
            self.log.warning(
                "the camera put the audio on the video's channel %d: audio not recorded",
                video.channel,
            )
            self.audio = None
            return
        media.channel = t.interleaved[0]  # the server may pick other channels

    def _playing(self) -> None:
        assert self.video is not None
        now = self.clock.monotonic()
        self.step = "playing"
        self.playing_since = self.last_keepalive = now
        self.next_report = now + REPORT_S
        v = self.video
        width = height = 0
        if v.params is not None and v.params.complete:
            with contextlib.suppress(ValueError, IndexError):
                width, height = dimensions(v.params)
        audio = None
        if self.audio is not None:
            a = self.audio
            audio = AudioInfo(a.codec, a.rate, a.rate, a.channels, a.config)
        info = StreamInfo(VideoInfo(v.codec, v.rate, width, height, v.params), audio)
        self.info = info
        self.rx = Receiver(
            v, self.audio, info, sink=self.sink, health=self.health, clock=self.clock,
            log=self.log, now=now,
        )  # fmt: skip
        self.log.info(
            "stream open: %s %dx%d%s (native reader)", v.codec, width, height,
            f", audio {audio.codec} {audio.sample_rate} Hz" if audio else "",
        )  # fmt: skip
        self.sink.started(info)

    # --- media ---------------------------------------------------------------------------

    def _interleaved(self) -> None:
        buf = self.buf
        view = memoryview(buf)
        rx = self.rx
        assert rx is not None
        rtp, rtcp = rx.rtp_routes, rx.rtcp_routes
        i, n = 0, len(buf)
        try:
            while n - i >= 4:
                if buf[i] != 0x24:  # not '$': an RTSP reply (keepalive) or noise
                    if buf[i : i + 4] == b"RTSP":
                        # A keepalive reply: skipped with its body (a '$' there is no frame).
                        end = buf.find(b"\r\n\r\n", i, i + MAX_RESPONSE)
                        if end < 0:
                            if n - i > MAX_RESPONSE:
                                raise RtspError(
                                    "invalid RTSP answer during the stream: a reply without an "
                                    f"end after {MAX_RESPONSE // 1024} kB"
                                )
                            break  # the rest of the reply is still on its way
                        size = body_length(buf, i, end)
                        if n < end + 4 + size:
                            break
                        i = end + 4 + size
                        continue
                    nxt = buf.find(b"$", i + 1)
                    if nxt < 0:
                        i = n
                        break
                    i = nxt
                    continue
                channel = buf[i + 1]
                length = (buf[i + 2] << 8) | buf[i + 3]
                if n - i - 4 < length:
                    break
                t = rtp.get(channel)
                if t is not None:
                    if length >= 12:
                        rx.rtp(t, view[i + 4 : i + 4 + length])
                elif channel in rtcp:
                    rx.rtcp(rtcp[channel], view[i + 4 : i + 4 + length])
                i += 4 + length
        finally:
            view.release()
        del buf[:i]

    def close(self, sel: selectors.BaseSelector, reason: str = "stopped") -> None:
        if self.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(self.sock)
            with contextlib.suppress(OSError):
                if self.step == "playing":
                    self._send("TEARDOWN", self.control_url)
            self.sock.close()
            self.sock = None
        if self.step == "playing":
            self.sink.stopped(reason)
        self.step = "idle"


def _strerror(err: int) -> str:
    return os.strerror(err)


class Reactor:
    """The thread that runs every native session."""

    def __init__(self, clock: Clock, stop: threading.Event) -> None:
        self.clock = clock
        self.stop = stop
        self.sessions: list[Session] = []
        # The longest round (timers, select, reads, recording): what any camera may have waited.
        self.max_round_s = 0.0
        # Sessions added or removed while running: applied by the reactor thread at the start
        # of a round, so the hot path never takes a lock.
        self._changes: queue.SimpleQueue[tuple[Session, threading.Event | None]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="rtsp-reactor", daemon=True)

    def add(self, session: Session) -> None:
        # Spread the first connections (20 ms apart): 200 cameras opening in the same instant
        # make a storm of handshakes that a camera farm or a VMS gateway answers late.
        with self._lock:
            if not self.thread.is_alive():
                session.retry_at = self.clock.monotonic() + CONNECT_SPREAD_S * len(self.sessions)
                self.sessions.append(session)
                return
        self._changes.put((session, None))

    def remove(self, session: Session, timeout: float = 5.0) -> bool:
        """Close ``session`` (TEARDOWN) and forget it; once this returns True the session
        publishes nothing more. False when the reactor did not answer within ``timeout``."""
        with self._lock:
            if not self.thread.is_alive():
                if session in self.sessions:
                    self.sessions.remove(session)
                return True
            done = threading.Event()
            self._changes.put((session, done))
        return done.wait(timeout)

    def start(self) -> None:
        with self._lock:
            if not self.thread.is_alive():
                self.thread.start()

    def join(self, timeout: float) -> bool:
        if self.thread.is_alive():
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def _apply_changes(self, sel: selectors.BaseSelector) -> None:
        while True:
            try:
                session, removed = self._changes.get_nowait()
            except queue.Empty:
                return
            if removed is None:
                session.retry_at = self.clock.monotonic()
                self.sessions.append(session)
                continue
            if session in self.sessions:
                self.sessions.remove(session)
                session.close(sel, "camera removed")
            removed.set()

    def _fail(self, s: Session, sel: selectors.BaseSelector, reason: str) -> None:
        streamed = self.clock.monotonic() - s.playing_since if s.step == "playing" else 0.0
        s.close(sel, reason)
        delay = s.backoff.next(streamed)
        s.retry_at = self.clock.monotonic() + delay
        s.health.stream_down(reason)
        s.health.reconnecting()
        s.log.warning("stream failed: %s; retrying in %.1f s", reason, delay)

    def _guard(self, s: Session, sel: selectors.BaseSelector, fn: Callable[[], object]) -> None:
        try:
            if fn() is False:
                self._fail(s, sel, "the camera closed the connection")
        except RtspError as e:
            self._fail(s, sel, str(e))
        except OSError as e:
            self._fail(s, sel, e.strerror or type(e).__name__)
        except Exception as e:  # one camera's bug must not stop the others
            s.log.exception("unexpected error in the RTSP session")
            self._fail(s, sel, f"internal error: {type(e).__name__}")

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        scratch = memoryview(bytearray(262144))
        next_tick = 0.0
        try:
            while not self.stop.is_set():
                round_start = time.monotonic()
                if not self._changes.empty():
                    self._apply_changes(sel)
                now = self.clock.monotonic()
                if now >= next_tick:  # timers: starts, retries, stalls, keepalives
                    next_tick = now + TICK_S
                    for s in self.sessions:
                        if s.step == "idle" and now >= s.retry_at:
                            self._guard(s, sel, functools.partial(s.start, sel))
                        elif s.step != "idle":
                            self._guard(s, sel, functools.partial(s.tick, now, sel))
                for key, events in sel.select(ROUND_S):
                    s = key.data
                    if events & selectors.EVENT_WRITE and s.step == "connecting":
                        self._guard(s, sel, functools.partial(s.writable, sel))
                    elif events & selectors.EVENT_READ and s.sock is not None:
                        # The hot path: no closure per event, the guard inlined.
                        try:
                            if not s.readable(scratch):
                                self._fail(s, sel, "the camera closed the connection")
                        except RtspError as e:
                            self._fail(s, sel, str(e))
                        except OSError as e:
                            self._fail(s, sel, e.strerror or type(e).__name__)
                        except Exception as e:  # one camera's bug ends its session only
                            s.log.exception("unexpected error while reading the stream")
                            self._fail(s, sel, f"internal error: {type(e).__name__}")
                # Let data pile up a little: one recv then carries many RTP packets.
                busy = time.monotonic() - round_start
                if busy > self.max_round_s:
                    self.max_round_s = busy
                rest = pause(busy, any(getattr(s.sink, "watched", False) for s in self.sessions))
                if rest > 0:
                    self.stop.wait(rest)
        finally:
            for s in self.sessions:
                s.close(sel)
            sel.close()
            with self._lock:  # removals asked for while stopping: nothing runs them any more
                while not self._changes.empty():
                    _, removed = self._changes.get_nowait()
                    if removed is not None:
                        removed.set()
