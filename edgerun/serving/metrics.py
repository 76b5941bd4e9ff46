"""Prometheus metrics of one app (its own registry) and Triton-style per-model statistics."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

from ..telemetry.attribution import ExecutionRecorder, NullRecorder

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServingMetrics:
    """The service's metrics, registered in a registry of their own (one per app)."""

    def __init__(self) -> None:
        disable_created_metrics()   # no edgerun_*_created series beside every counter and histogram
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)   # process_cpu_seconds_total, process_resident_memory_bytes, ...
        # Model executions are recorded here (``with metrics.executions.run(model): ...``); the
        # telemetry sampler puts its recorder in place, otherwise recording costs nothing.
        self.executions: ExecutionRecorder | NullRecorder = NullRecorder()
        self.requests = Counter("edgerun_requests", "HTTP requests by route, model and status code",
                                ["route", "model", "status"], registry=r)
        self.request_seconds = Histogram("edgerun_request_duration_seconds", "HTTP request latency",
                                         ["route", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("edgerun_stage_duration_seconds",
                                       "Latency of each stage (queue, decode, infer, encode, ...)",
                                       ["model", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("edgerun_queue_depth", "Inferences waiting for a worker",
                                 ["model"], registry=r)
        self.inflight = Gauge("edgerun_inflight_requests", "HTTP requests being handled", registry=r)
        self.batch_size = Histogram("edgerun_batch_size", "Rows per executed batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.model_ready = Gauge("edgerun_model_ready", "1 when the model is loaded and warmed up",
                                 ["model"], registry=r)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def forget_model(self, model: str) -> None:
        """Drop the per-model gauges of an unloaded model."""
        for gauge in (self.queue_depth, self.model_ready):
            with contextlib.suppress(KeyError):
                gauge.remove(model)


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
          "cache_hit", "cache_miss")


class ModelStats:
    """Counters in the shape of Triton's statistics extension (durations as count + ns)."""

    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version
        self._lock = threading.Lock()
        self._stages = {stage: Duration() for stage in STAGES}
        self._batches: dict[int, _BatchStats] = {}
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0

    def request_done(self, ok: bool, total_ns: int, queue_ns: int = 0, input_ns: int = 0,
                     infer_ns: int = 0, output_ns: int = 0) -> None:
        """Per-request durations, all under one lock so that their counts always agree
        (perf_analyzer refuses statistics whose compute counts differ)."""
        with self._lock:
            self._stages["success" if ok else "fail"].add(total_ns)
            if ok:
                self._stages["queue"].add(queue_ns)
                self._stages["compute_input"].add(input_ns)
                self._stages["compute_infer"].add(infer_ns)
                self._stages["compute_output"].add(output_ns)
            self.last_inference_ms = int(time.time() * 1000)

    def execution_done(self, rows: int, infer_ns: int) -> None:
        """One run of the model over ``rows`` batch rows."""
        with self._lock:
            self.execution_count += 1
            self.inference_count += rows
            self._batches.setdefault(rows, _BatchStats()).compute_infer.add(infer_ns)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name, "version": self.version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count, "execution_count": self.execution_count,
                "inference_stats": {k: v.to_dict() for k, v in self._stages.items()},
                "batch_stats": [
                    {"batch_size": size, "compute_input": b.compute_input.to_dict(),
                     "compute_infer": b.compute_infer.to_dict(),
                     "compute_output": b.compute_output.to_dict()}
                    for size, b in sorted(self._batches.items())
                ],
            }
