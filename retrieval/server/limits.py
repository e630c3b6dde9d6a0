"""What one request may cost the server: body size and arrival time, batch size, results, filter size.

``BodyLimitMiddleware`` wraps the whole app, so every route (the Chroma API and the web page's
``/ui/api``) gets the same rules before any handler runs:

- a ``Content-Length`` over ``max_body_bytes`` is answered 413 at once, before a byte of the body
  is read; a chunked body is counted as it arrives and refused (413) the moment it passes the limit,
  so an oversized body is never buffered whole;
- a body must arrive within ``request_timeout_s`` (408): a slow client holds a connection, never a
  worker thread (engine work starts only once the whole body is in).

The JSON shape checks (:func:`check_shape`) bound what the parsers recurse into: nesting depth
(a 1,000-level filter is a 400, not a ``RecursionError``) and the number of values in a filter
(huge ``$in`` lists). Regular expressions are RE2 (``retrieval.query.filters``): linear time, so
``(a+)+$`` cannot backtrack.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Mapping

from retrieval.errors import InvalidArgumentError, RequestTimeoutError, RequestTooLargeError

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-request limits of one server (config keys of the same names).

    Args:
        max_body_bytes: largest request body accepted (413 above it).
        max_batch_size: most records in one add/update/upsert (advertised by the pre-flight checks,
            which chromadb's client splits its batches by).
        max_n_results: largest ``n_results`` of a query.
        request_timeout_s: seconds a request body may take to arrive (408 after); read-only calls
            that run longer than this answer 503 (writes always finish: their outcome must be known).
        max_depth: deepest JSON nesting accepted in a body.
        max_filter_values: most values (clauses and ``$in`` items) in one where/where_document.

    Example:
        >>> Limits.from_dict({"max_body_bytes": 1024}).max_body_bytes
        1024
    """

    max_body_bytes: int = 64 * MiB  # e.g. 5,000 records of 1536-d base64 vectors with short documents
    max_batch_size: int | None = None  # None: the engine's own (SQLite's variable limit)
    max_n_results: int = 10_000
    request_timeout_s: float = 60.0
    max_depth: int = 64
    max_filter_values: int = 100_000

    KEYS = ("max_body_bytes", "max_batch_size", "max_n_results", "request_timeout_s")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        values: dict[str, Any] = {}
        for key in cls.KEYS:
            if data.get(key) is None:
                continue
            value = data[key]
            number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key != "request_timeout_s":
                number_ok = number_ok and float(value).is_integer()
            if not number_ok or value <= 0:
                kind = "a positive number of seconds" if key == "request_timeout_s" else "a positive integer"
                raise InvalidArgumentError(f"server config {key} must be {kind}; got {value!r}")
            values[key] = float(value) if key == "request_timeout_s" else int(value)
        return cls(**values)


class BodyLimitMiddleware:
    """ASGI middleware enforcing ``max_body_bytes`` and the body's arrival time (see the module doc).

    Errors raised from ``receive`` reach the endpoint that is reading the body, which answers them
    with their status like any other error (413 / 408).
    """

    def __init__(self, app: Any, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _refuse(send, 413, "RequestTooLargeError", _too_large(limit, f"{declared} bytes"))
                    return
        deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
        received = 0
        done = False

        async def limited_receive() -> dict:
            nonlocal received, done
            if done:  # the body is in; later receives wait for a disconnect, unbounded
                return await receive()
            try:
                message = await _by(deadline, receive)
            except asyncio.TimeoutError:
                raise RequestTimeoutError(
                    f"the request body did not arrive within {self.limits.request_timeout_s:g} s "
                    "(request_timeout_s in the server config)"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLargeError(_too_large(limit, f"more than {limit} bytes"))
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        await self.app(scope, limited_receive, send)


if hasattr(asyncio, "timeout_at"):  # Python 3.11+

    async def _by(deadline: float, receive: Any) -> Any:
        """``await receive()``, or TimeoutError at loop time ``deadline``. In this task: wait_for
        would wrap the call in a new task, one more event-loop turn for every body read."""
        async with asyncio.timeout_at(deadline):
            return await receive()

else:  # pragma: no cover - Python 3.10

    async def _by(deadline: float, receive: Any) -> Any:
        return await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))


def _too_large(limit: int, got: str) -> str:
    return (
        f"request body too large: {got}, the server accepts at most {limit} bytes (max_body_bytes in the "
        "server config); send fewer records per call"
    )


async def _refuse(send: Any, status: int, name: str, message: str) -> None:
    import json

    body = json.dumps({"error": "InvalidArgumentError", "message": message, "retrieval_error": name}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        # The body was not read: the connection cannot be reused for another request.
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------ JSON shapes

_FILTER_KEYS = ("where", "where_document")
# Vectors are the bulk of a write or query body (1,000 x 512 floats), and the handler accepts them
# only as a rectangular numeric array (or base64 strings): their shape needs no walk here, which
# would otherwise visit every float on the event loop.
_VECTOR_KEYS = frozenset({"embeddings", "query_embeddings"})


def check_shape(body: Any, limits: Limits) -> None:
    """Refuse (400) a parsed body nested deeper than ``limits.max_depth`` or holding a filter with
    more than ``limits.max_filter_values`` values. Iterative: it cannot itself overflow the stack.

    Example:
        >>> where = {"a": 1}
        >>> for _ in range(100):
        ...     where = {"$and": [where, {"b": 1}]}
        >>> check_shape({"where": where}, Limits())
        Traceback (most recent call last):
        ...
        retrieval.errors.InvalidArgumentError: request body nested deeper than 64 levels; flatten the filter (e.g. one $and of many clauses)
    """
    if not isinstance(body, (dict, list)):
        return
    top = {k: v for k, v in body.items() if k not in _VECTOR_KEYS} if isinstance(body, dict) else body
    stack: list[tuple[Any, int]] = [(top, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limits.max_depth:
            raise InvalidArgumentError(
                f"request body nested deeper than {limits.max_depth} levels; flatten the filter (e.g. one $and of many clauses)"
            )
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    filters = [body.get(key) for key in _FILTER_KEYS] if isinstance(body, dict) else []
    for search in (body.get("searches") or []) if isinstance(body, dict) and isinstance(body.get("searches"), list) else []:
        filters.append(search)
    for tree in filters:
        if _count_values(tree, limits.max_filter_values) > limits.max_filter_values:
            raise InvalidArgumentError(
                f"filter holds more than {limits.max_filter_values} values; split the request or filter on fewer values"
            )


def _count_values(tree: Any, cap: int) -> int:
    count, stack = 0, [tree]
    while stack and count <= cap:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count
