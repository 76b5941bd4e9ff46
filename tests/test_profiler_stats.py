"""Profiler statistics and scenarios, timed by an injected fake clock so every number is exact."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from edgerun.errors import InvalidInputError
from edgerun.profiler.scenarios import (
    Budget,
    poisson_schedule,
    resolve_batch,
    run_scenario,
    scenario_metrics,
    synthetic_inputs,
)
from edgerun.profiler.stats import min_query_count, percentile_ns, query_count_checks, summarize
from edgerun.types import Quantization, TensorSpec

MS = 1_000_000
F32 = np.dtype(np.float32)


class FakeClock:
    """Nanoseconds that move only when a fake inference or a fake sleep says so."""

    def __init__(self) -> None:
        self.now = 1_000 * MS

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)


def fake_inference(clock: FakeClock, durations_ms: list[float]) -> tuple[list[int], Callable[[], None]]:
    """A call that takes the next duration from the list (cycling); returns (calls log, call)."""
    calls: list[int] = []
    cycle: Iterator[float] = iter(durations_ms * 1000)

    def call() -> None:
        calls.append(clock.now)
        clock.now += round(next(cycle) * MS)

    return calls, call


def test_percentiles_index_like_loadgen() -> None:
    latencies = list(range(1, 101))  # 1..100
    assert percentile_ns(latencies, 0.50) == 51   # sorted[int(100 * 0.5)]
    assert percentile_ns(latencies, 0.90) == 91
    assert percentile_ns(latencies, 0.99) == 100
    assert percentile_ns([7], 0.99) == 7
    with pytest.raises(ValueError):
        percentile_ns([], 0.5)


def test_minimum_query_counts_match_loadgen_early_stopping() -> None:
    assert min_query_count(0.90) == 64    # "Need to process at least 64 queries"
    assert min_query_count(0.99) == 662   # mlperf.conf MultiStream min_query_count
    checks = query_count_checks(100)
    assert checks["p90"] == {"min_queries": 64, "met": True}
    assert checks["p99"] == {"min_queries": 662, "met": False}


def test_single_stream_stats_are_exact_under_a_fake_clock() -> None:
    clock = FakeClock()
    _, call = fake_inference(clock, [10.0, 12.0, 14.0, 16.0])
    trace = run_scenario("single-stream", call, Budget(runs=8), 1, clock=clock)
    assert trace.latencies_ns() == [x * MS for x in (10, 12, 14, 16, 10, 12, 14, 16)]
    stats = summarize(trace.latencies_ns())
    assert (stats.count, stats.min_ms, stats.max_ms, stats.mean_ms) == (8, 10.0, 16.0, 13.0)
    assert stats.std_ms == pytest.approx(math.sqrt(5.0))
    assert stats.percentiles_ms == {"p50": 14.0, "p90": 16.0, "p95": 16.0, "p99": 16.0}
    metrics = scenario_metrics(trace, None)
    assert metrics["duration_s"] == pytest.approx(0.104)
    assert metrics["throughput_per_s"] == pytest.approx(8 / 0.104)


def test_duration_budget_stops_at_the_deadline() -> None:
    clock = FakeClock()
    _, call = fake_inference(clock, [10.0])
    trace = run_scenario("single-stream", call, Budget(duration_s=0.1), 1, clock=clock)
    assert trace.queries == 10


def test_offline_counts_samples_per_batch() -> None:
    clock = FakeClock()
    _, call = fake_inference(clock, [40.0])
    trace = run_scenario("offline", call, Budget(runs=5), 8, clock=clock)
    assert trace.samples == 40
    assert scenario_metrics(trace, None)["throughput_per_s"] == pytest.approx(40 / 0.2)


def test_progress_is_reported_per_query() -> None:
    clock = FakeClock()
    _, call = fake_inference(clock, [1.0])
    seen: list[tuple[int, int | None]] = []
    run_scenario("single-stream", call, Budget(runs=3), 1, clock=clock,
                 progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_server_latency_includes_queueing_behind_poisson_arrivals() -> None:
    clock = FakeClock()
    calls, call = fake_inference(clock, [30.0])
    qps, runs, seed = 50.0, 40, 7
    trace = run_scenario("server", call, Budget(runs=runs), 1, qps=qps, clock=clock, sleep=clock.sleep,
                         seed=seed)
    origin = trace.scheduled_ns[0] - round(poisson_schedule(qps, runs, seed)[0] * 1e9)
    expected, free_at = [], 0
    for offset in poisson_schedule(qps, runs, seed):   # a one-worker FIFO queue, worked by hand
        due = origin + int(offset * 1e9)
        start = max(due, free_at)
        free_at = start + 30 * MS
        expected.append(free_at - due)
    assert trace.latencies_ns() == expected
    assert calls == trace.start_ns
    metrics = scenario_metrics(trace, latency_bound_ms=45.0)
    assert metrics["missed_latency_bound"] == sum(1 for x in expected if x > 45 * MS)
    assert 0 < metrics["missed_latency_bound"] < runs   # 50 qps against 33 qps of service: queues form


def test_server_needs_a_rate() -> None:
    with pytest.raises(InvalidInputError, match="--qps"):
        run_scenario("server", lambda: None, Budget(runs=1), 1)


@pytest.mark.parametrize("kwargs", [{}, {"runs": 1, "duration_s": 1.0}, {"runs": 0}, {"duration_s": -1.0}])
def test_budget_needs_exactly_one_positive_bound(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        Budget(**kwargs)  # type: ignore[arg-type]


def test_batch_resolution() -> None:
    dynamic = [TensorSpec("x", (None, 3, 8, 8), F32)]
    fixed = [TensorSpec("x", (1, 8, 8, 3), F32)]
    assert resolve_batch(dynamic, None, "offline") == 8
    assert resolve_batch(dynamic, None, "single-stream") == 1
    assert resolve_batch(dynamic, 4, "single-stream") == 4
    assert resolve_batch(fixed, None, "offline") == 1
    with pytest.raises(InvalidInputError, match="fixed batch of 1"):
        resolve_batch(fixed, 4, "offline")


def test_synthetic_inputs_fit_their_specs() -> None:
    specs = [TensorSpec("image", (None, 4, 4, 3), np.dtype(np.int8), Quantization(0.02, -1)),
             TensorSpec("scale", (None, 2), F32), TensorSpec("mask", (None, 3), np.dtype(np.bool_))]
    inputs = synthetic_inputs(specs, 2)
    for spec in specs:
        spec.check(inputs[spec.name])
        assert inputs[spec.name].shape[0] == 2
    with pytest.raises(InvalidInputError, match="dynamic dimensions"):
        synthetic_inputs([TensorSpec("x", (None, None), F32)], 1)
