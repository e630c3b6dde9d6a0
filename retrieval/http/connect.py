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


_TOKEN_PROVIDERS = ("chromadb.auth.token_authn.TokenAuthClientProvider", "token")
_BASIC_PROVIDERS = ("chromadb.auth.basic_authn.BasicAuthClientProvider", "basic")
_TOKEN_HEADERS = ("Authorization", "X-Chroma-Token")


def auth_headers(settings: Settings) -> dict[str, str]:
    """The credential headers chromadb's client auth settings describe (none when unset).

    ``chroma_client_auth_provider`` names chromadb's token or basic provider;
    ``chroma_client_auth_credentials`` holds the token (or ``user:password``);
    ``chroma_auth_token_transport_header`` picks ``Authorization`` (``Bearer <token>``, the
    default) or ``X-Chroma-Token``.

    Example:
        >>> auth_headers(Settings(chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
        ...                       chroma_client_auth_credentials="s3cret-token"))
        {'Authorization': 'Bearer s3cret-token'}
    """
    provider = settings.extra.get("chroma_client_auth_provider")
    if not provider:
        return {}
    credentials = settings.extra.get("chroma_client_auth_credentials")
    if not credentials:
        raise InvalidArgumentError(f"chroma_client_auth_provider {provider!r} needs chroma_client_auth_credentials")
    if provider in _TOKEN_PROVIDERS:
        header = settings.extra.get("chroma_auth_token_transport_header") or "Authorization"
        if header not in _TOKEN_HEADERS:
            raise InvalidArgumentError(f"chroma_auth_token_transport_header must be one of {list(_TOKEN_HEADERS)}; got {header!r}")
        return {header: f"Bearer {credentials}" if header == "Authorization" else str(credentials)}
    if provider in _BASIC_PROVIDERS:
        import base64

        return {"Authorization": "Basic " + base64.b64encode(str(credentials).encode()).decode()}
    raise InvalidArgumentError(
        f"unknown chroma_client_auth_provider {provider!r}; use {_TOKEN_PROVIDERS[0]!r} or {_BASIC_PROVIDERS[0]!r}"
    )


def http_backend(
    host: str,
    port: int,
    ssl: bool,
    headers: Mapping[str, str] | None,
    settings: Settings,
    **options: Any,
):
    """An HTTP backend; TLS verification follows ``chroma_server_ssl_verify``."""
    from retrieval.http.transport import HttpBackend

    headers = {**auth_headers(settings), **(settings.extra.get("chroma_server_headers") or {}), **dict(headers or {})}
    verify = settings.extra.get("chroma_server_ssl_verify")
    return HttpBackend(host, port, ssl, headers, verify=verify, **options)


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
