"""Demo cameras that need no network: generated clips and real footage, played in a loop.

``vms serve --demo`` records them on the embedded defaults (SQLite, local disk) so a newcomer
sees the system work before wiring a real camera.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vms import config as config_mod
from vms.config import Config
from vms.standin.footage import footage_clip, synthetic_clip

log = logging.getLogger(__name__)


def demo_config(data_dir: Path, port: int = 8080) -> Config:
    clips = data_dir / "demo-clips"
    clips.mkdir(parents=True, exist_ok=True)
    cameras: list[dict[str, Any]] = []
    h264 = clips / "synthetic-h264.mp4"
    if not h264.exists():
        synthetic_clip(h264, width=640, height=360, fps=25, seconds=8, codec="libx264", gop=25)
    cameras.append(
        {
            "id": "demo-pattern",
            "name": "Demo pattern (H.264)",
            "main": {"url": h264.resolve().as_uri()},
        }
    )
    hevc = clips / "synthetic-h265.mp4"
    try:
        if not hevc.exists():
            synthetic_clip(hevc, width=640, height=360, fps=25, seconds=8, codec="libx265", gop=50)
        cameras.append(
            {
                "id": "demo-hevc",
                "name": "Demo pattern (H.265)",
                "main": {"url": hevc.resolve().as_uri()},
            }
        )
    except Exception:  # noqa: BLE001 - an encoder missing from this PyAV build only drops a camera
        log.warning("no H.265 encoder in this PyAV build; the H.265 demo camera is skipped")
    try:
        clip = footage_clip(data_dir / "footage")
        cameras.append(
            {
                "id": "demo-footage",
                "name": "Demo footage (people walking)",
                "main": {"url": clip.resolve().as_uri()},
                # People found, tracked and raised as events; the street is a zone.
                "detect": {
                    "fps": 5,
                    "zones": [
                        {"name": "street", "polygon": [[0, 0.3], [1, 0.3], [1, 1], [0, 1]]}
                    ],
                },
            }
        )
    except Exception as e:  # noqa: BLE001 - offline machines still get the generated cameras
        log.warning("real footage unavailable (%s); demo runs with generated clips only", e)
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "server": {"port": port, "allow_file_cameras": True},
        "storage": {
            "roots": [
                {
                    "name": "local",
                    "path": str(data_dir / "recordings"),
                    "min_free_bytes": "1GiB",
                    "max_bytes": "2GiB",
                    "create": True,
                }
            ]
        },
        "cameras": [dict(c, retention_days=7) for c in cameras],
    }
    return config_mod.from_dict(raw, source="demo")
