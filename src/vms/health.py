"""Camera health: a small state machine the rest of the system reads and subscribes to.

``online``: packets are flowing and being recorded. ``degraded``: packets flow but something is
wrong with recording (storage full or refused). ``offline``: the stream is down (unreachable,
refused, stalled) and being retried. ``starting``: not connected yet. ``disabled``: off in config.

Counters are written by the camera's ingest thread only and read without a lock by others
(single writer; int and float reads are atomic under the GIL); state changes take the lock and
notify listeners.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Any

from vms.clock import Clock
from vms.media import ParameterSets, dimensions

log = logging.getLogger(__name__)


class State(enum.StrEnum):
    STARTING = "starting"
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    DISABLED = "disabled"


Listener = Callable[["CameraHealth"], None]


class CameraHealth:
    def __init__(self, camera_id: str, clock: Clock, *, enabled: bool = True) -> None:
        self.camera_id = camera_id
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.state = State.STARTING if enabled else State.DISABLED
        self.since_us = clock.wall_us()
        # The error behind the current state; None while online. The error that cleared last
        # is kept, with when it cleared, so a past outage is still visible.
        self.last_error: str | None = None
        self.previous_error: str | None = None
        self.error_cleared_us: int | None = None
        self._stream_error: str | None = "not connected yet"
        self._record_error: str | None = None
        self.frames = 0
        self.bytes_in = 0
        self.reconnects = 0
        self.rtp_lost = 0  # RTP packets missing from the sequence (native reader)
        self.frames_discarded = 0  # video frames dropped for a loss, up to the next keyframe
        self.last_frame_mono: float | None = None
        self.last_frame_us: int | None = None
        self.fps = 0.0
        self.bitrate = 0.0
        self.width = 0
        self.height = 0
        self.codec = ""
        # Standing advice for the operator that does not stop recording (e.g. a password sent
        # in clear text); kept until restart.
        self.warnings: list[str] = []
        self._params: ParameterSets | None = None
        self._window_start = clock.monotonic()
        self._window_frames = 0
        self._window_bytes = 0

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # --- written by the ingest thread --------------------------------------------------

    def frame(self, size: int, mono: float) -> None:
        """Count one video frame (called per packet; keep it cheap)."""
        self.frames += 1
        self._window_frames += 1
        self._window_bytes += size
        self.last_frame_mono = mono
        elapsed = mono - self._window_start
        if elapsed >= 1.0:
            self.fps = self._window_frames / elapsed
            self.bitrate = self._window_bytes * 8 / elapsed
            self._window_start, self._window_frames, self._window_bytes = mono, 0, 0
            self.last_frame_us = self._clock.wall_us()

    def parameter_sets(self, params: ParameterSets) -> None:
        """A keyframe's in-band SPS/PPS: a change may be a new resolution (called on keyframes
        that carry them only, never per packet)."""
        if params == self._params or not params.complete:
            return
        self._params = params
        try:
            width, height = dimensions(params)
        except (ValueError, IndexError):
            return
        if (width, height) != (self.width, self.height) and self.width:
            log.info("resolution changed: %dx%d", width, height, extra={"camera": self.camera_id})
        self.width, self.height = width, height

    def audio(self, size: int) -> None:
        self._window_bytes += size

    def stream_up(self, codec: str, width: int, height: int) -> None:
        self.codec, self.width, self.height = codec, width, height
        # A new connection may know no size (no SPS in the SDP): the next in-band SPS sets it,
        # even when it is the same as before the reconnect.
        self._params = None
        self._window_start = self._clock.monotonic()
        self._window_frames = self._window_bytes = 0
        self._update(stream_error=None)

    def stream_down(self, error: str) -> None:
        self.fps = self.bitrate = 0.0
        self._update(stream_error=error)

    def warn(self, notice: str) -> None:
        if notice not in self.warnings:
            self.warnings = [*self.warnings, notice]  # readers see the old or the new list

    def reconnecting(self) -> None:
        self.reconnects += 1

    def record_failed(self, error: str) -> None:
        self._update(record_error=error)

    @property
    def record_error(self) -> str | None:
        """Why recording is failing while the stream is up, or None."""
        return self._record_error

    def record_ok(self) -> None:
        if self._record_error is not None:
            self._update(record_error=None)

    def disable(self) -> None:
        with self._lock:
            self.state = State.DISABLED

    # --- state ---------------------------------------------------------------------------

    _UNSET: Any = object()

    def _update(self, *, stream_error: Any = _UNSET, record_error: Any = _UNSET) -> None:
        with self._lock:
            if stream_error is not self._UNSET:
                self._stream_error = stream_error
            if record_error is not self._UNSET:
                self._record_error = record_error
            if self._stream_error is not None:
                state, error = State.OFFLINE, self._stream_error
            elif self._record_error is not None:
                state, error = State.DEGRADED, self._record_error
            else:
                state, error = State.ONLINE, None
            if error is None and self.last_error is not None:
                self.previous_error = self.last_error
                self.error_cleared_us = self._clock.wall_us()
            self.last_error = error
            changed = state != self.state
            if changed:
                self.state = state
                self.since_us = self._clock.wall_us()
            listeners = list(self._listeners) if changed else []
        if changed:
            log.info(
                "camera is %s%s",
                state.value,
                f": {error}" if error else "",
                extra={"camera": self.camera_id},
            )
        for listener in listeners:
            listener(self)

    def seconds_since_frame(self) -> float | None:
        if self.last_frame_mono is None:
            return None
        return max(0.0, self._clock.monotonic() - self.last_frame_mono)

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "since_us": self.since_us,
            "last_error": self.last_error,
            "previous_error": self.previous_error,
            "error_cleared_us": self.error_cleared_us,
            "fps": round(self.fps, 2),
            "bitrate_bps": round(self.bitrate),
            "frames": self.frames,
            "reconnects": self.reconnects,
            "seconds_since_frame": self.seconds_since_frame(),
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "warnings": list(self.warnings),
        }
