"""Detections and the NMS that groups them (hard or score-weighted); decoders live in processing.decoders."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One detected object in source-image pixels."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    label: str = "object"
    keypoints: tuple[tuple[float, float], ...] = ()
    class_id: int = 0  # index into the model's labels


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


def keep_detections(detections: Sequence[Detection], labels: Collection[str] | None = None,
                    min_score: float = 0.0) -> list[Detection]:
    """Those with one of ``labels`` (any when None or empty) and a score of at least ``min_score``."""
    wanted = set(labels or ())
    return [d for d in detections if d.score >= min_score and (not wanted or d.label in wanted)]
