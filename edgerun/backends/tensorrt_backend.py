"""TensorRT backend: load .engine/.plan files, or build engines from ONNX (fp32/fp16/int8) into a cache.

Written against the TensorRT Python API as JetPack 5/6 and the x86 ``tensorrt`` wheels ship it
(8.5 to 10.x: name-based tensors, ``execute_async_v3``), with libcudart through ``cudart`` (ctypes).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from ..errors import BackendUnavailableError, InferenceError, InvalidInputError, ModelLoadError
from ..hal import Platform
from ..hal.hostfs import ACCESS_OK
from ..repository import sha256_of
from ..types import TensorSpec
from . import cudart
from . import tensorrt_cache as cache
from ._imports import has_module, require
from .base import Availability, BaseSession, LoadOptions, Tensors
from .options import BackendOptions

log = logging.getLogger(__name__)

_GPU_DEVICE = re.compile(r"(?:gpu)?:?(\d*)")
_SHAPE = re.compile(r"\d+(?:x\d+)*")


class TensorRTOptions(BackendOptions):
    """Engine build and device settings (the cache key includes every one that changes the engine)."""

    backend: ClassVar[str] = "tensorrt"
    device: str = Field("gpu:0", description="CUDA device: gpu, gpu:N or N")
    precision: Literal["fp32", "fp16", "int8"] | None = Field(
        None, description="engine precision built from ONNX (none: fp16 where TensorRT has it, else fp32)")
    workspace_mib: int = Field(1024, ge=1, description="builder workspace memory pool limit, MiB")
    dla_core: int | None = Field(None, ge=0, description="build for this DLA core (Jetson Xavier/Orin), "
                                 "layers DLA cannot run fall back to the GPU")
    builder_optimization_level: int | None = Field(
        None, ge=0, le=5, description="builder optimisation level 0-5 (none: TensorRT's default, 3)")
    calibration_cache: str | None = Field(None, description="int8 calibration cache file (from "
                                          "edgerun optimize --target tensorrt)")
    cache_dir: str | None = Field(None, description="engine cache folder (none: $EDGERUN_CACHE_DIR/"
                                  "tensorrt, systemd's CACHE_DIRECTORY, else ~/.cache)")
    max_batch: int = Field(1, ge=1, description="largest batch of the optimisation profile for a "
                           "dynamic batch dim")
    shapes: dict[str, str] = Field(default_factory=dict, description="fixed shapes for inputs with "
                                   "dynamic dims: input=1x3x224x224")

    @field_validator("device")
    @classmethod
    def _gpu_device(cls, value: str) -> str:
        if _GPU_DEVICE.fullmatch(value.strip().lower()) is None:
            raise ValueError("use gpu, gpu:N or N (DLA cores are chosen with dla_core=N)")
        return value

    @field_validator("shapes")
    @classmethod
    def _shape_form(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{k}={v}" for k, v in value.items() if _SHAPE.fullmatch(v.lower()) is None]
        if bad:
            raise ValueError(f"write shapes as name=1x3x224x224, not {', '.join(bad)}")
        return value


MIN_VERSION = (8, 5)  # name-based tensor API: set_input_shape, set_tensor_address, execute_async_v3
_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu12", "tensorrt-cu12-bindings", "tensorrt-cu13", "tensorrt-cu11")


def installed_version() -> str | None:
    """The TensorRT Python bindings' version from package metadata (no import), or None."""
    for name in _DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:2])


def version_problem(version: str | None, platform: Platform) -> str | None:
    """Why these bindings cannot work here (too old, or not the TensorRT of this JetPack), or None."""
    if version is None:
        return None
    if _version_tuple(version) < MIN_VERSION:
        return (
            f"TensorRT {version} lacks the name-based tensor API edgerun uses (needs 8.5+; "
            "JetPack 4 ships 8.2): use onnxruntime on this board"
        )
    expected = platform.facts.get("tensorrt_expected")
    if expected and _version_tuple(version)[:1] != _version_tuple(expected)[:1]:
        return (
            f"TensorRT {version} Python bindings, but L4T {platform.facts.get('l4t')} (JetPack "
            f"{platform.facts.get('jetpack')}) ships TensorRT {expected}: bindings and libnvinfer must "
            "match; use JetPack's python3-libnvinfer (venv with --system-site-packages)"
        )
    return None


