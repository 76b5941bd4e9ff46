"""The ctypes CUDA runtime binding: library absent, not a runtime, wrong version and failing calls
(a stand-in libcudart compiled here, and NVIDIA's real libcudart from the pip wheel, which reports
the missing driver on a machine without a GPU); the success path runs only where a GPU is present."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgerun.backends import cudart
from edgerun.backends.base import LoadOptions
from edgerun.backends.tensorrt_backend import TensorRTBackend, gpu_identity
from edgerun.errors import BackendUnavailableError, DependencyMissingError, InferenceError
from edgerun.hal import HostFS, detect

from .helpers import build_standin_cudart, copy_device_tree, device_tree


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler for the stand-in libcudart")
    return str(build_standin_cudart(tmp_path_factory.mktemp("cudart")))


def _real_runtime() -> cudart.CudaRuntime:
    try:
        return cudart.load()
    except BackendUnavailableError as exc:
        pytest.skip(f"no real libcudart here (the test extra installs nvidia-cuda-runtime-cu12): {exc}")


def _gpu_count(runtime: cudart.CudaRuntime) -> int:
    try:
        return runtime.device_count()
    except cudart.CudaCallError:
        return 0


def test_absent_library_is_reported_with_the_loader_message() -> None:
    with pytest.raises(BackendUnavailableError, match=r"no usable CUDA runtime.*cannot open shared object"):
        cudart.load(path="/nonexistent/libcudart.so.12")


def test_a_library_without_the_runtime_symbols_is_refused(tmp_path: Path) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler for the stand-in libcudart")
    partial = build_standin_cudart(tmp_path, complete=False)
    with pytest.raises(BackendUnavailableError, match="not a CUDA runtime library .no cudaEventElapsedTime"):
        cudart.load(path=str(partial))


def test_too_old_or_foreign_runtimes_are_refused(standin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_CUDART_VERSION", "10020")
    with pytest.raises(BackendUnavailableError, match=r"CUDA runtime 10\.2, need CUDA >= 11\.0"):
        cudart.load(path=standin)
    monkeypatch.setenv("STANDIN_CUDART_VERSION", "12060")
    assert cudart.load(path=standin).version() == (12, 6)
    xavier = detect(HostFS(device_tree("jetson-xavier-nx")))  # JetPack 5: CUDA 11.4
    with pytest.raises(BackendUnavailableError, match=r"runtime 12\.6, need CUDA 11\.x for this JetPack"):
        cudart.load(xavier, path=standin)


def test_failing_calls_raise_with_the_error_name(standin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = cudart.load(path=standin)
    with pytest.raises(cudart.CudaCallError, match=r"CUDA error in cudaStreamCreate: cudaErrorNoDevice .100"):
        runtime.stream_create()
    monkeypatch.setenv("STANDIN_CUDART_FAIL", "cudaMalloc")
    with pytest.raises(InferenceError, match=r"cudaMalloc: cudaErrorMemoryAllocation \(2: out of memory\)"):
        runtime.malloc(1 << 20)
    monkeypatch.setenv("STANDIN_CUDART_FAIL", "cudaSetDevice")
    monkeypatch.setenv("STANDIN_CUDART_CODE", "100")
    no_device = r"no usable CUDA device 0: .*cudaErrorNoDevice.*no NVIDIA driver"
    with pytest.raises(BackendUnavailableError, match=no_device):
        gpu_identity(runtime, 0)


def test_real_runtime_without_a_gpu_reports_the_driver_error() -> None:
    runtime = _real_runtime()
    if _gpu_count(runtime):
        pytest.skip("a CUDA GPU is present: the no-GPU path cannot be shown here")
    assert runtime.version() >= (11, 0)
    no_driver = r"cudaGetDeviceCount: cudaError(InsufficientDriver|NoDevice)"
    with pytest.raises(cudart.CudaCallError, match=no_driver):
        runtime.device_count()
    with pytest.raises(BackendUnavailableError, match=r"no usable CUDA device 0: CUDA error in cudaSetDev"):
        gpu_identity(runtime, 0)


def test_every_real_libcudart_here_binds_whatever_its_cuda_major() -> None:
    """The same binding drives each CUDA runtime this machine has (pip's 12.x, a system 13.x, ...)."""
    live = detect(HostFS("/"))
    paths = sorted({p for p in cudart.candidates(live) if p.startswith("/")})
    if not paths:
        pytest.skip("no libcudart file on this machine")
    majors = set()
    for path in paths:
        runtime = cudart.load(path=path)
        majors.add(runtime.version()[0])
        if not _gpu_count(runtime):
            with pytest.raises(cudart.CudaCallError, match=r"cudaGetDeviceCount: cudaError"):
                runtime.device_count()
    assert min(majors) >= 11


def test_load_without_tensorrt_names_the_extra(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    with pytest.raises((DependencyMissingError, BackendUnavailableError), match=r"edgerun\[tensorrt\]|CUDA"):
        TensorRTBackend().load(model, LoadOptions())


def test_library_lookup_follows_the_hal_and_the_board_cuda(tmp_path: Path) -> None:
    orin = detect(HostFS(device_tree("jetson-orin-nano")))
    xavier = detect(HostFS(device_tree("jetson-xavier-nx")))
    assert orin.libraries["cudart"] == "/usr/local/cuda/lib64/libcudart.so.12"
    assert cudart.expected_major(orin) == 12 and cudart.expected_major(xavier) == 11
    assert cudart.version_from_name(xavier.libraries["cudart"]) == (11, 0)
    # an emulated tree's placeholder is never handed to the loader
    assert orin.libraries["cudart"] not in cudart.candidates(orin)
    assert cudart.locate_problem(orin) is None and cudart.locate_problem(xavier) is None
    root = copy_device_tree("jetson-xavier-nx", tmp_path)
    for old in (root / "usr/local/cuda/lib64").iterdir():
        old.unlink()
    (root / "usr/local/cuda/lib64/libcudart.so.12").write_bytes(b"")
    problem = cudart.locate_problem(detect(HostFS(root)))
    assert problem is not None and "is not the CUDA 11 of this JetPack (L4T 35.4.1)" in problem


def test_device_round_trip_on_a_real_gpu() -> None:
    runtime = _real_runtime()
    if not _gpu_count(runtime):
        pytest.skip("no CUDA GPU on this machine: the success path runs only on real hardware")
    gpu_name, capability = gpu_identity(runtime, 0)
    assert gpu_name and capability[0].isdigit()
    source = np.arange(1 << 16, dtype=np.float32)
    back = np.zeros_like(source)
    stream, start, end = runtime.stream_create(), runtime.event_create(), runtime.event_create()
    device = runtime.malloc(source.nbytes)
    try:
        runtime.event_record(start, stream)
        runtime.copy_async(device, source.ctypes.data, source.nbytes, cudart.HOST_TO_DEVICE, stream)
        runtime.copy_async(back.ctypes.data, device, back.nbytes, cudart.DEVICE_TO_HOST, stream)
        runtime.event_record(end, stream)
        runtime.stream_synchronize(stream)
        runtime.event_synchronize(end)
        assert runtime.event_elapsed_ms(start, end) >= 0.0
        np.testing.assert_array_equal(back, source)
    finally:
        runtime.free(device)
        runtime.event_destroy(start)
        runtime.event_destroy(end)
        runtime.stream_destroy(stream)
