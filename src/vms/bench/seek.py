"""``vms bench seek``: how soon playback starts at a random instant of a long archive.

The archive (:mod:`vms.bench.archive`): 24 h of 4 cameras at 256 kbit/s (1 h with
``--quick``), written through the recorder the server runs. Then ``python -m vms serve``
serves that data directory, and for N seeded random instants T (a camera and a time at
least a minute before the archive's end) this process measures two ways of playing
``[T, T + 60 s)``:

* **ours**: ``GET /api/v1/cameras/{id}/playback.mp4?start=T&end=T+60s`` on one persistent
  HTTP/1.1 connection. The server sends the stored init segment and fragments from the
  keyframe at or before T (docs/design/playback.md, "The range stream").
* **peer**, remux on request (how Frigate exports): the segments covering the range are
  found in the catalog, opened with PyAV, seeked to T and remuxed (``-c copy``) into a
  fragmented MP4 written through a pipe, in a thread of this process.

For both, from the request (or the start of the remux) to: the first byte of the body; the
first frame a PyAV decoder fed with the bytes as they arrive gives back (the same client for
both); the last byte. The peer is given its best case for a first byte: an empty ``moov``,
fragments at every keyframe and at least every second, every packet flushed. A remux to an
ordinary MP4 with its ``moov`` first, as an export writes it, has no byte to send before the
whole range is remuxed: the peer's ``whole_s``.

At each instant the same connection also asks ``GET /api/v1/cameras/{id}`` (``api_floor``):
the first byte of a small guarded answer, what the HTTP stack and the guard cost any request.

CPU: the server process's user + system time around each of our requests (from the
operating system), and the remux thread's own CPU time for the peer. Decoding in the client
is counted in neither. The two ways alternate which goes first at each instant, so neither
always finds the other's reads in the page cache.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import av.error

from vms.bench import VmsProcess, cpu_seconds, free_port, workdir
from vms.bench import archive as archive_mod
from vms.bench.report import Progress, Result, envelope, ratios, spread
from vms.catalog.store import Catalog, Segment
from vms.config import load
from vms.media import MAIN
from vms.times import iso

RANGE_US = 60_000_000
SEED = 20261
TARGET = {"cameras": 4, "hours": 24, "first_byte_p95_s_max": 0.05, "errors": 0}
ERROR_EXAMPLES = 5
READ_SIZE = 65_536
# Both clients' decoder: start on the first keyframe it reads, without analysing seconds of
# stream first (a player's settings, not FFmpeg's file-probing defaults).
DECODER_OPTIONS = {"probesize": "32", "analyzeduration": "0"}
PEER_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": "1000000",
    "flush_packets": "1",
}
FIGURES = ("first_byte_s", "first_frame_s", "whole_s")


@dataclasses.dataclass(frozen=True)
class Instant:
    camera: str
    t_us: int


@dataclasses.dataclass
class Timing:
    """One playback of a range, in seconds from the request."""

    first_byte_s: float
    first_frame_s: float
    whole_s: float
    bytes: int
    cpu_s: float  # the server's (ours) or the remux thread's (peer)
    offset_s: float | None = None  # X-Playback-Offset: from the first frame to T


class Body:
    """Bytes as they arrive, for PyAV (a file-like with ``read`` and no ``seek``): what
    was read before the decoder started is replayed first."""

    def __init__(self, head: bytes, read: Callable[[int], bytes]) -> None:
        self._head = head
        self._read = read
        self.bytes = len(head)

    def read(self, n: int) -> bytes:
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            return out
        out = self._read(min(n, READ_SIZE))
        self.bytes += len(out)
        return out

    def drain(self) -> None:
        while self.read(READ_SIZE):
            pass


def first_frame(body: Body) -> float:
    """Decode until the first frame; the moment it came out (``time.perf_counter``)."""
    with av.open(body, "r", format="mp4", options=DECODER_OPTIONS) as container:
        for _ in container.decode(video=0):
            return time.perf_counter()
    raise ValueError("no frame decoded from the stream")


class Connection:
    """One keep-alive HTTP/1.1 connection; bodies by Content-Length or chunked, read as
    they arrive."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._left = 0  # of the current chunk, or of the whole body
        self._chunked = False
        self._done = True
        self._close_after = False

    def request(self, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        """Send a GET; the status and the headers (lower-case names). Read the body with
        :meth:`read` until it gives ``b""``."""
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=60)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._file = self._sock.makefile("rb")
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = self._file.readline().decode("latin-1")
        if not status_line:
            raise ConnectionError("the server closed the connection")
        found: dict[str, str] = {}
        while (line := self._file.readline().decode("latin-1").strip()) != "":
            k, _, v = line.partition(":")
            found[k.strip().lower()] = v.strip()
        self._chunked = found.get("transfer-encoding", "").lower() == "chunked"
        self._left = 0 if self._chunked else int(found.get("content-length", "0"))
        self._done = not self._chunked and self._left == 0
        self._close_after = found.get("connection", "").lower() == "close"
        if self._done and self._close_after:
            self.close()
        return int(status_line.split(" ", 2)[1]), found

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body, as soon as any are there; ``b""`` at its end."""
        if self._done:
            return b""
        if self._chunked and self._left == 0:
            size = int(self._file.readline().split(b";")[0], 16)
            if size == 0:
                while self._file.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._done = True
                if self._close_after:
                    self.close()
                return b""
            self._left = size
        out: bytes = self._file.read1(min(n, self._left))
        if not out:
            raise ConnectionError("the server closed the connection in a body")
        self._left -= len(out)
        if self._left == 0:
            if self._chunked:
                self._file.readline()  # the CRLF after the chunk
            else:
                self._done = True
        if self._done and self._close_after:
            self.close()
        return out

    def close(self) -> None:
        if self._sock is not None:
            self._file.close()
            self._sock.close()
        self._sock = self._file = None


class PlaybackFailed(Exception):
    """A playback that gave no frame: an HTTP error, an empty body, a remux that failed."""


def play_ours(conn: Connection, auth: dict[str, str], at: Instant, server: Any) -> Timing:
    """``playback.mp4`` of ``[T, T + 60 s)``, timed from the request's send."""
    query = urllib.parse.urlencode(
        {"start": iso(at.t_us), "end": iso(at.t_us + RANGE_US), "stream": "main"}
    )
    target = f"/api/v1/cameras/{urllib.parse.quote(at.camera)}/playback.mp4?{query}"
    cpu0 = cpu_seconds([server])
    t0 = time.perf_counter()
    try:
        status, headers = conn.request(target, auth)
        head = conn.read(READ_SIZE)
        t_first = time.perf_counter()
        body = Body(head, conn.read)
        if status != 200:
            body.drain()
            raise PlaybackFailed(f"HTTP {status}: {head[:200].decode(errors='replace')}")
        if not head:
            raise PlaybackFailed("HTTP 200 with an empty body")
        t_frame = first_frame(body)
        body.drain()  # the connection is kept for the next request
    except BaseException:
        conn.close()
        raise
    t_end = time.perf_counter()
    cpu = cpu_seconds([server]) - cpu0
    offset = headers.get("x-playback-offset")
    return Timing(
        t_first - t0, t_frame - t0, t_end - t0, body.bytes, cpu,
        None if offset is None else float(offset),
    )  # fmt: skip


