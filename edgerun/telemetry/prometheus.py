"""The telemetry's Prometheus families, read from the sampler at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .sampler import TelemetrySampler

TOTAL_RAIL = "total"   # the rail label of a sensor's own total (VDD_IN, psys, sum of rails, ...)


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
