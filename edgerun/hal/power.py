"""Power sensors: find the board's own power/energy sensors under a HostFS and read them."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgerunError
from .hostfs import HostFS

log = logging.getLogger(__name__)

# A command runner returns the command's output text, or None when the command is absent.
CommandRunner = Callable[[Sequence[str]], "str | None"]

# Rails that measure the whole module/board input on Jetson (JetPack 4 Nano names POM_5V_IN).
JETSON_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")
# Rails fed from another rail that is also measured: adding them would count power twice
# (AGX Orin: VDDQ_VDD2_1V8AO is fed from VIN_SYS_5V0).
JETSON_FED_RAILS = frozenset({"VDDQ_VDD2_1V8AO"})
_PMIC_LINE = re.compile(
    r"^\s*(?P<rail>\S+?)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>[-+\d.eE]+|nan)[AV]?\s*$")


class SensorReadError(EdgerunError):
    """A power sensor that was found at discovery could not be read (file gone, garbage)."""

    http_status = 503


@dataclass(frozen=True)
class PowerReading:
    """One reading. ``unit`` is "W" (instantaneous power) or "J" (cumulative energy counter)."""

    total: float
    unit: str
    rails: Mapping[str, float] = field(default_factory=dict)


class PowerSensor(ABC):
    """A power or energy sensor whose file paths were resolved once, at discovery."""

    name: str = "sensor"
    kind: str = "power"              # "power": read() gives watts; "energy": cumulative joules
    rails: tuple[str, ...] = ()
    total_from: str = ""             # how the total is formed, e.g. "rail VDD_IN" or "sum of rails"
    note: str = ""                   # caveats a reader of the report must know
    min_interval_s: float = 0.02     # do not poll faster than this
    simulated: bool = False

    @abstractmethod
    def read(self) -> PowerReading:
        """Read the sensor now; raise SensorReadError when it cannot be read."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "rails": list(self.rails),
                "total": self.total_from, "note": self.note, "simulated": self.simulated}


