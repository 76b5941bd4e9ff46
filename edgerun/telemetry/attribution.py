"""Energy attributed to models: board power above the idle baseline, integrated over each model
execution, overlapping executions sharing by time. Pure functions plus a cheap execution recorder.

Method. Between two power samples power is taken as linear (the trapezoid). The timeline is cut at
every sample and every execution start/end. In a piece where k executions run, the energy above
the idle baseline ``(P - P_idle) * dt`` goes 1/k to each of them (a piece where power is below the
baseline gives nothing: counters never go down). Pieces where nothing runs measure the idle
baseline. Limits: the rail is shared by everything on the board (other processes, the camera,
the web server) so their activity during an execution is charged to the model; concurrent models
split by time, not by what each really drew; the sample period (100 ms) smooths short bursts.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple


class Execution(NamedTuple):
    """One model execution: [start_ns, end_ns] on the sampler's clock (a tuple: cheap to make)."""

    model: str
    start_ns: int
    end_ns: int


@dataclass
class Attribution:
    """What one stretch of timeline gave: joules per model, and the idle time and energy seen."""

    model_joules: dict[str, float] = field(default_factory=dict)
    idle_joules: float = 0.0
    idle_seconds: float = 0.0


def _power_at(t0: int, w0: float, t1: int, w1: float, t: int) -> float:
    return w0 if t1 == t0 else w0 + (w1 - w0) * (t - t0) / (t1 - t0)


def _events(t0: int, t1: int, executions: Iterable[Execution]) -> list[tuple[int, int, str]]:
    """(time, +1 start / -1 end, model) of the executions overlapping [t0, t1], clipped to it."""
    events = []
    for e in executions:
        if e.start_ns < t1 and e.end_ns > t0:
            events.append((max(e.start_ns, t0), 1, e.model))
            events.append((min(e.end_ns, t1), -1, e.model))
    events.sort(key=lambda event: event[0])
    return events


def attribute_segment(t0: int, w0: float, t1: int, w1: float, executions: Sequence[Execution],
                      idle_w: float | None, into: Attribution) -> None:
    """Attribute the power segment [t0, t1] (w0 -> w1 linear) to the executions overlapping it.

    A sweep over the executions' starts and ends (O(n log n)). With ``idle_w`` None (no
    baseline yet) only the idle statistics are gathered.
    """
    running: dict[str, int] = {}
    count = 0
    previous = t0
    for t, change, model in [*_events(t0, t1, executions), (t1, 0, "")]:
        if t > previous:
            _piece(t0, w0, t1, w1, previous, t, running, count, idle_w, into)
            previous = t
        if change:
            running[model] = running.get(model, 0) + change
            count += change


def _piece(t0: int, w0: float, t1: int, w1: float, a: int, b: int, running: dict[str, int],
           count: int, idle_w: float | None, into: Attribution) -> None:
    """One piece [a, b] of a segment during which the same executions run."""
    joules = (_power_at(t0, w0, t1, w1, a) + _power_at(t0, w0, t1, w1, b)) / 2 * (b - a) / 1e9
    if count == 0:
        into.idle_joules += joules
        into.idle_seconds += (b - a) / 1e9
    elif idle_w is not None:
        above = max(0.0, joules - idle_w * (b - a) / 1e9)
        for model, runs in running.items():
            if runs:
                into.model_joules[model] = into.model_joules.get(model, 0.0) + above * runs / count


def attribute(samples: Sequence[tuple[int, float]], executions: Sequence[Execution],
              idle_w: float | None) -> Attribution:
    """Attribute a whole power trace [(time_ns, watts), ...] to a known execution schedule."""
    result = Attribution()
    for (t0, w0), (t1, w1) in itertools.pairwise(samples):
        attribute_segment(t0, w0, t1, w1, executions, idle_w, result)
    return result


class IdleBaseline:
    """Mean board power while nothing ran, over roughly the last ``horizon_s`` seconds of idle time."""

    def __init__(self, horizon_s: float = 60.0, min_seconds: float = 0.2) -> None:
        self.horizon_s = horizon_s
        self.min_seconds = min_seconds
        self._joules = 0.0
        self._seconds = 0.0

    def add(self, joules: float, seconds: float) -> None:
        if seconds <= 0:
            return
        self._joules += joules
        self._seconds += seconds
        if self._seconds > self.horizon_s:          # forget older idle time proportionally
            keep = self.horizon_s / self._seconds
            self._joules *= keep
            self._seconds *= keep

    @property
    def watts(self) -> float | None:
        return self._joules / self._seconds if self._seconds >= self.min_seconds else None


class _Running:
    """The context one execution runs in: registered at enter, recorded as finished at exit."""

    __slots__ = ("_recorder", "_model", "_key")

    def __init__(self, recorder: ExecutionRecorder, model: str) -> None:
        self._recorder, self._model, self._key = recorder, model, 0

    def __enter__(self) -> None:
        self._key = self._recorder.begin(self._model)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._recorder.end(self._key)


class ExecutionRecorder:
    """Collects model execution intervals from worker threads (one lock, O(1) per execution)."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._next = itertools.count(1)
        self._running: dict[int, tuple[str, int]] = {}
        self._finished: list[Execution] = []
        self._counts: dict[str, int] = {}

    def run(self, model: str) -> _Running:
        """``with recorder.run(name): session.infer(...)`` records that execution."""
        return _Running(self, model)

    def begin(self, model: str) -> int:
        with self._lock:
            key = next(self._next)
            self._running[key] = (model, self.clock())
            return key

    def end(self, key: int) -> None:
        with self._lock:
            model, start = self._running.pop(key)
            self._finished.append(Execution(model, start, self.clock()))
            self._counts[model] = self._counts.get(model, 0) + 1

    def counts(self) -> dict[str, int]:
        """Executions finished per model since the service started."""
        with self._lock:
            return dict(self._counts)

    def drain(self) -> tuple[list[Execution], int | None]:
        """Executions finished since the last drain, and the earliest start still running."""
        with self._lock:
            finished, self._finished = self._finished, []
            earliest = min((start for _, start in self._running.values()), default=None)
        return finished, earliest


class _NoRun:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


class NullRecorder:
    """Recorder used when telemetry is off: no lock, no allocation."""

    _context = _NoRun()

    def run(self, model: str) -> _NoRun:
        return self._context
