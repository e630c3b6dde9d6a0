"""Search results in chromadb's column-major shape.

``SearchResult`` is a dict (as chromadb's is) with one inner list per search of a batch::

    {"ids":        [["a", "b"], ...],
     "documents":  [["doc a", "doc b"] | None, ...],    # None: not selected in that search
     "embeddings": [...], "metadatas": [...], "scores": [...], "uris": [...], "data": [...],
     "select":     [["#document", "#score"], ...]}

``rows()`` turns it row-major: per search, a list of ``{"id", "document", "embedding",
"metadata", "score", "uri", "data"}`` dicts holding only the fields that have a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["COLUMNS", "ResultSet", "SearchResult"]

# Column name in the result -> key of the row dict.
COLUMNS = {
    "documents": "document",
    "embeddings": "embedding",
    "metadatas": "metadata",
    "scores": "score",
    "uris": "uri",
    "data": "data",
}


@dataclass(frozen=True)
class ResultSet:
    """The results of one search; a column is ``None`` when it was not selected."""

    ids: list[str]
    documents: list[Any] | None = None
    embeddings: list[Any] | None = None
    metadatas: list[Any] | None = None
    scores: list[float] | None = None
    uris: list[Any] | None = None
    data: list[Any] | None = None
    select: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


class SearchResult(dict):  # type: ignore[type-arg]
    """Column-major results of a batch of searches (see the module docstring).

    Example:
        >>> r = SearchResult.from_sets([ResultSet(ids=["a"], scores=[0.5], select=("#score",))])
        >>> r["ids"], r["documents"], r.rows()
        ([['a']], [None], [[{'id': 'a', 'score': 0.5}]])
    """

    @classmethod
    def from_sets(cls, sets: Sequence[ResultSet]) -> SearchResult:
        out = cls(ids=[list(s.ids) for s in sets])
        for column in COLUMNS:
            out[column] = [getattr(s, column) for s in sets]
        out["select"] = [list(s.select) for s in sets]
        return out

    @property
    def ids(self) -> list[list[str]]:
        return self["ids"]

    @property
    def documents(self) -> list[Any]:
        return self.get("documents") or [None] * len(self.ids)

    @property
    def embeddings(self) -> list[Any]:
        return self.get("embeddings") or [None] * len(self.ids)

    @property
    def metadatas(self) -> list[Any]:
        return self.get("metadatas") or [None] * len(self.ids)

    @property
    def scores(self) -> list[Any]:
        return self.get("scores") or [None] * len(self.ids)

    @property
    def uris(self) -> list[Any]:
        return self.get("uris") or [None] * len(self.ids)

    @property
    def data(self) -> list[Any]:
        return self.get("data") or [None] * len(self.ids)

    def rows(self) -> list[list[dict[str, Any]]]:
        """Row-major view: per search, one dict per result with the fields that have a value."""
        all_ids = self.get("ids", [])
        n = len(all_ids)
        columns = {name: self.get(name) or [None] * n for name in COLUMNS}
        out: list[list[dict[str, Any]]] = []
        for i, ids in enumerate(all_ids):
            rows: list[dict[str, Any]] = []
            for j, id_ in enumerate(ids):
                row: dict[str, Any] = {"id": id_}
                for name, field in COLUMNS.items():
                    col = columns[name][i]
                    if col is not None and col[j] is not None:
                        row[field] = col[j]
                rows.append(row)
            out.append(rows)
        return out