def _gpu_problem(platform: Platform) -> str | None:
    gpu = platform.accelerator("nvidia-gpu")
    if gpu is None:
        return "no NVIDIA GPU detected (no Jetson iGPU, no PCI display controller 10de:*)"
    if gpu.access != ACCESS_OK:
        hint = gpu.detail.get("problem") or (
            "add the user to groups video and render"
            if platform.board.startswith("jetson")
            else "check /dev/nvidia*"
        )
        return f"{gpu.node} {gpu.access} for {gpu.id}: {hint}"
    return None


# ---- CUDA (ctypes binding to libcudart) --------------------------------------------------------


def gpu_identity(runtime: cudart.CudaRuntime, index: int) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device ``index``, made current."""
    try:
        runtime.set_device(index)
    except cudart.CudaCallError as exc:
        major, minor = runtime.driver_version()
        driver = f"driver supports CUDA {major}.{minor}" if major else "no NVIDIA driver found"
        raise BackendUnavailableError(
            f"no usable CUDA device {index}: {exc} (CUDA runtime {'.'.join(map(str, runtime.version()))}, "
            f"{driver}; is a GPU visible to this process?)"
        ) from exc
    return runtime.device_name(index), runtime.compute_capability(index)


# ---- TensorRT objects --------------------------------------------------------------------------


def _logger(trt: Any) -> Any:
    """A trt.ILogger that forwards to logging and keeps the errors for our exception messages."""

    class Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Logger()


def _progress_monitor(trt: Any, label: str) -> Any | None:
    """A trt.IProgressMonitor (TensorRT 10+) logging each build phase, or None when unavailable."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Progress(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started = time.monotonic()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            log.info(
                "%s: %s (%d steps) at %.0f s", label, phase_name, num_steps, time.monotonic() - self.started
            )

        def step_complete(self, phase_name: str, step: int) -> bool:
            log.debug("%s: %s step %d", label, phase_name, step + 1)
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            log.info("%s: %s done at %.0f s", label, phase_name, time.monotonic() - self.started)

    return Progress()


def _calibrator(trt: Any, cache_bytes: bytes) -> Any:
    """An INT8 calibrator that only replays a calibration cache (no calibration data needed)."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return cache_bytes

        def write_calibration_cache(self, data: bytes) -> None:
            return None

    return CacheCalibrator()


def _parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> Any:
    flags = (
        0
        if _version_tuple(trt.__version__) >= (10, 0)
        else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"TensorRT could not parse {onnx_path.name}: {errors or 'no parser message'}")
    return network, parser


def _network_inputs(network: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]


def _precision_flags(trt: Any, config: Any, precision: str, calibration: bytes | None) -> Any:
    """Set fp16/int8 builder flags; returns the calibrator (keep it alive during the build)."""
    if precision == "fp32":
        return None
    if not hasattr(trt.BuilderFlag, precision.upper()):
        raise ModelLoadError(
            f"TensorRT {trt.__version__} removed the {precision} builder flag (strongly typed "
            "networks): give an ONNX model already in that precision and build it as fp32"
        )
    config.set_flag(getattr(trt.BuilderFlag, precision.upper()))
    if precision != "int8":
        return None
    if calibration is None:
        raise InvalidInputError("precision int8 needs a calibration cache: option calibration_cache=PATH")
    calibrator = _calibrator(trt, calibration)
    config.int8_calibrator = calibrator
    return calibrator


def _device_config(trt: Any, config: Any, device: str) -> None:
    match = re.fullmatch(r"dla(\d+)", device)
    if match:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(match[1])
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def build_engine(
    trt: Any,
    onnx_path: Path,
    key: cache.EngineKey,
    network: Any,
    builder: Any,
    logger: Any,
    calibration: bytes | None,
    options: TensorRTOptions,
) -> bytes:
    """Build a serialized engine for ``key`` with phase-by-phase progress in the log."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    keep_alive = [_precision_flags(trt, config, key.precision, calibration)]
    _device_config(trt, config, key.device)
    profile = builder.create_optimization_profile()
    for item in key.inputs:
        profile.set_shape(item.name, item.min, item.opt, item.max)
    config.add_optimization_profile(profile)
    monitor = _progress_monitor(trt, f"TensorRT build {onnx_path.name}")
    if monitor is not None:
        config.progress_monitor = monitor
        keep_alive.append(monitor)
    log.warning(
        "building a TensorRT %s engine for %s on %s (first load on this device: this can take "
        "minutes; the engine is cached)",
        key.precision,
        onnx_path.name,
        key.gpu_name,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(
            f"TensorRT could not build an engine for {onnx_path.name}: "
            + ("; ".join(logger.errors[-3:]) or "no error message")
        )
    return bytes(serialized)


def _dtype(trt: Any, trt_dtype: Any) -> np.dtype:
    return np.dtype(trt.nptype(trt_dtype))


class TensorRTSession(BaseSession):
    """A deserialized engine, one execution context and one CUDA stream (not thread-safe)."""

    backend_name = "tensorrt"
    thread_safe = False

    def __init__(self, trt: Any, runtime: cudart.CudaRuntime, engine: Any, info: Mapping[str, str]) -> None:
        self.info = dict(info)  # engine file, cache decision, precision, GPU
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]

        def spec(name: str) -> TensorSpec:
            shape = tuple(d if d >= 0 else None for d in engine.get_tensor_shape(name))
            return TensorSpec(name, shape, _dtype(trt, engine.get_tensor_dtype(name)))

        super().__init__(tuple(spec(n) for n in inputs), tuple(spec(n) for n in outputs))
        self._trt, self._cuda, self._engine = trt, runtime, engine
        self._context = engine.create_execution_context()
        self._stream = runtime.stream_create()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self._cuda.free(pointer)
            pointer = self._cuda.malloc(nbytes)
            self._buffers[name] = (pointer, nbytes)
        self._context.set_tensor_address(name, pointer)
        return pointer

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        for spec in self.input_specs:
            array = np.ascontiguousarray(inputs[spec.name])
            if not self._context.set_input_shape(spec.name, array.shape):
                raise InferenceError(f"shape {array.shape} of {spec.name!r} is outside the engine's profile")
            self._cuda.copy_async(
                self._device_buffer(spec.name, array.nbytes), array.ctypes.data, array.nbytes,
                cudart.HOST_TO_DEVICE, self._stream,
            )
        results = {}
        for spec in self.output_specs:
            host = np.empty(tuple(self._context.get_tensor_shape(spec.name)), spec.dtype)
            results[spec.name] = host
            self._device_buffer(spec.name, host.nbytes)
        if not self._context.execute_async_v3(self._stream):
            raise InferenceError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for name, host in results.items():
            self._cuda.copy_async(
                host.ctypes.data, self._buffers[name][0], host.nbytes, cudart.DEVICE_TO_HOST, self._stream
            )
        self._cuda.stream_synchronize(self._stream)
        return results

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        try:
            for pointer, _ in self._buffers.values():
                self._cuda.free(pointer)
            self._cuda.stream_destroy(self._stream)
        except cudart.CudaCallError as exc:  # a failing GPU must not make close() raise
            log.warning("TensorRT session close: %s", exc)
        self._buffers.clear()
        self._context = self._engine = None


