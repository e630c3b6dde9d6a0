"""``create_app(backend, config)``: the Chroma v2 REST API over a Backend, as an ASGI app.

The routes come from ``retrieval.http.wire.ROUTES`` (the table the clients use), each served by its
handler in ``retrieval.server.handlers``. Starlette rather than FastAPI: the wire codec already
parses and validates every body, so a second validation layer would only cost latency.

Engine calls run in a thread pool, or on the loop when they are reads known to be cheap
(``retrieval.server.runner``). Errors become chromadb's
error body with the status of their class; anything unexpected is a 500 without a stack trace
(logged here). How one request is checked, bounded and recorded (auth before the body, limits,
spans, metrics, access log) is ``retrieval.server.serving``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Route

from retrieval.backend import Backend
from retrieval.errors import NotFoundError
from retrieval.http.wire import API_PREFIX, ROUTES
from retrieval.server.auth import Authenticator
from retrieval.server.config import ServerConfig
from retrieval.server.guard import Guard
from retrieval.server.handlers import HANDLERS, Created, ServerState
from retrieval.server.limits import BodyLimitMiddleware
from retrieval.server.observe import Metrics
from retrieval.server.openapi import openapi_document
from retrieval.server.serving import Runtime, api_endpoint, error_response, guarded_endpoint, json_response
from retrieval.server.ui_config import UiConfig
from retrieval.server.ui_routes import ui_routes

logger = logging.getLogger("retrieval.server")


_json, _error = json_response, error_response
_HOT_VERBS = frozenset({"query", "get", "add", "upsert", "update", "delete", "search"})


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
    config = config or ServerConfig()
    state = ServerState(backend, config.limits)
    guard = Guard(Authenticator.from_config(config.sections.get("auth")))
    runtime = Runtime(guard, config.limits, Metrics())
    # Starlette tries routes in order; the record verbs carry nearly all the traffic, so they go
    # first (their POST paths end in a fixed word: no other route can shadow them, nor they another).
    hot_first = sorted(ROUTES.items(), key=lambda item: item[0] not in _HOT_VERBS)
    routes = [
        Route(API_PREFIX + path, api_endpoint(route, HANDLERS[verb], state, runtime, Created),
              methods=[route.method], name=verb if path == route.path else None)
        for verb, route in hot_first
        for path in route.paths
    ]
    document = openapi_document(backend.get_version(), auth=guard.enabled)
    routes += [
        Route("/openapi.json", guarded_endpoint(runtime, "authenticated", lambda: json_response(document)), methods=["GET"]),
        Route("/metrics", guarded_endpoint(runtime, "authenticated", lambda: Response(
            runtime.metrics.render(), media_type="text/plain; version=0.0.4")), methods=["GET"]),
    ]
    # The web page (issue 13): ``/`` and ``/ui/...``, switched by the config's ``ui`` section. Its
    # API takes the same credentials and scopes as the Chroma API.
    routes += ui_routes(backend, UiConfig.from_dict(config.sections.get("ui")),
                        guard=lambda request: guard.check_ui(request.headers, request.url.path, request.query_params))
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    middleware = [Middleware(BodyLimitMiddleware, limits=config.limits)]
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.insert(0, Middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-Chroma-Token", "Content-Type", "traceparent"],
        ))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _not_found}, lifespan=lifespan)
    app.state.retrieval = state
    app.state.config = config
    app.state.metrics = runtime.metrics
    return app
