"""Profiler fidelity: the profiler's p50 against an independent perf_counter_ns loop around the raw call.

Usage: python benchmarks/profiler_fidelity.py [--backend onnxruntime|litert|all] [--runs 50]
                                              [--rounds 20] [--threads 1] [--model mobilenet_v2]

One loaded model, one input tensor. Each round runs the profiler's measured phase (scenario loop,
background sampler thread, session.infer) and, on the very same runtime object, a plain loop of
``time.perf_counter_ns()`` around the raw vendor call (onnxruntime ``run``; LiteRT ``set_tensor`` +
``invoke`` + ``get_tensor``). The order alternates between rounds, and rounds are short, so machine
noise hits both alike. It prints both p50s over all rounds, their ratio (target: within 3%), the
spread of the per-round ratios, and the profiler's per-query bookkeeping cost on a no-op call.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from common import raw_call  # benchmarks/ is on sys.path when run as a script

from edgerun.backends.base import LoadOptions, Session
from edgerun.cli.profile import ProgressBar
from edgerun.hal import HostFS
from edgerun.predictor import open_session
from edgerun.profiler.runner import BackendRun, Host, ProfileConfig, Profiler
from edgerun.profiler.scenarios import Budget, run_scenario, synthetic_inputs
from edgerun.profiler.stats import percentile_ns
from edgerun.repository import BUILTIN_MODELS, ModelRepository


def independent_loop(call: Callable[[], Any], runs: int) -> list[int]:
    latencies = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        latencies.append(time.perf_counter_ns() - start)
    return latencies


def profiler_phase(profiler: Profiler, session: Session, inputs: dict[str, np.ndarray]) -> list[int]:
    run = BackendRun(session.backend_name, "ok")
    profiler.measure(functools.partial(session.infer, inputs), 1, run)
    assert run.trace is not None
    return run.trace.latencies_ns()


def median(values: list[int]) -> float:
    return percentile_ns(sorted(values), 0.5) / 1e6


def bench_backend(backend: str, args: argparse.Namespace, host: Host) -> None:
    repository = ModelRepository((BUILTIN_MODELS,))
    config = ProfileConfig(runs=args.runs, warmup=0, idle_s=0, threads=args.threads)
    profiler = Profiler(config, host, repository)
    _, _, session = open_session(args.model, backend=backend, repository=repository,
                                 options=LoadOptions(threads=args.threads), platform=host.platform)
    try:
        inputs = synthetic_inputs(session.input_specs, 1)
        raw = raw_call(session, inputs)
        independent_loop(raw, 20)  # warm-up
        pooled: dict[str, list[int]] = {"raw": [], "profiler": []}
        ratios = []
        for round_index in range(args.rounds):
            order = ["profiler", "raw"] if round_index % 2 == 0 else ["raw", "profiler"]
            this_round = {}
            for name in order:
                this_round[name] = (profiler_phase(profiler, session, inputs) if name == "profiler"
                                    else independent_loop(raw, args.runs))
                pooled[name] += this_round[name]
            ratios.append(median(this_round["profiler"]) / median(this_round["raw"]))
    finally:
        session.close()
    raw50, prof50 = median(pooled["raw"]), median(pooled["profiler"])
    print(f"{backend:<12} raw p50 {raw50:7.3f} ms  profiler p50 {prof50:7.3f} ms  ratio {prof50 / raw50:.4f}"
          f"  (per-round ratios: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-"
          f"{max(ratios):.3f}; {args.rounds} rounds x {args.runs} queries)")


def bookkeeping_overhead(queries: int) -> None:
    """Per-query cost of the scenario loop itself, measured on a call that does nothing."""
    def no_op() -> None:
        return None

    with open("/dev/null", "w") as sink:
        variants = {"plain": None, "with progress bar": ProgressBar(sink)("bench", queries)}
        for label, progress in variants.items():
            costs, inside = [], []
            for _ in range(5):
                start = time.perf_counter_ns()
                trace = run_scenario("single-stream", no_op, Budget(runs=queries), 1, progress=progress)
                costs.append((time.perf_counter_ns() - start) / queries / 1000)
                inside.append(median(trace.latencies_ns()) * 1000)
            plain_loop = min(_plain_loop_us(queries) for _ in range(5))
            print(f"bookkeeping {label:<18} {statistics.median(costs):.3f} us/query in the loop "
                  f"(a bare call loop: {plain_loop:.3f} us), {statistics.median(inside):.3f} us inside "
                  "each timed interval (p50 latency of a no-op)")


def _plain_loop_us(queries: int) -> float:
    def no_op() -> None:
        return None

    start = time.perf_counter_ns()
    for _ in range(queries):
        no_op()
    return (time.perf_counter_ns() - start) / queries / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="all", help="onnxruntime, litert or all")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="mobilenet_v2")
    args = parser.parse_args()
    host = Host.probe(HostFS("/"))
    print(f"host: {host.platform.summary()}; power sensors: "
          f"{', '.join(s.name for s in host.power_sensors) or 'none'} (sampler thread runs either way)")
    for backend in (["onnxruntime", "litert"] if args.backend == "all" else [args.backend]):
        bench_backend(backend, args, host)
    bookkeeping_overhead(200_000)


if __name__ == "__main__":
    main()
