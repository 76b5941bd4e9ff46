"""What the telemetry shows: the JSON of GET /v1/telemetry and the Prometheus collector over one sampler."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .sampler import WINDOW_S, TelemetrySampler

TOTAL_RAIL = "total"   # the rail label of a sensor's own total (VDD_IN, psys, sum of rails, ...)


def percentile(values: list[int], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
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


class TelemetryCollector(Collector):
    """Prometheus families read from the sampler at scrape time (no per-sample metric updates)."""

    def __init__(self, sampler: TelemetrySampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        """Only families with samples: a board without a sensor exports nothing for it."""
        for family in (*self._power(), *self._models(), *self._board()):
            if family.samples:
                yield family

    def _power(self) -> Iterator[Metric]:
        watts = GaugeMetricFamily("edgerun_power_watts", "Power now, per sensor and rail (rail "
                                  "\"total\": the sensor's board/module total)", labels=["sensor", "rail"])
        energy = CounterMetricFamily("edgerun_energy_joules", "Energy since the service started, per "
                                     "sensor and rail", labels=["sensor", "rail"])
        for row in self.sampler.sensors():
            if row["error"] is not None or row["unit"] == "":
                continue
            if row["watts"] is not None:
                watts.add_metric([row["name"], TOTAL_RAIL], row["watts"])
            for rail, value in row["rail_watts"].items():
                watts.add_metric([row["name"], rail], value)
            energy.add_metric([row["name"], TOTAL_RAIL], row["energy_j"])
            for rail, value in row["rail_energy_j"].items():
                energy.add_metric([row["name"], rail], value)
        yield watts
        yield energy

    def _models(self) -> Iterator[Metric]:
        if not self.sampler.hardware_has_power:
            return
        model = CounterMetricFamily("edgerun_model_energy_joules", "Board energy above the idle baseline "
                                    "while the model's executions ran (overlaps split by time)",
                                    labels=["model"])
        for name, joules in sorted(self.sampler.model_joules().items()):
            model.add_metric([name], joules)
        yield model
        idle = self.sampler.idle.watts
        if idle is not None:
            yield GaugeMetricFamily("edgerun_idle_power_watts", "Board power while no model ran "
                                    "(the baseline of model energy)", value=idle)

    def _board(self) -> Iterator[Metric]:
        state = self.sampler.state()
        counts = self.sampler.inference_counts()
        inferences = CounterMetricFamily(
            "edgerun_model_inferences", "Model executions (a V2 request or dynamic batch, an image "
            "prediction, a stream frame): the divisor of energy per inference", labels=["model"])
        for name, count in sorted(counts.items()):
            inferences.add_metric([name], count)
        yield inferences
        yield _labelled("edgerun_temperature_celsius", "Temperature per thermal zone", "zone",
                        state["temperatures_c"])
        yield _labelled("edgerun_throttled", "1 while the board reports this throttling reason",
                        "reason", {r: float(on) for r, on in state["throttled"].items()})
        yield _labelled("edgerun_cpu_frequency_hertz", "Current CPU frequency", "cpu",
                        state["cpu_frequency_hz"])
        yield _labelled("edgerun_accelerator_utilization_ratio", "GPU/NPU busy share (0..1)", "device",
                        {k: v / 100.0 for k, v in state["accelerator_percent"].items()})
        yield CounterMetricFamily("edgerun_telemetry_cpu_seconds", "CPU time the telemetry sampler "
                                  "thread used", value=self.sampler.cpu_seconds)
        if state["cpu_percent"] is not None:
            yield GaugeMetricFamily("edgerun_cpu_utilization_ratio", "Busy share of all CPUs (0..1)",
                                    value=state["cpu_percent"] / 100.0)


def _labelled(name: str, documentation: str, label: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family
