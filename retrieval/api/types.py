"""chromadb's ``chromadb.api.types`` names, so chromadb code imports them unchanged.

The type aliases match chromadb's; ``EmbeddingFunction`` is the protocol every built-in
implements and also a base class for custom functions, as chromadb's is.

Example:
    >>> import numpy as np
    >>> from retrieval.api.types import Documents, EmbeddingFunction, Embeddings
    >>> class Lengths(EmbeddingFunction[Documents]):
    ...     def __call__(self, input: Documents) -> Embeddings:
    ...         return [np.array([len(t), 1.0], np.float32) for t in input]
    >>> Lengths().default_space()
    'l2'
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Mapping, Optional, Protocol, TypeVar, Union, runtime_checkable

import numpy as np

from embedders.base import EmbeddingFunction
from embedders.sparse import SparseVector
from retrieval.schema import (
    DOCUMENT_KEY,
    EMBEDDING_KEY,
    BoolInvertedIndexConfig,
    FloatInvertedIndexConfig,
    FtsIndexConfig,
    HnswIndexConfig,
    IntInvertedIndexConfig,
    Schema,
    SpannIndexConfig,
    SparseVectorIndexConfig,
    StringInvertedIndexConfig,
    VectorIndexConfig,
)
from retrieval.types import GetResult, QueryResult

__all__ = [
    "BoolInvertedIndexConfig", "CollectionMetadata", "DOCUMENT_KEY", "Document", "Documents", "EMBEDDING_KEY",
    "Embeddable", "Embedding", "EmbeddingFunction", "Embeddings", "FloatInvertedIndexConfig", "FtsIndexConfig",
    "GetResult", "HnswIndexConfig", "ID", "IDs", "Image", "Images", "Include", "IntInvertedIndexConfig",
    "Loadable", "Metadata", "Metadatas", "OneOrMany", "QueryResult", "Schema", "Space", "SpannIndexConfig",
    "SparseEmbeddingFunction", "SparseVector", "SparseVectorIndexConfig", "SparseVectors",
    "StringInvertedIndexConfig", "UpdateCollectionMetadata", "UpdateMetadata", "URI", "URIs",
    "VectorIndexConfig", "Where", "WhereDocument",
]

T = TypeVar("T")
OneOrMany = Union[T, List[T]]

ID = str
IDs = List[ID]
URI = str
URIs = List[URI]
Document = str
Documents = List[Document]
Image = np.ndarray
Images = List[Image]
Embeddable = Union[Documents, Images]
Loadable = List[Optional[Image]]
Embedding = np.ndarray
Embeddings = List[Embedding]
SparseVectors = List[SparseVector]

MetadataValue = Union[str, int, float, bool, None, List[Any], SparseVector]
Metadata = Mapping[str, MetadataValue]
Metadatas = List[Metadata]
UpdateMetadata = Mapping[str, MetadataValue]
CollectionMetadata = Dict[str, Any]
UpdateCollectionMetadata = CollectionMetadata
Where = Dict[str, Any]
WhereDocument = Dict[str, Any]
Include = List[Literal["documents", "embeddings", "metadatas", "distances", "uris", "data"]]
Space = Literal["cosine", "l2", "ip"]

D = TypeVar("D", contravariant=True)


@runtime_checkable
class SparseEmbeddingFunction(Protocol[D]):
    """chromadb's protocol for sparse embedding functions (e.g. ``ChromaBm25EmbeddingFunction``)."""

    def __call__(self, input: D) -> SparseVectors: ...

    def embed_query(self, input: D) -> SparseVectors:  # noqa: A002 - chromadb's parameter name
        return self(input)

    @staticmethod
    def name() -> str:
        return NotImplemented

    def get_config(self) -> Dict[str, Any]:
        return NotImplemented

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> SparseEmbeddingFunction:
        return NotImplemented


def __getattr__(name: str) -> Any:
    # chromadb.api.types also exposes DefaultEmbeddingFunction; loading it lazily keeps imports light.
    if name == "DefaultEmbeddingFunction":
        from embedders.sentence_transformer import DefaultEmbeddingFunction

        return DefaultEmbeddingFunction
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
