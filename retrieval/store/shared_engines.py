"""One engine per persist path per process, shared by every client that names that path.

Clients in one process that name the same path share one engine (one SQLite connection, one set of
index caches, one path lock); the engine closes when the last of them does.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from pathlib import Path

from retrieval.store.engine import Engine

logger = logging.getLogger("retrieval")

_lock = threading.Lock()
_shared: dict[str, tuple[Engine, int]] = {}  # realpath -> (engine, number of open users)


def acquire(path: Path, synchronous: str) -> Engine:
    """The engine for ``path``, opening it on first use; pair every call with :func:`release`."""
    key = os.path.realpath(path)
    with _lock:
        engine, users = _shared.get(key, (None, 0))
        if engine is None or engine.closed:
            engine, users = Engine(Path(key), synchronous=synchronous), 0
        _shared[key] = (engine, users + 1)
        return engine


def release(engine: Engine, budget_s: float | None = None) -> None:
    """One user fewer; the last one closes the engine (``budget_s``: see ``Engine.close``)."""
    with _lock:
        for key, (shared, users) in list(_shared.items()):
            if shared is engine:
                if users > 1:
                    _shared[key] = (shared, users - 1)
                    return
                del _shared[key]
        # Close while holding the lock: a thread opening this path meanwhile must wait until the
        # engine has released the path lock, or it would find the lock held by its own process and
        # fail with "in use by another process" (tests/test_concurrency.py).
        engine.close(budget_s)


def open_count() -> int:
    """How many persist paths have an open shared engine (tests check for leaks)."""
    with _lock:
        return len(_shared)


def forget_all() -> None:
    """Drop every shared engine without closing it (tests simulating a crashed process)."""
    with _lock:
        _shared.clear()


# How long the interpreter's exit spends on clients never closed (chromadb code rarely closes). A
# script that ends right after a bulk load would otherwise sit silently in close() while the graph
# takes the load (minutes at 1M); what is left is replayed from the oplog by the next open and
# indexed in the background there, while queries answer. An explicit close() does all of it.
EXIT_BUDGET_S = 10.0


@atexit.register
def _close_at_exit() -> None:
    """Index and checkpoint what clients never closed owe, within EXIT_BUDGET_S, so the next open is fast.

    Nothing depends on it for safety: every acknowledged write is already in SQLite.
    """
    with _lock:
        engines = [engine for engine, _ in _shared.values()]
        _shared.clear()
    for engine in engines:
        try:
            engine.close(EXIT_BUDGET_S)
        except Exception:  # noqa: BLE001 - best effort at exit; the oplog replays on next open
            logger.warning("could not checkpoint %s at exit", engine.db.directory, exc_info=True)
