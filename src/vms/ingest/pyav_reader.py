"""One camera stream's ingest thread: open, read, hand packets on, and retry after errors.

The thread owns the PyAV container and publishes what it reads to its stream's
:class:`~vms.media.StreamSink`. Failures of any kind end the connection; the thread then
waits with exponential backoff (1 s doubling to 30 s, ±20 % jitter, reset after 30 s of
streaming) and reopens, until its stop event is set.
"""

from __future__ import annotations

import logging
import threading

import av.error

from vms.clock import Clock
from vms.config import CameraConfig, IngestConfig, StreamConfig
from vms.errors import VmsError
from vms.health import CameraHealth
from vms.ingest.backoff import Backoff
from vms.ingest.pyav_source import TIMED_OUT, describe, open_source
from vms.media import VIDEO, StreamSink

log = logging.getLogger(__name__)


class Ingest:
    def __init__(
        self,
        camera: CameraConfig,
        stream: StreamConfig,
        *,
        sink: StreamSink,
        health: CameraHealth,
        config: IngestConfig,
        clock: Clock,
        stop: threading.Event,
    ) -> None:
        self.camera = camera
        self.stream = stream
        self.sink = sink
        self._streaming = False  # between the sink's started and stopped
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
            if self._streaming:
                self._streaming = False
                self.sink.stopped(reason)
            if self.stop.is_set():
                break
            delay = backoff.next(self.clock.monotonic() - started)
            self.health.stream_down(reason)
            self.health.reconnecting()
            self.log.warning("stream failed: %s; retrying in %.1f s", reason, delay)
            self.stop.wait(delay)

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
        sink = self.sink
        sink.started(info)
        self._streaming = True
        stall = self.config.stall_timeout_s
        last_video = self.clock.monotonic()
        try:
            for p in source.packets():
                if p.kind == VIDEO:
                    last_video = p.arrival
                elif p.arrival - last_video > stall:
                    # Audio flows on while the video stopped: FFmpeg's timeout never fires.
                    return f"stalled: no video for {stall:g} s (timed out)"
                sink.packet(p)
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
