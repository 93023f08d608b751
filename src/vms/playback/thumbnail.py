"""Thumbnails: the picture a camera stream showed at an instant, as a small JPEG.

The picture is the first frame of the **keyframe fragment at or before the instant**: segments
start at keyframes and the fragment index flags which fragments start with one, so the frame
is found from the index alone and decoded from two reads, the file's init segment and that
fragment (``moof mdat``), with no reference frame before it. Which fragment is where a
playback from the instant would start: the first fragment of its plan (:mod:`.plan`, from a
closed segment's catalog row or an open one's writer snapshot).

Decoding (PyAV, milliseconds a frame) and encoding (PyAV's ``mjpeg``) are
blocking: callers run :meth:`Thumbnails.get` in a worker thread. :class:`Thumbnails` keeps the
encoded pictures in a bounded LRU keyed by (file, fragment, width): a fragment never changes
once written, and a strip scrubbed back and forth asks the same ones again. Requests for a
picture being made wait for it instead of decoding it again.

A fragment that does not parse or decode (a torn write, a damaged disk) is a ``NOT_FOUND``
with a message saying so, and a warning in the log: there is no picture there to show.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from fractions import Fraction
from pathlib import Path

import av

from vms.catalog.store import Catalog
from vms.errors import Kind, VmsError
from vms.media import STREAM_NAMES
from vms.playback.plan import OpenSegments, plan
from vms.recording import mp4
from vms.recording.storage import Storage
from vms.times import iso

log = logging.getLogger(__name__)

WIDTH_DEFAULT, WIDTH_MIN, WIDTH_MAX = 320, 16, 1920
# mjpeg's fixed quantiser (qmin = qmax): 2 is near lossless, 31 is blocks; 5 is about what a
# browser's canvas.toDataURL("image/jpeg") gives, at a quarter of the size of 2.
JPEG_QUANTISER = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Keyframe:
    """The keyframe fragment at or before an instant, and where its bytes are."""

    file: Path
    segment_id: int
    fragment: int  # its number in the segment
    init_bytes: int
    offset: int
    size: int
    at_us: int  # wall-clock time of its first frame
    closed: bool  # in a closed segment (its picture may be cached by the client)


@dataclasses.dataclass(frozen=True, slots=True)
class Thumbnail:
    jpeg: bytes
    width: int
    height: int


def find_keyframe(
    catalog: Catalog,
    storage: Storage,
    open_files: OpenSegments,
    camera_id: str,
    stream: int,
    at_us: int,
) -> Keyframe:
    """The keyframe fragment at or before ``at_us`` in the segment that holds ``at_us`` (a
    catalog query: a worker thread). ``NOT_FOUND`` when nothing is recorded then.

    It is where a playback from ``at_us`` starts: the first fragment of the plan of the
    microsecond at ``at_us``."""
    try:
        found = plan(catalog, open_files, camera_id, stream, at_us, at_us + 1,
                     max_range_us=1, storage=storage)  # fmt: skip
    except VmsError as e:
        if e.kind is not Kind.NOT_FOUND:
            raise
        raise VmsError(
            Kind.NOT_FOUND,
            f"no recording of camera {camera_id} ({STREAM_NAMES[stream]}) at {iso(at_us)}",
        ) from None
    piece = found.pieces[0]
    first = piece.fragments()[0]
    k = Keyframe(piece.file, piece.segment_id, first.index, piece.init_size, first.offset,
                 first.size, first.start_us, not piece.open)  # fmt: skip
    if not first.keyframe:  # segments start with a keyframe: a file that does not is damaged
        raise damaged(k, "no keyframe before it in its segment")
    return k


def read_keyframe(k: Keyframe) -> tuple[bytes, bytes]:
    """The init segment and the fragment's bytes; ``NOT_FOUND`` when the file is gone or
    shorter than its index says."""
    try:
        fd = os.open(k.file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise VmsError(Kind.NOT_FOUND, f"the recording {k.file.name} is gone") from None
    try:
        init = os.pread(fd, k.init_bytes, 0)
        fragment = os.pread(fd, k.size, k.offset)
    finally:
        os.close(fd)
    if len(init) != k.init_bytes or len(fragment) != k.size:
        raise damaged(k, "the file is shorter than its index")
    return init, fragment


def damaged(k: Keyframe, why: str) -> VmsError:
    log.warning("thumbnail of %s fragment %d: %s", k.file, k.fragment, why)
    return VmsError(
        Kind.NOT_FOUND,
        f"the recording at {iso(k.at_us)} cannot be shown: fragment {k.fragment} of "
        f"{k.file.name} is damaged ({why})",
    )


def render(k: Keyframe, init: bytes, fragment: bytes, width: int) -> Thumbnail:
    """The fragment's first frame, ``width`` wide (even, aspect kept), as a JPEG."""
    boxes = list(mp4.iter_boxes(fragment))
    whole = bool(boxes) and boxes[-1].offset + boxes[-1].size == len(fragment)
    if [b.kind for b in boxes] != [b"moof", b"mdat"] or not whole:
        raise damaged(k, "not one moof and one mdat")
    try:
        if not mp4.parse_moof(fragment[: boxes[0].size]).keyframe:
            raise damaged(k, "it does not start with a keyframe")
    except ValueError as e:
        raise damaged(k, str(e)) from None
    try:
        frame, aspect = _first_frame(init + fragment)
    except av.FFmpegError as e:
        raise damaged(k, f"it does not decode: {e}") from None
    if frame is None:
        raise damaged(k, "no picture decodes from it")
    display = frame.width * aspect
    w = max(WIDTH_MIN, min(WIDTH_MAX, width)) // 2 * 2
    h = max(2, round(w * frame.height / display / 2) * 2)
    picture = frame.reformat(width=w, height=h, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    encoder.qmin = encoder.qmax = JPEG_QUANTISER
    packets = encoder.encode(picture) + encoder.encode(None)
    return Thumbnail(b"".join(bytes(p) for p in packets), w, h)


def _first_frame(data: bytes) -> tuple[av.VideoFrame | None, Fraction]:
    with av.open(io.BytesIO(data), "r", format="mp4") as container:
        if not container.streams.video:  # an init segment that lost its video track
            return None, Fraction(1)
        stream = container.streams.video[0]
        ctx = stream.codec_context
        # The first frame is the keyframe; a decoder with frame delay may hold it until later
        # packets arrive, which it need not decode. The demuxer's final empty packet flushes.
        ctx.skip_frame = "NONKEY"
        sar = ctx.sample_aspect_ratio
        aspect = Fraction(sar) if sar else Fraction(1)
        for packet in container.demux(stream):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    return frame, aspect
    return None, aspect


Key = tuple[str, int, int]  # (file, fragment, width)


class Thumbnails:
    """Encoded thumbnails in a bounded LRU (``size`` entries; 0 keeps none), each made once
    however many ask for it at the same moment. ``decodes`` and ``hits`` count."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.decodes = 0
        self.hits = 0
        self._lock = threading.Lock()
        self._done: collections.OrderedDict[Key, Thumbnail] = collections.OrderedDict()
        self._making: dict[Key, Future[Thumbnail]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def get(self, key: Key, make: Callable[[], Thumbnail]) -> Thumbnail:
        """The thumbnail of ``key``, made by ``make`` (blocking: a worker thread) unless it is
        kept or being made; a failure is not kept (the next request tries again)."""
        with self._lock:
            done = self._done.get(key)
            if done is not None:
                self._done.move_to_end(key)
                self.hits += 1
                return done
            pending = self._making.get(key)
            if pending is None:
                mine: Future[Thumbnail] = Future()
                self._making[key] = mine
        if pending is not None:
            return pending.result()
        try:
            made = make()
        except BaseException as e:
            with self._lock:
                del self._making[key]
            mine.set_exception(e)
            raise
        with self._lock:
            self.decodes += 1
            del self._making[key]
            if self.size > 0:
                self._done[key] = made
                while len(self._done) > self.size:
                    self._done.popitem(last=False)
        mine.set_result(made)
        return made

    def at(
        self,
        catalog: Catalog,
        storage: Storage,
        open_files: OpenSegments,
        camera_id: str,
        stream: int,
        at_us: int,
        width: int,
    ) -> tuple[Keyframe, Thumbnail]:
        """The picture at ``at_us`` (blocking: a worker thread)."""
        k = find_keyframe(catalog, storage, open_files, camera_id, stream, at_us)
        width = max(WIDTH_MIN, min(WIDTH_MAX, width)) // 2 * 2

        def make() -> Thumbnail:
            init, fragment = read_keyframe(k)
            return render(k, init, fragment, width)

        return k, self.get((str(k.file), k.fragment, width), make)
