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
    "EmbeddingFunction": "embedders.base",
    "register_embedding_function": "embedders",
}
_RENAMED = {"ChromaBm25EmbeddingFunction": "BM25EmbeddingFunction", "register_embedding_function": "register"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; available: {__all__}")
    import importlib

    return getattr(importlib.import_module(_NAMES[name]), _RENAMED.get(name, name))
