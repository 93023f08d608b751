"""The recorder: turns one camera stream's packets into segments and fragments.

Called synchronously from the camera's ingest thread (it is the one subscriber the ingest
waits for), so its per-packet path is a few attribute writes and a list append. Once a
fragment is complete (next keyframe, or one more frame would pass ``fragment_seconds``) its
``moof`` is built and the fragment handed to the storage root's writer thread; once a segment is
long enough it is closed at the next keyframe. Files, syncs and catalog rows are the writers'
work (``vms.recording.writer``): nothing here waits on a disk or on the catalog.

Consecutive segments of one connection form a *run*: one decode time line (``tfdt``) across
them, so playback can serve them back to back (docs/design/time.md).

The last video packet is *held* until the next one arrives: only then is its duration (the
dts delta) known, and MP4 needs every sample's duration.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import zlib
from collections.abc import Callable

from vms.catalog.store import Catalog
from vms.clock import Clock
from vms.config import RecordingConfig
from vms.errors import VmsError
from vms.media import (
    AAC,
    AUDIO,
    MAIN,
    STREAM_NAMES,
    AudioInfo,
    Packet,
    ParameterSets,
    StreamInfo,
    dimensions,
)
from vms.recording import mp4
from vms.recording.storage import Storage
from vms.recording.writer import Fragment, RecorderStats, RecordingEvents, SegmentFile, Writers

log = logging.getLogger(__name__)

# A forward jump larger than the arrival-time gap plus this is a camera clock jump.
JUMP_SLACK_S = 10.0
# Re-anchor a new segment on the wall clock when media time and wall time differ by more.
REANCHOR_US = 1_000_000
STORAGE_RETRY_S = 1.0
# Audio kept while no segment is open (~1.3 s of AAC at 48 kHz or of 20 ms G.711 packets): the
# segment that opens at the next keyframe takes what belongs after that keyframe.
AUDIO_PREROLL = 64
# A run's audio goes on in the next file where the previous file's ended when its timestamps put
# it at most this far from there: closer is rounding or a track re-anchored by a later sender
# report, not lost audio. Kept small: it is also how far audio may stay off its timestamps.
AUDIO_SEAM_S = 0.02


class _Sample:
    __slots__ = ("arrival", "data", "dts", "duration", "key", "pts")

    def __init__(self, p: Packet, dts: int, pts: int) -> None:
        self.data = p.data
        self.dts = dts
        self.pts = pts
        self.key = p.keyframe
        self.arrival = p.arrival
        self.duration = 0


class _Open:
    """The segment being built (reader thread's view; the file is the writer's)."""

    def __init__(self, file: SegmentFile, dts: int) -> None:
        self.file = file
        self.start_us = file.start_us
        self.first_dts = dts
        self.sequence = 0
        self.audio_next: int | None = None
        self.end = 0  # media time submitted so far, from the segment start
        self.audio_origin = 0  # the run's decode time at this segment, audio timescale
        self.audio_seam: int | None = None  # where the run's audio left off, from audio_origin


class Recorder:
    def __init__(
        self,
        camera_id: str,
        *,
        catalog: Catalog,
        storage: Storage,
        writers: Writers,
        clock: Clock,
        config: RecordingConfig,
        events: RecordingEvents,
        on_storage_trouble: Callable[[], None] = lambda: None,
        roots: list[str] | None = None,
        stream: int = MAIN,
    ) -> None:
        self.camera_id = camera_id
        self.stream = stream
        self.catalog = catalog
        self.storage = storage
        self.writers = writers
        self.clock = clock
        self.config = config
        self.events = events
        self.on_storage_trouble = on_storage_trouble
        self.roots = roots
        self.stats = RecorderStats()
        self._lock = threading.Lock()
        self._log = logging.LoggerAdapter(log, {"camera": camera_id})
        self._info: StreamInfo | None = None
        self._params: ParameterSets | None = None
        self._pending_params: ParameterSets | None = None
        self._seg: _Open | None = None
        self._held: _Sample | None = None
        self._frag: list[_Sample] = []
        self._frag_duration = 0
        self._audio: list[Packet] = []
        self._audio_dts = 0  # rebased dts of self._audio[0]
        self._audio_back: list[Packet] = []  # audio that belongs after the fragment written
        self._audio_back_dts = 0
        self._audio_offset = 0  # added to camera audio dts, as _offset to video's
        self._audio_last: int | None = None  # rebased dts of the last audio packet ...
        self._audio_last_arrival = 0.0  # ... its arrival ...
        self._audio_last_duration = 0  # ... and its duration in samples
        self._offset = 0  # added to camera dts: rebases the media timeline after a jump
        self._last_delta = 0
        self._prev_end_us: int | None = catalog.last_end_us(camera_id)
        self._continuous = False
        self._run_next: int | None = None  # decode time where the run's next segment starts
        # (the _run_next it goes with, where the run's audio ended then): only for that run
        self._run_audio: tuple[int, int | None] | None = None
        self._opened = 0
        self._gap_pending = False
        self._backlog_warned = False
        self._cut = False
        self._retry_at = 0.0
        self._closed = False
        self._gap_pending = False
        # Stagger: the first segment is shorter by a per-camera amount, so cameras that start
        # together do not all rotate (fsync + catalog write) in the same second.
        stagger = zlib.crc32(camera_id.encode()) % 1000 / 1000 if config.stagger else 0.0
        self._first_target = config.segment_seconds * (1.0 - 0.9 * stagger)

    # --- called by the ingest thread ---------------------------------------------------

    def stream_started(self, info: StreamInfo) -> None:
        """A new connection: whatever was open ends here (timestamps restart)."""
        with self._lock:
            if self._closed:
                return
            self._close_segment(final=True)
            self._info = info
            if info.video.params is not None and info.video.params.complete:
                self._params = info.video.params
            self._pending_params = None
            self._offset = 0
            self._last_delta = 0
            self._continuous = False
            self._run_next = None
            self._audio_back, self._audio_offset, self._audio_last = [], 0, None

    def stream_stopped(self) -> None:
        with self._lock:
            self._close_segment(final=True)
            self._continuous = False
            self._run_next = None

    def close(self) -> None:
        """Close the open segment for good: later packets (a thread still draining) are ignored."""
        with self._lock:
            self._close_segment(final=True)
            self._info = None
            self._closed = True

    def packet(self, p: Packet) -> None:
        with self._lock:
            if p.kind == AUDIO:
                if self._info is not None and self._info.audio is not None:
                    self._audio_packet(p, self._info.audio)
                return
            self._video(p)

    # --- video path ----------------------------------------------------------------------

    def _video(self, p: Packet) -> None:
        info = self._info
        if info is None:
            return
        seg = self._seg
        if seg is not None and seg.file.failed is not None:
            self._writer_failed()
        if self._gap_pending:
            self._end_fragment_at_gap()
        if p.params is not None and p.params.complete and p.params != self._params:
            if self._params is not None:
                self._log.info("parameter sets changed: new segment at this keyframe")
                self._cut = True
            self._pending_params = p.params
        dts = p.dts + self._offset
        pts = p.pts + self._offset
        held = self._held
        if held is not None:
            delta = dts - held.dts
            if delta == 0:
                # Several packets of one picture (a multi-slice IDR sent as two packets with
                # one pts): one sample, or MP4 would get a zero-duration frame.
                held.data += p.data
                held.key = held.key or p.keyframe
                return
            arrival_gap = p.arrival - held.arrival
            if delta <= 0 or delta > (arrival_gap + JUMP_SLACK_S) * info.video.timescale:
                nominal = self._last_delta or info.video.timescale // 25
                jump = delta / info.video.timescale
                self._log.warning(
                    "camera timestamps jumped by %+.3f s; media time rebased, new segment "
                    "at the next keyframe",
                    jump,
                )
                self.stats.timestamp_jumps += 1
                fix = held.dts + nominal - dts
                self._offset += fix
                dts += fix
                pts += fix
                delta = nominal
                self._cut = True
                self._continuous = False
                self._run_next = None
            held.duration = delta
            self._last_delta = delta
            self._frag.append(held)
            self._frag_duration += delta
            self._held = None
        seg = self._seg
        if p.keyframe and (seg is None or self._cut or self._segment_due(seg, dts)):
            if seg is not None:
                self._close_segment(final=False)
            self._cut = False
            if self._pending_params is not None:
                self._params, self._pending_params = self._pending_params, None
            if not self._open_segment(p, dts):
                self.stats.frames_dropped += 1
                return
        elif seg is None:
            self.stats.frames_dropped += 1  # waiting for a keyframe, parameter sets or space
            return
        elif p.keyframe or self._frag_duration + self._last_delta > self._fragment_limit():
            self._flush_fragment()
        self._held = _Sample(p, dts, pts)

    def _fragment_limit(self) -> int:
        assert self._info is not None
        return int(self.config.fragment_seconds * self._info.video.timescale)

    def _segment_due(self, seg: _Open, dts: int) -> bool:
        assert self._info is not None
        target = self.config.segment_seconds if self._opened > 1 else self._first_target
        return (dts - seg.first_dts) >= target * self._info.video.timescale

    # --- segments ------------------------------------------------------------------------

    def _open_segment(self, p: Packet, dts: int) -> bool:
        info = self._info
        assert info is not None
        if self._params is None or not self._params.complete:
            return False  # the parameter sets may come with a later keyframe
        if self.clock.monotonic() < self._retry_at:
            return False
        if self._backlog_full():
            self.stats.frames_dropped_backlog += 1  # (the caller counts it as dropped too)
            return False
        now_us = self.clock.wall_us()
        start = now_us
        prev = self._prev_end_us
        if prev is not None:
            if self._continuous and abs(now_us - prev) <= REANCHOR_US:
                start = prev
            start = max(start, prev)
        try:
            width, height = dimensions(self._params)
        except (ValueError, IndexError):
            width, height = info.video.width, info.video.height
        video = dataclasses.replace(info.video, params=self._params, width=width, height=height)
        stream = dataclasses.replace(info, video=video)
        day = datetime.datetime.fromtimestamp(start / 1e6, datetime.UTC).strftime("%Y-%m-%d")
        try:
            root = self.storage.choose(self.roots)
        except VmsError as e:
            self._storage_failed(str(e))
            return False
        # The name needs no catalog: camera, day, start and stream say what the file is, so
        # recovery can index it even if its row was never written.
        rel = f"{self.camera_id}/{day}/{start}-{STREAM_NAMES[self.stream]}.mp4"
        media_start = self._run_next if self._run_next is not None else 0
        file = SegmentFile(
            camera_id=self.camera_id, stream=self.stream, root=root, rel=rel, start_us=start,
            media_start=media_start, codec=video.codec, width=width, height=height,
            has_audio=info.audio is not None, timescale=video.timescale,
            init=mp4.init_segment(stream), stats=self.stats, events=self.events,
            on_trouble=self.on_storage_trouble,
        )  # fmt: skip
        self.writers.catalog_thread.submit("open", file)
        self.writers.for_root(root).submit("open", file)
        seg = self._seg = _Open(file, dts)
        if info.audio is not None:
            seg.audio_origin = media_start * info.audio.timescale // video.timescale
            carried = self._run_audio
            if self._run_next is not None and carried and carried[0] == self._run_next:
                seg.audio_seam = None if carried[1] is None else carried[1] - seg.audio_origin
        self._continuous = True
        self._opened += 1
        self._frag, self._frag_duration, self._audio = [], 0, []
        return True

    def _close_segment(self, *, final: bool) -> None:
        seg = self._seg
        if seg is None:
            self._held = None
            return
        if final:
            self._finish_held()
        self._flush_fragment()
        if self._seg is not seg:
            return  # the fragment could not be queued and the segment ended there
        self._seg = None
        self.writers.for_root(seg.file.root).submit("close", seg.file)
        self._note_end(seg)
        if seg.end:
            self._run_next = seg.file.media_start + seg.end
            audio_end = None if seg.audio_next is None else seg.audio_origin + seg.audio_next
            self._run_audio = (self._run_next, audio_end)

    def _note_end(self, seg: _Open) -> None:
        """The next segment starts no earlier than this one's end (no overlap, ever)."""
        if seg.end and self._info is not None:
            self._prev_end_us = seg.start_us + seg.end * 1_000_000 // self._info.video.timescale

    def _backlog_full(self) -> bool:
        """The root's writer is more than ``write_backlog_seconds`` behind on this camera."""
        assert self._info is not None
        behind = self.stats.queued_ticks - self.stats.written_ticks
        return behind > self.config.write_backlog_seconds * self._info.video.timescale

    def _writer_failed(self) -> None:
        """The root writer could not write the open segment (it closed it at its last whole
        fragment and reported why): start again at a keyframe, after a pause."""
        if self._seg is not None:
            self._note_end(self._seg)
        self._seg = None
        self._held = None
        self._frag, self._frag_duration, self._audio = [], 0, []
        self._continuous = False
        self._run_next = None
        self._retry_at = self.clock.monotonic() + STORAGE_RETRY_S

    def _end_fragment_at_gap(self) -> None:
        """Media was lost: the held frame gets its nominal duration and the fragment ends; the
        next one starts at the next keyframe, later on the run's time line (a marked gap)."""
        self._gap_pending = False
        if self._seg is not None:
            self._finish_held()
        self._held = None
        self._flush_fragment()

    def _finish_held(self) -> None:
        """The held frame ends the fragment with no next frame to measure it by: it takes the
        previous frame's duration."""
        held = self._held
        if held is None:
            return
        held.duration = self._last_delta or (self._info.video.timescale // 25 if self._info else 1)
        self._frag.append(held)
        self._frag_duration += held.duration
        self._held = None

    # --- fragments -----------------------------------------------------------------------

    def _flush_fragment(self) -> None:
        seg = self._seg
        frag = self._frag
        if seg is None or not frag:
            self._audio = []
            return
        info = self._info
        assert info is not None
        durations = [s.duration for s in frag]
        sizes = [len(s.data) for s in frag]
        flags = [mp4.SYNC_FLAGS if s.key else mp4.NON_SYNC_FLAGS for s in frag]
        cto = [s.pts - s.dts for s in frag]
        base = frag[0].dts - seg.first_dts
        tfdt = seg.file.media_start + base
        runs = [
            mp4.TrackRun(mp4.VIDEO_TRACK, tfdt, durations, sizes, flags, cto if any(cto) else None)
        ]
        buffers: list[bytes] = [b"", *(s.data for s in frag)]
        if (self._audio or self._audio_back) and info.audio is not None:
            audio = self._audio_run(seg, base + self._frag_duration)
            audio.base_time += seg.audio_origin  # the run's decode time line
            runs.append(audio)
            buffers.extend(a.data for a in self._audio)
        duration = self._frag_duration
        self._frag, self._frag_duration, self._audio = [], 0, []
        if self._backlog_full():
            # The disk is behind: drop rather than wait, and end the segment here (what
            # follows must start at a keyframe again).
            self.stats.frames_dropped += len(frag)
            self.stats.frames_dropped_backlog += len(frag)
            if not self._backlog_warned:
                self._log.error(
                    "storage root %s is more than %.0f s behind: dropping video until it "
                    "catches up", seg.file.root.name, self.config.write_backlog_seconds,
                )  # fmt: skip
                self._backlog_warned = True
            self._seg = None
            self._held = None
            self._continuous = False
            self._run_next = None
            self.writers.for_root(seg.file.root).submit("close", seg.file)
            self._note_end(seg)
            return
        self._backlog_warned = False
        seg.sequence += 1
        buffers[0] = mp4.fragment_header(seg.sequence, runs)
        seg.end = base + duration
        self.stats.queued_ticks += duration
        self.writers.for_root(seg.file.root).submit(
            "append", seg.file, Fragment(buffers, base, duration, frag[0].key, len(frag),
                                         frag[0].arrival),
        )  # fmt: skip

    def _audio_packet(self, p: Packet, a: AudioInfo) -> None:
        dts = p.dts + self._audio_offset
        last = self._audio_last
        if last is not None:
            delta = dts - last
            if delta < 0 or delta > (p.arrival - self._audio_last_arrival + JUMP_SLACK_S) * (
                a.timescale
            ):
                # The camera's timestamps jumped (video's jump too, and is rebased the same way:
                # to continue where it was). Placed by the old origin, the audio after the jump
                # would land hours away, or be folded onto the audio before it.
                self._log.warning(
                    "camera audio timestamps jumped by %+.3f s; audio rebased", delta / a.timescale
                )
                fix = last + self._audio_last_duration - dts
                self._audio_offset += fix
                dts += fix
        self._audio_last, self._audio_last_arrival = dts, p.arrival
        self._audio_last_duration = self._audio_duration(p, a)
        if self._seg is None:
            # Audio of an instant often arrives before the video of the same instant: keep the
            # last moments for the segment that opens at the next keyframe.
            back = self._audio_back
            if not back:
                self._audio_back_dts = dts
            back.append(p)
            if len(back) > AUDIO_PREROLL:
                self._audio_back_dts += self._audio_duration(back.pop(0), a)
            return
        if not self._audio:
            self._audio_dts = dts
        self._audio.append(p)

    @staticmethod
    def _audio_duration(p: Packet, a: AudioInfo) -> int:
        # The codec's frame length, which camera audio timestamps cannot get wrong: 1,024
        # samples for AAC, one byte a sample per channel for G.711.
        return 1024 if a.codec == AAC else max(1, len(p.data) // max(1, a.channels))

    def _audio_run(self, seg: _Open, video_end: int) -> mp4.TrackRun:
        """The fragment's audio, placed by timestamp against the segment's first video sample
        (audio and video dts share one origin: the readers see to it).

        Trims ``self._audio`` to what the run holds: audio from before the segment's first
        video sample is left out, and audio from after the fragment's video end is kept back
        for the next fragment (or segment), which is where its timestamps put it.
        """
        info = self._info
        assert info is not None and info.audio is not None
        a = info.audio
        vts, rate = info.video.timescale, a.timescale
        audio = self._audio
        if self._audio_back:  # kept back from the fragment before: it comes first
            audio[:0] = self._audio_back
            self._audio_dts = self._audio_back_dts
            self._audio_back = []
        durations = [self._audio_duration(p, a) for p in audio]
        base = self._audio_dts - (seg.first_dts * rate + vts // 2) // vts
        skip = 0
        while skip < len(audio) - 1 and base < -(durations[skip] // 2):
            base += durations[skip]  # before the video origin: the segment starts at a keyframe
            skip += 1
        seam = seg.audio_seam
        if seg.audio_next is None and seam is not None and abs(base - seam) <= rate * AUDIO_SEAM_S:
            base = seam  # the first fragment: where the run's previous file left off
        elif seg.audio_next is not None and abs(base - seg.audio_next) < rate // 2:
            base = seg.audio_next  # stay contiguous across fragments
        base = max(base, seg.audio_next or 0, 0)
        end = (video_end * rate + vts // 2) // vts
        keep, t = skip + 1, base + durations[skip]
        while keep < len(audio) and (t < end or len(audio) - keep > AUDIO_PREROLL):
            # (Audio far ahead of the video is misplaced, not early: written, not kept.)
            t += durations[keep]
            keep += 1
        if keep < len(audio):
            self._audio_back = audio[keep:]
            self._audio_back_dts = self._audio_dts + sum(durations[:keep])
        del audio[keep:]
        del audio[:skip]
        durations = durations[skip:keep]
        seg.audio_next = t
        return mp4.TrackRun(mp4.AUDIO_TRACK, base, durations, [len(p.data) for p in audio])

    # --- storage failures ----------------------------------------------------------------

    def _storage_failed(self, message: str) -> None:
        """No root can take the segment (all refused, or full)."""
        if self.events.record_error != message:
            self._log.error(
                "recording stopped: %s (retrying every %.0f s)", message, STORAGE_RETRY_S
            )
        self.events.record_failed(message)
        self._retry_at = self.clock.monotonic() + STORAGE_RETRY_S
        self.on_storage_trouble()

    def gap(self) -> None:
        """Media was lost before the next packet: end the fragment here and mark the gap."""
        with self._lock:
            self._gap_pending = True
