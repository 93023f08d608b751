"""Misbehaving RTSP servers for ingest error-handling tests (threads and sockets only).

Each server is a context manager bound to 127.0.0.1 on a free port, exposing ``.port``,
``.url`` and ``.requests`` (the RTSP methods received, in order):

* :class:`StallBeforePlay` accepts TCP connections, reads requests, never answers.
* :class:`StallAfterPlay` answers OPTIONS, DESCRIBE (one H.264 track, 320x240), SETUP
  (interleaved TCP only) and PLAY properly, then sends no media while keeping the
  connection open; later control requests (keep-alives, TEARDOWN) are still answered.
* :class:`EndlessReplyAfterPlay` is :class:`StallAfterPlay`, then sends an RTSP reply whose
  header never ends (``.sent`` counts its bytes).
* :class:`Garbage` sends random bytes on connect and after every read.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from types import TracebackType

__all__ = ["EndlessReplyAfterPlay", "Garbage", "StallAfterPlay", "StallBeforePlay"]

# SPS/PPS of a real 320x240 constrained-baseline stream (libx264), base64 for the SDP.
SPS_320X240_B64 = "Z0LADdoFB+hAAAADAEAAAAyjxQqo"
PPS_320X240_B64 = "aM4PyA=="
PROFILE_LEVEL_ID = "42c00d"
SESSION_ID = "5F3A1C2B"


class _BadServer:
    """Accept loop plus one daemon thread per connection; subclasses implement ``handle``."""

    mount = "/cam"

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}{self.mount}"
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> _BadServer:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=2)
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for connection in connections:
            # shutdown() wakes a thread blocked in recv() on this socket; close() alone won't.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        for thread in threads:
            thread.join(timeout=2)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            with self._lock:
                self._connections.append(connection)
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            self.handle(connection)
        except OSError:
            pass
        finally:
            connection.close()

    def handle(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def _record(self, method: str) -> None:
        with self._lock:
            self.requests.append(method)


class _RequestReader:
    """Splits an RTSP byte stream into requests; interleaved ``$`` frames are skipped."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._buffer = b""

    def _fill(self) -> bool:
        chunk = self._connection.recv(65536)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    def next_request(self) -> tuple[str, dict[str, str]] | None:
        """Returns (request line, lower-cased headers), or None at end of stream."""
        while True:
            if self._buffer.startswith(b"$"):
                if len(self._buffer) < 4:
                    if not self._fill():
                        return None
                    continue
                size = 4 + int.from_bytes(self._buffer[2:4], "big")
                if len(self._buffer) < size:
                    if not self._fill():
                        return None
                    continue
                self._buffer = self._buffer[size:]
                continue
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if not self._fill():
                    return None
                continue
            head = self._buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body_size = int(headers.get("content-length", "0") or 0)
            while len(self._buffer) < end + 4 + body_size:
                if not self._fill():
                    return None
            self._buffer = self._buffer[end + 4 + body_size :]
            return lines[0], headers


class StallBeforePlay(_BadServer):
    """Reads requests forever and never answers any of them."""

    def handle(self, connection: socket.socket) -> None:
        reader = _RequestReader(connection)
        while (request := reader.next_request()) is not None:
            self._record(request[0].split(" ", 1)[0])


class StallAfterPlay(_BadServer):
    """A well-behaved RTSP handshake for one H.264 track, then no RTP at all."""

    def sdp(self) -> str:
        lines = [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=Stalled stand-in",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "a=control:*",
            "m=video 0 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
            "a=fmtp:96 packetization-mode=1;"
            f"profile-level-id={PROFILE_LEVEL_ID};"
            f"sprop-parameter-sets={SPS_320X240_B64},{PPS_320X240_B64}",
            "a=control:stream=0",
        ]
        return "\r\n".join(lines) + "\r\n"

    def handle(self, connection: socket.socket) -> None:
        reader = _RequestReader(connection)
        while (request := reader.next_request()) is not None:
            request_line, headers = request
            method = request_line.split(" ", 1)[0]
            self._record(method)
            cseq = headers.get("cseq", "0")
            body = b""
            extra: list[str] = []
            status = "200 OK"
            if method == "OPTIONS":
                extra.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
            elif method == "DESCRIBE":
                body = self.sdp().encode()
                extra += ["Content-Type: application/sdp", f"Content-Base: {self.url}/"]
            elif method == "SETUP":
                transport = headers.get("transport", "")
                if "interleaved" not in transport:
                    status = "461 Unsupported Transport"
                else:
                    extra += [
                        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
                        f"Session: {SESSION_ID};timeout=60",
                    ]
            elif method == "PLAY":
                extra += [f"Session: {SESSION_ID}", "Range: npt=0.000-"]
            elif method in ("GET_PARAMETER", "SET_PARAMETER", "TEARDOWN"):
                extra.append(f"Session: {SESSION_ID}")
            else:
                status = "501 Not Implemented"
            response = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: stall-after-play", *extra]
            response.append(f"Content-Length: {len(body)}")
            connection.sendall(("\r\n".join(response) + "\r\n\r\n").encode() + body)
            if method == "PLAY":
                self.after_play(connection)
            if method == "TEARDOWN":
                return

    def after_play(self, connection: socket.socket) -> None:
        """What happens once PLAY is answered: nothing at all, here."""


class EndlessReplyAfterPlay(StallAfterPlay):
    """After PLAY, an RTSP reply whose header lines go on and on (up to 16 MB)."""

    sent = 0

    def after_play(self, connection: socket.socket) -> None:
        connection.sendall(b"RTSP/1.0 200 OK\r\nCSeq: 99\r\n")
        line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        while self.sent < 16 << 20 and not self._stop.is_set():
            connection.sendall(line * 8)
            self.sent += len(line) * 8
            self._stop.wait(0.005)


class Garbage(_BadServer):
    """Answers every connection and every read with random bytes."""

    chunk_size = 512

    def handle(self, connection: socket.socket) -> None:
        connection.sendall(os.urandom(self.chunk_size))
        while connection.recv(65536):
            self._record("?")
            connection.sendall(os.urandom(self.chunk_size))
