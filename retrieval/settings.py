"""``Settings``: chromadb-compatible client settings.

Unknown chromadb settings (server, telemetry and auth knobs this embedded engine has no use for)
are accepted and kept, so ``Settings(...)`` written for chromadb constructs unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from retrieval.errors import InvalidArgumentError

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(init=False)
class Settings:
    """Client settings.

    Args:
        is_persistent: store data on disk under ``persist_directory``.
        persist_directory: where a persistent client keeps its data.
        allow_reset: allow ``client.reset()``, which deletes everything.
        anonymized_telemetry: accepted for compatibility; retrieval sends no telemetry.
        sqlite_synchronous: SQLite's ``synchronous`` pragma. ``FULL`` (default) makes every
            acknowledged write survive power loss; ``NORMAL`` survives process crashes only.

    Example:
        >>> Settings(allow_reset=True).allow_reset
        True
    """

    is_persistent: bool = False
    persist_directory: str = "./.chroma"
    allow_reset: bool = False
    anonymized_telemetry: bool = False
    sqlite_synchronous: str = "FULL"
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        is_persistent: bool = False,
        persist_directory: str = "./.chroma",
        allow_reset: bool = False,
        anonymized_telemetry: bool = False,
        sqlite_synchronous: str = "FULL",
        **extra: Any,
    ):
        if str(sqlite_synchronous).upper() not in _SYNCHRONOUS:
            raise InvalidArgumentError(
                f"sqlite_synchronous {sqlite_synchronous!r} is not one of {list(_SYNCHRONOUS)}"
            )
        self.is_persistent = bool(is_persistent)
        self.persist_directory = str(persist_directory)
        self.allow_reset = bool(allow_reset)
        self.anonymized_telemetry = bool(anonymized_telemetry)
        self.sqlite_synchronous = str(sqlite_synchronous).upper()
        self.extra = dict(extra)

    def copy(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        values.update(changes)
        return Settings(**values, **self.extra)

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)
