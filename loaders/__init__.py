"""Data loaders: turn URIs into data an embedding function can embed.

The built-ins (``image``, ``text``) are registered by name and imported on first use; add
your own with ``@loaders.register("name")``. ``loaders`` may import ``embedders``, never the
reverse.

Example:
    >>> import loaders
    >>> loader = loaders.build_loader("image", {"max_pixels": 10_000_000}, max_workers=4)
    >>> loader.get_config()
    {'max_pixels': 10000000}
    >>> loaders.data_loaders.names()
    ('image', 'text')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedders.errors import ConfigError, LoadError, UnknownNameError
from embedders.registry import Registry
from loaders.base import BaseDataLoader, DataLoader

if TYPE_CHECKING:
    from loaders.image import ImageLoader
    from loaders.text import TextLoader

__all__ = [
    "BaseDataLoader",
    "ConfigError",
    "DataLoader",
    "ImageLoader",
    "LoadError",
    "TextLoader",
    "UnknownNameError",
    "build_loader",
    "data_loaders",
    "get_loader_class",
    "register",
]

#: The registry of data loaders. Keys are what collection configs persist.
data_loaders: Registry[type] = Registry(
    "data loader",
    builtins={"image": "loaders.image:ImageLoader", "text": "loaders.text:TextLoader"},
    required=("__call__", "name", "get_config", "build_from_config"),
)

#: Class decorator: ``@loaders.register("my-loader")`` (or bare, using ``cls.name()``).
register = data_loaders.register


def get_loader_class(name: str) -> type:
    """The class registered as ``name``.

    Example:
        >>> get_loader_class("text").__name__
        'TextLoader'
    """
    return data_loaders.get(name)


def build_loader(name: str, config: dict[str, Any] | None = None, **runtime_options: Any) -> Any:
    """Build a registered data loader from a persisted config plus host options.

    Args:
        name: The registry name stored with the collection (``loader.name()``).
        config: The stored ``loader.get_config()``.
        **runtime_options: Host choices never persisted, e.g. ``max_workers=8``.

    Example:
        >>> build_loader("text", {"encoding": "utf-8"}).encoding
        'utf-8'
    """
    return data_loaders.build(name, config, **runtime_options)


_LAZY = {"ImageLoader": "loaders.image", "TextLoader": "loaders.text"}


def __getattr__(attr: str) -> Any:
    # Keep `import loaders` from importing Pillow; the classes load on first access.
    if attr in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[attr]), attr)
    raise AttributeError(f"module 'loaders' has no attribute {attr!r}")
