"""Where the detector's model files live, and loading them into detector plugins.

:func:`load` turns the server's ``detection`` configuration into a factory of
:class:`~vms.detect.detector.Detector` instances, after proving the model loads: the files
exist (else ``NOT_FOUND``), the MobileNet-SSD files have the SHA-256 the set-up checked (else
``CORRUPT``), and one instance builds and runs (else ``CORRUPT``, or ``INVALID_ARGUMENT`` for an
ONNX model whose outputs fit no known layout). Nothing is ever downloaded here: the set-up
(:mod:`vms.detect.fetch`) fills the model directory.

Traps:

* The SSD files are read once, hashed, and every instance is built from those same bytes, so a
  file replaced after the check cannot slip an unchecked model into a later detector thread.
* A plugin that is not ``thread_safe`` (OpenCV's ``Net.forward`` keeps state in the net) gets a
  fresh instance per call of the factory: one per detector thread. The instance built to prove
  the model loads is handed out first, so a single-thread pool loads the model only once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from vms.detect.detector import Detector
from vms.detection_config import DetectionConfig, ModelKind
from vms.errors import Kind, VmsError

MODEL_DIR_ENV = "VMS_MODEL_DIR"
DEFAULT_MODEL_DIR = Path("~/.cache/vms/models")

SSD_PROTOTXT = "MobileNetSSD_deploy.prototxt"
SSD_CAFFEMODEL = "MobileNetSSD_deploy.caffemodel"
# The files of cam2text 0.1.1's wheel, as the set-up writes them (name -> SHA-256).
SSD_FILES = {
    SSD_CAFFEMODEL: "52eed8be80522c152a17fb56740de705b79881bde1a167e0e747310523685fc7",
    SSD_PROTOTXT: "2d180f723b3109e21f8287f6b3c691390d07b60eed998327cd3259ffa0e50608",
}
MISSING_HINT = "model file missing; run ./dev setup (it fetches the model)"

Factory = Callable[[], Detector]


def model_dir(cfg: DetectionConfig) -> Path:
    """``detection.model_dir``, else ``$VMS_MODEL_DIR``, else ``~/.cache/vms/models``."""
    if cfg.model_dir is not None:
        return cfg.model_dir.expanduser()
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_MODEL_DIR.expanduser()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checked(path: Path, expected_sha256: str) -> bytes:
    """The bytes of ``path``, after checking they exist and have the expected SHA-256."""
    data = _read(path, MISSING_HINT)
    digest = sha256(data)
    if digest != expected_sha256:
        raise VmsError(
            Kind.CORRUPT,
            f"{path}: model file has SHA-256 {digest}, expected {expected_sha256}; "
            "run ./dev setup to fetch it again",
        )
    return data


def load(cfg: DetectionConfig) -> Factory:
    """A factory of detectors for ``cfg``'s model, once one instance has proved it loads."""
    if cfg.model is ModelKind.MOBILENET_SSD:
        return _load_ssd(cfg)
    return _load_onnx(cfg)


def _load_ssd(cfg: DetectionConfig) -> Factory:
    from vms.detect.ssd import MobileNetSsd

    directory = model_dir(cfg)
    paths = {name: directory / name for name in SSD_FILES}
    for path in paths.values():  # both missing files are named before any hashing
        if not path.is_file():
            raise VmsError(Kind.NOT_FOUND, f"{path}: {MISSING_HINT}")
    proto = read_checked(paths[SSD_PROTOTXT], SSD_FILES[SSD_PROTOTXT])
    weights = read_checked(paths[SSD_CAFFEMODEL], SSD_FILES[SSD_CAFFEMODEL])

    def build() -> Detector:
        return MobileNetSsd(proto, weights, source=paths[SSD_CAFFEMODEL])

    return _factory(build)


def _load_onnx(cfg: DetectionConfig) -> Factory:
    from vms.detect.onnx_detector import OnnxDetector

    if cfg.onnx is None:
        raise VmsError(Kind.INVALID_ARGUMENT, "detection.model is onnx but detection.onnx is unset")
    onnx_cfg = cfg.onnx
    data = _read(onnx_cfg.path.expanduser(), "model file missing (detection.onnx.path)")

    def build() -> Detector:
        return OnnxDetector(onnx_cfg, data)

    return _factory(build)


def _read(path: Path, missing: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VmsError(Kind.NOT_FOUND, f"{path}: {missing}") from None
    except IsADirectoryError:
        raise VmsError(Kind.CORRUPT, f"{path}: is a directory, not a model file") from None
    except OSError as e:
        raise VmsError(Kind.UNAVAILABLE, f"{path}: cannot read the model file: {e}") from None


def _factory(build: Callable[[], Detector]) -> Factory:
    first: list[Detector] = [build()]  # proves the model loads, at start
    if first[0].thread_safe:
        shared = first[0]
        return lambda: shared
    lock = threading.Lock()

    def make() -> Detector:
        with lock:
            if first:
                return first.pop()
        return build()

    return make
