"""Detector plugins and their model files: MobileNet-SSD on real footage, the ONNX plugin's
output layouts on tiny constant models, loading checks and the set-up's fetch (no download)."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vms.detect import fetch, models
from vms.detect.detector import Detection, Detector
from vms.detect.onnx_detector import Letterbox, OnnxDetector, to_input
from vms.detect.ssd import SCORE_FLOOR, preprocess
from vms.detection_config import DetectionConfig, ModelKind, OnnxModelConfig, OnnxOutput
from vms.errors import Kind, VmsError
from vms.events.model import Box
from vms.standin.footage import default_cache_dir, footage_clip

CLASSES = ["person", "car", "dog"]


# --- the real MobileNet-SSD -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ssd_dir() -> Path:
    directory = models.model_dir(DetectionConfig())
    if not fetch.present(directory):
        pytest.fail(f"{directory}: MobileNet-SSD files missing; run ./dev setup")
    return directory


@pytest.fixture(scope="module")
def ssd(ssd_dir: Path) -> Detector:
    return models.load(DetectionConfig(model_dir=ssd_dir))()


@pytest.fixture(scope="module")
def middle_second(request: pytest.FixtureRequest) -> list[np.ndarray]:
    """The frames of the footage's middle second, BGR. The clip (a re-encode of OpenCV's sample,
    read-only here) is kept in pytest's cache: making it takes 15-25 s."""
    clip = footage_clip(default_cache_dir())
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        fps = round(float(stream.average_rate or 10))
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    middle = len(frames) // 2
    return frames[middle : middle + fps]


def test_ssd_finds_people_in_real_footage(ssd: Detector, middle_second: list[np.ndarray]) -> None:
    found = [d for frame in middle_second for d in ssd.detect(frame)]
    assert found
    for d in found:
        assert 0 <= d.box.x1 < d.box.x2 <= 1 and 0 <= d.box.y1 < d.box.y2 <= 1
        assert SCORE_FLOOR <= d.score <= 1 and d.label in ssd.labels
    people = [d for d in found if d.label == "person" and d.score >= 0.5]
    assert people, sorted((d.label, round(d.score, 2)) for d in found)
    height, width = middle_second[0].shape[:2]
    for d in people:  # walking people: taller than wide, in pixels (axes not swapped)
        assert (d.box.y2 - d.box.y1) * height > (d.box.x2 - d.box.x1) * width
    # Scores under the prototxt's own 0.25 cut come out too: the tracker needs them.
    assert min(d.score for d in found) < 0.25


def test_ssd_sees_no_person_in_a_grey_picture(ssd: Detector) -> None:
    grey = np.full((300, 300, 3), 128, np.uint8)
    assert not [d for d in ssd.detect(grey) if d.label == "person" and d.score >= 0.5]


def test_ssd_factory_gives_each_thread_its_own_net(ssd_dir: Path) -> None:
    factory = models.load(DetectionConfig(model_dir=ssd_dir))
    a, b = factory(), factory()
    assert a is not b and not a.thread_safe
    assert a.input_size == (300, 300) and "person" in a.labels


def test_ssd_input_is_bgr_scaled_to_plus_minus_one() -> None:
    image = np.zeros((150, 600, 3), np.uint8)
    image[:, :, 2] = 255  # red, in BGR
    image[:, :300, 1] = 51  # some green on the left half
    blob = preprocess(image)
    assert blob.shape == (1, 3, 300, 300) and blob.dtype == np.float32
    np.testing.assert_allclose(blob[0, 0], -1.0)
    np.testing.assert_allclose(blob[0, 2], 1.0)
    np.testing.assert_allclose(blob[0, 1, :, :150], (51 - 127.5) / 127.5, rtol=1e-6)
    np.testing.assert_allclose(blob[0, 1, :, 150:], -1.0)


def test_ssd_rejects_a_picture_that_is_not_bgr(ssd: Detector) -> None:
    with pytest.raises(VmsError) as e:
        ssd.detect(np.zeros((300, 300), np.uint8))
    assert e.value.kind is Kind.INVALID_ARGUMENT


# --- loading checks ---------------------------------------------------------------------------


def test_load_names_the_missing_model_dir(tmp_path: Path) -> None:
    missing = tmp_path / "no-models"
    with pytest.raises(VmsError) as e:
        models.load(DetectionConfig(model_dir=missing))
    assert e.value.kind is Kind.NOT_FOUND
    assert str(missing) in str(e.value) and "./dev setup" in str(e.value)


