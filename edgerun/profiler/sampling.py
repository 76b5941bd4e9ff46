"""Background sampling of power sensors, RSS and temperatures during a measured phase."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..hal.power import PowerReading, PowerSensor, SensorReadError
from ..hal.thermal import TempSensor, read_temperatures
from ..telemetry.energy import integrate_joules, interval_watts
from .stats import Clock

log = logging.getLogger(__name__)

# wait(seconds) -> True when sampling should stop; tests inject one that steps a fake clock.
Wait = Callable[[float], bool]


@dataclass
class PowerTrace:
    """Readings of one sensor; ``values`` are watts or cumulative joules (see ``unit``)."""

    sensor: PowerSensor
    times_ns: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    rails: list[dict[str, float]] = field(default_factory=list)
    unit: str = ""
    error: str | None = None

    def add(self, time_ns: int, reading: PowerReading) -> None:
        self.unit = reading.unit
        self.times_ns.append(time_ns)
        self.values.append(reading.total)
        self.rails.append(dict(reading.rails))


@dataclass
class SamplerRecord:
    """Everything one sampler collected between start() and stop()."""

    power: list[PowerTrace]
    rss_bytes: list[int] = field(default_factory=list)
    temps_c: dict[str, list[float]] = field(default_factory=dict)
    ticks: int = 0


class Sampler:
    """Reads sensors in a background thread every ``interval_s`` between start() and stop().

    start() and stop() each take one reading in the caller's thread, so the first and last
    samples sit exactly at the edges of the measured phase.
    """

    def __init__(self, sensors: Sequence[PowerSensor], interval_s: float,
                 temps: Sequence[TempSensor] = (), rss: Callable[[], int | None] | None = None,
                 clock: Clock = time.perf_counter_ns, wait: Wait | None = None) -> None:
        slowest = max((s.min_interval_s for s in sensors), default=0.0)
        self.interval_s = max(interval_s, slowest)
        self.record = SamplerRecord([PowerTrace(s) for s in sensors])
        self._temps = list(temps)
        self._rss = rss
        self._clock = clock
        self._stop = threading.Event()
        self._wait: Wait = wait or self._stop.wait
        self._thread: threading.Thread | None = None

    def sample_once(self) -> None:
        """Read every sensor now (a failing power sensor is recorded and not read again)."""
        for trace in self.record.power:
            if trace.error is not None:
                continue
            try:
                before = self._clock()
                reading = trace.sensor.read()
                trace.add((before + self._clock()) // 2, reading)  # stamp the middle of the read
            except SensorReadError as exc:
                trace.error = f"{exc} (after {len(trace.values)} good samples)"
                log.warning("power sensor %s failed: %s", trace.sensor.name, exc)
        if self._rss is not None:
            rss = self._rss()
            if rss is not None:
                self.record.rss_bytes.append(rss)
        for name, celsius in read_temperatures(self._temps).items():
            self.record.temps_c.setdefault(name, []).append(celsius)
        self.record.ticks += 1

    def _loop(self) -> None:
        while not self._wait(self.interval_s) and not self._stop.is_set():
            self.sample_once()

    def start(self) -> None:
        self.sample_once()
        self._thread = threading.Thread(target=self._loop, name="edgerun-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> SamplerRecord:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 4 * self.interval_s))
        self.sample_once()
        return self.record


def mean_power_w(trace: PowerTrace) -> float:
    """Time-weighted mean power over the trace: trapezoids for watts, end minus start for joules."""
    times, values = trace.times_ns, trace.values
    span_s = (times[-1] - times[0]) / 1e9
    if span_s <= 0 and trace.unit != "J":
        return sum(values) / len(values)
    return integrate_joules(trace.unit, times, values) / span_s


def mean_rail_w(trace: PowerTrace) -> dict[str, float]:
    """Mean power per rail, formed the same way as the total."""
    means = {}
    for rail in trace.rails[0] if trace.rails else {}:
        values = [r.get(rail, 0.0) for r in trace.rails]
        means[rail] = mean_power_w(PowerTrace(trace.sensor, trace.times_ns, values, [], trace.unit))
    return means


def power_series(trace: PowerTrace, origin_ns: int) -> tuple[list[float], list[float]]:
    """(seconds since ``origin_ns``, watts) for plotting; energy counters become interval power."""
    times = [(t - origin_ns) / 1e9 for t in trace.times_ns]
    if trace.unit != "J":
        return times, list(trace.values)
    points = [((times[i] + times[i + 1]) / 2,
               interval_watts("J", trace.times_ns[i], trace.values[i], trace.times_ns[i + 1],
                              trace.values[i + 1]))
              for i in range(len(times) - 1)]
    return [p[0] for p in points], [p[1] for p in points]


def usable(trace: PowerTrace) -> bool:
    """A trace that covers the phase: no failure and at least two readings."""
    return trace.error is None and len(trace.values) >= 2 and trace.times_ns[-1] > trace.times_ns[0]
