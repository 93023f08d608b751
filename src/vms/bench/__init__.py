"""The benchmarks of the project (see bench/README.md); ``vms bench NAME`` is :mod:`vms.bench.cli`.

This module holds what :mod:`vms.bench.recording` and :mod:`vms.bench.crash` both need: a VMS
server run as a separate process (so the operating system accounts its CPU and memory), its
temporary configuration, and small HTTP helpers for its API and ``/metrics``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil
import yaml

from vms.auth import local
from vms.bench.report import Progress
from vms.config import load

log = logging.getLogger(__name__)

__all__ = ["VmsProcess", "free_port"]

# Per-camera samples, and process-wide ones (no labels: keyed by "").
_METRIC_LINE = re.compile(r'^(?P<name>[a-z_]+)(?:\{camera="(?P<camera>[^"]+)"\})? (?P<value>\S+)$')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=timeout) as r:  # fmt: skip
        return json.loads(r.read())


def camera_metrics(text: str, names: set[str]) -> dict[str, dict[str, float]]:
    """``{metric: {camera: value}}`` for the per-camera samples named in ``names``."""
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    for line in text.splitlines():
        m = _METRIC_LINE.match(line)
        if m and m.group("name") in names:
            out[m.group("name")][m.group("camera") or ""] = float(m.group("value"))
    return out


def write_config(
    directory: Path,
    *,
    port: int,
    cameras: list[tuple[str, str]],
    segment_seconds: float,
    fragment_seconds: float = 1.0,
    stagger: bool = True,
    log_level: str = "warning",
    roots: dict[str, list[str]] | None = None,
) -> Path:
    """A YAML config for ``vms serve``: data and recordings under ``directory``.

    ``roots``: root name → the camera ids recorded there (default: one root for all)."""
    cfg: dict[str, Any] = {
        "data_dir": str(directory / "data"),
        "server": {"host": "127.0.0.1", "port": port, "log_level": log_level},
        "storage": {
            "roots": [{"name": "bench", "path": str(directory / "recordings"), "min_free_bytes": 0}]
        },
        "recording": {
            "segment_seconds": segment_seconds,
            "fragment_seconds": fragment_seconds,
            "stagger": stagger,
        },
        "cameras": [{"id": cid, "main": {"url": url, "transport": "tcp"}} for cid, url in cameras],
    }
    if roots:
        cfg["storage"]["roots"] = [
            {"name": name, "path": str(directory / name), "min_free_bytes": 0} for name in roots
        ]
        where = {cid: name for name, ids in roots.items() for cid in ids}
        for cam in cfg["cameras"]:
            cam["roots"] = [where[cam["id"]]]
        for name in roots:
            (directory / name).mkdir(parents=True, exist_ok=True)
    (directory / "recordings").mkdir(parents=True, exist_ok=True)
    path = directory / "vms.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


class VmsProcess:
    """``python -m vms serve --config PATH`` as a child process, with its log in a file."""

    def __init__(
        self, config: Path, port: int, log_path: Path, slow_root: str | None = None
    ) -> None:
        self.config = config
        self.slow_root = slow_root
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._headers: dict[str, str] | None = None

    def start(self) -> VmsProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "vms", "serve", "--config", str(self.config)]
        if self.slow_root is not None:
            cmd = [sys.executable, "-m", "vms.bench.slow_serve", "--config", str(self.config),
                   "--slow-root", self.slow_root]  # fmt: skip
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def ps(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def wait_http(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"vms serve exited early:\n{self.log_tail()}")
            try:
                http_json(self.base + "/healthz", timeout=1.0)
                return
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"vms serve did not answer in {timeout:g} s:\n{self.log_tail()}")

    def cameras(self) -> list[dict[str, Any]]:
        cams: list[dict[str, Any]] = []
        query = "limit=1000"
        while True:
            page = http_json(f"{self.base}/api/v1/cameras?{query}", 10, self.headers())
            cams += page["items"]
            if not page["next"]:
                return cams
            query = "limit=1000&cursor=" + urllib.parse.quote(page["next"], safe="")

    def wait_online(
        self, count: int, timeout: float, progress: Progress | None = None, phase: str = ""
    ) -> float:
        """Wait until ``count`` cameras are online; returns the monotonic time it happened."""
        deadline = time.monotonic() + timeout
        online = 0
        errors: set[str] = set()
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"vms serve exited:\n{self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                cams = self.cameras()
                online = sum(1 for c in cams if c["health"]["state"] == "online")
                errors = {str(c["health"]["last_error"]) for c in cams if c["health"]["last_error"]}
                if progress is not None:
                    progress.update(phase, online, count)
                if online >= count:
                    return time.monotonic()
            time.sleep(0.1 if count > 20 else 0.03)
        raise RuntimeError(
            f"only {online}/{count} cameras online after {timeout:g} s: {'; '.join(errors)}"
        )

    def metrics(self, names: set[str]) -> dict[str, dict[str, float]]:
        req = urllib.request.Request(self.base + "/metrics", headers=self.headers())
        with urllib.request.urlopen(req, timeout=10) as r:
            return camera_metrics(r.read().decode(), names)

    def headers(self) -> dict[str, str]:
        """The server's local API key (``vms.auth.local``), once the server has made it."""
        if self._headers is None:
            key = local.read(load(self.config).data_dir)
            if key is None:
                raise RuntimeError(f"no local API key next to {self.config}")
            self._headers = {local.HEADER: key}
        return self._headers

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (segments closed cleanly), then SIGKILL after ``timeout``."""
        p = self.process
        rc = None
        if p is not None:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("vms serve ignored SIGTERM for %g s: killed", timeout)
                    p.kill()
                    p.wait()
            rc = p.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> VmsProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """user + system CPU seconds of the processes (the ones gone count as 0)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def rss_bytes(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[str]:
    """A scratch directory, removed afterwards unless VMS_BENCH_KEEP is set (to read logs)."""
    path = tempfile.mkdtemp(prefix=f"vms-bench-{prefix}-")
    try:
        yield path
    finally:
        if os.environ.get("VMS_BENCH_KEEP"):
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)
