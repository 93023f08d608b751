"""``GET /api/v1/system``: the server's version and the server-wide figures of ``/metrics``, as
JSON for the web client's System page; the same numbers the scrape gives."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import vms
from tests.support.app import running_app
from tests.support.polling import wait_for
from vms.config import from_dict


def scrape(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.labels:
                out[s.name] = s.value
    return out


def test_system_figures_match_the_metrics(tmp_path: Path, clips: dict[str, Path]) -> None:
    (tmp_path / "r1").mkdir()
    cfg = from_dict(
        {
            "data_dir": str(tmp_path / "data"),
            "storage": {"roots": [{"name": "r1", "path": str(tmp_path / "r1"),
                                   "min_free_bytes": 0}]},
            "cameras": [
                {"id": "clip", "main": {"url": clips["h264_small"].as_uri()}},
                {"id": "off", "enabled": False, "main": {"url": "rtsp://127.0.0.1:9/y"}},
            ],
        }
    )  # fmt: skip
    with running_app(cfg) as (client, server):
        wait_for(lambda: server.camera("clip").health.frames > 0, 20, "the clip playing")
        # Something audited, so that the head moves past the server's start.
        assert client.patch("/api/v1/cameras/off", json={"name": "Off"}).status_code == 200
        r = client.get("/api/v1/system")
        assert r.status_code == 200, r.text
        info = r.json()
        assert info["version"] == vms.__version__
        assert info["recording"] is True
        assert info["cameras"] == 2
        assert info["cameras_by_state"]["online"] == 1
        assert info["cameras_by_state"]["disabled"] == 1
        assert set(info["cameras_by_state"]) == {
            "starting", "online", "degraded", "offline", "disabled",
        }  # fmt: skip
        assert abs(info["now_us"] - server.clock.wall_us()) < 60_000_000
        assert info["now"].endswith("Z")
        metrics = scrape(client.get("/metrics").text)
        assert info["audit_head_seq"] >= 1
        assert info["audit_head_seq"] == metrics["vms_audit_head_seq"]
        assert info["audit_checkpoint_seq"] == metrics["vms_audit_checkpoint_seq"]
        assert info["retention_deleted_bytes"] == metrics["vms_retention_deleted_bytes_total"]
        assert info["reader_longest_round_s"] <= metrics["vms_reader_longest_round_seconds"]

        del client.headers["x-api-key"]
        refused = client.get("/api/v1/system")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthenticated"
