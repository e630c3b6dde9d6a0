"""``TextLoader``: read a URI (any fsspec protocol) as text."""

from __future__ import annotations

import codecs
from typing import Any

from embedders.errors import ConfigError, LoadError
from loaders.base import BaseDataLoader
from loaders.fs import read_bytes

__all__ = ["TextLoader"]


class TextLoader(BaseDataLoader):
    """Load URIs as strings (the whole file, decoded).

    Args:
        encoding: Text encoding of the files.
        max_workers: Reader threads (host option, not persisted).

    Example:
        >>> import fsspec
        >>> with fsspec.open("memory://doc/hello.txt", "w") as f: _ = f.write("hello")
        >>> TextLoader()(["memory://doc/hello.txt", None])
        ['hello', None]
    """

    CONFIG_KEYS = ("encoding",)

    def __init__(self, encoding: str = "utf-8", max_workers: int | None = None) -> None:
        try:
            codecs.lookup(encoding)
        except (LookupError, TypeError) as exc:
            raise ConfigError(f"unknown text encoding {encoding!r} (e.g. 'utf-8', 'latin-1')") from exc
        self.encoding = encoding
        super().__init__(max_workers=max_workers)

    @staticmethod
    def name() -> str:
        return "text"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> TextLoader:
        """Rebuild from :meth:`get_config` output.

        Example:
            >>> TextLoader.build_from_config({"encoding": "latin-1"}).encoding
            'latin-1'
        """
        return TextLoader._from_config(config)

    def _load_one(self, uri: str) -> str:
        data = read_bytes(uri, what="text")
        try:
            return data.decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise LoadError(
                f"cannot decode {uri!r} as {self.encoding} text: {exc} (build the loader with "
                "the file's encoding, e.g. TextLoader(encoding='latin-1'))",
                uri=uri,
            ) from exc
