#!/usr/bin/env python3
"""Build the two tiny SSD test models in tests/data/ with TensorFlow's own TFLite converter.

Both take a float32 [1, 300, 300, 3] image and read it (times zero), so their heads are fixed:
box encodings [1, 1917, 4] and class logits [1, 1917, 4] (background + 3 classes) for the
1917 anchors of TF Object Detection API's ssd_anchor_generator at 300 px (edgerun's
``grid_anchors``), with five objects planted at known anchors.

ssd_raw_tiny.tflite          outputs box_encodings and class_logits (the raw head)
ssd_postprocess_tiny.tflite  the same head through TFLite_Detection_PostProcess (sigmoid
                             scores, fast NMS, 10 detections): four outputs boxes, classes,
                             scores, count, as pycoral-style SSD exports have them
ssd_raw_int8_tiny.tflite     the raw head (plus 1e-3 x the image mean, so that it is not folded
                             away) fully quantised: uint8 image in, int8 outputs

The custom op comes from a tf.function carrying ``experimental_implements`` — the way TF Object
Detection API's TF2 exporter marks it — which the converter fuses when custom ops are allowed.
Tests run the second through LiteRT's own kernel and compare it with edgerun's raw decoder.

Set-up (a throw-away venv; TensorFlow is not an edgerun dependency):
    python3.11 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0
    /tmp/tfvenv/bin/python scripts/make_ssd_test_models.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgerun.processing.decoders.ssd import SsdParams, grid_anchors  # noqa: E402

OUT = REPO / "tests" / "data"
SIZE, CLASSES, MAX_DETECTIONS = 300, 3, 10
# (anchor index, class 1..3, logit, y/x offset in anchor units, log-size change)
OBJECTS = [(1916, 1, 4.0, 0.1, -0.4), (1500, 2, 3.0, -0.2, 0.1), (1200, 3, 2.5, 0.0, 0.0),
           (600, 1, 2.0, 0.3, 0.2), (40, 2, 1.5, -0.1, -0.2)]


def head() -> tuple[np.ndarray, np.ndarray]:
    anchors = grid_anchors(SsdParams(), SIZE)
    encodings = np.zeros((1, len(anchors), 4), np.float32)
    logits = np.full((1, len(anchors), CLASSES + 1), -8.0, np.float32)
    for index, cls, logit, shift, grow in OBJECTS:
        encodings[0, index] = [10 * shift, -10 * shift, 5 * grow, 5 * -grow]
        logits[0, index, cls] = logit
    return encodings, logits


def implements_signature() -> str:
    attrs = [("max_detections", "i", MAX_DETECTIONS), ("max_classes_per_detection", "i", 1),
             ("use_regular_nms", "b", "false"), ("nms_score_threshold", "f", 0.3),
             ("nms_iou_threshold", "f", 0.6), ("y_scale", "f", 10.0), ("x_scale", "f", 10.0),
             ("h_scale", "f", 5.0), ("w_scale", "f", 5.0), ("num_classes", "i", CLASSES)]
    return " ".join(['name: "TFLite_Detection_PostProcess"'] +
                    [f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, kind, value in attrs])


def convert(module, function, path: Path) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], module)
    converter.allow_custom_ops = True
    path.write_bytes(converter.convert())
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


def convert_int8(module, function, path: Path) -> None:
    """Full-integer conversion: uint8 image in, int8 outputs with their own scale and zero point."""
    import tensorflow as tf

    def calibration():
        rng = np.random.default_rng(0)
        for _ in range(4):
            yield [rng.uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")


def main() -> int:
    import tensorflow as tf

    encodings, logits = head()
    anchors = grid_anchors(SsdParams(), SIZE)
    signature = [tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")]

    @tf.function(experimental_implements=implements_signature())
    def postprocess(box_encodings, class_predictions, anchor_boxes):
        zero = tf.constant(0.0, tf.float32)
        return zero, zero, zero, zero  # replaced by the fused TFLite_Detection_PostProcess

    class Raw(tf.Module):
        @tf.function(input_signature=signature)
        def __call__(self, image):
            nothing = tf.reduce_mean(image) * 0.0
            return {"box_encodings": tf.constant(encodings) + nothing,
                    "class_logits": tf.constant(logits) + nothing}

    class Quantisable(tf.Module):  # the image term must survive constant folding to be quantised
        @tf.function(input_signature=signature)
        def __call__(self, image):
            little = tf.reduce_mean(image, axis=[1, 2, 3], keepdims=True)[:, :, :, :1] * 1e-3
            return {"box_encodings": tf.constant(encodings) + little[:, 0],
                    "class_logits": tf.constant(logits) + little[:, 0]}

    class Postprocessed(tf.Module):
        @tf.function(input_signature=signature)
        def __call__(self, image):
            nothing = tf.reduce_mean(image) * 0.0
            scores = tf.sigmoid(tf.constant(logits) + nothing)
            return postprocess(tf.constant(encodings) + nothing, scores, tf.constant(anchors))

    OUT.mkdir(parents=True, exist_ok=True)
    raw, post = Raw(), Postprocessed()
    convert(raw, raw.__call__, OUT / "ssd_raw_tiny.tflite")
    convert(post, post.__call__, OUT / "ssd_postprocess_tiny.tflite")
    quantisable = Quantisable()
    convert_int8(quantisable, quantisable.__call__, OUT / "ssd_raw_int8_tiny.tflite")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
