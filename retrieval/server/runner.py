"""Where a request's handler runs: on the event loop when that is known to be cheap, else in a thread.

Engine calls block (SQLite, hnswlib, numpy), so by default a handler runs in a worker thread and
the event loop keeps serving other connections meanwhile. That hop is not free: handing the call
to a thread and its answer back costs two thread wake-ups, about 0.1-0.25 ms on a small machine,
where a whole filtered query over HTTP costs ~1 ms (measured with ``bench/http_compare.py``).

So a read runs on the loop itself when all of these hold:

- nothing else is running in the thread pool (no write, no slow read: a write holds the locks
  a read would wait on, and a slow read in flight means the loop has work to get back to);
- calls with the same key have been taking under ``INLINE_MAX_S``: the estimate is a running mean
  that halves the weight of each older call, so one call a little over it does not send the key
  to the pool, and one far over it does. The server keys a call by its verb, its collection and
  whether it narrows by a filter or ids (``serving._cost_key``).

The first call of a key, and those after a slow call, run in the pool and are timed there; so a
read that becomes slow (a new filter, a graph still loading) goes back to the pool at once, and
returns to the loop a few fast calls later. What this gives up:
a read that runs on the loop cannot be answered 503 at ``request_timeout_s`` (it was predicted to
take a few milliseconds), and while it runs the loop serves nobody else (no longer than it takes).
Writes always run in the pool, and always run to their end.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Hashable

from retrieval.errors import ServerUnavailableError

HANDLER_THREADS = 40  # as many engine calls in flight as Starlette's (anyio's) default thread pool allows
# A read whose calls have been this fast runs on the loop; requests arriving meanwhile wait about
# this long at most. Well above a typical read (0.3-1.5 ms) so that noise does not flip it to the pool.
INLINE_MAX_S = 0.005
_COSTS_KEPT = 4096  # keys remembered; forgotten all at once past this


class HandlerRunner:
    """Runs handlers for one app (see the module docstring).

    A plain ``ThreadPoolExecutor`` behind ``loop.run_in_executor`` rather than Starlette's
    ``run_in_threadpool``: anyio's capacity limiter, run-vars and cancel scopes cost about a tenth
    of the server's CPU per query (py-spy), for nothing a handler needs.

    Example:
        >>> import asyncio
        >>> runner = HandlerRunner(timeout_s=5)
        >>> asyncio.run(runner.run(lambda: 42, key=("count", "c1"), bounded=True, verb="count"))
        42
    """

    def __init__(self, timeout_s: float, threads: int = HANDLER_THREADS):
        self.timeout_s = timeout_s
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="retrieval-api")
        self._in_pool = 0  # handlers running in the pool; read and written on the loop only
        self._cost: dict[Hashable, float] = {}  # the running mean of each key's calls, in seconds

    def runs_inline(self, key: Hashable, bounded: bool) -> bool:
        """Whether a call with this key would run on the loop now."""
        cost = self._cost.get(key)
        return bounded and self._in_pool == 0 and cost is not None and cost < INLINE_MAX_S

    async def run(self, call: Callable[[], Any], *, key: Hashable, bounded: bool, verb: str) -> Any:
        """``call()``'s answer. ``bounded`` calls (reads) may run on the loop, and in the pool are
        answered 503 after ``timeout_s``; other calls run in the pool to their end, even when their
        caller goes away."""
        if self.runs_inline(key, bounded):
            return self._timed(key, call)
        # In this request's context (its span is the parent of the engine's spans), as anyio would.
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(self.executor, context.run, self._timed, key, call)
        self._in_pool += 1
        future.add_done_callback(self._left_pool)
        if not bounded:
            # Shielded: a caller that goes away cannot stop a running thread, and the write completes.
            return await asyncio.shield(future)
        # A worker thread cannot be interrupted: shield it, answer at the deadline (or when the
        # caller is gone), and let the thread finish on its own (its answer is dropped).
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except asyncio.TimeoutError:
            raise ServerUnavailableError(
                f"{verb} took longer than {self.timeout_s:g} s (request_timeout_s in the server config); narrow "
                "the request or raise the limit"
            ) from None

    def _timed(self, key: Hashable, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return call()
        finally:
            cost = time.perf_counter() - started
            if len(self._cost) >= _COSTS_KEPT:
                self._cost.clear()
            before = self._cost.get(key, cost)
            self._cost[key] = (before + cost) / 2

    def _left_pool(self, future: asyncio.Future) -> None:
        self._in_pool -= 1
        if not future.cancelled():
            future.exception()  # retrieved, so an abandoned call's failure is not logged as lost
