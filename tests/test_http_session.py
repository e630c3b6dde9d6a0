"""The blocking client's connections (retrieval.http.session): kept and reused, never reused after
the server closed them, one per request in flight, and a clear error when nothing answers."""

from __future__ import annotations

import http.server
import json
import select
import threading
from contextlib import contextmanager

import pytest

import retrieval
from retrieval.http.session import MAX_IDLE, NotSent, Session
from retrieval.http.transport import HttpBackend
from tests.http_server import free_port


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every request with its method, path, headers and body; closes the connection after
    answering (without saying so, as a server's keep-alive timeout does) when the server says to."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.connections.add(self.client_address)  # type: ignore[attr-defined]
        payload = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                              "auth": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = self.server.close_after_answer  # type: ignore[attr-defined]

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@contextmanager
def echo_server(close_after_answer: bool = False):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    server.connections = set()  # type: ignore[attr-defined]
    server.close_after_answer = close_after_answer  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _session(server, **kwargs) -> Session:
    host, port = server.server_address[:2]
    return Session(kwargs.pop("base", f"http://{host}:{port}"), {"Authorization": "Bearer t"}, timeout=5, **kwargs)


def test_requests_reuse_one_kept_connection():
    with echo_server() as server:
        session = _session(server)
        answers = [json.loads(session.request("POST", "/api/v2/x", content=b'{"n": %d}' % i).content) for i in range(5)]
        session.close()
    assert [a["body"] for a in answers] == ['{"n": %d}' % i for i in range(5)]
    assert answers[0]["auth"] == "Bearer t"
    assert len(server.connections) == 1


def test_a_connection_the_server_closed_is_not_reused():
    """The next request (even one that must not be sent twice) goes out on a new connection,
    instead of failing on the closed one."""
    with echo_server(close_after_answer=True) as server:
        session = _session(server)
        first = session.request("POST", "/add", content=b"1")
        kept = session._idle[0].sock  # noqa: SLF001 - wait until the server's close reaches the kept connection
        assert select.select([kept], [], [], 5)[0]
        second = session.request("POST", "/add", content=b"2")
        session.close()
    assert (first.status_code, second.status_code) == (200, 200)
    assert json.loads(second.content)["body"] == "2"
    assert len(server.connections) == 2


def test_threads_each_get_their_own_connection_and_their_own_answer():
    with echo_server() as server:
        session = _session(server)
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(20):
                    body = f"{n}-{i}"
                    assert json.loads(session.request("POST", "/q", content=body.encode()).content)["body"] == body
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        kept = len(session._idle)  # noqa: SLF001 - what the pool kept
        session.close()
    assert not errors
    assert 1 <= len(server.connections) <= 8 and kept <= min(8, MAX_IDLE)


def test_a_base_url_path_prefixes_every_request_and_params_are_encoded():
    with echo_server() as server:
        host, port = server.server_address[:2]
        session = _session(server, base=f"http://{host}:{port}/chroma/")
        answer = json.loads(session.request("GET", "/api/v2/heartbeat", params={"limit": 2, "name": "a b"}).content)
        session.close()
    assert answer["path"] == "/chroma/api/v2/heartbeat?limit=2&name=a+b"


def test_nothing_listening_is_not_sent_and_the_client_says_how_to_fix_it(monkeypatch):
    monkeypatch.setattr("retrieval.http.transport._BACKOFF", 0.0)
    port = free_port()  # nothing listens there
    with pytest.raises(NotSent, match="ConnectionRefusedError"):
        Session(f"http://127.0.0.1:{port}", {}, timeout=2).request("GET", "/")
    with pytest.raises(retrieval.ServerUnavailableError, match=rf"127\.0\.0\.1:{port}.*is it running"):
        HttpBackend("127.0.0.1", port, timeout=2, retries=1).heartbeat()


def test_a_session_dropped_without_close_closes_its_connections_quietly():
    """A client the program forgets to close must not leave sockets open (nor warn about them)."""
    import gc
    import warnings

    with echo_server() as server:
        session = _session(server)
        session.request("GET", "/x")
        sock = session._idle[0].sock
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del session
            gc.collect()
    assert sock.fileno() == -1  # closed
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
