"""chromadb's ``chromadb.utils.data_loaders`` names, served by the ``loaders`` registry.

Example:
    >>> from retrieval.utils.data_loaders import ImageLoader
    >>> ImageLoader().name()
    'image'
"""

from __future__ import annotations

from loaders import ImageLoader, TextLoader

__all__ = ["ImageLoader", "TextLoader"]
