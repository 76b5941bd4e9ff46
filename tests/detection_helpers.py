"""Shared detection test helpers: tiny ONNX detectors built with onnx.helper (no torch), geometry maths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def constant_detector_onnx(path: Path, head: np.ndarray, input_hw: tuple[int, int],
                           metadata: Mapping[str, str] | None = None, input_name: str = "images",
                           output_name: str = "output0") -> Path:
    """An ONNX model with input float32 [1, 3, H, W] whose output is always ``head`` (plus 0 x the
    input's mean, so the input is really read): a stand-in for any detection head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    height, width = input_hw
    head = np.asarray(head, dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["head", "nothing"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "constant_head",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(head.shape))],
        initializer=[numpy_helper.from_array(head, "head"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def yolov8_head(boxes_cxcywh: list[tuple[float, float, float, float]], classes: list[int],
                scores: list[float], num_classes: int, anchors: int = 32) -> np.ndarray:
    """A [1, 4 + C, N] Ultralytics head: the given boxes first, the other columns scoring zero."""
    head = np.zeros((1, 4 + num_classes, anchors), dtype=np.float32)
    head[0, :4, :] = 1.0  # tiny boxes at the corner for the unused columns
    for i, (box, cls, score) in enumerate(zip(boxes_cxcywh, classes, scores, strict=True)):
        head[0, :4, i] = box
        head[0, 4 + cls, i] = score
    return head


def ultralytics_metadata(names: list[str], imgsz: tuple[int, int], task: str = "detect") -> dict[str, str]:
    """metadata_props as an Ultralytics export writes them (names is a Python dict literal)."""
    return {"description": "Ultralytics YOLOv8n model (test stand-in)", "author": "Ultralytics",
            "task": task, "stride": "32", "batch": "1", "imgsz": str(list(imgsz)),
            "names": str(dict(enumerate(names)))}
