"""One camera stream's pipeline: what its reader publishes to, and where it goes from there.

A reader (``vms.ingest``) knows only the :class:`~vms.media.StreamSink` it was given. Here each
call goes, on the reader's thread and in this order, to the recorder (when the stream is
recorded: the one consumer the reader waits for, and it never waits on a disk), to the
stream's health (online on the first video frame, frame rate, bitrate, parameter sets) and to
the stream's :class:`~vms.cameras.relay.Relay` (never waits). The recorder reports back through
the same object (:class:`~vms.recording.writer.RecordingEvents`): storage errors go to health,
each fragment written goes to the relay for playback of the last minute.
"""

from __future__ import annotations

from vms.cameras.relay import Relay
from vms.health import CameraHealth
from vms.media import (
    STREAM_NAMES,
    VIDEO,
    FragmentWritten,
    Packet,
    StreamEnd,
    StreamInfo,
    StreamStart,
)
from vms.recording.recorder import Recorder


class StreamPipeline:
    """A :class:`~vms.media.StreamSink` and the recorder's
    :class:`~vms.recording.writer.RecordingEvents` for one camera stream."""

    def __init__(self, camera_id: str, stream: int, health: CameraHealth, relay: Relay) -> None:
        self.camera_id = camera_id
        self.stream = stream
        self.name = STREAM_NAMES[stream]
        self.health = health
        self.relay = relay
        self.recorder: Recorder | None = None  # set by whoever builds the pipeline
        self.info: StreamInfo | None = None
        self._up = False

    # --- StreamSink: the reader's thread -------------------------------------------------

    def started(self, info: StreamInfo) -> None:
        self.info = info
        self._up = False
        if self.recorder is not None:
            self.recorder.stream_started(info)
        self.relay.publish(StreamStart(info))

    def packet(self, p: Packet) -> None:
        if self.recorder is not None:
            self.recorder.packet(p)
        h = self.health
        if p.kind == VIDEO:
            # Online once video flows, not once the session is set up: a camera that answers
            # PLAY and then sends nothing must not flap to online on every reconnect.
            if not self._up:
                info = self.info
                if info is not None:
                    v = info.video
                    h.stream_up(v.codec, v.width, v.height)
                self._up = True
            if p.params is not None:
                h.parameter_sets(p.params)
            h.frame(len(p.data), p.arrival)
        else:
            h.audio(len(p.data))
        self.relay.publish(p)

    def gap(self) -> None:
        if self.recorder is not None:
            self.recorder.gap()

    def stopped(self, reason: str) -> None:
        if self.recorder is not None:
            self.recorder.stream_stopped()
        self.info = None
        self.relay.publish(StreamEnd(reason))

    # --- RecordingEvents: the recorder's and the root writer's threads --------------------

    @property
    def watched(self) -> bool:
        """Someone reads the stream live (the reader then reads it more often)."""
        return len(self.relay) > 0

    @property
    def record_error(self) -> str | None:
        return self.health.record_error

    def record_failed(self, error: str) -> None:
        self.health.record_failed(error)

    def record_ok(self) -> None:
        self.health.record_ok()

    def fragment_written(self, f: FragmentWritten) -> None:
        self.relay.publish(f)

    # --- the owner -----------------------------------------------------------------------

    def close(self) -> None:
        """The reader is gone: close the open segment and end every subscriber."""
        if self.recorder is not None:
            self.recorder.close()
        self.relay.close()
