"""TensorRT backend without a GPU: probe reasons per device tree, the engine cache's key and its
stale/foreign/corrupt decisions on real files, and option parsing (CUDA: tests/test_cuda_runtime.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgerun.backends import tensorrt_cache as cache
from edgerun.backends.options import parse_options
from edgerun.backends.tensorrt_backend import TensorRTBackend, parse_device, shape_overrides, version_problem
from edgerun.errors import InvalidInputError
from edgerun.hal import HostFS, detect

from .helpers import device_tree

KEY = cache.EngineKey(
    model_sha256="ab" * 32,
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability="8.7",
    precision="fp16",
    inputs=(cache.InputProfile("input", (1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 224, 224)),),
)


def _probe(board: str) -> str:
    return TensorRTBackend().probe(detect(HostFS(device_tree(board)))).reason


def test_probe_reasons_per_tree() -> None:
    assert _probe("rpi5").startswith("no NVIDIA GPU detected")
    assert _probe("imx8mp").startswith("no NVIDIA GPU detected")
    for board in ("jetson-nano", "jetson-xavier-nx", "jetson-orin-nano"):
        assert "--system-site-packages" in _probe(board)  # bindings come from JetPack, not pip
    assert "pip install 'edgerun[tensorrt]'" in _probe("x86-desktop")


def test_bindings_must_match_the_jetpack() -> None:
    nano = detect(HostFS(device_tree("jetson-nano")))
    xavier = detect(HostFS(device_tree("jetson-xavier-nx")))
    orin = detect(HostFS(device_tree("jetson-orin-nano")))
    assert "needs 8.5+" in version_problem("8.2.1", nano)
    assert version_problem("8.5.2.2", xavier) is None
    assert "L4T 35.4.1 (JetPack 5.1.2) ships TensorRT 8.5" in version_problem("10.3.0", xavier)
    assert version_problem("10.3.0", orin) is None and version_problem(None, orin) is None
    assert version_problem("10.7.0", detect(HostFS(device_tree("x86-desktop")))) is None


def test_gpu_node_problems_are_reported(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "desk"
    shutil.copytree(device_tree("x86-desktop"), root, symlinks=True)
    (root / "dev/nvidia0").unlink()
    assert "--gpus all" in TensorRTBackend().probe(detect(HostFS(root))).reason


def test_key_slot_ignores_the_machine_but_lookup_does_not(tmp_path: Path) -> None:
    moved = dataclasses.replace(KEY, tensorrt_version="10.7.0")
    assert moved.slot() == KEY.slot()
    assert dataclasses.replace(KEY, precision="fp32").slot() != KEY.slot()
    assert dataclasses.replace(KEY, inputs=KEY.inputs[:0]).slot() != KEY.slot()
    assert cache.lookup(tmp_path, KEY) == (None, f"no cached engine at {tmp_path / KEY.slot()}.engine")
    stored = cache.store(tmp_path, KEY, b"engine-bytes", 12.5)
    assert cache.lookup(tmp_path, KEY) == (stored, "cache hit")
    path, reason = cache.lookup(tmp_path, moved)
    assert (
        path is None
        and "stale or foreign: tensorrt_version was '10.3.0', this host/request has '10.7.0'" in reason
    )
    foreign = dataclasses.replace(KEY, gpu_name="NVIDIA GeForce RTX 3060", compute_capability="8.6")
    assert "gpu_name was 'Orin'" in cache.lookup(tmp_path, foreign)[1]


def test_corrupt_and_metadata_less_engines_are_rebuilt(tmp_path: Path) -> None:
    stored = cache.store(tmp_path, KEY, b"engine-bytes", 1.0)
    stored.write_bytes(b"engine-bytez")
    assert "is corrupt" in cache.lookup(tmp_path, KEY)[1]
    stored.with_suffix(".json").unlink()
    assert "no readable metadata" in cache.lookup(tmp_path, KEY)[1]
    assert not list(tmp_path.glob("*.partial")) and not [
        p for p in tmp_path.iterdir() if ".engine." in p.name
    ]


def test_metadata_records_the_whole_key(tmp_path: Path) -> None:
    stored = cache.store(tmp_path, KEY, b"x", 3.21)
    record = json.loads(stored.with_suffix(".json").read_text())
    assert record["key"] == KEY.to_dict() and record["build_seconds"] == 3.2
    assert record["key"]["inputs"][0]["max"] == [4, 3, 224, 224]


def test_user_engines_with_foreign_sidecars_are_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    here = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "device": "gpu"}
    assert cache.sidecar_problem(engine, here) is None
    (tmp_path / "model.engine.json").write_text(json.dumps({"key": {**here, "compute_capability": "7.2"}}))
    assert "built for compute_capability '7.2', this host has '8.7'" in cache.sidecar_problem(engine, here)


def test_optimisation_profiles() -> None:
    profile = cache.profile_for([("input", (-1, 3, 224, 224))], max_batch=8)
    assert profile == (cache.InputProfile("input", (1, 3, 224, 224), (1, 3, 224, 224), (8, 3, 224, 224)),)
    assert cache.profile_for([("x", (1, 3, 128, 128))])[0].max == (1, 3, 128, 128)
    with pytest.raises(ValueError, match="dynamic dims"):
        cache.profile_for([("x", (1, 3, -1, -1))])
    fixed = cache.profile_for([("x", (1, 3, -1, -1))], overrides={"x": (1, 3, 320, 320)})
    assert fixed[0].opt == (1, 3, 320, 320)


def test_cache_directory_precedence(tmp_path: Path) -> None:
    assert cache.default_cache_dir({"EDGERUN_CACHE_DIR": "/a", "CACHE_DIRECTORY": "/b"}) == Path(
        "/a/tensorrt"
    )
    assert cache.default_cache_dir({"CACHE_DIRECTORY": "/var/cache/edgerun"}) == Path(
        "/var/cache/edgerun/tensorrt"
    )
    assert cache.default_cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/edgerun/tensorrt")


def test_options_are_validated() -> None:
    assert parse_device("gpu", dla_core=1) == (0, "dla1") and parse_device("gpu:2") == (2, "gpu")
    with pytest.raises(InvalidInputError, match="use gpu, gpu:N or N"):
        parse_device("tpu")
    assert shape_overrides({"input": "2x3x224x224"}) == {"input": (2, 3, 224, 224)}
    with pytest.raises(InvalidInputError, match="1x3x224x224"):
        shape_overrides({"input": "big"})
    typed = parse_options("tensorrt", {"precision": "int8", "dla_core": "0", "workspace_mib": "512",
                                       "builder_optimization_level": "5", "shapes": "input=1x3x320x320"})
    assert (typed.precision, typed.dla_core, typed.workspace_mib) == ("int8", 0, 512)
    assert typed.builder_optimization_level == 5 and typed.shapes == {"input": "1x3x320x320"}
    for bad, message in [({"precision": "fp8"}, "precision='fp8'"), ({"device": "dla:0"}, "dla_core=N"),
                         ({"builder_optimization_level": "9"}, "builder_optimization_level='9'"),
                         ({"shapes": "input=big"}, "name=1x3x224x224")]:
        with pytest.raises(InvalidInputError, match=message):
            parse_options("tensorrt", bad)

