"""SSD heads: TFLite_Detection_PostProcess (boxes, classes, scores, count); raw encodings + anchors."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...errors import ModelIntegrityError
from .common import Candidates, DecodeParams, NamedArray

BACKGROUND_NAMES = ("???", "background", "__background__", "bg")
ACTIVATIONS = ("sigmoid", "softmax", "none")
# TF1 export_tflite_ssd_graph order of TFLite_Detection_PostProcess:0..3
TF1_ORDER = ("boxes", "classes", "scores", "count")
_NAME_HINTS = (("count", ("num", "count")), ("boxes", ("box",)), ("classes", ("class",)),
               ("scores", ("score",)))


@dataclass(frozen=True)
class SsdPostprocessParams(DecodeParams):
    """``label_offset``: added to each class index before the label lookup; None: 1 when the label
    file starts with a background entry ('???'), else 0."""

    score_threshold: float = 0.5
    label_offset: int | None = None


@dataclass(frozen=True)
class SsdParams(DecodeParams):
    """Raw SSD head: box encodings (ty, tx, th, tw) relative to anchors, and class scores.

    Anchors come from TF Object Detection API's multiple-grid generator (ssd_anchor_generator),
    whose defaults these are; ``feature_maps`` None derives 19,10,5,3,2,1-style grids from the input.
    """

    score_threshold: float = 0.5
    iou_threshold: float = 0.6
    scale_factors: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w
    score_activation: str = "sigmoid"
    background_class: bool = True  # the scores' first column is "background": dropped
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    reduce_boxes_in_lowest_layer: bool = True
    feature_maps: tuple[int, ...] | None = None
    label_offset: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score_activation not in ACTIVATIONS:
            raise ModelIntegrityError(f"ssd score_activation must be one of {', '.join(ACTIVATIONS)}")
        if len(self.scale_factors) != 4 or not self.aspect_ratios:
            raise ModelIntegrityError("ssd needs 4 scale_factors and at least one aspect ratio")


# ---- TFLite_Detection_PostProcess --------------------------------------------------------------
def _role_by_name(name: str) -> str | None:
    match = re.search(r"TFLite_Detection_PostProcess(?::(\d))?$", name)
    if match:
        return TF1_ORDER[int(match.group(1) or 0)]
    lowered = name.lower()
    return next((role for role, words in _NAME_HINTS if any(w in lowered for w in words)), None)


def _split_classes_scores(pair: list[NamedArray]) -> dict[str, np.ndarray]:
    """Two [1, N] tensors: the one holding only whole numbers is the classes (values over 1 settle it)."""
    (_, first), (_, second) = pair
    whole = [bool(np.all(np.equal(np.mod(a, 1), 0))) for a in (first, second)]
    if whole[0] != whole[1]:
        return {"classes": first, "scores": second} if whole[0] else {"classes": second, "scores": first}
    return {"classes": first, "scores": second}  # undecidable (e.g. all zero): TF1 order


def match_postprocess_outputs(outputs: Sequence[NamedArray]) -> dict[str, np.ndarray]:
    """Assign boxes [1,N,4], classes [1,N], scores [1,N] and count [1] by shape, then by name or values."""
    if len(outputs) != 4:
        raise ModelIntegrityError(f"ssd_postprocess needs 4 outputs (boxes, classes, scores, count), "
                                  f"the model has {len(outputs)}")
    roles: dict[str, np.ndarray] = {}
    pair: list[NamedArray] = []
    for name, array in outputs:
        if array.shape[-1] == 4 and array.ndim == 3:
            roles["boxes"] = array
        elif array.size == 1 and "count" not in roles:
            roles["count"] = array
        else:
            pair.append((name, array))
    named = {_role_by_name(n): a for n, a in pair}
    if len(pair) == 2 and set(named) == {"classes", "scores"}:
        roles.update(named)  # type: ignore[arg-type]
    elif len(pair) == 2:
        roles.update(_split_classes_scores(pair))
    if set(roles) != set(TF1_ORDER):
        shapes = ", ".join(f"{n} {a.shape}" for n, a in outputs)
        raise ModelIntegrityError(
            f"ssd_postprocess: cannot tell boxes, classes, scores and count apart in {shapes}")
    return roles


def decode_postprocess(outputs: Sequence[NamedArray], params: SsdPostprocessParams,
                       input_hw: tuple[int, int]) -> Candidates:
    """Already-suppressed detections: boxes are (ymin, xmin, ymax, xmax) in [0, 1] of the input."""
    roles = match_postprocess_outputs(outputs)
    count = int(roles["count"].reshape(-1)[0])
    boxes = roles["boxes"].reshape(-1, 4)[:count]
    scores = roles["scores"].reshape(-1)[:count]
    classes = np.rint(roles["classes"].reshape(-1)[:count]).astype(np.int64)
    keep = scores >= params.score_threshold
    height, width = input_hw
    yxyx = boxes[keep] * np.array([height, width, height, width], dtype=np.float32)
    return Candidates(yxyx[:, [1, 0, 3, 2]].astype(np.float32), scores[keep].astype(np.float32),
                      classes[keep])


def label_offset(params: SsdPostprocessParams | SsdParams, labels: Sequence[str]) -> int:
    if params.label_offset is not None:
        return params.label_offset
    return 1 if labels and labels[0].strip().lower() in BACKGROUND_NAMES else 0


# ---- raw head with anchors ---------------------------------------------------------------------
def default_feature_maps(size: int, layers: int = 6) -> tuple[int, ...]:
    """MobileNet SSD grids: stride 16 first, then halving (300 -> 19, 10, 5, 3, 2, 1)."""
    maps = [math.ceil(size / 16)]
    while len(maps) < layers:
        maps.append(math.ceil(maps[-1] / 2))
    return tuple(maps)


def _layer_boxes(params: SsdParams, layer: int, scales: list[float]) -> list[tuple[float, float]]:
    """(height, width) of each anchor of one layer, in input fractions."""
    if layer == 0 and params.reduce_boxes_in_lowest_layer:
        specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
    else:
        specs = [(scales[layer], ratio) for ratio in params.aspect_ratios]
        specs.append((math.sqrt(scales[layer] * scales[layer + 1]), 1.0))
    return [(scale / math.sqrt(ratio), scale * math.sqrt(ratio)) for scale, ratio in specs]


@lru_cache(maxsize=8)
def grid_anchors(params: SsdParams, input_size: int) -> np.ndarray:
    """(N, 4) anchors as (y centre, x centre, height, width) in [0, 1]; cell-major, then box."""
    maps = params.feature_maps or default_feature_maps(input_size)
    layers = len(maps)
    scales = [params.min_scale + (params.max_scale - params.min_scale) * i / max(1, layers - 1)
              for i in range(layers)] + [1.0]
    rows = []
    for layer, cells in enumerate(maps):
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        sizes = np.array(_layer_boxes(params, layer, scales), dtype=np.float32)
        grid = np.stack([ys.ravel(), xs.ravel()], axis=1)
        rows.append(np.concatenate([np.repeat(grid, len(sizes), axis=0),
                                    np.tile(sizes, (len(grid), 1))], axis=1))
    return np.concatenate(rows).astype(np.float32)


def _activate(scores: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.clip(scores, -80.0, 80.0)))
    if activation == "softmax":
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return scores


def _split_raw(outputs: Sequence[NamedArray]) -> tuple[np.ndarray, np.ndarray]:
    """(box encodings, class scores): a name with box/loc/regress/encod settles it, else the shape."""
    if len(outputs) != 2:
        raise ModelIntegrityError(
            f"ssd needs 2 outputs (box encodings, class scores), the model has {len(outputs)}")
    shaped = [i for i, (_, a) in enumerate(outputs) if a.shape[-1] == 4]
    named = [i for i in shaped if any(h in outputs[i][0].lower() for h in ("box", "loc", "regress", "encod"))]
    if not shaped:
        raise ModelIntegrityError("ssd needs a box-encoding output [1, N, 4] and a class-score output")
    boxes = (named or shaped)[0]
    return outputs[boxes][1], outputs[1 - boxes][1]


def decode_raw(outputs: Sequence[NamedArray], params: SsdParams, input_hw: tuple[int, int],
               anchors: np.ndarray | None = None) -> Candidates:
    """Box encodings [1, N, 4] and class scores [1, N, C(+1)] -> candidates, decoded against anchors."""
    encodings, logits = _split_raw(outputs)
    anchors = grid_anchors(params, input_hw[0]) if anchors is None else anchors
    encodings = encodings.reshape(-1, 4)
    logits = logits.reshape(len(encodings), -1)
    if len(anchors) != len(encodings):
        raise ModelIntegrityError(f"ssd: {len(anchors)} anchors but {len(encodings)} box encodings; "
                                  "set feature_maps or the anchor parameters in the manifest")
    scores = _activate(logits.astype(np.float32), params.score_activation)
    scores = scores[:, 1:] if params.background_class else scores
    best = scores.max(axis=1)
    keep = np.flatnonzero(best >= params.score_threshold)
    class_ids = scores[keep].argmax(axis=1)
    boxes = _decode_boxes(encodings[keep], anchors[keep], params.scale_factors, input_hw)
    return Candidates(boxes, best[keep].astype(np.float32), class_ids.astype(np.int64))


def _decode_boxes(encodings: np.ndarray, anchors: np.ndarray, factors: tuple[float, ...],
                  input_hw: tuple[int, int]) -> np.ndarray:
    y_scale, x_scale, h_scale, w_scale = factors
    cy = encodings[:, 0] / y_scale * anchors[:, 2] + anchors[:, 0]
    cx = encodings[:, 1] / x_scale * anchors[:, 3] + anchors[:, 1]
    half_h = np.exp(encodings[:, 2] / h_scale) * anchors[:, 2] / 2.0
    half_w = np.exp(encodings[:, 3] / w_scale) * anchors[:, 3] / 2.0
    height, width = input_hw
    boxes = np.stack([(cx - half_w) * width, (cy - half_h) * height,
                      (cx + half_w) * width, (cy + half_h) * height], axis=1)
    return boxes.astype(np.float32)
