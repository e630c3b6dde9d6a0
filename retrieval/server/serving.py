"""How one API request is served: the endpoint the app builds for every route of the table.

The order is the point (``api_endpoint``):

1. authenticate from the headers alone (401) and authorize the route's action on the tenant and
   database in the path (403): a refused caller never gets its body read;
2. read the body (``BodyLimitMiddleware`` bounds its size and arrival time), parse it, bound its
   shape (depth, filter size), authorize what it names (a new tenant or database);
3. run the handler (``retrieval.server.runner``: in the thread pool, or on the loop when it is a
   read known to be cheap; reads in the pool are bounded by ``request_timeout_s``, writes always
   finish, so their outcome is known), cut the answer to the caller's scope;
4. record it: the request span (OpenTelemetry, when on), a metrics observation, one access-log line.

Every failure answers with chromadb's error body and its class's status; anything unexpected is a
500 whose body holds no stack trace and no path (the server log has the details).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response

from retrieval import telemetry
from retrieval.errors import NotSupportedError
from retrieval.http.wire import API_PREFIX, Route, dumps, error_to_wire, parse_body
from retrieval.server.guard import Guard
from retrieval.server.limits import Limits, check_shape
from retrieval.server.observe import Metrics, log_access
from retrieval.server.runner import HandlerRunner

logger = logging.getLogger("retrieval.server")

JSON = "application/json"
_NO_SPAN = contextlib.nullcontext()  # what a request's span is while telemetry is off
_BOUNDED = ("public", "authenticated", "read")  # actions whose calls may be cut off by the timeout (reads)


@dataclass
class Runtime:
    """What every endpoint of one app shares besides the handlers' state; ``runner`` decides where
    each handler runs (``retrieval.server.runner``)."""

    guard: Guard
    limits: Limits
    metrics: Metrics
    runner: HandlerRunner = field(init=False)

    def __post_init__(self) -> None:
        self.runner = HandlerRunner(self.limits.request_timeout_s)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status_code=status, media_type=JSON)


def error_response(error: BaseException) -> Response:
    status, body = error_to_wire(error)
    if status >= 500 and not isinstance(error, NotSupportedError):  # "not supported" is an answer, not a fault
        logger.error("request failed", exc_info=error)
    return json_response(body, status)


class ApiEndpoint:
    """A route's endpoint as a bare ASGI app.

    Starlette wraps a plain function endpoint in its request/response and per-route exception
    layers; this one answers every failure itself (``error_response``), so those layers would only
    add work to each request.

    ``serve(request)`` returns the response and what records it (metrics, access log): recorded once
    the answer is sent, so the caller does not wait for it (~0.07 ms a request). The sends do not
    yield to the event loop, so nothing else is served in between.
    """

    def __init__(self, serve: Any):
        self._serve = serve
        self.__name__ = serve.__name__

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        response, record = await self._serve(Request(scope, receive))
        try:
            await response(scope, receive, send)
        finally:
            record()


def api_endpoint(route: Route, handler: Any, state: Any, runtime: Runtime, created: type = type(None)) -> ApiEndpoint:
    """The ASGI endpoint serving ``route`` with ``handler`` (see the module docstring).

    Args:
        route: the route (its verb, and the action a credential needs).
        handler: ``handler(state, path_params, query_params, body) -> answer``.
        state: the handlers' shared state.
        runtime: guard, limits and metrics of the app.
        created: answers of this type are sent with status 201.
    """
    span_name = f"{route.method} {API_PREFIX}{route.path}"
    bounded = route.action in _BOUNDED

    def request_span(request: Request, path: Mapping[str, Any]) -> Any:
        if not telemetry.enabled():
            return _NO_SPAN
        return telemetry.server_span(
            span_name, request.headers, **{"http.request.method": route.method, "http.route": API_PREFIX + route.path,
                                           "retrieval.verb": route.verb, "retrieval.tenant": path.get("tenant"),
                                           "retrieval.database": path.get("database"),
                                           "retrieval.collection": path.get("collection")},
        )

    async def endpoint(request: Request) -> tuple[Response, Callable[[], None]]:
        started = time.perf_counter()
        principal = None
        path = request.path_params
        with request_span(request, path) as span:
            try:
                principal = runtime.guard.principal(request.headers, route.action)
                runtime.guard.check_path(principal, route, path)
                body = None
                if request.method in ("POST", "PUT"):
                    body = parse_body(await request.body())
                    check_shape(body, runtime.limits)
                    runtime.guard.check_body(principal, route, path, body)
                query = request.query_params
                result = await runtime.runner.run(lambda: handler(state, path, query, body), bounded=bounded,
                                                  key=_cost_key(route, path, body), verb=route.verb)
                result = runtime.guard.answer(principal, route, result)
                response = json_response(result, 201 if isinstance(result, created) else 200)
            except Exception as error:  # every failure answers with chromadb's error body
                response = error_response(error)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
                if principal is not None:
                    span.set_attribute("retrieval.principal", principal.name)
        elapsed = time.perf_counter() - started

        def record() -> None:
            runtime.metrics.observe(route.verb, response.status_code, elapsed)
            log_access(
                method=route.method, path=request.scope["path"], verb=route.verb, status=response.status_code,
                ms=round(elapsed * 1000, 2), principal=None if principal is None else principal.name,
                tenant=path.get("tenant"), database=path.get("database"), collection=path.get("collection"),
            )

        return response, record

    endpoint.__name__ = route.verb
    return ApiEndpoint(endpoint)


def _cost_key(route: Route, path: Mapping[str, Any], body: Any) -> tuple:
    """What a call's cost is predicted by (``HandlerRunner``): its verb and collection, and whether
    it narrows by a filter or ids. A filter's first use can cost a scan of the collection; that
    should not send the plain queries of the same collection to the thread pool."""
    narrowed = isinstance(body, dict) and any(body.get(k) is not None for k in ("where", "where_document", "ids"))
    return route.verb, path.get("collection"), narrowed


def guarded_endpoint(runtime: Runtime, action: str, answer: Any):
    """An endpoint outside the route table (``/openapi.json``, ``/metrics``): ``answer()`` after the
    guard accepts any credential (when auth is on)."""

    async def endpoint(request: Request) -> Response:
        try:
            runtime.guard.principal(request.headers, action)
        except Exception as error:
            return error_response(error)
        return answer()

    return endpoint
