"""Stand-in IP camera: a GStreamer RTSP server that serves a synthetic live stream.

Run with Debian's interpreter (it needs ``gi``), not the project venv::

    /usr/bin/python3 rtsp_server.py --port 0 --width 1920 --height 1080

Standalone on purpose: it imports nothing from the ``vms`` package. It binds 127.0.0.1,
prints exactly one line ``READY <port>`` on stdout once it accepts connections, logs to
stderr, and exits cleanly on SIGTERM/SIGINT.

The media factory is shared, so one encoder feeds every client of the mount; UDP and
interleaved TCP transports are both allowed. With ``--tls-cert``/``--tls-key`` the server
speaks RTSPS (RTSP over TLS, URL scheme ``rtsps://``) on the same port, via
``GstRTSPAuth.set_tls_certificate``.

With ``--stamp`` the frames come from this process instead of ``videotestsrc``: each one is
drawn when it is captured, at 25 (``--fps``) a second, with the wall clock stamped into it
(``stamp.py``, next to this file) over faint noise that keeps the encoder at its bitrate, and
pushed through an ``appsrc`` into the same live encoder.

With ``--frames FILE`` the frames are read from a file of raw I420 frames (``footage.py``'s
``scene_frames``; GStreamer's default strides, so the width is a multiple of 8) and pushed the
same way at ``--frames-fps``, in a loop that starts again at frame 0. Each time frame
``--frames-mark`` is pushed, the server prints ``MARK <Unix time in ms>`` on stdout: the
moment the first frame showing people entered the pipeline, for latency measurements. The
file is mapped, not read: several stand-ins serving one scene share its pages.
"""

from __future__ import annotations

import argparse
import importlib
import mmap
import os
import random
import signal
import sys
import threading
import time
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

# stamp.py next to this file (the script's directory is on sys.path; ``vms`` is not).
stamp = importlib.import_module("stamp")

ROLE = "user"
SRC_CAPS_NAME = "srccaps"
APP_SRC_NAME = "framesrc"
# Noise of ±12 luma levels under the stamp: enough to keep x264 at its bitrate (it cannot
# predict noise), faint enough to look like a dark sensor.
NOISE_AMPLITUDE = 12
TILE_WIDTH = 480
TILE_HEIGHT = 270


