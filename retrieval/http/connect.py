"""Which server a client talks to: chromadb-style settings and arguments to an HTTP backend.

Kept apart from the client factories so ``retrieval.client`` can build an HTTP backend from
``Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI", ...)`` without an import cycle.
"""

from __future__ import annotations

from typing import Any, Mapping

from retrieval.errors import InvalidArgumentError
from retrieval.settings import Settings

#: ``Settings(chroma_api_impl=...)`` values that mean "talk to a server" (chromadb's names).
HTTP_API_IMPLS = ("chromadb.api.fastapi.FastAPI", "chromadb.api.async_fastapi.AsyncFastAPI", "rest")


def check_settings(settings: Settings, host: str, port: int) -> None:
    """chromadb refuses a host or port that disagrees with the one in ``settings``."""
    given_host = settings.extra.get("chroma_server_host")
    if given_host and given_host != host:
        raise InvalidArgumentError(f"settings name server host {given_host!r} but HttpClient was given {host!r}")
    given_port = settings.extra.get("chroma_server_http_port")
    if given_port and int(given_port) != int(port):
        raise InvalidArgumentError(f"settings name server port {given_port!r} but HttpClient was given {port!r}")


def http_backend(
    host: str,
    port: int,
    ssl: bool,
    headers: Mapping[str, str] | None,
    settings: Settings,
    *,
    asynchronous: bool = False,
    **options: Any,
):
    """A sync or async HTTP backend; TLS verification follows ``chroma_server_ssl_verify``."""
    from retrieval.http.transport import AsyncHttpBackend, HttpBackend

    headers = {**(settings.extra.get("chroma_server_headers") or {}), **dict(headers or {})}
    verify = settings.extra.get("chroma_server_ssl_verify")
    cls = AsyncHttpBackend if asynchronous else HttpBackend
    return cls(host, port, ssl, headers, verify=verify, **options)


def backend_from_settings(settings: Settings):
    """The HTTP backend chromadb-style settings describe, e.g. for
    ``AdminClient(Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host=...,
    chroma_server_http_port=...))``; None when they describe an embedded client."""
    if settings.extra.get("chroma_api_impl") not in HTTP_API_IMPLS:
        return None
    host = settings.extra.get("chroma_server_host") or "localhost"
    port = int(settings.extra.get("chroma_server_http_port") or 8000)
    ssl = bool(settings.extra.get("chroma_server_ssl_enabled"))
    return http_backend(host, port, ssl, None, settings)
