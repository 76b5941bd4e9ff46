"""A small ctypes binding to the CUDA runtime (libcudart) for the TensorRT session: device facts,
memory, async copies, streams and events, with whatever CUDA the board ships (11.x, 12.x, 13.x)."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import BackendUnavailableError, InferenceError
from ..hal import Platform

# Tried by the dynamic loader (ld.so.cache, LD_LIBRARY_PATH) after the paths the HAL found.
SONAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so")
MIN_VERSION = (11, 0)  # every call below exists since CUDA 10; TensorRT 8.5 (JetPack 5) needs 11.4
# cudaMemcpyKind and cudaDeviceAttr values (stable across CUDA releases).
HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76
_PROPERTIES_BUFFER = 4096  # larger than cudaDeviceProp in any release; the name is its first field
_NAME_BYTES = 256

_INT_P, _SIZE, _VOID_P = ctypes.POINTER(ctypes.c_int), ctypes.c_size_t, ctypes.c_void_p
_P_VOID_P = ctypes.POINTER(ctypes.c_void_p)
# symbol -> argument types; every one returns a cudaError_t (int).
_SIGNATURES: dict[str, tuple[object, ...]] = {
    "cudaRuntimeGetVersion": (_INT_P,),
    "cudaDriverGetVersion": (_INT_P,),
    "cudaGetDeviceCount": (_INT_P,),
    "cudaSetDevice": (ctypes.c_int,),
    "cudaDeviceGetAttribute": (_INT_P, ctypes.c_int, ctypes.c_int),
    "cudaMalloc": (_P_VOID_P, _SIZE),
    "cudaFree": (_VOID_P,),
    "cudaMemcpyAsync": (_VOID_P, _VOID_P, _SIZE, ctypes.c_int, _VOID_P),
    "cudaStreamCreate": (_P_VOID_P,),
    "cudaStreamSynchronize": (_VOID_P,),
    "cudaStreamDestroy": (_VOID_P,),
    "cudaEventCreate": (_P_VOID_P,),
    "cudaEventRecord": (_VOID_P, _VOID_P),
    "cudaEventSynchronize": (_VOID_P,),
    "cudaEventElapsedTime": (ctypes.POINTER(ctypes.c_float), _VOID_P, _VOID_P),
    "cudaEventDestroy": (_VOID_P,),
}


class CudaCallError(InferenceError):
    """A CUDA runtime call returned an error; ``code`` and ``name`` are the runtime's."""

    def __init__(self, call: str, code: int, name: str, text: str) -> None:
        super().__init__(f"CUDA error in {call}: {name} ({code}: {text})")
        self.call, self.code, self.name = call, code, name


def expected_major(platform: Platform | None) -> int | None:
    """The CUDA major version the board's JetPack ships (L4T r35 -> 11, r36 -> 12, r38+ -> 13)."""
    l4t = (platform.facts.get("l4t") if platform is not None else None) or ""
    match = re.match(r"(\d+)\.", l4t)
    if match is None:
        return None
    release = int(match[1])
    return 10 if release <= 32 else 11 if release < 36 else 12 if release == 36 else 13


def version_from_name(path: str) -> tuple[int, ...] | None:
    """ "…/libcudart.so.12.6.68" -> (12, 6); "libcudart.so.11.0" -> (11, 0); unversioned -> None."""
    match = re.search(r"libcudart\.so\.(\d+)(?:\.(\d+))?", Path(path).name)
    if match is None:
        return None
    return (int(match[1]), int(match[2] or 0))


