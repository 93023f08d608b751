"""What both live benchmarks stand on: a stamped stand-in camera, a VMS server recording it in
a process of its own, and a user of that server allowed to watch it live.

The server's local key is an administrator without a user, and media tokens (what a player
that sends no header puts in its URLs) are for users only, so the site adds one: a viewer
granted every camera, logged in through the API as any user would be.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from vms.bench import VmsProcess, free_port, write_config
from vms.bench.report import Progress
from vms.standin import StandinCamera

CAMERA = "cam"
USER = "bench"
SEGMENT_SECONDS = 60


class LiveSite:
    """A running camera and server: ``base`` (the server's URL), ``camera`` (the VMS camera id),
    ``cam`` (the stand-in), ``vms`` (the server process) and ``bearer`` (the viewer's token)."""

    def __init__(self, cam: StandinCamera, vms: VmsProcess, bearer: str, data: Path) -> None:
        self.cam, self.vms, self.bearer, self.data = cam, vms, bearer, data
        self.base = vms.base
        self.camera = CAMERA


def _add_viewer(base: str, headers: dict[str, str]) -> str:
    """A viewer granted every camera; returns its access token."""
    password = secrets.token_urlsafe(18)
    with httpx.Client(base_url=base, timeout=60) as client:
        r = client.post("/api/v1/auth/users", headers=headers,
                        json={"name": USER, "password": password, "role": "viewer"})  # fmt: skip
        r.raise_for_status()
        uid = r.json()["id"]
        r = client.put(f"/api/v1/auth/users/{uid}/grants", headers=headers,
                       json={"grants": [{"camera_id": "*"}]})  # fmt: skip
        r.raise_for_status()
        r = client.post("/api/v1/auth/login", json={"name": USER, "password": password})
        r.raise_for_status()
        return str(r.json()["access_token"])


@contextlib.contextmanager
def live_site(
    tmp: Path,
    progress: Progress,
    *,
    width: int,
    height: int,
    kbps: int,
    keyint: int = 50,
    log_level: str = "warning",
) -> Iterator[LiveSite]:
    """Start the stamped camera and the server; stop both on exit."""
    progress.update("live: camera and server", 0, 2)
    with StandinCamera(width=width, height=height, fps=25, bitrate_kbps=kbps, keyint=keyint,
                       stamp=True) as cam:  # fmt: skip
        port = free_port()
        path = write_config(tmp, port=port, cameras=[(CAMERA, cam.url)],
                            segment_seconds=SEGMENT_SECONDS, log_level=log_level)  # fmt: skip
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        cfg.setdefault("auth", {}).update(
            {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
        )
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        vms = VmsProcess(path, port, tmp / "vms.log").start()
        try:
            vms.wait_http(60)
            vms.wait_online(1, 60)
            progress.update("live: camera and server", 1, 2)
            bearer = _add_viewer(vms.base, vms.headers())
            progress.update("live: camera and server", 2, 2)
            yield LiveSite(cam, vms, bearer, tmp / "data")
        finally:
            vms.stop(60)
