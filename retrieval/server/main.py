"""``serve(config)``: open the persist directory, serve it with uvicorn, close it on shutdown."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading

from retrieval.errors import InvalidArgumentError
from retrieval.server.config import ServerConfig

logger = logging.getLogger("retrieval.server")


def check_exposure(config: ServerConfig, allow_unauthenticated: bool = False) -> None:
    """Refuse to serve beyond loopback without auth, unless the operator says so explicitly.

    Example:
        >>> check_exposure(ServerConfig(host="0.0.0.0"))
        Traceback (most recent call last):
        ...
        retrieval.errors.InvalidArgumentError: refusing to serve 0.0.0.0 without authentication: anyone who can reach it could read and delete every collection. Configure auth (auth.tokens in the server config, or RETRIEVAL_AUTH_TOKEN), bind 127.0.0.1, or pass --allow-unauthenticated
    """
    from retrieval.server.auth import Authenticator

    if allow_unauthenticated or _is_loopback(config.host):
        return
    if Authenticator.from_config(config.sections.get("auth")) is None:
        raise InvalidArgumentError(
            f"refusing to serve {config.host} without authentication: anyone who can reach it could read and "
            "delete every collection. Configure auth (auth.tokens in the server config, or RETRIEVAL_AUTH_TOKEN), "
            "bind 127.0.0.1, or pass --allow-unauthenticated"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def bind(host: str, port: int) -> socket.socket:
    """Bind the server's socket before anything opens the persist path, so a port in use writes nothing.

    Example:
        >>> taken = bind("127.0.0.1", 0); taken.listen()
        >>> bind("127.0.0.1", taken.getsockname()[1])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        retrieval.errors.InvalidArgumentError: cannot serve on 127.0.0.1:...: ...; pick another port with --port (or stop what holds it)
        >>> taken.close()
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise InvalidArgumentError(
            f"cannot serve on {host}:{port}: {exc}; pick another port with --port (or stop what holds it)"
        ) from None
    sock.set_inheritable(True)
    return sock


def _configure_logging(level: str) -> None:
    """Server logs to stderr; the access log (``retrieval.access``) as bare JSON lines."""
    numeric = logging.DEBUG if level == "trace" else getattr(logging, level.upper())
    # No format here names a thread or a process: not looking them up makes each access-log record
    # (one per request) a fifth cheaper to build (py-spy: LogRecord.__init__).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger("retrieval")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(numeric)
    access = logging.getLogger("retrieval.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False


# Seconds a shutdown may spend indexing and checkpointing a large backlog before it closes anyway
# (what is left replays from the oplog on the next start): inside Kubernetes' default 30 s grace.
SHUTDOWN_BUDGET_S = 20.0


def serve(config: ServerConfig, *, allow_unauthenticated: bool = False) -> None:
    """Open the persist directory, serve it until SIGTERM/SIGINT, then close it (checkpoint).

    Args:
        config: the server's settings.
        allow_unauthenticated: serve a non-loopback address without auth (refused otherwise).
    """
    import uvicorn

    from retrieval import telemetry
    from retrieval.server.app import create_app
    from retrieval.store.backend import open_embedded_backend

    check_exposure(config, allow_unauthenticated)
    sock = bind(config.host, config.port)
    _configure_logging(config.log_level)
    tracer_provider = telemetry.configure(config.sections.get("otel"))
    try:
        backend = open_embedded_backend(config.path, allow_reset=config.allow_reset)
    except BaseException:
        sock.close()
        raise
    closed = threading.Event()

    def close() -> None:
        if not closed.is_set():
            closed.set()
            backend.close(SHUTDOWN_BUDGET_S)
            logger.warning("retrieval run: closed %s", config.path)
            if tracer_provider is not None:
                tracer_provider.shutdown()  # flush the last spans to the collector

    host = f"[{config.host}]" if ":" in config.host else config.host
    # uvicorn names the address only when it binds the socket itself; here we did.
    logger.info("retrieval run: serving %s at http://%s:%d/ (Ctrl-C or SIGTERM to stop)", config.path, host, config.port)
    try:
        app = create_app(backend, config, on_shutdown=close)
        # uvicorn handles SIGTERM and SIGINT: stop accepting, finish in-flight requests, run the
        # lifespan shutdown (close above), then re-raise the signal.
        settings = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level, access_log=False)
        uvicorn.Server(settings).run(sockets=[sock])
    finally:
        sock.close()
        close()
