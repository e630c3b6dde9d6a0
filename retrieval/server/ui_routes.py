"""The web page's routes: the page at ``/``, its files under ``/ui/static``, its JSON under ``/ui/api``.

``ui_routes(backend, config)`` returns Starlette routes the server appends to its Chroma API routes
(or any Starlette/FastAPI app mounts, as the tests do). Engine calls, thumbnail rendering and query
embedding run in Starlette's thread pool, never on the event loop.

The page and its static files need no credentials (they hold none). Every ``/ui/api`` route first
calls the server's ``guard`` (its auth check) before reading the body; the page sends the token the
user entered as ``Authorization: Bearer ...``. Tenant and database are query parameters of every API
call (``?tenant=...&database=...``), defaulting to chromadb's defaults.
"""

from __future__ import annotations

import hashlib
import json
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from embedders.errors import ModelUnavailableError
from retrieval.backend import Backend
from retrieval.errors import InvalidArgumentError, RetrievalError
from retrieval.server.ui_config import UiConfig
from retrieval.server.ui_service import SearchRequest, UiService

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
API = "/ui/api"
_UI_DIR = Path(__file__).parent / "ui"  # package data (pyproject: retrieval.server = ["ui/*"])
_STATIC = {"index.html": "text/html; charset=utf-8", "app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

#: ``guard(request)`` raises (a ``RetrievalError`` with an HTTP status) to refuse a request.
Guard = Callable[[Request], Any]


def ui_routes(backend: Backend, config: UiConfig | None = None, *, guard: Guard | None = None) -> list[BaseRoute]:
    """The page and its API over ``backend``; an empty list when ``config.enabled`` is false.

    Args:
        backend: the storage the server serves (an ``EmbeddedBackend`` in ``retrieval run``).
        config: the operator's switches (server-side embedding, thumbnail roots); defaults to a page
            that browses and filters but neither embeds queries nor reads image files.
        guard: called with each ``/ui/api`` request before anything else, e.g. the server's auth
            check; it refuses by raising. May be a coroutine function.

    Example:
        >>> from starlette.applications import Starlette
        >>> from retrieval.store.backend import open_embedded_backend
        >>> app = Starlette(routes=ui_routes(open_embedded_backend(None), UiConfig()))
    """
    config = config or UiConfig()
    if not config.enabled:
        return []
    service = UiService(backend, config)
    files = {name: (_UI_DIR / name).read_bytes() for name in _STATIC}
    etags = {name: '"' + hashlib.sha256(body).hexdigest()[:24] + '"' for name, body in files.items()}

    def static(name: str, request: Request) -> Response:
        # no-cache: the browser revalidates with the ETag, so an upgraded server is seen at once.
        headers = {"ETag": etags[name], "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etags[name]:
            return Response(status_code=304, headers=headers)
        return Response(files[name], media_type=_STATIC[name], headers=headers)

    async def page(request: Request) -> Response:
        return static("index.html", request)

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files or name == "index.html":
            return _json({"error": "NotFoundError", "message": f"no static file {name!r}"}, 404)
        return static(name, request)

    def api(work: Callable[[Request, dict[str, str], Any], Any], *, body: bool = False):
        """An API endpoint: guard, then the body (if any), then ``work`` in the thread pool."""

        async def endpoint(request: Request) -> Response:
            try:
                if guard is not None:
                    checked = guard(request)
                    if hasattr(checked, "__await__"):
                        await checked
                payload = _parse_json(await request.body()) if body else None
                where = {
                    "tenant": request.query_params.get("tenant") or DEFAULT_TENANT,
                    "database": request.query_params.get("database") or DEFAULT_DATABASE,
                }
                result = await run_in_threadpool(work, request, where, payload)
            except Exception as error:  # noqa: BLE001 - mapped to a status, or re-raised, by _error
                return _error(error)
            return result if isinstance(result, Response) else _json(result)

        return endpoint

    def info(request: Request, ns: dict[str, str], _: Any) -> Any:
        return service.info()

    def databases(request: Request, ns: dict[str, str], _: Any) -> Any:
        return service.databases(ns["tenant"])

    def collections(request: Request, ns: dict[str, str], _: Any) -> Any:
        return service.collections(ns["tenant"], ns["database"])

    def describe(request: Request, ns: dict[str, str], _: Any) -> Any:
        return service.describe(ns["tenant"], ns["database"], request.path_params["name"])

    def search(request: Request, ns: dict[str, str], payload: Any) -> Any:
        parsed = SearchRequest.from_json(payload, config.max_upload_bytes)
        return service.search(ns["tenant"], ns["database"], request.path_params["name"], parsed)

    def thumbnail(request: Request, ns: dict[str, str], _: Any) -> Response:
        record_id = request.query_params.get("id")
        if not record_id:
            raise InvalidArgumentError("the thumbnail request needs ?id=<record id>")
        path = service.thumbnail_path(ns["tenant"], ns["database"], request.path_params["name"], record_id)
        etag, mtime = service.thumbnailer.etag(path)
        # private: a thumbnail is as confidential as its collection (auth may guard it).
        headers = {"ETag": etag, "Cache-Control": "private, max-age=3600", "Last-Modified": formatdate(mtime, usegmt=True)}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        thumb = service.thumbnailer.render(path)
        return Response(thumb.body, media_type=thumb.media_type, headers={**headers, "ETag": thumb.etag})

    return [
        Route("/", page, methods=["GET"], include_in_schema=False),
        Route("/ui/static/{name}", static_file, methods=["GET"], include_in_schema=False),
        Route(f"{API}/info", api(info), methods=["GET"]),
        Route(f"{API}/databases", api(databases), methods=["GET"]),
        Route(f"{API}/collections", api(collections), methods=["GET"]),
        Route(f"{API}/collections/{{name}}", api(describe), methods=["GET"]),
        Route(f"{API}/collections/{{name}}/search", api(search, body=True), methods=["POST"]),
        Route(f"{API}/collections/{{name}}/thumbnail", api(thumbnail), methods=["GET"]),
    ]


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as e:
        raise InvalidArgumentError(f"the request body is not JSON: {e}") from e


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status_code=status, media_type="application/json")


def _error(error: Exception) -> Response:
    """chromadb-shaped error bodies with the status of the error's class; no stack traces."""
    if isinstance(error, RetrievalError):
        status = error.http_status
    elif isinstance(error, ModelUnavailableError):  # the model's weights are not on this host
        status = 503
    elif isinstance(error, (ValueError, TypeError)):  # embedders and loaders reject bad input with these
        status = 400
    else:
        raise error  # the server's handler logs it and answers 500
    return _json({"error": type(error).__name__, "message": str(error)}, status)
