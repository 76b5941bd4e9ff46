"""ONNX conversions through onnxruntime's own tools: static int8 QDQ quantisation and fp16 conversion.

``onnx`` and ``onnxruntime.quantization`` are imported inside the functions (the `optimize` extra).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Tensors
from ..errors import DependencyMissingError, InvalidInputError, ModelLoadError
from ..optional import require
from .sensitivity import (
    LayerSensitivity,
    noise_share,
    outliers,
    weight_axis,
    weight_sensitivity,
    weighted_nodes,
)

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("percentile", "minmax", "entropy")
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearSigmoid",
        "QLinearGlobalAveragePool",
        "QLinearConcat",
        "QAttention",
        "DynamicQuantizeMatMul",
    }
)
MIN_OPSET = 13
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_BFLOAT16 = 16


@dataclass(frozen=True)
class Int8Settings:
    """How to quantise: per-channel weights, the activation calibration method, layers kept precise.

    ``protect`` keeps 16-bit weights for the layers the calibration set shows to be outliers
    (see ``sensitivity``); ``keep_float`` names nodes or op types to leave unquantised (a
    Conv/Gemm among them keeps 16-bit weights instead: see ``_plan``)."""

    per_channel: bool = True
    method: str = "percentile"
    percentile: float = 99.99
    keep_float: tuple[str, ...] = ()  # node names or op types left unquantised
    protect: bool = True

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise InvalidInputError(
                f"calibration method {self.method!r} is not one of {', '.join(CALIBRATION_METHODS)}"
            )
        if not 90.0 <= self.percentile < 100.0:
            raise InvalidInputError(f"percentile must be in [90, 100), got {self.percentile}")

    def describe(self) -> str:
        method = f"percentile {self.percentile:g}" if self.method == "percentile" else self.method
        weights = "per-channel" if self.per_channel else "per-tensor"
        kept = f", {len(self.keep_float)} kept float" if self.keep_float else ""
        return f"static QDQ, uint8 activations ({method}), int8 {weights} weights{kept}"


@dataclass
class Int8Result:
    """What quantize_int8 decided: per-layer weight sensitivity and the layers given 16-bit weights."""

    sensitivity: list[LayerSensitivity] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)  # nodes kept at 16-bit weights by the analysis
    precise: list[str] = field(default_factory=list)  # all nodes with 16-bit weights (+ keep_float)
    excluded: list[str] = field(default_factory=list)  # nodes left unquantised

    def describe(self) -> str:
        """The suffix for the report's method line ("" when every weight is int8)."""
        if not self.precise:
            return ""
        why = f", {len(self.protected)} by sensitivity" if self.protected else ""
        return f"; {len(self.precise)} layer(s) with 16-bit weights{why}"

    def to_dict(self) -> dict[str, Any]:
        shares = noise_share(self.sensitivity)
        worst = sorted(self.sensitivity, key=lambda s: s.snr_db)[:5]
        return {
            "protected_layers": self.protected,
            "int16_weight_layers": self.precise,
            "excluded_nodes": self.excluded,
            "weight_sensitivity_worst": [
                {**s.to_dict(), "noise_share": round(shares[s.node], 3)} for s in worst
            ],
        }


@dataclass
class TensorReader:
    """onnxruntime CalibrationDataReader protocol over prepared inputs (get_next/rewind)."""

    inputs: Sequence[Tensors]
    position: int = field(default=0)

    def get_next(self) -> Tensors | None:
        if self.position >= len(self.inputs):
            return None
        self.position += 1
        return dict(self.inputs[self.position - 1])

    def rewind(self) -> None:
        self.position = 0

    def __len__(self) -> int:
        return len(self.inputs)


def _onnx() -> Any:
    return require("onnx", "optimize")


def load_model(path: Path) -> Any:
    """The ModelProto, or ModelLoadError naming the file."""
    try:
        return _onnx().load(str(path))
    except Exception as exc:  # vendor boundary: DecodeError, OSError, ...
        raise ModelLoadError(f"onnx could not read {path.name}: {exc}") from exc


