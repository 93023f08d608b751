"""Prometheus metrics, read from the live counters at scrape time.

Nothing is counted per packet through a metrics library: health and recorders keep plain
counters (single writer, see docs/design/concurrency.md) and a scrape formats them. The text
exposition format is written directly: with 200 cameras a scrape is ~3,500 samples, and a
generic client library spent ~50 ms of CPU per scrape building objects for them. Labels are
camera ids and root names only, never URLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from vms.health import State

if TYPE_CHECKING:
    from vms.audit.log import AuditLog
    from vms.server import Camera, Server

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[str, float | None]],
    ) -> None:
        """``samples``: (label text without braces, value); None values are left out."""
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        suffix = "_total" if kind == "counter" else ""
        for labels, value in samples:
            if value is not None:
                braces = f"{{{labels}}}" if labels else ""
                self.lines.append(f"{name}{suffix}{braces} {_num(value)}")

    def text(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def _cameras(w: _Writer, cams: list[Camera]) -> None:
    def per_camera(get: Callable[[Camera], float | None]) -> list[tuple[str, float | None]]:
        return [(f'camera="{c.config.id}"', get(c)) for c in cams]

    rec = [c for c in cams if c.recorder is not None]

    def per_recorder(get: Callable[[Camera], float]) -> list[tuple[str, float | None]]:
        return [(f'camera="{c.config.id}"', get(c)) for c in rec]

    w.family(
        "vms_camera_state",
        "gauge",
        "1 for the camera's current state",
        [
            (f'camera="{c.config.id}",state="{s.value}"', 1.0 if c.health.state == s else 0.0)
            for c in cams
            for s in State
        ],
    )
    w.family(
        "vms_camera_fps", "gauge", "Frames per second received", per_camera(lambda c: c.health.fps)
    )
    w.family(
        "vms_camera_bitrate_bps", "gauge", "Bits per second received",
        per_camera(lambda c: c.health.bitrate),
    )  # fmt: skip
    w.family(
        "vms_camera_seconds_since_frame", "gauge", "Seconds since the last frame",
        per_camera(lambda c: c.health.seconds_since_frame()),
    )  # fmt: skip
    w.family(
        "vms_camera_frames",
        "counter",
        "Video frames received",
        per_camera(lambda c: c.health.frames),
    )
    w.family(
        "vms_camera_reconnects", "counter", "Reconnections after a failure",
        per_camera(lambda c: c.health.reconnects),
    )  # fmt: skip
    w.family(
        "vms_camera_rtp_lost", "counter", "RTP packets lost (sequence gaps, native reader)",
        per_camera(lambda c: c.health.rtp_lost),
    )  # fmt: skip
    w.family(
        "vms_camera_frames_discarded", "counter",
        "Video frames dropped after a loss up to the next keyframe, or too large",
        per_camera(lambda c: c.health.frames_discarded),
    )  # fmt: skip
    stats = {c.config.id: c.recorder.stats for c in rec if c.recorder is not None}
    w.family(
        "vms_camera_bytes_written", "counter", "Bytes written to segments",
        per_recorder(lambda c: stats[c.config.id].bytes_written),
    )  # fmt: skip
    w.family(
        "vms_camera_frames_recorded", "counter", "Frames written to segments",
        per_recorder(lambda c: stats[c.config.id].frames_written),
    )  # fmt: skip
    w.family(
        "vms_camera_frames_dropped", "counter", "Frames not recorded",
        per_recorder(
            lambda c: stats[c.config.id].frames_dropped + stats[c.config.id].frames_lost_writing
        ),
    )  # fmt: skip
    w.family(
        "vms_camera_frames_dropped_backlog", "counter",
        "Frames dropped because the storage root's writer was too far behind",
        per_recorder(lambda c: stats[c.config.id].frames_dropped_backlog),
    )  # fmt: skip
    w.lines.append("# HELP vms_camera_segment_sync_seconds fdatasync and directory fsync at close")
    w.lines.append("# TYPE vms_camera_segment_sync_seconds summary")
    for c in rec:
        st = stats[c.config.id]
        label = f'{{camera="{c.config.id}"}}'
        w.lines.append(f"vms_camera_segment_sync_seconds_count{label} {st.segments}")
        w.lines.append(f"vms_camera_segment_sync_seconds_sum{label} {_num(st.sync_seconds_total)}")
    w.family(
        "vms_camera_timestamp_jumps", "counter", "Camera timestamp discontinuities",
        per_recorder(lambda c: stats[c.config.id].timestamp_jumps),
    )  # fmt: skip
    w.lines.append("# HELP vms_camera_fragment_write_seconds Time to write one fragment")
    w.lines.append("# TYPE vms_camera_fragment_write_seconds summary")
    for c in rec:
        st = stats[c.config.id]
        w.lines.append(
            f'vms_camera_fragment_write_seconds_count{{camera="{c.config.id}"}} {st.fragments}'
        )
        w.lines.append(
            f'vms_camera_fragment_write_seconds_sum{{camera="{c.config.id}"}} '
            f"{_num(st.write_seconds_total)}"
        )
    w.family(
        "vms_camera_packet_to_disk_seconds", "gauge",
        "Arrival of the last fragment's first packet to the end of its write",
        per_recorder(lambda c: stats[c.config.id].last_delay_s),
    )  # fmt: skip


def render(server: Server) -> bytes:
    w = _Writer()
    _cameras(w, server.cameras)
    w.family(
        "vms_reader_longest_round_seconds", "gauge",
        "Longest round of the RTSP reader thread since start: the most any camera waited",
        [("", server.reactor.max_round_s)],
    )  # fmt: skip
    roots = server.storage.roots
    w.family(
        "vms_root_usable", "gauge", "1 when the root is mounted and identified",
        [(f'root="{r.name}"', 1 if r.usable else 0) for r in roots],
    )  # fmt: skip
    usable = [r for r in roots if r.usable]
    w.family(
        "vms_root_bytes_used", "gauge", "Bytes of recordings on the root",
        [(f'root="{r.name}"', r.used_bytes) for r in usable],
    )  # fmt: skip
    free: list[tuple[str, float | None]] = []
    for r in usable:
        try:
            free.append((f'root="{r.name}"', r.free_bytes()))
        except OSError:
            continue
    w.family("vms_root_bytes_free", "gauge", "Free bytes on the root's file system", free)
    w.family(
        "vms_root_bytes_deleted_early", "counter",
        "Bytes of recordings deleted to make room for files that are not recordings",
        [(f'root="{r.name}"', r.bytes_deleted_early) for r in roots],
    )  # fmt: skip
    w.lines.append("# HELP vms_retention_deleted_bytes Bytes deleted by retention")
    w.lines.append("# TYPE vms_retention_deleted_bytes counter")
    w.lines.append(f"vms_retention_deleted_bytes_total {server.retention.deleted_bytes}")
    audit(w, server.audit)
    detection(w, server.detection.status())
    return w.text()


def detection(w: _Writer, status: dict[str, Any]) -> None:
    """Detection per watched camera, the detectors' work, and each event sink's queue."""
    cams = status["cameras"]

    def per_camera(key: str) -> list[tuple[str, float | None]]:
        return [(f'camera="{cid}"', c[key]) for cid, c in sorted(cams.items())]

    for key, kind, text in (
        ("analysed", "counter", "Frames motion detection looked at"),
        ("moving", "counter", "Frames with motion"),
        ("submitted", "counter", "Frames handed to the object detector"),
        ("skipped", "counter", "Frames replaced while waiting for a busy detector"),
        ("detections", "counter", "Objects found"),
    ):
        w.family(f"vms_detect_frames_{key}" if key != "detections" else "vms_detect_objects",
                 kind, text, per_camera(key))  # fmt: skip
    w.family(
        "vms_detector_inferences", "counter", "Object detector runs",
        [("", status["inferences"])],
    )  # fmt: skip
    w.family(
        "vms_detector_busy_seconds", "counter", "Seconds the detector threads spent detecting",
        [("", status["detector_busy_s"])],
    )  # fmt: skip
    sinks = sorted(status["sinks"].items())
    for key in ("queued", "delivered", "dropped", "failed"):
        w.family(
            f"vms_event_sink_{key}", "gauge" if key == "queued" else "counter",
            f"Event bus messages {key} per sink",
            [(f'sink="{_label(name)}"', st[key]) for name, st in sinks],
        )  # fmt: skip


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def audit(w: _Writer, log: AuditLog) -> None:
    """The audit log's head and newest checkpoint: scraped off the host, they anchor the chain
    (docs/design/audit.md). For :func:`render` once the server keeps an audit log."""
    w.family(
        "vms_audit_head_seq", "gauge", "Newest audit entry this server appended or checkpointed",
        [("", log.head_seq)],
    )  # fmt: skip
    w.family(
        "vms_audit_checkpoint_seq", "gauge", "Newest signed audit checkpoint (0: none)",
        [("", log.checkpoint_seq)],
    )  # fmt: skip
