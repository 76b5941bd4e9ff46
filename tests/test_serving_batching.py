"""The dynamic batcher's policy on its own: concurrent requests spread over every slot, and a free slot
never waits for a fuller batch while another batch runs."""

from __future__ import annotations

import asyncio

import numpy as np

from edgerun.backends.base import Tensors
from edgerun.serving.batching import EXPLORE_EVERY, DynamicBatcher, RowCost, Ticket

GUARD_S = 20.0  # only a hang guard: every awaited step here completes at once when the policy holds


def rows(count: int, value: float) -> Tensors:
    return {"x": np.full((count, 2), value, dtype=np.float32)}


class Recorder:
    """An execute function that records batch sizes and holds each batch until released."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, inputs: Tensors) -> Tensors:
        self.sizes.append(int(inputs["x"].shape[0]))
        self.started.set()
        await self.release.wait()
        return {"y": inputs["x"] * 2}


async def submit_all(batcher: DynamicBatcher, values: list[float]) -> list[Tensors]:
    tasks = [asyncio.create_task(batcher.submit(rows(1, v), Ticket(lambda: None))) for v in values]
    return [result for result, _ in await asyncio.wait_for(asyncio.gather(*tasks), GUARD_S)]


def test_concurrent_requests_are_split_over_the_free_slots() -> None:
    async def scenario() -> tuple[list[int], list[Tensors]]:
        recorder = Recorder()
        recorder.release.set()
        batcher = DynamicBatcher(recorder, max_rows=8, max_delay_s=0.05, slots=2)
        batcher.costs.record(1, 6_000_000)
        batcher.costs.record(2, 2 * 3_000_000)  # batches pay here (as on an accelerator)
        batcher.start()
        results = await submit_all(batcher, [1.0, 2.0, 3.0, 4.0])
        await batcher.close()
        return recorder.sizes, results

    sizes, results = asyncio.run(scenario())
    assert sizes == [2, 2]  # one batch per slot, not one batch of 4 and an idle slot
    assert [r["y"].tolist() for r in results] == [[[2 * v, 2 * v]] for v in (1.0, 2.0, 3.0, 4.0)]


def test_a_free_slot_does_not_wait_for_a_fuller_batch_while_another_runs() -> None:
    async def scenario() -> list[int]:
        recorder = Recorder()
        batcher = DynamicBatcher(recorder, max_rows=8, max_delay_s=GUARD_S * 2, slots=2)
        batcher.start()
        first = asyncio.create_task(batcher.submit(rows(8, 1.0), Ticket(lambda: None)))  # a full batch
        await asyncio.wait_for(recorder.started.wait(), GUARD_S)
        recorder.started.clear()
        second = asyncio.create_task(batcher.submit(rows(1, 2.0), Ticket(lambda: None)))
        await asyncio.wait_for(recorder.started.wait(), GUARD_S)  # runs while the first is held
        recorder.release.set()
        await asyncio.wait_for(asyncio.gather(first, second), GUARD_S)
        await batcher.close()
        return recorder.sizes

    assert asyncio.run(scenario()) == [8, 1]


def test_batch_size_follows_the_measured_cost_per_row() -> None:
    cpu_like, accelerator_like = RowCost(), RowCost()
    assert cpu_like.best_size(4) == 1  # the unbatched cost is measured first
    for cost in (cpu_like, accelerator_like):
        cost.record(1, 6_000_000)
    assert cpu_like.best_size(4) == 4  # then the share as it is
    cpu_like.record(4, 4 * 6_800_000)          # batches cost more per row: run one by one
    accelerator_like.record(4, 4 * 2_000_000)  # batches cost less per row: batch
    picks = [cpu_like.best_size(4) for _ in range(EXPLORE_EVERY * 2)]
    assert picks.count(4) == 2 and picks.count(1) == len(picks) - 2  # re-measured now and then
    assert accelerator_like.best_size(4) == 4
    assert accelerator_like.best_size(3) == 3  # size 3 unmeasured: measure it
    accelerator_like.record(3, 3 * 1_500_000)
    assert accelerator_like.best_size(4) == 3
