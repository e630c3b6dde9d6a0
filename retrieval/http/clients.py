"""``HttpClient`` and ``AsyncHttpClient``: chromadb's factories, over a ``retrieval run`` server.

They return the same ``Client`` (and an ``AsyncClient`` shell around it) as the embedded factories;
only the backend differs. httpx is imported on first use, so ``import retrieval`` stays light.
"""

from __future__ import annotations

import asyncio
import functools

from retrieval.http.connect import check_settings, http_backend
from retrieval.settings import Settings
from retrieval.store.namespaces import DEFAULT_DATABASE, DEFAULT_TENANT

def HttpClient(
    host: str = "localhost",
    port: int = 8000,
    ssl: bool = False,
    headers: dict[str, str] | None = None,
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
    *,
    timeout: float | None = 60.0,
    retries: int = 2,
):
    """A client of a ``retrieval run`` server (or chromadb's), with the embedded client's API.

    Documents, images and URIs are embedded here, with each collection's stored embedding function;
    ``include=["data"]`` loads URIs here with its stored data loader. The server only stores.

    Args:
        host, port, ssl, headers, settings, tenant, database: as chromadb's ``HttpClient``.
        timeout: seconds a request may take (None: no limit).
        retries: how many times an idempotent request is retried after a transport failure.

    Example:
        >>> import retrieval
        >>> client = retrieval.HttpClient(host="127.0.0.1", port=8000)  # doctest: +SKIP
        >>> client.heartbeat() > 0  # doctest: +SKIP
        True
    """
    from retrieval.client import Client

    settings = settings or Settings()
    host, port = str(host), int(port)
    check_settings(settings, host, port)
    backend = http_backend(host, port, bool(ssl), headers, settings, timeout=timeout, retries=retries)
    return Client(settings, str(tenant), str(database), backend=backend)


async def AsyncHttpClient(
    host: str = "localhost",
    port: int = 8000,
    ssl: bool = False,
    headers: dict[str, str] | None = None,
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
    *,
    timeout: float | None = 60.0,
    retries: int = 2,
):
    """``await retrieval.AsyncHttpClient(...)``: the async twin of :func:`HttpClient`.

    Each call runs whole (validation, embedding, the request) in one trip to one of the client's
    worker threads, so a large ``add`` of documents never blocks the event loop, and up to 64
    requests are in flight at once.

    Example:
        >>> client = await retrieval.AsyncHttpClient(port=8000)  # doctest: +SKIP
        >>> col = await client.get_or_create_collection("docs")  # doctest: +SKIP
    """
    from retrieval.async_client import AsyncClient, client_executor
    from retrieval.client import Client

    settings = settings or Settings()
    host, port = str(host), int(port)
    check_settings(settings, host, port)
    backend = http_backend(host, port, bool(ssl), headers, settings, timeout=timeout, retries=retries)
    executor = client_executor()
    build = functools.partial(Client, settings, str(tenant), str(database), backend=backend)
    client = await asyncio.get_running_loop().run_in_executor(executor, build)
    return AsyncClient(client, executor)