def api_floor(conn: Connection, auth: dict[str, str], at: Instant) -> float:
    """Time to the first byte of ``GET /api/v1/cameras/{id}`` on the same connection: what
    the HTTP stack and the guard cost any request, for comparison."""
    t0 = time.perf_counter()
    try:
        status, _ = conn.request(f"/api/v1/cameras/{urllib.parse.quote(at.camera)}", auth)
        head = conn.read(READ_SIZE)
        t_first = time.perf_counter()
        Body(head, conn.read).drain()
    except BaseException:
        conn.close()
        raise
    if status != 200:
        raise PlaybackFailed(f"HTTP {status} on the camera: {head[:200].decode(errors='replace')}")
    return t_first - t0


class _PipeWriter:
    """The write end of a pipe as PyAV's output file (no ``seek``: a stream)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)


class Peer:
    """Remux on request: the catalog's segments for the range, opened with PyAV, seeked to
    T and copied into a fragmented MP4, in a thread writing to a pipe."""

    def __init__(self, catalog: Catalog, root: Path) -> None:
        self.catalog = catalog
        self.root = root

    def play(self, at: Instant) -> Timing:
        r, w = os.pipe()
        outcome: dict[str, Any] = {}
        t0 = time.perf_counter()
        thread = threading.Thread(target=self._run, args=(at, w, outcome), name="remux")
        thread.start()
        try:
            with os.fdopen(r, "rb", buffering=0) as pipe:
                head = pipe.read(READ_SIZE)
                t_first = time.perf_counter()
                body = Body(head, pipe.read)
                try:
                    t_frame = first_frame(body) if head else None
                finally:
                    body.drain()  # else the remux would wait on a full pipe for ever
                t_end = time.perf_counter()
        finally:
            thread.join()
        if "error" in outcome:
            raise PlaybackFailed(f"remux: {outcome['error']}")
        if t_frame is None:
            raise PlaybackFailed("the remux wrote nothing")
        return Timing(t_first - t0, t_frame - t0, t_end - t0, body.bytes, outcome["cpu_s"])

    def _run(self, at: Instant, fd: int, outcome: dict[str, Any]) -> None:
        c0 = time.thread_time()
        try:
            self.remux(at, _PipeWriter(fd))
        except (OSError, ValueError, av.error.FFmpegError) as e:
            outcome["error"] = f"{type(e).__name__}: {e}"
        finally:
            os.close(fd)
            outcome["cpu_s"] = time.thread_time() - c0

    def remux(self, at: Instant, out: _PipeWriter) -> None:
        end_us = at.t_us + RANGE_US
        segments = self.catalog.overlapping(at.camera, MAIN, at.t_us, end_us)
        if not segments:
            raise ValueError(f"no segment of {at.camera} at {iso(at.t_us)}")
        with av.open(out, "w", format="mp4", options=PEER_OPTIONS) as output:
            ostream = None
            base: int | None = None
            for seg in segments:
                with av.open(str(self.root / seg.path)) as source:
                    video = source.streams.video[0]
                    if ostream is None:
                        ostream = output.add_stream_from_template(video)
                    if base is None:  # the keyframe at or before T, as ffmpeg -ss finds it
                        source.seek(_media(seg, at.t_us), stream=video, backward=True)
                    end = _media(seg, end_us)
                    for p in source.demux(video):
                        if p.dts is None:
                            continue  # the demuxer's end-of-stream packet
                        if p.pts is not None and p.pts >= end:
                            break
                        if base is None:
                            base = p.dts
                        p.dts -= base
                        if p.pts is not None:
                            p.pts -= base
                        p.stream = ostream
                        output.mux(p)


def _media(seg: Segment, t_us: int) -> int:
    """Wall time ``t_us`` in the segment file's media time (its track's time base)."""
    return seg.media_start + (t_us - seg.start_us) * seg.timescale // 1_000_000


def instants(arch: archive_mod.Archive, n: int, seed: int) -> list[Instant]:
    """``n`` random (camera, T), each with a whole range of recording after T."""
    rng = random.Random(seed)
    last = arch.end_us - RANGE_US
    return [Instant(rng.choice(arch.cameras), rng.randrange(arch.start_us, last)) for _ in range(n)]


@dataclasses.dataclass
class Measured:
    timings: list[Timing] = dataclasses.field(default_factory=list)
    floor: list[float] = dataclasses.field(default_factory=list)  # ours only: api_floor
    errors: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def failed(self, e: BaseException) -> None:
        self.errors += 1
        text = f"{type(e).__name__}: {e}"[:300]
        if len(self.examples) < ERROR_EXAMPLES and text not in self.examples:
            self.examples.append(text)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": len(self.timings)}
        for name in FIGURES:
            s = spread([getattr(t, name) for t in self.timings], 4)
            out.update({f"{name}_p50": s["p50"], f"{name}_p95": s["p95"], f"{name}_max": s["max"]})
        n = len(self.timings)
        out["bytes_per_request"] = round(sum(t.bytes for t in self.timings) / n) if n else None
        cpu_ms = sum(t.cpu_s for t in self.timings) / n * 1000 if n else None
        out["cpu_ms_per_request"] = None if cpu_ms is None else round(cpu_ms, 2)
        if self.floor:
            s = spread(self.floor, 4)
            out.update({"api_floor_s_p50": s["p50"], "api_floor_s_p95": s["p95"]})
        out["errors"] = self.errors
        out["error_examples"] = self.examples
        return out


def measure(
    vms: VmsProcess, peer: Peer, points: list[Instant], warmup: Instant, progress: Progress
) -> tuple[Measured, Measured, float, float]:
    """Both ways at every instant, alternating which goes first; also the server's CPU
    seconds and the wall seconds of the whole loop."""
    conn = Connection("127.0.0.1", vms.port)
    auth = vms.headers()
    server = vms.ps()
    ours, theirs = Measured(), Measured()
    ways: list[tuple[Measured, Callable[[Instant], Timing]]] = [
        (ours, lambda at: play_ours(conn, auth, at, server)),
        (theirs, peer.play),
    ]
    for _, play in ways:  # first use (imports, codecs, caches) is not what is measured
        try:
            play(warmup)
        except (OSError, ValueError, PlaybackFailed, av.error.FFmpegError):
            pass  # the same error will be counted below
    cpu0, t0 = cpu_seconds([server]), time.monotonic()
    try:
        for i, at in enumerate(points):
            for result, play in ways if i % 2 == 0 else ways[::-1]:
                try:
                    result.timings.append(play(at))
                except (OSError, ValueError, PlaybackFailed, av.error.FFmpegError) as e:
                    result.failed(e)
            try:
                ours.floor.append(api_floor(conn, auth, at))
            except (OSError, ValueError, PlaybackFailed) as e:
                ours.failed(e)
            progress.update(f"seek: {len(points)} instants", i + 1, len(points))
    finally:
        conn.close()
    return ours, theirs, cpu_seconds([server]) - cpu0, time.monotonic() - t0


def run(args: argparse.Namespace, progress: Progress) -> Result:
    quick = bool(args.quick)
    n_cameras = int(args.cameras or TARGET["cameras"])
    hours = float(getattr(args, "hours", None) or (1 if quick else TARGET["hours"]))
    n = int(getattr(args, "instants", None) or (40 if quick else 200))
    data_dir = getattr(args, "data_dir", None)
    cameras = [f"cam{i}" for i in range(n_cameras)]
    seconds = round(hours * 3600 * archive_mod.FPS) / archive_mod.FPS
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            directory = Path(stack.enter_context(workdir("seek")))
        else:
            directory = Path(data_dir).resolve()
            directory.mkdir(parents=True, exist_ok=True)
        arch = archive_mod.existing(directory, cameras, seconds)
        port = free_port()
        cfg_path = archive_mod.config(directory, port, cameras)
        if arch is None:
            # The archive ends a minute ago, on a whole second.
            end_us = (time.time_ns() // 1000 // 1_000_000 - 60) * 1_000_000
            arch = archive_mod.write(
                directory, cameras, seconds, end_us - int(seconds * 1_000_000), progress
            )
        cfg = load(cfg_path)
        points = instants(arch, n, SEED)
        warmup = instants(arch, 1, SEED + 1)[0]
        catalog = Catalog(cfg.catalog_url())
        stack.callback(catalog.close)
        progress.update("seek: starting the server", 0, 1)
        vms = VmsProcess(cfg_path, port, directory / "vms.log").start()
        try:
            vms.wait_http(60)
            peer = Peer(catalog, cfg.storage.roots[0].path)
            ours, theirs, server_cpu_s, window_s = measure(vms, peer, points, warmup, progress)
            alive = vms.alive()
        finally:
            progress.update("seek: stopping the server", 0, 1)
            rc = vms.stop(60)
    return _result(quick, arch, n, ours, theirs, server_cpu_s, window_s, alive, rc)


def _result(
    quick: bool,
    arch: archive_mod.Archive,
    n: int,
    ours: Measured,
    theirs: Measured,
    server_cpu_s: float,
    window_s: float,
    alive: bool,
    rc: int | None,
) -> Result:
    offsets = [t.offset_s for t in ours.timings if t.offset_s is not None]
    figures: dict[str, Any] = {
        **arch.figures(),
        "instants": n,
        "range_s": RANGE_US / 1_000_000,
        "seed": SEED,
        **ours.figures(),
        "playback_offset_s": spread(offsets, 3),
        "server_cpu_s": round(server_cpu_s, 3),
        "server_cpu_pct": round(server_cpu_s / max(window_s, 1e-9) * 100, 1),
        "measure_s": round(window_s, 1),
        "server_alive_at_end": alive,
        "server_exit_code": rc,
    }
    peer = theirs.figures()
    keys = ["first_byte_s_p50", "first_byte_s_p95", "first_frame_s_p50", "first_frame_s_p95",
            "whole_s_p50", "cpu_ms_per_request"]  # fmt: skip
    ratio = ratios(figures, peer, keys)
    p95 = figures["first_byte_s_p95"]
    full = len(arch.cameras) >= TARGET["cameras"] and arch.seconds >= TARGET["hours"] * 3600
    ok = (
        (quick or full)
        and ours.errors == 0
        and p95 is not None
        and p95 <= TARGET["first_byte_p95_s_max"]
        and alive
    )
    target: dict[str, Any] = dict(TARGET)
    if quick:
        target["note"] = (
            f"--quick plays {len(arch.cameras)} cameras x {arch.seconds / 3600:g} h; the "
            f"target's archive is {TARGET['cameras']} x {TARGET['hours']} h"
        )
    return envelope("seek", quick, figures, peer, ratio, ok, target)
