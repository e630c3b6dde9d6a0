"""``retrieval run``: the server's settings (``--config server.yaml``) and its main loop.

Example config (YAML, or the same keys in JSON)::

    path: ./data          # the persist directory (``--path`` wins)
    host: 127.0.0.1
    port: 8000
    allow_reset: false    # ALLOW_RESET=TRUE in the environment also allows it, as in chromadb
    log_level: info       # info logs one JSON access line per request (retrieval.access)
    auth:                 # tokens and users with scopes (retrieval.server.auth); off when absent
      tokens: [{name: admin, token_env: ADMIN_TOKEN, tenant: "*", databases: ["*"], actions: [read, write, admin]}]
    max_body_bytes: 67108864   # 413 above this (64 MiB by default; retrieval.server.limits)
    max_batch_size: 5000       # records per write; advertised in the pre-flight checks
    max_n_results: 10000
    request_timeout_s: 60      # a body must arrive within this; read calls must finish within it
    cors_origins: []           # e.g. ["https://app.example.com"]
    otel: {endpoint: "http://localhost:4318", service_name: retrieval}   # traces over OTLP/HTTP
    ui: {...}             # the web page's switches (retrieval.server.ui_config)

Every scalar key can also come from the environment as ``RETRIEVAL_<KEY>`` (``RETRIEVAL_PORT=9000``,
``RETRIEVAL_MAX_BODY_BYTES=...``): command-line flags win over the environment, which wins over the
file. Unknown keys are an error naming the closest known one.

The server owns its path: it holds the persist directory's lock, serves any number of clients,
threads and processes, and on SIGTERM or Ctrl-C stops accepting requests, finishes the ones in
flight and closes the engine (a checkpoint), so a restart opens without replay.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from retrieval.errors import InvalidArgumentError
from retrieval.server.limits import Limits
from retrieval.server.ui_config import UiConfig

_SCALARS = ("path", "host", "port", "allow_reset", "log_level", "cors_origins", *Limits.KEYS)
_KEYS = (*_SCALARS, "auth", "otel", "ui")
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one server.

    Args:
        path: the persist directory served.
        host, port: where to listen (loopback by default).
        allow_reset: whether ``POST /api/v2/reset`` may delete everything.
        log_level: the server's log level (``info`` includes the access log).
        limits: per-request limits (``max_body_bytes``, ``max_batch_size``, ``max_n_results``,
            ``request_timeout_s``).
        cors_origins: origins a browser may call the API from (none by default).
        sections: other sections of the config file, by name (e.g. ``ui``), for the parts of the
            server that read them.

    Example:
        >>> ServerConfig.from_dict({"allow_reset": True}, environ={}).allow_reset
        True
        >>> ServerConfig.from_dict({}, environ={"ALLOW_RESET": "TRUE"}).allow_reset
        True
    """

    path: str = "./.chroma"
    host: str = "127.0.0.1"
    port: int = 8000
    allow_reset: bool = False
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    cors_origins: tuple[str, ...] = ()
    sections: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any] | None,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> ServerConfig:
        """Settings from a config mapping, then ``RETRIEVAL_<KEY>`` variables, then ``overrides``
        (command-line flags; None values ignored), each winning over the one before."""
        environ = os.environ if environ is None else environ
        data = {**dict(data or {}), **_from_environ(environ)}
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], _KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys are {list(_KEYS)}"
            raise InvalidArgumentError(f"unknown server config key {unknown[0]!r}{hint}")
        port = data.get("port", 8000)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise InvalidArgumentError(f"server config port must be an integer 0-65535; got {port!r}")
        allow_reset = data.get("allow_reset", False)
        if not isinstance(allow_reset, bool):
            raise InvalidArgumentError(f"server config allow_reset must be true or false; got {allow_reset!r}")
        # A bad 'ui' section fails here, before the persist directory is opened (the app parses it again).
        UiConfig.from_dict(data.get("ui"))
        # So do bad credentials (a missing token variable) and a bad otel section.
        from retrieval import telemetry
        from retrieval.server.auth import Authenticator

        Authenticator.from_config(data.get("auth"), environ)
        telemetry.wanted(data.get("otel"), environ)
        log_level = str(data.get("log_level", "info")).lower()
        if log_level not in _LOG_LEVELS:
            raise InvalidArgumentError(f"server config log_level must be one of {list(_LOG_LEVELS)}; got {log_level!r}")
        origins = data.get("cors_origins") or []
        if isinstance(origins, str):
            origins = [o.strip() for o in origins.split(",") if o.strip()]
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise InvalidArgumentError(f"server config cors_origins must be a list of origins; got {origins!r}")
        return cls(
            path=str(data.get("path", "./.chroma")),
            host=str(data.get("host", "127.0.0.1")),
            port=port,
            allow_reset=allow_reset or _truthy(environ.get("ALLOW_RESET")),
            log_level=log_level,
            limits=Limits.from_dict(data),
            cors_origins=tuple(origins),
            sections={k: data[k] for k in ("ui", "auth", "otel") if k in data},
        )

    @classmethod
    def from_file(cls, config_file: str | os.PathLike, **overrides: Any) -> ServerConfig:
        """Read a YAML (or JSON) config file; ``overrides`` (command-line flags) win."""
        path = config_file
        text = Path(path).read_text(encoding="utf-8")
        try:
            import yaml

            data = yaml.safe_load(text)
        except ImportError:  # pragma: no cover - pyyaml is a dependency
            import json

            data = json.loads(text)
        except Exception as e:
            raise InvalidArgumentError(f"server config {str(path)!r} is not valid YAML: {e}") from e
        if data is not None and not isinstance(data, Mapping):
            raise InvalidArgumentError(f"server config {str(path)!r} must be a mapping of keys; got {type(data).__name__}")
        return cls.from_dict(data, overrides=overrides)


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """``RETRIEVAL_<KEY>`` variables for the scalar keys, parsed as YAML scalars (``9000``, ``true``)."""
    out: dict[str, Any] = {}
    for key in _SCALARS:  # cors_origins: comma-separated
        raw = environ.get(f"RETRIEVAL_{key.upper()}")
        if raw is None or raw == "":
            continue
        if key in ("path", "host", "log_level", "cors_origins"):
            out[key] = raw
            continue
        try:
            import yaml

            out[key] = yaml.safe_load(raw)
        except Exception as e:
            raise InvalidArgumentError(f"environment variable RETRIEVAL_{key.upper()}={raw!r} is not a valid value: {e}") from e
    return out

