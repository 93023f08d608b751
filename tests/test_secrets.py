"""Camera passwords never leave the process: not in logs, API responses, errors or CLI output.

A real ``vms serve`` runs three cameras with credentials against a stand-in camera that
checks them: the right password (records), a wrong one (refused) and an unreachable host.
Everything it prints and everything the API answers is searched for the secrets in every
form a URL or an ``Authorization`` header could carry them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.polling import free_port, wait_for
from vms import config as config_mod
from vms.auth import local
from vms.clock import SystemClock
from vms.errors import VmsError
from vms.ingest.pyav_source import open_source
from vms.standin import StandinCamera, gstreamer_available

USER = "admin"
PASSWORD = "p@ss:/#?%"
WRONG = "wr0ng&p@ss=/?#"


def _forms(user: str, password: str) -> list[str]:
    quoted = urllib.parse.quote(password, safe="")
    pair = f"{user}:{password}"
    return [
        password,
        quoted,
        quoted.lower(),
        urllib.parse.quote_plus(password),
        pair,
        f"{user}:{quoted}",
        base64.b64encode(pair.encode()).decode(),  # an Authorization: Basic header
    ]


SECRETS = [*_forms(USER, PASSWORD), *_forms(USER, WRONG), "p@ss", "p%40ss"]
assert "p%40ss%3A%2F%23%3F%25" in SECRETS


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def vms(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vms", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def get(url: str, data_dir: Path) -> tuple[int, str]:
    """GET as a local tool does, with the data directory's local API key."""
    request = urllib.request.Request(url, headers=local.headers(data_dir))
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def base_config(tmp_path: Path, cameras: list[dict[str, Any]]) -> dict[str, Any]:
    root = tmp_path / "r1"
    root.mkdir(exist_ok=True)
    return {
        "data_dir": str(tmp_path),
        "storage": {"roots": [{"name": "r1", "path": str(root), "min_free_bytes": 0}]},
        "ingest": {
            "open_timeout_s": 2,
            "stall_timeout_s": 2,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 1,
        },
        "cameras": cameras,
    }


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinCamera]:
    if not gstreamer_available():
        pytest.skip("GStreamer RTSP server (python3-gi, gst-rtsp-server, x264enc) missing")
    with StandinCamera(width=320, height=240, keyint=25, user=USER, password=PASSWORD) as cam:
        yield cam


