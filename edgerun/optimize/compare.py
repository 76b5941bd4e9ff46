"""Agreement of an optimised model with its fp32 original: pure functions over the two models' outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

TOP_K = 5


@dataclass(frozen=True)
class Agreement:
    """How closely the candidate's outputs follow the reference's over one image set."""

    images: int
    top1_agreement: float | None  # same top-1 class (classifiers)
    top5_overlap: float | None  # mean |top5(ref) & top5(cand)| / 5
    reference_top1_in_top5: float | None
    max_abs_diff: float  # over every output element of every image
    mean_abs_diff: float
    reference_accuracy: float | None = None  # labelled sets only
    candidate_accuracy: float | None = None
    disagreements: tuple[int, ...] = ()  # image indices whose top-1 (or detections) differ
    detection_agreement: float | None = None  # detectors: images whose detections match

    @property
    def agreement(self) -> float | None:
        """The figure the threshold applies to: top-1 agreement, or detection agreement."""
        return self.top1_agreement if self.top1_agreement is not None else self.detection_agreement

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def class_scores(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The first output of one image as a flat score vector (logits or probabilities)."""
    return np.asarray(outputs[0], dtype=np.float32).reshape(-1)


def compare_outputs(
    reference: Sequence[Sequence[np.ndarray]],
    candidate: Sequence[Sequence[np.ndarray]],
    classifier: bool,
    labels: Sequence[int] | None = None,
) -> Agreement:
    """Per-image output lists of both models -> Agreement (class metrics only for classifiers)."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError("compare_outputs needs the same, non-zero number of images on both sides")
    diffs = [
        np.abs(np.asarray(r, np.float32) - np.asarray(c, np.float32))
        for ref, cand in zip(reference, candidate, strict=True)
        for r, c in zip(ref, cand, strict=True)
    ]
    max_diff = float(max(d.max() for d in diffs))
    mean_diff = float(np.concatenate([d.ravel() for d in diffs]).mean())
    if not classifier:
        return Agreement(len(reference), None, None, None, max_diff, mean_diff)
    ref_scores = [class_scores(r) for r in reference]
    cand_scores = [class_scores(c) for c in candidate]
    k = min(TOP_K, ref_scores[0].size)
    ref_top = [_top(s, k) for s in ref_scores]
    cand_top = [_top(s, k) for s in cand_scores]
    same = [r[0] == c[0] for r, c in zip(ref_top, cand_top, strict=True)]
    overlap = [len(set(r.tolist()) & set(c.tolist())) / k for r, c in zip(ref_top, cand_top, strict=True)]
    inside = [r[0] in c for r, c in zip(ref_top, cand_top, strict=True)]
    ref_acc = cand_acc = None
    if labels is not None:
        ref_acc = float(np.mean([t[0] == y for t, y in zip(ref_top, labels, strict=True)]))
        cand_acc = float(np.mean([t[0] == y for t, y in zip(cand_top, labels, strict=True)]))
    return Agreement(
        len(reference),
        float(np.mean(same)),
        float(np.mean(overlap)),
        float(np.mean(inside)),
        max_diff,
        mean_diff,
        ref_acc,
        cand_acc,
        tuple(i for i, ok in enumerate(same) if not ok),
    )


Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detections_match(reference: Sequence[Box], candidate: Sequence[Box], threshold: float = 0.5) -> bool:
    """Same number of boxes, and each reference box has its own candidate box with IoU >= threshold."""
    if len(reference) != len(candidate):
        return False
    unused = list(candidate)
    for box in reference:
        best = max(unused, key=lambda other: iou(box, other), default=None)
        if best is None or iou(box, best) < threshold:
            return False
        unused.remove(best)
    return True


def with_detections(
    agreement: Agreement, reference: Sequence[Sequence[Box]], candidate: Sequence[Sequence[Box]]
) -> Agreement:
    """``agreement`` plus the share of images whose detections match (and which ones do not)."""
    same = [detections_match(r, c) for r, c in zip(reference, candidate, strict=True)]
    return replace(
        agreement,
        detection_agreement=float(np.mean(same)),
        disagreements=tuple(i for i, ok in enumerate(same) if not ok),
    )
