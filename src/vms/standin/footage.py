"""Short video clips for demo cameras and tests, encoded with PyAV.

* :func:`footage_clip` gives real footage (people walking): OpenCV's ``vtest.avi`` from
  Debian's ``opencv-doc``, re-encoded once to H.264 MP4.
* :func:`synthetic_clip` encodes a generated moving pattern (no numpy needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import av.video.stream

__all__ = ["VTEST_SYSTEM_PATH", "footage_clip", "synthetic_clip"]

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
