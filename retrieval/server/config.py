"""``retrieval run``: the server's settings (``--config server.yaml``) and its main loop.

Example config (YAML, or the same keys in JSON)::

    path: ./data          # the persist directory (``--path`` wins)
    host: 127.0.0.1
    port: 8000
    allow_reset: false    # ALLOW_RESET=TRUE in the environment also allows it, as in chromadb
    ui: {...}             # the web page's switches (retrieval.server.ui_config)

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
from retrieval.server.ui_config import UiConfig

_KEYS = ("path", "host", "port", "allow_reset", "log_level", "ui")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one server.

    Args:
        path: the persist directory served.
        host, port: where to listen (loopback by default).
        allow_reset: whether ``POST /api/v2/reset`` may delete everything.
        log_level: uvicorn's log level.
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
    sections: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, environ: Mapping[str, str] | None = None) -> ServerConfig:
        data = dict(data or {})
        environ = os.environ if environ is None else environ
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
        return cls(
            path=str(data.get("path", "./.chroma")),
            host=str(data.get("host", "127.0.0.1")),
            port=port,
            allow_reset=allow_reset or _truthy(environ.get("ALLOW_RESET")),
            log_level=str(data.get("log_level", "info")),
            sections={k: data[k] for k in ("ui",) if k in data},
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
        merged = dict(data or {})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(merged)

