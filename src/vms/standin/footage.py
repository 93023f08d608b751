"""Short video clips for demo cameras and tests, encoded with PyAV.

* :func:`footage_clip` gives real footage (people walking): OpenCV's ``vtest.avi`` from
  Debian's ``opencv-doc``, re-encoded once to H.264 MP4.
* :func:`scene_frames` gives the same footage as raw I420 frames for the stand-in camera
  (``StandinCamera(frames=...)``), after some seconds of the empty street, so that the frame in
  which people first appear is known; or the empty street alone (a static camera).
* :func:`synthetic_clip` encodes a generated moving pattern (no numpy needed).

Traps of the scene files: the stand-in pushes the bytes as they are, and GStreamer lays I420
rows out on 4-byte strides, so a scene width must be a multiple of 8 (luma and chroma rows then
need no padding). The files are big (about 140 MB at 384×288) and cached by their parameters:
a file is complete once its ``.json`` description exists, which is written last.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.video.stream
import numpy as np

__all__ = [
    "VTEST_SYSTEM_PATH",
    "Scene",
    "default_cache_dir",
    "footage_clip",
    "scene_frames",
    "synthetic_clip",
]

VTEST_SYSTEM_PATH = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
_VTEST_IN_PACKAGE = VTEST_SYSTEM_PATH.relative_to("/")
FOOTAGE_NAME = "vtest-h264.mp4"


def _encoder_options(codec: str, gop: int) -> dict[str, str]:
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0"
    if codec == "libx264":
        return {"preset": "ultrafast", "x264-params": params}
    if codec == "libx265":
        return {"preset": "ultrafast", "x265-params": params + ":log-level=error"}
    return {"g": str(gop)}


def _add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    width: int,
    height: int,
    fps: Fraction,
    gop: int,
    bit_rate: int | None = None,
) -> av.video.stream.VideoStream:
    stream = container.add_stream(codec, rate=fps, options=_encoder_options(codec, gop))
    if not isinstance(stream, av.video.stream.VideoStream):
        raise ValueError(f"{codec} is not a video encoder")
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    stream.codec_context.time_base = 1 / fps
    if bit_rate is not None:
        stream.codec_context.bit_rate = bit_rate
    return stream


def _temp_path_next_to(path: Path) -> Path:
    # Same suffix as the target so PyAV picks the right muxer from the name.
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    # mkstemp creates 0600; give the clip the usual umask-derived mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def synthetic_clip(
    path: Path,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    seconds: float = 4,
    codec: str = "libx264",
    gop: int = 25,
    bit_rate: int | None = None,
) -> Path:
    """Encode diagonal moving stripes with a bouncing white square to ``path``.

    The container comes from the suffix (``.mp4``, ``.mkv``, ...); ``codec`` is a PyAV
    encoder name such as ``libx264`` or ``libx265``. Width and height must be even.
    ``bit_rate`` (bits a second) asks the encoder for that average; by default it picks.
    """
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError("width and height must be even and at least 16")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame_count = max(1, round(seconds * fps))
    period = 64
    ramp = bytes(16 + (i * 219) // (period - 1) for i in range(period))
    base = ramp * (width // period + 2)
    box = min(64, width // 4, height // 4)
    white = b"\xeb" * box
    temp = _temp_path_next_to(path)
    try:
        with av.open(str(temp), "w") as container:
            stream = _add_video_stream(
                container, codec, width, height, Fraction(fps), gop, bit_rate
            )
            frame = av.VideoFrame(width, height, "yuv420p")
            luma, chroma_u, chroma_v = frame.planes
            luma_pad = b"\x00" * (luma.line_size - width)
            for index in range(frame_count):
                box_x = _bounce(index * 7, width - box)
                box_y = _bounce(index * 5, height - box)
                rows = []
                for row in range(height):
                    offset = (index * 3 + row) % period
                    line = base[offset : offset + width]
                    if box_y <= row < box_y + box:
                        line = line[:box_x] + white + line[box_x + box :]
                    rows.append(line + luma_pad)
                luma.update(b"".join(rows))
                # Chroma drifts slowly so the colour changes over the clip.
                chroma_u.update(bytes([96 + index % 64]) * chroma_u.buffer_size)
                chroma_v.update(bytes([160 - index % 64]) * chroma_v.buffer_size)
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _bounce(position: int, span: int) -> int:
    if span <= 0:
        return 0
    position %= 2 * span
    return position if position <= span else 2 * span - position


def _find_vtest(cache_dir: Path) -> Path:
    if VTEST_SYSTEM_PATH.is_file():
        return VTEST_SYSTEM_PATH
    cached = cache_dir / "vtest.avi"
    if cached.is_file():
        return cached
    apt_get = shutil.which("apt-get")
    dpkg = shutil.which("dpkg")
    if apt_get is None or dpkg is None:
        raise RuntimeError(f"{VTEST_SYSTEM_PATH} is missing and apt-get/dpkg are unavailable")
    debs = sorted(cache_dir.glob("opencv-doc_*.deb"))
    if not debs:
        result = subprocess.run(
            [apt_get, "download", "opencv-doc"],
            cwd=cache_dir,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        debs = sorted(cache_dir.glob("opencv-doc_*.deb"))
        if result.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download opencv-doc failed: {result.stderr[-2000:]}")
    # The package is ~95 MB; keep only vtest.avi.
    with tempfile.TemporaryDirectory(dir=cache_dir) as unpacked:
        subprocess.run(
            [dpkg, "-x", str(debs[-1]), unpacked],
            capture_output=True,
            timeout=600,
            check=True,
        )
        extracted = Path(unpacked) / _VTEST_IN_PACKAGE
        if not extracted.is_file():
            raise RuntimeError(f"{debs[-1].name} has no {VTEST_SYSTEM_PATH}")
        extracted.replace(cached)
    for deb in debs:
        deb.unlink(missing_ok=True)
    return cached


def footage_clip(cache_dir: Path) -> Path:
    """Real footage (people walking) as H.264 MP4, cached as ``cache_dir/vtest-h264.mp4``.

    The source is ``vtest.avi`` from ``opencv-doc``; when the package is not installed its
    .deb is fetched with ``apt-get download`` and unpacked with ``dpkg -x`` in ``cache_dir``.
    The re-encode keeps size and frame rate: libx264, yuv420p, keyframe every 25 frames,
    about 1 Mbit/s.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / FOOTAGE_NAME
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    source = _find_vtest(cache_dir)
    temp = _temp_path_next_to(target)
    try:
        with av.open(str(source)) as reader, av.open(str(temp), "w") as writer:
            video_in = reader.streams.video[0]
            fps = video_in.average_rate or video_in.guessed_rate or Fraction(25)
            stream = _add_video_stream(
                writer,
                "libx264",
                video_in.codec_context.width,
                video_in.codec_context.height,
                Fraction(fps),
                gop=25,
                bit_rate=1_000_000,
            )
            for index, frame in enumerate(reader.decode(video_in)):
                out = frame.reformat(format="yuv420p")
                out.pts = index
                out.time_base = 1 / Fraction(fps)
                writer.mux(stream.encode(out))
            writer.mux(stream.encode(None))
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    return target


