"""Run Search API requests against a collection: the collection side of ``SearchEngine``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import InvalidArgumentError
from retrieval.query.filters import parse_where
from retrieval.search.execute import execute_many
from retrieval.search.result import SearchResult

if TYPE_CHECKING:
    from retrieval.collection import Collection

DENSE_KEY = "#embedding"
_INCLUDE_OF_FIELD = {
    "document": "documents",
    "embedding": "embeddings",
    "metadata": "metadatas",
    "uri": "uris",
    "data": "data",
}


def run_searches(collection: Collection, searches: Any) -> SearchResult:
    """``collection.search(Search(...))`` or ``collection.search([s1, s2])``."""
    return execute_many(searches, CollectionSearchEngine(collection))


class CollectionSearchEngine:
    """Adapts a collection to the engine protocol the Search evaluator calls."""

    def __init__(self, collection: Collection):
        self.collection = collection
        self._engine = collection._engine
        self._record = collection._record

    def knn(self, query: Any, *, key: str, limit: int, where: dict | None) -> list[tuple[str, float]]:
        tree = parse_where(where)
        sparse = self.collection._sparse
        if key == DENSE_KEY:
            vector = self._dense_query(query)
            rows, distances = self._engine.query(self._record, vector, limit, where=tree, fields=set())
            return list(zip(rows[0].ids, distances[0].tolist()))
        if sparse is not None and key == sparse[0]:
            return self._engine.sparse_query(self._record, key, self._sparse_query(query), limit, where=tree)
        known = [DENSE_KEY] + ([sparse[0]] if sparse is not None else [])
        raise InvalidArgumentError(
            f"Knn key {key!r} is not an index of collection {self.collection.name!r}; use one of {known} "
            "(a sparse key is created with configuration={'sparse': {'key': ..., 'embedding_function': ...}})"
        )

    def scan(self, *, where: dict | None, limit: int | None, offset: int) -> list[str]:
        rows = self._engine.get(self._record, where=parse_where(where), limit=limit, offset=offset, fields=set())
        return rows.ids

    def fetch(self, ids: list[str], fields: set[str]) -> dict[str, dict]:
        include = [_INCLUDE_OF_FIELD[f] for f in fields if f in _INCLUDE_OF_FIELD]
        got = self.collection.get(ids=ids, include=include)
        out: dict[str, dict] = {}
        for position, id_ in enumerate(got["ids"]):
            out[id_] = {field: got[_INCLUDE_OF_FIELD[field]][position] for field in fields if field in _INCLUDE_OF_FIELD}
        return out

    def _dense_query(self, query: Any) -> np.ndarray:
        if isinstance(query, str):
            return self.collection._query_vectors(None, [query], None, None)
        if isinstance(query, np.ndarray) and query.ndim == 3:
            return self.collection._query_vectors(None, None, [query], None)
        if hasattr(query, "indices") and hasattr(query, "values"):
            raise InvalidArgumentError("a SparseVector query needs a sparse Knn key, not '#embedding'")
        return self.collection._query_vectors(np.asarray(query, dtype=np.float32).reshape(1, -1), None, None, None)

    def _sparse_query(self, query: Any) -> Any:
        from embedders.sparse import SparseVector

        if isinstance(query, SparseVector):
            return query
        if isinstance(query, dict):
            return SparseVector.from_dict(query)
        if isinstance(query, str):
            _, sparse_ef = self.collection._sparse
            embed = getattr(sparse_ef, "embed_query", None) or sparse_ef
            return embed([query])[0]
        raise InvalidArgumentError(f"a sparse Knn query must be a string or a SparseVector; got {type(query).__name__}")
