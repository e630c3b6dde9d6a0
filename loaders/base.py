"""The ``DataLoader`` protocol and the base class the built-in loaders share.

A data loader turns URIs into data an embedding function can take. Like embedding
functions, loaders persist as ``{"name": ..., "config": ...}`` with the collection, so a
reopened collection reads URIs the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from embedders.base import parse_config
from embedders.errors import ConfigError, LoadError

__all__ = ["BaseDataLoader", "DataLoader"]

T = TypeVar("T")


@runtime_checkable
class DataLoader(Protocol):
    """What ``retrieval`` needs from a data loader (chromadb's protocol, plus persistence).

    ``__call__`` returns one item per URI, ``None`` where the URI itself is ``None``.

    Example:
        >>> from loaders import ImageLoader
        >>> isinstance(ImageLoader(), DataLoader)
        True
    """

    def __call__(self, uris: Sequence[str | None]) -> list[Any]: ...

    @staticmethod
    def name() -> str: ...

    def get_config(self) -> dict[str, Any]: ...

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> DataLoader: ...


class BaseDataLoader:
    """Config handling, runtime options and a threaded map shared by the built-in loaders.

    Subclasses set ``CONFIG_KEYS``/``RUNTIME_OPTIONS`` and implement ``_load_one(uri)``.

    Args:
        max_workers: Threads used to read and decode URIs in parallel (a host option, never
            persisted); ``None`` means Python's default for I/O-bound pools.
    """

    CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()
    RUNTIME_OPTIONS: ClassVar[tuple[str, ...]] = ("max_workers",)

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers
        self._check_workers()

    @staticmethod
    def name() -> str:
        raise NotImplementedError

    def __call__(self, uris: Sequence[str | None]) -> list[Any]:
        if isinstance(uris, str):
            uris = [uris]
        uris = list(uris)
        for i, uri in enumerate(uris):
            if uri is not None and not isinstance(uri, str):
                raise LoadError(
                    f"URI at position {i} is a {type(uri).__name__} ({uri!r}); URIs are strings"
                )
        return _thread_map(self._load_or_none, uris, self.max_workers)

    def get_config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.CONFIG_KEYS}

    def set_runtime_options(self, **options: Any) -> None:
        """Apply host-specific options (``max_workers``); they are never persisted.

        Example:
            >>> from loaders import TextLoader
            >>> TextLoader().set_runtime_options(max_workers=2)
        """
        for key in options:
            if key not in self.RUNTIME_OPTIONS:
                raise ConfigError(
                    f"{self.name()!r} takes no runtime option {key!r}; accepted: {list(self.RUNTIME_OPTIONS)}"
                )
        for key, value in options.items():
            setattr(self, key, value)
        self._check_workers()

    @classmethod
    def _from_config(cls, config: Mapping[str, Any]) -> Any:
        return cls(**parse_config(cls, config))

    def _load_or_none(self, uri: str | None) -> Any:
        return None if uri is None else self._load_one(uri)

    def _load_one(self, uri: str) -> Any:
        raise NotImplementedError

    def _check_workers(self) -> None:
        w = self.max_workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ConfigError(f"max_workers must be a positive integer or None; got {w!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _thread_map(fn: Callable[[Any], T], items: list[Any], max_workers: int | None) -> list[T]:
    if len(items) <= 1 or max_workers == 1:
        return [fn(item) for item in items]
    workers = min(len(items), max_workers or min(32, (os.cpu_count() or 1) + 4))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loader") as pool:
        # map() yields in input order and re-raises the first failure in that order.
        return list(pool.map(fn, items))
