"""Stand-in IP cameras for tests, demos and benchmarks.

:class:`StandinCamera` runs ``rtsp_server.py`` (a GStreamer RTSP server) under Debian's
``/usr/bin/python3``, which has the ``gi`` bindings that the project venv lacks::

    with StandinCamera(width=640, height=360) as cam:
        container = av.open(cam.url, options={"rtsp_transport": "tcp"})

With ``frames=scene_frames(...)`` (:mod:`vms.standin.footage`) it plays real footage, and the
server prints ``MARK <epoch ms>`` each time the first frame showing people enters its
pipeline; a thread collects those lines (:meth:`StandinCamera.marks`,
:meth:`StandinCamera.wait_mark`). The frame leaves the server about 20 ms after its mark
(measured with a GStreamer client); PyAV's demuxer hands it over one frame period later still
(at 5, 10 and 25 frames a second alike), it seems because FFmpeg's H.264 parser ends an access
unit only when the next one begins.
"""

from __future__ import annotations

import functools
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:
    # Not imported at run time: footage imports PyAV and numpy, which a camera does not need.
    from vms.standin.footage import Scene

__all__ = [
    "SERVER_SCRIPT",
    "SYSTEM_PYTHON",
    "StandinCamera",
    "gstreamer_available",
    "make_self_signed_cert",
]

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")

Codec = Literal["h264", "h265"]
Audio = Literal["none", "aac", "pcmu", "pcma"]

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("videotestsrc", "x264enc", "h264parse", "rtph264pay")
           if Gst.ElementFactory.find(e) is None]
raise SystemExit(1 if missing else 0)
"""


@functools.cache
def gstreamer_available() -> bool:
    """True when the system python can run the stand-in server (gi, RTSP server, x264enc)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


