"""Smoke tests of ``vms bench live`` and ``vms bench viewers``: short runs against a real stamped
camera and a real server, checking the JSON envelope's shape and that the figures are sane
(how low the latency is, and how many viewers fit, is the benchmarks' own business)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vms.bench import browser, cli
from vms.standin import gstreamer_available

ENVELOPE = {"bench", "quick", "figures", "peer", "ratio", "ok", "target", "machine"}

pytestmark = pytest.mark.skipif(not gstreamer_available(), reason="no GStreamer stand-in")


def _run(capsys: pytest.CaptureFixture[str], name: str, *argv: str) -> dict[str, Any]:
    """``vms bench NAME ARGV --quick --json``, parsed as the command parses it."""
    rc = cli.run(cli.parser().parse_args([name, *argv, "--quick", "--json"]))
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "exactly one JSON object on stdout"
    result: dict[str, Any] = json.loads(out)
    assert rc == (0 if result["ok"] else 1)
    assert set(result) == ENVELOPE
    assert result["bench"] == name and result["quick"] is True
    assert result["peer"] is None and result["ratio"] is None
    assert result["machine"]["cpus"] >= 1
    return result


def _spread(s: dict[str, Any], low: float, high: float) -> None:
    assert set(s) == {"p50", "p95", "max"}
    assert low <= s["p50"] <= s["p95"] <= s["max"] <= high


@pytest.mark.skipif(not browser.available(), reason="no Chromium/Playwright")
@pytest.mark.timeout(150)  # ~20 s on a quiet machine
def test_live_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(capsys, "live", "--seconds", "1.5")
    f = result["figures"]
    assert f["seconds_per_protocol"] == 1.5 and f["server_alive_at_end"] is True
    assert f["camera"]["width"] == 640 and 600 <= f["camera"]["measured_kbps"] <= 1600
    assert f["direct_frames"] >= 25 and f["direct_unreadable"] == 0
    assert set(f["protocols"]) == {"webrtc", "mse", "llhls"}
    for name, p in f["protocols"].items():
        if not p["available"]:
            assert "not served" in p["reason"] or "vmsPlayers" in p["reason"], name
            continue
        assert "failed" not in p, f"{name}: {p.get('failed')}"
        assert p["frames_shown"] >= 3 and p["frames_unreadable"] <= p["frames_shown"]
        # Glass-to-glass: positive (the page's clock is the camera's) and under 10 s.
        _spread(p["glass_to_glass_ms"], 0, 10_000)
        _spread(p["camera_delay_ms"], 0, 10_000)
        assert p["added_frames_matched"] >= 3
        _spread(p["added_ms"], -50, 10_000)  # the display time may be a vsync ahead
        assert p["added_ms"]["p50"] < p["glass_to_glass_ms"]["p50"]
    target = result["target"]
    assert target["webrtc_p95_ms_max"] == 150 and target["mse_p95_ms_max"] == 300
    assert target["llhls_p95_ms_max"] == 1500 and target["webrtc_added_p95_ms_max"] == 100
    if not all(p["available"] for p in f["protocols"].values()):
        assert result["ok"] is False


@pytest.mark.timeout(150)  # ~20 s on a quiet machine
def test_viewers_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(capsys, "viewers", "--viewers", "5", "--seconds", "1.5")
    f = result["figures"]
    assert f["server_alive_at_end"] is True and f["stream"]["kbps"] == 1000
    _spread(f["camera_delay_ms"], 0, 10_000)
    assert f["frames_lost"] == 0 and f["recorded_frames_lost"] == 0
    assert set(f["protocols"]) == {"mse", "llhls", "webrtc"}
    for name, p in f["protocols"].items():
        if not p["available"]:
            assert p["reason"], name
            assert result["ok"] is False
            continue
        assert [s["viewers"] for s in p["steps"]] == [5]
        for step in p["steps"]:
            assert "failed" not in step, step.get("failed")
            assert step["load_processes"] == 1 and 1 <= step["seconds"] <= 10
            assert step["viewers_disconnected"] == 0, step["disconnect_examples"]
            assert step["fragments"] > 0 and step["fragments_unmatched"] <= step["viewers"] * 2
            # Every viewer gets the whole stream: the bytes of the frames its fragments cover
            # (a WebRTC viewer: the frames).
            ratio = step["frames_ratio" if name == "webrtc" else "bytes_ratio"]
            assert 0.9 <= ratio["min"] <= ratio["max"] <= 1.2
            assert 600 <= step["stream_kbps"] <= 1600
            _spread(step["added_ms"], -10, 10_000)
            assert step["server_cpu_pct"] > 0 and step["load_cpu_pct"] >= 0
            assert step["frames_lost"] == 0
        assert p["max_viewers_meeting_target"] in (0, 5)
        if p["server_cpu_pct_per_viewer"] is not None:
            assert p["projected_viewers_16_cores"] == round(1600 / p["server_cpu_pct_per_viewer"])
    assert result["target"]["viewers"] == 1000 and "note" in result["target"]