def pip_libraries() -> list[str]:
    """libcudart from NVIDIA's pip wheels (nvidia-cuda-runtime-cu12/-cu11, or cuda-toolkit 13)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    found: list[str] = []
    for base in (spec.submodule_search_locations or []) if spec else []:
        for folder in ("cuda_runtime/lib", "cu13/lib"):
            found += sorted(str(p) for p in (Path(base) / folder).glob("libcudart.so.*"))
    return found


def candidates(platform: Platform | None) -> list[str]:
    """Where to load libcudart from, in order: NVIDIA's pip wheels (the CUDA that pip's TensorRT
    wheels were built for), the HAL's find on a live host (JetPack's CUDA), then sonames."""
    found = []
    if platform is not None and not platform.emulated and platform.libraries.get("cudart"):
        found.append(platform.libraries["cudart"])
    return [*pip_libraries(), *found, *SONAMES]


def locate_problem(platform: Platform) -> str | None:
    """For a probe, without loading anything: why no fitting libcudart is in sight, or None.
    Looks in the HAL's library dirs of ``platform``, NVIDIA's pip wheels and the ld.so cache."""
    seen = [platform.libraries["cudart"]] if platform.libraries.get("cudart") else []
    seen += pip_libraries()
    if not seen:
        cached = ctypes.util.find_library("cudart")  # e.g. "libcudart.so.12" from ldconfig -p
        if cached is None:
            return (
                "CUDA runtime libcudart not found (library dirs, pip wheels, ld.so cache): on a Jetson "
                "it comes with JetPack (CUDA); on x86_64: pip install 'edgerun[tensorrt]'"
            )
        seen.append(cached)
    wanted = expected_major(platform)
    versions = [version_from_name(path) for path in seen]
    if wanted is not None and all(v is not None and v[0] != wanted for v in versions):
        return (
            f"libcudart {', '.join(seen)} is not the CUDA {wanted} of this JetPack "
            f"(L4T {platform.facts.get('l4t')}): use the board's own CUDA runtime"
        )
    return None


class CudaRuntime:
    """One loaded libcudart; each method raises CudaCallError when its call fails."""

    def __init__(self, library: ctypes.CDLL, path: str) -> None:
        self.path = path
        self._lib = library
        for name, argtypes in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes, function.restype = list(argtypes), ctypes.c_int
        for name in ("cudaGetErrorName", "cudaGetErrorString"):
            function = getattr(library, name)
            function.argtypes, function.restype = [ctypes.c_int], ctypes.c_char_p
        # CUDA 12's header maps cudaGetDeviceProperties to the _v2 symbol; 11.x only has the plain one.
        self._properties = getattr(library, "cudaGetDeviceProperties_v2", None)
        self._properties = self._properties or library.cudaGetDeviceProperties
        self._properties.argtypes, self._properties.restype = [ctypes.c_char_p, ctypes.c_int], ctypes.c_int

    def _call(self, name: str, *args: object) -> None:
        code = int(getattr(self._lib, name)(*args))
        if code != 0:
            raise CudaCallError(name, code, self._text("cudaGetErrorName", code),
                                self._text("cudaGetErrorString", code))

    def _text(self, function: str, code: int) -> str:
        raw = getattr(self._lib, function)(code)
        return raw.decode(errors="replace") if raw else f"unknown CUDA error {code}"

    def _out_int(self, name: str, *args: object) -> int:
        value = ctypes.c_int()
        self._call(name, ctypes.byref(value), *args)
        return value.value

    def _out_pointer(self, name: str, *args: object) -> int:
        value = ctypes.c_void_p()
        self._call(name, ctypes.byref(value), *args)
        return value.value or 0

    def version(self) -> tuple[int, int]:
        """The runtime's (major, minor), e.g. (12, 6); needs no GPU and no driver."""
        encoded = self._out_int("cudaRuntimeGetVersion")
        return encoded // 1000, (encoded % 1000) // 10

    def driver_version(self) -> tuple[int, int]:
        """The newest CUDA the installed driver supports; (0, 0) when there is no driver."""
        encoded = self._out_int("cudaDriverGetVersion")
        return encoded // 1000, (encoded % 1000) // 10

    def device_count(self) -> int:
        return self._out_int("cudaGetDeviceCount")

    def set_device(self, index: int) -> None:
        self._call("cudaSetDevice", index)

    def device_name(self, index: int) -> str:
        buffer = ctypes.create_string_buffer(_PROPERTIES_BUFFER)
        code = int(self._properties(buffer, index))
        if code != 0:
            raise CudaCallError("cudaGetDeviceProperties", code, self._text("cudaGetErrorName", code),
                                self._text("cudaGetErrorString", code))
        return buffer.raw[:_NAME_BYTES].split(b"\x00", 1)[0].decode(errors="replace")

    def compute_capability(self, index: int) -> str:
        major = self._out_int("cudaDeviceGetAttribute", _ATTR_CC_MAJOR, index)
        minor = self._out_int("cudaDeviceGetAttribute", _ATTR_CC_MINOR, index)
        return f"{major}.{minor}"

    def malloc(self, nbytes: int) -> int:
        return self._out_pointer("cudaMalloc", nbytes)

    def free(self, pointer: int) -> None:
        self._call("cudaFree", pointer)

    def copy_async(self, destination: int, source: int, nbytes: int, kind: int, stream: int) -> None:
        self._call("cudaMemcpyAsync", destination, source, nbytes, kind, stream)

    def stream_create(self) -> int:
        return self._out_pointer("cudaStreamCreate")

    def stream_synchronize(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: int) -> None:
        self._call("cudaStreamDestroy", stream)

    def event_create(self) -> int:
        return self._out_pointer("cudaEventCreate")

    def event_record(self, event: int, stream: int) -> None:
        self._call("cudaEventRecord", event, stream)

    def event_synchronize(self, event: int) -> None:
        self._call("cudaEventSynchronize", event)

    def event_elapsed_ms(self, start: int, end: int) -> float:
        value = ctypes.c_float()
        self._call("cudaEventElapsedTime", ctypes.byref(value), start, end)
        return float(value.value)

    def event_destroy(self, event: int) -> None:
        self._call("cudaEventDestroy", event)


def _open(path: str, loader: Callable[[str], ctypes.CDLL]) -> CudaRuntime:
    library = loader(path)
    missing = [name for name in (*_SIGNATURES, "cudaGetErrorName") if not hasattr(library, name)]
    if missing:
        raise BackendUnavailableError(f"{path} is not a CUDA runtime library (no {', '.join(missing[:3])})")
    return CudaRuntime(library, path)


def load(platform: Platform | None = None, path: str | None = None,
         loader: Callable[[str], ctypes.CDLL] = ctypes.CDLL) -> CudaRuntime:
    """The first libcudart that loads and is new enough (CUDA >= 11.0, and the board's CUDA major
    on a Jetson); BackendUnavailableError listing every attempt otherwise."""
    attempts = []
    wanted = expected_major(platform)
    for candidate in [path] if path else candidates(platform):
        try:
            runtime = _open(candidate, loader)
            version = runtime.version()
        except (OSError, BackendUnavailableError, CudaCallError) as exc:
            attempts.append(f"{candidate}: {exc}")
            continue
        if version < MIN_VERSION or (wanted is not None and version[0] != wanted):
            need = f"CUDA {wanted}.x for this JetPack" if wanted else "CUDA >= 11.0"
            attempts.append(f"{candidate}: CUDA runtime {version[0]}.{version[1]}, need {need}")
            continue
        return runtime
    raise BackendUnavailableError(
        "no usable CUDA runtime (libcudart): " + "; ".join(attempts)
        + " (on a Jetson it comes with JetPack; on x86_64: pip install 'edgerun[tensorrt]')"
    )
