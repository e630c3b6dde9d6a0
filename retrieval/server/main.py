"""``serve(config)``: open the persist directory, serve it with uvicorn, close it on shutdown."""

from __future__ import annotations

from retrieval.server.config import ServerConfig


def serve(config: ServerConfig) -> None:
    """Open the persist directory, serve it until SIGTERM/SIGINT, then close it (checkpoint)."""
    import uvicorn

    from retrieval.server.app import create_app
    from retrieval.store.backend import open_embedded_backend

    backend = open_embedded_backend(config.path, allow_reset=config.allow_reset)
    try:
        app = create_app(backend, config)
        # uvicorn handles SIGTERM and SIGINT: stop accepting, finish in-flight requests, return.
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, access_log=False)
    finally:
        backend.close()
