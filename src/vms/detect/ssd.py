"""The ``mobilenet_ssd`` detector plugin: the Caffe MobileNet-SSD (PASCAL VOC) on OpenCV's DNN.

The network takes a 300×300 BGR image scaled to -1..1 (``(pixel - 127.5) / 127.5``) and its
``DetectionOutput`` layer returns ``[1, 1, N, 7]``: image id, class (0 is the background, then
:data:`~vms.detection_config.VOC_LABELS` in order), score, and x1 y1 x2 y2 normalised to the
input. The image is stretched to 300×300; the pipeline gives it crops squared to that aspect.

Traps:

* The prototxt's ``DetectionOutput`` drops everything under 0.25, but the tracker rescues lost
  tracks with low scores: the prototxt is edited in memory (after its SHA-256 was checked) to
  keep detections down to :data:`SCORE_FLOOR`.
* The output's unused rows are zeros (class 0, the background), and boxes can stick out of the
  picture by a little: both are filtered and clipped here.
* ``Net.forward`` keeps its blobs in the net, so an instance serves one thread at a time
  (``thread_safe`` is False). OpenCV's own thread pool is process-wide; it is set to one thread
  so a detector thread uses one core and the pool of detector threads gives the parallelism
  (several nets each fanning out over every core only fight each other).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np

from vms.detect.detector import Detection, Image
from vms.detection_config import VOC_LABELS
from vms.errors import Kind, VmsError
from vms.events.model import Box

INPUT = 300
SCALE = 1 / 127.5
MEAN = 127.5
SCORE_FLOOR = 0.1

_THRESHOLD = re.compile(rb"confidence_threshold:\s*[-+0-9.eE]+")


class MobileNetSsd:
    """One MobileNet-SSD net; use it from one thread at a time."""

    labels: tuple[str, ...] = VOC_LABELS
    input_size = (INPUT, INPUT)
    thread_safe = False

    def __init__(self, prototxt: bytes, caffemodel: bytes, source: Path | str = "MobileNet-SSD"):
        cv2.setNumThreads(1)
        proto = _THRESHOLD.sub(b"confidence_threshold: %g" % SCORE_FLOOR, prototxt)
        try:
            self._net = cv2.dnn.readNetFromCaffe(
                np.frombuffer(proto, np.uint8), np.frombuffer(caffemodel, np.uint8)
            )
            # A forward pass proves the weights fit the graph (a parse alone does not).
            self.detect(np.full((INPUT, INPUT, 3), 127, np.uint8))
        except cv2.error as e:
            message = f"{source}: the model does not load: {_first_line(e)}"
            raise VmsError(Kind.CORRUPT, message) from None

    @classmethod
    def from_files(cls, prototxt: Path, caffemodel: Path) -> MobileNetSsd:
        return cls(prototxt.read_bytes(), caffemodel.read_bytes(), source=caffemodel)

    def detect(self, image: Image) -> list[Detection]:
        if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise VmsError(Kind.INVALID_ARGUMENT, f"expected a BGR image, got shape {image.shape}")
        blob = preprocess(image)
        self._net.setInput(blob)
        out = self._net.forward()
        return decode(out.reshape(-1, 7))


def preprocess(image: Image) -> np.ndarray:
    """The network's input: ``[1, 3, 300, 300]`` float32, BGR (as the Caffe model was trained),
    ``(pixel - 127.5) / 127.5``."""
    small = cv2.resize(image, (INPUT, INPUT), interpolation=cv2.INTER_AREA)
    # The mean is a per-channel Scalar: a bare 127.5 would be subtracted from blue alone.
    blob: np.ndarray = cv2.dnn.blobFromImage(small, SCALE, (INPUT, INPUT), (MEAN, MEAN, MEAN))
    return blob


def decode(rows: np.ndarray) -> list[Detection]:
    """Detections from DetectionOutput rows (id, class, score, x1, y1, x2, y2)."""
    found = []
    for _, cls, score, x1, y1, x2, y2 in rows.tolist():
        index = int(cls)
        if not 1 <= index <= len(VOC_LABELS) or not score >= SCORE_FLOOR:  # NaN fails too
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            continue
        box = Box(_clip(x1), _clip(y1), _clip(x2), _clip(y2))
        if box.x2 <= box.x1 or box.y2 <= box.y1:
            continue
        found.append(Detection(VOC_LABELS[index - 1], min(1.0, float(score)), box))
    return found


def _clip(v: float) -> float:
    return min(1.0, max(0.0, float(v)))


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__
