"""The service's telemetry sampler: one background thread reading power (default every 100 ms) and
temperatures, throttling, CPU frequency and load (default every 1 s) through the HAL, integrating
energy per rail and attributing it to model executions."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hal import HostFS
from ..hal.load import (
    AcceleratorLoad,
    CpuFrequency,
    CpuLoad,
    discover_accelerator_loads,
    discover_cpu_frequencies,
)
from ..hal.power import (
    CommandRunner,
    PowerReading,
    PowerSensor,
    SensorReadError,
    host_runner,
    survey_power_sensors,
)
from ..hal.power import unavailable_reason as power_unavailable_reason
from ..hal.thermal import TempSensor, ThrottleSource, discover_temp_sensors, discover_throttle_sources
from .attribution import Attribution, Execution, ExecutionRecorder, IdleBaseline, attribute_segment
from .energy import EnergyCounter, interval_watts

log = logging.getLogger(__name__)

Clock = Callable[[], int]
Wait = Callable[[float], bool]
HISTORY_S = 300.0          # what the page's charts show
WINDOW_S = 60.0            # per-model rates, latencies and energy per inference
MAX_LATENCIES = 20_000     # per model, newest kept
MAX_PENDING_S = 120.0      # power kept for an execution still running (longer ones are clipped)


@dataclass
class SensorState:
    """One power sensor, its running energy, and why it stopped if it did."""

    sensor: PowerSensor
    counter: EnergyCounter = field(default_factory=EnergyCounter)
    error: str | None = None


@dataclass
class ModelEnergy:
    """Energy attributed to one model so far, and its latest execution times (end ns, duration ns)."""

    joules: float = 0.0
    latencies: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=MAX_LATENCIES))


@dataclass
class Hardware:
    """What discovery found under the host root (paths resolved once)."""

    power: list[SensorState]
    power_missing: str | None
    temps: list[TempSensor]
    throttle: list[ThrottleSource]
    throttle_finding: str
    cpu_freqs: list[CpuFrequency]
    accelerators: list[AcceleratorLoad]
    cpu_load: CpuLoad


def discover_hardware(fs: HostFS, runner: CommandRunner | None = None) -> Hardware:
    """Find every sensor the telemetry reads; say why power is missing when it is."""
    runner = runner or host_runner(fs)
    sensors, findings = survey_power_sensors(fs, runner)
    throttle, throttle_finding = discover_throttle_sources(fs, runner)
    return Hardware(
        power=[SensorState(s) for s in sensors],
        power_missing=None if sensors else power_unavailable_reason(findings),
        temps=discover_temp_sensors(fs), throttle=throttle, throttle_finding=throttle_finding,
        cpu_freqs=discover_cpu_frequencies(fs), accelerators=discover_accelerator_loads(fs),
        cpu_load=CpuLoad(fs))


class TelemetrySampler:
    """Samples in one daemon thread between start() and stop(); snapshot() is safe from any thread."""

    def __init__(self, host_root: str | Path = "/", power_period_s: float = 0.1,
                 thermal_period_s: float = 1.0, recorder: ExecutionRecorder | None = None,
                 runner: CommandRunner | None = None, clock: Clock = time.perf_counter_ns,
                 wait: Wait | None = None, inference_counts: Callable[[], dict[str, int]] | None = None
                 ) -> None:
        self.fs = HostFS(host_root)
        self.power_period_s = power_period_s
        self.thermal_period_s = thermal_period_s
        self.recorder = recorder or ExecutionRecorder(clock)
        self._runner = runner
        self._clock = clock
        self._stop = threading.Event()
        self._wait: Wait = wait or self._stop.wait
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.hardware: Hardware | None = None
        self.idle = IdleBaseline()
        self.models: dict[str, ModelEnergy] = {}
        self.temps_c: dict[str, float] = {}
        self.throttled: dict[str, bool] = {}
        self.cpu_hz: dict[str, float] = {}
        self.cpu_percent: float | None = None
        self.accelerator_percent: dict[str, float] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=int(HISTORY_S / thermal_period_s) + 1)
        self.ticks = 0
        self.cpu_seconds = 0.0
        self.inference_counts = inference_counts or self.recorder.counts
        # (time ns, joules per model, inferences per model) once per thermal tick, last WINDOW_S
        self.window: deque[tuple[int, dict[str, float], dict[str, int]]] = deque(
            maxlen=int(WINDOW_S / thermal_period_s) + 2)
        self._segments: deque[tuple[int, float, int, float]] = deque()
        self._pending: list[Execution] = []
        self._last_board: tuple[int, float] | None = None

    # ---- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgerun-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 4 * self.thermal_period_s))

    def discover(self) -> Hardware:
        hardware = discover_hardware(self.fs, self._runner)
        if hardware.power_missing:
            log.warning("telemetry: %s", hardware.power_missing)   # once, at start
        with self._lock:
            self.hardware = hardware
        return hardware

    def _run(self) -> None:
        hardware = self.discover()
        period = max([self.power_period_s, *(s.sensor.min_interval_s for s in hardware.power)])
        next_thermal = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            self.power_tick()
            if started >= next_thermal:
                self.thermal_tick()
                next_thermal = started + self.thermal_period_s
            self.cpu_seconds = time.thread_time()     # this thread's own cost, exported
            if self._wait(max(0.0, period - (time.monotonic() - started))):
                break

    # ---- power ------------------------------------------------------------------------------
    def power_tick(self) -> None:
        """Read every power sensor once, count energy, attribute finished executions."""
        assert self.hardware is not None
        board: tuple[int, float] | None = None
        for state in self.hardware.power:
            if state.error is not None:
                continue
            try:
                before = self._clock()
                reading = state.sensor.read()
                now = (before + self._clock()) // 2
            except SensorReadError as exc:
                state.error = str(exc)
                log.warning("telemetry: power sensor %s stopped: %s", state.sensor.name, exc)
                continue
            with self._lock:
                previous = state.counter.last, state.counter.last_ns
                state.counter.add(now, reading)
            if board is None:
                board = self._board_segment(previous, now, reading.total, reading.unit)
        self._attribute(board)
        self.ticks += 1

    def _board_segment(self, previous: tuple[PowerReading | None, int | None], now: int, value: float,
                       unit: str) -> tuple[int, float]:
        """Queue the best sensor's segment since its previous reading for attribution."""
        last, last_ns = previous
        if last is not None and last_ns is not None:
            if unit == "J":
                watts = interval_watts("J", last_ns, last.total, now, value)
                self._segments.append((last_ns, watts, now, watts))
            else:
                self._segments.append((last_ns, last.total, now, value))
        return now, value

    def _attribute(self, board: tuple[int, float] | None) -> None:
        finished, earliest_running = self.recorder.drain()
        self._pending.extend(finished)
        with self._lock:
            for execution in finished:
                entry = self.models.setdefault(execution.model, ModelEnergy())
                entry.latencies.append((execution.end_ns, execution.end_ns - execution.start_ns))
        result = Attribution()
        while self._segments and (earliest_running is None or self._segments[0][2] <= earliest_running):
            t0, w0, t1, w1 = self._segments.popleft()
            attribute_segment(t0, w0, t1, w1, self._pending, self.idle.watts, result)
            self._pending = [e for e in self._pending if e.end_ns > t1]
            self.idle.add(result.idle_joules, result.idle_seconds)
            result.idle_joules = result.idle_seconds = 0.0
        while self._segments and self._segments[-1][2] - self._segments[0][0] > MAX_PENDING_S * 1e9:
            self._segments.popleft()       # an execution running longer than that: its start is clipped
        with self._lock:
            for model, joules in result.model_joules.items():
                self.models.setdefault(model, ModelEnergy()).joules += joules
        if board is None and not self.hardware_has_power:
            self._pending.clear()          # nothing to attribute against: keep no backlog

    @property
    def hardware_has_power(self) -> bool:
        return self.hardware is not None and any(s.error is None for s in self.hardware.power)

    # ---- temperatures, throttling, frequencies, load ----------------------------------------
    def thermal_tick(self) -> None:
        """Read temperatures, throttle flags, CPU frequencies and loads; add a history point."""
        assert self.hardware is not None
        hardware = self.hardware
        temps = {s.name: c for s in hardware.temps if (c := s.read_c()) is not None}
        throttled: dict[str, bool] = {}
        for source in hardware.throttle:
            throttled.update(source.read() or {})
        tripped = [s.name for s in hardware.temps
                   if s.trip_c is not None and temps.get(s.name, -273.0) >= s.trip_c]
        if hardware.temps:
            throttled["thermal_trip"] = bool(tripped)
        freqs = {f.cpu: hz for f in hardware.cpu_freqs if (hz := f.read_hz()) is not None}
        loads = {a.name: p for a in hardware.accelerators if (p := a.read_percent()) is not None}
        cpu = hardware.cpu_load.read_percent()
        with self._lock:
            self.temps_c, self.throttled, self.cpu_hz = temps, throttled, freqs
            self.accelerator_percent, self.cpu_percent = loads, cpu
            self.history.append({"t": time.time(), "power_w": self._power_now(), "temps_c": temps,
                                 "throttled": sorted(r for r, on in throttled.items() if on)})
            joules = {name: entry.joules for name, entry in self.models.items()}
        self.window.append((self._clock(), joules, dict(self.inference_counts())))

    def _power_now(self) -> dict[str, float]:
        if self.hardware is None:
            return {}
        return {s.sensor.name: s.counter.watts for s in self.hardware.power
                if s.error is None and s.counter.watts is not None}

    # ---- reading the state ------------------------------------------------------------------
    def sensors(self) -> list[dict[str, Any]]:
        """Per sensor: description, current watts per rail and total, energy per rail."""
        if self.hardware is None:
            return []
        rows = []
        with self._lock:
            for state in self.hardware.power:
                counter = state.counter
                rows.append({**state.sensor.describe(), "error": state.error, "unit": counter.unit,
                             "watts": counter.watts, "rail_watts": dict(counter.rail_watts),
                             "energy_j": counter.total_j, "rail_energy_j": dict(counter.rails_j)})
        return rows

    def model_joules(self) -> dict[str, float]:
        with self._lock:
            return {name: entry.joules for name, entry in self.models.items()}

    def latencies_ns(self, model: str, since_ns: int) -> list[int]:
        with self._lock:
            entry = self.models.get(model)
            return [d for end, d in entry.latencies if end >= since_ns] if entry else []

    def now_ns(self) -> int:
        return self._clock()

    def state(self) -> dict[str, Any]:
        """Temperatures, throttling, CPU frequency and load as last read."""
        with self._lock:
            return {"temperatures_c": dict(self.temps_c), "throttled": dict(self.throttled),
                    "cpu_frequency_hz": dict(self.cpu_hz), "cpu_percent": self.cpu_percent,
                    "accelerator_percent": dict(self.accelerator_percent)}

    def history_points(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.history)
