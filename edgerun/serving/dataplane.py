"""The V2 inference data plane: validate, execute and shape results on plain values, for any transport.

HTTP (v2.py) and gRPC (grpc_v2.py) decode their own wire format into a :class:`DecodedRequest`,
call :func:`infer`, and encode the :class:`OutputTensor` list it returns their own way. Nothing
here knows about requests, sockets or status codes: errors are edgerun exceptions that each
front end maps to its protocol's error (HTTP status, gRPC status code).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..backends.base import Tensors
from ..errors import InvalidInputError
from ..predictor import effective_settings
from ..types import to_v2_datatype
from .batching import batch_rows
from .codec import DecodedRequest, OutputTensor, classification
from .config import triton_settings
from .execution import VERSION, ModelRunner

UNSUPPORTED_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
CPU_BACKENDS = ("onnxruntime", "litert")
Encoded = TypeVar("Encoded")


@dataclass(frozen=True)
class OutputPlan:
    """One output to return: its name, whether it travels binary, its classification count."""

    name: str
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class InferResult:
    """What a front end encodes: the response header fields and the output tensors."""

    model_name: str
    model_version: str
    id: str | None
    outputs: list[OutputTensor]

    def header(self) -> dict[str, object]:
        header: dict[str, object] = {"model_name": self.model_name, "model_version": self.model_version}
        if self.id is not None:
            header["id"] = self.id
        return header


def _describe(runner: ModelRunner) -> str:
    return "; ".join(s.describe() for s in runner.session.input_specs)


def check_inputs(inputs: Tensors, runner: ModelRunner) -> None:
    """InvalidInputError unless names, datatypes, shapes and batch size fit the model."""
    specs = runner.input_specs_by_name
    if inputs.keys() != specs.keys():
        unknown = sorted(set(inputs) - set(specs))
        missing = sorted(set(specs) - set(inputs))
        problem = f"unknown input(s) {unknown}" if unknown else f"missing input(s) {missing}"
        raise InvalidInputError(f"{problem}; model {runner.name} takes: {_describe(runner)}")
    for name, spec in specs.items():
        array = inputs[name]
        if array.dtype != spec.dtype:
            raise InvalidInputError(f"input {name!r} must be {to_v2_datatype(spec.dtype)}, "
                                    f"got {to_v2_datatype(array.dtype)} ({spec.describe()})")
        if not spec.accepts_shape(array.shape):
            raise InvalidInputError(f"input {name!r} has shape {list(array.shape)}; model expects "
                                    f"{spec.describe()}")
    if runner.max_batch_size:
        rows = batch_rows(inputs)
        if not 1 <= rows <= runner.max_batch_size:
            raise InvalidInputError(f"batch size {rows} is outside 1..{runner.max_batch_size} "
                                    f"(max_batch_size of model {runner.name})")


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{what} must be true or false, got {value!r}")
    return value


def plan_outputs(decoded: DecodedRequest, runner: ModelRunner) -> list[OutputPlan]:
    """The outputs to return, in request order (all of them when the request names none)."""
    parameters = decoded.request.parameters or {}
    default_binary = decoded.raw_binary or _flag(parameters.get("binary_data_output", False),
                                                 "binary_data_output")
    names = runner.output_names
    if decoded.request.outputs is None:
        return [OutputPlan(name, default_binary) for name in names]
    plan = []
    for out in decoded.request.outputs:
        if out.name not in names:
            raise InvalidInputError(f"unknown output {out.name!r}; model {runner.name} has {names}")
        p = out.parameters or {}
        if "shared_memory_region" in p:
            raise InvalidInputError("the shared memory extension is not supported")
        count = p.get("classification", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidInputError(f"output {out.name!r}: classification must be an integer >= 0")
        plan.append(OutputPlan(out.name, _flag(p.get("binary_data", default_binary), "binary_data"), count))
    return plan


def check_parameters(parameters: dict[str, Any] | None) -> None:
    for found in (name for name in UNSUPPORTED_PARAMETERS if (parameters or {}).get(name)):
        raise InvalidInputError(f"parameter {found!r} needs Triton's sequence extension, "
                                "which edgerun does not implement")


def timeout_s(parameters: dict[str, Any] | None, limit: float) -> float:
    """The server limit, or the request's shorter "timeout" parameter (microseconds)."""
    value = (parameters or {}).get("timeout")
    if value is None:
        return limit
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInputError("parameter 'timeout' must be a positive integer (microseconds)")
    return min(limit, value / 1e6)


