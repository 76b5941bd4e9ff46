"""Latency of the original and the optimised model, measured by edgerun's profiler on one backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.registry import Registry
from ..errors import EdgerunError
from ..hal import HostFS
from ..repository import ModelRepository

MEASURING_BACKEND = "onnxruntime"


@dataclass(frozen=True)
class LatencyPlan:
    """What to measure: queries per model after a warm-up, on which backend and threads."""

    runs: int = 50
    warmup: int = 5
    threads: int | None = None
    backend: str = MEASURING_BACKEND


def _profile(model: Path, plan: LatencyPlan, profiler: Any) -> dict[str, Any]:
    run = profiler.profile_backend(model, plan.backend)
    assert run.latency is not None
    latency = run.latency
    return {
        "p50_ms": latency.p("p50"),
        "p90_ms": latency.p("p90"),
        "mean_ms": latency.mean_ms,
        "min_ms": latency.min_ms,
        "count": latency.count,
        "load_ms": (run.cold_start or {}).get("load_ms"),
    }


def measure(
    before: Path,
    after: Path,
    plan: LatencyPlan,
    host_root: Path | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Single-stream latency of two model files, one after the other, through the profiler.

    Returns before/after summaries and the p50 ratio, or ``status: unavailable`` with the reason
    (a backend that cannot run the files here, ``runs`` 0)."""
    if plan.runs <= 0:
        return {"status": "skipped", "reason": "latency measurement turned off (--latency-runs 0)"}
    from ..profiler.runner import Host, ProfileConfig, Profiler

    config = ProfileConfig(runs=plan.runs, warmup=plan.warmup, threads=plan.threads, idle_s=0.0)
    profiler = Profiler(config, Host.probe(HostFS(host_root or "/")), ModelRepository(()), registry=registry)
    try:
        first, second = _profile(before, plan, profiler), _profile(after, plan, profiler)
    except EdgerunError as exc:
        return {"status": "unavailable", "reason": f"{plan.backend}: {exc}"}
    return {
        "status": "ok",
        "backend": plan.backend,
        "threads": plan.threads,
        "runs": plan.runs,
        "warmup": plan.warmup,
        "measured_by": "edgerun.profiler (single-stream, synthetic input)",
        "before": first,
        "after": second,
        "p50_ratio": second["p50_ms"] / first["p50_ms"],
    }
