"""What the async handles stand on: the bridge to the event loop and the shells' own behaviour.

``AsyncClient`` / ``AsyncCollection`` (``retrieval.async_handles``, generated) run each sync method in
a worker thread (``asyncio.to_thread``), so validation and embedding never block the event loop; the
sync handle's backend is a :class:`LoopBridge` that sends each request back to the event loop through
the async transport (httpx's ``AsyncClient``), so I/O happens on the loop as chromadb's
``AsyncHttpClient`` does it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any


class LoopBridge:
    """A blocking Backend made of an async one: each verb is scheduled on ``loop`` and awaited
    from the calling (worker) thread. It must never be called on the loop's own thread."""

    def __init__(self, backend: Any, loop: asyncio.AbstractEventLoop):
        self._backend = backend
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def __getattr__(self, verb: str) -> Any:
        method = getattr(self._backend, verb)
        if not inspect.iscoroutinefunction(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self._loop_thread:
                raise RuntimeError(f"{verb}() was called on the event loop thread; await the async client instead")
            return asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop).result()

        return call


def public_methods(cls: type) -> list[str]:
    """The public methods of a handle class (what its async shell must mirror)."""
    return sorted(
        name for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.isfunction(value)
    )


def public_properties(cls: type) -> list[str]:
    """The public properties of a handle class."""
    return sorted(name for name, value in inspect.getmembers(cls) if not name.startswith("_") and isinstance(value, property))


class CollectionShell:
    """An async collection's state: the sync handle it runs."""

    def __init__(self, collection: Any):
        self._sync = collection

    def __repr__(self) -> str:
        return f"Async{self._sync!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CollectionShell) and other._sync == self._sync

    def __hash__(self) -> int:
        return hash(self._sync)


class ClientShell:
    """An async client's state: the sync client it runs; ``async with`` closes it."""

    def __init__(self, client: Any):
        self._sync = client

    @property
    def tenant(self) -> str:
        return self._sync.tenant

    @property
    def database(self) -> str:
        return self._sync.database

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sync_close()

    async def _sync_close(self) -> None:
        await asyncio.to_thread(self._sync.close)