class StandinCamera:
    """A stand-in RTSP camera process; start it with ``with`` or :meth:`start`.

    ``stamp``: each frame carries the wall clock of its capture (:mod:`vms.standin.stamp`),
    over faint noise that holds the encoder at ``bitrate_kbps``; ``pattern`` is then unused.

    ``frames``: the scene's raw frames are played in a loop instead (``pattern`` unused), at
    the scene's size and rate, which replace ``width``, ``height`` and ``fps``."""

    def __init__(
        self,
        *,
        width: int = 1920,
        height: int = 1080,
        fps: int = 25,
        bitrate_kbps: int = 2000,
        keyint: int = 50,
        codec: Codec = "h264",
        audio: Audio = "none",
        user: str | None = None,
        password: str | None = None,
        tls_cert: Path | str | None = None,
        tls_key: Path | str | None = None,
        change_resolution_after: float | None = None,
        mount: str = "/cam",
        pattern: str = "ball",
        stamp: bool = False,
        frames: Scene | None = None,
        port: int = 0,
        ready_timeout: float = 20.0,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.mount = mount if mount.startswith("/") else "/" + mount
        self.tls = tls_cert is not None
        self.ready_timeout = ready_timeout
        if frames is not None:
            if stamp or change_resolution_after is not None:
                raise ValueError("frames goes with neither stamp nor change_resolution_after")
            width, height, fps = frames.width, frames.height, max(1, round(frames.fps))
        self.frames = frames
        self._args: list[str] = [
            "--port", str(port),
            "--mount", self.mount,
            "--width", str(width),
            "--height", str(height),
            "--fps", str(fps),
            "--bitrate-kbps", str(bitrate_kbps),
            "--keyint", str(keyint),
            "--codec", codec,
            "--audio", audio,
            "--pattern", pattern,
        ]  # fmt: skip
        if user is not None and password is not None:
            self._args += ["--user", user, "--password", password]
        if tls_cert is not None and tls_key is not None:
            self._args += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
        if change_resolution_after is not None:
            self._args += ["--change-resolution-after", str(change_resolution_after)]
        if stamp:
            self._args.append("--stamp")
        if frames is not None:
            rate = f"{frames.fps.numerator}/{frames.fps.denominator}"
            self._args += ["--frames", str(frames.path), "--frames-fps", rate,
                           "--frames-count", str(frames.frame_count)]  # fmt: skip
            if frames.first_people is not None:
                self._args += ["--frames-mark", str(frames.first_people)]
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._port: int | None = None
        self._marks: list[float] = []
        self._marks_changed = threading.Condition()
        self._stdout_reader: threading.Thread | None = None
        self._stdout_ended = False

    @property
    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(SERVER_SCRIPT), *self._args]

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("stand-in camera is not running")
        return self._port

    @property
    def url(self) -> str:
        """``rtsp://127.0.0.1:PORT/cam`` (``rtsps://`` with TLS); never holds credentials."""
        scheme = "rtsps" if self.tls else "rtsp"
        return f"{scheme}://127.0.0.1:{self.port}{self.mount}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("stand-in camera is not running")
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stderr_tail(self, limit: int = 4000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def start(self) -> StandinCamera:
        if self._process is not None:
            return self
        # stderr goes to a file: an unread pipe would block the server once it fills.
        self._stderr = tempfile.TemporaryFile(prefix="standin-", suffix=".log")  # noqa: SIM115
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        try:
            self._port, rest = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        with self._marks_changed:
            self._marks.clear()
            self._stdout_ended = False
        # The server's stdout is read on only when marks come: nothing else is written there.
        if self.frames is not None and self.frames.first_people is not None:
            self._stdout_reader = threading.Thread(
                target=self._read_marks, args=(rest,), name="standin-marks", daemon=True
            )
            self._stdout_reader.start()
        return self

    def _wait_ready(self) -> tuple[int, bytes]:
        process = self._process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + self.ready_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._fail(f"no READY line within {self.ready_timeout:g} s")
                if not selector.select(remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    process.wait(timeout=5)
                    self._fail(f"exited with status {process.returncode} before READY")
                buffer += chunk
        first, rest = buffer.split(b"\n", 1)
        line = first.decode(errors="replace").strip()
        parts = line.split()
        if len(parts) != 2 or parts[0] != "READY" or not parts[1].isdigit():
            self._fail(f"unexpected first line {line!r}")
        return int(parts[1]), rest

    def _read_marks(self, buffer: bytes) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        try:
            while True:
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == b"MARK" and parts[1].isdigit():
                        with self._marks_changed:
                            self._marks.append(int(parts[1]) / 1000)
                            self._marks_changed.notify_all()
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
        finally:
            with self._marks_changed:
                self._stdout_ended = True
                self._marks_changed.notify_all()

    def marks(self) -> list[float]:
        """Unix times (seconds) at which the first frame showing people entered the server's
        pipeline, one a loop of the scene, oldest first; empty without a scene with people."""
        with self._marks_changed:
            return list(self._marks)

    def wait_mark(self, after: float, timeout: float) -> float:
        """The first mark later than Unix time ``after``, waiting up to ``timeout`` seconds;
        TimeoutError when none comes (a scene loops every ``frames.loop_s`` seconds)."""
        if self.frames is None or self.frames.first_people is None:
            raise ValueError("marks come only from a camera playing a scene with people")
        deadline = time.monotonic() + timeout
        with self._marks_changed:
            while True:
                later = [mark for mark in self._marks if mark > after]
                if later:
                    return later[0]
                if self._stdout_ended:
                    raise RuntimeError(
                        "stand-in camera stopped before a mark came\n"
                        f"stderr tail:\n{self.stderr_tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no mark after {after:.3f} within {timeout:g} s")
                self._marks_changed.wait(remaining)

    def _fail(self, reason: str) -> None:
        raise RuntimeError(
            f"stand-in camera failed to start: {reason}\n"
            f"command: {self.command}\nstderr tail:\n{self.stderr_tail()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            # The reader ends at end of file, once the server has gone; close after it.
            if self._stdout_reader is not None:
                self._stdout_reader.join(timeout=5)
                self._stdout_reader = None
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._process = None
        self._port = None

    def __enter__(self) -> StandinCamera:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()


def make_self_signed_cert(directory: Path | str) -> tuple[Path, Path]:
    """Write a self-signed certificate for CN/SAN 127.0.0.1; returns (cert_path, key_path).

    Uses the ``openssl`` CLI when present, else the ``cryptography`` package.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "standin-cert.pem"
    key_path = directory / "standin-key.pem"
    openssl = shutil.which("openssl")
    if openssl is not None:
        subprocess.run(
            [
                openssl, "req", "-x509", "-nodes",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", str(key_path), "-out", str(cert_path),
                "-days", "30", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        return cert_path, key_path
    return _make_cert_with_cryptography(cert_path, key_path)


def _make_cert_with_cryptography(cert_path: Path, key_path: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    try:
        from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives import hashes, serialization  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives.asymmetric import ec  # type: ignore[import-not-found, unused-ignore]
        from cryptography.x509.oid import NameOID  # type: ignore[import-not-found, unused-ignore]
    except ImportError as error:
        raise RuntimeError(
            "make_self_signed_cert needs the openssl CLI or the cryptography package"
        ) from error

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
