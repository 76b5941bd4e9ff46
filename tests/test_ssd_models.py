"""Real TFLite SSD models (tests/data, built by scripts/make_ssd_test_models.py): LiteRT's own
TFLite_Detection_PostProcess kernel against edgerun's raw SSD decoder, through the Predictor and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgerun.backends.base import LoadOptions
from edgerun.cli import main
from edgerun.config import Settings
from edgerun.predictor import Predictor, open_session, real_outputs
from edgerun.processing import image as img
from edgerun.processing.decoders import Decoder

from .helpers import REPO

DATA = REPO / "tests" / "data"
RAW, POSTPROCESSED = DATA / "ssd_raw_tiny.tflite", DATA / "ssd_postprocess_tiny.tflite"
# the settings the post-processing op was built with: sigmoid scores, fast (class-agnostic) NMS
MATCHING = {"kind": "ssd", "score_threshold": 0.3, "iou_threshold": 0.6, "max_detections": 10,
            "class_agnostic": True}


def _outputs(model: Path) -> list[tuple[str, np.ndarray]]:
    _, _, session = open_session(model, backend="litert", options=LoadOptions(threads=1), settings=Settings())
    try:
        image = np.zeros((1, 300, 300, 3), np.float32)
        return real_outputs(session.output_specs, session.infer({session.input_specs[0].name: image}))
    finally:
        session.close()


def test_litert_postprocess_op_agrees_with_edgerun_raw_ssd_decoder() -> None:
    geometry = img.Geometry()
    fused = Decoder.from_postprocess({"kind": "ssd_postprocess", "score_threshold": 0.3}, [], ())
    mine = Decoder.from_postprocess(MATCHING, [], ())
    from_op = fused(_outputs(POSTPROCESSED), (300, 300), geometry, 300, 300)
    from_raw = mine(_outputs(RAW), (300, 300), geometry, 300, 300)
    assert len(from_op) == 5
    assert [d.class_id for d in from_op] == [d.class_id for d in from_raw] == [0, 1, 2, 0, 1]
    np.testing.assert_allclose([d.score for d in from_op], [d.score for d in from_raw], atol=1e-3)
    np.testing.assert_allclose([d.box for d in from_op], [d.box for d in from_raw], atol=0.15)


def test_the_four_outputs_are_found_whatever_their_names_and_order() -> None:
    outputs = _outputs(POSTPROCESSED)
    assert [name for name, _ in outputs] != sorted(name for name, _ in outputs)  # not in TF1 order
    decoder = Decoder.from_postprocess({"kind": "ssd_postprocess"}, [], ())
    assert [d.score for d in decoder(outputs, (300, 300), img.Geometry(), 300, 300)][:2] == [0.9820, 0.9526]


def test_predict_on_a_bare_ssd_tflite_file_letterboxes_and_maps_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = tmp_path / "wide.png"
    Image.fromarray(np.full((300, 600, 3), 50, np.uint8)).save(picture)
    assert main(["predict", str(picture), "--model", str(POSTPROCESSED), "--backend", "litert",
                 "--task", "detect", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_size"] == [600, 300]
    # 600x300 letterboxed into 300x300: scale 0.5, 75 px of border above and below
    geometry = img.Geometry(0.5, 0.5, 0.0, 75.0)
    expected = Decoder.from_postprocess({"kind": "ssd_postprocess"}, [], ())(
        _outputs(POSTPROCESSED), (300, 300), geometry, 600, 300)
    assert [d["class_id"] for d in result["detections"]] == [d.class_id for d in expected]
    np.testing.assert_allclose([d["box"] for d in result["detections"]], [d.box for d in expected], atol=0.11)
    with Predictor.open(POSTPROCESSED, backend="litert", settings=Settings(), task="auto") as predictor:
        assert predictor.task == "detection" and predictor.decoder is not None
        assert predictor.decoder.kind == "ssd_postprocess" and predictor.pre.resize == "letterbox"


def test_a_fully_quantised_ssd_decodes_like_the_float_one() -> None:
    quantised = DATA / "ssd_raw_int8_tiny.tflite"
    picture = np.full((300, 300, 3), 127, np.uint8)
    with Predictor.open(quantised, backend="litert", settings=Settings(), task="detection") as predictor:
        specs = predictor.session.output_specs
        assert all(s.dtype == np.int8 and s.quantization is not None for s in specs)
        assert predictor.session.input_specs[0].dtype == np.uint8
        np.testing.assert_allclose(predictor.pre.mean, [0.5] * 3, atol=0.01)  # [0, 255] -> about [-1, 1]
        found = predictor.predict(picture).detections
    with Predictor.open(RAW, backend="litert", settings=Settings(), task="detection") as predictor:
        expected = predictor.predict(picture).detections
    assert len(found) == len(expected) == 5
    assert [d.class_id for d in found] == [d.class_id for d in expected]
    np.testing.assert_allclose([d.score for d in found], [d.score for d in expected], atol=0.02)
    np.testing.assert_allclose([d.box for d in found], [d.box for d in expected], atol=1.5)
