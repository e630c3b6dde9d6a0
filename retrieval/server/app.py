"""``create_app(backend, config)``: the Chroma v2 REST API over a Backend, as an ASGI app.

The routes come from ``retrieval.http.wire.ROUTES`` (the table the clients use), each served by its
handler in ``retrieval.server.handlers``. Starlette rather than FastAPI: the wire codec already
parses and validates every body, so a second validation layer would only cost latency.

Engine calls run in Starlette's thread pool, never on the event loop. Errors become chromadb's
error body with the status of their class; anything unexpected is a 500 without a stack trace
(logged here).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from retrieval.backend import Backend
from retrieval.errors import NotFoundError
from retrieval.http.wire import API_PREFIX, ROUTES, dumps, error_to_wire, parse_body
from retrieval.server.config import ServerConfig
from retrieval.server.handlers import HANDLERS, Created, Handler, ServerState
from retrieval.server.ui_config import UiConfig
from retrieval.server.ui_routes import ui_routes

logger = logging.getLogger("retrieval.server")

JSON = "application/json"


def _json(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status_code=status, media_type=JSON)


def _error(error: BaseException) -> Response:
    status, body = error_to_wire(error)
    if status >= 500:
        logger.error("request failed", exc_info=error)
    return _json(body, status)


def _endpoint(handler: Handler, state: ServerState):
    async def endpoint(request: Request) -> Response:
        try:
            body = parse_body(await request.body()) if request.method in ("POST", "PUT") else None
            result = await run_in_threadpool(handler, state, request.path_params, request.query_params, body)
        except Exception as error:  # every failure answers with chromadb's error body
            return _error(error)
        return _json(result, 201 if isinstance(result, Created) else 200)

    endpoint.__name__ = handler.__name__
    return endpoint


async def _not_found(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return _error(NotFoundError(f"no route {request.method} {request.url.path} (the API is under {API_PREFIX})"))
    return _json({"error": "ChromaError", "message": str(exc.detail)}, exc.status_code)


def create_app(backend: Backend, config: ServerConfig | None = None, *, on_shutdown: Any = None) -> Starlette:
    """The ASGI app serving ``backend``; ``config`` carries the server's settings.

    The caller owns the backend. ``on_shutdown`` (a callable) runs when the server shuts down,
    after the last request: ``retrieval run`` closes the backend there (a checkpoint), because
    uvicorn re-raises SIGTERM once its graceful shutdown is over and nothing after it runs.

    Example:
        >>> from retrieval.store.backend import open_embedded_backend
        >>> from starlette.testclient import TestClient
        >>> app = create_app(open_embedded_backend(None))
        >>> TestClient(app).get("/api/v2/heartbeat").status_code
        200
    """
    state = ServerState(backend)
    routes = [
        Route(API_PREFIX + route.path, _endpoint(HANDLERS[verb], state), methods=[route.method], name=verb)
        for verb, route in ROUTES.items()
    ]
    config = config or ServerConfig()
    # The web page (issue 13): ``/`` and ``/ui/...``, switched by the config's ``ui`` section.
    routes += ui_routes(backend, UiConfig.from_dict(config.sections.get("ui")))
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    app = Starlette(routes=routes, exception_handlers={HTTPException: _not_found}, lifespan=lifespan)
    app.state.retrieval = state
    app.state.config = config
    return app