def test_load_refuses_a_corrupted_caffemodel(ssd_dir: Path, tmp_path: Path) -> None:
    for name in models.SSD_FILES:
        shutil.copy(ssd_dir / name, tmp_path / name)
    weights = tmp_path / models.SSD_CAFFEMODEL
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    weights.write_bytes(bytes(data))
    with pytest.raises(VmsError) as e:
        models.load(DetectionConfig(model_dir=tmp_path))
    assert e.value.kind is Kind.CORRUPT and str(weights) in str(e.value)


def test_model_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(models.MODEL_DIR_ENV, str(tmp_path / "env"))
    assert models.model_dir(DetectionConfig(model_dir=tmp_path / "cfg")) == tmp_path / "cfg"
    assert models.model_dir(DetectionConfig()) == tmp_path / "env"
    monkeypatch.delenv(models.MODEL_DIR_ENV)
    assert models.model_dir(DetectionConfig()) == Path.home() / ".cache/vms/models"


def onnx_config(
    path: Path, output: OnnxOutput = OnnxOutput.YOLO, size: int = 320
) -> DetectionConfig:
    return DetectionConfig(
        model=ModelKind.ONNX,
        onnx=OnnxModelConfig(path=path, classes=CLASSES, input_size=size, output=output),
    )


def test_load_refuses_a_truncated_onnx_model(tmp_path: Path) -> None:
    path = constant_model(tmp_path / "full.onnx", 320, [v8_output([[160, 160, 80, 40, 0.9, 0, 0]])])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VmsError) as e:
        models.load(onnx_config(path))
    assert e.value.kind is Kind.CORRUPT and str(path) in str(e.value)


def test_load_names_a_missing_onnx_model(tmp_path: Path) -> None:
    with pytest.raises(VmsError) as e:
        models.load(onnx_config(tmp_path / "absent.onnx"))
    assert e.value.kind is Kind.NOT_FOUND and "absent.onnx" in str(e.value)


def test_onnx_factory_shares_one_session(tmp_path: Path) -> None:
    path = constant_model(tmp_path / "m.onnx", 320, [v8_output([[160, 160, 80, 40, 0.9, 0, 0]])])
    factory = models.load(onnx_config(path))
    assert factory() is factory() and factory().thread_safe


# --- the ONNX plugin on tiny constant models -------------------------------------------------


