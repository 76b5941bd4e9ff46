"""Thermals: thermal zones, Coral Edge TPU (apex) temperature, Raspberry Pi throttling flags."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .hostfs import HostFS
from .power import CommandRunner, resolve

# Kernel sentinels for an offline/absent sensor (Jetson reports -256 °C for some zones).
_OFFLINE_MILLI_C = -256000.0
_TRIP_TYPES = ("passive", "hot", "critical")

# `vcgencmd get_throttled` bits (Raspberry Pi documentation, graphics-utilities).
THROTTLE_BITS: dict[int, str] = {
    0: "under-voltage detected",
    1: "arm frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
    16: "under-voltage has occurred",
    17: "arm frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
_NOW_MASK = 0xF
_STICKY_SHIFT = 16


@dataclass(frozen=True)
class TempSensor:
    """One temperature file in milli-°C, resolved once; ``trip_c`` is its lowest passive/hot trip."""

    name: str
    path: Path
    trip_c: float | None = None

    def read_c(self) -> float | None:
        """Degrees Celsius now, or None when the file is gone, garbage or an offline sentinel."""
        try:
            milli = float(self.path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        return None if milli <= _OFFLINE_MILLI_C else milli / 1000.0


@dataclass(frozen=True)
class ThrottleState:
    """Decoded ``vcgencmd get_throttled`` bits: what is happening now and what happened since boot."""

    bits: int

    @property
    def now(self) -> tuple[str, ...]:
        return tuple(text for bit, text in THROTTLE_BITS.items() if bit < 16 and self.bits >> bit & 1)

    @property
    def since_boot(self) -> tuple[str, ...]:
        return tuple(text for bit, text in THROTTLE_BITS.items() if bit >= 16 and self.bits >> bit & 1)

    def newly_set(self, before: ThrottleState) -> ThrottleState:
        """Bits set now that were not set in ``before`` (sticky bits that appeared during a run)."""
        return ThrottleState(self.bits & ~before.bits)

    @property
    def throttled(self) -> bool:
        """True when any limit is active now or any sticky bit is set."""
        return bool(self.bits & (_NOW_MASK | _NOW_MASK << _STICKY_SHIFT))

    def to_dict(self) -> dict[str, object]:
        return {"bits": hex(self.bits), "now": list(self.now), "since_boot": list(self.since_boot)}


def _lowest_trip(fs: HostFS, zone: str) -> float | None:
    trips = []
    for entry in fs.listdir(zone):
        match = re.fullmatch(r"trip_point_(\d+)_type", entry)
        if match and fs.read_text(f"{zone}/{entry}") in _TRIP_TYPES:
            text = fs.read_text(f"{zone}/trip_point_{match[1]}_temp") or ""
            if text.lstrip("-").isdigit() and int(text) > 0:
                trips.append(int(text) / 1000.0)
    return min(trips) if trips else None


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, suffix = name, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{name}#{suffix}"
    taken.add(candidate)
    return candidate


def discover_temp_sensors(fs: HostFS) -> list[TempSensor]:
    """Thermal zones (``/sys/class/thermal/thermal_zoneN``) and Coral apex chips, paths resolved once."""
    sensors: list[TempSensor] = []
    taken: set[str] = set()
    zones = [z for z in fs.listdir("/sys/class/thermal") if z.startswith("thermal_zone")]
    for zone in sorted(zones, key=lambda z: int(z[len("thermal_zone"):] or 0)):
        base = f"/sys/class/thermal/{zone}"
        if not fs.exists(f"{base}/temp"):
            continue
        name = _unique_name(fs.read_text(f"{base}/type") or zone, taken)
        sensors.append(TempSensor(name, resolve(fs, f"{base}/temp"), _lowest_trip(fs, base)))
    for apex in fs.listdir("/sys/class/apex"):
        base = f"/sys/class/apex/{apex}"
        if fs.exists(f"{base}/temp"):
            warn = fs.read_text(f"{base}/hw_temp_warn1") or ""
            enabled = (fs.read_text(f"{base}/hw_temp_warn1_en") or "0") not in ("0", "")
            trip = int(warn) / 1000.0 if enabled and warn.isdigit() else None
            sensors.append(TempSensor(_unique_name(apex, taken), resolve(fs, f"{base}/temp"), trip))
    return sensors


def read_temperatures(sensors: list[TempSensor]) -> dict[str, float]:
    """Name -> °C for every sensor that can be read now."""
    readings = {}
    for sensor in sensors:
        value = sensor.read_c()
        if value is not None:
            readings[sensor.name] = value
    return readings


def parse_throttled(text: str) -> ThrottleState | None:
    """``throttled=0x50005`` -> ThrottleState; None when the text is not that."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    return ThrottleState(int(match[1], 0)) if match else None


