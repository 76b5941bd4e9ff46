"""Detections leave edgerun in one shape for every detector: predict endpoint, run's JSON lines, filters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerun.camera.annotate import class_color, draw_result
from edgerun.camera.pipeline import filtered
from edgerun.cli import main
from edgerun.config import Settings
from edgerun.predictor import ClassificationResult, DetectionResult
from edgerun.processing.classify import Classification
from edgerun.processing.detect import Detection
from edgerun.serving import ModelConfig, ServeConfig, create_app

from .detection_helpers import constant_detector_onnx, ultralytics_metadata, yolov8_head
from .helpers import SAMPLES
from .serving_helpers import ServerThread

DETECTION_KEYS = {"box", "score", "label", "keypoints", "class_id"}


def _result() -> DetectionResult:
    return DetectionResult("m", "cpu", (100, 100), [
        Detection((10, 10, 40, 40), 0.9, "person", (), 0), Detection((50, 50, 90, 90), 0.4, "car", (), 2),
        Detection((5, 60, 30, 95), 0.7, "car", (), 2)])


def test_filters_keep_labels_and_minimum_scores() -> None:
    keep = filtered(lambda rgb: _result(), ["car"], 0.5)
    assert [(d.label, d.score) for d in keep(np.zeros((1, 1, 3), np.uint8)).detections] == [("car", 0.7)]
    unfiltered = filtered(lambda rgb: _result())(np.zeros((1, 1, 3), np.uint8))
    assert len(unfiltered.detections) == 3
    classes = ClassificationResult("m", "cpu", [Classification(1, "cat", 0.8), Classification(2, "dog", 0.1)])
    kept = filtered(lambda rgb: classes, None, 0.5)(np.zeros((1, 1, 3), np.uint8))
    assert [c.label for c in kept.classes] == ["cat"]


def test_boxes_are_drawn_in_their_class_colour() -> None:
    image = draw_result(np.zeros((100, 100, 3), np.uint8), _result())
    assert class_color(0) != class_color(2)
    assert tuple(image[25, 10]) == class_color(0)   # the person box's left edge
    assert tuple(image[75, 90]) == class_color(2)   # the car box's right edge


def test_predict_endpoint_returns_the_same_shape_for_every_detector(tmp_path: Path) -> None:
    head = yolov8_head([(256, 256, 100, 60)], [1], [0.8], 2, anchors=64)
    yolo = constant_detector_onnx(tmp_path / "yolo.onnx", head, (512, 512),
                                  ultralytics_metadata(["person", "car"], (512, 512)))
    config = ServeConfig(settings=Settings(), models=(
        ModelConfig("yolo", path=str(yolo), backend="onnxruntime", threads=1),
        ModelConfig("blazeface", backend="onnxruntime", threads=1)))
    image = (SAMPLES / "astronaut.png").read_bytes()
    with ServerThread(create_app(config)) as server:
        server.wait_ready()
        with server.client() as http:
            bodies = {m: http.post(f"/v1/models/{m}/predict", content=image).json()
                      for m in ("yolo", "blazeface")}
    for body in bodies.values():
        assert set(body) == {"model", "backend", "image_size", "detections", "timings_ms"}
        assert body["image_size"] == [512, 512] and len(body["detections"]) == 1
        assert set(body["detections"][0]) == DETECTION_KEYS
    car = bodies["yolo"]["detections"][0]
    assert (car["label"], car["class_id"], car["box"]) == ("car", 1, [206.0, 226.0, 306.0, 286.0])
    assert bodies["blazeface"]["detections"][0]["label"] == "face"


@pytest.mark.parametrize(("labels", "min_score", "expected"), [("face", "0.5", 1), ("person,car", "0", 0),
                                                                ("face", "0.999", 0)])
def test_run_filters_detections_in_json_lines(clip: Path, tmp_path: Path, labels: str, min_score: str,
                                              expected: int, capsys: pytest.CaptureFixture[str]) -> None:
    lines = tmp_path / "frames.jsonl"
    status = main(["run", "--source", str(clip), "--backend", "onnxruntime", "--threads", "1",
                   "--max-frames", "3", "--json-lines", str(lines),
                   "--labels", labels, "--min-score", min_score])
    assert status == 0
    events = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(events) == 3
    assert all(len(e["detections"]) == expected for e in events)
    for event in events:
        assert all(set(d) == DETECTION_KEYS and d["score"] >= float(min_score) for d in event["detections"])


@pytest.mark.parametrize("bad", [["--min-score", "1.5"], ["--labels", " , "]])
def test_run_refuses_bad_filters(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--source", "x.mp4", *bad])
    assert "error" in capsys.readouterr().err
