"""Worker threads for blocking model calls: one queue put in, one call_soon_threadsafe back out.

A lighter stand-in for ``loop.run_in_executor(ThreadPoolExecutor)`` on the request path: no
concurrent.futures.Future, no condition variable and no future chaining per call, which the
profile of ``edgerun serve`` under perf_analyzer showed on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (timeout, cancellation)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class WorkerPool:
    """``workers`` daemon threads taking calls from one queue, in arrival order."""

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def run(self, function: Callable[[], T]) -> asyncio.Future[T]:
        """A future (of the running loop) for ``function()`` run on a worker thread."""
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, function))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, function = job
            try:
                result, error = function(), None
            except BaseException as exc:  # handed to the awaiting request
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed while the call ran
                loop.call_soon_threadsafe(_settle, future, result, error)

    def shutdown(self) -> None:
        """Run the calls already queued, then stop the threads (blocking)."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
