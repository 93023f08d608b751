"""Smoke tests of ``vms bench seek``: a tiny archive, a few instants, the JSON envelope's shape
and sane figures (how fast playback starts is the benchmark's own business)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vms.bench import archive, cli
from vms.errors import Kind, VmsError

ENVELOPE = {"bench", "quick", "figures", "peer", "ratio", "ok", "target", "machine"}
# 60 s from the keyframe at or before T (keyframes every 4 s), at about 256 kbit/s.
RANGE_BYTES = (1_500_000, 2_600_000)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """``vms bench seek ARGV --quick --json``, parsed as the command parses it."""
    rc = cli.run(cli.parser().parse_args(["seek", *argv, "--quick", "--json"]))
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "exactly one JSON object on stdout"
    result: dict[str, Any] = json.loads(out)
    assert rc == (0 if result["ok"] else 1)
    assert set(result) == ENVELOPE
    assert result["bench"] == "seek" and result["quick"] is True
    assert result["machine"]["cpus"] >= 1 and result["machine"]["cpu_model"]
    return result


def _sane(way: dict[str, Any], requests: int) -> None:
    assert way["errors"] == 0, way["error_examples"]
    assert way["requests"] == requests
    for q in ("p50", "p95", "max"):
        first, frame, whole = (way[f"{x}_s_{q}"] for x in ("first_byte", "first_frame", "whole"))
        assert 0 < first <= frame <= whole < 30
    assert RANGE_BYTES[0] <= way["bytes_per_request"] <= RANGE_BYTES[1]
    assert way["cpu_ms_per_request"] >= 0


@pytest.mark.timeout(120)  # a smoke test of correctness; 20 s on a quiet machine
@pytest.mark.serial
def test_seek_smoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ("--hours", "0.05", "--cameras", "2", "--instants", "4", "--data-dir", str(tmp_path))
    result = _run(capsys, *args)
    f, peer, ratio = result["figures"], result["peer"], result["ratio"]
    assert f["archive_cameras"] == 2 and f["archive_hours"] == 0.05
    # 3 minutes of 60 s segments a camera (the first one staggered shorter).
    assert 2 * 3 <= f["archive_segments"] <= 2 * 4
    assert 200 <= f["archive_kbps_per_camera"] <= 330
    assert f["archive_write_x_realtime"] > 1 and f["archive_reused"] is False
    _sane(f, 4)
    _sane(peer, 4)
    assert 0 < f["api_floor_s_p50"] <= f["api_floor_s_p95"] < 30
    # The stream starts at the keyframe at or before T: at most one GOP (4 s) earlier.
    offset = f["playback_offset_s"]
    assert offset["p50"] is not None and 0 <= offset["p50"] <= offset["max"] <= 4.0
    assert f["server_alive_at_end"] is True and f["server_exit_code"] == 0
    assert set(ratio) >= {"first_byte_s_p95", "first_frame_s_p95", "cpu_ms_per_request"}
    assert ratio["first_byte_s_p95"] > 0
    assert result["target"]["first_byte_p95_s_max"] == 0.05 and "note" in result["target"]
    # The same directory again: the archive is played, not written again.
    again = _run(capsys, *args)
    assert again["figures"]["archive_reused"] is True
    assert again["figures"]["archive_segments"] == f["archive_segments"]
    assert again["figures"]["errors"] == 0


def test_data_dir_holding_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(VmsError) as e:
        archive.existing(tmp_path, ["cam0"], 3600)
    assert e.value.kind == Kind.INVALID_ARGUMENT and "holds no seek archive" in e.value.message


def test_data_dir_with_another_archive_is_refused(tmp_path: Path) -> None:
    written = archive.Archive(["cam0", "cam1"], 0, 3600.0, 120, 10**8, 5.0, 260.0)
    record = {k: v for k, v in vars(written).items() if k != "reused"}
    (tmp_path / archive.MARKER).write_text(json.dumps(record))
    found = archive.existing(tmp_path, ["cam0", "cam1"], 3600)
    assert found is not None and found.reused and found.segments == 120
    for cameras, seconds in ((["cam0"], 3600), (["cam0", "cam1"], 7200)):
        with pytest.raises(VmsError) as e:
            archive.existing(tmp_path, cameras, seconds)
        assert e.value.kind == Kind.INVALID_ARGUMENT
        assert "holds an archive of 2 cameras x 1 h" in e.value.message
