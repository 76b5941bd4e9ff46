"""onnxruntime execution providers for this host: TensorRT EP -> CUDA EP -> CPU when onnxruntime-gpu
is installed and the HAL sees a usable NVIDIA GPU (Jetson iGPU or PCI GPU); CPU otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..hal import Platform
from ..hal.hostfs import ACCESS_OK

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# What InferenceSession(providers=...) takes: a name, or (name, provider options).
Provider = str | tuple[str, dict[str, str]]


def usable_gpu_index(platform: Platform | None) -> int | None:
    """The CUDA index of the first NVIDIA GPU the HAL found with accessible device nodes, or None."""
    if platform is None:
        return None
    gpu = platform.accelerator("nvidia-gpu")
    if gpu is None or gpu.access != ACCESS_OK:
        return None
    return int(gpu.id.rpartition(":")[2] or 0)


def tensorrt_options(cache_dir: Path, device: int) -> dict[str, str]:
    """TensorRT EP options: engines and timing caches kept under ``cache_dir`` (built on first load)."""
    folder = str(cache_dir)
    return {
        "device_id": str(device),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": folder,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": folder,
    }


def choose_providers(available: Sequence[str], platform: Platform | None, cache_dir: Path) -> list[Provider]:
    """The default provider chain for ``available`` (onnxruntime.get_available_providers()) on
    ``platform``: each GPU provider only when this build has it and the board has a usable GPU."""
    device = usable_gpu_index(platform)
    chain: list[Provider] = []
    if device is not None and TENSORRT in available:
        chain.append((TENSORRT, tensorrt_options(cache_dir, device)))
    if device is not None and CUDA in available:
        chain.append((CUDA, {"device_id": str(device)}))
    return [*chain, CPU]


def provider_names(providers: Sequence[Provider]) -> list[str]:
    return [p if isinstance(p, str) else p[0] for p in providers]
