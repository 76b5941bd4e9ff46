"""Rockchip NPU backend without the NPU: probe reasons per device tree, return-code explanations,
core-mask validation and tensor-attribute conversion; the wheel is aarch64-only, so load() is
checked to name the extra."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgerun.backends.base import LoadOptions
from edgerun.backends.rknn import RknnBackend, _attr_spec, core_mask, explain
from edgerun.errors import DependencyMissingError, InvalidInputError
from edgerun.hal import HostFS, detect

from .helpers import copy_device_tree, device_tree


def _probe(root: Path) -> str:
    return RknnBackend().probe(detect(HostFS(root))).reason


def test_probe_reasons_per_tree(tmp_path: Path) -> None:
    assert _probe(device_tree("rpi5")) == "no Rockchip NPU (no rknpu driver or device-tree node)"
    assert "rknn-toolkit-lite2 not installed (aarch64 only" in _probe(device_tree("rk3588"))
    denied = copy_device_tree("rk3588", tmp_path, access={"/dev/dri/renderD129": "denied"})
    assert _probe(denied).startswith("/dev/dri/renderD129 denied")
    (denied / "usr/lib/librknnrt.so").unlink()
    (tmp_path / "rk3588/edgerun-snapshot.json").write_text('{"schema": 1}')
    assert "librknnrt.so not found" in _probe(denied)


def test_npu_without_driver_is_explained(tmp_path: Path) -> None:
    import shutil

    root = copy_device_tree("rk3588", tmp_path)
    shutil.rmtree(root / "sys/module/rknpu")
    shutil.rmtree(root / "sys/kernel/debug/rknpu")
    assert "rknpu driver is not loaded" in _probe(root)


def test_return_codes_are_explained() -> None:
    assert explain("init_runtime", -13).startswith(
        "init_runtime returned -13: model compiled for another SoC"
    )
    assert "librknnrt.so missing or older" in explain("init_runtime", -1)
    assert explain("load_rknn", -1) == "load_rknn returned -1: the .rknn file could not be read"
    assert "RKNN_ERR_DEVICE_UNMATCH" in explain("inference", -10)
    assert explain("inference", None).startswith("inference failed")
    assert "unknown RKNN error code" in explain("init_runtime", -99)


def test_core_masks() -> None:
    with pytest.raises(InvalidInputError, match="use one of auto, 0, 1, 2, 0_1, 0_1_2, all"):
        core_mask(object(), "3", "rk3588")
    with pytest.raises(InvalidInputError, match="rk3566 has a single NPU core"):
        core_mask(object(), "0_1", "rk3566")


def test_tensor_attributes_become_specs() -> None:
    attr = SimpleNamespace(
        name=b"images", dims=[1, 224, 224, 3, 0, 0], n_dims=4, type=2, fmt=1, scale=0.0186, zp=-14
    )
    spec, data_format = _attr_spec(attr)
    assert (spec.name, spec.shape, spec.dtype) == ("images", (1, 224, 224, 3), np.dtype("int8"))
    assert spec.quantization is not None and spec.quantization.zero_point == -14 and data_format == "nhwc"


def test_load_names_the_extra(tmp_path: Path) -> None:
    model = tmp_path / "m.rknn"
    model.write_bytes(b"RKNN")
    with pytest.raises(DependencyMissingError, match=r"edgerun\[rknn\]"):
        RknnBackend().load(model, LoadOptions())
