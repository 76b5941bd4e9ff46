"""Shared test helpers: paths, a tiny backend that is never available, corrupt-copy utilities."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgerun.backends.base import Availability, LoadOptions, Session
from edgerun.errors import BackendUnavailableError
from edgerun.hal import Platform
from edgerun.repository import BUILTIN_MODELS

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
MODELS = BUILTIN_MODELS


class AbsentBackend:
    """A backend whose runtime is never installed: exercises the registry's skip path."""

    name = "absent"
    formats = ("onnx", "tflite")

    def probe(self, platform: Platform) -> Availability:
        return Availability.no("runtime 'absent' not installed (test backend)")

    def load(self, artifact: Path, options: LoadOptions) -> Session:
        raise BackendUnavailableError("absent backend cannot load anything")


def copy_package(name: str, destination: Path) -> Path:
    """Copy a built-in model package into ``destination`` and return the copy's folder."""
    target = destination / name
    shutil.copytree(MODELS / name, target)
    return target


def flip_last_byte(path: Path) -> None:
    """Corrupt a file in place without changing its size."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
