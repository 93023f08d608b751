"""A camera watched directly, without the VMS: the reference the live benchmarks subtract.

:class:`DirectClient` is a lean RTSP-over-TCP client on a thread of its own: a blocking socket
(it wakes on data, no read rounds), the project's depacketizer (an access unit is complete on
its marker bit) and, when asked, a PyAV decoder fed each access unit as it completes, whose
frames' stamps (:mod:`vms.standin.stamp`) give the camera's own encode + RTSP delay.

Trap: PyAV's own RTSP demuxer is not that reference. Its H.264 parser closes an access unit
only when it sees the next one begin, a frame (40 ms at 25 fps) after the camera sent it.

Every access unit is also recorded by a key (:func:`frame_key`): the CRC of the last bytes of
its last NAL unit, which an fMP4 fragment of the same frame also ends with (a viewer finds it
there: ``viewer_load.fragment_key``), so a viewer's fragment can be matched to the moment the
camera's frame arrived here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
import urllib.parse
import zlib

import av
import av.error
from av.video.codeccontext import VideoCodecContext

from vms.ingest.rtp import Depacketizer, aggregate_control, parse_sdp
from vms.media import H264
from vms.standin import stamp

log = logging.getLogger(__name__)

__all__ = ["Arrival", "DirectClient", "frame_key", "stamp_of"]

KEY_BYTES = 64
KEEPALIVE_S = 20.0


def frame_key(nal: bytes | bytearray | memoryview) -> int:
    """The key of a frame: the CRC of the last bytes of its last NAL unit (``nal``)."""
    return zlib.crc32(nal[-KEY_BYTES:])


def stamp_of(frame: av.VideoFrame) -> int | None:
    """The stamp (ms modulo 2**40) of a decoded frame, or None when it has none."""
    plane = frame.planes[0]
    return stamp.read(memoryview(plane), frame.width, frame.height, plane.line_size)


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One access unit: when it was complete here, its size, key, and capture time (Unix ms,
    from its stamp, when decoding was asked for and the stamp was readable)."""

    monotonic: float
    wall_ms: float
    size: int
    key: int
    keyframe: bool
    captured_ms: int | None


