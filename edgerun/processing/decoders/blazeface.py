"""BlazeFace (MediaPipe faces): fixed-size SSD anchors, regressed boxes and keypoints, weighted NMS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...errors import ModelIntegrityError
from .common import Candidates, DecodeParams, NamedArray


@dataclass(frozen=True)
class BlazeFaceParams(DecodeParams):
    """MediaPipe's defaults: anchors from strides 8,16,16,16, weighted NMS at IoU 0.3."""

    score_threshold: float = 0.5
    iou_threshold: float = 0.3
    strides: tuple[int, ...] = (8, 16, 16, 16)
    anchor_offset: float = 0.5
    nms: str = "weighted"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nms not in ("weighted", "hard"):
            raise ModelIntegrityError(f"blazeface nms must be 'weighted' or 'hard', not {self.nms!r}")


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


_cached_anchors = lru_cache(maxsize=8)(ssd_anchors)  # read-only arrays, one per geometry


def decode(outputs: Sequence[NamedArray], params: BlazeFaceParams, input_hw: tuple[int, int]
           ) -> Candidates:
    """Regressors (1, N, 4 + 2k) and logits (1, N, 1) -> face candidates with keypoints."""
    logits = next((a for _, a in outputs if a.shape[-1] == 1), None)
    regressors = next((a for _, a in outputs if a.shape[-1] != 1), None)
    if logits is None or regressors is None:
        raise ModelIntegrityError("blazeface needs a regressors output and a (N, 1) logits output")
    size = input_hw[0]
    anchors = _cached_anchors(size, params.strides, params.anchor_offset)
    if regressors.size // max(1, regressors.shape[-1]) != len(anchors):
        raise ModelIntegrityError(f"blazeface: {len(anchors)} anchors for strides {params.strides} at "
                                  f"{size} px, but the model has {regressors.shape} regressors")
    boxes, scores, keypoints = decode_blazeface(regressors, logits, anchors, size, params.score_threshold)
    return Candidates(boxes, scores, np.zeros(len(scores), np.int64), keypoints)
