"""Typed values passed between the public API and the storage engine.

The public API validates and normalises user input into these once; the engine never sees raw
user arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, TypedDict

import numpy as np

if TYPE_CHECKING:
    from retrieval.config import CollectionConfig
    from retrieval.query.filters import Where, WhereDocument

Metadata = Dict[str, Any]

INCLUDE_GET = ("documents", "embeddings", "metadatas", "uris", "data")
INCLUDE_QUERY = INCLUDE_GET + ("distances",)
DEFAULT_INCLUDE_GET = ("documents", "metadatas")
DEFAULT_INCLUDE_QUERY = ("documents", "metadatas", "distances")


@dataclass(frozen=True)
class RecordBatch:
    """Validated records for one write call, immutable: what was validated is what is written.

    ``embeddings`` is an (n, d) float32 array or None (update that keeps vectors). For the other
    columns, ``None`` as the whole column means "not given" (kept on update); a ``None`` entry
    means "this record has none" (and clears it on update). Columns are stored as tuples, the
    vectors as a read-only view (the caller's own array stays writable) and ``sparse`` as a
    read-only mapping of tuples.
    """

    ids: Sequence[str]
    embeddings: np.ndarray | None = None
    metadatas: Sequence[Metadata | None] | None = None
    documents: Sequence[str | None] | None = None
    uris: Sequence[str | None] | None = None
    # Sparse vectors keyed by metadata key (hybrid search), one entry per record or None.
    sparse: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        freeze = object.__setattr__
        for name in ("ids", "metadatas", "documents", "uris"):
            column = getattr(self, name)
            if column is not None and not isinstance(column, tuple):
                freeze(self, name, tuple(column))
        if self.embeddings is not None and self.embeddings.flags.writeable:
            view = self.embeddings.view()
            view.flags.writeable = False
            freeze(self, "embeddings", view)
        freeze(self, "sparse", MappingProxyType({key: tuple(column) for key, column in self.sparse.items()}))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class CollectionRecord:
    """What the engine knows about a collection.

    ``config`` is typed: it is parsed once where a record enters (a SQLite row in the engine, a
    JSON body in the HTTP client) and encoded once where it leaves; nothing across the Backend
    seam reads configuration JSON.
    """

    id: str
    name: str
    tenant: str
    database: str
    config: CollectionConfig
    metadata: Metadata | None
    dimension: int | None


class GetResult(TypedDict):
    ids: List[str]
    embeddings: Optional[Any]
    documents: Optional[List[Optional[str]]]
    uris: Optional[List[Optional[str]]]
    data: Optional[List[Any]]
    metadatas: Optional[List[Optional[Metadata]]]
    included: List[str]


class DeleteResult(TypedDict):
    """What ``Collection.delete`` returns, as in chromadb: how many records were deleted."""

    deleted: int


class QueryResult(TypedDict):
    ids: List[List[str]]
    embeddings: Optional[List[Any]]
    documents: Optional[List[List[Optional[str]]]]
    uris: Optional[List[List[Optional[str]]]]
    data: Optional[List[List[Any]]]
    metadatas: Optional[List[List[Optional[Metadata]]]]
    distances: Optional[List[List[float]]]
    included: List[str]


# ------------------------------------------------------------------ what crosses the Backend seam


@dataclass(frozen=True)
class GetRequest:
    """A validated ``get``: filters are parsed trees, ``include`` names stored columns only."""

    ids: list[str] | None = None
    where: Where | None = None
    where_document: WhereDocument | None = None
    limit: int | None = None
    offset: int = 0
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueryRequest:
    """A validated ``query`` with its query vectors already embedded ((n, d) float32)."""

    embeddings: np.ndarray
    n_results: int = 10
    ids: list[str] | None = None
    where: Where | None = None
    where_document: WhereDocument | None = None
    include: tuple[str, ...] = ()


@dataclass
class Records:
    """Column-major records as a backend returns them; a column is None when not included."""

    ids: list[str]
    embeddings: np.ndarray | None = None
    documents: list[str | None] | None = None
    uris: list[str | None] | None = None
    metadatas: list[Metadata | None] | None = None


@dataclass
class QueryAnswer:
    """Per query: the nearest records and their distances (ascending)."""

    records: list[Records]
    distances: list[np.ndarray]


# Stored columns a backend can return (``data`` is loaded from ``uris`` by the handle).
STORED_COLUMNS = ("embeddings", "documents", "uris", "metadatas")
