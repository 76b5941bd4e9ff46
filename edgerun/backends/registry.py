"""Backend registry: built-in table, entry-point plugins, EDGERUN_BACKEND override, select() with reasons."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from ..errors import BackendNotFoundError, BackendUnavailableError
from ..hal import Platform
from ..repository import Artifact, ModelPackage
from .base import Backend

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edgerun.backends"

# name -> "module:Class"; imported only when the backend is first used.
BUILTIN_BACKENDS: dict[str, str] = {
    "onnxruntime": "edgerun.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "litert": "edgerun.backends.litert_backend:LiteRTBackend",
    "tensorrt": "edgerun.backends.tensorrt_backend:TensorRTBackend",
    "edgetpu": "edgerun.backends.edgetpu:EdgeTPUBackend",
    "armnpu": "edgerun.backends.armnpu:ArmNpuBackend",
    "rknn": "edgerun.backends.rknn:RknnBackend",
    "ncnn": "edgerun.backends.ncnn_backend:NcnnBackend",
    "openvino": "edgerun.backends.openvino_backend:OpenVinoBackend",
    "simulated": "edgerun.backends.simulated:SimulatedBackend",
    "fake": "edgerun.backends.fake:FakeBackend",
}
# Chosen only when named (--backend, EDGERUN_BACKEND, a config file): never an automatic fallback.
EXPLICIT_ONLY: frozenset[str] = frozenset({"fake"})

# Accelerators first, then the CPU runtimes; names not registered are ignored. "simulated" is
# last: it can only be chosen on an emulated board, where the board profile puts it first.
DEFAULT_ORDER: tuple[str, ...] = (
    "tensorrt",
    "edgetpu",
    "rknn",
    "hailo",
    "armnpu",
    "openvino",
    "onnxruntime",
    "litert",
    "ncnn",
    "simulated",
)


@dataclass(frozen=True)
class Selection:
    """The chosen backend and artifact, plus why every other backend was passed over."""

    backend: Backend
    artifact: Artifact
    report: Mapping[str, str] = field(default_factory=dict)

    def explain(self) -> str:
        skipped = "; ".join(f"{n}: {r}" for n, r in self.report.items() if n != self.backend.name)
        return f"backend {self.backend.name} ({self.artifact.path.name})" + (
            f"; skipped {skipped}" if skipped else ""
        )


def _load_target(target: str) -> Backend:
    module_name, _, class_name = target.partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class()


class Registry:
    """Maps backend names to classes and chooses one for a model package on a platform."""

    def __init__(self, table: Mapping[str, str] | None = None, plugins: bool = True) -> None:
        self._table = dict(BUILTIN_BACKENDS if table is None else table)
        if plugins:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._table.setdefault(ep.name, ep.value)
        self._instances: dict[str, Backend] = {}

    def names(self) -> list[str]:
        return sorted(self._table)

    def get(self, name: str) -> Backend:
        if name not in self._table:
            raise BackendNotFoundError(f"unknown backend {name!r}; known backends: {', '.join(self.names())}")
        if name not in self._instances:
            self._instances[name] = _load_target(self._table[name])
        return self._instances[name]

    def order(self, prefer: Sequence[str] = (), explicit: bool = False) -> list[str]:
        """Preference order: ``prefer`` first, then the default order, then any plugin; backends
        chosen only by name (``fake``) come last with ``explicit``, else are left out."""
        names = [*prefer, *DEFAULT_ORDER, *self.names()]
        ordered = [n for i, n in enumerate(names) if n in self._table and n not in names[:i]]
        return [n for n in ordered if n not in EXPLICIT_ONLY] + (
            [n for n in ordered if n in EXPLICIT_ONLY] if explicit else [])

    def select(
        self,
        package: ModelPackage,
        platform: Platform,
        backend: str | None = None,
        prefer: Sequence[str] = (),
    ) -> Selection:
        """Choose a backend for ``package``.

        ``backend`` (an explicit option or EDGERUN_BACKEND) is strict: only that one is tried.
        Otherwise ``prefer`` (e.g. the board profile) then the default order are walked.
        """
        if backend is not None:
            self.get(backend)  # unknown names fail here, listing the known ones
        candidates = [backend] if backend is not None else self.order(prefer)
        report: dict[str, str] = {}
        for name in candidates:
            instance = self.get(name)
            availability = instance.probe(platform)
            artifact = package.artifact_for(instance.formats)
            if not availability.ok:
                report[name] = availability.reason
            elif artifact is None:
                report[name] = (
                    f"model {package.name} has no {'/'.join(instance.formats)} artifact "
                    f"(it has {', '.join(package.formats)})"
                )
            else:
                report[name] = f"selected: {availability.reason}"
                return Selection(instance, artifact, report)
        reasons = "; ".join(f"{n}: {r}" for n, r in report.items())
        raise BackendUnavailableError(f"no backend can run model {package.name}: {reasons}")
