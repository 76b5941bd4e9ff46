"""ONNX Runtime backend: CPU by default, explicit execution providers, thread count option."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..errors import BackendUnavailableError, InferenceError, InvalidInputError, ModelLoadError
from ..hal import Platform
from ..types import TensorSpec
from ._imports import has_module, require
from .base import Availability, BaseSession, LoadOptions, Tensors
from .options import BackendOptions
from .ort_providers import choose_providers, provider_names
from .tensorrt_cache import default_cache_dir

CPU_PROVIDER = "CPUExecutionProvider"
_GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                 "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeOptions(BackendOptions):
    """onnxruntime session settings."""

    backend: ClassVar[str] = "onnxruntime"
    threads: int | None = Field(None, ge=1, description="intra-op CPU threads (none: the load's "
                                "thread count, else onnxruntime's default)")
    providers: tuple[str, ...] | None = Field(
        None, min_length=1, description="execution providers in priority order, e.g. "
        "CUDAExecutionProvider,CPUExecutionProvider (none: CPUExecutionProvider)")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="graph optimisation level applied at load")

# ONNX Runtime's type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
    "tensor(uint16)": "uint16", "tensor(int32)": "int32", "tensor(uint32)": "uint32",
    "tensor(int64)": "int64", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
    "tensor(string)": "object",
}


def _spec(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in node.shape)
    return TensorSpec(node.name, shape, np.dtype(_ORT_TYPES.get(node.type, "float32")))


def ort_strings(name: str, array: np.ndarray) -> np.ndarray:
    """A string tensor as onnxruntime reads it: str elements (bytes are decoded as UTF-8;
    onnxruntime itself would turn b"a" into the text "b'a'")."""
    try:
        text = [x.decode("utf-8") if isinstance(x, bytes) else x for x in array.reshape(-1).tolist()]
    except UnicodeDecodeError:
        raise InvalidInputError(f"input {name!r}: onnxruntime string tensors must be UTF-8") from None
    return np.array(text, dtype=object).reshape(array.shape)


def _trt_cache(ort: Any) -> Path:
    """TensorRT EP engine cache: beside the TensorRT backend's, one folder per onnxruntime version."""
    return default_cache_dir().parent / f"onnxruntime-{ort.__version__}-tensorrt"


class OnnxRuntimeSession(BaseSession):
    """An onnxruntime.InferenceSession behind the Session interface."""

    backend_name = "onnxruntime"
    thread_safe = True  # InferenceSession.run may be called from several threads

    def __init__(self, session: Any, providers: list[str]) -> None:
        super().__init__(
            tuple(_spec(n) for n in session.get_inputs()),
            tuple(_spec(n) for n in session.get_outputs()),
        )
        self.providers = providers  # the session's providers in priority order: [0] runs first
        self._session = session
        self._output_names = [spec.name for spec in self.output_specs]
        self._string_inputs = [spec.name for spec in self.input_specs if spec.dtype == object]

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        feeds = dict(inputs)
        for name in self._string_inputs:
            feeds[name] = ort_strings(name, feeds[name])
        try:
            outputs = self._session.run(self._output_names, feeds)
        except Exception as exc:  # vendor boundary: any runtime failure becomes ours
            raise InferenceError(f"onnxruntime failed to run the model: {exc}") from exc
        return dict(zip(self._output_names, outputs, strict=True))

    def close(self) -> None:
        super().close()
        self._session = None


class OnnxRuntimeBackend:
    """Loads ``.onnx`` files with onnxruntime."""

    name = "onnxruntime"
    formats = ("onnx",)

    def probe(self, platform: Platform) -> Availability:
        if not has_module("onnxruntime"):
            return Availability.no("python package onnxruntime not installed (pip install 'edgerun[onnx]')")
        return Availability.yes("onnxruntime installed")

    options_class = OnnxRuntimeOptions

    def load(self, artifact: Path, options: LoadOptions) -> OnnxRuntimeSession:
        ort = require("onnxruntime", "onnx")
        typed = options.typed(OnnxRuntimeOptions)
        available = ort.get_available_providers()
        providers = list(typed.providers or choose_providers(available, options.platform, _trt_cache(ort)))
        missing = [p for p in provider_names(providers) if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"onnxruntime execution providers {missing} are not in this build; available: {available}"
            )
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        session_options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _GRAPH_LEVELS[typed.graph_optimization])
        threads = options.threads_for(typed.threads)
        if threads:
            session_options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(artifact), session_options, providers=providers)
        except Exception as exc:  # vendor boundary: InvalidProtobuf, NoSuchFile, Fail, ...
            raise ModelLoadError(f"onnxruntime could not load {artifact.name}: {exc}") from exc
        opened = OnnxRuntimeSession(session, list(session.get_providers()))
        opened.effective_options = {**typed.effective(), "threads": threads, "providers": opened.providers}
        opened.device = "cpu" if opened.providers[0] == CPU_PROVIDER else opened.providers[0]
        return opened
