"""Detection decoders on hand-built tensors with known answers: YOLO, SSD, NMS, geometry, quantisation."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.errors import ModelIntegrityError
from edgerun.predictor import default_preprocess, real_outputs
from edgerun.processing import image as img
from edgerun.processing.decoders import Decoder, class_aware_nms, detect_family
from edgerun.processing.decoders.ssd import SsdParams, grid_anchors, match_postprocess_outputs
from edgerun.types import Quantization, TensorSpec

from .detection_helpers import yolov8_head

LABELS = ("person", "car", "dog")


def _decoder(post: dict, specs: list[TensorSpec] | None = None, labels: tuple[str, ...] = LABELS) -> Decoder:
    return Decoder.from_postprocess(post, specs or [], labels)


def _found(post: dict, outputs: list[tuple[str, np.ndarray]], input_hw: tuple[int, int] = (64, 64)) -> list:
    """Decoded with an identity geometry on a source the size of the input."""
    return _decoder(post)(outputs, input_hw, img.Geometry(), input_hw[1], input_hw[0])


def test_yolov8_channels_first_and_transposed_give_the_same_boxes_with_class_aware_nms() -> None:
    # two overlapping cars (the weaker is suppressed), a dog on top of them (other class: kept)
    head = yolov8_head([(32, 32, 16, 8), (33, 32, 16, 8), (32, 32, 16, 8), (10, 10, 4, 4)],
                       [1, 1, 2, 0], [0.9, 0.8, 0.7, 0.1], 3)
    decoder = _decoder({"kind": "yolov8"})
    first = decoder([("out", head)], (64, 64), img.Geometry(), 64, 64)
    transposed = decoder([("out", head.transpose(0, 2, 1).copy())], (64, 64), img.Geometry(), 64, 64)
    assert [(d.label, d.score, d.box) for d in first] == [("car", 0.9, (24.0, 28.0, 40.0, 36.0)),
                                                          ("dog", 0.7, (24.0, 28.0, 40.0, 36.0))]
    assert first == transposed
    agnostic = _decoder({"kind": "yolov8", "class_agnostic": True})
    assert [d.label for d in agnostic([("out", head)], (64, 64), img.Geometry(), 64, 64)] == ["car"]


def test_yolov8_score_threshold_and_max_detections() -> None:
    boxes = [(8.0 + 12 * i, 8.0, 8.0, 8.0) for i in range(5)]
    head = yolov8_head(boxes, [0] * 5, [0.9, 0.8, 0.7, 0.6, 0.5], 3)
    found = _found({"kind": "yolov8", "score_threshold": 0.55}, [("o", head)])
    assert [d.score for d in found] == [0.9, 0.8, 0.7, 0.6]
    capped = _found({"kind": "yolov8", "max_detections": 2}, [("o", head)])
    assert [d.score for d in capped] == [0.9, 0.8]


def test_letterbox_geometry_maps_boxes_back_to_a_non_square_source() -> None:
    source = np.zeros((300, 600, 3), dtype=np.uint8)  # 600 wide, 300 high -> 320x160 inside 320x320
    _, geometry = img.letterbox(source, 320, 320, 114)
    assert (geometry.scale_x, geometry.offset_x, geometry.offset_y) == (320 / 600, 0, 80)
    # a box at input x 100..140, y 120..160 -> source x 187.5..262.5, y 75..150
    head = yolov8_head([(120, 140, 40, 40)], [0], [0.9], 3)
    found = _decoder({"kind": "yolov8"})([("o", head)], (320, 320), geometry, 600, 300)
    np.testing.assert_allclose(found[0].box, (187.5, 75.0, 262.5, 150.0), atol=0.05)
    # the same box from a stretched input: each axis scales on its own
    _, stretched = img.stretch(source, 320, 320)
    found = _decoder({"kind": "yolov8"})([("o", head)], (320, 320), stretched, 600, 300)
    np.testing.assert_allclose(found[0].box, (187.5, 112.5, 262.5, 150.0), atol=0.05)


def test_boxes_in_the_letterbox_border_are_dropped_and_others_clipped() -> None:
    _, geometry = img.letterbox(np.zeros((32, 64, 3), np.uint8), 64, 64)  # picture rows 16..48
    head = yolov8_head([(32, 4, 8, 6), (60, 46, 12, 12)], [0, 1], [0.9, 0.8], 3)
    found = _decoder({"kind": "yolov8"})([("o", head)], (64, 64), geometry, 64, 32)
    assert [(d.label, d.box) for d in found] == [("car", (54.0, 24.0, 64.0, 32.0))]


def test_yolov8_normalised_boxes_from_tflite_exports_are_scaled_to_the_input() -> None:
    head = yolov8_head([(0.5, 0.25, 0.25, 0.125)], [1], [0.9], 3)
    found = _decoder({"kind": "yolov8"})([("o", head)], (64, 128), img.Geometry(), 128, 64)
    assert found[0].box == (48.0, 12.0, 80.0, 20.0)


def test_yolov5_multiplies_objectness_into_class_scores() -> None:
    rows = np.zeros((1, 6, 8), dtype=np.float32)
    rows[0, 0] = [32, 32, 16, 16, 0.9, 0.1, 0.8, 0.1]   # car 0.72
    rows[0, 1] = [10, 10, 4, 4, 0.3, 0.9, 0.0, 0.0]     # person 0.27: under 0.5
    rows[0, 2] = [50, 50, 8, 8, 0.95, 0.0, 0.0, 1.0]    # dog 0.95
    found = _found({"kind": "yolov5", "score_threshold": 0.5}, [("o", rows)])
    assert [(d.label, d.score, d.box) for d in found] == [("dog", 0.95, (46.0, 46.0, 54.0, 54.0)),
                                                          ("car", 0.72, (24.0, 24.0, 40.0, 40.0))]


def test_end_to_end_yolo_rows_need_no_nms() -> None:
    rows = np.array([[[10, 10, 20, 20, 0.9, 2], [10, 10, 20, 20, 0.8, 2], [0, 0, 1, 1, 0.1, 0]]], np.float32)
    found = _decoder({"kind": "yolo_end2end"})([("o", rows)], (64, 64), img.Geometry(), 64, 64)
    assert [(d.label, d.score) for d in found] == [("dog", 0.9), ("dog", 0.8)]


def _postprocess_outputs(order: str) -> list[tuple[str, np.ndarray]]:
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 1.0, 1.0]]], np.float32)
    classes = np.array([[0.0, 2.0, 1.0]], np.float32)
    scores = np.array([[0.9, 0.6, 0.3]], np.float32)
    count = np.array([2.0], np.float32)
    if order == "tf1":
        return [("TFLite_Detection_PostProcess", boxes), ("TFLite_Detection_PostProcess:1", classes),
                ("TFLite_Detection_PostProcess:2", scores), ("TFLite_Detection_PostProcess:3", count)]
    return [("StatefulPartitionedCall:1", scores), ("StatefulPartitionedCall:3", count),
            ("StatefulPartitionedCall:0", boxes), ("StatefulPartitionedCall:2", classes)]


@pytest.mark.parametrize("order", ["tf1", "tf2"])
def test_ssd_postprocess_outputs_are_matched_by_shape_name_and_values(order: str) -> None:
    roles = match_postprocess_outputs(_postprocess_outputs(order))
    assert roles["classes"].tolist() == [[0.0, 2.0, 1.0]] and roles["count"].tolist() == [2.0]
    found = _found({"kind": "ssd_postprocess"}, _postprocess_outputs(order), (100, 200))
    # count 2: the third row is padding; boxes (ymin, xmin, ymax, xmax) in [0, 1] of the input
    assert [(d.label, d.score, d.box) for d in found] == [("person", 0.9, (40.0, 10.0, 120.0, 50.0)),
                                                          ("dog", 0.6, (0.0, 0.0, 40.0, 20.0))]


def test_ssd_postprocess_label_maps_with_a_background_entry_shift_by_one() -> None:
    labels = ("???", "person", "bicycle", "car")
    found = _decoder({"kind": "ssd_postprocess"}, labels=labels)(
        _postprocess_outputs("tf1"), (100, 200), img.Geometry(), 200, 100)
    assert [(d.label, d.class_id) for d in found] == [("person", 1), ("car", 3)]


def test_ssd_grid_anchors_match_tf_object_detection_api_ssd_300() -> None:
    anchors = grid_anchors(SsdParams(), 300)
    assert anchors.shape == (1917, 4)  # 19*19*3 + (10*10 + 5*5 + 3*3 + 2*2 + 1) * 6
    np.testing.assert_allclose(anchors[0], [0.5 / 19, 0.5 / 19, 0.1, 0.1], rtol=1e-6)
    wide = [0.5 / 19, 0.5 / 19, 0.2 / np.sqrt(2), 0.2 * np.sqrt(2)]  # scale 0.2, aspect ratio 2
    np.testing.assert_allclose(anchors[1], wide, rtol=1e-5)
    np.testing.assert_allclose(anchors[-1, :2], [0.5, 0.5])  # the 1x1 layer's interpolated box
    np.testing.assert_allclose(anchors[-1, 2:], [np.sqrt(0.95 * 1.0)] * 2, rtol=1e-5)


def test_raw_ssd_decodes_encodings_against_anchors_and_drops_background() -> None:
    anchors = grid_anchors(SsdParams(), 300)
    encodings = np.zeros((1, 1917, 4), np.float32)
    logits = np.full((1, 1917, 4), -10.0, np.float32)  # background + 3 classes, sigmoid
    last = 1916  # anchor centred (0.5, 0.5), size sqrt(0.95)
    # centre y moves by 0.1 of the input, height halves
    encodings[0, last] = [10 * 0.1 / anchors[last, 2], 0.0, 5 * np.log(0.5), 0.0]
    logits[0, last, 2] = 4.0  # class 1 of 3 after background: car
    found = _decoder({"kind": "ssd"})([("box_encodings", encodings), ("class_predictions", logits)],
                                      (300, 300), img.Geometry(), 300, 300)
    side = float(np.sqrt(0.95)) * 300
    assert [d.label for d in found] == ["car"] and found[0].score == pytest.approx(0.982, abs=1e-3)
    np.testing.assert_allclose(found[0].box, [150 - side / 2, 180 - side / 4, 150 + side / 2, 180 + side / 4],
                               atol=0.1)


def test_quantised_outputs_are_dequantised_through_their_specs() -> None:
    head = yolov8_head([(32, 32, 16, 8)], [1], [0.75], 3, anchors=8)
    q = Quantization(scale=0.25, zero_point=10)
    quantised = np.clip(np.round(head / q.scale) + q.zero_point, 0, 255).astype(np.uint8)
    spec = TensorSpec("output0", (1, 7, 8), np.uint8, q)
    real = real_outputs([spec], {"output0": quantised})
    np.testing.assert_allclose(real[0][1], head)
    found = _decoder({"kind": "yolov8"})(real, (64, 64), img.Geometry(), 64, 64)
    assert [(d.label, d.score, d.box) for d in found] == [("car", 0.75, (24.0, 28.0, 40.0, 36.0))]


def test_a_quantised_input_gets_the_pixel_range_its_quantisation_represents() -> None:
    spec = TensorSpec("input", (1, 300, 300, 3), np.uint8, Quantization(1 / 128, 128))
    pre = default_preprocess(spec, "NHWC", "detection")
    assert pre.input_size == (300, 300) and pre.resize == "letterbox"
    pixels = np.array([[[0, 0, 0], [128, 128, 128], [255, 255, 255]]], dtype=np.uint8)
    real = img.normalize(pixels, pre.mean, pre.std)
    quantised = img.quantize(real, spec.quantization, np.dtype(np.uint8))  # type: ignore[arg-type]
    assert quantised[0, 0].tolist() == [0, 0, 0] and quantised[0, 2].tolist() == [255, 255, 255]


def test_output_signatures_pick_their_family() -> None:
    f32 = np.float32
    assert detect_family([TensorSpec("o", (1, 84, 8400), f32)]) == "yolov8"
    assert detect_family([TensorSpec("o", (1, 8400, 84), f32)]) == "yolov8"
    assert detect_family([TensorSpec("o", (1, 25200, 85), f32)]) == "yolov5"
    assert detect_family([TensorSpec("o", (1, 100, 8), f32)], ("a", "b", "c")) == "yolov5"
    assert detect_family([TensorSpec(n, (1, 10), f32) for n in "abcd"]) == "ssd_postprocess"
    face = [TensorSpec("r", (1, 896, 16), f32), TensorSpec("c", (1, 896, 1), f32)]
    assert detect_family(face) == "blazeface"
    assert detect_family([TensorSpec("b", (1, 1917, 4), f32), TensorSpec("s", (1, 1917, 91), f32)]) == "ssd"
    with pytest.raises(ModelIntegrityError, match="postprocess.kind"):
        detect_family([TensorSpec("o", (1, 100, 7), f32)])


@pytest.mark.parametrize(("post", "message"), [
    ({"kind": "yolov9"}, "unknown detection decoder"),
    ({"kind": "yolov8", "iou": 0.5}, "unknown parameter"),
    ({"kind": "yolov8", "score_threshold": "high"}, "must be a number"),
    ({"kind": "yolov8", "max_detections": 2.5}, "whole number"),
    ({"kind": "yolov8", "score_threshold": 1.5}, r"\[0, 1\]"),
    ({"kind": "ssd", "aspect_ratios": 1.0}, "must be a list"),
    ({"kind": "yolov8", "layout": "diagonal"}, "layout"),
])
def test_bad_decoder_parameters_are_refused_clearly(post: dict, message: str) -> None:
    with pytest.raises(ModelIntegrityError, match=message):
        _decoder(post)


def test_class_aware_nms_is_greedy_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.5], np.float32)
    classes = np.array([0, 0, 1, 0])
    assert class_aware_nms(boxes, scores, classes, 0.5, 10).tolist() == [1, 2, 3]
    assert class_aware_nms(boxes, scores, classes, 0.5, 10, class_agnostic=True).tolist() == [1, 3]
