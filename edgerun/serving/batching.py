"""Dynamic batching: concurrent requests are joined along the batch dim, up to a size or a queue delay."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from ..backends.base import Tensors
from ..errors import InferenceError
from .errors import ModelNotReadyError


class Ticket:
    """Claimed exactly once, by whichever comes first: the work starting, or the request giving up."""

    def __init__(self, on_claim: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._claimed = False
        self._on_claim = on_claim

    def claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
        self._on_claim()
        return True


def batch_rows(inputs: Tensors) -> int:
    """Rows along the first dim, which every input must share to be batched."""
    rows = {value.shape[0] if value.ndim else 0 for value in inputs.values()}
    return rows.pop() if len(rows) == 1 else 0


def _batch_key(inputs: Tensors) -> tuple[object, ...]:
    return tuple((name, value.dtype.str, value.shape[1:]) for name, value in sorted(inputs.items()))


@dataclass
class _Pending:
    inputs: Tensors
    rows: int
    ticket: Ticket
    future: asyncio.Future[tuple[Tensors, int]]
    arrived_ns: int = field(default_factory=time.perf_counter_ns)

    @property
    def key(self) -> tuple[object, ...]:
        return _batch_key(self.inputs)


Execute = Callable[[Tensors], Awaitable[Tensors]]
EXPLORE_EVERY = 32  # batches: how often a size other than the cheapest known is measured again


class RowCost:
    """Running mean of execution time per row, by batch size: whether batching pays on this
    hardware. (On a 2-core CPU, onnxruntime's MobileNetV2 costs more per image at batch 2-4 than
    at batch 1; on GPUs and NPUs batches are cheaper per row.)"""

    def __init__(self) -> None:
        self._ns_per_row: dict[int, float] = {}
        self._batches = 0

    def record(self, rows: int, elapsed_ns: int) -> None:
        per_row = elapsed_ns / max(rows, 1)
        old = self._ns_per_row.get(rows)
        self._ns_per_row[rows] = per_row if old is None else old + (per_row - old) * 0.1

    def best_size(self, limit: int) -> int:
        """The batch size, at most ``limit``, with the lowest known cost per row: 1 until that is
        measured, then ``limit`` itself while it is unmeasured and every EXPLORE_EVERY-th batch
        (to re-measure it)."""
        self._batches += 1
        known = {n: ns for n, ns in self._ns_per_row.items() if n <= limit}
        if 1 not in known:
            return 1
        if limit not in known or self._batches % EXPLORE_EVERY == 0:
            return limit
        return min(known, key=lambda n: known[n])


class DynamicBatcher:
    """Forms batches of at most ``max_rows`` rows; ``execute`` runs one merged batch, up to ``slots``
    batches at once.

    A free slot never sits idle while work waits: it waits (at most ``max_delay_s`` from the first
    request's arrival) for a fuller batch only when no other batch is running, and it takes its
    share of the waiting rows (split over the free slots) so that concurrent requests keep every
    slot busy instead of piling into one batch while the other slots idle. Of that share it takes
    the batch size that has cost least per row so far (RowCost): where batches do not pay, it
    runs requests one by one.
    """

    def __init__(self, execute: Execute, max_rows: int, max_delay_s: float, slots: int = 1,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._execute = execute
        self._max_rows = max_rows
        self._delay_ns = int(max_delay_s * 1e9)
        self._slots = asyncio.Semaphore(slots)
        self._slot_count = slots
        self.costs = RowCost()
        self._on_batch = on_batch
        self._pending: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, inputs: Tensors, ticket: Ticket) -> tuple[Tensors, int]:
        """Outputs for ``inputs`` (rows sliced out of the batch) and the ns it waited in the queue."""
        if self._closed:
            raise ModelNotReadyError("the model was unloaded")
        future: asyncio.Future[tuple[Tensors, int]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(inputs, batch_rows(inputs), ticket, future))
        self._arrived.set()
        return await future

    async def _loop(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _rows_waiting(self, key: tuple[object, ...]) -> int:
        return sum(p.rows for p in self._pending if p.key == key and not p.future.done())

    async def _next_batch(self) -> list[_Pending]:
        while True:
            self._pending = deque(p for p in self._pending if not p.future.done())
            if self._pending:
                break
            self._arrived.clear()
            await self._arrived.wait()
        first = self._pending[0]
        key = first.key
        while not self._running and self._rows_waiting(key) < self._max_rows:
            remaining = (first.arrived_ns + self._delay_ns - time.perf_counter_ns()) / 1e9
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        free = max(1, self._slot_count - len(self._running))
        share = min(self._max_rows, -(-self._rows_waiting(key) // free))
        return self._take(key, self.costs.best_size(share))

    def _take(self, key: tuple[object, ...], limit: int | None = None) -> list[_Pending]:
        limit = self._max_rows if limit is None else limit
        taken: list[_Pending] = []
        kept: deque[_Pending] = deque()
        rows = 0
        for item in self._pending:
            if item.future.done():
                continue
            if item.key == key and (not taken or rows + item.rows <= limit):
                taken.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self._pending = kept
        return taken

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            live = [p for p in batch if p.ticket.claim()]
            if live:
                await self._execute_live(live)
        finally:
            self._slots.release()

    async def _execute_live(self, live: list[_Pending]) -> None:
        started = time.perf_counter_ns()
        names = list(live[0].inputs)
        merged = {n: np.concatenate([p.inputs[n] for p in live]) if len(live) > 1 else live[0].inputs[n]
                  for n in names}
        total = sum(p.rows for p in live)
        if self._on_batch is not None:
            self._on_batch(total)
        try:
            outputs = await self._execute(merged)
            if any(value.shape[:1] != (total,) for value in outputs.values()):
                raise InferenceError("model outputs do not keep the batch dim; disable dynamic batching")
            self.costs.record(total, time.perf_counter_ns() - started)
        except Exception as exc:  # every request of the batch gets the batch's error
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        offset = 0
        for p in live:
            part = {name: value[offset:offset + p.rows] for name, value in outputs.items()}
            offset += p.rows
            if not p.future.done():
                p.future.set_result((part, started - p.arrived_ns))

    async def close(self) -> None:
        """Take no more requests; run the ones already waiting (without waiting to fill), then stop."""
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        while True:
            self._pending = deque(p for p in self._pending if not p.future.done())
            if not self._pending:
                break
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._run(self._take(self._pending[0].key)))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        await asyncio.gather(*self._running, return_exceptions=True)
