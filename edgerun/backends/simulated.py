"""Simulated backend: on an emulated board it stands in for the board's accelerator, running on the CPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ..errors import ModelLoadError
from ..hal import Platform
from ..hal.boards import simulated_target
from ..types import TensorSpec
from .base import Availability, LoadOptions, Session, Tensors
from .litert_backend import LiteRTBackend
from .onnxruntime_backend import OnnxRuntimeBackend
from .options import BackendOptions

_RUNNERS: dict[str, type[OnnxRuntimeBackend] | type[LiteRTBackend]] = {
    ".onnx": OnnxRuntimeBackend,
    ".tflite": LiteRTBackend,
}


class SimulatedSession:
    """A CPU session labelled as the accelerator it stands in for: ``backend_name`` is e.g.
    ``"tensorrt (simulated)"`` and ``simulated`` is True, so every report can say so."""

    simulated = True

    def __init__(self, inner: Session, simulates: str) -> None:
        self._inner = inner
        self.simulates = simulates
        self.runs_on = inner.backend_name
        self.backend_name = f"{simulates} (simulated)"
        self.thread_safe = inner.thread_safe
        self.device = f"cpu (standing in for {simulates})"
        self.effective_options: Mapping[str, Any] = dict(getattr(inner, "effective_options", {}))

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._inner.input_specs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._inner.output_specs

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        return self._inner.infer(inputs)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> SimulatedSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SimulatedOptions(BackendOptions):
    """The simulated backend runs the model with onnxruntime or LiteRT on this machine's CPU."""

    backend: ClassVar[str] = "simulated"
    threads: int | None = Field(None, ge=1, description="CPU threads of the runtime underneath "
                                "(none: the load's thread count)")


class SimulatedBackend:
    """Available only on an emulated platform (a device tree with edgerun-snapshot.json) whose board
    has an accelerator; loads ONNX with onnxruntime or TFLite with LiteRT on this machine's CPU."""

    name = "simulated"
    formats = ("onnx", "tflite")
    options_class = SimulatedOptions

    def probe(self, platform: Platform) -> Availability:
        if not platform.emulated:
            return Availability.no(
                "only on an emulated board (a device tree passed with --root/EDGERUN_HOST_ROOT)"
            )
        target = simulated_target(platform)
        if target is None:
            return Availability.no(f"emulated {platform.board} has no accelerator to stand in for")
        runners = [b().probe(platform) for b in (OnnxRuntimeBackend, LiteRTBackend)]
        if not any(r.ok for r in runners):
            return Availability.no("needs onnxruntime or ai-edge-litert to run the model on the CPU")
        return Availability.yes(
            f"simulated: stands in for {target} on emulated {platform.board}; runs on this machine's CPU"
        )

    def load(self, artifact: Path, options: LoadOptions) -> SimulatedSession:
        runner = _RUNNERS.get(artifact.suffix.lower())
        if runner is None:
            raise ModelLoadError(f"simulated backend runs .onnx or .tflite files, not {artifact.name}")
        typed = options.typed(SimulatedOptions)
        target = (simulated_target(options.platform) if options.platform else None) or "accelerator"
        inner = dataclasses.replace(options, threads=options.threads_for(typed.threads), options=None)
        return SimulatedSession(runner().load(artifact, inner), target)
