"""Smoke tests of ``vms bench live`` and ``vms bench viewers``: short runs against a real stamped
camera and a real server, checking the JSON envelope's shape and that the figures are sane
(how low the latency is, and how many viewers fit, is the benchmarks' own business)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vms.bench import browser, cli
from vms.bench.direct import frame_key
from vms.bench.viewer_load import fragment_key, next_part
from vms.ingest.pyav_source import read_clip
from vms.live.fmp4 import LiveMuxer
from vms.media import VIDEO, Packet, length_prefix, length_split
from vms.standin import gstreamer_available
from vms.standin.footage import synthetic_clip

ENVELOPE = {"bench", "quick", "figures", "peer", "ratio", "ok", "target", "machine"}

needs_gstreamer = pytest.mark.skipif(not gstreamer_available(), reason="no GStreamer stand-in")


def test_a_fragment_is_known_by_its_last_frame(tmp_path: Path) -> None:
    """A viewer's fragment and the direct client's frame get the same key, also when the last
    frame is smaller than the bytes a key takes (a frame of a few bytes after a keyframe)."""
    info, packets = read_clip(synthetic_clip(tmp_path / "c.mp4", width=160, height=120, seconds=1))
    small = packets[3]
    small_data = length_prefix([b"\x09\xf0", b"\x41" + bytes(range(30))])
    packets[3] = Packet(VIDEO, small_data, small.pts, small.dts, False, small.arrival)
    muxer = LiveMuxer(info)
    for batch in ([packets[0]], packets[1:4], [packets[4]], packets[5:9]):
        last_nal = length_split(batch[-1].data)[-1]
        assert fragment_key(muxer.fragment(batch)) == frame_key(last_nal)


def test_the_next_part_of_a_live_playlist() -> None:
    playlist = "\n".join([
        "#EXTM3U", "#EXT-X-MEDIA-SEQUENCE:100",
        '#EXT-X-PART:DURATION=0.4,URI="live/parts/1.mp4"', "#EXTINF:2.0,", "live/100.mp4",
        '#EXT-X-PART:DURATION=0.4,URI="live/parts/2.mp4"',
        '#EXT-X-PART:DURATION=0.4,URI="live/parts/3.mp4"',
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="live/parts/4.mp4"',
    ])  # fmt: skip
    assert next_part(playlist) == (101, 2)


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


@needs_gstreamer
@pytest.mark.skipif(not browser.available(), reason="no Chromium/Playwright")
@pytest.mark.timeout(150)  # ~20 s on a quiet machine
@pytest.mark.serial
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


@needs_gstreamer
@pytest.mark.timeout(150)  # ~20 s on a quiet machine
@pytest.mark.serial
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
            # Every viewer gets the whole stream: the bytes of the frames its fragments cover.
            assert 0.9 <= step["bytes_ratio"]["min"] <= step["bytes_ratio"]["max"] <= 1.2
            assert 600 <= step["stream_kbps"] <= 1600
            _spread(step["added_ms"], -10, 10_000)
            assert step["server_cpu_pct"] > 0 and step["load_cpu_pct"] >= 0
            assert step["frames_lost"] == 0
        assert p["max_viewers_meeting_target"] in (0, 5)
        if p["server_cpu_pct_per_viewer"] is not None:
            assert p["projected_viewers_16_cores"] == round(1600 / p["server_cpu_pct_per_viewer"])
    assert result["target"]["viewers"] == 1000 and "note" in result["target"]
