"""Time sources. The only seam through which the system reads a clock.

Wall time (UTC microseconds) labels recordings; monotonic time measures intervals (timeouts,
stalls, backoff, delays) and never jumps. Tests substitute :class:`SimulatedClock` to step the
wall clock backwards or forwards without touching the machine's clock.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def wall_us(self) -> int:
        """Wall-clock time, UTC microseconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""


class SystemClock:
    def wall_us(self) -> int:
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        return time.monotonic()


class SimulatedClock:
    """A wall clock that follows the monotonic clock from a chosen start, plus steps.

    ``step(seconds)`` moves the wall clock (as an NTP step or an operator's ``date -s`` would)
    without moving the monotonic one.
    """

    def __init__(self, start_us: int) -> None:
        self._lock = threading.Lock()
        self._origin_mono = time.monotonic()
        self._origin_us = start_us

    def wall_us(self) -> int:
        with self._lock:
            return self._origin_us + int((time.monotonic() - self._origin_mono) * 1_000_000)

    def monotonic(self) -> float:
        return time.monotonic()

    def step(self, seconds: float) -> None:
        with self._lock:
            self._origin_us += int(seconds * 1_000_000)
