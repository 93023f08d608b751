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
    """Simulated time for tests: nothing moves unless the test moves it.

    ``advance(seconds)`` moves both clocks, as time passing would; ``step(seconds)`` moves only
    the wall clock, as an NTP step or an operator's ``date -s`` would. A test on this clock
    does not depend on how fast the machine runs it.
    """

    def __init__(self, start_us: int) -> None:
        self._lock = threading.Lock()
        self._mono = 0.0
        self._wall_us = start_us

    def wall_us(self) -> int:
        with self._lock:
            return self._wall_us

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            self._wall_us += int(seconds * 1_000_000)

    def step(self, seconds: float) -> None:
        with self._lock:
            self._wall_us += int(seconds * 1_000_000)
