"""The background thread that owes the HNSW graphs their work (DESIGN section 4).

A write is acknowledged once SQLite commits it; its vectors wait in the collection's pending tail
(pending.py), where queries find them by an exact scan. This thread does the rest, one bounded
step at a time and never as a precondition for answering: insert pending vectors into the graph
(hnswlib, several threads), mark pending deletions, sweep for cut-off records, checkpoint, compact.
Each step is ``GraphUpkeep.background_step`` (graph_upkeep.py), run with the collection's ``graph_lock`` held, so
an explicit ``flush()`` or ``verify()`` in another thread waits for the step in flight and then does
the remaining work itself.

One thread per process serves every open collection in turn (a thread per client would be
created and torn down with each client; measured: 45 MiB more RSS after 100 open/close cycles).
Closing a client cancels its collections' work and waits for the step in flight, which is small (a
chunk of insertions, one page of a sweep) except a checkpoint's save; whatever is left stays in
the oplog and is picked up by the next open.

The interpreter's exit pauses the thread the same way (an atexit hook) before it finalizes. A daemon
thread that returns from hnswlib's C++ after finalization began is ended by unwinding its C++
frames, and that aborts the whole process ("terminate called without an active exception"): a
script that ends while the graph is being built must exit cleanly, its writes already in SQLite.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Protocol

logger = logging.getLogger("retrieval")


class BackgroundWork(Protocol):
    graph_lock: threading.Lock
    cancelled: bool  # set when the collection is closed or deleted: its work stops at the next page

    def background_step(self, should_stop) -> bool:
        """Do one bounded piece of owed work; True while more remains."""


class GraphBuilder:
    """Runs the owed graph work of every collection that asks for it (``wake``)."""

    def __init__(self, name: str = "retrieval-graph"):
        self._name = name
        self._ready: dict[int, BackgroundWork] = {}  # insertion-ordered: round robin
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._paused = False
        self._busy = False

    def wake(self, work: BackgroundWork) -> None:
        """Schedule ``work`` (idempotent); starts the thread on first use."""
        with self._cv:
            self._ready.setdefault(id(work), work)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
                # Either order with the engines' exit hook (shared_engines) is safe: that hook does
                # its collections' remaining work itself, under each one's graph lock.
                atexit.register(self.pause)
            self._cv.notify_all()

    def forget(self, work: BackgroundWork) -> None:
        with self._cv:
            self._ready.pop(id(work), None)

    @property
    def running(self) -> bool:
        """Whether queued work will be done without anyone else doing it (not paused)."""
        return not self._paused

    def pause(self) -> None:
        """Hold all background work (tests use it to observe the unindexed tail); ``resume`` restarts it."""
        with self._cv:
            self._paused = True
            while self._busy:
                self._cv.wait()

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify_all()

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or in flight; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._busy and (not self._ready or self._paused), timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._ready and not self._paused)
                key, work = next(iter(self._ready.items()))
                del self._ready[key]
                self._busy = True
            more = False
            if work.graph_lock.acquire(timeout=0.05):
                try:
                    if not work.cancelled:
                        more = work.background_step(lambda: self._paused or work.cancelled)
                except Exception:  # noqa: BLE001 - the graph is a cache: log, and let the collection reload it
                    logger.warning("background index work failed", exc_info=True)
                finally:
                    work.graph_lock.release()
            else:
                more = True  # someone else (flush, verify) holds it: come back later
            with self._cv:
                self._busy = False
                if more and not work.cancelled:
                    self._ready.setdefault(key, work)
                self._cv.notify_all()


_shared: GraphBuilder | None = None
_shared_lock = threading.Lock()


def shared_builder() -> GraphBuilder:
    """The process's builder (its thread starts with the first work)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = GraphBuilder()
        return _shared


__all__ = ["GraphBuilder", "shared_builder"]
