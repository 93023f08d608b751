"""The recorder: turns one camera's packets into segments and fragments on disk.

Called synchronously from the camera's ingest thread (it is the one subscriber the ingest
waits for), so its per-packet path is a few attribute writes and a list append. Once a
fragment is complete (next keyframe, or one more frame would pass ``fragment_seconds``) it is
built and written with one ``writev``. Once a segment is long enough it is closed at the next
keyframe: ``fdatasync``, then the catalog row (see docs/design/storage.md for the order).

The last video packet is *held* until the next one arrives: only then is its duration (the
dts delta) known, and MP4 needs every sample's duration.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import logging
import threading
import zlib
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from vms import mp4
from vms.catalog import Catalog
from vms.clock import Clock
from vms.config import RecordingConfig
from vms.errors import VmsError
from vms.health import CameraHealth
from vms.media import AAC, AUDIO, AudioInfo, Packet, ParameterSets, StreamInfo, dimensions
from vms.segment import SegmentWriter, fsync_dir
from vms.storage import Root, Storage

log = logging.getLogger(__name__)

# A forward jump larger than the arrival-time gap plus this is a camera clock jump.
JUMP_SLACK_S = 10.0
# Re-anchor a new segment on the wall clock when media time and wall time differ by more.
REANCHOR_US = 1_000_000
STORAGE_RETRY_S = 1.0
# Audio kept while no segment is open (~1.3 s of AAC at 48 kHz or of 20 ms G.711 packets): the
# segment that opens at the next keyframe takes what belongs after that keyframe.
AUDIO_PREROLL = 64


class _Sample:
    __slots__ = ("arrival", "data", "dts", "duration", "key", "pts")

    def __init__(self, p: Packet, dts: int, pts: int) -> None:
        self.data = p.data
        self.dts = dts
        self.pts = pts
        self.key = p.keyframe
        self.arrival = p.arrival
        self.duration = 0


@dataclasses.dataclass
class RecorderStats:
    """Counters for metrics; written by the recorder only."""

    frames_written: int = 0
    bytes_written: int = 0
    fragments: int = 0
    segments: int = 0
    frames_dropped: int = 0
    write_errors: int = 0
    timestamp_jumps: int = 0
    write_seconds_total: float = 0.0
    last_write_s: float = 0.0
    # Packet arrival to fragment on disk: the first (oldest) sample of the fragment.
    last_delay_s: float = 0.0
    max_delay_s: float = 0.0


class _Open:
    """The segment being written."""

    def __init__(self, seg_id: int, root: Root, writer: SegmentWriter, start_us: int, dts: int):
        self.id = seg_id
        self.root = root
        self.writer = writer
        self.start_us = start_us
        self.first_dts = dts
        self.sequence = 0
        self.audio_next: int | None = None


class Recorder:
    def __init__(
        self,
        camera_id: str,
        *,
        catalog: Catalog,
        storage: Storage,
        clock: Clock,
        config: RecordingConfig,
        health: CameraHealth,
        on_storage_trouble: Callable[[], None] = lambda: None,
        roots: list[str] | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.catalog = catalog
        self.storage = storage
        self.clock = clock
        self.config = config
        self.health = health
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
            self._audio_back, self._audio_offset, self._audio_last = [], 0, None

    def stream_stopped(self) -> None:
        with self._lock:
            self._close_segment(final=True)
            self._continuous = False

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

    def open_end_us(self, seg_id: int) -> int | None:
        """Wall-clock end of what is on disk of the open segment ``seg_id`` (for the API)."""
        seg, info = self._seg, self._info
        if seg is None or seg.id != seg_id or info is None:
            return None
        return seg.start_us + seg.writer.index.duration * 1_000_000 // info.video.timescale

    # --- video path ----------------------------------------------------------------------

    def _video(self, p: Packet) -> None:
        info = self._info
        if info is None:
            return
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
        target = self.config.segment_seconds if self.stats.segments else self._first_target
        return (dts - seg.first_dts) >= target * self._info.video.timescale

    # --- segments ------------------------------------------------------------------------

    def _open_segment(self, p: Packet, dts: int) -> bool:
        info = self._info
        assert info is not None
        if self._params is None or not self._params.complete:
            return False  # the parameter sets may come with a later keyframe
        if self.clock.monotonic() < self._retry_at:
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
            seg_id, rel = self.catalog.open_segment(
                camera_id=self.camera_id, root_id=root.id or 0, start_us=start,
                codec=video.codec, width=width, height=height,
                has_audio=info.audio is not None, timescale=video.timescale, day=day,
            )  # fmt: skip
        except VmsError as e:
            self._storage_failed(str(e), None)
            return False
        try:
            writer = SegmentWriter(root.file(rel), mp4.init_segment(stream))
        except OSError as e:
            self._discard_row(seg_id, root, rel)
            self._storage_failed(f"cannot create {rel} on root {root.name}: {e.strerror}", root)
            return False
        self._seg = _Open(seg_id, root, writer, start, dts)
        self._continuous = True
        self._frag, self._frag_duration, self._audio = [], 0, []
        root.set_open_bytes(seg_id, writer.size)
        return True

    def _segment_duration(self, seg: _Open) -> int:
        return seg.writer.index.duration

    def _close_segment(self, *, final: bool) -> None:
        seg = self._seg
        if seg is None:
            self._held = None
            return
        if final and self._held is not None:
            held = self._held
            held.duration = self._last_delta or (
                self._info.video.timescale // 25 if self._info else 1
            )
            self._frag.append(held)
            self._frag_duration += held.duration
            self._held = None
        self._flush_fragment()
        if self._seg is not seg:
            return  # the flush failed and closed the segment at its last whole fragment
        self._seg = None
        writer = seg.writer
        seg.root.set_open_bytes(seg.id, None)
        if not len(writer.index):
            writer.abandon()
            self._discard_row(seg.id, seg.root, None)
            return
        assert self._info is not None
        end_us = seg.start_us + writer.index.duration * 1_000_000 // self._info.video.timescale
        try:
            writer.sync()
            # The file's name must be durable too: its day directory, and that directory's
            # own entry in the camera directory (new each day).
            fsync_dir(writer.path.parent)
            fsync_dir(writer.path.parent.parent)
        except OSError as e:
            self._log.warning("fdatasync of segment %s failed: %s", seg.id, e.strerror)
        writer.close()
        try:
            self.catalog.close_segment(
                seg.id, end_us=end_us, init_bytes=writer.init_bytes, size=writer.size,
                fragments=len(writer.index), frag_index=writer.index.encode(), crc32=writer.crc,
            )  # fmt: skip
        except SQLAlchemyError:  # the file is intact; recovery closes the row at next start
            self._log.exception("cannot close segment %s in the catalog", seg.id)
        seg.root.add_closed(writer.size)
        self._prev_end_us = end_us
        self.stats.segments += 1

    def _discard_row(self, seg_id: int, root: Root, rel: str | None) -> None:
        try:
            seg = self.catalog.segment(seg_id)
            for gid, _, path in self.catalog.delete_segments([seg]):
                root.file(path).unlink(missing_ok=True)
                self.catalog.forget_garbage([gid])
        except (VmsError, OSError):
            self._log.exception("cannot discard empty segment %s", seg_id)

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
        runs = [
            mp4.TrackRun(mp4.VIDEO_TRACK, base, durations, sizes, flags, cto if any(cto) else None)
        ]
        buffers: list[bytes] = [b"", *(s.data for s in frag)]
        if (self._audio or self._audio_back) and info.audio is not None:
            runs.append(self._audio_run(seg, base + self._frag_duration))
            buffers.extend(a.data for a in self._audio)
        seg.sequence += 1
        buffers[0] = mp4.fragment_header(seg.sequence, runs)
        duration = self._frag_duration
        self._frag, self._frag_duration, self._audio = [], 0, []
        t0 = self.clock.monotonic()
        try:
            seg.writer.append(buffers, duration, frag[0].key, len(frag))
        except OSError as e:
            self.stats.write_errors += 1
            self.stats.frames_dropped += len(frag)
            self._write_failed(seg, e)
            return
        t1 = self.clock.monotonic()
        st = self.stats
        st.frames_written += len(frag)
        st.bytes_written += sum(len(b) for b in buffers)
        st.fragments += 1
        st.last_write_s = t1 - t0
        st.write_seconds_total += st.last_write_s
        st.last_delay_s = t1 - frag[0].arrival
        st.max_delay_s = max(st.max_delay_s, st.last_delay_s)
        seg.root.set_open_bytes(seg.id, seg.writer.size)
        if seg.root.write_error is not None or self.health.record_error is not None:
            seg.root.write_error = None
            self.health.record_ok()

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
        if seg.audio_next is not None and abs(base - seg.audio_next) < rate // 2:
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

    def _write_failed(self, seg: _Open, e: OSError) -> None:
        what = "storage full" if e.errno == errno.ENOSPC else "write failed"
        self._storage_failed(f"{what} on root {seg.root.name}: {e.strerror}", seg.root)
        # The writer truncated back to the last whole fragment; close the segment there.
        self._held = None
        self._close_segment(final=False)
        self._continuous = False

    def _storage_failed(self, message: str, root: Root | None) -> None:
        if root is not None:
            root.write_error = message
        if self.health.record_error != message:
            self._log.error(
                "recording stopped: %s (retrying every %.0f s)", message, STORAGE_RETRY_S
            )
        self.health.record_failed(message)
        self._retry_at = self.clock.monotonic() + STORAGE_RETRY_S
        self.on_storage_trouble()

    def gap(self) -> None:
        """Media was lost before the next packet: end the fragment here and mark the gap."""
        with self._lock:
            self._gap_pending = True
