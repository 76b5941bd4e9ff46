"""onnxruntime provider choice per board (emulated trees) and per onnxruntime build (the provider
list onnxruntime-gpu or the CPU wheel reports), and the real backend reporting what it runs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerun.backends.base import LoadOptions
from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend
from edgerun.backends.options import parse_options
from edgerun.backends.ort_providers import CPU, CUDA, TENSORRT, choose_providers, provider_names
from edgerun.errors import BackendUnavailableError
from edgerun.hal import HostFS, Platform, detect

from .helpers import MODELS, copy_device_tree, device_tree

# What get_available_providers() lists in onnxruntime-gpu (Jetson AI Lab / PyPI) and in the CPU wheel.
GPU_BUILD = [TENSORRT, CUDA, CPU]
CPU_BUILD = ["AzureExecutionProvider", CPU]
CACHE = Path("/var/cache/edgerun/onnxruntime-1.20.0-tensorrt")


def _board(name: str) -> Platform:
    return detect(HostFS(device_tree(name)))


@pytest.mark.parametrize("board", ["jetson-orin-nano", "jetson-xavier-nx", "x86-desktop"])
def test_gpu_boards_with_onnxruntime_gpu_get_tensorrt_then_cuda_then_cpu(board: str) -> None:
    chosen = choose_providers(GPU_BUILD, _board(board), CACHE)
    assert provider_names(chosen) == [TENSORRT, CUDA, CPU]
    trt_options = dict(chosen[0][1])
    assert trt_options["trt_engine_cache_enable"] == "True"
    assert trt_options["trt_engine_cache_path"] == str(CACHE) == trt_options["trt_timing_cache_path"]
    assert chosen[1] == (CUDA, {"device_id": "0"}) and chosen[2] == CPU


def test_a_build_without_tensorrt_ep_still_uses_cuda() -> None:
    chosen = choose_providers([CUDA, CPU], _board("jetson-orin-nano"), CACHE)
    assert chosen == [(CUDA, {"device_id": "0"}), CPU]


@pytest.mark.parametrize("board", ["rpi5", "rk3588", "imx8mp", "coral-devboard"])
def test_boards_without_an_nvidia_gpu_stay_on_cpu(board: str) -> None:
    assert choose_providers(GPU_BUILD, _board(board), CACHE) == [CPU]


def test_the_cpu_wheel_stays_on_cpu_even_on_a_gpu_board() -> None:
    assert choose_providers(CPU_BUILD, _board("x86-desktop"), CACHE) == [CPU]
    assert choose_providers(GPU_BUILD, None, CACHE) == [CPU]  # no platform detected: no guess


def test_an_inaccessible_gpu_is_not_chosen(tmp_path: Path) -> None:
    root = copy_device_tree("x86-desktop", tmp_path)
    (root / "dev/nvidia0").unlink()  # e.g. a container started without --gpus all
    assert choose_providers(GPU_BUILD, detect(HostFS(root)), CACHE) == [CPU]
    denied = copy_device_tree("jetson-orin-nano", tmp_path / "d", access={"/dev/nvmap": "denied"})
    assert choose_providers(GPU_BUILD, detect(HostFS(denied)), CACHE) == [CPU]


def test_the_real_backend_reports_the_providers_it_runs_on() -> None:
    """On this machine's CPU onnxruntime the emulated RTX desktop still runs on the CPU, and says so."""
    platform = _board("x86-desktop")
    with OnnxRuntimeBackend().load(MODELS / "mobilenet_v2" / "mobilenet_v2.onnx",
                                   LoadOptions(platform=platform)) as session:
        assert session.providers == [CPU]
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider.*not in this build"):
        OnnxRuntimeBackend().load(MODELS / "mobilenet_v2" / "mobilenet_v2.onnx",
                                  LoadOptions(options=parse_options("onnxruntime", {"providers": CUDA}),
                                              platform=platform))
