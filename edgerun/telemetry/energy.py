"""Energy from power readings, shared by the profiler and the service's sampler: trapezoids over watts,
differences of energy counters (a counter that goes backwards restarted: that interval counts 0)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..hal.power import PowerReading


def interval_joules(unit: str, t0_ns: int, v0: float, t1_ns: int, v1: float) -> float:
    """Energy between two readings: trapezoid for watts ("W"), counter difference for joules ("J").

    Counter wrap is undone by the sensor (RAPL keeps a wrap count); a counter that still goes
    backwards was reset (driver reload) and that one interval is counted as 0, never negative.
    """
    if unit == "J":
        return max(0.0, v1 - v0)
    return (v0 + v1) / 2.0 * max(0, t1_ns - t0_ns) / 1e9


def integrate_joules(unit: str, times_ns: Sequence[int], values: Sequence[float]) -> float:
    """Energy over a whole trace of one quantity."""
    return sum(interval_joules(unit, times_ns[i], values[i], times_ns[i + 1], values[i + 1])
               for i in range(len(values) - 1))


def interval_watts(unit: str, t0_ns: int, v0: float, t1_ns: int, v1: float) -> float:
    """Mean power between two readings (the later reading's value where no time passed)."""
    span_s = (t1_ns - t0_ns) / 1e9
    if span_s <= 0:
        return v1 if unit == "W" else 0.0
    return interval_joules(unit, t0_ns, v0, t1_ns, v1) / span_s


@dataclass
class EnergyCounter:
    """Running energy of one sensor, per rail and in total, fed one reading at a time."""

    unit: str = ""
    last_ns: int | None = None
    last: PowerReading | None = None
    total_j: float = 0.0
    rails_j: dict[str, float] = field(default_factory=dict)
    watts: float | None = None
    rail_watts: dict[str, float] = field(default_factory=dict)

    def add(self, time_ns: int, reading: PowerReading) -> None:
        """Count the energy since the previous reading; update the current watts."""
        previous, previous_ns = self.last, self.last_ns
        self.unit, self.last, self.last_ns = reading.unit, reading, time_ns
        if previous is None or previous_ns is None:
            if reading.unit == "W":
                self.watts, self.rail_watts = reading.total, dict(reading.rails)
            return
        self.total_j += interval_joules(reading.unit, previous_ns, previous.total, time_ns, reading.total)
        self.watts = interval_watts(reading.unit, previous_ns, previous.total, time_ns, reading.total) \
            if reading.unit == "J" else reading.total
        for rail, value in reading.rails.items():
            before = previous.rails.get(rail, value)
            self.rails_j[rail] = self.rails_j.get(rail, 0.0) + interval_joules(
                reading.unit, previous_ns, before, time_ns, value)
            self.rail_watts[rail] = (interval_watts(reading.unit, previous_ns, before, time_ns, value)
                                     if reading.unit == "J" else value)

    def snapshot(self) -> Mapping[str, float]:
        return {"total": self.total_j, **self.rails_j}
