"""Shared by every decoder: typed parameters, candidate boxes, class-aware NMS, mapping to source pixels."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ...errors import ModelIntegrityError
from ..detect import Detection, iou
from ..image import Geometry

NamedArray = tuple[str, np.ndarray]  # (output name, real-valued array)
MAX_NMS_CANDIDATES = 3000  # only the best this many boxes go into NMS (bounds its work)


@dataclass(frozen=True)
class DecodeParams:
    """Parameters every decoder takes. ``class_agnostic`` makes NMS ignore classes."""

    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0 or not 0.0 <= self.iou_threshold <= 1.0:
            raise ModelIntegrityError("score_threshold and iou_threshold must lie in [0, 1]")
        if self.max_detections < 1:
            raise ModelIntegrityError("max_detections must be at least 1")


@dataclass(frozen=True)
class Candidates:
    """Boxes (x0, y0, x1, y1 in model-input pixels) that passed the score threshold, before NMS."""

    boxes: np.ndarray       # (N, 4) float32
    scores: np.ndarray      # (N,) float32
    class_ids: np.ndarray   # (N,) int64
    keypoints: np.ndarray | None = None  # (N, 2k) float32, x, y pairs in model-input pixels

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def take(self, index: np.ndarray) -> Candidates:
        keypoints = None if self.keypoints is None else self.keypoints[index]
        return Candidates(self.boxes[index], self.scores[index], self.class_ids[index], keypoints)


P = TypeVar("P", bound=DecodeParams)


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """``value`` as the annotated type (bool, int, float, str, tuples/lists of those, or None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ModelIntegrityError(f"{where}: {key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], key, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ModelIntegrityError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if hint in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ModelIntegrityError(f"{where}: {key} must be a number, got {value!r}")
    if hint is int and float(value) != int(value):
        raise ModelIntegrityError(f"{where}: {key} must be a whole number, got {value!r}")
    return hint(value)


def parse_params(params_type: type[P], values: Mapping[str, Any], where: str) -> P:
    """A params dataclass from manifest values; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(params_type)
    known = {f.name for f in dataclasses.fields(params_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelIntegrityError(f"{where}: unknown parameter(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(sorted(known))}")
    coerced = {k: _coerce(v, hints[k], k, where) for k, v in values.items()}
    return params_type(**coerced)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    half = boxes[:, 2:4] / 2.0
    return np.concatenate([boxes[:, 0:2] - half, boxes[:, 0:2] + half], axis=1)


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
                    max_detections: int, class_agnostic: bool = False) -> np.ndarray:
    """Greedy NMS within each class (or across all), best first; indices of the boxes kept.

    Each class's boxes are shifted by their own offset so that boxes of different classes never
    overlap; each kept box then removes what it overlaps from the rest in one vectorised step.
    """
    order = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
    shifted = boxes[order].astype(np.float64)
    if not class_agnostic and order.size:
        span = float(np.abs(shifted).max()) * 2.0 + 1.0
        shifted = shifted + (class_ids[order].astype(np.float64) * span)[:, None]
    remaining = np.arange(order.size)
    kept: list[int] = []
    while remaining.size and len(kept) < max_detections:
        best, rest = remaining[0], remaining[1:]
        kept.append(int(best))
        remaining = rest[iou(shifted[best], shifted[rest]) <= iou_threshold]
    return order[np.asarray(kept, dtype=np.int64)]


def label_of(class_id: int, labels: Sequence[str]) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) and labels[class_id] else str(class_id)


def to_detections(found: Candidates, geometry: Geometry, width: int, height: int,
                  labels: Sequence[str]) -> list[Detection]:
    """Candidates in model-input pixels -> Detections in source pixels, clipped to the image."""
    limits = np.array([width, height, width, height], dtype=np.float32)
    boxes = np.clip(geometry.to_source(found.boxes), 0, limits)
    points = geometry.to_source(found.keypoints) if found.keypoints is not None else None
    detections = []
    for i, box in enumerate(boxes):
        if box[2] <= box[0] or box[3] <= box[1]:
            continue  # wholly in the letterbox border or off the image
        class_id = int(found.class_ids[i])
        keypoints = () if points is None else tuple(
            (round(float(x), 1), round(float(y), 1)) for x, y in points[i].reshape(-1, 2))
        detections.append(Detection(
            tuple(round(float(v), 1) for v in box), round(float(found.scores[i]), 4),  # type: ignore[arg-type]
            label_of(class_id, labels), keypoints, class_id))
    return detections
