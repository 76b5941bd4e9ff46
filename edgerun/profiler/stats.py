"""Latency statistics as MLPerf LoadGen computes them, and its minimum query counts."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

# A clock returns monotonic nanoseconds; tests inject a fake one.
Clock = Callable[[], int]

REPORTED_PERCENTILES = (0.50, 0.90, 0.95, 0.99)
EARLY_STOPPING_CONFIDENCE = 0.99


def percentile_ns(sorted_ns: Sequence[int], fraction: float) -> int:
    """LoadGen's percentile: the sorted sample at index ``floor(n * fraction)`` (0 <= fraction < 1)."""
    if not sorted_ns:
        raise ValueError("no latencies")
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * fraction))]


def _log_binomial_cdf(failures: int, trials: int, p_fail: float) -> float:
    """log P(X <= failures) for X ~ Binomial(trials, p_fail)."""
    terms = [
        math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
        + k * math.log(p_fail) + (trials - k) * math.log1p(-p_fail)
        for k in range(failures + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


@lru_cache(maxsize=64)
def min_passing_queries(over_latency: int, fraction: float,
                        confidence: float = EARLY_STOPPING_CONFIDENCE) -> int:
    """Smallest h with BetaRegularized(fraction, h, t + 1) <= 1 - confidence (LoadGen's finder).

    BetaRegularized(p, h, t + 1) is the probability that at most t of h + t queries exceed the
    ``fraction`` percentile, so h + t queries are enough to claim that percentile with t of them over.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"percentile fraction must be in (0, 1), got {fraction}")
    limit = math.log(1.0 - confidence)
    low, high = 1, 1
    while _log_binomial_cdf(over_latency, high + over_latency, 1.0 - fraction) > limit:
        low, high = high, high * 2
    while low < high:
        middle = (low + high) // 2
        if _log_binomial_cdf(over_latency, middle + over_latency, 1.0 - fraction) <= limit:
            high = middle
        else:
            low = middle + 1
    return high


def min_query_count(fraction: float) -> int:
    """Queries LoadGen needs before it reports a percentile (64 for p90, 662 for p99)."""
    return min_passing_queries(1, fraction) + 1


@dataclass(frozen=True)
class LatencyStats:
    """Steady-state latency summary in milliseconds."""

    count: int
    min_ms: float
    mean_ms: float
    std_ms: float
    max_ms: float
    percentiles_ms: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def p(self, name: str) -> float:
        return self.percentiles_ms[name]


def percentile_name(fraction: float) -> str:
    return f"p{fraction * 100:g}"


def summarize(latencies_ns: Sequence[int],
              fractions: Sequence[float] = REPORTED_PERCENTILES) -> LatencyStats:
    """min/mean/std/max and LoadGen percentiles of latencies given in nanoseconds."""
    ordered = sorted(latencies_ns)
    count = len(ordered)
    if count == 0:
        raise ValueError("no latencies to summarise")
    mean = sum(ordered) / count
    variance = sum((x - mean) ** 2 for x in ordered) / count
    return LatencyStats(
        count=count, min_ms=ordered[0] / 1e6, mean_ms=mean / 1e6, std_ms=math.sqrt(variance) / 1e6,
        max_ms=ordered[-1] / 1e6,
        percentiles_ms={percentile_name(f): percentile_ns(ordered, f) / 1e6 for f in fractions},
    )


def query_count_checks(count: int, fractions: Sequence[float] = REPORTED_PERCENTILES[1:]
                       ) -> dict[str, dict[str, object]]:
    """For each percentile: LoadGen's minimum query count and whether ``count`` meets it."""
    checks: dict[str, dict[str, object]] = {}
    for fraction in fractions:
        needed = min_query_count(fraction)
        checks[percentile_name(fraction)] = {"min_queries": needed, "met": count >= needed}
    return checks
