"""Which layers int8 weights hurt most: per-layer weight-only sensitivity measured on the calibration set.

Each Conv/Gemm weight is rounded to int8 the way onnxruntime's quantiser does (symmetric, per
output channel, [-127, 127]) while every other layer stays float; the model's outputs on the
calibration inputs are compared with the float outputs as a signal-to-noise ratio in dB. A layer
whose rounding alone makes a large share of the noise of all layers together (MobileNetV2's first
depthwise 3x3: large weights of opposite sign whose products cancel) is kept at 16-bit weights. Only the
calibration images are used, never the held-out ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Tensors
from ..optional import require
from .images import spread

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})
MAX_INPUTS = 16  # calibration inputs used for the analysis, spread over the set
OUTLIER_SHARE = 0.25  # of the summed rounding noise of all layers


@dataclass(frozen=True)
class LayerSensitivity:
    """Output SNR (dB) of the float model with only this node's weights rounded to int8."""

    node: str
    weight: str
    snr_db: float

    def to_dict(self) -> dict[str, object]:
        return {"node": self.node, "weight": self.weight, "snr_db": round(self.snr_db, 2)}


def fake_quantize(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """``weight`` rounded to symmetric int8 per slice along ``axis`` (one scale when None), as float32."""
    if axis is None:
        return fake_quantize(weight.reshape(1, -1), 0).reshape(weight.shape)
    moved = np.moveaxis(weight.astype(np.float32), axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    scale = np.abs(flat).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    rounded = np.clip(np.round(flat / scale[:, None]), -127, 127) * scale[:, None]
    return np.moveaxis(rounded.reshape(moved.shape), 0, axis).astype(np.float32)


def snr_db(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    """10*log10(signal power / error power) over every output of every input (inf when equal)."""
    signal = sum(float(np.square(r, dtype=np.float64).sum()) for r in reference)
    pairs = zip(reference, candidate, strict=True)
    noise = sum(float(np.square(r.astype(np.float64) - c).sum()) for r, c in pairs)
    return math.inf if noise == 0 else 10.0 * math.log10(max(signal, 1e-30) / noise)


def weight_axis(node: Any) -> int:
    """Output-channel axis of the weight: 0 for Conv and for Gemm with transB=1, else 1."""
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0


def weighted_nodes(model: Any) -> list[tuple[Any, Any]]:
    """(node, weight initializer) for each Conv/ConvTranspose/Gemm whose weight is a float initializer."""
    initializers = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        has_weight = node.op_type in WEIGHTED_OPS and len(node.input) > 1
        weight = initializers.get(node.input[1]) if has_weight else None
        if weight is not None and weight.data_type == 1:  # FLOAT
            found.append((node, weight))
    return found


def _outputs(model: Any, inputs: Sequence[Tensors]) -> list[np.ndarray]:
    ort = require("onnxruntime", "optimize")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [np.asarray(o, np.float32) for tensors in inputs for o in session.run(None, dict(tensors))]


def weight_sensitivity(
    model: Any, inputs: Sequence[Tensors], per_channel: bool = True
) -> list[LayerSensitivity]:
    """Per-layer weight-only int8 sensitivity of ``model`` (a float ModelProto) on ``inputs``,
    rounding per output channel or, with ``per_channel`` False, per tensor (as the quantiser will)."""
    numpy_helper = require("onnx.numpy_helper", "optimize")
    chosen = spread(inputs, MAX_INPUTS)
    reference = _outputs(model, chosen)
    results = []
    for node, initializer in weighted_nodes(model):
        original = numpy_helper.to_array(initializer)
        rounded = fake_quantize(original, weight_axis(node) if per_channel else None)
        initializer.CopyFrom(numpy_helper.from_array(rounded, initializer.name))
        try:
            measured = snr_db(reference, _outputs(model, chosen))
            results.append(LayerSensitivity(node.name, initializer.name, measured))
        finally:
            initializer.CopyFrom(numpy_helper.from_array(original, initializer.name))
    return results


def noise_share(sensitivities: Sequence[LayerSensitivity]) -> dict[str, float]:
    """Each layer's rounding noise (10^(-SNR/10)) as a share of the sum over all layers."""
    noise = {s.node: 10.0 ** (-s.snr_db / 10.0) if math.isfinite(s.snr_db) else 0.0 for s in sensitivities}
    total = sum(noise.values())
    return {node: (value / total if total > 0 else 0.0) for node, value in noise.items()}


def outliers(
    sensitivities: Sequence[LayerSensitivity], share: float = OUTLIER_SHARE
) -> list[LayerSensitivity]:
    """Layers whose int8 rounding alone makes at least ``share`` of all layers' noise (worst first).

    Needs at least four weighted layers: in a smaller model every layer is a large share."""
    if len(sensitivities) < 4:
        return []
    shares = noise_share(sensitivities)
    return sorted((s for s in sensitivities if shares[s.node] >= share), key=lambda s: s.snr_db)
