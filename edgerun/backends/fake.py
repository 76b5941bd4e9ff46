"""Fake backend: a made-up model with configurable tensors, delay and thread-safety (tests and demos).

It never runs a model file: it accepts any artifact, presents the input and output tensors its
options describe, and computes outputs with a fixed rule, so a caller can check that each row
of a batch came back to the request that sent it. It is only chosen when asked for by name
(``--backend fake``); automatic selection never falls back to it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from ..errors import InferenceError, ModelLoadError
from ..hal import Platform
from ..repository import FORMATS_BY_SUFFIX
from ..types import TensorSpec
from .base import Availability, BaseSession, LoadOptions, Tensors
from .options import BackendOptions

_SHAPE = re.compile(r"(?:N|\d+)(?:x(?:N|\d+))*")
ALL_FORMATS = tuple(dict.fromkeys(("edgetpu", *FORMATS_BY_SUFFIX.values())))


def _check_shapes(value: dict[str, str]) -> dict[str, str]:
    bad = [f"{k}={v}" for k, v in value.items() if _SHAPE.fullmatch(v) is None]
    if bad:
        raise ValueError(f"write shapes as name=Nx3x224x224 (N: dynamic batch), not {', '.join(bad)}")
    if not value:
        raise ValueError("needs at least one tensor")
    return value


class FakeOptions(BackendOptions):
    """The made-up model's tensors (float32) and behaviour."""

    backend: ClassVar[str] = "fake"
    inputs: dict[str, str] = Field(default_factory=lambda: {"input": "Nx3x224x224"},
                                   description="input tensors: name=shape, N a dynamic batch dim")
    outputs: dict[str, str] = Field(default_factory=lambda: {"output": "Nx1000"},
                                    description="output tensors: name=shape; row b of every output is "
                                    "(sum of row b of the inputs) + element index")
    delay_ms: float = Field(0.0, ge=0, description="time each infer() call takes")
    thread_safe: bool = Field(True, description="false: concurrent infer() calls fail, as with a "
                              "runtime whose interpreter is not thread-safe")

    @field_validator("inputs", "outputs")
    @classmethod
    def _shapes(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_shapes(value)


def _spec(name: str, text: str) -> TensorSpec:
    shape = tuple(None if d == "N" else int(d) for d in text.split("x"))
    return TensorSpec(name, shape, np.dtype(np.float32))


class FakeSession(BaseSession):
    """Outputs from a fixed rule; counts calls and the most that ever ran at once."""

    backend_name = "fake"

    def __init__(self, options: FakeOptions) -> None:
        super().__init__(tuple(_spec(n, s) for n, s in options.inputs.items()),
                         tuple(_spec(n, s) for n, s in options.outputs.items()))
        self.thread_safe = options.thread_safe
        self.device = "nowhere (fake)"
        self.effective_options = options.effective()
        self._delay_s = options.delay_ms / 1000.0
        self._lock = threading.Lock()
        self._running = 0
        self.calls = 0
        self.max_concurrent = 0

    def _enter(self) -> None:
        with self._lock:
            self._running += 1
            self.calls += 1
            self.max_concurrent = max(self.max_concurrent, self._running)
            clash = self._running > 1 and not self.thread_safe
        if clash:
            self._leave()
            raise InferenceError("fake session is not thread-safe and was called concurrently")

    def _leave(self) -> None:
        with self._lock:
            self._running -= 1

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        self._enter()
        try:
            if self._delay_s:
                time.sleep(self._delay_s)
            return self._outputs(inputs)
        finally:
            self._leave()

    def _outputs(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        first = next(iter(inputs.values()))
        rows = first.shape[0] if first.ndim else 1
        sums = sum(np.asarray(a, np.float64).reshape(rows, -1).sum(axis=1) for a in inputs.values())
        results = {}
        for spec in self.output_specs:
            inner = tuple(d or 1 for d in spec.shape[1:])
            index = np.arange(int(np.prod(inner)), dtype=np.float64).reshape(inner)
            results[spec.name] = (np.reshape(sums, (rows,) + (1,) * len(inner)) + index).astype(np.float32)
        return results


class FakeBackend:
    """Loads any artifact as a made-up model (see FakeOptions); chosen only by name."""

    name = "fake"
    formats = ALL_FORMATS
    options_class = FakeOptions
    explicit_only = True  # never picked by automatic selection

    def probe(self, platform: Platform) -> Availability:
        return Availability.yes("fake backend: made-up outputs, for tests and demos")

    def load(self, artifact: Path, options: LoadOptions) -> FakeSession:
        typed = options.typed(FakeOptions)
        if not artifact.exists():
            raise ModelLoadError(f"fake backend: no model file {artifact}")
        return FakeSession(typed)


def fake_options(**values: Any) -> LoadOptions:
    """LoadOptions for the fake backend, e.g. ``fake_options(delay_ms=5, thread_safe=False)``."""
    return LoadOptions(options=FakeOptions.model_validate(values))
