"""The HTTP API over a real server recording real clips."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.app import running_app
from vms.config import from_dict
from vms.errors import VmsError
from vms.server import Server
from vms.times import iso, parse_time


@pytest.fixture
def app(tmp_path: Path, clips: dict[str, Path]) -> Iterator[tuple[TestClient, Server]]:
    (tmp_path / "r1").mkdir()
    cfg = from_dict(
        {
            "data_dir": str(tmp_path / "data"),
            "recording": {"segment_seconds": 2},
            "storage": {
                "roots": [{"name": "r1", "path": str(tmp_path / "r1"), "min_free_bytes": 0}]
            },
            "cameras": [
                {"id": "clip", "name": "Clip", "main": {"url": clips["h264"].as_uri()}},
                {"id": "dead", "main": {"url": "rtsp://127.0.0.1:9/x"}},
                {"id": "off", "enabled": False, "main": {"url": "rtsp://127.0.0.1:9/y"}},
            ],
        }
    )
    with running_app(cfg) as running:
        yield running


def wait_segments(server: Server, n: int) -> None:
    deadline = time.monotonic() + 20
    while len(server.catalog.segments(camera_id="clip", state=1)) < n:
        assert time.monotonic() < deadline, "no closed segments"
        time.sleep(0.1)


def test_health_cameras_and_recordings(app: tuple[TestClient, Server]) -> None:
    client, server = app
    wait_segments(server, 2)
    assert client.get("/healthz").json() == {
        "status": "ok",
        "recording": True,
        "roots": {"r1": "ok"},
    }
    (root,) = client.get("/api/v1/storage").json()["roots"]
    assert root["state"] == "ok" and root["warning"] is None and root["bytes_deleted_early"] == 0
    cams = {c["id"]: c for c in client.get("/api/v1/cameras").json()["items"]}
    assert cams["clip"]["health"]["state"] == "online"
    assert cams["clip"]["health"]["fps"] == pytest.approx(25, abs=5)
    assert cams["clip"]["health"]["width"] == 320
    assert cams["dead"]["health"]["state"] == "offline"
    assert "refused" in cams["dead"]["health"]["last_error"].lower()
    assert cams["off"]["health"]["state"] == "disabled" and cams["off"]["recording"] is None
    body = client.get("/api/v1/cameras/clip/recordings").json()
    assert len(body["runs"]) == 1, "rotation must not split a run"
    run = body["runs"][0]
    assert run["segments"] >= 3 and run["open"]
    closed = server.catalog.segments(camera_id="clip", state=1)
    assert run["end_us"] - run["start_us"] >= sum(s.end_us - s.start_us for s in closed)
    assert run["start_us"] == closed[0].start_us
    assert body["gaps"][0]["end_us"] == run["start_us"]
    one = client.get("/api/v1/cameras/clip").json()
    assert one["recording"]["frames_written"] > 0


def test_recordings_window_and_gaps(app: tuple[TestClient, Server]) -> None:
    client, server = app
    wait_segments(server, 2)
    first = server.catalog.segments(camera_id="clip")[0]
    start = first.start_us - 5_000_000
    end = first.start_us + 1_000_000
    body = client.get(f"/api/v1/cameras/clip/recordings?start={start}&end={end}").json()
    assert body["runs"][0]["start_us"] == first.start_us and body["runs"][0]["end_us"] == end
    assert body["gaps"] == [
        {
            "start_us": start,
            "end_us": first.start_us,
            "start": iso(start),
            "end": iso(first.start_us),
            "duration_s": 5.0,
        }
    ]
    assert body["start"] == iso(start) and body["end"] == iso(end) and body["next"] is None
    iso_day = client.get(
        "/api/v1/cameras/clip/recordings?start=2020-01-01T00:00:00Z&end=2020-01-02"
    ).json()
    assert iso_day["runs"] == [] and iso_day["gaps"][0]["duration_s"] == 86400


def test_quarantined_segments_are_not_served_as_recordings(app: tuple[TestClient, Server]) -> None:
    client, server = app
    wait_segments(server, 3)
    first, second = server.catalog.segments(camera_id="clip", state=1)[:2]
    window = f"start={first.start_us}&end={second.end_us + 1_000_000}"
    before = client.get(f"/api/v1/cameras/clip/recordings?{window}").json()
    assert before["runs"][0]["start_us"] == first.start_us
    assert before["quarantined_segments"] == 0
    assert server.catalog.quarantine(second.id)  # what `vms check` does to a CRC mismatch
    body = client.get(f"/api/v1/cameras/clip/recordings?{window}").json()
    assert body["quarantined_segments"] == 1
    assert body["runs"][0] == {
        "start_us": first.start_us,
        "end_us": first.end_us,
        "start": iso(first.start_us),
        "end": iso(first.end_us),
        "segments": 1,
        "bytes": first.bytes,
        "open": False,
        "duration_s": round((first.end_us - first.start_us) / 1e6, 3),
    }
    assert {"start_us": first.end_us, "end_us": second.end_us} in [
        {k: g[k] for k in ("start_us", "end_us")} for g in body["gaps"]
    ], "the quarantined minute is a gap"


def test_errors_are_mapped_once(app: tuple[TestClient, Server]) -> None:
    client, _ = app
    r = client.get("/api/v1/cameras/nope/recordings")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.get("/api/v1/cameras/clip/recordings?start=yesterday")
    assert r.status_code == 400 and "ISO 8601" in r.json()["message"]
    r = client.get("/api/v1/cameras/clip/recordings?start=10&end=5")
    assert r.status_code == 400


def test_metrics(app: tuple[TestClient, Server]) -> None:
    client, server = app
    wait_segments(server, 1)
    text = client.get("/metrics").text
    for name in (
        'vms_camera_fps{camera="clip"}',
        'vms_camera_bitrate_bps{camera="clip"}',
        'vms_camera_bytes_written_total{camera="clip"}',
        'vms_camera_reconnects_total{camera="dead"}',
        'vms_camera_seconds_since_frame{camera="clip"}',
        'vms_camera_fragment_write_seconds_count{camera="clip"}',
        'vms_camera_packet_to_disk_seconds{camera="clip"}',
        'vms_camera_state{camera="dead",state="offline"} 1.0',
        'vms_root_bytes_used{root="r1"}',
        'vms_root_bytes_free{root="r1"}',
        'vms_root_bytes_deleted_early_total{root="r1"} 0',
    ):
        assert name in text, name
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"vms_camera_frames", "vms_camera_fragment_write_seconds", "vms_root_bytes_free"} <= set(
        families
    )
    written = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('vms_camera_bytes_written_total{camera="clip"}')
    )
    assert written > 0


def test_times_are_iso_8601_utc_with_microseconds() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000000Z"
    assert iso(1_700_000_000_123_456) == "2023-11-14T22:13:20.123456Z"
    assert parse_time(iso(1_700_000_000_123_456), 0) == 1_700_000_000_123_456


def test_parse_time() -> None:
    assert parse_time("1700000000000000", 0) == 1_700_000_000_000_000
    assert parse_time("2023-11-14T22:13:20Z", 0) == 1_700_000_000_000_000
    assert parse_time(None, 42) == 42
    with pytest.raises(VmsError):
        parse_time("soon", 0)
