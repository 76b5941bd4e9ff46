"""Detection post-processing: BlazeFace SSD anchors and box decoding, hard and weighted NMS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One detected object in source-image pixels."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    label: str = "object"
    keypoints: tuple[tuple[float, float], ...] = ()


def ssd_anchors(input_size: int, strides: Sequence[int], offset: float = 0.5) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1] for MediaPipe-style SSD heads with fixed anchor size.

    Consecutive layers with the same stride share a grid; each layer contributes two anchors
    per cell (aspect ratio 1 and its interpolated scale), so BlazeFace's strides 8,16,16,16 at
    128 px give 16*16*2 + 8*8*6 = 896 anchors.
    """
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = 1
        while layer + same < len(strides) and strides[layer + same] == stride:
            same += 1
        cells = int(np.ceil(input_size / stride))
        grid = (np.arange(cells, dtype=np.float32) + offset) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_centres, 2 * same, axis=0))
        layer += same
    return np.concatenate(centres, axis=0)


def decode_blazeface(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
                     input_size: int, score_threshold: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw BlazeFace outputs -> (boxes xyxy, scores, keypoints xy...) in model-input pixels.

    ``regressors`` is (N, 4 + 2k): centre offset, width, height and k keypoints, all in
    input pixels relative to the anchor centre; ``logits`` is (N,) or (N, 1).
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)))
    keep = scores >= score_threshold
    raw = regressors.reshape(len(anchors), -1)[keep].astype(np.float32)
    centres = anchors[keep] * input_size
    cx, cy = raw[:, 0] + centres[:, 0], raw[:, 1] + centres[:, 1]
    half_w, half_h = raw[:, 2] / 2.0, raw[:, 3] / 2.0
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    keypoints = raw[:, 4:] + np.tile(centres, (1, (raw.shape[1] - 4) // 2))
    return boxes, scores[keep].astype(np.float32), keypoints


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one xyxy box with each of ``boxes``."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[np.ndarray]:
    """Greedy NMS; returns, per kept detection, the indices it absorbed (best first)."""
    order = np.argsort(-scores, kind="stable")
    groups: list[np.ndarray] = []
    while order.size:
        overlaps = iou(boxes[order[0]], boxes[order])
        groups.append(order[overlaps > iou_threshold])
        order = order[overlaps <= iou_threshold]
    return groups


def merge_groups(values: np.ndarray, scores: np.ndarray, groups: list[np.ndarray],
                 weighted: bool) -> np.ndarray:
    """One row per NMS group: the best row (hard NMS) or the score-weighted mean (weighted NMS)."""
    if not weighted:
        return np.stack([values[g[0]] for g in groups]) if groups else values[:0]
    rows = [np.average(values[g], axis=0, weights=scores[g]) for g in groups]
    return np.stack(rows).astype(np.float32) if rows else values[:0]
