"""Pure pre/post-processing: geometry, normalisation, quantisation, top-k, anchors, NMS, decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edgerun.errors import ImageDecodeError
from edgerun.processing import image as img
from edgerun.processing.classify import softmax, top_k
from edgerun.processing.decoders.blazeface import decode_blazeface, ssd_anchors
from edgerun.processing.detect import iou, merge_groups, nms
from edgerun.types import Quantization

from .helpers import SAMPLES


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_png_bytes_path_and_arrays_give_rgb_uint8() -> None:
    from_path = img.decode_image(SAMPLES / "chelsea.png")
    assert from_path.shape == (300, 451, 3) and from_path.dtype == np.uint8
    from_bytes = img.decode_image((SAMPLES / "chelsea.png").read_bytes())
    assert np.array_equal(from_path, from_bytes)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert img.decode_image(_png(gray)).shape == (3, 4, 3)
    assert img.decode_image(gray).shape == (3, 4, 3)
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert img.decode_image(rgba).shape == (2, 2, 3)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is plain text, not an image", "not a decodable image"),
])
def test_decode_rejects_non_images(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        img.decode_image(data)


def test_decode_rejects_truncated_png_and_bad_arrays() -> None:
    data = (SAMPLES / "chelsea.png").read_bytes()
    with pytest.raises(ImageDecodeError):
        img.decode_image(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="uint8"):
        img.decode_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageDecodeError, match="shape"):
        img.decode_image(np.zeros((4, 4, 5), np.uint8))


def test_resize_crop_follows_torchvision_sizes_and_maps_back() -> None:
    image = np.zeros((300, 451, 3), np.uint8)
    cropped, geometry = img.resize_crop(image, 256, 224, 224)
    assert cropped.shape == (224, 224, 3)
    # shorter side 300 -> 256, longer 451 -> int(384.85) = 384; crop starts at (80, 16)
    assert geometry.offset_x == -80 and geometry.offset_y == -16
    corner = geometry.to_source(np.array([[0.0, 0.0]]))
    assert corner[0, 0] == pytest.approx(80 * 451 / 384, rel=1e-6)


def test_letterbox_pads_evenly_and_geometry_inverts_it() -> None:
    image = np.full((100, 200, 3), 255, np.uint8)
    boxed, geometry = img.letterbox(image, 128, 128)
    assert boxed.shape == (128, 128, 3)
    assert boxed[0, 0, 0] == 0 and boxed[64, 64, 0] == 255  # pad above, picture in the middle
    assert geometry.offset_y == 32 and geometry.offset_x == 0
    back = geometry.to_source(np.array([0.0, 32.0, 128.0, 96.0]))
    assert np.allclose(back, [0, 0, 200, 100])


def test_normalize_and_layout() -> None:
    pixels = np.array([[[0, 128, 255]]], np.uint8)
    out = img.normalize(pixels, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert out.dtype == np.float32
    assert np.allclose(out, [[[-1.0, 128 / 127.5 - 1, 1.0]]], atol=1e-6)
    assert img.to_layout(np.zeros((4, 5, 3), np.float32), "NCHW").shape == (1, 3, 4, 5)
    assert img.to_layout(np.zeros((4, 5, 3), np.float32), "NHWC").shape == (1, 4, 5, 3)


def test_quantize_saturates_and_dequantize_inverts() -> None:
    quant = Quantization(0.1, -10)
    values = np.array([-100.0, 0.0, 1.0, 100.0], np.float32)
    q = img.quantize(values, quant, np.dtype("int8"))
    assert q.tolist() == [-128, -10, 0, 127]
    assert np.allclose(img.dequantize(q[1:3], quant), [0.0, 1.0])


def test_softmax_and_top_k() -> None:
    probs = softmax(np.array([1.0, 3.0, 2.0, 1000.0]))
    assert probs.sum() == pytest.approx(1.0) and np.isfinite(probs).all()
    best = top_k(np.array([0.1, 0.7, 0.2]), 2, ["a", "b", "c"])
    assert [(c.index, c.label) for c in best] == [(1, "b"), (2, "c")]
    assert top_k(np.array([0.5, 0.5]), 10)[0].label == "0"


def test_blazeface_anchor_grid() -> None:
    anchors = ssd_anchors(128, (8, 16, 16, 16))
    assert anchors.shape == (896, 2)
    assert np.allclose(anchors[0], [0.5 / 16, 0.5 / 16]) and np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[512], [0.5 / 8, 0.5 / 8])  # first 8x8 cell, 6 anchors per cell
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_decode_blazeface_places_boxes_around_anchor_centres() -> None:
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]], np.float32)
    regressors = np.zeros((2, 16), np.float32)
    regressors[0, :4] = [2.0, -4.0, 20.0, 10.0]
    regressors[0, 4:6] = [1.0, 1.0]
    logits = np.array([3.0, -3.0], np.float32)
    boxes, scores, keypoints = decode_blazeface(regressors, logits, anchors, 128, 0.5)
    assert boxes.shape == (1, 4) and scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert np.allclose(boxes[0], [24.0, 55.0, 44.0, 65.0])
    assert np.allclose(keypoints[0, :2], [33.0, 65.0]) and keypoints.shape == (1, 12)


def test_nms_groups_overlaps_and_weighted_merge() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    assert iou(boxes[0], boxes[:1])[0] == pytest.approx(1.0)
    groups = nms(boxes, scores, 0.3)
    assert [g.tolist() for g in groups] == [[0, 1], [2]]
    hard = merge_groups(boxes, scores, groups, weighted=False)
    assert np.allclose(hard, boxes[[0, 2]])
    soft = merge_groups(boxes, scores, groups, weighted=True)
    assert np.allclose(soft[0], [0.4, 0.4, 10.4, 10.4])
    assert merge_groups(boxes, scores, [], weighted=True).shape == (0, 4)