def precision_problem(model: Any, wanted: str) -> str | None:
    """Why ``model`` cannot be converted to ``wanted`` (already quantised / already fp16), or None."""
    found = sorted({n.op_type for n in model.graph.node} & QUANTIZED_OPS)
    if found:
        return f"it is already quantised (it has {', '.join(found)} nodes); start from the fp32 model"
    half = [t.name for t in model.graph.initializer if t.data_type in (_FLOAT16, _BFLOAT16)]
    if half:
        return (
            f"its weights are already 16-bit floats ({len(half)} tensors, e.g. {half[0]!r}); "
            f"{wanted} conversion starts from the fp32 model"
        )
    return None


def _kept_nodes(original: Any, prepared: Any, keep_float: Iterable[str]) -> list[Any]:
    """Nodes of the prepared model named (or of an op type named) in ``keep_float``."""
    wanted = set(keep_float)
    known = {n.name for m in (original, prepared) for n in m.graph.node}
    known |= {n.op_type for m in (original, prepared) for n in m.graph.node}
    unknown = sorted(wanted - known)
    if unknown:
        raise InvalidInputError(
            f"--keep-float {', '.join(unknown)}: no node or op type of that name in the model"
        )
    return [n for n in prepared.graph.node if n.name in wanted or n.op_type in wanted]


