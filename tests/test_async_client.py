"""The async client: the same API as the sync one (signatures equal, every method a coroutine),
over the async transport, with I/O on the event loop and embedding off it."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading

import numpy as np
import pytest

import retrieval
from retrieval import async_codegen
from retrieval.async_client import AsyncClient, AsyncCollection, public_methods
from retrieval.http.transport import HttpBackend
from retrieval.server.app import create_app
from retrieval.store.backend import open_embedded_backend


@pytest.mark.parametrize("sync_cls, async_cls", [(retrieval.Client, AsyncClient), (retrieval.Collection, AsyncCollection)])
def test_async_signatures_equal_sync(sync_cls, async_cls):
    names = public_methods(sync_cls)
    assert len(names) > 8
    for name in names:
        method, sync = getattr(async_cls, name), getattr(sync_cls, name)
        assert inspect.iscoroutinefunction(method), name
        ours, theirs = inspect.signature(method), inspect.signature(sync)
        assert ours.parameters == theirs.parameters, name
        assert ours.return_annotation == re.sub(r"\bCollection\b", "AsyncCollection", theirs.return_annotation), name
        assert method.__doc__ == sync.__doc__
        assert method.__qualname__ == f"{async_cls.__name__}.{name}"  # written out, visible to IDEs and help()
    for name in ("name", "id", "metadata", "configuration"):
        assert isinstance(inspect.getattr_static(AsyncCollection, name), property)


def test_generated_async_handles_are_current():
    """``retrieval/async_handles.py`` is what ``python -m retrieval.async_codegen`` writes now: a
    handle method added, removed or changed without regenerating fails here."""
    assert async_codegen.TARGET.read_text() == async_codegen.render(), (
        "retrieval/async_handles.py is stale: run `python -m retrieval.async_codegen`"
    )


async def _client(app, http=None) -> AsyncClient:
    from starlette.testclient import TestClient

    backend = HttpBackend("testserver", 80, http_client=http or TestClient(app))
    return AsyncClient(await asyncio.to_thread(retrieval.Client, None, backend=backend))


class Embedder:
    """Records the thread it runs on: embedding must not run on the event loop's thread."""

    threads: set = set()

    def __call__(self, input):
        Embedder.threads.add(threading.get_ident())
        return [np.array([len(t), 1.0], np.float32) for t in input]


def test_async_client_round_trip_over_the_async_transport():
    backend = open_embedded_backend(None)
    app = create_app(backend)

    async def main():
        loop_thread = threading.get_ident()
        client = await _client(app)
        col = await client.create_collection("docs", embedding_function=Embedder())
        assert isinstance(col, AsyncCollection) and col.name == "docs"
        await col.add(ids=["a", "bb"], documents=["x", "yyyy"], metadatas=[{"k": 1}, {"k": 2}])
        assert await col.count() == 2
        got = await col.get(where={"k": 2})
        assert got["ids"] == ["bb"] and got["documents"] == ["yyyy"]
        result = await col.query(query_texts=["zzzz"], n_results=1)
        assert result["ids"] == [["bb"]]
        assert [c.name for c in await client.list_collections()] == ["docs"]
        with pytest.raises(retrieval.NotFoundError):
            await client.get_collection("missing")
        assert Embedder.threads and loop_thread not in Embedder.threads
        await client.close()

    try:
        asyncio.run(main())
    finally:
        backend.close()


def test_an_async_call_crosses_threads_once():
    """Validation, embedding and the request of one call run in the same worker thread: one trip
    from the event loop and back, never on the loop itself."""
    backend = open_embedded_backend(None)
    app = create_app(backend)
    threads: dict[str, set] = {"embed": set(), "request": set()}

    class Recording(Embedder):
        def __call__(self, input):
            threads["embed"].add(threading.get_ident())
            return super().__call__(input)

    from starlette.testclient import TestClient

    class RecordingHttp(TestClient):
        def request(self, *args, **kwargs):
            threads["request"].add(threading.get_ident())
            return super().request(*args, **kwargs)

    async def main():
        loop_thread = threading.get_ident()
        client = await _client(app, RecordingHttp(app))
        col = await client.create_collection("one-trip", embedding_function=Recording())
        threads["embed"].clear()
        threads["request"].clear()
        await col.add(ids=["a"], documents=["x"])
        assert threads["embed"] == threads["request"] and loop_thread not in threads["embed"]
        # 64 calls can be in flight from one client.
        assert await asyncio.gather(*(col.count() for _ in range(64))) == [1] * 64
        await client.close()

    try:
        asyncio.run(main())
    finally:
        backend.close()
