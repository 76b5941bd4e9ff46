"""Scenarios after MLPerf LoadGen: single-stream, offline and server (Poisson arrivals), timed by a Clock."""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import Settings
from ..errors import InvalidInputError
from ..types import TensorSpec
from .stats import Clock

SCENARIOS = ("single-stream", "offline", "server")
DEFAULT_OFFLINE_BATCH = 8

# progress(done, total): total is None when the run is bounded by time, not by a count.
Progress = Callable[[int, "int | None"], None]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Budget:
    """Stop after ``runs`` queries, or once ``duration_s`` has passed (whichever is given)."""

    runs: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if (self.runs is None) == (self.duration_s is None):
            raise InvalidInputError("give either a number of runs or a duration, not both or neither")
        if self.runs is not None and self.runs < 1:
            raise InvalidInputError(f"runs must be at least 1, got {self.runs}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise InvalidInputError(f"duration must be positive, got {self.duration_s}")

    def limit(self) -> int:
        return self.runs if self.runs is not None else sys.maxsize

    def deadline(self, start_ns: int) -> int | None:
        return None if self.duration_s is None else start_ns + int(self.duration_s * 1e9)


@dataclass
class QueryTrace:
    """Per-query times in clock nanoseconds: when it was due, when it started, when it ended."""

    scenario: str
    samples_per_query: int
    scheduled_ns: list[int] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)
    end_ns: list[int] = field(default_factory=list)

    @property
    def queries(self) -> int:
        return len(self.end_ns)

    @property
    def samples(self) -> int:
        return self.queries * self.samples_per_query

    def latencies_ns(self) -> list[int]:
        """Latency of each query from when it was due (includes queueing in the server scenario)."""
        return [end - due for due, end in zip(self.scheduled_ns, self.end_ns, strict=True)]

    def duration_ns(self) -> int:
        return self.end_ns[-1] - self.scheduled_ns[0] if self.end_ns else 0

    def throughput(self) -> float:
        """Samples per second over the measured phase."""
        duration = self.duration_ns()
        return self.samples / (duration / 1e9) if duration > 0 else 0.0


def run_back_to_back(call: Callable[[], object], budget: Budget, trace: QueryTrace,
                     clock: Clock = time.perf_counter_ns, progress: Progress | None = None) -> QueryTrace:
    """Issue the next query as soon as the previous one completes (single-stream and offline)."""
    limit, total = budget.limit(), budget.runs
    deadline = budget.deadline(clock())
    starts, ends = trace.start_ns, trace.end_ns
    for done in range(1, limit + 1):
        start = clock()
        call()
        end = clock()
        starts.append(start)
        ends.append(end)
        if progress is not None:
            progress(done, total)
        if deadline is not None and end >= deadline:
            break
    trace.scheduled_ns.extend(starts)
    return trace


def poisson_schedule(qps: float, count: int, seed: int) -> list[float]:
    """Arrival offsets in seconds of ``count`` queries from a Poisson process of rate ``qps``."""
    rng = random.Random(seed)
    offsets, now = [], 0.0
    for _ in range(count):
        now += rng.expovariate(qps)
        offsets.append(now)
    return offsets


def run_server(call: Callable[[], object], budget: Budget, qps: float, trace: QueryTrace,
               clock: Clock = time.perf_counter_ns, sleep: Sleep = time.sleep, seed: int = 0,
               progress: Progress | None = None) -> QueryTrace:
    """Poisson arrivals at ``qps`` served one at a time in arrival order; latency counts queueing."""
    if not qps > 0:
        raise InvalidInputError(f"--qps must be positive, got {qps}")
    expected = budget.runs or max(1, int(qps * (budget.duration_s or 0.0) * 1.2) + 16)
    offsets = poisson_schedule(qps, expected, seed)
    origin = clock()
    deadline = budget.deadline(origin)
    for done, offset in enumerate(offsets, 1):
        due = origin + int(offset * 1e9)
        if deadline is not None and due >= deadline:
            break
        now = clock()
        if now < due:
            sleep((due - now) / 1e9)
        start = clock()
        call()
        end = clock()
        trace.scheduled_ns.append(due)
        trace.start_ns.append(start)
        trace.end_ns.append(end)
        if progress is not None:
            progress(done, budget.runs)
    return trace