class DirectClient:
    """Plays ``url`` (RTSP over TCP, H.264, no authentication) until :meth:`stop`."""

    def __init__(self, url: str, decode: bool = True, timeout: float = 20.0) -> None:
        self.url = url
        self.decode = decode
        self.timeout = timeout
        self.arrivals: list[Arrival] = []
        self.error: str | None = None
        self.decoded = 0
        self.unreadable = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="direct-rtsp", daemon=True)
        self._cseq = 0
        self._session = ""
        self._media_before_reply = False
        self._control = url

    def start(self) -> DirectClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    def __enter__(self) -> DirectClient:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def wait_frames(self, count: int, timeout: float) -> None:
        """Until ``count`` access units have arrived; raises with the reason otherwise."""
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            if self.error is not None or not self._thread.is_alive():
                raise RuntimeError(f"direct RTSP client: {self.error or 'stopped'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"direct RTSP client: fewer than {count} frames in {timeout} s")
            time.sleep(0.02)

    # --- RTSP ---------------------------------------------------------------------------

    def _request(
        self, buf: bytearray, method: str, url: str, extra: str = ""
    ) -> tuple[dict[str, str], bytes]:
        assert self._sock is not None
        self._cseq += 1
        head = f"{method} {url} RTSP/1.0\r\nCSeq: {self._cseq}\r\nUser-Agent: vms-bench\r\n"
        self._sock.sendall((head + extra + "\r\n").encode())
        while (end := self._reply_end(buf)) < 0:
            self._recv(buf)
        lines = buf[:end].decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            raise RuntimeError(f"{method}: {lines[0]}")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        size = int(headers.get("content-length", "0") or 0)
        while len(buf) < end + 4 + size:
            self._recv(buf)
        body = bytes(buf[end + 4 : end + 4 + size])
        del buf[: end + 4 + size]
        return headers, body

    def _reply_end(self, buf: bytearray) -> int:
        """Where the reply's head ends in ``buf``, or -1. Trap: a camera whose media is
        shared may send interleaved frames of the session before the PLAY reply itself;
        those are dropped here, and the access unit they belonged to with them."""
        while buf[:1] == b"$":
            if len(buf) < 4:
                return -1
            size = 4 + ((buf[2] << 8) | buf[3])
            if len(buf) < size:
                return -1
            del buf[:size]
            self._media_before_reply = True
        return buf.find(b"\r\n\r\n")

    def _recv(self, buf: bytearray) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(262144)
        if not chunk:
            raise ConnectionError("the camera closed the connection")
        buf += chunk

    def _run(self) -> None:
        try:
            self._play()
        except (OSError, RuntimeError, ValueError) as e:
            if not self._stop.is_set():
                self.error = f"{type(e).__name__}: {e}"
        finally:
            if self._sock is not None:
                self._sock.close()

    def _play(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        self._sock = socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 554), timeout=self.timeout
        )
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        headers, body = self._request(buf, "DESCRIBE", self.url, "Accept: application/sdp\r\n")
        base = headers.get("content-base", self.url)
        sdp = body.decode(errors="replace")
        video, _ = parse_sdp(sdp, base)
        if video is None or video.codec != H264:
            raise RuntimeError("the camera offers no H.264 video")
        transport = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
        headers, _ = self._request(buf, "SETUP", video.control, transport)
        session = headers.get("session", "").split(";")[0]
        self._request(buf, "PLAY", aggregate_control(sdp, base),
                      f"Session: {session}\r\nRange: npt=0.000-\r\n")  # fmt: skip
        self._sock.settimeout(None)
        self._session = session
        self._control = aggregate_control(sdp, base)
        self._media(buf)

    def _keepalive(self) -> None:
        """A request now and then, as cameras time out sessions without one; its reply
        comes back between the interleaved frames and is skipped there."""
        assert self._sock is not None
        self._cseq += 1
        self._sock.sendall(
            f"GET_PARAMETER {self._control} RTSP/1.0\r\nCSeq: {self._cseq}\r\n"
            f"Session: {self._session}\r\n\r\n".encode()
        )

    def _media(self, buf: bytearray) -> None:
        depack = Depacketizer(H264)
        if self._media_before_reply:
            depack.lost()
        next_keepalive = time.monotonic() + KEEPALIVE_S
        decoder: VideoCodecContext | None = None
        if self.decode:
            decoder = av.CodecContext.create("h264", "r")
        if decoder is not None:
            decoder.thread_type = "NONE"  # frame threads would hold frames back
        while not self._stop.is_set():
            i = 0
            n = len(buf)
            while n - i >= 4:
                if buf[i] != 0x24:  # an RTSP reply in the stream: skip to the next frame
                    nxt = buf.find(b"$", i + 1)
                    i = n if nxt < 0 else nxt
                    continue
                length = (buf[i + 2] << 8) | buf[i + 3]
                if n - i - 4 < length:
                    break
                if buf[i + 1] == 0 and length >= 12:
                    self._rtp(memoryview(buf)[i + 4 : i + 4 + length], depack, decoder)
                i += 4 + length
            del buf[:i]
            if time.monotonic() >= next_keepalive:
                next_keepalive += KEEPALIVE_S
                self._keepalive()
            self._recv(buf)

    def _rtp(
        self, rtp: memoryview, depack: Depacketizer, decoder: VideoCodecContext | None
    ) -> None:
        start = 12 + 4 * (rtp[0] & 0x0F)
        if rtp[0] & 0x10 and len(rtp) >= start + 4:  # header extension
            start += 4 + 4 * ((rtp[start + 2] << 8) | rtp[start + 3])
        end = len(rtp) - (rtp[-1] if rtp[0] & 0x20 else 0)
        nals = depack.push(rtp[start:end], bool(rtp[1] & 0x80))
        rtp.release()
        if not nals:
            return
        monotonic, wall_ms = time.monotonic(), time.time_ns() / 1e6
        keyframe = any(n[0] & 0x1F == 5 for n in nals)
        captured = self._captured(decoder, nals, int(wall_ms)) if decoder is not None else None
        self.arrivals.append(
            Arrival(monotonic, wall_ms, sum(len(n) for n in nals), frame_key(nals[-1]),
                    keyframe, captured)
        )  # fmt: skip

    def _captured(self, decoder: VideoCodecContext, nals: list[bytes], now_ms: int) -> int | None:
        annexb = b"".join(b"\x00\x00\x00\x01" + n for n in nals)
        try:
            frames = decoder.decode(av.Packet(annexb))
        except av.error.FFmpegError:
            return None  # before the first keyframe
        captured = None
        for frame in frames:
            self.decoded += 1
            value = stamp_of(frame)
            if value is None:
                self.unreadable += 1
            else:
                captured = stamp.capture_ms(value, now_ms)
        return captured
