"""Prometheus metrics, read from the live counters at scrape time.

Nothing is incremented per packet through prometheus_client (its locks cost more than the
recording work); the collector reads the plain counters kept by health and recorders. Labels
are camera ids and root names only, never URLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from vms.server import Server

STATES = ("starting", "online", "degraded", "offline", "disabled")


class ServerCollector(Collector):
    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily]:
        cams = self.server.cameras
        state = GaugeMetricFamily(
            "vms_camera_state", "1 for the camera's current state", labels=["camera", "state"]
        )
        fps = GaugeMetricFamily("vms_camera_fps", "Frames per second received", labels=["camera"])
        bitrate = GaugeMetricFamily(
            "vms_camera_bitrate_bps", "Bits per second received", labels=["camera"]
        )
        since = GaugeMetricFamily(
            "vms_camera_seconds_since_frame", "Seconds since the last frame", labels=["camera"]
        )
        frames = CounterMetricFamily(
            "vms_camera_frames", "Video frames received", labels=["camera"]
        )
        reconnects = CounterMetricFamily(
            "vms_camera_reconnects", "Reconnections after a failure", labels=["camera"]
        )
        written = CounterMetricFamily(
            "vms_camera_bytes_written", "Bytes written to segments", labels=["camera"]
        )
        recorded = CounterMetricFamily(
            "vms_camera_frames_recorded", "Frames written to segments", labels=["camera"]
        )
        dropped = CounterMetricFamily(
            "vms_camera_frames_dropped", "Frames not recorded", labels=["camera"]
        )
        jumps = CounterMetricFamily(
            "vms_camera_timestamp_jumps", "Camera timestamp discontinuities", labels=["camera"]
        )
        write = SummaryMetricFamily(
            "vms_camera_fragment_write_seconds", "Time to write one fragment", labels=["camera"]
        )
        delay = GaugeMetricFamily(
            "vms_camera_packet_to_disk_seconds",
            "Arrival of a fragment's first packet to its write, last fragment",
            labels=["camera"],
        )
        for cam in cams:
            cid = cam.config.id
            h = cam.health
            for s in STATES:
                state.add_metric([cid, s], 1.0 if h.state.value == s else 0.0)
            fps.add_metric([cid], h.fps)
            bitrate.add_metric([cid], h.bitrate)
            age = h.seconds_since_frame()
            if age is not None:
                since.add_metric([cid], age)
            frames.add_metric([cid], h.frames)
            reconnects.add_metric([cid], h.reconnects)
            if cam.recorder is not None:
                st = cam.recorder.stats
                written.add_metric([cid], st.bytes_written)
                recorded.add_metric([cid], st.frames_written)
                dropped.add_metric([cid], st.frames_dropped)
                jumps.add_metric([cid], st.timestamp_jumps)
                write.add_metric([cid], st.fragments, st.write_seconds_total)
                delay.add_metric([cid], st.last_delay_s)
        yield from (
            state,
            fps,
            bitrate,
            since,
            frames,
            reconnects,
            written,
            recorded,
            dropped,
            jumps,
            write,
            delay,
        )
        used = GaugeMetricFamily(
            "vms_root_bytes_used", "Bytes of recordings on the root", labels=["root"]
        )
        free = GaugeMetricFamily(
            "vms_root_bytes_free", "Free bytes on the root's filesystem", labels=["root"]
        )
        usable = GaugeMetricFamily(
            "vms_root_usable", "1 when the root is mounted and identified", labels=["root"]
        )
        for root in self.server.storage.roots:
            usable.add_metric([root.name], 1.0 if root.usable else 0.0)
            if root.usable and root.id is not None:
                used.add_metric([root.name], root.used_bytes)
                try:
                    free.add_metric([root.name], root.free_bytes())
                except OSError:
                    pass
        yield from (used, free, usable)
        ret = CounterMetricFamily("vms_retention_deleted_bytes", "Bytes deleted by retention")
        ret.add_metric([], self.server.retention.deleted_bytes)
        yield ret


def render(server: Server) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return generate_latest(registry)
