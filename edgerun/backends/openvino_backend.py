"""OpenVINO backend: IR (.xml/.bin) or ONNX on CPU/GPU/NPU, the AUTO device by default."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..errors import BackendUnavailableError, InferenceError, ModelLoadError
from ..hal import Platform
from ..types import TensorSpec
from ._imports import has_module, require
from .base import Availability, BaseSession, LoadOptions, Tensors
from .options import BackendOptions

log = logging.getLogger(__name__)

DEFAULT_DEVICE = "AUTO"


def _spec(port: Any) -> TensorSpec:
    shape = tuple(None if dim.is_dynamic else dim.get_length() for dim in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()))


class OpenVinoSession(BaseSession):
    """An OpenVINO CompiledModel with one InferRequest per calling thread (so it is thread-safe)."""

    backend_name = "openvino"
    thread_safe = True

    def __init__(self, compiled: Any, devices: list[str]) -> None:
        super().__init__(tuple(_spec(p) for p in compiled.inputs), tuple(_spec(p) for p in compiled.outputs))
        self.devices = devices
        self._compiled = compiled
        self._requests = threading.local()

    def _request(self) -> Any:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        return request

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        try:
            results = self._request().infer(dict(inputs))
        except RuntimeError as exc:  # vendor boundary: OpenVINO reports everything as RuntimeError
            raise InferenceError(f"openvino failed to run the model: {' '.join(str(exc).split())}") from exc
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return {spec.name: np.asarray(by_name[spec.name]) for spec in self.output_specs}

    def close(self) -> None:
        super().close()
        self._compiled = None
        self._requests = threading.local()


class OpenVinoOptions(BackendOptions):
    """OpenVINO compile settings."""

    backend: ClassVar[str] = "openvino"
    device: str = Field(DEFAULT_DEVICE, min_length=1, description="OpenVINO device: AUTO, CPU, GPU, "
                        "NPU, GPU.1, AUTO:NPU,CPU, ...")
    performance_hint: Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"] = Field(
        "LATENCY", description="OpenVINO PERFORMANCE_HINT")
    precision: Literal["f32", "f16", "bf16"] = Field(
        "f32", description="INFERENCE_PRECISION_HINT (f32 keeps results equal to the fp32 model)")
    threads: int | None = Field(None, ge=1, description="INFERENCE_NUM_THREADS (none: the load's "
                                "thread count, else OpenVINO's default)")


class OpenVinoBackend:
    """Loads OpenVINO IR or ONNX on an OpenVINO device (AUTO, CPU, GPU, NPU, AUTO:NPU,CPU)."""

    name = "openvino"
    formats = ("openvino", "onnx")
    options_class = OpenVinoOptions

    def probe(self, platform: Platform) -> Availability:
        if not has_module("openvino"):
            return Availability.no("python package openvino not installed (pip install 'edgerun[openvino]')")
        return Availability.yes("openvino installed (device AUTO)")

    def load(self, artifact: Path, options: LoadOptions) -> OpenVinoSession:
        ov = require("openvino", "openvino")
        if not artifact.is_file():
            raise ModelLoadError(f"openvino could not load {artifact.name}: no such file")
        typed = options.typed(OpenVinoOptions)
        core = ov.Core()
        device = typed.device
        self._check_device(core, device)
        # f32 unless asked: CPUs with bf16 support otherwise run fp32 models in bf16 (top-5 changes).
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": typed.performance_hint,
            "INFERENCE_PRECISION_HINT": typed.precision,
        }
        threads = options.threads_for(typed.threads)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            compiled = core.compile_model(core.read_model(str(artifact)), device, config)
        except RuntimeError as exc:  # vendor boundary: unreadable/unsupported model
            first = next((line for line in str(exc).splitlines() if "Exception" not in line), str(exc))
            raise ModelLoadError(f"openvino could not load {artifact.name}: {first.strip()}") from exc
        devices = list(compiled.get_property("EXECUTION_DEVICES"))
        log.info("openvino compiled %s for %s (executes on %s)", artifact.name, device, ", ".join(devices))
        session = OpenVinoSession(compiled, devices)
        session.device = ",".join(devices)
        session.effective_options = {**typed.effective(), "threads": threads}
        return session

    @staticmethod
    def _check_device(core: Any, device: str) -> None:
        base = device.split(":", 1)[0].split(".", 1)[0].upper()
        available = list(core.available_devices)
        if base in ("AUTO", "HETERO", "MULTI", "BATCH"):
            return
        if not any(d.split(".", 1)[0] == base for d in available):
            raise BackendUnavailableError(
                f"openvino device {device!r} is not available here; available: {', '.join(available)} "
                "(or AUTO, which picks among them)"
            )
