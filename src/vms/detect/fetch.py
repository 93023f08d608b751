"""The set-up's model fetch: MobileNet-SSD's two files out of the PyPI wheel ``cam2text==0.1.1``.

Run as ``python -m vms.detect.fetch [--dir DIR] [--wheel WHEEL]``; ``./dev setup`` does. It
downloads the wheel with pip (``pip download --no-deps``, the user's own index and proxy
settings apply), takes the caffemodel and the prototxt out of the zip, checks their SHA-256 and
writes them into the model directory (:func:`vms.detect.models.model_dir`). When both files are
already there with the right hashes it does nothing, offline. ``--wheel`` takes a wheel already
on disk instead of downloading one. Exit status 1 with one clear line on failure.

Traps:

* Each file is written to a temporary name in the same directory, flushed to disk and renamed
  over the target, so a fetch cut short never leaves a half-written model that looks present.
* The wheel's members are read with a size cap: a hostile or broken wheel cannot make the
  set-up inflate gigabytes into memory.
* Only the runtime ever decides whether a model is usable (:func:`vms.detect.models.load`); this
  module never runs at server start and the server never downloads anything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from vms.detect.models import SSD_CAFFEMODEL, SSD_FILES, SSD_PROTOTXT, model_dir, sha256
from vms.detection_config import DetectionConfig
from vms.errors import Kind, VmsError

PACKAGE = "cam2text==0.1.1"
# Where each file lies in the wheel.
MEMBERS = {
    SSD_CAFFEMODEL: "cam2text/models/MobileNetSSD_deploy.caffemodel",
    SSD_PROTOTXT: "cam2text/models/MobileNetSSD_deploy.prototxt.txt",
}
MAX_MEMBER = 64 * 1024 * 1024  # the caffemodel is 23 MB
PIP_TIMEOUT_S = 900


def present(directory: Path) -> bool:
    """Whether both files are in ``directory`` with the right hashes."""
    return not _wanted(directory)


def fetch(directory: Path, wheel: Path | None = None) -> list[Path]:
    """Make ``directory`` hold the SSD files; the paths written (none when all were there)."""
    wanted = _wanted(directory)
    if not wanted:
        return []
    if wheel is not None:
        return _install(_extract(wheel, wanted), directory)
    with tempfile.TemporaryDirectory(prefix="vms-model-") as tmp:
        return _install(_extract(_download(Path(tmp)), wanted), directory)


def _wanted(directory: Path) -> list[str]:
    """The files missing from ``directory`` or with the wrong hash."""
    wanted = []
    for name, digest in SSD_FILES.items():
        path = directory / name
        try:
            ok = path.is_file() and sha256(path.read_bytes()) == digest
        except OSError:
            ok = False
        if not ok:
            wanted.append(name)
    return wanted


def _download(tmp: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--quiet", "--dest", str(tmp), PACKAGE,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise VmsError(
            Kind.UNAVAILABLE, f"pip download {PACKAGE} took over {PIP_TIMEOUT_S} s"
        ) from None
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split()[-40:])
        raise VmsError(Kind.UNAVAILABLE, f"pip download {PACKAGE} failed: {tail}")
    wheels = sorted(tmp.glob("cam2text-*.whl"))
    if len(wheels) != 1:
        raise VmsError(Kind.UNAVAILABLE, f"pip download {PACKAGE} left no single wheel in {tmp}")
    return wheels[0]


def _extract(wheel: Path, wanted: list[str]) -> dict[str, bytes]:
    """The wanted files' bytes out of ``wheel``, each checked against its SHA-256."""
    found: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in wanted:
                member = MEMBERS[name]
                try:
                    info = z.getinfo(member)
                except KeyError:
                    raise VmsError(Kind.CORRUPT, f"{wheel}: has no {member}") from None
                if info.file_size > MAX_MEMBER:
                    raise VmsError(
                        Kind.CORRUPT, f"{wheel}: {member} is {info.file_size} bytes, too large"
                    )
                with z.open(info) as f:
                    data = f.read(MAX_MEMBER + 1)
                digest = sha256(data)
                if digest != SSD_FILES[name]:
                    raise VmsError(
                        Kind.CORRUPT,
                        f"{wheel}: {member} has SHA-256 {digest}, expected {SSD_FILES[name]}; "
                        "the package is not the one this version was made for",
                    )
                found[name] = data
    except FileNotFoundError:
        raise VmsError(Kind.NOT_FOUND, f"{wheel}: no such wheel") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as e:
        raise VmsError(Kind.CORRUPT, f"{wheel}: not a readable wheel: {e}") from None
    return found


def _install(files: dict[str, bytes], directory: Path) -> list[Path]:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return [_write_atomically(directory / name, data) for name, data in files.items()]
    except OSError as e:
        raise VmsError(Kind.UNAVAILABLE, f"{directory}: cannot write the model: {e}") from None


def _write_atomically(path: Path, data: bytes) -> Path:
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vms.detect.fetch",
        description=f"Fetch the MobileNet-SSD model files (from {PACKAGE}) into the model dir.",
    )
    parser.add_argument(
        "--dir", type=Path, help="model directory (default: $VMS_MODEL_DIR or ~/.cache/vms/models)"
    )
    parser.add_argument("--wheel", type=Path, help="use this cam2text wheel instead of pip")
    args = parser.parse_args(argv)
    directory = args.dir or model_dir(DetectionConfig())
    try:
        written = fetch(directory, args.wheel)
    except VmsError as e:
        print(f"model fetch failed: {e}", file=sys.stderr)
        return 1
    if written:
        print(f"MobileNet-SSD written to {directory}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