def read_number(path: Path) -> float:
    """A number from a sysfs file; SensorReadError naming the file when it is gone or garbage."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise SensorReadError(f"{path} disappeared") from None
    except OSError as exc:
        raise SensorReadError(f"{path} unreadable: {exc.strerror or exc}") from None
    try:
        return float(text)
    except ValueError:
        raise SensorReadError(f"{path} holds {text[:40]!r}, not a number") from None


def _total_rail(rails: Sequence[str]) -> str | None:
    return next((r for r in JETSON_TOTAL_RAILS if r in rails), None)


def _jetson_total(rail_watts: Mapping[str, float], total_rail: str | None) -> float:
    if total_rail is not None:
        return rail_watts[total_rail]
    return sum(w for rail, w in rail_watts.items() if rail not in JETSON_FED_RAILS)


def _jetson_total_text(rails: Sequence[str], total_rail: str | None) -> str:
    if total_rail is not None:
        return f"rail {total_rail} (module input)"
    summed = [r for r in rails if r not in JETSON_FED_RAILS]
    return "sum of rails " + "+".join(summed) + " (module rails only; no input rail on this board)"


@dataclass(frozen=True)
class _Channel:
    rail: str
    paths: tuple[Path, ...]   # (power mW) or (voltage mV, current mA)


class JetsonIna3221Sensor(PowerSensor):
    """Jetson INA3221 rails: JetPack 5+ hwmon (mV x mA) or JetPack 4 iio (in_powerN_input mW)."""

    name = "jetson-ina3221"

    def __init__(self, channels: Sequence[_Channel], layout: str) -> None:
        self._channels = tuple(channels)
        self.rails = tuple(c.rail for c in self._channels)
        self._total_rail = _total_rail(self.rails)
        self.total_from = _jetson_total_text(self.rails, self._total_rail)
        self.layout = layout
        self.note = ("INA3221 on the module: excludes the carrier board and peripherals"
                     if self._total_rail != "POM_5V_IN" else "INA3221 5 V input of the module")

    def read(self) -> PowerReading:
        rail_watts = {}
        for channel in self._channels:
            values = [read_number(p) for p in channel.paths]
            milliwatts = values[0] if len(values) == 1 else values[0] * values[1] / 1000.0
            rail_watts[channel.rail] = milliwatts / 1000.0
        return PowerReading(_jetson_total(rail_watts, self._total_rail), "W", rail_watts)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layout": self.layout}


class HwmonPowerSensor(PowerSensor):
    """A generic hwmon power meter (``powerN_input`` in µW), e.g. INA219/INA226/INA260."""

    def __init__(self, chip: str, channels: Sequence[_Channel]) -> None:
        self.name = f"hwmon-{chip}"
        self._channels = tuple(channels)
        self.rails = tuple(c.rail for c in self._channels)
        self.total_from = "rail " + self.rails[0] if len(self.rails) == 1 else "sum of rails"
        self.note = f"hwmon chip {chip}: measures what it is wired to"

    def read(self) -> PowerReading:
        rail_watts = {c.rail: read_number(c.paths[0]) / 1e6 for c in self._channels}
        return PowerReading(sum(rail_watts.values()), "W", rail_watts)


@dataclass(frozen=True)
class _RaplZone:
    name: str
    energy: Path
    max_range_uj: float


class RaplSensor(PowerSensor):
    """Intel/AMD RAPL powercap ``energy_uj`` counters (µJ), wrap-around corrected."""

    name = "rapl"
    kind = "energy"

    def __init__(self, zones: Sequence[_RaplZone]) -> None:
        self._zones = tuple(zones)
        self.rails = tuple(z.name for z in self._zones)
        psys = [z.name for z in self._zones if z.name == "psys"]
        # psys (platform) already contains the packages; otherwise add the packages up.
        self._summed = psys or [z.name for z in self._zones]
        self.total_from = "zone psys" if psys else "sum of zones " + "+".join(self._summed)
        self.note = ("RAPL platform domain (psys)" if psys
                     else "CPU package energy (RAPL), not the whole machine")
        self._last: dict[str, float] = {}
        self._wrapped: dict[str, float] = {z.name: 0.0 for z in self._zones}

    def _cumulative_uj(self, zone: _RaplZone) -> float:
        raw = read_number(zone.energy)
        last = self._last.get(zone.name)
        if last is not None and raw < last:
            self._wrapped[zone.name] += zone.max_range_uj
        self._last[zone.name] = raw
        return raw + self._wrapped[zone.name]

    def read(self) -> PowerReading:
        joules = {z.name: self._cumulative_uj(z) / 1e6 for z in self._zones}
        return PowerReading(sum(joules[name] for name in self._summed), "J", joules)


class RaspberryPiPmicSensor(PowerSensor):
    """Raspberry Pi 5 PMIC ADC through ``vcgencmd pmic_read_adc`` (A and V per rail)."""

    name = "rpi5-pmic"
    min_interval_s = 0.25   # each read costs ~23 ms of firmware ADC time plus a process start
    note = ("sum of PMIC rails under-counts the board input: no input current channel, "
            "conversion losses, USB and peripherals are not included")

    def __init__(self, runner: CommandRunner, rails: Sequence[str]) -> None:
        self._runner = runner
        self.rails = tuple(rails)
        self.total_from = "sum of PMIC rails"

    def read(self) -> PowerReading:
        text = self._runner(("vcgencmd", "pmic_read_adc"))
        if text is None:
            raise SensorReadError("vcgencmd pmic_read_adc no longer runs")
        rail_watts = parse_pmic_read_adc(text)
        if not rail_watts:
            raise SensorReadError(f"vcgencmd pmic_read_adc printed no rails: {text.strip()[:60]!r}")
        return PowerReading(sum(rail_watts.values()), "W", rail_watts)


class NvmlSensor(PowerSensor):
    """NVIDIA GPU power through NVML: total energy (mJ, Volta+) or power usage (mW)."""

    name = "nvml"

    def __init__(self, nvml: Any, handles: Sequence[Any], energy: bool) -> None:
        self._nvml = nvml
        self._handles = tuple(handles)
        self.kind = "energy" if energy else "power"
        self.rails = tuple(f"gpu{i}" for i in range(len(self._handles)))
        self.total_from = "sum of GPUs"
        self.note = "GPU board power only (NVML), not the host"

    def read(self) -> PowerReading:
        try:
            if self.kind == "energy":
                values = [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0 for h in self._handles]
            else:
                values = [self._nvml.nvmlDeviceGetPowerUsage(h) / 1000.0 for h in self._handles]
        except Exception as exc:  # vendor boundary: NVMLError subclasses
            raise SensorReadError(f"NVML read failed: {exc}") from exc
        unit = "J" if self.kind == "energy" else "W"
        return PowerReading(sum(values), unit, dict(zip(self.rails, values, strict=True)))


def parse_pmic_read_adc(text: str) -> dict[str, float]:
    """Rail -> watts from ``vcgencmd pmic_read_adc`` output (rails with both A and V only)."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        match = _PMIC_LINE.match(line)
        if match is None:
            continue
        value = float(match["value"])
        (amps if match["kind"] == "A" else volts)[match["rail"]] = value
    rails = [r for r in amps if r in volts and amps[r] == amps[r] and volts[r] == volts[r]]
    return {rail: amps[rail] * volts[rail] for rail in rails}


