"""Classification post-processing: softmax and top-k with labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Classification:
    """One class of a top-k result."""

    index: int
    label: str
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in float32."""
    shifted = logits.astype(np.float32) - np.max(logits, axis=-1, keepdims=True)
    exps = np.exp(shifted)
    return exps / np.sum(exps, axis=-1, keepdims=True)


def top_k(scores: np.ndarray, k: int, labels: Sequence[str] = ()) -> list[Classification]:
    """The ``k`` highest scores of a 1-D vector, best first, labelled when labels are given."""
    flat = np.asarray(scores).reshape(-1)
    k = max(1, min(k, flat.size))
    best = np.argpartition(-flat, k - 1)[:k]
    best = best[np.argsort(-flat[best], kind="stable")]
    return [
        Classification(int(i), labels[i] if i < len(labels) else str(int(i)), float(flat[i]))
        for i in best
    ]
