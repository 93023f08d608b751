"""Configuration: safe loading, validation that names file and field, exit code 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from vms import config
from vms.errors import Kind, VmsError


def write(tmp_path: Path, text: str, name: str = "vms.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_work_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "cameras:\n  - id: a\n    main: {url: rtsp://h/s}\n"))
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.storage.roots[0].path == tmp_path / "data" / "recordings"
    assert cfg.catalog_url().startswith("sqlite:///")
    assert cfg.recording.segment_seconds == 60 and cfg.recording.fragment_seconds == 1.0
    assert cfg.ingest.stall_timeout_s == 10


def test_toml_and_sizes(tmp_path: Path) -> None:
    text = """
[[storage.roots]]
name = "d1"
path = "/srv/d1"
max_bytes = "2GiB"
min_free_bytes = "500MB"
"""
    cfg = config.load(write(tmp_path, text, "vms.toml"))
    assert cfg.storage.roots[0].max_bytes == 2 * 1024**3
    assert cfg.storage.roots[0].min_free_bytes == 500 * 1000**2


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (
            "cameras:\n  - id: a\n    main: {url: rtsp://h/s}\n    colour: red\n",
            "cameras[0].colour",
            "Extra",
        ),
        ("cameras:\n  - id: A!\n    main: {url: rtsp://h/s}\n", "cameras[0].id", "pattern"),
        ("cameras:\n  - id: a\n    main: {url: http://h/s}\n", "cameras[0].main.url", "scheme"),
        ("recording: {fragment_seconds: 3}\n", "recording.fragment_seconds", "less than"),
        (
            "storage: {roots: [{name: x, path: /a, max_bytes: lots}]}\n",
            "storage.roots[0].max_bytes",
            "size",
        ),
        (
            "cameras:\n  - {id: a, main: {url: rtsp://h/1}}\n  - {id: a, main: {url: rtsp://h/2}}\n",
            "(top level)",
            "duplicate camera ids",
        ),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, text: str, field: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(VmsError) as e:
        config.load(path)
    assert e.value.kind == Kind.INVALID_ARGUMENT
    assert str(path) in e.value.message
    assert field in e.value.message
    assert words in e.value.message


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras: !!python/object/apply:os.system ['touch /tmp/pwned']\n")
    with pytest.raises(VmsError, match="not valid YAML"):
        config.load(path)


def test_credentials_in_url_are_refused_without_echoing_them(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras:\n  - id: a\n    main: {url: 'rtsp://admin:hunter2@h/s'}\n")
    with pytest.raises(VmsError) as e:
        config.load(path)
    assert "username/password" in e.value.message
    assert "hunter2" not in e.value.message


def test_password_is_percent_encoded_into_the_source_url_only() -> None:
    cfg = config.from_dict(
        {
            "cameras": [
                {
                    "id": "a",
                    "main": {"url": "rtsp://h:554/s"},
                    "username": "ad min",
                    "password": "p@ss:/#?%",
                }
            ]
        }
    )
    cam = cfg.cameras[0]
    assert cam.source_url(cam.main) == "rtsp://ad%20min:p%40ss%3A%2F%23%3F%25@h:554/s"
    assert "p@ss" not in repr(cfg) and "p@ss" not in cfg.model_dump_json()
    assert config.redact(cam.source_url(cam.main)) == "rtsp://***@h:554/s"


def test_serve_with_invalid_config_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    path = write(
        tmp_path, "cameras:\n  - id: a\n    main: {url: rtsp://h/s, transport: carrier-pigeon}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "vms", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "cameras[0].main.transport" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vms", "serve", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot read config" in result.stderr


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("cameras: [*a8]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    t0 = time.monotonic()
    with pytest.raises(VmsError):
        config.load(path)
    assert time.monotonic() - t0 < 5, "the config expanded the aliases"