def parse_device(device: str, dla_core: int | None = None) -> tuple[int, str]:
    """ "gpu", "gpu:1" or "1" (and a DLA core) -> (CUDA device index, engine device label)."""
    match = _GPU_DEVICE.fullmatch(device.strip().lower())
    if match is None:
        raise InvalidInputError(f"TensorRT device {device!r} is not valid; use gpu, gpu:N or N "
                                "(DLA cores are chosen with dla_core=N)")
    return int(match[1] or 0), "gpu" if dla_core is None else f"dla{dla_core}"


def shape_overrides(shapes: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """{'input': '1x3x224x224'} -> {'input': (1, 3, 224, 224)}."""
    parsed = {}
    for name, value in shapes.items():
        if _SHAPE.fullmatch(value.lower()) is None:
            raise InvalidInputError(f"shapes {name}={value!r}: write a shape as 1x3x224x224")
        parsed[name] = tuple(int(d) for d in value.lower().split("x"))
    return parsed


class TensorRTBackend:
    """Loads TensorRT engines; builds (and caches) them from ONNX on first use."""

    name = "tensorrt"
    formats = ("tensorrt", "onnx")
    options_class = TensorRTOptions

    def probe(self, platform: Platform) -> Availability:
        problem = _gpu_problem(platform)
        if problem is not None:
            return Availability.no(problem)
        if not has_module("tensorrt"):
            where = (
                "JetPack's python3-libnvinfer for the system Python: make the venv with "
                "--system-site-packages"
                if platform.board.startswith("jetson")
                else "pip install 'edgerun[tensorrt]'"
            )
            return Availability.no(f"TensorRT Python bindings not installed ({where})")
        version = installed_version()
        problem = version_problem(version, platform)
        if problem is not None:
            return Availability.no(problem)
        problem = cudart.locate_problem(platform)
        if problem is not None:
            return Availability.no(problem)
        gpu = platform.accelerator("nvidia-gpu")
        return Availability.yes(f"TensorRT {version or '(version unknown)'} on {gpu.name if gpu else 'GPU'}")

    def load(self, artifact: Path, options: LoadOptions) -> TensorRTSession:
        if not artifact.is_file():
            raise ModelLoadError(f"TensorRT could not load {artifact}: no such file")
        typed = options.typed(TensorRTOptions)
        trt = require("tensorrt", "tensorrt")
        index, device = parse_device(typed.device, typed.dla_core)
        cuda = cudart.load(options.platform)
        gpu_name, capability = gpu_identity(cuda, index)
        logger = _logger(trt)
        runtime = trt.Runtime(logger)
        here = {
            "tensorrt_version": trt.__version__,
            "gpu_name": gpu_name,
            "compute_capability": capability,
            "device": device,
            "cuda_runtime": cuda.path,
        }
        if artifact.suffix.lower() in (".engine", ".plan"):
            engine, info = self._engine_file(runtime, logger, artifact, here)
        else:
            engine, info = self._engine_from_onnx(trt, runtime, logger, artifact, typed, here)
        session = TensorRTSession(trt, cuda, engine, info)
        session.device = f"gpu:{index}" if device == "gpu" else f"{device} (gpu:{index} fallback)"
        session.effective_options = {**typed.effective(), "precision": info.get("precision", "engine file")}
        return session

    @staticmethod
    def _engine_file(runtime: Any, logger: Any, artifact: Path, here: Mapping[str, str]) -> tuple[Any, dict]:
        problem = cache.sidecar_problem(artifact, here)
        if problem is not None:
            raise ModelLoadError(f"refusing a foreign TensorRT engine: {problem}")
        engine = runtime.deserialize_cuda_engine(artifact.read_bytes())
        if engine is None:
            raise ModelLoadError(
                f"TensorRT {here['tensorrt_version']} could not deserialize {artifact.name}: "
                "engines only load "
                f"on the TensorRT version and GPU that built them ({'; '.join(logger.errors[-2:])})"
            )
        return engine, {"engine": str(artifact), "cache": "user engine", **here}

    def _engine_from_onnx(
        self,
        trt: Any,
        runtime: Any,
        logger: Any,
        artifact: Path,
        options: TensorRTOptions,
        here: Mapping[str, str],
    ) -> tuple[Any, dict]:
        calibration = _read_calibration(options.calibration_cache)
        builder = trt.Builder(logger)
        network, _parser = _parse_onnx(trt, builder, logger, artifact)
        key = engine_key(trt, network, artifact, options, here, calibration)
        cache_dir = Path(options.cache_dir) if options.cache_dir else cache.default_cache_dir()
        info = {"precision": key.precision, **here}
        cached, reason = cache.lookup(cache_dir, key)
        if cached is not None:
            engine = runtime.deserialize_cuda_engine(cached.read_bytes())
            if engine is not None:
                return engine, {"engine": str(cached), "cache": "hit", **info}
            reason = f"{cached.name} did not deserialize"
        log.info("TensorRT engine for %s must be built: %s", artifact.name, reason)
        started = time.monotonic()
        data = build_engine(trt, artifact, key, network, builder, logger, calibration, options)
        stored = cache.store(cache_dir, key, data, time.monotonic() - started)
        log.warning("TensorRT engine built in %.0f s, cached at %s", time.monotonic() - started, stored)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            errors = "; ".join(logger.errors[-2:])
            raise ModelLoadError(f"TensorRT built but could not load its own engine: {errors}")
        return engine, {"engine": str(stored), "cache": f"built ({reason})", **info}


def _read_calibration(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"calibration_cache {path}: {exc.strerror or exc}") from None


def engine_key(
    trt: Any,
    network: Any,
    artifact: Path,
    options: TensorRTOptions,
    here: Mapping[str, str],
    calibration: bytes | None,
) -> cache.EngineKey:
    """The cache key of the engine this request needs (precision, profile, machine, model bytes)."""
    precision = options.precision or ("fp16" if hasattr(trt.BuilderFlag, "FP16") else "fp32")
    try:
        inputs = cache.profile_for(
            _network_inputs(network), options.max_batch, shape_overrides(options.shapes)
        )
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    return cache.EngineKey(
        sha256_of(artifact),
        here["tensorrt_version"],
        here["gpu_name"],
        here["compute_capability"],
        precision,
        inputs,
        here["device"],
        hashlib.sha256(calibration).hexdigest() if calibration else None,
    )
