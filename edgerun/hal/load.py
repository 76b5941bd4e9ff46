"""CPU frequencies, CPU load (/proc/stat) and GPU/NPU load files, resolved once and read cheaply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .hostfs import HostFS
from .power import resolve

# Accelerator load files: (host path pattern, how to read it). Jetson GPU "load" is per mille
# (0..1000); Rockchip devfreq "load" is "<percent>@<freq>Hz".
_ACCELERATOR_LOADS = (
    ("/sys/devices/platform/bus@0/*.gpu/load", "gpu", "permille"),      # Orin (JetPack 5/6)
    ("/sys/devices/platform/*.gpu/load", "gpu", "permille"),
    ("/sys/devices/gpu.0/load", "gpu", "permille"),                     # Nano, Xavier (JetPack 4/5)
    ("/sys/class/devfreq/*.npu/load", "npu", "devfreq"),                # RK3588
)


@dataclass(frozen=True)
class CpuFrequency:
    """One CPU's current frequency file (``scaling_cur_freq``, kHz)."""

    cpu: str
    path: Path

    def read_hz(self) -> float | None:
        try:
            return float(self.path.read_text(encoding="ascii").strip()) * 1000.0
        except (OSError, ValueError):
            return None


@dataclass(frozen=True)
class AcceleratorLoad:
    """A GPU/NPU utilisation file; read_percent() gives 0..100."""

    name: str
    path: Path
    kind: str

    def read_percent(self) -> float | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except OSError:
            return None
        match = re.match(r"^\s*(\d+(?:\.\d+)?)", text)
        if match is None:
            return None
        value = float(match[1])
        return value / 10.0 if self.kind == "permille" else value


def discover_cpu_frequencies(fs: HostFS) -> list[CpuFrequency]:
    """Every CPU's ``cpufreq/scaling_cur_freq`` (none where cpufreq is absent, e.g. most VMs)."""
    found = []
    for path in fs.glob("/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq"):
        cpu = path.split("/")[5]
        if re.fullmatch(r"cpu\d+", cpu):
            found.append(CpuFrequency(cpu, resolve(fs, path)))
    return sorted(found, key=lambda f: int(f.cpu[3:]))


def discover_accelerator_loads(fs: HostFS) -> list[AcceleratorLoad]:
    """GPU/NPU load files, each real file once."""
    found: dict[str, AcceleratorLoad] = {}
    for pattern, kind, reading in _ACCELERATOR_LOADS:
        for host_path in fs.glob(pattern):
            real = fs.realpath(host_path)
            if real not in found:
                name = f"{kind}{sum(1 for a in found.values() if a.name.startswith(kind))}"
                found[real] = AcceleratorLoad(name, fs.path(real), reading)
    return list(found.values())


class CpuLoad:
    """Busy share of all CPUs between two reads of the ``cpu`` line of /proc/stat."""

    def __init__(self, fs: HostFS) -> None:
        self._path = fs.path("/proc/stat")
        self._last: tuple[int, int] | None = None

    @property
    def available(self) -> bool:
        return self._path.is_file()

    def _totals(self) -> tuple[int, int] | None:
        try:
            with self._path.open(encoding="ascii") as stat:
                fields = stat.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu" or len(fields) < 5:
            return None
        values = [int(v) for v in fields[1:9]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)   # idle + iowait
        return sum(values), idle

    def read_percent(self) -> float | None:
        """Percent busy since the previous call (None on the first call or when unreadable)."""
        totals = self._totals()
        if totals is None:
            return None
        previous, self._last = self._last, totals
        if previous is None or totals[0] <= previous[0]:
            return None
        busy = (totals[0] - previous[0]) - (totals[1] - previous[1])
        return 100.0 * busy / (totals[0] - previous[0])
