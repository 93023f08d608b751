"""The detector plugin contract: ``detect(image) -> detections``.

A plugin is given a BGR ``uint8`` image (H×W×3), the region of a frame where something moved,
and returns what it found there with boxes normalised to *that image*; the pipeline maps them
back to the frame. A plugin is called from several detector threads at once only when it says
so (``thread_safe``); otherwise each thread gets its own instance (:func:`vms.detect.models.load`
makes them).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vms.events.model import Box

Image = npt.NDArray[np.uint8]


@dataclasses.dataclass(frozen=True, slots=True)
class Detection:
    label: str
    score: float
    box: Box  # normalised to the image the detector was given


class Detector(Protocol):
    labels: tuple[str, ...]  # every label it can return
    input_size: tuple[int, int]  # (width, height) the model sees: crops smaller than it waste it
    thread_safe: bool

    def detect(self, image: Image) -> list[Detection]: ...
