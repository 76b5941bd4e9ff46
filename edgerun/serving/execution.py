"""Model execution: worker threads per session (one unless thread-safe), optional batcher, timeouts."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..backends.base import LoadOptions, Session, Tensors
from ..backends.registry import Registry, Selection
from ..errors import InvalidInputError
from ..hal import Platform
from ..predictor import Predictor, open_session
from ..repository import ModelPackage, ModelRepository
from ..types import TensorSpec, to_v2_datatype
from .batching import DynamicBatcher, Ticket, batch_rows
from .config import DEFAULT_INSTANCES, ModelConfig, ServeConfig, WorkingHook, load_options_for
from .errors import ModelNotReadyError, RequestTimeoutError
from .metrics import ModelStats, ServingMetrics
from .workers import WorkerPool

log = logging.getLogger(__name__)

VERSION = "1"             # packages are unversioned; each is served as version "1"
DEFAULT_MAX_BATCH = 8     # for models whose every tensor has a dynamic first dim
T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    queue_ns: int
    infer_ns: int


def batch_capable(session: Session) -> bool:
    """True when every input and output has a dynamic first dim (a batch dim)."""
    specs = (*session.input_specs, *session.output_specs)
    return all(spec.shape and spec.shape[0] is None for spec in specs)


def resolve_max_batch(model: ModelConfig, session: Session) -> int:
    capable = batch_capable(session)
    if model.max_batch_size is None:
        size = DEFAULT_MAX_BATCH if capable else 0
    elif model.max_batch_size > 0 and not capable:
        shown = "; ".join(s.describe() for s in (*session.input_specs, *session.output_specs))
        raise InvalidInputError(f"model {model.name}: max_batch_size needs a dynamic first dim on "
                                f"every input and output; the model has {shown}")
    else:
        size = model.max_batch_size
    if model.dynamic_batching and size < 1:
        raise InvalidInputError(f"model {model.name}: dynamic batching needs max_batch_size >= 1 "
                                "and a model with a batch dim")
    return size


def default_threads(instances: int) -> int:
    """CPU threads per execution when none is configured: the CPUs this process may run on, shared
    by its concurrent executions so that together they do not oversubscribe the cores."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // instances)


def load_options(model: ModelConfig, config: ServeConfig) -> LoadOptions:
    """The runtime options the service loads ``model`` with (see config.load_options_for)."""
    return load_options_for(model, config.settings, default_threads(model.instances or DEFAULT_INSTANCES))


def release_free_heap() -> None:
    """Return the heap memory freed while a model loaded (the parsed model file, replaced graph
    tensors) to the OS: glibc keeps it mapped otherwise, about 15 MB for mobilenet_v2.onnx.
    A no-op where the C library has no ``malloc_trim``."""
    import ctypes

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def freeze_loaded_objects() -> None:
    """Collect, then move every object alive now (the app, the runtimes' Python objects, the
    loaded model's) out of the cyclic collector's reach: a full collection then scans only what
    requests allocate, instead of pausing the event loop for the ~100,000 start-up objects
    (25-60 ms measured here). Each load unfreezes first, so that what an unloaded model left in
    reference cycles is still collected."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


def zeros_for(spec: TensorSpec) -> np.ndarray:
    """A warm-up tensor: zeros, dynamic dims set to 1."""
    return np.zeros([1 if d is None else d for d in spec.shape], dtype=spec.dtype)


async def within(awaitable: Awaitable[T], timeout_s: float) -> T:
    """``await awaitable`` or asyncio.TimeoutError after ``timeout_s``; on Python >= 3.11 without
    the extra task per call that asyncio.wait_for creates."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(timeout_s):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout_s)


