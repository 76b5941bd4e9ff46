"""Predictor end to end on the embedded models and the shipped sample images, on both CPU backends."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from edgerun.errors import InvalidInputError, ModelIntegrityError
from edgerun.predictor import ClassificationResult, DetectionResult, Predictor, open_session
from edgerun.repository import ModelRepository

from .helpers import MODELS, REPO, SAMPLES, copy_package, flip_last_byte

TORCH_REFERENCE = json.loads((REPO / "tests" / "data" / "torch_reference.json").read_text())


@pytest.fixture
def classifier(backend_name: str) -> Any:
    with Predictor.open("mobilenet_v2", backend=backend_name) as predictor:
        yield predictor


def test_chelsea_is_an_egyptian_cat(classifier: Predictor) -> None:
    result = classifier.predict(SAMPLES / "chelsea.png")
    assert isinstance(result, ClassificationResult)
    assert result.classes[0].label == "Egyptian cat"
    assert result.classes[0].score == pytest.approx(0.714, abs=0.01)
    assert set(result.timings_ms) == {"decode", "preprocess", "infer", "postprocess"}


@pytest.mark.parametrize("image_name", sorted(TORCH_REFERENCE))
def test_labels_and_probabilities_match_torchvision_reference(classifier: Predictor, image_name: str) -> None:
    reference = TORCH_REFERENCE[image_name]["top5"]
    result = classifier.predict(SAMPLES / image_name, top_k=1000)
    assert (result.classes[0].index, result.classes[0].label) == tuple(reference[0][:2])
    by_index = {c.index: c for c in result.classes}
    for index, label, probability in reference:
        assert by_index[index].label == label
        assert by_index[index].score == pytest.approx(probability, abs=2e-3)


def test_both_backends_agree_on_fp32_probabilities() -> None:
    image = SAMPLES / "chelsea.png"
    scores = {}
    for backend in ("onnxruntime", "litert"):
        with Predictor.open("mobilenet_v2", backend=backend) as predictor:
            result = predictor.predict(image, top_k=1000)
            scores[backend] = np.array([c.score for c in sorted(result.classes, key=lambda c: c.index)])
    assert np.max(np.abs(scores["onnxruntime"] - scores["litert"])) < 1e-3


def test_int8_classifier_quantizes_inputs_and_dequantizes_outputs() -> None:
    with Predictor.open("mobilenet_v2_int8", backend="litert") as predictor:
        spec = predictor.session.input_specs[0]
        assert spec.dtype == np.int8 and spec.quantization is not None
        result = predictor.predict(SAMPLES / "chelsea.png")
    assert result.classes[0].label == "Egyptian cat"


def test_blazeface_finds_the_astronauts_face(backend_name: str) -> None:
    with Predictor.open("blazeface", backend=backend_name) as predictor:
        result = predictor.predict(SAMPLES / "astronaut.png")
    assert isinstance(result, DetectionResult) and result.image_size == (512, 512)
    assert len(result.detections) == 1
    face = result.detections[0]
    assert face.label == "face" and face.score > 0.85
    x0, y0, x1, y1 = face.box
    assert abs(x0 - 179) < 8 and abs(x1 - 271) < 8 and abs(y0 - 82) < 8 and abs(y1 - 175) < 8
    assert len(face.keypoints) == 6
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.keypoints[:4])


def test_blazeface_finds_no_face_on_a_cup_of_coffee() -> None:
    with Predictor.open("blazeface") as predictor:
        assert predictor.predict(SAMPLES / "coffee.png").detections == []


def test_arrays_and_grayscale_images_are_accepted(classifier: Predictor) -> None:
    from edgerun.processing.image import decode_image

    rgb = decode_image(SAMPLES / "chelsea.png")
    assert classifier.predict(rgb).classes[0].label == "Egyptian cat"
    gray = rgb.mean(axis=2).astype(np.uint8)
    assert classifier.predict(gray).classes  # a single channel becomes three


def test_raw_session_stays_available(classifier: Predictor) -> None:
    inputs, _ = classifier.preprocess(np.zeros((300, 300, 3), np.uint8))
    outputs = classifier.session.infer(inputs)
    assert next(iter(outputs.values())).shape[-1] == 1000


def test_raw_model_files_have_no_pipeline() -> None:
    package, selection, session = open_session(MODELS / "mobilenet_v2" / "mobilenet_v2.onnx")
    with session, pytest.raises(InvalidInputError, match="no image pipeline"):
        Predictor(package, session, selection)


def test_checksum_is_verified_before_loading(tmp_path: Any) -> None:
    folder = copy_package("blazeface", tmp_path)
    flip_last_byte(folder / "blazeface.onnx")
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        Predictor.open("blazeface", backend="onnxruntime", repository=ModelRepository((tmp_path,)))