def constant_model(path: Path, size: int, outputs: Sequence[tuple[str, np.ndarray]]) -> Path:
    """A model taking a [1, 3, size, size] image whose outputs are constants (+ 0 × the mean of
    the image, so the image really flows through the graph)."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    graph_outputs = []
    for name, value in outputs:
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_const"))
        nodes.append(helper.make_node("Add", [f"{name}_const", "nothing"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape))
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        graph_outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def v5_output(rows: list[list[float]]) -> tuple[str, np.ndarray]:
    return "output0", np.array([rows], np.float32)  # [1, N, 5 + C]


def v8_output(rows: list[list[float]]) -> tuple[str, np.ndarray]:
    return "output0", np.array([rows], np.float32).transpose(0, 2, 1)  # [1, 4 + C, N]


def detector(path: Path, output: OnnxOutput = OnnxOutput.YOLO, size: int = 320) -> OnnxDetector:
    cfg = onnx_config(path, output, size).onnx
    assert cfg is not None
    return OnnxDetector(cfg, path.read_bytes())


def summary(found: list[Detection]) -> list[tuple[str, float, list[float]]]:
    return [(d.label, round(d.score, 4), d.box.to_json()) for d in found]


# A 640×320 picture in a 320 input: scaled by 0.5 to 320×160, 80 rows of padding on top. An input
# box x 120–200, y 140–180 is the picture's x 0.375–0.625, y (140-80)/160–(180-80)/160.
WIDE = np.zeros((320, 640, 3), np.uint8)
WIDE_BOX = [0.375, 0.375, 0.625, 0.625]


def test_letterbox_geometry() -> None:
    assert Letterbox.fit(640, 320, 320) == Letterbox(0, 80, 320, 160)
    assert Letterbox.fit(100, 400, 320) == Letterbox(120, 0, 80, 320)
    assert Letterbox.fit(640, 320, 320).to_image(120, 140, 200, 180) == Box(*WIDE_BOX)


def test_onnx_input_is_letterboxed_rgb_in_zero_one() -> None:
    image = np.zeros((320, 640, 3), np.uint8)
    image[:, :, 2] = 255  # red, in BGR
    blob = to_input(image, Letterbox.fit(640, 320, 320), 320)
    assert blob.shape == (1, 3, 320, 320) and blob.dtype == np.float32
    picture, pad = blob[0, :, 80:240], np.concatenate([blob[0, :, :80], blob[0, :, 240:]], 1)
    np.testing.assert_allclose(picture[0], 1.0)  # R first
    np.testing.assert_allclose(picture[1:], 0.0)
    np.testing.assert_allclose(pad, 114 / 255, rtol=1e-6)


def test_yolo_v5_scores_nms_per_class_and_letterbox(tmp_path: Path) -> None:
    rows = [
        [160, 160, 80, 40, 0.9, 0.1, 0.8, 0.1],  # car 0.72
        [162, 161, 80, 40, 0.9, 0.1, 0.7, 0.1],  # car 0.63, overlaps the first: suppressed
        [160, 160, 80, 40, 0.9, 0.5, 0.1, 0.1],  # person 0.45 on the same box: another class
        [40, 40, 20, 20, 0.05, 0.9, 0.1, 0.1],  # 0.045: under the floor
        [20, 20, 10, 10, 0.9, 0.1, 0.1, 0.9],  # dog, wholly in the top padding: dropped
    ]
    d = detector(constant_model(tmp_path / "v5.onnx", 320, [v5_output(rows)]))
    assert summary(d.detect(WIDE)) == [("car", 0.72, WIDE_BOX), ("person", 0.45, WIDE_BOX)]


def test_yolo_v8_layout_without_objectness(tmp_path: Path) -> None:
    rows = [
        [160, 160, 80, 40, 0.1, 0.2, 0.85],  # dog 0.85
        [240, 200, 40, 80, 0.6, 0.1, 0.1],  # person 0.6, x 220–260, y 160–240 → see below
    ]
    d = detector(constant_model(tmp_path / "v8.onnx", 320, [v8_output(rows)]))
    assert summary(d.detect(WIDE)) == [
        ("dog", 0.85, WIDE_BOX),
        ("person", 0.6, [0.6875, 0.5, 0.8125, 1.0]),
    ]


def test_yolo_v8_with_many_anchors(tmp_path: Path) -> None:
    rows = [[float(i % 300), 100.0, 10.0, 10.0, 0.0, 0.0, 0.05] for i in range(2100)]
    rows[1234] = [100.0, 150.0, 20.0, 40.0, 0.0, 0.95, 0.0]  # car in a tall [1, 7, 2100] output
    d = detector(constant_model(tmp_path / "v8-many.onnx", 320, [v8_output(rows)]))
    square = np.zeros((200, 200, 3), np.uint8)
    assert summary(d.detect(square)) == [("car", 0.95, [0.2812, 0.4062, 0.3438, 0.5312])]


def test_detr_boxes_and_sigmoid_logits(tmp_path: Path) -> None:
    boxes = np.array([[[0.5, 0.5, 0.25, 0.125], [0.1, 0.5, 0.1, 0.1], [0.5, 0.9, 0.1, 0.1]]])
    logits = np.array([[[-5.0, 2.0, -5.0], [-9.0, -9.0, -9.0], [0.0, -9.0, -9.0]]])
    path = constant_model(tmp_path / "detr.onnx", 320, [("logits", logits), ("pred_boxes", boxes)])
    d = detector(path, OnnxOutput.DETR)
    # Query 0: car, sigmoid(2) = 0.8808, input box x 120–200, y 140–180 (WIDE_BOX).
    # Query 1: every logit -9 (score 0.0001): dropped. Query 2: person 0.5 at input y 272–304,
    # x 144–176: picture y (272-80)/160–(304-80)/160 = 1.2–1.4 → clipped to nothing: dropped.
    assert summary(d.detect(WIDE)) == [("car", 0.8808, WIDE_BOX)]
    tall = np.zeros((640, 320, 3), np.uint8)  # 160×320 at x 80: box x (120-80)/160…
    assert summary(d.detect(tall))[0] == ("car", 0.8808, [0.25, 0.4375, 0.75, 0.5625])


@pytest.mark.parametrize(
    ("output", "outputs"),
    [
        (OnnxOutput.YOLO, [("output0", np.zeros((1, 10, 9), np.float32))]),
        (OnnxOutput.YOLO, [("output0", np.zeros((2, 20, 8), np.float32))]),
        (OnnxOutput.DETR, [("output0", np.zeros((1, 10, 4), np.float32))]),
        (
            OnnxOutput.DETR,
            [("logits", np.zeros((1, 10, 3), np.float32)), ("boxes", np.zeros((1, 9, 4)))],
        ),
    ],
)
def test_onnx_outputs_of_no_known_layout_are_refused(
    tmp_path: Path, output: OnnxOutput, outputs: list[tuple[str, np.ndarray]]
) -> None:
    path = constant_model(tmp_path / "odd.onnx", 320, outputs)
    with pytest.raises(VmsError) as e:
        models.load(onnx_config(path, output))
    assert e.value.kind is Kind.INVALID_ARGUMENT
    assert str(path) in str(e.value) and str(list(outputs[0][1].shape)) in str(e.value)


def test_onnx_input_size_must_match_the_model(tmp_path: Path) -> None:
    path = constant_model(tmp_path / "m.onnx", 320, [v8_output([[1, 1, 1, 1, 0, 0, 0]])])
    with pytest.raises(VmsError) as e:
        models.load(onnx_config(path, size=640))
    assert e.value.kind is Kind.INVALID_ARGUMENT and "640" in str(e.value)


# --- the set-up's fetch ----------------------------------------------------------------------


def make_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(fetch.MEMBERS[name], data)
    return path


def test_fetch_refuses_a_wheel_with_wrong_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = make_wheel(
        tmp_path / "cam2text-0.1.1-py3-none-any.whl", {n: b"nope" for n in fetch.MEMBERS}
    )
    dest = tmp_path / "models"
    with pytest.raises(VmsError) as e:
        fetch.fetch(dest, wheel)
    assert e.value.kind is Kind.CORRUPT and "SHA-256" in str(e.value)
    assert "MobileNetSSD_deploy" in str(e.value)
    assert not dest.exists() or not list(dest.iterdir())
    assert fetch.main(["--dir", str(dest), "--wheel", str(wheel)]) == 1
    assert "model fetch failed" in capsys.readouterr().err


def test_fetch_refuses_a_file_that_is_no_wheel(tmp_path: Path) -> None:
    bogus = tmp_path / "cam2text.whl"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(VmsError) as e:
        fetch.fetch(tmp_path / "models", bogus)
    assert e.value.kind is Kind.CORRUPT and str(bogus) in str(e.value)
    empty = make_wheel(tmp_path / "empty.whl", {})
    with pytest.raises(VmsError, match="has no cam2text/models/"):
        fetch.fetch(tmp_path / "models", empty)


def test_fetch_writes_the_files_from_a_good_wheel(ssd_dir: Path, tmp_path: Path) -> None:
    files = {name: (ssd_dir / name).read_bytes() for name in fetch.MEMBERS}
    wheel = make_wheel(tmp_path / "cam2text-0.1.1-py3-none-any.whl", files)
    dest = tmp_path / "models"
    written = fetch.fetch(dest, wheel)
    assert sorted(p.name for p in written) == sorted(models.SSD_FILES)
    assert sorted(p.name for p in dest.iterdir()) == sorted(models.SSD_FILES)  # no temp left
    assert fetch.present(dest)
    # One file spoilt: only that one is written again.
    (dest / models.SSD_PROTOTXT).write_bytes(b"spoilt")
    assert fetch.fetch(dest, wheel) == [dest / models.SSD_PROTOTXT]
    assert fetch.present(dest)


def test_fetch_does_nothing_when_the_files_are_there(ssd_dir: Path, tmp_path: Path) -> None:
    before = {name: (ssd_dir / name).stat().st_mtime_ns for name in models.SSD_FILES}
    absent = tmp_path / "absent.whl"  # were it needed, the fetch would fail on it
    assert fetch.fetch(ssd_dir, absent) == []
    assert fetch.main(["--dir", str(ssd_dir), "--wheel", str(absent)]) == 0
    assert before == {name: (ssd_dir / name).stat().st_mtime_ns for name in models.SSD_FILES}


def test_fetch_reports_a_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pip with no index and nothing to find fails at once, offline.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(VmsError) as e:
        fetch.fetch(tmp_path / "models")
    assert e.value.kind is Kind.UNAVAILABLE
    assert "pip download cam2text==0.1.1 failed" in str(e.value)
