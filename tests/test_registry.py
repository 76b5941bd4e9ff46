"""Backend registry: lookup, preference order, strict override, skip reasons, entry-point plugins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgerun.backends.registry import ENTRY_POINT_GROUP, Registry
from edgerun.errors import BackendNotFoundError, BackendUnavailableError
from edgerun.hal import Platform
from edgerun.repository import ModelRepository

from .helpers import MODELS

TABLE = {
    "absent": "tests.helpers:AbsentBackend",
    "onnxruntime": "edgerun.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "litert": "edgerun.backends.litert_backend:LiteRTBackend",
}


def test_unknown_backend_lists_known_ones(registry: Registry) -> None:
    with pytest.raises(BackendNotFoundError, match="known backends: .*litert, .*onnxruntime"):
        registry.get("cuda-magic")


def test_default_order_puts_onnxruntime_first_and_reports_skips(platform: Platform) -> None:
    registry = Registry(TABLE, plugins=False)
    package = ModelRepository().get("mobilenet_v2")
    selection = registry.select(package, platform, prefer=["absent"])
    assert selection.backend.name == "onnxruntime"
    assert selection.artifact.format == "onnx"
    assert "not installed" in selection.report["absent"]
    assert "skipped absent" in selection.explain()


def test_explicit_backend_is_strict(platform: Platform) -> None:
    registry = Registry(TABLE, plugins=False)
    package = ModelRepository().get("mobilenet_v2")
    assert registry.select(package, platform, backend="litert").artifact.format == "tflite"
    with pytest.raises(BackendUnavailableError, match="absent: runtime 'absent' not installed"):
        registry.select(package, platform, backend="absent")


def test_backend_without_matching_artifact_is_skipped_with_reason(platform: Platform) -> None:
    registry = Registry(TABLE, plugins=False)
    package = ModelRepository().get(MODELS / "blazeface" / "blazeface.tflite")
    selection = registry.select(package, platform)
    assert selection.backend.name == "litert"
    assert "has no onnx artifact (it has tflite)" in selection.report["onnxruntime"]
    with pytest.raises(BackendUnavailableError, match="onnxruntime: model blazeface has no onnx"):
        registry.select(package, platform, backend="onnxruntime")


def test_third_party_backend_registers_through_entry_points(tmp_path: Path, platform: Platform) -> None:
    dist = tmp_path / "edgerun_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgerun-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nabsent-plugin = tests.helpers:AbsentBackend\n")
    sys.path.insert(0, str(tmp_path))
    try:
        registry = Registry()
    finally:
        sys.path.remove(str(tmp_path))
    assert "absent-plugin" in registry.names()
    assert registry.get("absent-plugin").probe(platform).ok is False