# Bump when what a scene file holds changes: files of an older format are then rebuilt.
SCENE_FORMAT = 1
# Frames whose per-pixel median makes the empty street: people cross it in a few seconds, so
# a sample spread over the whole clip sees each spot empty far more often than not.
MEDIAN_SAMPLES = 60


def default_cache_dir() -> Path:
    """``$VMS_FOOTAGE_DIR``, else ``~/.cache/vms/footage``: where tests and benchmarks keep
    ``vtest.avi`` and the files made from it."""
    configured = os.environ.get("VMS_FOOTAGE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "vms" / "footage"


@dataclasses.dataclass(frozen=True)
class Scene:
    """Raw frames for the stand-in camera: ``frame_count`` I420 frames of ``width``×``height``,
    packed one after another in ``path``, to be played at ``fps`` (vtest's own rate) in a loop.

    Frames ``0 .. first_people-1`` are the empty street; ``first_people`` is the first frame of
    the footage, in which people are visible. ``first_people`` is None for a static scene (the
    empty street alone, one frame)."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int
    first_people: int | None

    @property
    def frame_size(self) -> int:
        return self.width * self.height * 3 // 2

    @property
    def static(self) -> bool:
        return self.first_people is None

    @property
    def loop_s(self) -> float:
        """Seconds the stand-in takes to play the whole file once."""
        return float(self.frame_count / self.fps)

    def trimmed(self, people_s: float) -> Scene:
        """The same file played with only ``people_s`` seconds of people after the empty
        street: a shorter loop, so more people appear per minute (benchmarks)."""
        if self.first_people is None:
            return self
        count = min(self.frame_count, self.first_people + max(1, round(people_s * self.fps)))
        return dataclasses.replace(self, frame_count=count)

    def read_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as a (height*3/2, width) uint8 array: luma rows, then U, then V."""
        if not 0 <= index < self.frame_count:
            raise IndexError(f"frame {index} is outside 0..{self.frame_count - 1}")
        data = np.fromfile(
            self.path, dtype=np.uint8, count=self.frame_size, offset=index * self.frame_size
        )
        return data.reshape(self.height * 3 // 2, self.width)


def scene_frames(
    cache_dir: Path,
    width: int,
    height: int,
    *,
    empty_s: float = 6.0,
    static: bool = False,
) -> Scene:
    """The vtest scene as raw I420 for ``StandinCamera(frames=...)``, built once per parameters.

    ``empty_s`` seconds of the empty street (the per-pixel median of frames sampled across the
    clip), then the whole clip, both scaled to ``width``×``height`` (vtest is 768×576 at 10
    frames a second). ``static=True`` gives the empty street alone, one frame, for a camera in
    which nothing moves. ``width`` must be a multiple of 8, ``height`` even.
    """
    if width % 8 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"scene size {width}x{height}: width must be a multiple of 8, height even")
    if not math.isfinite(empty_s) or empty_s < 0:
        raise ValueError(f"empty_s must be a non-negative number of seconds, not {empty_s!r}")
    cache_dir = Path(cache_dir)
    variant = "static" if static else f"empty{round(empty_s * 1000)}ms"
    name = f"scene{SCENE_FORMAT}-{width}x{height}-{variant}"
    path = cache_dir / f"{name}.i420"
    description = cache_dir / f"{name}.json"
    scene = _load_scene(path, description, width, height)
    if scene is not None:
        return scene
    cache_dir.mkdir(parents=True, exist_ok=True)
    source = _find_vtest(cache_dir)
    frame_size = width * height * 3 // 2
    temp = _temp_path_next_to(path)
    try:
        with temp.open("r+b") as out:
            if static:
                fps, _, median = _decode_scaled(source, width, height, None)
                out.write(median.tobytes())
                frame_count, first_people = 1, None
            else:
                # The footage goes after a hole for the empty frames, which are known (the
                # median) only once the footage has been read.
                probe_fps = _source_fps(source)
                first_people = round(empty_s * probe_fps)
                out.seek(first_people * frame_size)
                fps, footage_count, median = _decode_scaled(source, width, height, out)
                out.seek(0)
                empty = median.tobytes()
                for _ in range(first_people):
                    out.write(empty)
                frame_count = first_people + footage_count
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    scene = Scene(path, width, height, fps, frame_count, first_people)
    _write_description(scene, description)
    return scene


def _source_fps(source: Path) -> Fraction:
    with av.open(str(source)) as reader:
        stream = reader.streams.video[0]
        return Fraction(stream.average_rate or stream.guessed_rate or 25)


def _decode_scaled(
    source: Path, width: int, height: int, out: BinaryIO | None
) -> tuple[Fraction, int, np.ndarray]:
    """Decode ``source`` scaled to I420 ``width``×``height``, writing each frame to ``out``;
    returns the frame rate, the frame count and the median frame of a sample."""
    samples: list[np.ndarray] = []
    count = 0
    with av.open(str(source)) as reader:
        stream = reader.streams.video[0]
        fps = Fraction(stream.average_rate or stream.guessed_rate or 25)
        # AVI headers give the frame count; without one every frame is kept and thinned below.
        step = max(1, stream.frames // MEDIAN_SAMPLES) if stream.frames else 1
        for frame in reader.decode(stream):
            # to_ndarray packs the three planes without their line padding.
            planes = frame.reformat(width, height, format="yuv420p").to_ndarray()
            if out is not None:
                out.write(planes.tobytes())
            if count % step == 0:
                samples.append(planes)
            count += 1
    if not samples:
        raise RuntimeError(f"{source} has no video frames")
    samples = samples[:: max(1, len(samples) // MEDIAN_SAMPLES)]
    median = np.rint(np.median(np.stack(samples), axis=0)).astype(np.uint8)
    return fps, count, median


def _write_description(scene: Scene, description: Path) -> None:
    fields = {
        "format": SCENE_FORMAT,
        "width": scene.width,
        "height": scene.height,
        "fps": f"{scene.fps.numerator}/{scene.fps.denominator}",
        "frame_count": scene.frame_count,
        "first_people": scene.first_people,
    }
    temp = _temp_path_next_to(description)
    try:
        temp.write_text(json.dumps(fields, indent=1) + "\n")
        temp.replace(description)
    finally:
        temp.unlink(missing_ok=True)


def _load_scene(path: Path, description: Path, width: int, height: int) -> Scene | None:
    """The cached scene, or None when it is missing, of another format, or incomplete."""
    try:
        fields = json.loads(description.read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(fields, dict) or fields.get("format") != SCENE_FORMAT:
        return None
    try:
        scene = Scene(
            path,
            int(fields["width"]),
            int(fields["height"]),
            Fraction(fields["fps"]),
            int(fields["frame_count"]),
            None if fields["first_people"] is None else int(fields["first_people"]),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if (scene.width, scene.height) != (width, height):
        return None
    if scene.frame_count <= 0 or size != scene.frame_count * scene.frame_size:
        return None
    return scene
