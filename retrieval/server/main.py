"""``serve(config)``: open the persist directory, serve it with uvicorn, close it on shutdown."""

from __future__ import annotations

import logging
import threading

from retrieval.server.config import ServerConfig

logger = logging.getLogger("retrieval.server")


def serve(config: ServerConfig) -> None:
    """Open the persist directory, serve it until SIGTERM/SIGINT, then close it (checkpoint)."""
    import uvicorn

    from retrieval.server.app import create_app
    from retrieval.store.backend import open_embedded_backend

    backend = open_embedded_backend(config.path, allow_reset=config.allow_reset)
    closed = threading.Event()

    def close() -> None:
        if not closed.is_set():
            closed.set()
            backend.close()
            logger.warning("retrieval run: closed %s (checkpointed)", config.path)

    try:
        app = create_app(backend, config, on_shutdown=close)
        # uvicorn handles SIGTERM and SIGINT: stop accepting, finish in-flight requests, run the
        # lifespan shutdown (close above), then re-raise the signal.
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, access_log=False)
    finally:
        close()