def shape_outputs(plan: list[OutputPlan], results: Tensors, runner: ModelRunner) -> list[OutputTensor]:
    """The planned outputs as tensors (classification applied)."""
    tensors = []
    for item in plan:
        array = np.asarray(results[item.name])
        if item.classification and array.dtype.kind not in "iuf":
            raise InvalidInputError(f"output {item.name!r}: classification needs a numeric output")
        if item.classification:
            array = classification(array, item.classification, runner.package.labels)
        tensors.append(OutputTensor(item.name, array, item.binary))
    return tensors


async def infer(runner: ModelRunner, decoded: DecodedRequest, limit_s: float, started_ns: int,
                encode: Callable[[InferResult], Encoded]) -> Encoded:
    """Validate, execute, shape and ``encode`` one decoded request; the model's statistics count it.

    ``started_ns`` (perf_counter_ns) is when the front end began reading the request, so that
    decoding counts as the request's compute-input stage and ``encode`` as its compute-output.
    """
    try:
        check_parameters(decoded.request.parameters)
        check_inputs(decoded.inputs, runner)
        plan = plan_outputs(decoded, runner)
        timeout = timeout_s(decoded.request.parameters, limit_s)
        decoded_at = time.perf_counter_ns()
        results, timing = await runner.infer(decoded.inputs, timeout)
        inferred_at = time.perf_counter_ns()
        encoded = encode(InferResult(runner.name, VERSION, decoded.request.id,
                                     shape_outputs(plan, results, runner)))
    except Exception:
        request_failed(runner, started_ns)
        raise
    runner.record_request(started_ns, decoded_at, inferred_at, timing)
    return encoded


def request_failed(runner: ModelRunner, started_ns: int) -> None:
    """Count a request that failed before :func:`infer` (e.g. while decoding)."""
    runner.stats.request_done(False, time.perf_counter_ns() - started_ns)


def model_metadata(runner: ModelRunner) -> dict[str, Any]:
    return {"name": runner.name, "versions": [VERSION], "platform": runner.platform,
            "inputs": runner.tensor_metadata(runner.session.input_specs),
            "outputs": runner.tensor_metadata(runner.session.output_specs)}


def _triton_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def model_config(runner: ModelRunner) -> dict[str, Any]:
    """Triton's model configuration JSON (what perf_analyzer and tritonclient read)."""
    batch = runner.max_batch_size

    def tensors(specs: tuple[Any, ...]) -> list[dict[str, Any]]:
        rows = runner.tensor_metadata(specs)
        return [{"name": r["name"], "data_type": _triton_type(str(r["datatype"])),
                 "dims": list(r["shape"])[1:] if batch else r["shape"]} for r in rows]

    config: dict[str, Any] = {
        "name": runner.name, "platform": runner.platform, "backend": runner.backend,
        "max_batch_size": batch, "version_policy": {"latest": {"num_versions": 1}},
        "input": tensors(runner.session.input_specs), "output": tensors(runner.session.output_specs),
        "instance_group": [{"name": f"{runner.name}_0", "count": runner.workers,
                            "kind": "KIND_CPU" if runner.backend in CPU_BACKENDS else "KIND_MODEL"}],
    }
    if runner.config.dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": runner.config.max_queue_delay_us,
                                      "preferred_batch_size": []}
    config.update(triton_settings(effective_settings(runner.session), runner.backend in CPU_BACKENDS))
    return config
