"""Platform detection: what board, CPU and accelerators this host has, read through HostFS."""

from __future__ import annotations

import os
import platform as _stdlib_platform
from dataclasses import dataclass, field

from .hostfs import HostFS

_MODEL_PATHS = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")
_INTERESTING_FLAGS = frozenset(
    {"avx", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "f16c", "sse4_2",
     "asimd", "asimddp", "i8mm", "fphp", "asimdhp", "sve", "bf16"}
)


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

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (sets become sorted lists)."""
        return {"arch": self.arch, "board": self.board, "model": self.model,
                "cpu_count": self.cpu_count, "cpu_flags": sorted(self.cpu_flags),
                "accelerators": list(self.accelerators), "facts": dict(self.facts)}

    def summary(self) -> str:
        accel = ", ".join(self.accelerators) or "none"
        return f"{self.board} ({self.model or self.arch}), {self.cpu_count} CPUs, accelerators: {accel}"


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


def detect(fs: HostFS) -> Platform:
    """Detect the platform under ``fs``. Board-specific detail is added by later HAL modules."""
    cpuinfo = fs.read_text("/proc/cpuinfo") or ""
    model = next((text for p in _MODEL_PATHS if (text := fs.read_text(p))), "")
    arch = _arch(fs, cpuinfo)
    return Platform(
        arch=arch,
        board="generic-" + arch,
        model=model,
        cpu_count=_cpu_count(fs, cpuinfo),
        cpu_flags=_cpu_flags(cpuinfo),
    )
