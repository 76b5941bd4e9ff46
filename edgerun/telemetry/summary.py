"""What the telemetry shows as JSON: the body of GET /v1/telemetry (and `edgerun top`) over one sampler."""

from __future__ import annotations

import math
import time
from typing import Any

from .sampler import WINDOW_S, TelemetrySampler


def percentile(values: list[int], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return float(ordered[rank - 1])


def model_rows(sampler: TelemetrySampler) -> list[dict[str, Any]]:
    """Per model over the last minute: inference rate, execution latency p50/p99, energy per inference."""
    window = list(sampler.window)
    if not window:
        return []
    now_ns = sampler.now_ns()
    oldest = next((w for w in window if now_ns - w[0] <= WINDOW_S * 1e9 + 1), window[0])
    t_old, joules_old, counts_old = oldest
    t_new, joules_new, counts_new = window[-1]
    span_s = (t_new - t_old) / 1e9
    rows = []
    for name in sorted(set(joules_new) | set(counts_new)):
        inferences = counts_new.get(name, 0) - counts_old.get(name, 0)
        joules = joules_new.get(name, 0.0) - joules_old.get(name, 0.0)
        latencies = sampler.latencies_ns(name, now_ns - int(WINDOW_S * 1e9))
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        rows.append({
            "name": name, "window_s": span_s,
            "inferences": inferences if inferences >= 0 else None,
            "inferences_per_s": inferences / span_s if span_s > 0 and inferences >= 0 else None,
            "executions": len(latencies),
            "latency_ms": {"p50": p50 / 1e6 if p50 is not None else None,
                           "p99": p99 / 1e6 if p99 is not None else None},
            "energy_j": joules_new.get(name, 0.0),
            "energy_per_inference_j": joules / inferences if inferences > 0 else None,
        })
    return rows


def missing(sampler: TelemetrySampler) -> dict[str, str]:
    """What could not be read here and why (each reason once, from discovery)."""
    hardware = sampler.hardware
    if hardware is None:
        return {"all": "the sampler has not started yet"}
    why: dict[str, str] = {}
    if hardware.power_missing:
        why["power"] = hardware.power_missing
    for state in hardware.power:
        if state.error:
            why[f"power:{state.sensor.name}"] = f"stopped: {state.error}"
    if not hardware.temps:
        why["temperature"] = "no thermal zone under /sys/class/thermal and no Coral apex"
    if not hardware.throttle:
        why["throttling"] = hardware.throttle_finding
    if not hardware.cpu_freqs:
        why["cpu_frequency"] = "no /sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq"
    if not hardware.cpu_load.available:
        why["cpu_load"] = "no /proc/stat"
    if not hardware.accelerators:
        why["accelerator_load"] = "no GPU/NPU load file (Jetson gpu load, Rockchip NPU devfreq)"
    if sampler.idle.watts is None and not hardware.power_missing:
        why["model_energy"] = "idle baseline not measured yet (needs a moment with no execution)"
    return why


def telemetry_json(sampler: TelemetrySampler, history: bool = False) -> dict[str, Any]:
    """The body of GET /v1/telemetry (and of each /v1/telemetry/events event)."""
    hardware = sampler.hardware
    body: dict[str, Any] = {
        "time": time.time(), "enabled": True, "power_period_s": sampler.power_period_s,
        "thermal_period_s": sampler.thermal_period_s,
        "sensors": sampler.sensors(), "idle_w": sampler.idle.watts,
        "sampler_cpu_s": sampler.cpu_seconds,
        **sampler.state(),
        "throttle_sources": [s.name for s in hardware.throttle] if hardware else [],
        "models": model_rows(sampler), "missing": missing(sampler),
    }
    if history:
        body["history"] = sampler.history_points()
    return body
