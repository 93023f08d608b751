"""Smoke tests of ``vms bench``: tiny sizes, the JSON envelope's shape and sane figures.

They prove the benchmarks run and report, not how fast anything is (that is the benchmarks'
own job, on a quiet machine).
"""

from __future__ import annotations

import io
import json
import shutil
from typing import Any

import pytest

from vms.bench import cli
from vms.bench.report import emit, percentile
from vms.standin import gstreamer_available

pytestmark = [
    pytest.mark.skipif(
        not gstreamer_available(),
        reason="GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0, x264enc) missing",
    ),
    pytest.mark.serial,  # benchmarks measure CPU and time: the machine to themselves
]

ENVELOPE = {"bench", "quick", "figures", "peer", "ratio", "ok", "target", "machine"}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """``vms bench ARGV --quick --json``, parsed as the command parses it."""
    rc = cli.run(cli.parser().parse_args([*argv, "--quick", "--json"]))
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "exactly one JSON object on stdout"
    result: dict[str, Any] = json.loads(out)
    assert rc == (0 if result["ok"] else 1)
    assert set(result) == ENVELOPE
    assert result["quick"] is True
    assert result["machine"]["cpus"] >= 1
    assert result["machine"]["av"]
    return result


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


# A smoke test of correctness: 25 s on a quiet machine; the peer may need more tries.
@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (the peer) missing")
def test_recording_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(capsys, "recording", "--cameras", "2", "--seconds", "3")
    assert result["bench"] == "recording"
    f, peer, ratio = result["figures"], result["peer"], result["ratio"]
    assert f["cameras"] == 2 and 2.5 <= f["seconds"] <= 6
    assert 0 < f["cpu_per_camera_pct"] < 100
    assert f["rss_bytes"] > f["rss_baseline_bytes"] > 0
    assert f["frames_recorded"] > 0 and f["frames_lost"] >= 0
    assert f["frames_expected"] >= f["frames_recorded"] - 2 * f["segments"]
    assert f["packet_to_disk_s"]["p50"] is not None and 0 <= f["packet_to_disk_s"]["p50"] < 5
    assert f["server_alive_at_end"] is True
    # Two ffmpeg processes for 3 s use a few 10 ms clock ticks: their CPU may read as 0 here.
    assert "error" not in peer, peer
    assert peer["cameras"] == 2 and peer["frames_recorded"] > 0 and peer["cpu_per_camera_pct"] >= 0
    assert set(ratio) == {"cpu_per_camera_pct", "rss_per_camera_mib"}
    assert ratio["rss_per_camera_mib"] > 0
    assert result["target"]["cameras"] == 200


@pytest.mark.timeout(120)  # a smoke test of correctness; 20 s on a quiet machine
def test_crash_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(capsys, "crash", "--kills", "6", "--seconds", "0.5", "--cameras", "2")
    assert result["bench"] == "crash"
    assert result["peer"] is None and result["ratio"] is None
    f = result["figures"]
    assert f["errors"] == []
    assert f["kills"] == 6
    assert f["checks_run"] >= 1
    lost = f["seconds_lost_per_camera"]
    assert lost["p50"] is not None and 0 <= lost["p50"] <= lost["p95"] <= lost["max"] < 10
    assert f["restart_s"]["p50"] is None or 0 < f["restart_s"]["p50"] < 10
    assert f["mismatches"] == 0, f["mismatch_examples"]
    # 6 kills are below the quick run's 50: never ok.
    assert result["ok"] is False


def test_table_output() -> None:
    result = {
        "bench": "x",
        "quick": True,
        "figures": {"a": 1.5, "b": {"p50": 1}},
        "peer": {"a": 3.0},
        "ratio": {"a": 0.5},
        "ok": True,
        "target": {"a": 2},
        "machine": {"cpus": 2},
    }
    out = io.StringIO()
    emit(result, as_json=False, out=out)
    text = out.getvalue()
    assert "a" in text and "0.5" in text and "ok: yes" in text


@pytest.mark.timeout(120)  # a smoke test of correctness; 15 s on a quiet machine
def test_api_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(capsys, "api", "--clients", "8", "--seconds", "2", "--cameras", "2")
    assert result["bench"] == "api"
    assert result["peer"] is None and result["ratio"] is None
    f = result["figures"]
    assert f["clients"] == 8 and 1.5 <= f["seconds"] <= 5
    assert f["errors"] == 0, f["error_examples"]
    assert f["requests"] > 0 and f["requests_per_s"] > 0
    assert f["requests_by_route"]["recordings"] > 0 and f["requests_by_route"]["cameras"] > 0
    lat = f["latency_s"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 30
    assert f["server_cpu_pct"] > 0 and f["client_cpu_pct"] > 0
    # The whole day is one run of 1,440 segments: the catalog was seeded as described.
    assert f["archive_segments"] == 1440 and f["archive_runs_in_answer"] == 1
    assert f["live_cameras"] == 2 and f["frames_recorded"] > 0 and f["frames_lost"] >= 0
    assert f["server_alive_at_end"] is True and f["server_exit_code"] == 0
    assert result["target"]["clients"] == 200 and result["target"]["p95_s_max"] == 0.1
