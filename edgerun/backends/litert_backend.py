"""LiteRT backend (ai-edge-litert, or legacy tflite_runtime): XNNPACK on CPU, quantized IO via specs."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ..errors import DependencyMissingError, InferenceError, ModelLoadError
from ..hal import Platform
from ..types import Quantization, TensorSpec
from ._imports import has_module
from .base import Availability, BaseSession, LoadOptions, Tensors
from .options import BackendOptions

log = logging.getLogger(__name__)

INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
NATIVE_INFO = "INFO: "  # how LiteRT's C++ logger starts an info line on stderr


LITERT_MISSING = "python package ai-edge-litert not installed (pip install 'edgerun[litert]')"


def installed_interpreter_package() -> str | None:
    """The first installed LiteRT package (ai_edge_litert preferred), found without importing it."""
    packages = (module.split(".")[0] for module in INTERPRETER_MODULES)
    return next((package for package in packages if has_module(package)), None)


def interpreter_module() -> Any:
    """The first importable LiteRT interpreter module (ai-edge-litert preferred)."""
    import importlib

    errors = []
    for name in INTERPRETER_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise DependencyMissingError(
        "no LiteRT interpreter importable (" + "; ".join(errors) + "); "
        "install it with: pip install 'edgerun[litert]'"
    )


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature", detail["shape"])
    shape = tuple(int(d) if d >= 0 else None for d in signature)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantization = Quantization(float(scale), int(zero_point)) if scale else None
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]), quantization)


class LiteRTSession(BaseSession):
    """A LiteRT Interpreter behind the Session interface (not thread-safe)."""

    backend_name = "litert"
    thread_safe = False

    def __init__(self, interpreter: Any, backend_name: str = "litert") -> None:
        self.backend_name = backend_name
        input_details = interpreter.get_input_details()
        output_details = interpreter.get_output_details()
        super().__init__(
            tuple(_spec(d) for d in input_details), tuple(_spec(d) for d in output_details)
        )
        self._interpreter = interpreter
        self._inputs = [(d["name"], d["index"], tuple(d["shape"])) for d in input_details]
        self._outputs = [(d["name"], d["index"]) for d in output_details]

    def _resize_if_needed(self, inputs: Mapping[str, np.ndarray]) -> None:
        resized = False
        for position, (name, index, shape) in enumerate(self._inputs):
            new_shape = inputs[name].shape
            if new_shape != shape:
                self._interpreter.resize_tensor_input(index, list(new_shape), strict=True)
                self._inputs[position] = (name, index, new_shape)
                resized = True
        if resized:
            self._interpreter.allocate_tensors()

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        interpreter = self._interpreter
        try:
            self._resize_if_needed(inputs)
            for name, index, _ in self._inputs:
                interpreter.set_tensor(index, inputs[name])
            interpreter.invoke()
            return {name: interpreter.get_tensor(index) for name, index in self._outputs}
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(f"{self.backend_name} failed to run the model: {exc}") from exc

    def close(self) -> None:
        super().close()
        self._interpreter = None


@contextmanager
def native_info_to_log() -> Iterator[None]:
    """LiteRT's C++ runtime prints "INFO: ..." lines (e.g. "Created TensorFlow Lite XNNPACK delegate
    for CPU.") straight to file descriptor 2. While it loads, they become INFO records of this
    module's logger, shown with -v; any other line it prints is passed on to stderr unchanged."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            _replay(captured.read().decode("utf-8", "replace"))


def _replay(text: str) -> None:
    for line in text.splitlines(keepends=True):
        if line.startswith(NATIVE_INFO):
            log.info("litert: %s", line[len(NATIVE_INFO):].rstrip())
        else:
            sys.stderr.write(line)
    sys.stderr.flush()


def open_interpreter(artifact: Path, threads: int | None, delegates: Sequence[Any] = (),
                     xnnpack: bool = True) -> Any:
    """Create and allocate a LiteRT Interpreter; vendor errors become ModelLoadError."""
    module = interpreter_module()
    kwargs: dict[str, Any] = {"model_path": str(artifact), "num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    if not xnnpack and hasattr(module, "OpResolverType"):
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with native_info_to_log():
            interpreter = module.Interpreter(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"LiteRT could not load {artifact.name}: {exc}") from exc
    return interpreter


THREADS_HELP = "interpreter CPU threads (none: the load's thread count, else LiteRT's default)"


class LiteRTOptions(BackendOptions):
    """LiteRT interpreter settings."""

    backend: ClassVar[str] = "litert"
    threads: int | None = Field(None, ge=1, description=THREADS_HELP)
    xnnpack: bool = Field(True, description="apply the XNNPACK CPU delegate (false: reference kernels)")


class LiteRTBackend:
    """Loads ``.tflite`` files on the CPU (XNNPACK delegate applied by default)."""

    name = "litert"
    formats = ("tflite",)
    options_class = LiteRTOptions

    def probe(self, platform: Platform) -> Availability:
        package = installed_interpreter_package()
        return Availability.yes(f"{package} installed") if package else Availability.no(LITERT_MISSING)

    def load(self, artifact: Path, options: LoadOptions) -> LiteRTSession:
        typed = options.typed(LiteRTOptions)
        if not artifact.is_file():
            raise ModelLoadError(f"LiteRT could not load {artifact}: no such file")
        threads = options.threads_for(typed.threads)
        session = LiteRTSession(open_interpreter(artifact, threads, xnnpack=typed.xnnpack))
        session.device = "cpu"
        session.effective_options = {**typed.effective(), "threads": threads}
        return session