class ModelRunner:
    """One loaded model: its session (and Predictor when it has an image pipeline), workers, stats."""

    load_options: LoadOptions | None = None  # what the session was opened with (set by load_runner)

    def __init__(self, model: ModelConfig, package: ModelPackage, selection: Selection | None,
                 session: Session, metrics: ServingMetrics, working: WorkingHook | None = None) -> None:
        self.name = model.name
        self.config = model
        self.package = package
        self.session = session
        self.backend = selection.backend.name if selection else session.backend_name
        self.format = selection.artifact.format if selection else "unknown"
        self.max_batch_size = resolve_max_batch(model, session)
        self.predictor = Predictor(package, session, selection) if package.task != "raw" else None
        self.workers = (model.instances or DEFAULT_INSTANCES) if session.thread_safe else 1
        if (model.instances or 1) > 1 and not session.thread_safe:
            log.warning("model %s: %s sessions are not thread-safe; running 1 instance, not %d",
                        self.name, self.backend, model.instances)
        self.stats = ModelStats(self.name, VERSION)
        self._metrics = metrics
        self._queue = metrics.queue_depth.labels(self.name)
        self._workers = WorkerPool(self.workers, f"edgerun-{self.name}")
        self._batcher: DynamicBatcher | None = None
        self._closed = False
        self._working: Callable[[], AbstractContextManager[object]] = working or nullcontext
        self.input_specs_by_name = {spec.name: spec for spec in session.input_specs}
        self.output_names = [spec.name for spec in session.output_specs]
        self._stages = {stage: metrics.stage_seconds.labels(self.name, stage)
                        for stage in ("decode", "queue", "infer", "encode")}
        self._batch_sizes = metrics.batch_size.labels(self.name)

    @property
    def platform(self) -> str:
        return f"{self.backend}_{self.format}"

    def warmup(self) -> None:
        """Run the configured warm-up inferences (blocking; before the model is marked ready)."""
        specs = self.session.input_specs
        if any(spec.dtype == object for spec in specs):
            log.info("model %s: BYTES input, no warm-up", self.name)
            return
        inputs = {spec.name: zeros_for(spec) for spec in specs}
        for _ in range(self.config.warmup):
            self.session.infer(inputs)

    def start(self) -> None:
        """Start the batcher (needs the running event loop)."""
        if self.config.dynamic_batching:
            self._batcher = DynamicBatcher(
                self._execute, self.max_batch_size, self.config.max_queue_delay_us / 1e6,
                slots=self.workers, on_batch=self._batch_sizes.observe)
            self._batcher.start()

    def _infer_now(self, inputs: Tensors) -> Tensors:
        start = time.perf_counter_ns()
        outputs = self.session.infer(inputs)
        elapsed = time.perf_counter_ns() - start
        self.stats.execution_done(max(batch_rows(inputs), 1), elapsed)
        self._stages["infer"].observe(elapsed / 1e9)
        return outputs

    def _tracked(self, function: Callable[[], T]) -> T:
        """One model execution inside the progress hook (e.g. a systemd watchdog's ``working()``)."""
        with self._working(), self._metrics.executions.run(self.name):   # telemetry: energy per model
            return function()

    async def _execute(self, inputs: Tensors) -> Tensors:
        return await self._workers.run(lambda: self._tracked(lambda: self._infer_now(inputs)))

    async def infer(self, inputs: Tensors, timeout_s: float) -> tuple[Tensors, Timing]:
        """Run (or queue for batching) one request's tensors; RequestTimeoutError past ``timeout_s``."""
        submitted = time.perf_counter_ns()
        if self._batcher is not None and batch_rows(inputs) >= 1:
            outputs, queue_ns = await self._queued(lambda ticket: self._batcher_submit(inputs, ticket),
                                                   timeout_s)
        else:
            outputs, queue_ns = await self.call(lambda: self._infer_single(inputs), timeout_s)
        self._stages["queue"].observe(queue_ns / 1e9)
        return outputs, Timing(queue_ns, time.perf_counter_ns() - submitted - queue_ns)

    def record_request(self, started_ns: int, decoded_ns: int, inferred_ns: int, timing: Timing) -> None:
        """Statistics and stage metrics of a request that succeeded (now: its response is encoded)."""
        done = time.perf_counter_ns()
        self.stats.request_done(True, done - started_ns, timing.queue_ns, decoded_ns - started_ns,
                                timing.infer_ns, done - inferred_ns)
        self._stages["decode"].observe((decoded_ns - started_ns) / 1e9)
        self._stages["encode"].observe((done - inferred_ns) / 1e9)

    def _infer_single(self, inputs: Tensors) -> Tensors:
        if self.max_batch_size and batch_rows(inputs) >= 1:
            self._batch_sizes.observe(batch_rows(inputs))
        return self._infer_now(inputs)

    async def _batcher_submit(self, inputs: Tensors, ticket: Ticket) -> tuple[Tensors, int]:
        assert self._batcher is not None
        return await self._batcher.submit(inputs, ticket)

    async def call(self, function: Callable[[], T], timeout_s: float) -> tuple[T, int]:
        """Run ``function`` on this model's workers (one at a time unless thread-safe);
        returns its result and the ns it waited for a worker."""
        submitted = time.perf_counter_ns()

        async def on_workers(ticket: Ticket) -> tuple[T, int]:
            queued: list[int] = []

            def job() -> T | None:
                if not ticket.claim():
                    return None  # the request already gave up: skip the work
                queued.append(time.perf_counter_ns() - submitted)
                return self._tracked(function)

            try:
                pending = self._workers.run(job)
            except RuntimeError as exc:  # the workers shut down under us (unload)
                raise ModelNotReadyError(f"model {self.name} was unloaded") from exc
            result = await pending
            return result, queued[0]  # type: ignore[return-value]

        return await self._queued(on_workers, timeout_s)

    async def _queued(self, work: Callable[[Ticket], Awaitable[tuple[T, int]]],
                      timeout_s: float) -> tuple[T, int]:
        """Count the request in the queue gauge until its work starts; enforce the timeout."""
        if self._closed:
            raise ModelNotReadyError(f"model {self.name} was unloaded")
        ticket = Ticket(self._queue.dec)
        self._queue.inc()
        try:
            return await within(work(ticket), timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"model {self.name}: no result within {timeout_s:g} s") from None
        finally:
            ticket.claim()

    async def close(self) -> None:
        """Finish running work, then release the session."""
        self._closed = True
        if self._batcher is not None:
            await self._batcher.close()
        await asyncio.to_thread(self._workers.shutdown)
        self.session.close()
        self._metrics.forget_model(self.name)

    def tensor_metadata(self, specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": to_v2_datatype(s.dtype),
                 "shape": [-1 if d is None else d for d in s.shape]} for s in specs]


def load_runner(model: ModelConfig, config: ServeConfig, repository: ModelRepository,
                metrics: ServingMetrics, working: WorkingHook | None = None,
                host: Callable[[], tuple[Platform, Registry]] | None = None) -> ModelRunner:
    """Open, check and warm up one model (blocking: call it from a worker thread). ``host`` gives
    the service's platform and registry (detected and built once per service)."""
    options = load_options(model, config)
    platform, registry = host() if host is not None else (None, None)
    started = time.perf_counter()
    package, selection, session = open_session(model.source, backend=model.backend, options=options,
                                               repository=repository, settings=config.settings,
                                               platform=platform, registry=registry)
    try:
        runner = ModelRunner(model, package, selection, session, metrics, working)
        runner.load_options = options
        runner.warmup()
    except BaseException:
        session.close()
        raise
    freeze_loaded_objects()
    release_free_heap()
    log.info("model %s loaded on %s in %.0f ms (max_batch_size %d, %d worker(s), %d thread(s)%s)",
             model.name, runner.backend, (time.perf_counter() - started) * 1000, runner.max_batch_size,
             runner.workers, options.threads, ", dynamic batching" if model.dynamic_batching else "")
    return runner
