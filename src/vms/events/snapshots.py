"""Event snapshots on disk: ``<data_dir>/events/<camera>/<event id>.jpg`` (the frame as it
was) and ``<event id>-box.jpg`` (with the object's box drawn), the best frame of each event.

Traps:

- Both names are built from ids that came from outside (an API path, a catalog row): each is
  checked against its pattern (a camera id, a canonical lowercase UUID) before it touches a
  path, so ``../`` or an absolute path can never name a file elsewhere.
- A snapshot is rewritten while its event goes on (a better score): each file is written to a
  temporary name in the same directory and renamed over the old one, so a reader gets the old
  picture or the new one, never half of one. The two files are two renames: for a moment the
  boxed picture may be one improvement behind the clean one.
- No fsync: a snapshot lost to a power cut costs a picture, not a recording.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path

from vms.config import CAMERA_ID_PATTERN
from vms.errors import Detail, Kind, VmsError, capped

DIR = "events"
_CAMERA = re.compile(CAMERA_ID_PATTERN)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_event_id(event_id: str) -> str:
    """``event_id`` if it is a canonical UUID (lowercase, hyphenated); else INVALID_ARGUMENT."""
    if not _UUID.fullmatch(event_id):
        problem = "not an event id (a lowercase UUID)"
        raise VmsError(Kind.INVALID_ARGUMENT, f"event {capped(event_id)}: {problem}",
                       [Detail("event_id", problem)])  # fmt: skip
    return event_id


def check_camera_id(camera_id: str) -> str:
    if not _CAMERA.fullmatch(camera_id):
        problem = "not a camera id"
        raise VmsError(Kind.INVALID_ARGUMENT, f"camera {capped(camera_id)}: {problem}",
                       [Detail("camera_id", problem)])  # fmt: skip
    return camera_id


class Snapshots:
    """The snapshot files under ``<data_dir>/events``. Thread-safe (each write is its own
    temporary file)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / DIR

    def path(self, camera_id: str, event_id: str, *, box: bool) -> Path:
        """Where the event's snapshot is (whether or not it exists)."""
        check_camera_id(camera_id)
        check_event_id(event_id)
        return self.root / camera_id / (f"{event_id}-box.jpg" if box else f"{event_id}.jpg")

    def write(self, camera_id: str, event_id: str, clean: bytes, boxed: bytes) -> None:
        """Write (or replace) both pictures, each atomically."""
        for box, data in ((False, clean), (True, boxed)):
            final = self.path(camera_id, event_id, box=box)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise

    def read(self, camera_id: str, event_id: str, *, box: bool) -> bytes:
        """The picture's bytes; NOT_FOUND when there is none."""
        try:
            return self.path(camera_id, event_id, box=box).read_bytes()
        except FileNotFoundError:
            raise VmsError(Kind.NOT_FOUND, f"event {event_id} has no snapshot") from None

    def delete(self, camera_id: str, event_id: str) -> None:
        """Remove both pictures (those that exist)."""
        for box in (False, True):
            self.path(camera_id, event_id, box=box).unlink(missing_ok=True)
