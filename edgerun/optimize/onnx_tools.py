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

from ..backends._imports import require
from ..backends.base import Tensors
from ..errors import DependencyMissingError, InvalidInputError, ModelLoadError

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
    """How to quantise: per-channel weights, the activation calibration method, nodes kept in float."""

    per_channel: bool = True
    method: str = "percentile"
    percentile: float = 99.99
    keep_float: tuple[str, ...] = ()  # node names or op types left unquantised

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


def _excluded_nodes(model: Any, keep_float: Iterable[str]) -> list[str]:
    wanted = set(keep_float)
    names = [n.name for n in model.graph.node if n.name in wanted or n.op_type in wanted]
    known = {n.name for n in model.graph.node} | {n.op_type for n in model.graph.node}
    unknown = sorted(wanted - known)
    if unknown:
        raise InvalidInputError(
            f"--keep-float {', '.join(unknown)}: no node or op type of that name in the model"
        )
    return names


def _with_min_opset(model: Any, source: Path, converted: Path) -> Path:
    """Per-channel QDQ needs opset 13 (DequantizeLinear's axis): convert older models first."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset >= MIN_OPSET:
        return source
    onnx = _onnx()
    try:
        upgraded = onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # vendor boundary
        raise ModelLoadError(
            f"{source.name} uses opset {opset}; converting it to {MIN_OPSET} failed: {exc}"
        ) from exc
    onnx.save(upgraded, str(converted))
    log.info("%s: opset %d converted to %d for quantisation", source.name, opset, MIN_OPSET)
    return converted


def _cache_argument(quantize_static: Any, ranges_json: Path | None) -> dict[str, str]:
    """calibration_cache_path (onnxruntime >= 1.32) keeps the tensor ranges for the TensorRT cache."""
    if ranges_json is None or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}
    return {"calibration_cache_path": str(ranges_json)}


def _extra_options(settings: Int8Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.method == "percentile":
        options["CalibPercentile"] = settings.percentile
    return options


def quantize_int8(
    source: Path,
    destination: Path,
    calibration: Sequence[Tensors],
    settings: Int8Settings,
    ranges_json: Path | None = None,
) -> None:
    """Static int8 QDQ quantisation of ``source`` calibrated on ``calibration`` inputs.

    Weights become int8 (per output channel by default), activations uint8 with ranges from the
    calibration set; the model's own outputs stay float (clipping logits would reorder classes).
    ``ranges_json`` receives onnxruntime's calibration cache (the tensor ranges) for other targets."""
    model = load_model(source)
    excluded = _excluded_nodes(model, settings.keep_float)
    with tempfile.TemporaryDirectory(prefix="edgerun-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quantized = Path(scratch) / "quantized.onnx"
        source = _with_min_opset(model, source, Path(scratch) / "opset.onnx")
        try:  # shape inference + ORT's basic graph optimisations; symbolic inference needs sympy
            shape_inference = require("onnxruntime.quantization.shape_inference", "optimize")
            shape_inference.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            _quantize_static(prepared, quantized, calibration, settings, excluded, ranges_json)
        except (InvalidInputError, ModelLoadError, DependencyMissingError):
            raise
        except Exception as exc:  # vendor boundary: onnxruntime.quantization raises plain exceptions
            raise ModelLoadError(f"onnxruntime could not quantise {source.name}: {exc}") from exc
        result = load_model(quantized)
    float_outputs(result)
    _onnx().save(result, str(destination))


def _quantize_static(prepared: Path, quantized: Path, calibration: Sequence[Tensors], settings: Int8Settings,
                     excluded: list[str], ranges_json: Path | None) -> None:
    quantization = require("onnxruntime.quantization", "optimize")
    method = {
        "percentile": quantization.CalibrationMethod.Percentile,
        "minmax": quantization.CalibrationMethod.MinMax,
        "entropy": quantization.CalibrationMethod.Entropy,
    }[settings.method]
    chatter = io.StringIO()  # the calibrators print progress to stdout: keep it for the debug log
    with contextlib.redirect_stdout(chatter):
        quantization.quantize_static(
            str(prepared), str(quantized), TensorReader(calibration),
            quant_format=quantization.QuantFormat.QDQ, per_channel=settings.per_channel,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            calibrate_method=method, nodes_to_exclude=excluded, extra_options=_extra_options(settings),
            **_cache_argument(quantization.quantize_static, ranges_json))
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
