"""``Session``: the blocking client's requests, over keep-alive connections of ``http.client``.

The standard library's ``http.client`` does the HTTP/1.1 framing; this adds what a client shared
by threads needs (the async client runs the blocking backend in worker threads): one connection
per request in flight, idle ones kept for the next request, a kept connection checked for a close
by the server before it is reused (as urllib3 does), TLS, and one timeout for connect and each read.

Why not httpcore's pool (what httpx itself sends with): against ``retrieval run`` on this machine
(20k x 512, single queries, the two clients interleaved), this costs 0.18 ms less per query, where
the whole query costs ~1.1 ms; urllib3's pool costs about what httpcore's does.
(``python bench/http_compare.py --settle 5`` reports the overhead over an in-process query.)
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import urllib.parse
import weakref
from typing import Any, Mapping

MAX_IDLE = 20  # connections kept for reuse; more in flight at once are closed after their request


class NotSent(ConnectionError):
    """No connection to the server could be made: nothing was sent, so any call may be retried."""


class Answer:
    """What the client reads of a response: its status and body."""

    __slots__ = ("status_code", "content")

    def __init__(self, status_code: int, content: bytes):
        self.status_code, self.content = status_code, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Session:
    """Requests to one server (``base_url``), each with ``headers`` added, from any thread.

    Args:
        base_url: ``http://host:port`` or ``https://host:port``, with a path when the server is
            behind a proxy there; request URLs are paths below it.
        headers: sent with every request (content type, credentials).
        timeout: seconds for the connection and for each read of the answer; None waits forever.
        ssl_context: how to verify the server (``https`` only).
    """

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float | None,
                 ssl_context: ssl.SSLContext | None = None):
        parts = urllib.parse.urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")  # a server behind a proxy at https://host/chroma
        self._headers = dict(headers)
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        # A client dropped without close() still closes its kept connections, quietly (no
        # "unclosed socket" ResourceWarning); the finalizer holds the list, not the session.
        weakref.finalize(self, _close_all, self._idle)

    def request(self, method: str, url: str, params: Mapping[str, Any] | None = None, content: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Answer:
        """Send one request and read its whole answer.

        Raises:
            NotSent: no connection could be made.
            OSError, http.client.HTTPException: the connection failed or timed out after the
                request may have been sent.
        """
        url = self._prefix + url
        if params:
            url += "?" + urllib.parse.urlencode(params)
        connection = self._connection()
        try:
            connection.request(method, url, body=content, headers={**self._headers, **headers} if headers else self._headers)
            response = connection.getresponse()
            answer = Answer(response.status, response.read())
        except BaseException:
            connection.close()  # its state is unknown: never reused
            raise
        self._release(connection, keep=not response.will_close)
        return answer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = self._idle[:]
            self._idle.clear()
        _close_all(idle)

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not _closed_by_server(connection):
                    return connection
                connection.close()
        return self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._ssl_context)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            connection.connect()
        except OSError as error:
            connection.close()
            raise NotSent(f"{type(error).__name__}: {error}") from error
        # Requests are written in two parts (head, then body): without this, the body would wait
        # for the server to acknowledge the head.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _release(self, connection: http.client.HTTPConnection, keep: bool) -> None:
        with self._lock:
            if keep and not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()


def _close_all(connections: list[http.client.HTTPConnection]) -> None:
    for connection in connections:
        connection.close()


def _closed_by_server(connection: http.client.HTTPConnection) -> bool:
    """Whether a kept connection can no longer be used: an idle connection has nothing to read
    unless the server closed it (its keep-alive timeout) or broke the protocol."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):  # select() cannot watch descriptors past 1024
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed under us
        return True


__all__ = ["Answer", "NotSent", "Session"]
