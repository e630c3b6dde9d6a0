"""``AsyncClient`` and ``AsyncCollection``: thin async shells over the sync handles.

There is one implementation of the rules (validation, embedding, result shaping): ``Client`` and
``Collection``. The shells are generated from them, method by method, so their signatures cannot
drift (``tests/test_async_client.py`` checks they are equal). Each async method runs the sync
method in a worker thread (``asyncio.to_thread``), so embedding never blocks the event loop; the
sync handle's backend is a :class:`LoopBridge` that sends each request back to the event loop
through the async transport (httpx's ``AsyncClient``), so I/O happens on the loop as chromadb's
``AsyncHttpClient`` does it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from typing import Any

from retrieval.client import Client
from retrieval.collection import Collection


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


def _wrap(value: Any) -> Any:
    if isinstance(value, Collection):
        return AsyncCollection(value)
    if isinstance(value, list) and value and isinstance(value[0], Collection):
        return [AsyncCollection(c) for c in value]
    return value


def _shell(sync_cls: type, name: str):
    sync = getattr(sync_cls, name)

    @functools.wraps(sync)
    async def method(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap(await asyncio.to_thread(getattr(self._sync, name), *args, **kwargs))

    return method


def _forward(name: str) -> property:
    return property(lambda self: getattr(self._sync, name), doc=f"The sync handle's ``{name}``.")


def public_methods(cls: type) -> list[str]:
    """The public methods of a handle class (what its async shell must mirror)."""
    return sorted(
        name for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.isfunction(value)
    )


def _properties(cls: type) -> list[str]:
    return sorted(name for name, value in inspect.getmembers(cls) if not name.startswith("_") and isinstance(value, property))


class AsyncCollection:
    """The async twin of :class:`retrieval.Collection`: every method is a coroutine.

    Example:
        >>> col = await client.create_collection("docs", embedding_function=None)  # doctest: +SKIP
        >>> await col.add(ids=["a"], embeddings=[[1.0, 0.0]])  # doctest: +SKIP
    """

    def __init__(self, collection: Collection):
        self._sync = collection

    def __repr__(self) -> str:
        return f"Async{self._sync!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncCollection) and other._sync == self._sync

    def __hash__(self) -> int:
        return hash(self._sync)


class AsyncClient:
    """The async twin of :class:`retrieval.Client`: every method is a coroutine.

    Obtain one with ``await retrieval.AsyncHttpClient(...)``.
    """

    def __init__(self, client: Client):
        self._sync = client

    @property
    def tenant(self) -> str:
        return self._sync.tenant

    @property
    def database(self) -> str:
        return self._sync.database

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


for _cls, _sync_cls in ((AsyncClient, Client), (AsyncCollection, Collection)):
    for _name in public_methods(_sync_cls):
        setattr(_cls, _name, _shell(_sync_cls, _name))
    for _name in _properties(_sync_cls):
        if _name not in vars(_cls):
            setattr(_cls, _name, _forward(_name))
del _cls, _sync_cls, _name
