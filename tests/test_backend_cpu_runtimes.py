"""ncnn and OpenVINO specifics beyond the contract suite: damaged files, device strings, input shapes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgerun.backends.base import LoadOptions
from edgerun.backends.ncnn_backend import NcnnBackend, input_shapes
from edgerun.backends.openvino_backend import OpenVinoBackend
from edgerun.backends.options import parse_options
from edgerun.errors import BackendUnavailableError, ModelLoadError
from edgerun.repository import ModelRepository

BLAZEFACE = ModelRepository().get("blazeface")


def _ncnn_copy(tmp_path: Path) -> Path:
    param = BLAZEFACE.artifact_for(["ncnn"]).path
    shutil.copy(param, tmp_path / param.name)
    shutil.copy(param.with_suffix(".bin"), tmp_path / param.with_suffix(".bin").name)
    return tmp_path / param.name


def test_ncnn_truncated_weights_are_a_load_error(tmp_path: Path) -> None:
    param = _ncnn_copy(tmp_path)
    weights = param.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="malformed .param or truncated .bin"):
        NcnnBackend().load(param, LoadOptions())


def test_ncnn_input_without_a_declared_shape_is_refused(tmp_path: Path) -> None:
    param = _ncnn_copy(tmp_path)
    param.write_text(param.read_text().replace(" 0=128 1=128 2=3", ""))
    with pytest.raises(ModelLoadError, match="declares no shape for inputs"):
        NcnnBackend().load(param, LoadOptions())


def test_ncnn_param_input_shapes() -> None:
    text = "7767517\n2 2\nInput in0 0 1 data 0=224 1=160 2=3\nInput in1 0 1 mask 0=16\n"
    assert input_shapes(text) == {"data": (3, 160, 224), "mask": (16,)}


def test_devices_are_checked() -> None:
    onnx = BLAZEFACE.artifact_for(["onnx"]).path
    with pytest.raises(
        BackendUnavailableError, match="openvino device 'NPU' is not available here; available: CPU"
    ):
        OpenVinoBackend().load(onnx, LoadOptions(options=parse_options("openvino", {"device": "NPU"})))
    cpu = parse_options("openvino", {"device": "CPU", "performance_hint": "THROUGHPUT"})
    with OpenVinoBackend().load(onnx, LoadOptions(threads=1, options=cpu)) as session:
        assert session.devices == ["CPU"] and session.device == "CPU"
        assert session.effective_options["performance_hint"] == "THROUGHPUT"
        assert session.effective_options["threads"] == 1


def test_ncnn_threads_and_vulkan_options() -> None:
    param = BLAZEFACE.artifact_for(["ncnn"]).path
    with NcnnBackend().load(param, LoadOptions(options=parse_options("ncnn", {"threads": "2"}))) as session:
        assert session.device == "cpu" and session.effective_options == {"threads": 2, "vulkan": False}
    import ncnn

    if ncnn.get_gpu_count() < 1:
        with pytest.raises(BackendUnavailableError, match="vulkan=true but no Vulkan GPU"):
            NcnnBackend().load(param, LoadOptions(options=parse_options("ncnn", {"vulkan": "yes"})))


def test_a_corrupt_ncnn_weights_companion_fails_the_checksum(tmp_path: Path) -> None:
    from edgerun.errors import ModelIntegrityError
    from edgerun.repository import verify_artifact

    from .helpers import copy_package, flip_last_byte

    package = ModelRepository((tmp_path,)).get(str(copy_package("blazeface", tmp_path)))
    artifact = package.artifact_for(["ncnn"])
    verify_artifact(artifact)
    flip_last_byte(artifact.path.with_suffix(".bin"))
    with pytest.raises(ModelIntegrityError, match="checksum mismatch for blazeface.ncnn.bin"):
        verify_artifact(artifact)