def resolve(fs: HostFS, host_path: str) -> Path:
    """The real file behind a host path, symbolic links followed inside the root."""
    return fs.path(fs.realpath(host_path))


def host_runner(fs: HostFS, timeout_s: float = 3.0) -> CommandRunner:
    """Runs commands on the live host. On a captured tree a command exists only where the tree's
    snapshot manifest holds its captured output under "commands" ({"vcgencmd get_throttled": ...})."""
    if not fs.is_live:
        captured = fs.manifest.get("commands") if fs.is_emulated else None
        return captured_runner(captured if isinstance(captured, dict) else {})

    def run(argv: Sequence[str]) -> str | None:
        executable = shutil.which(argv[0])
        if executable is None:
            return None
        try:
            done = subprocess.run([executable, *argv[1:]], capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("%s failed: %s", argv[0], exc)
            return None
        return done.stdout + done.stderr

    return run


def captured_runner(outputs: Mapping[str, str]) -> CommandRunner:
    """A runner that replays captured output, keyed by the command line ("vcgencmd get_throttled")."""

    def run(argv: Sequence[str]) -> str | None:
        return outputs.get(" ".join(argv))

    return run


# ---- discovery -------------------------------------------------------------------------------

def _hwmon_ina3221_channels(fs: HostFS, hwmon: str) -> list[_Channel]:
    channels = []
    for index in range(1, 4):
        label = fs.read_text(f"{hwmon}/in{index}_label")
        volt, curr = f"{hwmon}/in{index}_input", f"{hwmon}/curr{index}_input"
        if not label or label.upper() == "NC" or "sum of" in label.lower():
            continue
        if fs.exists(volt) and fs.exists(curr):
            channels.append(_Channel(label, (resolve(fs, volt), resolve(fs, curr))))
    return channels


def _iio_ina3221_channels(fs: HostFS, iio: str) -> list[_Channel]:
    channels = []
    for index in range(0, 3):
        label = fs.read_text(f"{iio}/rail_name_{index}")
        power = f"{iio}/in_power{index}_input"
        if label and label != "NC" and fs.exists(power):
            channels.append(_Channel(label, (resolve(fs, power),)))
    return channels


def _ina3221_dirs(fs: HostFS) -> tuple[list[str], list[str]]:
    """(hwmon dirs, iio dirs) of INA3221 chips, each real directory once."""
    hwmon: list[str] = []
    iio: list[str] = []
    for device in fs.listdir("/sys/bus/i2c/devices"):
        base = f"/sys/bus/i2c/devices/{device}"
        if "ina3221" not in (fs.read_text(f"{base}/name") or ""):
            continue
        hwmon += [f"{base}/hwmon/{h}" for h in fs.listdir(f"{base}/hwmon") if h.startswith("hwmon")][:1]
        iio += [f"{base}/{d}" for d in fs.listdir(base) if d.startswith("iio:device")]
    hwmon += [f"/sys/class/hwmon/{h}" for h in fs.listdir("/sys/class/hwmon")
              if (fs.read_text(f"/sys/class/hwmon/{h}/name") or "") == "ina3221"]
    iio += [f"/sys/bus/iio/devices/{d}" for d in fs.listdir("/sys/bus/iio/devices")
            if "ina3221" in (fs.read_text(f"/sys/bus/iio/devices/{d}/name") or "")]
    return _unique_dirs(fs, hwmon), _unique_dirs(fs, iio)


def _unique_dirs(fs: HostFS, dirs: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for directory in dirs:
        real = fs.realpath(directory)
        if real not in seen:
            seen.add(real)
            unique.append(directory)
    return unique


def _unique_rails(channels: Sequence[_Channel]) -> list[_Channel]:
    """Drop a rail seen twice (a captured tree may hold the same chip under two paths)."""
    seen: dict[str, _Channel] = {}
    for channel in channels:
        seen.setdefault(channel.rail, channel)
    return list(seen.values())


def _discover_jetson(fs: HostFS) -> tuple[list[PowerSensor], str]:
    hwmon_dirs, iio_dirs = _ina3221_dirs(fs)
    hwmon_channels = _unique_rails([c for d in hwmon_dirs for c in _hwmon_ina3221_channels(fs, d)])
    if hwmon_channels:
        return [JetsonIna3221Sensor(hwmon_channels, "hwmon (JetPack 5+)")], "found"
    iio_channels = _unique_rails([c for d in iio_dirs for c in _iio_ina3221_channels(fs, d)])
    if iio_channels:
        return [JetsonIna3221Sensor(iio_channels, "iio (JetPack 4)")], "found"
    if hwmon_dirs or iio_dirs:
        return [], "INA3221 found but no connected rail has readable inputs"
    return [], "no INA3221 under /sys/bus/i2c/devices or /sys/class/hwmon"


def _discover_hwmon(fs: HostFS) -> tuple[list[PowerSensor], str]:
    sensors: list[PowerSensor] = []
    for hwmon in fs.listdir("/sys/class/hwmon"):
        base = f"/sys/class/hwmon/{hwmon}"
        chip = fs.read_text(f"{base}/name") or hwmon
        if chip == "ina3221":
            continue
        channels = []
        for entry in fs.listdir(base):
            match = re.fullmatch(r"power(\d+)_input", entry)
            if match:
                label = fs.read_text(f"{base}/power{match[1]}_label") or f"{chip}:power{match[1]}"
                channels.append(_Channel(label, (resolve(fs, f"{base}/{entry}"),)))
        if channels:
            sensors.append(HwmonPowerSensor(chip, channels))
    return sensors, "found" if sensors else "no powerN_input under /sys/class/hwmon"


def _discover_pmic(runner: CommandRunner) -> tuple[list[PowerSensor], str]:
    text = runner(("vcgencmd", "pmic_read_adc"))
    if text is None:
        return [], "vcgencmd not available"
    rails = parse_pmic_read_adc(text)
    if not rails:
        reason = text.strip().splitlines()[0][:80] if text.strip() else "no output"
        return [], f"vcgencmd pmic_read_adc gave no rails ({reason})"
    return [RaspberryPiPmicSensor(runner, list(rails))], "found"


def _rapl_zone(fs: HostFS, base: str) -> _RaplZone | str:
    energy = f"{base}/energy_uj"
    if not fs.exists(energy):
        return f"{base} has no energy_uj"
    try:
        read_number(resolve(fs, energy))
    except SensorReadError as exc:
        return f"{exc} (energy_uj is root-only since Linux 5.10)"
    max_range = fs.read_text(f"{base}/max_energy_range_uj") or ""
    name = fs.read_text(f"{base}/name") or base.rsplit("/", 1)[-1]
    return _RaplZone(name, resolve(fs, energy), float(max_range) if max_range.isdigit() else 2.0**32)


def _discover_rapl(fs: HostFS) -> tuple[list[PowerSensor], str]:
    root = "/sys/class/powercap"
    tops = [z for z in fs.listdir(root) if re.fullmatch(r"intel-rapl:\d+", z)]
    if not tops:
        return [], f"no intel-rapl zones under {root}"
    zones = [_rapl_zone(fs, f"{root}/{z}") for z in tops]
    readable = [z for z in zones if isinstance(z, _RaplZone)]
    if not readable:
        return [], "; ".join(str(z) for z in zones)
    return [RaplSensor(readable)], "found"


def _discover_nvml(fs: HostFS) -> tuple[list[PowerSensor], str]:
    from ..optional import has_module

    if not fs.is_live:
        return [], "reads the live host only"
    if not has_module("pynvml"):
        return [], "python package nvidia-ml-py (pynvml) not installed"
    import pynvml

    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception as exc:  # vendor boundary: NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return [], f"NVML unavailable: {exc}"
    if not handles:
        return [], "NVML sees no GPU"
    try:
        for handle in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        energy = True
    except Exception:  # pre-Volta GPUs: fall back to instantaneous power
        energy = False
    return [NvmlSensor(pynvml, handles, energy)], "found"


def survey_power_sensors(fs: HostFS, runner: CommandRunner | None = None
                         ) -> tuple[list[PowerSensor], dict[str, str]]:
    """Every power sensor under ``fs``, best first, and what each family's search found.

    Sensors found in a captured tree read that tree's files (or captured command output), so
    they are marked ``simulated`` and every report says so.
    """
    runner = runner or host_runner(fs)
    families = {
        "Jetson INA3221": lambda: _discover_jetson(fs),
        "hwmon power meter": lambda: _discover_hwmon(fs),
        "Raspberry Pi 5 PMIC": lambda: _discover_pmic(runner),
        "RAPL": lambda: _discover_rapl(fs),
        "NVML": lambda: _discover_nvml(fs),
    }
    sensors: list[PowerSensor] = []
    findings: dict[str, str] = {}
    for family, discover in families.items():
        found, finding = discover()
        sensors += found
        findings[family] = finding
    for sensor in sensors:
        sensor.simulated = not fs.is_live
    return sensors, findings


def discover_power_sensors(fs: HostFS, runner: CommandRunner | None = None) -> list[PowerSensor]:
    """Every power sensor under ``fs``, best first (paths resolved now, read later)."""
    return survey_power_sensors(fs, runner)[0]


def unavailable_reason(findings: Mapping[str, str]) -> str:
    """One line saying why no sensor was found, family by family."""
    return "no power sensor found: " + "; ".join(f"{family}: {why}" for family, why in findings.items())
