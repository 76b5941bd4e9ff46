"""The decoder table: a pure decoder per detection-head family, chosen by manifest or by outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ModelIntegrityError
from ...types import TensorSpec
from ..detect import Detection, merge_groups, nms
from ..image import Geometry
from . import blazeface, ssd, yolo
from .common import Candidates, DecodeParams, NamedArray, class_aware_nms, parse_params, to_detections

DecodeFn = Callable[[Sequence[NamedArray], Any, tuple[int, int]], Candidates]


@dataclass(frozen=True)
class Family:
    """One output family: its parameter type, its decoder, and whether NMS still has to run."""

    params_type: type[DecodeParams]
    decode: DecodeFn
    needs_nms: bool = True
    summary: str = ""


DECODERS: dict[str, Family] = {
    "yolov8": Family(yolo.YoloParams, yolo.decode_v8,
                     summary="Ultralytics YOLOv8/v11 [1,4+C,N] or [1,N,4+C]"),
    "yolov5": Family(yolo.YoloParams, yolo.decode_v5, summary="YOLOv5 [1,N,5+C] with objectness"),
    "yolo_end2end": Family(yolo.YoloParams, yolo.decode_end2end, needs_nms=False,
                           summary="NMS-free YOLO (v10, YOLO26) [1,N,6]"),
    "ssd_postprocess": Family(ssd.SsdPostprocessParams, ssd.decode_postprocess, needs_nms=False,
                              summary="SSD with TFLite_Detection_PostProcess: boxes, classes, scores, count"),
    "ssd": Family(ssd.SsdParams, ssd.decode_raw, summary="SSD box encodings [1,N,4] + class scores, anchors"),
    "blazeface": Family(blazeface.BlazeFaceParams, blazeface.decode, summary="MediaPipe BlazeFace"),
}
AUTO = "auto"


def _rows_and_values(shape: tuple[int | None, ...]) -> tuple[int, int] | None:
    dims = [d for d in shape if d is not None]
    if len(shape) not in (2, 3) or len(dims) != len(shape):
        return None
    return dims[-2], dims[-1]


def _single_output_family(spec: TensorSpec, labels: Sequence[str]) -> str | None:
    dims = _rows_and_values(spec.shape)
    if dims is None:
        return None
    first, last = dims
    if first < last:
        return "yolov8"  # values first: only Ultralytics heads are laid out so
    if labels and last == 4 + len(labels):
        return "yolov8"
    if labels and last == 5 + len(labels):
        return "yolov5"
    return {84: "yolov8", 85: "yolov5"}.get(last)  # the 80 COCO classes, unlabelled


def detect_family(specs: Sequence[TensorSpec], labels: Sequence[str] = ()) -> str:
    """The decoder family an output signature belongs to, or ModelIntegrityError naming the choices."""
    found: str | None = None
    if len(specs) == 4:
        found = "ssd_postprocess"
    elif len(specs) == 1:
        found = _single_output_family(specs[0], labels)
    elif len(specs) == 2:
        last = sorted(s.shape[-1] or 0 for s in specs)
        if last[0] == 1 and last[1] >= 4:
            found = "blazeface"
        elif 4 in last:
            found = "ssd"
    if found is None:
        shown = "; ".join(s.describe() for s in specs)
        raise ModelIntegrityError(
            f"cannot tell which detection head this is ({shown}); set postprocess.kind in a manifest "
            f"(edgerun models import --decoder ...) to one of: {', '.join(DECODERS)}")
    return found


class Decoder:
    """A family, its parsed parameters and the labels: raw outputs -> Detections in source pixels."""

    def __init__(self, kind: str, params: DecodeParams, labels: Sequence[str] = ()) -> None:
        self.kind = kind
        self.family = DECODERS[kind]
        self.params = params
        self.labels = tuple(labels)
        is_ssd = isinstance(params, ssd.SsdPostprocessParams | ssd.SsdParams)
        self.label_shift = ssd.label_offset(params, labels) if is_ssd else 0  # type: ignore[arg-type]

    @classmethod
    def from_postprocess(cls, postprocess: Mapping[str, Any], specs: Sequence[TensorSpec],
                         labels: Sequence[str] = (), where: str = "postprocess") -> Decoder:
        """From a manifest's postprocess block: ``kind`` (or auto) plus that family's parameters."""
        values = dict(postprocess)
        kind = str(values.pop("kind", AUTO))
        if kind == AUTO:
            kind = detect_family(specs, labels)
        if kind not in DECODERS:
            raise ModelIntegrityError(
                f"{where}: unknown detection decoder {kind!r}; known: {', '.join(DECODERS)}")
        return cls(kind, parse_params(DECODERS[kind].params_type, values, f"{where} ({kind})"), labels)

    def candidates(self, outputs: Sequence[NamedArray], input_hw: tuple[int, int]) -> Candidates:
        """Decoded and suppressed candidates, still in model-input pixels."""
        found = self.family.decode(outputs, self.params, input_hw)
        if self.label_shift:
            found = Candidates(found.boxes, found.scores, found.class_ids + self.label_shift, found.keypoints)
        if isinstance(self.params, blazeface.BlazeFaceParams):
            return _weighted(found, self.params)
        if not self.family.needs_nms:
            order = np.argsort(-found.scores, kind="stable")[:self.params.max_detections]
            return found.take(order)
        p = self.params
        return found.take(class_aware_nms(found.boxes, found.scores, found.class_ids, p.iou_threshold,
                                          p.max_detections, p.class_agnostic))

    def __call__(self, outputs: Sequence[NamedArray], input_hw: tuple[int, int], geometry: Geometry,
                 width: int, height: int) -> list[Detection]:
        return to_detections(self.candidates(outputs, input_hw), geometry, width, height, self.labels)


def _weighted(found: Candidates, params: blazeface.BlazeFaceParams) -> Candidates:
    """MediaPipe's NMS: each group of overlapping faces becomes their score-weighted mean box."""
    groups = nms(found.boxes, found.scores, params.iou_threshold)[:params.max_detections]
    weighted = params.nms == "weighted"
    keypoints = found.keypoints
    if keypoints is None:
        keypoints = np.zeros((len(found.scores), 0), np.float32)
    best = np.array([g[0] for g in groups], dtype=np.int64)
    return Candidates(merge_groups(found.boxes, found.scores, groups, weighted), found.scores[best],
                      found.class_ids[best], merge_groups(keypoints, found.scores, groups, weighted))


__all__ = ["AUTO", "DECODERS", "Candidates", "DecodeParams", "Decoder", "Family", "class_aware_nms",
           "detect_family", "parse_params"]
