"""What every benchmark shares on the way out: the JSON envelope, machine facts, the table.

The envelope every benchmark prints: ``bench``, ``quick``, ``figures``,
``peer``, ``ratio``, ``ok``, ``target`` and ``machine``. With ``--json`` it is the only thing
on stdout; otherwise a table is printed and a progress bar is drawn on stderr while it runs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import av

from vms import __version__

Result = dict[str, Any]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def spread(values: Sequence[float], digits: int = 4) -> dict[str, float | None]:
    """P50, P95 and max of ``values``, rounded."""
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50.0), ("p95", 95.0), ("max", 100.0)):
        v = percentile(values, q)
        out[name] = None if v is None else round(v, digits)
    return out


def ratios(ours: Mapping[str, Any], peer: Mapping[str, Any] | None, keys: Iterable[str]) -> Any:
    """``ours / peer`` for each key both have as a positive number; None without a peer."""
    if peer is None:
        return None
    out: dict[str, float | None] = {}
    for k in keys:
        a, b = ours.get(k), peer.get(k)
        ok = isinstance(a, int | float) and isinstance(b, int | float) and b > 0
        out[k] = round(a / b, 4) if ok else None  # type: ignore[operator]
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ffmpeg_version() -> str | None:
    try:
        out = subprocess.run(
            ["ffmpeg", "-hide_banner", "-version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.splitlines()[0] if out else ""
    return first.split()[2] if first.startswith("ffmpeg version") else (first or None)


def machine() -> dict[str, Any]:
    """Facts about the box that explain the figures."""
    mem = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "av": av.__version__,
        "libavformat": ".".join(str(x) for x in av.library_versions.get("libavformat", ())),
        "ffmpeg": _ffmpeg_version(),
        "vms": __version__,
    }


def envelope(
    bench: str,
    quick: bool,
    figures: dict[str, Any],
    peer: dict[str, Any] | None,
    ratio: dict[str, Any] | None,
    ok: bool,
    target: dict[str, Any],
) -> Result:
    return {
        "bench": bench,
        "quick": quick,
        "figures": figures,
        "peer": peer,
        "ratio": ratio,
        "ok": ok,
        "target": target,
        "machine": machine(),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return " ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _nested(value: Any) -> bool:
    """A figure holding figures of its own (a dict of dicts, a list of dicts): one row each."""
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(isinstance(v, dict) or (isinstance(v, list) and _nested(v)) for v in inner)


def _rows(key: str, value: Any) -> list[tuple[str, Any]]:
    if not _nested(value):
        return [(key, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return [row for sub, v in items for row in _rows(f"{key}.{sub}", v)]


def table(result: Result) -> str:
    """The readable form: one row per figure, with the peer and the ratio beside it; a figure
    made of figures (per protocol, per step) gives a row to each of its own."""
    figures: dict[str, Any] = result["figures"]
    peer: dict[str, Any] = result["peer"] or {}
    ratio: dict[str, Any] = result["ratio"] or {}
    rows = [["FIGURE", "OURS", "PEER", "RATIO"]]
    for key, value in figures.items():
        for name, v in _rows(key, value):
            rows.append([name, _fmt(v), _fmt(peer.get(name)), _fmt(ratio.get(name))])
    for key in peer:
        if key not in figures:
            rows.append([key, "-", _fmt(peer[key]), "-"])
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(4)]
    lines = [
        f"vms bench {result['bench']}{' --quick' if result['quick'] else ''}",
        "",
        *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows),
        "",
        "target: " + _fmt(result["target"]),
        "ok: " + ("yes" if result["ok"] else "NO"),
        "machine: " + _fmt(result["machine"]),
    ]
    return "\n".join(lines)


def emit(result: Result, as_json: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(result) + "\n")
    else:
        out.write(table(result) + "\n")
    out.flush()


class Progress:
    """A one-line progress bar on stderr; silent when disabled (``--json``)."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._phase = ""

    def update(self, phase: str, done: float, total: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        # Not a terminal (a log file): a line per phase and every 5 s, not a carriage return.
        if not self.tty and phase == self._phase and now - self._last < 5 and done < total:
            return
        self._last, self._phase = now, phase
        frac = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
        bar = "#" * int(30 * frac)
        text = f"{phase:<28} [{bar:<30}] {100 * frac:5.1f}%"
        if self.tty:
            self.stream.write("\r" + text[:110].ljust(110))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + " " * 110 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * 110 + "\r")
            self.stream.flush()
