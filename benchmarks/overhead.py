"""Measure edgerun's per-call overhead: raw runtime call vs Session.infer, interleaved in one process.

Usage: python benchmarks/overhead.py [--runs 300] [--warmup 20] [--threads 1] [--model mobilenet_v2]

For each CPU backend the same loaded runtime object is called two ways, alternating every
iteration so that machine noise hits both equally: the raw vendor call (onnxruntime ``run``;
LiteRT ``set_tensor`` + ``invoke`` + ``get_tensor``) and ``session.infer``. It prints p50/p90
for both and the ratio (target: edgerun / raw <= 1.03 at p50), then ``Predictor.predict``
end to end with the median of each stage (decode, pre-process, infer, post-process).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import raw_call  # benchmarks/ is on sys.path when run as a script

from edgerun.backends.base import LoadOptions
from edgerun.predictor import Predictor
from edgerun.processing.image import decode_image

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "chelsea.png"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def interleaved(calls: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            elapsed = (time.perf_counter() - start) * 1000.0
            if i >= warmup:
                timings[name].append(elapsed)
    return timings


def bench_backend(backend: str, args: argparse.Namespace) -> None:
    with Predictor.open(args.model, backend=backend, options=LoadOptions(threads=args.threads)) as predictor:
        image = SAMPLE.read_bytes()
        inputs, _ = predictor.preprocess(decode_image(image))
        times = interleaved({"raw": raw_call(predictor.session, inputs),
                             "session.infer": lambda: predictor.session.infer(inputs)},
                            args.runs, args.warmup)
        raw50, raw90 = percentile(times["raw"], 50), percentile(times["raw"], 90)
        er50, er90 = percentile(times["session.infer"], 50), percentile(times["session.infer"], 90)
        print(f"{backend:<12} {'raw':<14} p50 {raw50:7.3f} ms  p90 {raw90:7.3f} ms")
        print(f"{backend:<12} {'session.infer':<14} p50 {er50:7.3f} ms  p90 {er90:7.3f} ms"
              f"   ratio p50 {er50 / raw50:.3f}  p90 {er90 / raw90:.3f}")
        stages: dict[str, list[float]] = {}
        totals = []
        for _ in range(max(20, args.runs // 5)):
            start = time.perf_counter()
            result = predictor.predict(image)
            totals.append((time.perf_counter() - start) * 1000.0)
            for stage, ms in result.timings_ms.items():
                stages.setdefault(stage, []).append(ms)
        breakdown = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in stages.items())
        print(f"{backend:<12} {'predict e2e':<14} p50 {percentile(totals, 50):7.3f} ms  "
              f"p90 {percentile(totals, 90):7.3f} ms   stages p50: {breakdown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", action="append", help="default: onnxruntime and litert")
    args = parser.parse_args()
    print(f"model {args.model}, {args.runs} interleaved runs after {args.warmup} warm-up, "
          f"{args.threads} thread(s)")
    for backend in args.backend or ["onnxruntime", "litert"]:
        bench_backend(backend, args)


if __name__ == "__main__":
    main()
