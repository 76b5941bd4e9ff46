"""Detectors people bring: Ultralytics metadata end to end through the CLI, models import, TFLite labels."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgerun.cli import main
from edgerun.errors import ModelIntegrityError
from edgerun.modelmeta import hints_from_file, onnx_metadata, parse_labels
from edgerun.repository import load_package, package_from_file

from .detection_helpers import constant_detector_onnx, ultralytics_metadata, yolov8_head
from .helpers import MODELS

NAMES = ["person", "bicycle", "car"]


@pytest.fixture
def yolo_file(tmp_path: Path) -> Path:
    """A 64x96 (h x w) Ultralytics-style detector: a car at input (40..56, 24..40) and a person."""
    head = yolov8_head([(48, 32, 16, 16), (30, 50, 8, 12), (49, 32, 16, 16)], [2, 0, 2], [0.9, 0.6, 0.5], 3)
    return constant_detector_onnx(tmp_path / "yolov8n.onnx", head, (64, 96),
                                  ultralytics_metadata(NAMES, (64, 96)))


@pytest.fixture
def tall_image(tmp_path: Path) -> Path:
    """96 x 128 (w x h): letterboxed into 96 x 64 at scale 0.5, 24 px of border left and right."""
    path = tmp_path / "tall.png"
    Image.fromarray(np.full((128, 96, 3), 90, dtype=np.uint8)).save(path)
    return path


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_onnx_metadata_props_are_read_without_loading_the_graph(yolo_file: Path) -> None:
    props = onnx_metadata(yolo_file)
    assert props["task"] == "detect" and props["imgsz"] == "[64, 96]"
    hints = hints_from_file(yolo_file)
    assert (hints.task, hints.labels, hints.input_size) == ("detection", tuple(NAMES), (64, 96))
    assert hints.postprocess == {"kind": "yolov8"}


def test_predict_on_a_bare_ultralytics_file_uses_its_labels_size_and_letterbox(
        yolo_file: Path, tall_image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tall_image), "--model", str(yolo_file), "--json"]) == 0
    result = _json_out(capsys)
    assert result["image_size"] == [96, 128]
    # input x 40..56 -> source (x - 24) / 0.5 = 32..64; input y 24..40 -> 48..80
    car, person = result["detections"]
    assert (car["label"], car["score"], car["class_id"]) == ("car", 0.9, 2)
    np.testing.assert_allclose(car["box"], [32, 48, 64, 80], atol=0.1)
    assert person["label"] == "person"
    np.testing.assert_allclose(person["box"], [4, 88, 20, 112], atol=0.1)


def test_names_are_parsed_as_a_literal_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "evaluated"
    meta = ultralytics_metadata(NAMES, (64, 64))
    meta["names"] = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    model = constant_detector_onnx(tmp_path / "evil.onnx", yolov8_head([], [], [], 3), (64, 64), meta)
    with pytest.raises(ModelIntegrityError, match="not a literal"):
        hints_from_file(model)
    assert not marker.exists()


def test_models_import_writes_a_package_that_predicts_the_same(
        yolo_file: Path, tall_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "packages"
    assert main(["models", "import", str(yolo_file), "-o", str(out), "--name", "coco_detector"]) == 0
    assert "task detection yolov8, 3 label(s)" in capsys.readouterr().out
    package = load_package(out / "coco_detector")
    assert package.labels == tuple(NAMES) and package.postprocess["kind"] == "yolov8"
    assert package.preprocess is not None and package.preprocess.pad_value == 114
    assert package.artifacts[0].sha256 is not None and package.artifacts[0].layout == "NCHW"
    assert main(["predict", str(tall_image), "--model", str(out / "coco_detector"), "--json"]) == 0
    from_package = _json_out(capsys)["detections"]
    assert main(["predict", str(tall_image), "--model", str(yolo_file), "--json"]) == 0
    assert _json_out(capsys)["detections"] == from_package


def test_task_detect_uses_an_installed_coco_detector_package(
        yolo_file: Path, tall_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tall_image), "--task", "detect"]) == 1
    assert "'coco_detector', which is not installed" in capsys.readouterr().err
    assert main(["models", "import", str(yolo_file), "-o", str(tmp_path), "--name", "coco_detector"]) == 0
    monkeypatch.setenv("EDGERUN_MODEL_PATH", str(tmp_path))
    capsys.readouterr()
    assert main(["predict", str(tall_image), "--task", "detect"]) == 0
    assert "car 0.900" in capsys.readouterr().out


def test_import_with_a_labels_file_and_task_for_a_file_without_metadata(
        tmp_path: Path, tall_image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = constant_detector_onnx(tmp_path / "plain.onnx", yolov8_head([(48, 32, 16, 16)], [1], [0.8], 2),
                                   (64, 96))
    labels = tmp_path / "labels.txt"
    labels.write_text("0 cat\n1 dog\n")
    assert main(["predict", str(tall_image), "--model", str(plain), "--json"]) == 0
    assert [d["label"] for d in _json_out(capsys)["detections"]] == ["1"]  # found from outputs, no labels
    assert main(["models", "import", str(plain), "--labels", str(labels), "--task", "detect",
                 "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tall_image), "--model", str(tmp_path / "out" / "plain"), "--json"]) == 0
    assert [d["label"] for d in _json_out(capsys)["detections"]] == ["dog"]


def test_import_refuses_a_missing_file_and_a_non_empty_target(yolo_file: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "import", str(tmp_path / "nope.onnx")]) == 1
    assert capsys.readouterr().err.startswith("edgerun: error: ")
    (tmp_path / "yolov8n").mkdir()
    (tmp_path / "yolov8n" / "keep.txt").write_text("x")
    assert main(["models", "import", str(yolo_file), "-o", str(tmp_path)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_a_label_file_zipped_into_a_tflite_model_is_found(tmp_path: Path) -> None:
    model = tmp_path / "face.tflite"
    shutil.copyfile(MODELS / "blazeface" / "blazeface.tflite", model)
    with zipfile.ZipFile(model, "a") as archive:  # how the TFLite metadata writer packs associated files
        archive.writestr("labelmap.txt", "???\nface\n")
    assert hints_from_file(model).labels == ("???", "face")
    package = package_from_file(model, "auto")
    assert package.labels == ("???", "face") and package.task == "auto"


def test_ultralytics_metadata_json_zipped_into_a_tflite_model(tmp_path: Path) -> None:
    model = tmp_path / "yolo_float32.tflite"
    shutil.copyfile(MODELS / "blazeface" / "blazeface.tflite", model)
    meta = {"task": "detect", "names": {"0": "person", "1": "car"}, "imgsz": [320, 320], "stride": 32,
            "author": "Ultralytics"}
    with zipfile.ZipFile(model, "a") as archive:
        archive.writestr("metadata.json", json.dumps(meta))
    hints = hints_from_file(model)
    assert (hints.task, hints.labels, hints.input_size) == ("detection", ("person", "car"), (320, 320))


def test_label_files_with_ids_fill_the_gaps() -> None:
    assert parse_labels("0  person\n2 car\n") == ("person", "", "car")
    assert parse_labels("person\n\ncar\n") == ("person", "car")


@pytest.mark.parametrize("content", [b"", b"this is not an onnx model"])
def test_an_unreadable_file_has_no_hints_and_stays_raw(tmp_path: Path, content: bytes) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(content)
    assert hints_from_file(broken).task is None
    assert package_from_file(broken).task == "raw"
