"""The wait between reconnections to a camera, shared by both readers."""

from __future__ import annotations

import random

from vms.config import IngestConfig


class Backoff:
    """Waits between reconnections: doubling from ``backoff_initial_s`` to ``backoff_max_s``, each
    jittered by ±20 % so cameras behind one rebooted switch do not retry in lock-step, and back
    to the start after a session that streamed for ``healthy_after_s``."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self.current = config.backoff_initial_s

    def next(self, streamed_s: float) -> float:
        """The wait after a session that lasted ``streamed_s`` seconds."""
        if streamed_s >= self.config.healthy_after_s:
            self.current = self.config.backoff_initial_s
        delay = self.current * random.uniform(0.8, 1.2)
        self.current = min(self.current * 2, self.config.backoff_max_s)
        return delay
