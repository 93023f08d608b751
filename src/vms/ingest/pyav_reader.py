"""One camera stream's ingest thread: open, read, hand packets on, and retry after errors.

The thread owns the PyAV container. Per packet it calls the recorder (synchronously: the one
subscriber it waits for), counts the frame for health, and publishes to the fan-out (never
blocks). Failures of any kind end the connection; the thread then waits with exponential
backoff (1 s doubling to 30 s, ±20 % jitter, reset after 30 s of streaming) and reopens, until
shutdown.
"""

from __future__ import annotations

import logging
import random
import threading

import av.error

from vms.cameras.relay import Fanout
from vms.clock import Clock
from vms.config import CameraConfig, IngestConfig, StreamConfig
from vms.errors import VmsError
from vms.health import CameraHealth
from vms.ingest.pyav_source import TIMED_OUT, describe, open_source
from vms.media import VIDEO
from vms.recording.recorder import Recorder

log = logging.getLogger(__name__)


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


class Ingest:
    def __init__(
        self,
        camera: CameraConfig,
        stream: StreamConfig,
        *,
        recorder: Recorder | None,
        fanout: Fanout,
        health: CameraHealth,
        config: IngestConfig,
        clock: Clock,
        stop: threading.Event,
    ) -> None:
        self.camera = camera
        self.stream = stream
        self.recorder = recorder
        self.fanout = fanout
        self.health = health
        self.config = config
        self.clock = clock
        self.stop = stop
        self.log = logging.LoggerAdapter(log, {"camera": camera.id})
        self.thread = threading.Thread(target=self._run, name=f"ingest-{camera.id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        backoff = Backoff(self.config)
        while not self.stop.is_set():
            started = self.clock.monotonic()
            reason = self._session()
            if self.stop.is_set():
                break
            delay = backoff.next(self.clock.monotonic() - started)
            self.health.stream_down(reason)
            self.health.reconnecting()
            self.log.warning("stream failed: %s; retrying in %.1f s", reason, delay)
            self.stop.wait(delay)
        if self.recorder is not None:
            self.recorder.close()

    def _session(self) -> str:
        """One connection, from open to failure. Returns why it ended."""
        url = self.camera.source_url(self.stream)
        try:
            source = open_source(
                url,
                transport=self.stream.transport.value,
                open_timeout=self.config.open_timeout_s,
                read_timeout=self.config.stall_timeout_s,
                stop=self.stop,
                clock=self.clock,
            )
        except VmsError as e:
            return e.message
        del url
        info = source.info
        v = info.video
        self.log.info(
            "stream open: %s %dx%d%s",
            v.codec,
            v.width,
            v.height,
            f", audio {info.audio.codec} {info.audio.sample_rate} Hz" if info.audio else "",
        )
        recorder, health, fanout = self.recorder, self.health, self.fanout
        if recorder is not None:
            recorder.stream_started(info)
        fanout.stream_started(info)
        # Online once video flows, not once the session is set up: a camera that answers
        # PLAY and then sends nothing must not flap to online on every reconnect.
        up = False
        stall = self.config.stall_timeout_s
        last_video = self.clock.monotonic()
        try:
            for p in source.packets():
                if recorder is not None:
                    recorder.packet(p)
                if p.kind == VIDEO:
                    last_video = p.arrival
                    if not up:
                        health.stream_up(v.codec, v.width, v.height)
                        up = True
                    if p.params is not None:
                        health.parameter_sets(p.params)
                    health.frame(len(p.data), p.arrival)
                elif p.arrival - last_video > stall:
                    # Audio flows on while the video stopped: FFmpeg's timeout never fires.
                    return f"stalled: no video for {stall:g} s (timed out)"
                fanout.publish(p)
            return "stopped"
        except (VmsError, OSError, av.error.FFmpegError) as e:
            reason = describe(e)
            if reason == TIMED_OUT:
                stall = self.config.stall_timeout_s
                return f"stalled: no data for {stall:g} s (timed out)"
            return reason
        except Exception as e:
            self.log.exception("unexpected error while reading the stream")
            return describe(e)
        finally:
            source.close()
            if recorder is not None:
                recorder.stream_stopped()
