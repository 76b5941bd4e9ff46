"""YOLO heads: Ultralytics v8/v11 ([1,4+C,N] or [1,N,4+C]), v5 ([1,N,5+C]) and NMS-free end2end ([1,N,6])."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import ModelIntegrityError
from .common import Candidates, DecodeParams, NamedArray, cxcywh_to_xyxy

LAYOUTS = ("auto", "channels_first", "channels_last")


@dataclass(frozen=True)
class YoloParams(DecodeParams):
    """``layout``: where the 4+C (or 5+C) values sit; auto takes the smaller axis. ``normalized``:
    boxes in [0, 1] of the input (TFLite exports) rather than input pixels; None decides from the values."""

    layout: str = "auto"
    normalized: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in LAYOUTS:
            raise ModelIntegrityError(f"yolo layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")


def _single(outputs: Sequence[NamedArray], family: str) -> np.ndarray:
    ranked = [a for _, a in outputs if a.ndim in (2, 3)]
    if not ranked:
        shapes = ", ".join(str(a.shape) for _, a in outputs)
        raise ModelIntegrityError(f"{family} needs one [1, rows, values] output; the model has {shapes}")
    pred = ranked[0]
    return pred[0] if pred.ndim == 3 else pred


def _rows_first(pred: np.ndarray, layout: str, auto_first: bool = True) -> np.ndarray:
    """(N, values) view: transposes channel-first [values, N] heads ('auto': the smaller axis holds
    the values, unless ``auto_first`` is False: families that are always rows-first)."""
    smaller_first = auto_first and pred.shape[0] < pred.shape[1]
    channels_first = layout == "channels_first" or (layout == "auto" and smaller_first)
    return pred.T if channels_first else pred


def _to_pixels(boxes: np.ndarray, normalized: bool | None, input_hw: tuple[int, int]) -> np.ndarray:
    if normalized is None:
        normalized = boxes.size > 0 and float(np.abs(boxes).max()) <= 2.0
    if normalized:
        height, width = input_hw
        boxes = boxes * np.array([width, height, width, height], dtype=np.float32)
    return boxes.astype(np.float32, copy=False)


def decode_v8(outputs: Sequence[NamedArray], params: YoloParams, input_hw: tuple[int, int]) -> Candidates:
    """cx, cy, w, h then one score per class (no objectness): the best class is the box's class."""
    rows = _rows_first(_single(outputs, "yolov8"), params.layout)
    if rows.shape[1] < 5:
        raise ModelIntegrityError(f"yolov8 rows need 4 box values and class scores, got {rows.shape[1]}")
    class_scores = rows[:, 4:]
    best = class_scores.max(axis=1)
    keep = np.flatnonzero(best >= params.score_threshold)
    class_ids = class_scores[keep].argmax(axis=1)
    boxes = _to_pixels(cxcywh_to_xyxy(rows[keep, :4]), params.normalized, input_hw)
    return Candidates(boxes, best[keep].astype(np.float32), class_ids.astype(np.int64))


def decode_v5(outputs: Sequence[NamedArray], params: YoloParams, input_hw: tuple[int, int]) -> Candidates:
    """cx, cy, w, h, objectness, then class probabilities: score = objectness x class probability."""
    rows = _rows_first(_single(outputs, "yolov5"), params.layout, auto_first=False)
    if rows.shape[1] < 6:
        raise ModelIntegrityError(f"yolov5 rows need 5 values and class scores, got {rows.shape[1]}")
    rows = rows[rows[:, 4] >= params.score_threshold]  # objectness bounds every class score
    class_scores = rows[:, 5:] * rows[:, 4:5]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(rows)), class_ids]
    keep = scores >= params.score_threshold
    boxes = _to_pixels(cxcywh_to_xyxy(rows[keep, :4]), params.normalized, input_hw)
    return Candidates(boxes, scores[keep].astype(np.float32), class_ids[keep].astype(np.int64))


def decode_end2end(outputs: Sequence[NamedArray], params: YoloParams, input_hw: tuple[int, int]
                   ) -> Candidates:
    """Rows of x0, y0, x1, y1, score, class (YOLOv10 / YOLO26 exports, NMS inside the model)."""
    rows = _rows_first(_single(outputs, "yolo end-to-end"), params.layout, auto_first=False)
    if rows.shape[1] != 6:
        raise ModelIntegrityError(f"end-to-end YOLO rows need 6 values, got {rows.shape[1]}")
    rows = rows[rows[:, 4] >= params.score_threshold]
    boxes = _to_pixels(rows[:, :4], params.normalized, input_hw)
    return Candidates(boxes, rows[:, 4].astype(np.float32), np.rint(rows[:, 5]).astype(np.int64))
