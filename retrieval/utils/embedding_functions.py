"""chromadb's ``chromadb.utils.embedding_functions`` names, served by the ``embedders`` registry.

Attributes resolve lazily, so importing this module does not import torch.

Example:
    >>> from retrieval.utils import embedding_functions
    >>> embedding_functions.HashEmbeddingFunction(dim=8).name()
    'hash'
"""

from __future__ import annotations

from typing import Any

_NAMES = {
    "DefaultEmbeddingFunction": "embedders.sentence_transformer",
    "SentenceTransformerEmbeddingFunction": "embedders.sentence_transformer",
    "OpenCLIPEmbeddingFunction": "embedders.open_clip",
    "HashEmbeddingFunction": "embedders.hashing",
    "BM25EmbeddingFunction": "embedders.bm25",
    "ChromaBm25EmbeddingFunction": "embedders.bm25",
    "OpenAIEmbeddingFunction": "embedders.openai",
    "EmbeddingFunction": "embedders.base",
}
_RENAMED = {"ChromaBm25EmbeddingFunction": "BM25EmbeddingFunction"}

__all__ = sorted([*_NAMES, "register_embedding_function"])


def register_embedding_function(ef_class: Any = None) -> Any:
    """chromadb's decorator: register a custom embedding function so collections persist it.

    The class is registered under its static ``name()``; a collection created with an instance
    stores that name and ``get_config()``, and reopening it (in any process that registered the
    class) rebuilds the function with ``build_from_config``. As in chromadb, registering the same
    name again replaces the earlier class (a re-run notebook cell); a built-in cannot be replaced.

    Args:
        ef_class: The class; omit it to use the function as a decorator factory.

    Example:
        >>> import numpy as np
        >>> from retrieval.api.types import EmbeddingFunction
        >>> @register_embedding_function
        ... class Ones(EmbeddingFunction):
        ...     def __call__(self, input):
        ...         return [np.ones(2, np.float32) for _ in input]
        ...     @staticmethod
        ...     def name():
        ...         return "ones"
        ...     def get_config(self):
        ...         return {}
        ...     @staticmethod
        ...     def build_from_config(config):
        ...         return Ones()
        >>> import embedders
        >>> embedders.get_embedding_function_class("ones") is Ones
        True
        >>> embedders.embedding_functions.unregister("ones")  # leave the registry as found
    """

    def _register(cls: Any) -> Any:
        import embedders
        from retrieval.errors import InvalidArgumentError

        name_fn = getattr(cls, "name", None)
        try:
            name = name_fn() if callable(name_fn) else None
        except Exception as exc:  # noqa: BLE001 - e.g. name() defined as an instance method
            raise InvalidArgumentError(
                f"cannot register {getattr(cls, '__qualname__', cls)!r}: its name() must be a staticmethod "
                f"returning a string ({exc})"
            ) from exc
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(
                f"cannot register {getattr(cls, '__qualname__', cls)!r}: name() returned {name!r}; define "
                "@staticmethod def name() -> str returning a unique name"
            )
        existing = embedders.embedding_functions.entries.get(name)
        if existing is not None and existing is not cls:
            module = existing.__module__ if isinstance(existing, type) else existing[0]
            if module.startswith("embedders."):
                raise InvalidArgumentError(
                    f"{name!r} is a built-in embedding function and cannot be replaced by {cls.__qualname__}; "
                    "return another name from name()"
                )
        return embedders.embedding_functions.add(name, cls, clobber=True)

    if ef_class is not None:
        return _register(ef_class)
    return _register


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; available: {__all__}")
    import importlib

    return getattr(importlib.import_module(_NAMES[name]), _RENAMED.get(name, name))
