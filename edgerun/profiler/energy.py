"""Power and energy figures of a measured phase: mean W, mJ per inference, idle baseline, rate."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..hal.power import PowerSensor
from .sampling import PowerTrace, Sampler, SamplerRecord, mean_power_w, mean_rail_w, usable
from .stats import Clock


def measure_idle(sensors: Sequence[PowerSensor], seconds: float, interval_s: float,
                 clock: Clock = time.perf_counter_ns) -> SamplerRecord | None:
    """Sample the sensors for ``seconds`` while nothing runs: the idle baseline."""
    if not sensors or seconds <= 0:
        return None
    sampler = Sampler(sensors, interval_s, clock=clock)
    sampler.start()
    time.sleep(seconds)
    return sampler.stop()


def idle_watts(record: SamplerRecord | None) -> dict[str, float]:
    """Sensor name -> idle mean watts, for the sensors whose idle trace is usable."""
    if record is None:
        return {}
    return {t.sensor.name: mean_power_w(t) for t in record.power if usable(t)}


def _sensor_summary(trace: PowerTrace, duration_s: float, inferences: int,
                    idle: Mapping[str, float], subtract_idle: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {"sensor": trace.sensor.describe(), "samples": len(trace.values)}
    if not usable(trace):
        why = trace.error or f"only {len(trace.values)} reading(s) in the measured phase"
        return {**summary, "status": "failed", "reason": f"sensor {trace.sensor.name} failed: {why}"}
    span_s = (trace.times_ns[-1] - trace.times_ns[0]) / 1e9
    mean_w = mean_power_w(trace)
    energy_j = mean_w * duration_s
    summary.update(
        status="ok", reason=None, mean_w=mean_w, energy_j=energy_j,
        energy_per_inference_mj=energy_j / inferences * 1000.0 if inferences else None,
        rails_mean_w=mean_rail_w(trace), sampling_rate_hz=(len(trace.values) - 1) / span_s,
        window_s=span_s, idle_w=idle.get(trace.sensor.name),
    )
    if subtract_idle and summary["idle_w"] is not None and inferences:
        above = mean_w - summary["idle_w"]
        summary.update(above_idle_w=above,
                       energy_per_inference_above_idle_mj=above * duration_s / inferences * 1000.0)
    return summary


def summarize_power(record: SamplerRecord | None, unavailable: str | None, duration_s: float,
                    inferences: int, idle: Mapping[str, float], subtract_idle: bool,
                    interval_s: float) -> dict[str, Any]:
    """The report's power section: the first usable sensor in front, every sensor listed.

    Energy per inference = mean power x measured duration / inferences. No sensor, or every
    sensor failing, gives a status and a reason and no number.
    """
    if record is None or not record.power:
        return {"status": "unavailable", "reason": unavailable or "no power sensor", "sensors": []}
    sensors = [_sensor_summary(t, duration_s, inferences, idle, subtract_idle) for t in record.power]
    front = next((s for s in sensors if s["status"] == "ok"), None)
    if front is None:
        reasons = "; ".join(s["reason"] for s in sensors)
        return {"status": "failed", "reason": reasons, "sensors": sensors, "interval_s": interval_s}
    return {**front, "interval_s": interval_s, "sensors": sensors}


def power_line(power: Mapping[str, Any], subtract_idle: bool = False) -> str:
    """One readable line: the numbers with sensor, rails and rate, or 'power: unavailable (reason)'."""
    if power["status"] != "ok":
        word = "failed" if power["status"] == "failed" else "unavailable"
        return f"power: {word} ({power['reason']})"
    sensor = power["sensor"]
    text = (f"power: {power['mean_w']:.3f} W mean, {power['energy_per_inference_mj']:.3f} mJ/inference "
            f"[{sensor['name']}, total = {sensor['total']}, {power['sampling_rate_hz']:.1f} Hz, "
            f"{power['samples']} samples]")
    if power.get("idle_w") is not None:
        text += f"; idle {power['idle_w']:.3f} W"
    if subtract_idle and power.get("above_idle_w") is not None:
        text += (f"; above idle {power['above_idle_w']:.3f} W = "
                 f"{power['energy_per_inference_above_idle_mj']:.3f} mJ/inference")
    if sensor.get("simulated"):
        text += " (SIMULATED: read from an emulated device tree, not a live sensor)"
    return text