def resolve_batch(specs: Sequence[TensorSpec], requested: int | None, scenario: str) -> int:
    """Samples per query: the model's fixed batch, or ``requested`` (offline default 8) when dynamic."""
    if requested is not None and requested < 1:
        raise InvalidInputError(f"--batch must be at least 1, got {requested}")
    fixed = {spec.shape[0] for spec in specs if spec.shape and spec.shape[0] is not None}
    if not fixed:
        return requested or (DEFAULT_OFFLINE_BATCH if scenario == "offline" else 1)
    batch = fixed.pop()
    if requested is not None and requested != batch:
        names = ", ".join(s.describe() for s in specs)
        raise InvalidInputError(f"the model has a fixed batch of {batch} ({names}); --batch {requested} "
                                f"is not possible with this artifact")
    return batch


def _batch_shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    dims = list(spec.shape)
    if dims:
        dims[0] = batch
    if any(d is None for d in dims):
        raise InvalidInputError(f"input {spec.describe()} has dynamic dimensions besides the batch; "
                                "the profiler cannot choose them")
    return tuple(int(d) for d in dims if d is not None)


def check_batch_budget(specs: Sequence[TensorSpec], batch: int, max_bytes: int) -> None:
    """Refuse, before allocating, a batch whose input tensors alone pass ``max_bytes``."""
    needed = sum(math.prod(_batch_shape(s, batch)) * s.dtype.itemsize for s in specs)
    if needed > max_bytes:
        raise InvalidInputError(
            f"--batch {batch} needs {needed / 2**20:.0f} MiB of input tensors, over the limit of "
            f"{max_bytes / 2**20:.0f} MiB (setting max_batch_bytes, EDGERUN_MAX_BATCH_BYTES); "
            "use a smaller batch")


def synthetic_inputs(specs: Sequence[TensorSpec], batch: int, seed: int = 0,
                     max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Random tensors that fit ``specs`` with ``batch`` as the first dimension (within ``max_bytes``,
    default the max_batch_bytes setting)."""
    check_batch_budget(specs, batch, Settings.from_env().max_batch_bytes if max_bytes is None else max_bytes)
    rng = np.random.default_rng(seed)
    return {spec.name: _random_array(rng, spec.dtype, _batch_shape(spec, batch)) for spec in specs}


def _random_array(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    raise InvalidInputError(f"the profiler cannot make inputs of dtype {dtype.name}")


def run_scenario(name: str, call: Callable[[], object], budget: Budget, samples_per_query: int,
                 qps: float | None = None, clock: Clock = time.perf_counter_ns,
                 sleep: Sleep = time.sleep, seed: int = 0,
                 progress: Progress | None = None) -> QueryTrace:
    """Run one named scenario and return its trace."""
    trace = QueryTrace(name, samples_per_query)
    if name == "server":
        if qps is None:
            raise InvalidInputError("scenario server needs --qps Q (the Poisson arrival rate)")
        return run_server(call, budget, qps, trace, clock, sleep, seed, progress)
    if name not in SCENARIOS:
        raise InvalidInputError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIOS)}")
    return run_back_to_back(call, budget, trace, clock, progress)


def scenario_metrics(trace: QueryTrace, latency_bound_ms: float | None) -> Mapping[str, object]:
    """Scenario-specific numbers: queries, samples, duration, throughput, missed latency bound."""
    metrics: dict[str, object] = {
        "queries": trace.queries, "samples": trace.samples,
        "samples_per_query": trace.samples_per_query,
        "duration_s": trace.duration_ns() / 1e9, "throughput_per_s": trace.throughput(),
    }
    if trace.scenario == "server" and latency_bound_ms is not None:
        bound_ns = latency_bound_ms * 1e6
        missed = sum(1 for latency in trace.latencies_ns() if latency > bound_ns)
        metrics.update(latency_bound_ms=latency_bound_ms, missed_latency_bound=missed)
    return metrics
