"""``HttpBackend``: the Backend seam over Chroma's v2 REST API.

Generated from one table: every verb of :class:`retrieval.http.calls.Calls` becomes a method that
builds the :class:`~retrieval.http.wire.Call` and sends it; what a request carries and how its
answer decodes is the verb's entry in :mod:`retrieval.http.verbs`. The async client runs this same
backend in its worker threads (``retrieval.async_shell``): one trip to a thread per call.

Timeouts are per request (``timeout=``, seconds; chromadb's client has no such knob: its issue
#5805). Idempotent calls (reads, ``update``/``upsert``, ``modify``) are retried after a transport
failure (``retries=``, exponential backoff); any call is retried when the connection could not be
made at all, since nothing was sent.
"""

from __future__ import annotations

import functools
import http.client
import time
import urllib.parse
from typing import Any, Mapping

import httpx

from retrieval import telemetry
from retrieval.errors import ServerUnavailableError
from retrieval.http.calls import Calls
from retrieval.http.session import NotSent, Session
from retrieval.http.wire import API_PREFIX, Call, dumps, error_from_wire, loads

DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 2
_BACKOFF = 0.1  # seconds before the first retry; doubles each time


def base_url(host: str, port: int, ssl: bool) -> str:
    """``http://host:port`` (or the URL given as ``host``, as chromadb's client accepts)."""
    if host.startswith(("http://", "https://")):
        return host.rstrip("/")
    return f"{'https' if ssl else 'http'}://{host}:{int(port)}"


def _answer(response: Any) -> Any:
    """The decoded body of an httpx response or a Session answer, or the error it carries."""
    if response.status_code >= 400:
        try:
            body = loads(response.content)
        except ValueError:
            body = None
        raise error_from_wire(response.status_code, body, response.text)
    return loads(response.content) if response.content else None


# Transport failures of httpx (a given client or transport) and of our own Session (the default).
_TRANSPORT_ERRORS = (httpx.TransportError, OSError, http.client.HTTPException)
_UNSENT = (httpx.ConnectError, NotSent)  # no connection was made: nothing was sent
_TIMEOUTS = (httpx.TimeoutException, TimeoutError)


def _retry_delay(call: Call, error: Exception, attempt: int, retries: int, url: str) -> float:
    """Seconds to wait before retrying ``call`` after ``error``, or raise when it must not be retried."""
    unsent = isinstance(error, _UNSENT)
    if attempt < retries and (unsent or call.route.idempotent):
        return _BACKOFF * (2**attempt)
    if isinstance(error, _TIMEOUTS):
        raise ServerUnavailableError(
            f"{call.route.method} {call.path} timed out at {url}; raise timeout= when creating the client "
            "if the server is busy"
        ) from error
    raise ServerUnavailableError(
        f"could not reach a retrieval or Chroma server at {url} ({type(error).__name__}: {error}); is it running "
        "(`retrieval run --path DIR --port ...`)?"
    ) from error


class _HttpBase:
    """Where the server is, how to reach it, and the request builder."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8000,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        verify: Any = True,
        transport: Any = None,
        http_client: Any = None,
    ):
        self.url = base_url(str(host), port, ssl)
        self.retries = int(retries)
        self.calls = Calls()
        self._pre_flight: dict[str, Any] | None = None
        self._options = {
            "base_url": self.url,
            "headers": {"Content-Type": "application/json", **dict(headers or {})},
            "timeout": httpx.Timeout(timeout),
            "verify": verify if verify is not None else True,
        }
        if transport is not None:  # an httpx transport, e.g. httpx.MockTransport in tests
            self._options["transport"] = transport
        # A ready httpx client to send with instead, e.g. starlette's TestClient(app) for an
        # in-process server (requests then go to its base URL).
        self._given_client = http_client

    def _request(self, call: Call) -> dict[str, Any]:
        request = {
            "method": call.route.method,
            "url": urllib.parse.quote(API_PREFIX + call.path, safe="/"),
            "params": call.params,
            "content": None if call.body is None else dumps(call.body),
        }
        if telemetry.enabled():  # the server's request span joins this process's trace (traceparent)
            request["headers"] = telemetry.inject_context({})
        return request


def _sync_verb(verb: str):
    build = getattr(Calls, verb)

    @functools.wraps(build)
    def method(self: HttpBackend, *args: Any, **kwargs: Any) -> Any:
        return self._send(build(self.calls, *args, **kwargs))

    return method


VERBS = tuple(name for name in vars(Calls) if not name.startswith("_"))


class HttpBackend(_HttpBase):
    """The Backend protocol over HTTP, blocking (see the module docstring for ``timeout``/``retries``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self._given_client is not None:
            self._http: Any = self._given_client
        elif "transport" in self._options:  # an httpx transport (tests, proxies): send through httpx
            self._http = httpx.Client(**self._options)
        else:
            ssl_context = httpx.create_ssl_context(verify=self._options["verify"]) if self.url.startswith("https://") else None
            self._http = Session(self.url, self._options["headers"], self._options["timeout"].read, ssl_context)

    def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(**self._request(call))
                break
            except _TRANSPORT_ERRORS as error:
                time.sleep(_retry_delay(call, error, attempt, self.retries, self.url))
                attempt += 1
        answer = _answer(response)
        return self._send(call.then(answer)) if call.then is not None else call.decode(answer)

    def get_max_batch_size(self) -> int:
        if self._pre_flight is None:
            self._pre_flight = self.pre_flight_checks()
        return int(self._pre_flight.get("max_batch_size", -1))

    def close(self) -> None:
        self._http.close()


for _verb in VERBS:
    setattr(HttpBackend, _verb, _sync_verb(_verb))
del _verb
