"""Servers for the HTTP tests: an in-process app (fast) and a real ``retrieval run`` subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

import retrieval
from retrieval.http.transport import HttpBackend
from retrieval.server.app import create_app
from retrieval.store.backend import open_embedded_backend


@contextmanager
def in_process_client(persist_directory: str | None = None, *, allow_reset: bool = False, **client_kwargs):
    """A ``retrieval.Client`` over HTTP to an in-process server (starlette's TestClient: no socket)."""
    from starlette.testclient import TestClient

    backend = open_embedded_backend(persist_directory, allow_reset=allow_reset)
    try:
        with TestClient(create_app(backend)) as http:
            client = retrieval.Client(backend=HttpBackend("testserver", 80, http_client=http), **client_kwargs)
            try:
                yield client
            finally:
                client.close()
    finally:
        backend.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """``retrieval run`` in a subprocess on 127.0.0.1; stopped by PID with SIGTERM."""

    def __init__(self, path: Path, *, env: dict | None = None, config: Path | None = None, program: list | None = None):
        """``program`` replaces ``python -m retrieval.cli`` (e.g. chromadb's ``chroma`` executable)."""
        self.port = free_port()
        self.path = path
        args = (program or [sys.executable, "-m", "retrieval.cli"]) + [
            "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(self.port)
        ]
        if config is not None:
            args += ["--config", str(config)]
        self.log = path.parent / f"server-{self.port}.log"
        self._log = open(self.log, "wb")
        self.process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"retrieval run exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"retrieval run did not answer within 60 s: {self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for the exit; returns 0 after a clean shutdown (uvicorn re-raises SIGTERM
        once it has shut down, so the raw status is -SIGTERM) that closed the path."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        code = self.process.returncode
        if code == -signal.SIGTERM and "retrieval run: closed" in self.log.read_text():
            return 0
        return code