def log(message: str) -> None:
    print(f"rtsp_server: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Stand-in RTSP camera (GStreamer).")
    parser.add_argument("--port", type=int, default=0, help="TCP port, 0 picks a free one")
    parser.add_argument("--mount", default="/cam", help="mount path, e.g. /cam")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--bitrate-kbps", type=int, default=2000)
    parser.add_argument("--keyint", type=int, default=50, help="GOP length in frames")
    parser.add_argument("--codec", choices=("h264", "h265"), default="h264")
    parser.add_argument("--audio", choices=("none", "aac", "pcmu", "pcma"), default="none")
    parser.add_argument("--user", default=None)
    parser.add_argument("--password", default=None)
    parser.add_argument("--tls-cert", default=None, help="PEM certificate, enables RTSPS")
    parser.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    parser.add_argument(
        "--change-resolution-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="halve width/height this long after the media starts (new SPS mid-stream)",
    )
    parser.add_argument(
        "--pattern",
        default="ball",
        help="videotestsrc pattern; 'ball' bounces in a 480x270 tile on black (cheap)",
    )
    parser.add_argument(
        "--stamp",
        action="store_true",
        help="frames drawn here with the capture time stamped in (stamp.py), not videotestsrc",
    )
    parser.add_argument(
        "--frames",
        default=None,
        metavar="FILE",
        help="raw I420 frames of --width x --height to play in a loop, not videotestsrc",
    )
    parser.add_argument(
        "--frames-fps",
        default=None,
        metavar="N[/D]",
        help="frame rate of --frames (default: --fps)",
    )
    parser.add_argument(
        "--frames-count",
        type=int,
        default=None,
        metavar="N",
        help="play only the first N frames of --frames in the loop (default: all)",
    )
    parser.add_argument(
        "--frames-mark",
        type=int,
        default=None,
        metavar="INDEX",
        help="print 'MARK <epoch ms>' on stdout each time this frame of --frames is pushed",
    )
    args = parser.parse_args(argv)
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if not args.mount.startswith("/"):
        args.mount = "/" + args.mount
    for name in ("width", "height", "fps", "bitrate_kbps", "keyint"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.change_resolution_after is not None and (args.width < 4 or args.height < 4):
        parser.error("--change-resolution-after needs at least 4x4")
    if args.stamp:
        if args.change_resolution_after is not None:
            parser.error("--stamp and --change-resolution-after do not go together")
        if args.width % 2 or args.height % 2:
            parser.error("--stamp needs an even width and height")
        try:
            stamp.region(args.width, args.height)
        except ValueError as error:
            parser.error(str(error))
    args.rate = (args.fps, 1)
    if args.frames is not None:
        check_frames(parser, args)
    elif args.frames_fps is not None or args.frames_mark is not None:
        parser.error("--frames-fps and --frames-mark need --frames")
    return args


def check_frames(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.stamp or args.change_resolution_after is not None:
        parser.error("--frames goes with neither --stamp nor --change-resolution-after")
    if args.width % 8 or args.height % 2:
        # Rows of a tightly packed file are GStreamer's 4-byte-aligned strides only then.
        parser.error("--frames needs a width that is a multiple of 8 and an even height")
    if args.frames_fps is not None:
        numerator, _, denominator = args.frames_fps.partition("/")
        try:
            args.rate = (int(numerator), int(denominator or "1"))
        except ValueError:
            parser.error(f"--frames-fps {args.frames_fps!r} is not N or N/D")
        if args.rate[0] <= 0 or args.rate[1] <= 0:
            parser.error("--frames-fps must be positive")
    try:
        size = os.path.getsize(args.frames)
    except OSError as error:
        parser.error(f"--frames {args.frames}: {error.strerror}")
    frame_size = args.width * args.height * 3 // 2
    if size == 0 or size % frame_size:
        parser.error(
            f"--frames {args.frames}: {size} bytes is not a whole number of "
            f"{args.width}x{args.height} I420 frames ({frame_size} bytes each)"
        )
    args.frame_count = size // frame_size
    if args.frames_count is not None:
        if not 0 < args.frames_count <= args.frame_count:
            parser.error(f"--frames-count must be 1..{args.frame_count}")
        args.frame_count = args.frames_count
    if args.frames_mark is not None and not 0 <= args.frames_mark < args.frame_count:
        parser.error(f"--frames-mark must be a frame of the file, 0..{args.frame_count - 1}")


def require_elements(names: list[str]) -> None:
    missing = [name for name in names if Gst.ElementFactory.find(name) is None]
    if missing:
        raise SystemExit(f"rtsp_server: missing GStreamer element(s): {', '.join(missing)}")


def raw_caps(width: int, height: int, rate: tuple[int, int]) -> str:
    # format=I420 pins the cheapest path: without it x264enc may negotiate Y444.
    return f"video/x-raw,format=I420,width={width},height={height},framerate={rate[0]}/{rate[1]}"


def video_source(args: argparse.Namespace) -> str:
    if args.stamp or args.frames is not None:
        # do-timestamp: buffers get the pipeline's running time when pushed, as a live
        # capture's would. The RTSP server's sinks hold each buffer until its running time
        # plus the latency the pipeline declares: min-latency=0 declares none for the
        # source, so the stamp is taken when the frame is drawn and x264's own latency
        # (~20 ms) is what the camera adds.
        return (
            f"appsrc name={APP_SRC_NAME} is-live=true do-timestamp=true format=time "
            f"min-latency=0 caps={raw_caps(args.width, args.height, args.rate)}"
        )
    output = f"capsfilter name={SRC_CAPS_NAME} caps={raw_caps(args.width, args.height, args.rate)}"
    if args.pattern != "ball":
        return f"videotestsrc is-live=true pattern={args.pattern} ! {output}"
    # Painting "ball" over a full 1080p frame costs more CPU than encoding it, so the ball
    # bounces in a small tile that videobox pads with black; autocrop re-pads (or crops)
    # whenever the output caps change, which the resolution change relies on.
    tile_width = min(args.width, TILE_WIDTH) & ~1
    tile_height = min(args.height, TILE_HEIGHT) & ~1
    return (
        "videotestsrc is-live=true pattern=ball ! "
        f"{raw_caps(tile_width, tile_height, args.rate)} ! "
        f"videobox autocrop=true fill=black ! {output}"
    )


def video_branch(args: argparse.Namespace) -> str:
    source = video_source(args)
    if args.codec == "h264":
        require_elements(["x264enc", "h264parse", "rtph264pay"])
        # threads=1: frame threads only add latency and overhead at this size.
        encode = (
            "x264enc tune=zerolatency speed-preset=ultrafast sliced-threads=false threads=1 "
            f"bitrate={args.bitrate_kbps} key-int-max={args.keyint} ! "
            "h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        if Gst.ElementFactory.find("x265enc") is None:
            raise SystemExit(
                "rtsp_server: --codec h265 needs the x265enc element "
                "(gstreamer1.0-plugins-bad built with libx265), which is not installed"
            )
        require_elements(["h265parse", "rtph265pay"])
        encode = (
            "x265enc tune=zerolatency speed-preset=ultrafast "
            f"bitrate={args.bitrate_kbps} key-int-max={args.keyint} ! "
            "h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    return f"{source} ! {encode}"


def audio_branch(audio: str) -> str:
    if audio == "none":
        return ""
    source = "audiotestsrc is-live=true wave=sine volume=0.2"
    if audio == "aac":
        encoder = "avenc_aac" if Gst.ElementFactory.find("avenc_aac") else "voaacenc"
        require_elements([encoder, "rtpmp4gpay"])
        return (
            f"{source} ! audio/x-raw,rate=48000,channels=1 ! audioconvert ! "
            f"{encoder} bitrate=64000 ! rtpmp4gpay name=pay1 pt=97"
        )
    if audio == "pcmu":
        require_elements(["mulawenc", "rtppcmupay"])
        return (
            f"{source} ! audio/x-raw,rate=8000,channels=1 ! audioconvert ! "
            "mulawenc ! rtppcmupay name=pay1 pt=0"
        )
    require_elements(["alawenc", "rtppcmapay"])
    return (
        f"{source} ! audio/x-raw,rate=8000,channels=1 ! audioconvert ! "
        "alawenc ! rtppcmapay name=pay1 pt=8"
    )


def schedule_resolution_change(media: GstRtspServer.RTSPMedia, args: argparse.Namespace) -> None:
    element = media.get_element()
    capsfilter = element.get_by_name(SRC_CAPS_NAME) if isinstance(element, Gst.Bin) else None
    if capsfilter is None:
        log("resolution change: capsfilter not found")
        return
    # x264 wants even dimensions for I420.
    width = max(2, (args.width // 2) & ~1)
    height = max(2, (args.height // 2) & ~1)

    def change() -> bool:
        log(f"changing resolution to {width}x{height}")
        # The capsfilter sends a reconfigure upstream; videotestsrc renegotiates and the
        # encoder re-initialises on the new caps, emitting a new SPS/PPS and an IDR.
        capsfilter.set_property("caps", Gst.Caps.from_string(raw_caps(width, height, args.rate)))
        return GLib.SOURCE_REMOVE

    GLib.timeout_add(int(args.change_resolution_after * 1000), change)


class PacedFrames:
    """Feeds a media's appsrc from a thread: a frame every 1/fps s of the monotonic clock,
    made by :meth:`next_frame` when it is due, until the media goes away."""

    def __init__(self, appsrc: Gst.Element, rate: tuple[int, int], name: str) -> None:
        self.appsrc = appsrc
        self.period = rate[1] / rate[0]
        self.name = name
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def next_frame(self) -> bytes:
        raise NotImplementedError

    def pushed(self) -> None:
        """Called after each frame has gone into the appsrc."""

    def finished(self) -> None:
        """Called by the thread when it stops."""

    def run(self) -> None:
        due = time.monotonic()
        try:
            while not self.stopped.is_set():
                delay = due - time.monotonic()
                if delay > 0 and self.stopped.wait(delay):
                    break
                # Late (a loaded machine): the frames missed follow at once, so that none is
                # lost; more than a second behind, the schedule starts again from now.
                due = max(due + self.period, time.monotonic() - 1.0)
                data = self.next_frame()
                flow = self.appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(data))
                if flow != Gst.FlowReturn.OK:
                    log(f"{self.name}: push returned {flow.value_nick}, stopping")
                    break
                self.pushed()
        finally:
            self.finished()


class StampedFrames(PacedFrames):
    """Frames each stamped with the wall clock of the moment it is drawn."""

    def __init__(self, appsrc: Gst.Element, args: argparse.Namespace) -> None:
        super().__init__(appsrc, args.rate, "stamped-frames")
        self.width, self.height = args.width, args.height
        # I420 as GStreamer lays it out by default: rows rounded up to 4 bytes.
        self.stride = (self.width + 3) & ~3
        chroma_stride = (self.width // 2 + 3) & ~3
        self.luma_size = self.stride * self.height
        self.chroma = bytes([128]) * (chroma_stride * (self.height // 2) * 2)
        low = 128 - NOISE_AMPLITUDE
        table = bytes(low + (i * (2 * NOISE_AMPLITUDE + 1)) // 256 for i in range(256))
        self.noise = os.urandom(2 * self.luma_size).translate(table)
        self.last_ms = 0

    def frame(self, ms: int) -> bytes:
        # A random window of the noise each frame: nothing for motion search to find.
        offset = random.randrange(0, self.luma_size)
        luma = bytearray(self.noise[offset : offset + self.luma_size])
        stamp.draw(luma, self.width, self.height, ms, self.stride)
        return bytes(luma) + self.chroma

    def next_frame(self) -> bytes:
        # Frames drawn in a burst may share a millisecond: a stamp names one frame.
        self.last_ms = max(time.time_ns() // 1_000_000, self.last_ms + 1)
        return self.frame(self.last_ms)


class FileFrames(PacedFrames):
    """Frames of a raw I420 file, in a loop from frame 0; pushing frame ``--frames-mark``
    prints ``MARK <epoch ms>`` on stdout, the time taken just before the push."""

    def __init__(self, appsrc: Gst.Element, args: argparse.Namespace) -> None:
        super().__init__(appsrc, args.rate, "file-frames")
        self.frame_size = args.width * args.height * 3 // 2
        with open(args.frames, "rb") as file:
            # The mapping outlives the file object; a scene rebuilt meanwhile is a new file.
            self.data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self.frame_count = args.frame_count
        self.mark: int | None = args.frames_mark
        self.index = 0
        self.mark_ms: int | None = None

    def next_frame(self) -> bytes:
        start = self.index * self.frame_size
        data = self.data[start : start + self.frame_size]
        if self.index == self.mark:
            self.mark_ms = time.time_ns() // 1_000_000
        self.index = (self.index + 1) % self.frame_count
        return data

    def pushed(self) -> None:
        if self.mark_ms is None:
            return
        line, self.mark_ms = f"MARK {self.mark_ms}\n", None
        try:
            # One write a line: a new media's thread may print while an old one finishes.
            sys.stdout.write(line)
            sys.stdout.flush()
        except (OSError, ValueError) as error:
            log(f"{self.name}: cannot print the mark: {error}")

    def finished(self) -> None:
        self.data.close()


def feed_frames(media: GstRtspServer.RTSPMedia, args: argparse.Namespace) -> None:
    element = media.get_element()
    appsrc = element.get_by_name(APP_SRC_NAME) if isinstance(element, Gst.Bin) else None
    if appsrc is None:
        log("frames: appsrc not found")
        return
    frames: PacedFrames = StampedFrames(appsrc, args) if args.stamp else FileFrames(appsrc, args)
    # A shared media outlives one client; a new one is configured after the last has gone.
    media.connect("unprepared", lambda _media: frames.stop())
    frames.start()


def build_factory(args: argparse.Namespace) -> GstRtspServer.RTSPMediaFactory:
    if args.stamp or args.frames is not None:
        require_elements(["appsrc"])
    else:
        require_elements(["videotestsrc", "capsfilter", "videobox"])
    branches = [video_branch(args), audio_branch(args.audio)]
    launch = "( " + " ".join(branch for branch in branches if branch) + " )"
    log(f"launch: {launch}")
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    if args.user is not None or args.tls_cert is not None:
        factory.add_role_from_structure(
            Gst.Structure.from_string(
                f"{ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )[0]
        )
    if args.change_resolution_after is not None or args.stamp or args.frames is not None:

        def on_configure(
            _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
        ) -> None:
            if args.stamp or args.frames is not None:
                feed_frames(media, args)
            else:
                schedule_resolution_change(media, args)

        factory.connect("media-configure", on_configure)
    return factory


def build_auth(args: argparse.Namespace) -> GstRtspServer.RTSPAuth | None:
    if args.user is None and args.tls_cert is None:
        return None
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", ROLE)
    if args.user is not None:
        # make_basic base64-encodes "user:password" verbatim, so any password bytes work.
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
    else:
        # TLS without credentials: anonymous clients get the role.
        auth.set_default_token(token)
    if args.tls_cert is not None:
        try:
            certificate = Gio.TlsCertificate.new_from_files(args.tls_cert, args.tls_key)
        except GLib.Error as error:
            message = f"rtsp_server: cannot load TLS certificate/key: {error.message}"
            raise SystemExit(message) from None
        auth.set_tls_certificate(certificate)
    return auth


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    auth = build_auth(args)
    if auth is not None:
        server.set_auth(auth)
    server.get_mount_points().add_factory(args.mount, build_factory(args))

    loop = GLib.MainLoop()
    try:
        server.attach(None)
    except GLib.Error as error:
        log(f"cannot bind 127.0.0.1:{args.port}: {error.message}")
        return 1
    port = server.get_bound_port()
    if port <= 0:
        log(f"cannot bind 127.0.0.1:{args.port}")
        return 1

    def stop(*_: Any) -> bool:
        log("signal received, stopping")
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
    scheme = "rtsps" if args.tls_cert else "rtsp"
    log(f"serving {scheme}://127.0.0.1:{port}{args.mount}")
    print(f"READY {port}", flush=True)
    loop.run()

    # Close client sessions so their pipelines shut down before the interpreter exits.
    server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
