"""``manifest.json`` and ``manifest.sig``: what an export holds, signed.

The manifest is canonical JSON (keys sorted, no spaces, UTF-8, no trailing newline), so the
same content is always the same bytes; the signature is Ed25519 over **the file's exact
bytes** (64 raw bytes in ``manifest.sig``), never over a re-encoding of what was parsed. It
names the cameras, the range asked for and the instant each file starts at, the stream, every
media file (name, size, SHA-256), who exported it and when, the software and its version, and
the id of the signing key (:func:`vms.export.signing.key_id`)::

    {"cameras": [{"id": "door", "files": ["door.mp4"], "first": "...", ...}],
     "end": "...", "export_id": "...", "exported_at": "...", "exported_by": "alice",
     "files": [{"name": "door.mp4", "sha256": "...", "size": 123}], "format": "vms-export/1",
     "key_id": "...", "notes": [], "software": {"name": "vms", "version": "0.1.0"},
     "start": "...", "stream": "main"}
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import vms
from vms.export.signing import Signer

FORMAT = "vms-export/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ZIP_NAME = "export.zip"  # several files: a zip of them and the manifest
_CHUNK = 1 << 20


def software_version() -> str:
    try:
        return importlib.metadata.version("vms")
    except importlib.metadata.PackageNotFoundError:
        return vms.__version__


def encode(manifest: Mapping[str, Any]) -> bytes:
    """Canonical JSON: the bytes that are signed."""
    return json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def digest(f: IO[bytes]) -> tuple[int, str]:
    """Size and SHA-256 (hex) of what ``f`` reads to its end."""
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def file_entry(path: Path, name: str | None = None) -> dict[str, Any]:
    with open(path, "rb") as f:
        size, sha = digest(f)
    return {"name": name or path.name, "size": size, "sha256": sha}


def build(
    *,
    export_id: str,
    cameras: Sequence[Mapping[str, Any]],
    start: str,
    end: str,
    stream: str,
    files: Iterable[Mapping[str, Any]],
    exported_by: str,
    exported_at: str,
    key_id: str,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "export_id": export_id,
        "cameras": list(cameras),
        "start": start,
        "end": end,
        "stream": stream,
        "files": sorted(files, key=lambda f: str(f["name"])),
        "exported_by": exported_by,
        "exported_at": exported_at,
        "software": {"name": "vms", "version": software_version()},
        "key_id": key_id,
        "notes": list(notes),
    }


def signed(manifest: Mapping[str, Any], signer: Signer) -> tuple[bytes, bytes]:
    """The manifest's bytes and their signature."""
    data = encode(manifest)
    return data, signer.sign(data)
