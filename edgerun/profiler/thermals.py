"""Thermal section of a profile: temperatures over the phase, throttling flags and warnings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..hal.thermal import TempSensor, ThrottleState


def _zone_warning(sensor: TempSensor, peak: float) -> str | None:
    if sensor.trip_c is not None and peak >= sensor.trip_c:
        return (f"{sensor.name} reached {peak:.1f} °C, at or above its {sensor.trip_c:.1f} °C trip point: "
                "the device may have throttled")
    return None


def _throttle_warning(before: ThrottleState | None, after: ThrottleState | None) -> str | None:
    if after is None:
        return None
    appeared = after.newly_set(before) if before is not None else ThrottleState(0)
    flags = sorted(set(after.now) | set(appeared.since_boot))
    if not flags:
        return None
    return "the device throttled during the run: " + ", ".join(flags)


def summarize_thermal(sensors: Sequence[TempSensor], temps_c: Mapping[str, list[float]],
                      before: ThrottleState | None, after: ThrottleState | None) -> dict[str, Any]:
    """Start/max/end °C per sensor, decoded Raspberry Pi throttling flags, and warnings."""
    zones = {name: {"start_c": values[0], "max_c": max(values), "end_c": values[-1]}
             for name, values in temps_c.items() if values}
    warnings = [w for s in sensors if s.name in zones
                if (w := _zone_warning(s, float(zones[s.name]["max_c"]))) is not None]
    throttle_warning = _throttle_warning(before, after)
    if throttle_warning:
        warnings.append(throttle_warning)
    return {
        "temperatures_c": zones,
        "throttled_before": before.to_dict() if before else None,
        "throttled_after": after.to_dict() if after else None,
        "warnings": warnings,
    }


def thermal_line(thermal: Mapping[str, Any]) -> str:
    zones = thermal["temperatures_c"]
    if not zones:
        text = "thermal: no temperature sensors"
    else:
        hottest = max(zones.items(), key=lambda item: item[1]["max_c"])
        text = (f"thermal: {len(zones)} sensor(s), hottest {hottest[0]} "
                f"{hottest[1]['start_c']:.1f} -> max {hottest[1]['max_c']:.1f} °C")
    if thermal["throttled_after"] is not None:
        text += f"; get_throttled {thermal['throttled_after']['bits']}"
    return text