def three_cameras(standin: StandinCamera) -> list[dict[str, Any]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    return [
        {"id": "good", "main": {"url": standin.url}, "username": USER, "password": PASSWORD},
        {"id": "wrong", "main": {"url": standin.url}, "username": USER, "password": WRONG},
        {
            "id": "gone",
            "main": {"url": f"rtsp://127.0.0.1:{closed}/cam"},
            "username": USER,
            "password": PASSWORD,
        },
    ]


@contextlib.contextmanager
def serve(config_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], list[bytes]]]:
    """``vms serve`` with stdout and stderr captured (together) until it exits."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vms", "serve", "--config", str(config_path), *extra],
        cwd=config_path.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(proc.stdout.readline, b"")))
    reader.start()
    try:
        yield proc, chunks
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)


@pytest.mark.parametrize(
    ("log_format", "log_level", "flag"),
    [
        ("json", "debug", False),
        ("text", "info", False),
        pytest.param(
            "json",
            "info",
            True,
            id="json-info-flag",
        ),
    ],
)
def test_no_secret_in_logs_api_or_status(
    tmp_path: Path, standin: StandinCamera, log_format: str, log_level: str, flag: bool
) -> None:
    port = free_port()
    cfg = base_config(tmp_path, three_cameras(standin))
    cfg["server"] = {"port": port, "log_level": log_level}
    if not flag:
        cfg["server"]["log_format"] = log_format
    path = tmp_path / "vms.yaml"
    path.write_text(yaml.safe_dump(cfg))
    base = f"http://127.0.0.1:{port}"
    outputs: dict[str, str] = {}
    with serve(path, *(["--log-format", log_format] if flag else [])) as (proc, chunks):

        def settled() -> dict[str, Any] | None:
            try:
                status, body = get(base + "/api/v1/cameras", tmp_path)
            except OSError:
                if proc.poll() is not None:
                    log = b"".join(chunks).decode(errors="replace")
                    raise AssertionError(f"vms serve exited ({proc.returncode}):\n{log}") from None
                return None
            if status != 200:
                return None
            cams = {c["id"]: c for c in json.loads(body)["items"]}
            good, wrong, gone = cams["good"], cams["wrong"], cams["gone"]
            ok = (
                good["health"]["state"] == "online"
                and good["recording"]["frames_written"] > 0
                and wrong["health"]["reconnects"] >= 2
                and gone["health"]["reconnects"] >= 2
            )
            return cams if ok else None

        cams = wait_for(settled, 20, "good recording, wrong and gone retried twice")
        assert cams["wrong"]["health"]["state"] == "offline"
        assert "Unauthorized" in cams["wrong"]["health"]["last_error"]
        assert cams["gone"]["health"]["state"] == "offline"
        assert "Connection refused" in cams["gone"]["health"]["last_error"]

        wait_for(
            lambda: (
                get(base + "/api/v1/cameras/good/recordings", tmp_path)[1].count("start_us") > 1
            ),
            10,
            "a recorded run",
        )
        paths = ["/healthz", "/api/v1/cameras", "/api/v1/storage", "/metrics", "/api/openapi.json"]
        for cam in ("good", "wrong", "gone"):
            paths += [f"/api/v1/cameras/{cam}", f"/api/v1/cameras/{cam}/recordings"]
        for p in paths:
            status, body = get(base + p, tmp_path)
            assert status == 200, (p, body)
            outputs[p] = body
        for p in ("/api/v1/cameras/nope", "/api/v1/cameras/nope/recordings"):
            status, body = get(base + p, tmp_path)
            assert status == 404, (p, body)
            assert "nope" in body
            outputs[p] = body
        assert 'vms_camera_state{camera="wrong",state="offline"} 1.0' in outputs["/metrics"]

        for args in (["--url", base], ["--url", base, "--json"]):
            st = vms("status", *args, "--data-dir", str(tmp_path), cwd=tmp_path)
            assert st.returncode == 0, st.stderr
            outputs["vms status " + " ".join(args[2:])] = st.stdout + st.stderr
        assert "Unauthorized" in outputs["vms status "]
        assert "Connection refused" in outputs["vms status "]

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    log = b"".join(chunks).decode(errors="replace")
    assert "stopped cleanly" in log, log
    # The log really holds the failures (so the search below is not vacuous).
    assert "Unauthorized" in log and "Connection refused" in log
    if log_format == "json":
        lines = [json.loads(line) for line in log.splitlines() if line.strip()]
        assert any(e.get("camera") == "wrong" and "Unauthorized" in e["msg"] for e in lines)
    outputs["serve log"] = log
    found = {where: leaks(text) for where, text in outputs.items() if leaks(text)}
    assert not found, f"secrets leaked: {found}"


def test_open_errors_carry_no_secret(standin: StandinCamera) -> None:
    cams = [config_mod.CameraConfig.model_validate(c) for c in three_cameras(standin)]
    good, wrong, gone = cams
    stop = threading.Event()
    url = wrong.source_url(wrong.main)
    assert urllib.parse.quote(WRONG, safe="") in url  # the secret really is in what PyAV gets
    errors = []
    for cam in (wrong, gone):
        with pytest.raises(VmsError) as info:
            open_source(
                cam.source_url(cam.main), open_timeout=2, read_timeout=2, stop=stop,
                clock=SystemClock(),
            )  # fmt: skip
        errors.append(info.value)
    assert "Unauthorized" in errors[0].message
    assert "Connection refused" in errors[1].message
    for e in errors:
        text = "\n".join([str(e), repr(e), json.dumps(e.to_dict()), *traceback.format_exception(e)])
        assert not leaks(text), text
    # The right password opens (so the wrong one failed for the right reason).
    source = open_source(
        good.source_url(good.main), open_timeout=2, read_timeout=2, stop=stop, clock=SystemClock()
    )
    source.close()


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"rtsp://{USER}:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:554/cam",
        f"rtsp://{USER}:{PASSWORD}@127.0.0.1:554/cam",
        f"rtsps://{USER}:{urllib.parse.quote(PASSWORD, safe='')}@camera.example:322/s1",
    ],
    ids=["percent-encoded", "raw", "rtsps"],
)
def test_credentials_in_the_url_are_rejected(tmp_path: Path, url: str) -> None:
    cfg = base_config(tmp_path, [{"id": "cam", "main": {"url": url}}])
    path = tmp_path / "cameras.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = vms("serve", "--config", str(path), cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "cameras.yaml" in out
    assert "cameras[0].main.url" in out
    assert "credentials in the URL" in out
    assert not leaks(out), out
    assert not (tmp_path / "catalog.db").exists(), "nothing may start with a rejected config"


def _toml(cfg: dict[str, Any]) -> str:
    cam = cfg["cameras"][0]
    root = cfg["storage"]["roots"][0]
    lines = [
        f"data_dir = {json.dumps(cfg['data_dir'])}",
        "[[storage.roots]]",
        *(f"{k} = {json.dumps(v)}" for k, v in root.items()),
        "[[cameras]]",
        *(f"{k} = {json.dumps(v)}" for k, v in cam.items() if k != "main"),
        "[cameras.main]",
        f"url = {json.dumps(cam['main']['url'])}",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_invalid_config_names_file_and_field(tmp_path: Path, suffix: str) -> None:
    camera = {
        "id": "cam",
        "main": {"url": "rtsp://127.0.0.1:554/cam"},
        "username": USER,
        "password": PASSWORD,
        "enabled": "maybe",
        "pasword": PASSWORD,  # a typo'd key holding the secret: its value must not be echoed
    }
    cfg = base_config(tmp_path, [camera])
    path = tmp_path / f"site{suffix}"
    path.write_text(yaml.safe_dump(cfg) if suffix == ".yaml" else _toml(cfg))
    for command in ("serve", "check"):
        result = vms(command, "--config", str(path), cwd=tmp_path)
        out = result.stdout + result.stderr
        assert result.returncode == 2, out
        assert f"site{suffix}" in out
        assert "cameras[0].enabled" in out
        assert "cameras[0].pasword" in out
        assert not leaks(out), out


def test_yaml_syntax_error_does_not_echo_the_password(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "cameras:\n"
        "  - id: cam\n"
        "    main: {url: 'rtsp://127.0.0.1:554/cam'}\n"
        f"    username: {USER}\n"
        f'    password: "{PASSWORD}\n'
    )
    result = vms("check", "--config", str(path), cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "broken.yaml" in out
    assert not leaks(out), out
