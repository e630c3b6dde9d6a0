"""retrieval: a local-first multimodal vector store with the ChromaDB Python API.

Example:
    >>> import retrieval
    >>> client = retrieval.EphemeralClient()
    >>> col = client.create_collection("demo", embedding_function=None)
    >>> col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    >>> col.query(query_embeddings=[[0.9, 0.1]], n_results=1)["ids"]
    [['a']]

Heavy dependencies (torch, open_clip) load lazily: importing this package does not import them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from retrieval.client import AdminClient, Client, EphemeralClient, PersistentClient
from retrieval.collection import Collection
from retrieval.http.clients import AsyncHttpClient, HttpClient
from retrieval.errors import (
    ConfigurationConflictError,
    DimensionMismatchError,
    DuplicateIDError,
    InternalError,
    InvalidArgumentError,
    NotAllowedError,
    NotFoundError,
    PersistPathLockedError,
    RetrievalError,
    ServerUnavailableError,
    UniqueConstraintError,
)
from retrieval.search import GroupBy, K, Key, Knn, Limit, MaxK, MinK, Rank, Rrf, Search, SearchResult, Select, Val
from retrieval.settings import Settings
from retrieval.types import GetResult, QueryResult

# chromadb's top-level type names and Schema classes (``from chromadb import Documents, Schema, ...``).
from retrieval.api.types import (  # noqa: E402
    BoolInvertedIndexConfig,
    CollectionMetadata,
    Documents,
    EmbeddingFunction,
    Embeddings,
    FloatInvertedIndexConfig,
    FtsIndexConfig,
    HnswIndexConfig,
    IDs,
    Images,
    Include,
    IntInvertedIndexConfig,
    Metadata,
    Metadatas,
    Schema,
    SpannIndexConfig,
    SparseEmbeddingFunction,
    SparseVector,
    SparseVectorIndexConfig,
    SparseVectors,
    StringInvertedIndexConfig,
    UpdateMetadata,
    URIs,
    VectorIndexConfig,
    Where,
    WhereDocument,
)

_CHROMADB_TYPES = [
    "BoolInvertedIndexConfig", "CollectionMetadata", "Documents", "EmbeddingFunction", "Embeddings",
    "FloatInvertedIndexConfig", "FtsIndexConfig", "HnswIndexConfig", "IDs", "Images", "Include",
    "IntInvertedIndexConfig", "Metadata", "Metadatas", "Schema", "SpannIndexConfig", "SparseEmbeddingFunction",
    "SparseVector", "SparseVectorIndexConfig", "SparseVectors", "StringInvertedIndexConfig", "UpdateMetadata",
    "URIs", "VectorIndexConfig", "Where", "WhereDocument",
]

__all__ = [
    *_CHROMADB_TYPES,
    "AdminClient",
    "AsyncHttpClient",
    "Client",
    "Collection",
    "ConfigurationConflictError",
    "DimensionMismatchError",
    "DuplicateIDError",
    "EphemeralClient",
    "GetResult",
    "HttpClient",
    "InternalError",
    "InvalidArgumentError",
    "NotAllowedError",
    "NotFoundError",
    "PersistPathLockedError",
    "PersistentClient",
    "QueryResult",
    "GroupBy",
    "K",
    "Key",
    "Knn",
    "Limit",
    "MaxK",
    "MinK",
    "Rank",
    "Rrf",
    "Search",
    "SearchResult",
    "Select",
    "Val",
    "RetrievalError",
    "ServerUnavailableError",
    "Settings",
    "UniqueConstraintError",
    "__version__",
]
