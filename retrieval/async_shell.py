"""What the async handles stand on: one trip to a worker thread per call.

``AsyncClient`` / ``AsyncCollection`` (``retrieval.async_handles``, generated) run each sync method
whole (validation, embedding, the HTTP request, shaping the result) in one worker thread of the
client's executor, and await it: an async call crosses threads once, and the event loop never
blocks. The client's executor holds up to 64 threads, so 64 requests can be in flight from one
client (the sync transport's connection pool is shared and thread-safe).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable

MAX_IN_FLIGHT = 64


def client_executor() -> ThreadPoolExecutor:
    """The worker threads of one async client (started as calls need them)."""
    return ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="retrieval-async")


def public_methods(cls: type) -> list[str]:
    """The public methods of a handle class (what its async twin must mirror)."""
    return sorted(
        name for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.isfunction(value)
    )


def public_properties(cls: type) -> list[str]:
    """The public properties of a handle class."""
    return sorted(name for name, value in inspect.getmembers(cls) if not name.startswith("_") and isinstance(value, property))


class Shell:
    """A sync handle and the executor its calls run in."""

    def __init__(self, sync: Any, executor: Executor | None = None):
        self._sync = sync
        self._executor = executor

    async def _run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(method, *args, **kwargs))


class CollectionShell(Shell):
    """An async collection's own behaviour (the rest is generated)."""

    def __repr__(self) -> str:
        return f"Async{self._sync!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CollectionShell) and other._sync == self._sync

    def __hash__(self) -> int:
        return hash(self._sync)


class ClientShell(Shell):
    """An async client's own behaviour: ``async with`` closes it and its threads."""

    def __init__(self, client: Any, executor: Executor | None = None):
        super().__init__(client, executor if executor is not None else client_executor())

    @property
    def tenant(self) -> str:
        return self._sync.tenant

    @property
    def database(self) -> str:
        return self._sync.database

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._run(self._sync.close)
        self._executor.shutdown(wait=False)
