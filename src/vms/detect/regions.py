"""Where a detector looks: the crops of a frame around its motion, and the merge of what the
crops found.

The trap is scale. A detector resizes whatever it is given to its input (300×300 for
MobileNet-SSD): the whole of a 384×288 sub-stream shrinks a walking person to some 20 pixels
and the model misses them, while a crop of 160 pixels around the same person is *enlarged*
almost twice and found (measured on vtest: no person found on the whole frame, 6 to 10 on
crops, frames 0–20 of the footage). So each moving area gets a square crop of its own, at least
:data:`MIN_SIDE` pixels (some context around a small object), merged with its neighbours while
that does not make the crop much larger than its parts; at most ``max_crops`` crops a frame
(each is one inference: the cost is bounded), the closest ones merged first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vms.detect.detector import Detection
from vms.events.model import Box

MIN_SIDE = 160  # pixels: a crop no smaller than this, whatever moved
PAD = 0.2  # around a moving area, a fraction of its size
MERGE_GROWTH = 1.3  # two crops merge when the merged one is at most this much bigger
DUPLICATE_IOU = 0.5  # the same object found by two overlapping crops


@dataclasses.dataclass(frozen=True, slots=True)
class Crop:
    """A rectangle of the frame in pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def side(self) -> int:
        return max(self.w, self.h)


def _square(cx: float, cy: float, side: float, width: int, height: int) -> Crop:
    """A square of ``side`` centred near (cx, cy), moved inside the frame; when the frame is
    too narrow for it, as much of it as the frame holds."""
    w, h = min(side, width), min(side, height)
    x = min(max(cx - w / 2, 0.0), width - w)
    y = min(max(cy - h / 2, 0.0), height - h)
    return Crop(int(x), int(y), round(w), round(h))


def _around(boxes: Sequence[tuple[float, float, float, float]], width: int, height: int,
            min_side: float) -> Crop:  # fmt: skip
    x1 = min(b[0] for b in boxes)
    y1 = min(b[1] for b in boxes)
    x2 = max(b[2] for b in boxes)
    y2 = max(b[3] for b in boxes)
    extent = max(x2 - x1, y2 - y1)
    side = max(extent * (1 + 2 * PAD), min_side)
    return _square((x1 + x2) / 2, (y1 + y2) / 2, side, width, height)


def crops(regions: Sequence[Box], width: int, height: int, *, max_crops: int = 2,
          min_side: int = MIN_SIDE) -> list[Crop]:  # fmt: skip
    """The crops to detect on for these moving areas (normalised boxes) of a frame."""
    if not regions:
        return []
    groups = [[(b.x1 * width, b.y1 * height, b.x2 * width, b.y2 * height)] for b in regions]
    side = min(min_side, width, height)
    while len(groups) > 1:
        made = [_around(g, width, height, side) for g in groups]
        best: tuple[float, int, int] | None = None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                merged = _around(groups[i] + groups[j], width, height, side).side
                growth = merged / max(made[i].side, made[j].side)
                if best is None or growth < best[0]:
                    best = (growth, i, j)
        assert best is not None
        growth, i, j = best
        if growth > MERGE_GROWTH and len(groups) <= max_crops:
            break
        groups[i] = groups[i] + groups[j]
        del groups[j]
    return [_around(g, width, height, side) for g in groups]


def to_frame(d: Detection, crop: Crop, width: int, height: int) -> Detection:
    """A detection's box, normalised to its crop, normalised to the frame."""
    b = d.box
    return Detection(
        d.label,
        d.score,
        Box(
            (crop.x + b.x1 * crop.w) / width,
            (crop.y + b.y1 * crop.h) / height,
            (crop.x + b.x2 * crop.w) / width,
            (crop.y + b.y2 * crop.h) / height,
        ),
    )


def merge(found: Sequence[Detection]) -> list[Detection]:
    """One detection per object: where crops overlap, the same object found twice (same label,
    boxes overlapping by :data:`DUPLICATE_IOU`) keeps its best score."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: -d.score):
        if not any(k.label == d.label and k.box.iou(d.box) >= DUPLICATE_IOU for k in kept):
            kept.append(d)
    return kept
