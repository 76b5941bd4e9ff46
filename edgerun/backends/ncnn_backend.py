"""ncnn backend (the ``ncnn`` PyPI package): ``.param``/``.bin`` models on ARM-tuned CPU kernels or Vulkan."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ..errors import BackendUnavailableError, InferenceError, ModelLoadError
from ..hal import Platform
from ..types import TensorSpec
from ._imports import has_module, require
from .base import Availability, BaseSession, LoadOptions, Tensors
from .options import BackendOptions

_INPUT_LINE = re.compile(r"^Input\s+\S+\s+0\s+1\s+(?P<blob>\S+)(?P<params>.*)$", re.MULTILINE)


def input_shapes(param_text: str) -> dict[str, tuple[int, ...]]:
    """Blob name -> (c, h, w) from the ``Input`` layers of a .param file (0=w 1=h 2=c; 0 = unknown)."""
    shapes = {}
    for match in _INPUT_LINE.finditer(param_text):
        params = dict(re.findall(r"(-?\d+)=(\S+)", match["params"]))
        w, h, c = (int(params.get(key, 0)) for key in ("0", "1", "2"))
        shapes[match["blob"]] = tuple(d for d in (c, h, w) if d > 0)
    return shapes


def _bin_path(param: Path) -> Path:
    return param.with_suffix(".bin")


class NcnnSession(BaseSession):
    """An ncnn.Net; each infer() uses its own Extractor, so concurrent calls are safe.

    ncnn has no batch dimension: the session adds one, and runs a batch item by item.
    """

    backend_name = "ncnn"
    thread_safe = True

    def __init__(self, ncnn: Any, net: Any, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self._ncnn = ncnn
        self._net = net
        self._in_names = list(net.input_names())
        self._out_names = sorted(net.output_names())
        missing = [n for n in self._in_names if not shapes.get(n)]
        if missing:
            raise ModelLoadError(
                f"ncnn model declares no shape for inputs {missing}; add 0=w 1=h 2=c "
                "to its Input layers in the .param file"
            )
        inputs = tuple(TensorSpec(n, (None, *shapes[n]), np.dtype(np.float32)) for n in self._in_names)
        self._lock = threading.Lock()
        probe = self._extract({n: np.zeros(shapes[n], np.float32) for n in self._in_names})
        outputs = tuple(TensorSpec(n, (None, *probe[n].shape), np.dtype(np.float32)) for n in self._out_names)
        super().__init__(inputs, outputs)

    def _extract(self, items: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        extractor = self._net.create_extractor()
        try:
            for name, array in items.items():
                extractor.input(name, self._ncnn.Mat(np.ascontiguousarray(array, np.float32)))
            results = {}
            for name in self._out_names:
                status, mat = extractor.extract(name)
                if status != 0:
                    raise InferenceError(f"ncnn failed to compute output {name!r} (status {status})")
                results[name] = np.array(mat)
            return results
        finally:
            extractor.clear()

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        batch = next(iter(inputs.values())).shape[0]
        per_item = [self._extract({n: inputs[n][i] for n in self._in_names}) for i in range(batch)]
        return {n: np.stack([item[n] for item in per_item]) for n in self._out_names}

    def close(self) -> None:
        super().close()
        if self._net is not None:
            self._net.clear()
        self._net = None


class NcnnOptions(BackendOptions):
    """ncnn Net settings."""

    backend: ClassVar[str] = "ncnn"
    threads: int | None = Field(None, ge=1, description="CPU threads (none: the load's thread count, "
                                "else ncnn's default)")
    vulkan: bool = Field(False, description="run on the GPU through Vulkan")


class NcnnBackend:
    """Loads ncnn ``.param`` + ``.bin`` pairs; option ``vulkan`` uses the GPU through Vulkan."""

    name = "ncnn"
    formats = ("ncnn",)
    options_class = NcnnOptions

    def probe(self, platform: Platform) -> Availability:
        if not has_module("ncnn"):
            return Availability.no("python package ncnn not installed (pip install 'edgerun[ncnn]')")
        return Availability.yes("ncnn installed (CPU; option vulkan=true for the GPU)")

    def load(self, artifact: Path, options: LoadOptions) -> NcnnSession:
        ncnn = require("ncnn", "ncnn")
        typed = options.typed(NcnnOptions)
        if not artifact.is_file() or not _bin_path(artifact).is_file():
            raise ModelLoadError(
                f"ncnn could not load {artifact.name}: needs {artifact.name} and "
                f"{_bin_path(artifact).name} side by side"
            )
        net = ncnn.Net()
        net.opt.use_vulkan_compute = self._vulkan(ncnn, typed.vulkan)
        threads = options.threads_for(typed.threads)
        if threads:
            net.opt.num_threads = threads
        text = artifact.read_text(encoding="utf-8", errors="replace")
        if net.load_param(str(artifact)) != 0 or net.load_model(str(_bin_path(artifact))) != 0:
            net.clear()
            raise ModelLoadError(f"ncnn could not load {artifact.name}: malformed .param or truncated .bin")
        try:
            session = NcnnSession(ncnn, net, input_shapes(text))
        except InferenceError as exc:
            net.clear()
            raise ModelLoadError(f"ncnn could not run {artifact.name}: {exc}") from exc
        session.device = "vulkan" if typed.vulkan else "cpu"
        session.effective_options = {**typed.effective(), "threads": threads}
        return session

    @staticmethod
    def _vulkan(ncnn: Any, wanted: bool) -> bool:
        if not wanted:
            return False
        if ncnn.get_gpu_count() < 1:
            raise BackendUnavailableError(
                "ncnn option vulkan=true but no Vulkan GPU (or no libvulkan.so.1)"
            )
        return True
