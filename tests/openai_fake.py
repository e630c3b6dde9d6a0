"""A fake OpenAI ``/embeddings`` endpoint on 127.0.0.1 (a thread; no network), for the tests of
``OpenAIEmbeddingFunction``: deterministic vectors, recorded requests, scripted failures."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

KEY = "sk-test-key-0001"


def vector(text: str, dim: int = 8) -> list[float]:
    """What the fake answers for ``text``: a unit vector from its blake2b digest."""
    raw = np.frombuffer(hashlib.blake2b(text.encode(), digest_size=4 * dim).digest(), dtype=np.uint32)
    v = raw.astype(np.float64) / 2**32 - 0.5
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


class FakeOpenAI:
    """``with FakeOpenAI() as fake:`` serves ``fake.url`` (``http://127.0.0.1:PORT/v1``).

    ``fail`` holds statuses to answer first, one per request (e.g. ``[503, 429]``); ``requests``
    records each request's path, headers and JSON body.
    """

    def __init__(self, key: str = KEY):
        self.key = key
        self.fail: list[int] = []
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                if fake.fail:
                    return self._send(fake.fail.pop(0), {"error": {"message": "try again"}}, {"Retry-After": "0"})
                if self.headers.get("Authorization") != f"Bearer {fake.key}" and self.headers.get("api-key") != fake.key:
                    return self._send(401, {"error": {"message": "Incorrect API key provided"}})
                if not self.path.split("?")[0].endswith("/embeddings"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                dim = body.get("dimensions", 8)
                data = [{"object": "embedding", "index": i, "embedding": vector(t, dim)} for i, t in enumerate(body["input"])]
                self._send(200, {"object": "list", "data": data[::-1], "model": body["model"]})  # any order

            def _send(self, status, payload, headers=None):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
