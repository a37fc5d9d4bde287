"""A process pool that hands results back in task order, a bounded number of tasks ahead.

Used by dataset packing (and its start method by kiln.datasets.stdsets). Pool.imap would queue
every task and let finished results pile up in memory; this keeps at most 2 per worker in flight.
ProcessPoolExecutor rather than Pool: a worker that dies (OOM killer, a crashing decoder) raises
BrokenProcessPool instead of hanging the job.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

K = TypeVar("K")
A = TypeVar("A")
R = TypeVar("R")


def start_method() -> str:
    """fork on Linux when no other Python thread runs: workers start in milliseconds with
    everything imported. Otherwise forkserver (spawn where there is none), since forking while
    another thread holds a lock can deadlock the child. NumPy's idle BLAS threads do not count:
    the workers never call BLAS."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class OrderedPool:
    """`workers` processes (none for workers <= 1: tasks then run in this process), started at
    once so that their start-up overlaps whatever the caller does next. `initializer` runs in
    each worker (or here), and its module is preloaded by a forkserver."""

    def __init__(self, workers: int, log: Callable[[str], None], initializer: Callable[[], None] | None = None) -> None:
        if workers > 1 and multiprocessing.current_process().daemon:
            log("Running in one process: a daemonic process may not start worker processes.")
            workers = 1
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None
        if workers <= 1:
            if initializer is not None:
                initializer()
            return
        ctx = multiprocessing.get_context(start_method())
        if ctx.get_start_method() == "forkserver" and initializer is not None:
            ctx.set_forkserver_preload([initializer.__module__])
        self.executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer)
        with warnings.catch_warnings():  # Python 3.12+ warns about the BLAS threads (see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            for _ in range(workers):  # start every process now
                self.executor.submit(int)

    def run(self, fn: Callable[[A], R], tasks: Iterable[tuple[K, A]]) -> Iterator[tuple[K, R]]:
        """fn(args) for each (key, args), yielded as (key, result) in task order."""
        if self.executor is None:
            for key, args in tasks:
                yield key, fn(args)
            return
        pending: deque[tuple[K, Future[Any]]] = deque()
        for key, args in tasks:
            pending.append((key, self.executor.submit(fn, args)))
            if len(pending) > 2 * self.workers:
                key0, future = pending.popleft()
                yield key0, future.result()
        while pending:
            key0, future = pending.popleft()
            yield key0, future.result()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