def read_throttled(runner: CommandRunner) -> ThrottleState | None:
    """The Raspberry Pi throttling flags, or None where ``vcgencmd`` is absent or says nothing useful."""
    text = runner(("vcgencmd", "get_throttled"))
    return None if text is None else parse_throttled(text)


# ---- throttle sources the telemetry sampler polls ----------------------------------------------

# Metric-friendly reason names for the Raspberry Pi bits (edgerun_throttled{reason}).
PI_REASONS: dict[int, str] = {
    0: "under_voltage", 1: "arm_frequency_capped", 2: "throttled", 3: "soft_temperature_limit",
    16: "under_voltage_since_boot", 17: "arm_frequency_capped_since_boot",
    18: "throttled_since_boot", 19: "soft_temperature_limit_since_boot",
}
# Tegra234 over-current event counters (hwmon "soctherm_oc", NVIDIA's tegra23x-oc-event driver);
# NVIDIA's Orin power guide: OC1 under-voltage, OC2 average over-current, OC3 instantaneous.
JETSON_OC_REASONS: dict[int, str] = {1: "under_voltage", 2: "over_current_average",
                                     3: "over_current_instant"}
# The Raspberry Pi firmware driver's sysfs twin of `vcgencmd get_throttled` (hex bits).
_PI_SYSFS_THROTTLED = ("/sys/devices/platform/soc/soc:firmware/get_throttled",
                       "/sys/devices/platform/*/*:firmware/get_throttled")


def pi_reasons(state: ThrottleState) -> dict[str, bool]:
    """Every Raspberry Pi reason name -> whether its bit is set."""
    return {name: bool(state.bits >> bit & 1) for bit, name in PI_REASONS.items()}


class ThrottleSource:
    """Reads a board's throttling state as {reason: active}; ``name`` says where it comes from."""

    name = "throttle"
    reasons: tuple[str, ...] = ()

    def read(self) -> dict[str, bool] | None:  # pragma: no cover - interface
        raise NotImplementedError


class PiThrottleSource(ThrottleSource):
    """Raspberry Pi get_throttled bits: the firmware sysfs file when present, else vcgencmd."""

    reasons = tuple(PI_REASONS.values())

    def __init__(self, path: Path | None, runner: CommandRunner) -> None:
        self._path = path
        self._runner = runner
        self.name = f"sysfs {path.name}" if path is not None else "vcgencmd get_throttled"

    def read(self) -> dict[str, bool] | None:
        if self._path is None:
            state = read_throttled(self._runner)
        else:
            try:
                text = self._path.read_text(encoding="ascii").strip()
                state = ThrottleState(int(text, 16))
            except (OSError, ValueError):
                state = None
        return None if state is None else pi_reasons(state)


class JetsonOcThrottleSource(ThrottleSource):
    """Jetson (Orin) over-current/under-voltage event counters: a reason is active while its
    counter rose since the previous read (counters are cumulative since boot)."""

    name = "soctherm_oc"

    def __init__(self, counters: dict[str, Path]) -> None:
        self._counters = counters
        self.reasons = tuple(counters)
        self._last: dict[str, int] = {}

    def read(self) -> dict[str, bool] | None:
        active = {}
        for reason, path in self._counters.items():
            try:
                count = int(path.read_text(encoding="ascii").strip())
            except (OSError, ValueError):
                continue
            active[reason] = reason in self._last and count > self._last[reason]
            self._last[reason] = count
        return active or None


def _jetson_oc_source(fs: HostFS) -> JetsonOcThrottleSource | None:
    for hwmon in fs.listdir("/sys/class/hwmon"):
        base = f"/sys/class/hwmon/{hwmon}"
        if fs.read_text(f"{base}/name") != "soctherm_oc":
            continue
        counters = {reason: resolve(fs, f"{base}/oc{n}_event_cnt")
                    for n, reason in JETSON_OC_REASONS.items() if fs.exists(f"{base}/oc{n}_event_cnt")}
        if counters:
            return JetsonOcThrottleSource(counters)
    return None


def discover_throttle_sources(fs: HostFS, runner: CommandRunner) -> tuple[list[ThrottleSource], str]:
    """The board's throttling readers, and a sentence on what was (not) found."""
    sources: list[ThrottleSource] = []
    jetson = _jetson_oc_source(fs)
    if jetson is not None:
        sources.append(jetson)
    sysfs = next((p for pattern in _PI_SYSFS_THROTTLED for p in fs.glob(pattern)), None)
    if sysfs is not None:
        sources.append(PiThrottleSource(resolve(fs, sysfs), runner))
    elif read_throttled(runner) is not None:
        sources.append(PiThrottleSource(None, runner))
    if sources:
        return sources, "found " + ", ".join(s.name for s in sources)
    return [], ("no throttle flags: no soctherm_oc hwmon (Jetson), no firmware get_throttled "
                "and no vcgencmd get_throttled (Raspberry Pi)")
