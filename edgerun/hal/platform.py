"""Platform detection: what board, CPU and accelerators this host has, read through HostFS."""

from __future__ import annotations

import os
import platform as _stdlib_platform
from collections.abc import Mapping
from dataclasses import dataclass, field

from .coral import detect_devboard, detect_edgetpus
from .facts import Accelerator, BoardFacts
from .hailo import detect_hailos
from .hostfs import HostFS
from .jetson import detect_jetson
from .libraries import find_libraries
from .nvidia import detect_dgpus
from .nxp import detect_imx
from .raspberrypi import detect_raspberrypi
from .rockchip import detect_rockchip

_MODEL_PATHS = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")
_COMPATIBLE_PATHS = ("/proc/device-tree/compatible", "/sys/firmware/devicetree/base/compatible")
# cpuinfo flag -> the name people use for the feature; what int8/fp16 kernels care about.
CPU_FEATURES = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_int8": "AMX-INT8",
    "asimd": "NEON",
    "asimddp": "dot-product",
    "i8mm": "i8mm",
    "asimdhp": "fp16",
    "sve": "SVE",
    "bf16": "BF16",
}
_INTERESTING_FLAGS = frozenset(CPU_FEATURES) | {"avx", "f16c", "sse4_2", "fphp"}


@dataclass(frozen=True)
class Platform:
    """What the HAL detected about one host; passed down, never re-probed."""

    arch: str
    board: str
    model: str
    cpu_count: int
    cpu_flags: frozenset[str] = frozenset()
    accelerators: tuple[str, ...] = ()
    facts: dict[str, str] = field(default_factory=dict)
    accelerator_details: tuple[Accelerator, ...] = ()
    libraries: Mapping[str, str] = field(default_factory=dict)
    emulated: bool = False

    def accelerator(self, kind: str) -> Accelerator | None:
        """The first accelerator of ``kind`` ("edgetpu", "nvidia-gpu", "rknpu", ...), or None."""
        return next((a for a in self.accelerator_details if a.kind == kind), None)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (sets become sorted lists)."""
        return {
            "arch": self.arch,
            "board": self.board,
            "model": self.model,
            "cpu_count": self.cpu_count,
            "cpu_flags": sorted(self.cpu_flags),
            "accelerators": list(self.accelerators),
            "facts": dict(self.facts),
            "accelerator_details": [a.to_dict() for a in self.accelerator_details],
            "libraries": dict(self.libraries),
            "emulated": self.emulated,
        }

    def summary(self) -> str:
        accel = ", ".join(self.accelerators) or "none"
        emulated = " [emulated]" if self.emulated else ""
        name = f"{self.board} ({self.model or self.arch}){emulated}"
        return f"{name}, {self.cpu_count} CPUs, accelerators: {accel}"


def _cpu_flags(cpuinfo: str) -> frozenset[str]:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split()) & _INTERESTING_FLAGS
    return frozenset()


def _arch(fs: HostFS, cpuinfo: str) -> str:
    if "vendor_id" in cpuinfo or "GenuineIntel" in cpuinfo or "AuthenticAMD" in cpuinfo:
        return "x86_64"
    if "CPU architecture: 8" in cpuinfo.replace("\t", "") or "asimd" in cpuinfo:
        return "aarch64"
    return _stdlib_platform.machine() if fs.is_live else "unknown"


def _cpu_count(fs: HostFS, cpuinfo: str) -> int:
    count = sum(1 for line in cpuinfo.splitlines() if line.startswith("processor"))
    if count:
        return count
    return (os.cpu_count() or 1) if fs.is_live else 1


def _host_facts(fs: HostFS, cpuinfo: str, flags: frozenset[str]) -> dict[str, str]:
    facts = {}
    features = [name for flag, name in CPU_FEATURES.items() if flag in flags]
    if features:
        facts["cpu_features"] = ", ".join(features)
    cpu_name = next(
        (line.partition(":")[2].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), ""
    )
    if cpu_name:
        facts["cpu_model"] = cpu_name
    for line in (fs.read_text("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            facts["os"] = line.partition("=")[2].strip().strip('"')
    kernel = (fs.read_text("/proc/version") or "").split()
    if len(kernel) >= 3:
        facts["kernel"] = kernel[2]
    return facts


def _board(
    fs: HostFS, model: str, compatible: list[str], cpuinfo: str, libraries: Mapping[str, str]
) -> BoardFacts | None:
    return (
        detect_jetson(fs, model, compatible)
        or detect_raspberrypi(model, cpuinfo)
        or detect_devboard(fs, model, compatible)
        or detect_rockchip(fs, model, compatible)
        or detect_imx(fs, model, compatible, libraries)
    )


def detect(fs: HostFS) -> Platform:
    """Detect the platform under ``fs`` (a live host or a captured device tree). Cheap: file reads only."""
    cpuinfo = fs.read_text("/proc/cpuinfo") or ""
    model = next((text for p in _MODEL_PATHS if (text := fs.read_text(p))), "")
    compatible = next((found for p in _COMPATIBLE_PATHS if (found := fs.read_strings(p))), [])
    arch = _arch(fs, cpuinfo)
    flags = _cpu_flags(cpuinfo)
    libraries = find_libraries(fs)
    board = _board(fs, model, compatible, cpuinfo, libraries) or BoardFacts("generic-" + arch)
    dgpus = [] if board.board.startswith("jetson") else detect_dgpus(fs)
    devices = (
        *board.accelerators,
        *dgpus,
        *detect_edgetpus(fs, board.board == "coral-devboard"),
        *detect_hailos(fs),
    )
    return Platform(
        arch=arch,
        board=board.board,
        model=model,
        cpu_count=_cpu_count(fs, cpuinfo),
        cpu_flags=flags,
        accelerators=tuple(a.id for a in devices),
        facts={**_host_facts(fs, cpuinfo, flags), **board.facts},
        accelerator_details=tuple(devices),
        libraries=libraries,
        emulated=fs.is_emulated,
    )
