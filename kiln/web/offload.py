"""Heavy work off the event loop, on a bounded pool of worker threads.

An `async def` route that computes (classify one / many, the LR preview, a model sweep's job rows,
dataset checks that scan folders) hands that work to `run_heavy`; the event loop only parses the
request and sends the answer, so pages and the live event stream keep answering meanwhile.

    result = await run_heavy(request, classify_list, predictor, text)

At most KILN_HEAVY_THREADS calls run at once and KILN_HEAVY_QUEUE more may wait for a thread;
past that a request is refused at once with 503 and Retry-After ("busy, retry") instead of queueing
without bound. The threads are kiln's own, not the pool FastAPI runs plain `def` routes on, so a
burst of classifications cannot starve the pages. A call whose client went away still finishes (a
thread cannot be stopped), and keeps its place in the count until it has.

They run at the server's own CPU priority on purpose: a lower one (nice) lets a heavy thread be
descheduled while it holds the GIL, and the page thread then waits for the GIL as long as the
heavy thread waits for a core (a priority inversion: pages can get slower, not faster). What helps
pages instead is a shorter GIL switch interval (SWITCH_INTERVAL_S, set once the pool exists): a page
thread waiting for the GIL held by a heavy thread gets it within 1 ms instead of CPython's 5, at each
of the several handoffs a request makes between the event loop and the threads.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import HTTPException, Request

T = TypeVar("T")
RETRY_AFTER_S = 2
SWITCH_INTERVAL_S = 0.001  # the process's GIL switch interval once heavy work runs in it
_create = threading.Lock()


class Busy(HTTPException):
    """503: every heavy thread is busy and the queue is full."""

    def __init__(self, threads: int, queue: int) -> None:
        super().__init__(
            503,
            f"Busy: {threads} heavy requests are running and {queue} waiting (KILN_HEAVY_THREADS, "
            f"KILN_HEAVY_QUEUE). Retry in a moment.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


class HeavyPool:
    """`threads` worker threads; at most `threads + queue` calls admitted (running or waiting)."""

    def __init__(self, threads: int, queue: int) -> None:
        self.threads = max(1, threads)
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.queue = max(0, queue)
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="kiln-heavy")
        self._lock = threading.Lock()
        self.admitted = 0  # running + waiting

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) on a heavy thread; raises Busy when the pool and its queue are full."""
        with self._lock:
            if self.admitted >= self.threads + self.queue:
                raise Busy(self.threads, self.queue)
            self.admitted += 1
        try:
            future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        # a cancelled request (client gone) cancels the call if it has not started yet
        return await asyncio.wrap_future(future)

    def _release(self, _: Future | None) -> None:
        with self._lock:
            self.admitted -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def heavy_pool(request: Request) -> HeavyPool:
    """The app's pool, made on first use from its settings."""
    state = request.app.state
    pool = getattr(state, "heavy_pool", None)
    if pool is None:
        with _create:
            pool = getattr(state, "heavy_pool", None)
            if pool is None:
                settings = state.settings
                pool = state.heavy_pool = HeavyPool(settings.heavy_threads, settings.heavy_queue)
    return pool


def shutdown(app: Any) -> None:
    """At server shutdown: heavy calls not started yet are cancelled, running ones finish."""
    pool = getattr(app.state, "heavy_pool", None)
    if pool is not None:
        del app.state.heavy_pool
        pool.shutdown()


async def run_heavy(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn(*args, **kwargs) on the app's heavy threads (see the module docstring)."""
    return await heavy_pool(request).run(fn, *args, **kwargs)
