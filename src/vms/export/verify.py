"""What ``vms verify`` checks of an export: the manifest's signature, then every file it names.

An export is found from any of: its folder (``manifest.json``, ``manifest.sig`` and the
files, or ``export.zip`` beside them), the zip alone (its members), or the manifest's path.
The signature is checked over the manifest file's exact bytes; a file is whole when its size
and SHA-256 are the manifest's. A file of the folder that the manifest does not name is not
part of the export and is not looked at.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vms.errors import Kind, VmsError
from vms.export import manifest as manifest_mod
from vms.export import signing
from vms.export.manifest import ZIP_NAME


@dataclasses.dataclass
class Report:
    findings: list[str] = dataclasses.field(default_factory=list)
    checked: int = 0  # files whose size and hash match
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.findings


Opener = Callable[[str], IO[bytes] | None]


def _locate(target: Path) -> tuple[bytes, bytes | None, Opener, Callable[[], None]]:
    """The manifest's bytes, the signature's, and how to open a file it names."""
    if not target.exists():
        raise VmsError(Kind.INVALID_ARGUMENT, f"{target}: no such file or folder")
    if target.is_file() and target.suffix == ".zip":
        return _in_zip(target)
    folder = target if target.is_dir() else target.parent
    manifest = target if target.is_file() else folder / manifest_mod.MANIFEST
    if not manifest.is_file():
        if (folder / ZIP_NAME).is_file():
            return _in_zip(folder / ZIP_NAME)
        raise VmsError(Kind.INVALID_ARGUMENT, f"{target}: no {manifest_mod.MANIFEST} there")
    sig = folder / manifest_mod.SIGNATURE
    archive = folder / ZIP_NAME
    z = _open_zip(archive) if archive.is_file() else None

    def open_file(name: str) -> IO[bytes] | None:
        if (folder / name).is_file():
            return open(folder / name, "rb")
        if z is not None and name in z.namelist():
            return z.open(name)
        return None

    return (
        manifest.read_bytes(),
        sig.read_bytes() if sig.is_file() else None,
        open_file,
        z.close if z is not None else lambda: None,
    )


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise VmsError(Kind.CORRUPT, f"{path}: not a readable zip ({e})") from None


def _in_zip(path: Path) -> tuple[bytes, bytes | None, Opener, Callable[[], None]]:
    z = _open_zip(path)
    names = set(z.namelist())
    try:
        if manifest_mod.MANIFEST not in names:
            raise VmsError(Kind.CORRUPT, f"{path}: holds no {manifest_mod.MANIFEST}")
        data = z.read(manifest_mod.MANIFEST)
        sig = z.read(manifest_mod.SIGNATURE) if manifest_mod.SIGNATURE in names else None
    except (zipfile.BadZipFile, OSError) as e:
        z.close()
        raise VmsError(Kind.CORRUPT, f"{path}: {e}") from None
    except VmsError:
        z.close()
        raise
    return data, sig, lambda name: z.open(name) if name in names else None, z.close


def verify(target: Path, public: Ed25519PublicKey) -> Report:
    """Check the export at ``target`` against ``public``. ``VmsError`` INVALID_ARGUMENT when
    there is nothing to check there, CORRUPT when a zip does not read."""
    data, sig, open_file, close = _locate(target)
    report = Report()
    try:
        _check(report, data, sig, open_file, public)
    finally:
        close()
    return report


def _check(
    report: Report, data: bytes, sig: bytes | None, open_file: Opener, public: Ed25519PublicKey
) -> None:
    given = signing.key_id(public)
    if sig is None:
        report.findings.append(f"{manifest_mod.SIGNATURE}: missing")
    elif not signing.verify(public, data, sig):
        report.findings.append(
            f"{manifest_mod.SIGNATURE}: not a signature of this {manifest_mod.MANIFEST} by key "
            f"{given[:16]}…: the manifest or its signature was changed, or another key signed it"
        )
    try:
        doc = json.loads(data)
        files = doc["files"]
        if not isinstance(files, list):
            raise TypeError
    except (ValueError, TypeError, KeyError):
        report.findings.append(f"{manifest_mod.MANIFEST}: not an export manifest")
        return
    report.manifest = doc
    if doc.get("key_id") not in (None, given):
        report.findings.append(
            f"{manifest_mod.MANIFEST}: names key {str(doc['key_id'])[:16]}…, not {given[:16]}…"
        )
    for entry in files:
        try:
            name, size, sha = str(entry["name"]), int(entry["size"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            report.findings.append(f"{manifest_mod.MANIFEST}: a file entry is malformed")
            continue
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            report.findings.append(f"{manifest_mod.MANIFEST}: a file name is not a plain name")
            continue
        try:
            f = open_file(name)
            if f is None:
                report.findings.append(f"{name}: missing")
                continue
            with f:
                got_size, got_sha = manifest_mod.digest(f)
        except (OSError, zipfile.BadZipFile) as e:
            report.findings.append(f"{name}: does not read ({e})")
            continue
        if got_size != size:
            report.findings.append(f"{name}: {got_size} bytes, the manifest says {size}")
        elif got_sha != sha:
            report.findings.append(f"{name}: its SHA-256 is not the manifest's (changed)")
        else:
            report.checked += 1
