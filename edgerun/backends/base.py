"""Backend and Session protocols, Availability, LoadOptions and the shared input checks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import numpy as np

from ..errors import InvalidInputError, SessionClosedError, TensorSpecError
from ..hal import Platform
from ..types import TensorSpec

if TYPE_CHECKING:
    from .options import BackendOptions

Tensors = dict[str, np.ndarray]
OptionsT = TypeVar("OptionsT", bound="BackendOptions")


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run on a platform, and why (not)."""

    ok: bool
    reason: str

    @classmethod
    def yes(cls, reason: str = "available") -> Availability:
        return cls(True, reason)

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: the chosen backend's typed options, plus what every backend may use.

    ``options`` is the backend's own options object (see ``edgerun backends NAME``); None means
    its defaults. ``threads`` is the CPU thread count for runtimes that take one, used when the
    backend's own ``threads`` option is unset (the service sets it per model without knowing the
    backend). ``platform`` is the detected platform (open_session fills it in) so that a backend
    can pick a delegate or explain a device failure from HAL facts without probing the host again.
    """

    threads: int | None = None
    options: BackendOptions | None = None
    platform: Platform | None = None

    def typed(self, options_class: type[OptionsT]) -> OptionsT:
        """This load's options as ``options_class`` (its defaults when none were given)."""
        if self.options is None:
            return options_class()
        if not isinstance(self.options, options_class):
            raise InvalidInputError(
                f"options for backend {type(self.options).backend!r} cannot load on "
                f"{options_class.backend!r}; give that backend's options (edgerun backends "
                f"{options_class.backend})")
        return self.options

    def threads_for(self, own: int | None) -> int | None:
        """The backend's own ``threads`` option if set, else the load-wide thread count."""
        return own if own is not None else self.threads


@runtime_checkable
class Session(Protocol):
    """A model loaded on a backend: raw tensors in, raw tensors out."""

    backend_name: str
    thread_safe: bool

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]: ...

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Tensors: ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """A stateless runtime plugin: cheap probe, real load."""

    name: str
    formats: tuple[str, ...]

    def probe(self, platform: Platform) -> Availability: ...

    def load(self, artifact: Path, options: LoadOptions) -> Session: ...


class BaseSession(ABC):
    """Shared Session behaviour: input validation, closed state, context manager."""

    backend_name: str = "base"
    thread_safe: bool = False
    device: str | None = None  # where it runs, as the backend names it ("cpu", "gpu:0", "usb:0", ...)
    effective_options: Mapping[str, object] = {}  # the options it was loaded with, defaults resolved

    def __init__(self, input_specs: tuple[TensorSpec, ...], output_specs: tuple[TensorSpec, ...]):
        self._input_specs = input_specs
        self._output_specs = output_specs
        self._closed = False

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        return self._input_specs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        return self._output_specs

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Validate ``inputs`` against the input specs, then run the model."""
        if self._closed:
            raise SessionClosedError(f"{self.backend_name} session is closed")
        self._check_inputs(inputs)
        return self._run(inputs)

    def _check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        if len(inputs) != len(self._input_specs) or any(
            spec.name not in inputs for spec in self._input_specs
        ):
            expected = "; ".join(spec.describe() for spec in self._input_specs)
            raise TensorSpecError(f"inputs {sorted(inputs)} do not match the model's: {expected}")
        for spec in self._input_specs:
            array = inputs[spec.name]
            if not isinstance(array, np.ndarray):
                raise TensorSpecError(
                    f"input {spec.name!r} must be a numpy array, got {type(array).__name__}")
            spec.check(array)

    @abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        """Execute the model on validated inputs."""

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> BaseSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