def _with_min_opset(model: Any, source: Path, converted: Path, minimum: int = MIN_OPSET) -> Path:
    """Convert ``model`` to opset ``minimum`` when older: per-channel QDQ needs 13 (DequantizeLinear's
    axis), 16-bit weights need 21."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), minimum)
    if opset >= minimum:
        return source
    onnx = _onnx()
    try:
        upgraded = onnx.version_converter.convert_version(model, minimum)
    except Exception as exc:  # vendor boundary
        raise ModelLoadError(
            f"{source.name} uses opset {opset}; converting it to {minimum} failed: {exc}"
        ) from exc
    onnx.save(upgraded, str(converted))
    log.info("%s: opset %d converted to %d for quantisation", source.name, opset, minimum)
    return converted


def _cache_argument(quantize_static: Any, ranges_json: Path | None) -> dict[str, str]:
    """calibration_cache_path (onnxruntime >= 1.32) keeps the tensor ranges for the TensorRT cache."""
    if ranges_json is None or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}
    return {"calibration_cache_path": str(ranges_json)}


def _plan(original: Any, prepared: Any, calibration: Sequence[Tensors], settings: Int8Settings) -> Int8Result:
    """Which nodes get 16-bit weights and which stay unquantised.

    onnxruntime's CPU provider re-quantises the float weights of a Conv/Gemm that sits between
    int8 activations (its WeightBiasQuantization pass: symmetric per-tensor int8) when the session
    loads, so such a node cannot stay float; it keeps 16-bit per-channel weights instead, which
    onnxruntime computes in float. Other op types named in keep_float are left unquantised."""
    weighted = {node.name for node, _ in weighted_nodes(prepared)}
    kept = _kept_nodes(original, prepared, settings.keep_float)
    plan = Int8Result(excluded=[n.name for n in kept if n.name not in weighted])
    if settings.protect:
        plan.sensitivity = weight_sensitivity(prepared, calibration, settings.per_channel)
        plan.protected = [s.node for s in outliers(plan.sensitivity)]
    chosen = set(plan.protected) | {n.name for n in kept if n.name in weighted}
    plan.precise = [n.name for n in prepared.graph.node if n.name in chosen]
    return plan


def _extra_options(settings: Int8Settings, prepared: Any, plan: Int8Result) -> dict[str, Any]:
    quantization = require("onnxruntime.quantization", "optimize")
    options: dict[str, Any] = {}
    if settings.method == "percentile":
        options["CalibPercentile"] = settings.percentile
    if plan.precise:
        int16 = quantization.QuantType.QInt16
        axis = (lambda node: {"axis": weight_axis(node)}) if settings.per_channel else (lambda node: {})
        options["TensorQuantOverrides"] = {
            weight.name: [{"quant_type": int16, **axis(node)}]
            for node, weight in weighted_nodes(prepared)
            if node.name in plan.precise
        }
    return options


def quantize_int8(
    source: Path,
    destination: Path,
    calibration: Sequence[Tensors],
    settings: Int8Settings,
    ranges_json: Path | None = None,
) -> Int8Result:
    """Static int8 QDQ quantisation of ``source`` calibrated on ``calibration`` inputs.

    Weights become int8 (per output channel by default), activations uint8 with ranges from the
    calibration set; the model's own outputs stay float (clipping logits would reorder classes).
    Layers the calibration set shows to be outliers (``settings.protect``) keep 16-bit weights,
    which makes the model opset 21. ``ranges_json`` receives onnxruntime's calibration cache (the
    tensor ranges) for other targets. Returns the plan: sensitivities and the layers kept precise."""
    model = load_model(source)
    with tempfile.TemporaryDirectory(prefix="edgerun-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quantized = Path(scratch) / "quantized.onnx"
        source = _with_min_opset(model, source, Path(scratch) / "opset.onnx")
        try:  # shape inference + ORT's basic graph optimisations; symbolic inference needs sympy
            shape_inference = require("onnxruntime.quantization.shape_inference", "optimize")
            shape_inference.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            prepared_model = load_model(prepared)
            plan = _plan(model, prepared_model, calibration, settings)
            if plan.precise:
                prepared = _with_min_opset(prepared_model, prepared, Path(scratch) / "opset21.onnx", 21)
            _quantize_static(
                prepared,
                quantized,
                calibration,
                settings,
                plan,
                _extra_options(settings, prepared_model, plan),
                ranges_json,
            )
        except (InvalidInputError, ModelLoadError, DependencyMissingError):
            raise
        except Exception as exc:  # vendor boundary: onnxruntime.quantization raises plain exceptions
            raise ModelLoadError(f"onnxruntime could not quantise {source.name}: {exc}") from exc
        result = load_model(quantized)
    float_outputs(result)
    _onnx().save(result, str(destination))
    return plan


def _quantize_static(
    prepared: Path,
    quantized: Path,
    calibration: Sequence[Tensors],
    settings: Int8Settings,
    plan: Int8Result,
    options: dict[str, Any],
    ranges_json: Path | None,
) -> None:
    quantization = require("onnxruntime.quantization", "optimize")
    method = {
        "percentile": quantization.CalibrationMethod.Percentile,
        "minmax": quantization.CalibrationMethod.MinMax,
        "entropy": quantization.CalibrationMethod.Entropy,
    }[settings.method]
    chatter = io.StringIO()  # the calibrators print progress to stdout: keep it for the debug log
    with contextlib.redirect_stdout(chatter):
        quantization.quantize_static(
            str(prepared),
            str(quantized),
            TensorReader(calibration),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=settings.per_channel,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=plan.excluded,
            extra_options=options,
            **_cache_argument(quantization.quantize_static, ranges_json),
        )
    log.debug("onnxruntime.quantization: %s", chatter.getvalue().strip())


def float_outputs(model: Any) -> int:
    """Drop the QuantizeLinear -> DequantizeLinear pair in front of each graph output, in place.

    The producer then writes the float output directly (onnxruntime still runs it in int8 with a
    float result). Returns how many outputs were changed."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    changed = 0
    for output in graph.output:
        dq = producers.get(output.name)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        if sum(q.output[0] in n.input for n in graph.node) != 1:
            continue
        raw = q.input[0]
        for node in graph.node:
            node.output[:] = [output.name if o == raw else o for o in node.output]
            if node is not q:
                node.input[:] = [output.name if i == raw else i for i in node.input]
        graph.node.remove(q)
        graph.node.remove(dq)
        changed += 1
    return changed


def convert_fp16(source: Path, destination: Path) -> None:
    """fp16 weights and compute with float32 inputs and outputs (onnxruntime.transformers.float16)."""
    float16 = require("onnxruntime.transformers.float16", "optimize")
    model = load_model(source)
    try:
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:  # vendor boundary
        raise ModelLoadError(f"fp16 conversion of {source.name} failed: {exc}") from exc
    _onnx().save(converted, str(destination))


def read_ranges(ranges_json: Path) -> dict[str, tuple[float, float]]:
    """Tensor name -> (lowest, highest) from onnxruntime's calibration cache (its own reader)."""
    calibrate = require("onnxruntime.quantization.calibrate", "optimize")
    tensors = calibrate.load_tensors_data(ranges_json)
    ranges = {}
    for name, data in tensors.data.items():
        lowest, highest = data.range_value
        ranges[name] = (float(np.asarray(lowest).min()), float(np.asarray(highest).max()))
    return ranges
