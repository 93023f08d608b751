"""Who imports whom: the import contracts of pyproject.toml hold, and the runtime loads no
benchmark, stand-in camera or demo."""

from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from vms import cli

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
OUTSIDE_RUNTIME = ("vms.bench", "vms.demo", "vms.standin")


class Broken(AssertionError):
    """lint-imports ran and reported a contract broken."""


def _env() -> dict[str, str]:
    # This checkout's code, whatever the virtual environment's own install points at.
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    return os.environ | {"PYTHONPATH": path}


def _contracts() -> dict[str, dict[str, Any]]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return {c["id"]: c for c in contracts}


def _lint_imports(*ids: str) -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    args = [str(lint), "--no-cache", "--no-logo"]
    for contract in ids:
        args += ["--contract", contract]
    r = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    counts = re.search(r"Contracts: (\d+) kept, (\d+) broken\.", r.stdout)
    assert counts is not None, f"lint-imports did not check:\n{r.stdout}\n{r.stderr}"
    kept, broken = int(counts[1]), int(counts[2])
    if broken or r.returncode != 0:
        raise Broken(r.stdout)
    assert kept == len(ids), r.stdout


def test_every_contract_holds() -> None:
    contracts = _contracts()
    assert {
        "runtime-no-bench",
        "readers-know-no-recorder",
        "recorder-knows-no-health",
        "layers",
    } <= set(contracts)
    _lint_imports(*contracts)


def test_a_reader_importing_the_recorder_breaks_its_contract(tmp_path: Path) -> None:
    """The contract can fail: a copy of the package whose reader imports the recorder."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(SRC, copy)
    reader = copy / "vms" / "ingest" / "backoff.py"
    reader.write_text(reader.read_text() + "\nimport vms.recording.recorder  # noqa\n")
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run(
        [str(lint), "--no-cache", "--no-logo", "--contract", "readers-know-no-recorder"],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(copy)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert r.returncode != 0 and "vms.ingest.backoff -> vms.recording.recorder" in r.stdout


def test_every_runtime_module_is_held_to_the_runtime_contract() -> None:
    """A new top-level module is runtime (a source of runtime-no-bench) unless it is one of
    the three outside it."""
    contract = _contracts()["runtime-no-bench"]
    assert set(contract["forbidden_modules"]) == set(OUTSIDE_RUNTIME)
    top = {f"vms.{m.name}" for m in pkgutil.iter_modules([str(SRC / "vms")])}
    assert set(contract["source_modules"]) == top - set(OUTSIDE_RUNTIME)


def test_the_command_line_and_the_server_load_no_benchmark() -> None:
    code = "import sys, vms.cli, vms.serve, vms.server; print('\\n'.join(sys.modules))"
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.split())
    assert {"vms.cli", "vms.serve", "vms.server", "vms.api.routes"} <= loaded
    assert not {m for m in loaded if m.startswith(tuple(p + "." for p in OUTSIDE_RUNTIME))}
    assert not loaded & set(OUTSIDE_RUNTIME)
    # Detection and the event sinks' clients come when the configuration asks for them: a
    # server that records only does not start OpenCV, SciPy, PyArrow or a broker's client.
    assert not loaded & {"cv2", "scipy", "pyarrow", "aiomqtt", "nats", "vms.detect.pipeline"}


def test_vms_bench_is_reached_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert re.search(r"^\s+bench\s+run a benchmark", capsys.readouterr().out, re.M)

    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "recording", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vms bench ")
    for option in (
        "--quick",
        "--json",
        "--cameras",
        "--seconds",
        "--no-peer",
        "--slow-root",
        "--kills",
        "--clients",
        "--hours",
        "--instants",
        "--data-dir",
        "--protocols",
        "--viewers",
    ):
        assert option in out
    assert "{recording,crash,api,seek,live,viewers,detect}" in out
