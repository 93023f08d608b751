"""The ``onnx`` detector plugin: a user's YOLO or DETR model on onnxruntime.

The image is letterboxed into the model's square input (aspect kept, padded with grey 114 around
the centred picture), turned RGB, scaled to 0–1 and laid out NCHW ``float32``. The output layout
is found from the shapes of a probe inference at load (symbolic dimensions in the graph say
nothing), with C the number of configured classes:

* YOLO v5: ``[1, N, 5+C]`` — cx, cy, w, h in input pixels, objectness, class scores; a box's
  score is objectness × its best class score.
* YOLO v8/v11: ``[1, 4+C, N]`` — cx, cy, w, h in input pixels, class scores (no objectness).
* DETR (RT-DETR exports): boxes ``[1, N, 4]`` (cx, cy, w, h normalised to the input) and logits
  ``[1, N, C]``; a query's score is the sigmoid of its best logit.

Boxes are mapped back through the letterbox and normalised to the image the plugin was given.
YOLO boxes go through non-maximum suppression per class (IoU 0.45); DETR's queries do not
overlap by construction and are kept as they are.

Traps:

* v5 and v8 are told apart by which axis has the class count; when both could fit (a
  ``[1, 4+C, 5+C]`` output), the longer axis is taken for the boxes, as real models have
  thousands of anchors and tens of classes.
* A session is safe to call from several threads at once (``thread_safe``), and it is limited to
  one intra-op thread, so each detector thread uses one core.
* Every box is kept down to :data:`SCORE_FLOOR` (the tracker uses low scores); the pipeline
  applies the per-label thresholds.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import cv2
import numpy as np
import onnxruntime as ort

from vms.detect.detector import Detection, Image
from vms.detection_config import OnnxModelConfig, OnnxOutput
from vms.errors import Kind, VmsError
from vms.events.model import Box

SCORE_FLOOR = 0.1
NMS_IOU = 0.45
PAD = 114
MAX_CANDIDATES = 3000  # highest-scoring boxes that go into NMS; the rest are noise
_INPUT_TYPES: dict[str, type[np.floating]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


class Layout(enum.Enum):
    YOLO_V5 = "yolo v5 [1, N, 5+C]"
    YOLO_V8 = "yolo v8 [1, 4+C, N]"
    DETR = "detr [1, N, 4] + [1, N, C]"


@dataclasses.dataclass(frozen=True, slots=True)
class Letterbox:
    """Where the picture sits in the model's input: scaled to ``width``×``height`` at ``left``,
    ``top``."""

    left: int
    top: int
    width: int
    height: int

    @classmethod
    def fit(cls, image_w: int, image_h: int, size: int) -> Letterbox:
        r = min(size / image_w, size / image_h)
        w = max(1, min(size, round(image_w * r)))
        h = max(1, min(size, round(image_h * r)))
        return cls((size - w) // 2, (size - h) // 2, w, h)

    def to_image(self, x1: float, y1: float, x2: float, y2: float) -> Box:
        """An input-pixel box as a box normalised to the picture, clipped to it."""
        return Box(
            _clip((x1 - self.left) / self.width),
            _clip((y1 - self.top) / self.height),
            _clip((x2 - self.left) / self.width),
            _clip((y2 - self.top) / self.height),
        )


class OnnxDetector:
    """A YOLO or DETR ONNX model; one instance serves every detector thread."""

    thread_safe = True

    def __init__(self, cfg: OnnxModelConfig, model: bytes) -> None:
        self.labels = tuple(cfg.classes)
        self.input_size = (cfg.input_size, cfg.input_size)
        self._size = cfg.input_size
        self._path = cfg.path
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # its warnings go to stderr, not through our log
        try:
            self._session = ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            raise VmsError(
                Kind.CORRUPT, f"{cfg.path}: the model does not load: {_first(e)}"
            ) from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = [i.shape for i in inputs]
            raise VmsError(
                Kind.INVALID_ARGUMENT,
                f"{cfg.path}: expected one image input [1, 3, H, W], the model takes {shapes}",
            )
        self._input = inputs[0].name
        if inputs[0].type not in _INPUT_TYPES:
            raise VmsError(
                Kind.INVALID_ARGUMENT,
                f"{cfg.path}: the model's input is {inputs[0].type}, expected float or float16",
            )
        self._dtype = _INPUT_TYPES[inputs[0].type]
        for axis, dim in zip(("height", "width"), inputs[0].shape[2:], strict=True):
            if isinstance(dim, int) and dim != cfg.input_size:
                raise VmsError(
                    Kind.INVALID_ARGUMENT,
                    f"{cfg.path}: the model's input {axis} is {dim}, "
                    f"detection.onnx.input_size is {cfg.input_size}",
                )
        self._names = [o.name for o in self._session.get_outputs()]
        try:
            outputs = self._run(np.full((self._size, self._size, 3), PAD, np.uint8))
        except Exception as e:  # noqa: BLE001 - as above
            raise VmsError(
                Kind.CORRUPT, f"{cfg.path}: the model does not run: {_first(e)}"
            ) from None
        self._layout, self._picks = self._find_layout(cfg.output, outputs)

    def detect(self, image: Image) -> list[Detection]:
        if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise VmsError(Kind.INVALID_ARGUMENT, f"expected a BGR image, got shape {image.shape}")
        box = Letterbox.fit(image.shape[1], image.shape[0], self._size)
        outputs = self._run(image, box)
        if self._layout is Layout.DETR:
            return self._detr(outputs[self._picks[0]][0], outputs[self._picks[1]][0], box)
        rows = outputs[self._picks[0]][0]
        if self._layout is Layout.YOLO_V8:
            rows = rows.T
        return self._yolo(rows, box)

    def _run(self, image: Image, box: Letterbox | None = None) -> list[np.ndarray]:
        if box is None:
            box = Letterbox.fit(image.shape[1], image.shape[0], self._size)
        blob = to_input(image, box, self._size).astype(self._dtype, copy=False)
        outputs = self._session.run(self._names, {self._input: blob})
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    def _find_layout(
        self, kind: OnnxOutput, outputs: list[np.ndarray]
    ) -> tuple[Layout, tuple[int, ...]]:
        c = len(self.labels)
        shapes = [list(o.shape) for o in outputs]
        if kind is OnnxOutput.YOLO:
            for i, s in enumerate(shapes):
                if len(s) != 3 or s[0] != 1:
                    continue
                v5, v8 = s[2] == 5 + c, s[1] == 4 + c
                if v5 and v8:  # ambiguous: the anchors are the longer axis
                    return (Layout.YOLO_V5 if s[1] >= s[2] else Layout.YOLO_V8), (i,)
                if v5:
                    return Layout.YOLO_V5, (i,)
                if v8:
                    return Layout.YOLO_V8, (i,)
            expected = f"[1, N, {5 + c}] (v5) or [1, {4 + c}, N] (v8/v11)"
        else:
            picks = self._detr_outputs(shapes, c)
            if picks is not None:
                return Layout.DETR, picks
            expected = f"boxes [1, N, 4] and logits [1, N, {c}] (DETR)"
        raise VmsError(
            Kind.INVALID_ARGUMENT,
            f"{self._path}: outputs {shapes} fit no {kind.value} layout for {c} classes: "
            f"expected {expected}",
        )

    def _detr_outputs(self, shapes: list[list[int]], c: int) -> tuple[int, int] | None:
        def named(found: list[int], word: str) -> list[int]:
            # Two candidates of one shape (C == 4, or extra outputs): the names tell them apart
            # (RT-DETR exports call them pred_boxes and logits).
            hits = [i for i in found if word in self._names[i].lower()]
            return hits if len(found) > 1 and hits else found

        three = [i for i, s in enumerate(shapes) if len(s) == 3 and s[0] == 1]
        boxes = named([i for i in three if shapes[i][2] == 4], "box")
        logits = named([i for i in three if shapes[i][2] == c], "logit")
        if len(boxes) != 1 or len(logits) != 1 or boxes == logits:
            return None
        b, lg = boxes[0], logits[0]
        return (b, lg) if shapes[b][1] == shapes[lg][1] else None

    def _yolo(self, rows: np.ndarray, box: Letterbox) -> list[Detection]:
        v5 = self._layout is Layout.YOLO_V5
        scores_all = rows[:, 5:] * rows[:, 4:5] if v5 else rows[:, 4:]
        classes = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(len(rows)), classes]
        finite = np.isfinite(rows[:, :4]).all(axis=1) & np.isfinite(scores)
        keep = np.flatnonzero(finite & (scores >= SCORE_FLOOR))  # NaN would upset the NMS
        if len(keep) > MAX_CANDIDATES:
            keep = keep[np.argsort(-scores[keep])[:MAX_CANDIDATES]]
        found = []
        for cls in np.unique(classes[keep]).tolist():
            idx = keep[classes[keep] == cls]
            cx, cy, w, h = (rows[idx, k] for k in range(4))
            xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
            chosen = cv2.dnn.NMSBoxes(xywh.tolist(), scores[idx].tolist(), SCORE_FLOOR, NMS_IOU)
            for j in np.asarray(chosen, dtype=int).reshape(-1).tolist():
                x, y, bw, bh = xywh[j].tolist()
                found += self._detection(int(cls), float(scores[idx[j]]), box, x, y, x + bw, y + bh)
        found.sort(key=lambda d: -d.score)
        return found

    def _detr(self, boxes: np.ndarray, logits: np.ndarray, box: Letterbox) -> list[Detection]:
        with np.errstate(over="ignore"):
            probs = 1 / (1 + np.exp(-logits))
        classes = probs.argmax(axis=1)
        scores = probs[np.arange(len(probs)), classes]
        found = []
        s = self._size
        for i in np.flatnonzero(np.isfinite(scores) & (scores >= SCORE_FLOOR)).tolist():
            cx, cy, w, h = (boxes[i] * s).tolist()
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            found += self._detection(int(classes[i]), float(scores[i]), box, x1, y1, x2, y2)
        found.sort(key=lambda d: -d.score)
        return found

    def _detection(
        self, cls: int, score: float, box: Letterbox, x1: float, y1: float, x2: float, y2: float
    ) -> list[Detection]:
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            return []
        b = box.to_image(x1, y1, x2, y2)
        if b.x2 <= b.x1 or b.y2 <= b.y1:  # wholly in the padding
            return []
        return [Detection(self.labels[cls], min(1.0, score), b)]


def to_input(image: Image, box: Letterbox, size: int) -> np.ndarray:
    """The model's input: the image letterboxed at ``box`` in a ``size`` square padded with
    114, RGB, 0–1, ``[1, 3, size, size]`` float32."""
    canvas = np.full((size, size, 3), PAD, np.uint8)
    resized = cv2.resize(image, (box.width, box.height), interpolation=cv2.INTER_LINEAR)
    canvas[box.top : box.top + box.height, box.left : box.left + box.width] = resized
    rgb = canvas[:, :, ::-1].transpose(2, 0, 1)[np.newaxis]
    return rgb.astype(np.float32) / 255


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))


def _first(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] if text else type(e).__name__
