"""A tiny exact ``SearchEngine`` for the Search API tests: brute force over a dict.

Dense distance is squared L2; a sparse key scores ``-dot(query, record)``. Text queries are
looked up in ``texts`` (a fixed text -> vector table). Filters arrive as parsed trees and are
evaluated with ``retrieval.query.evaluate.matches``, the reference semantics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedders.sparse import SparseVector
from retrieval.errors import InvalidArgumentError
from retrieval.query.evaluate import matches
from retrieval.query.filters import Where


class FakeEngine:
    def __init__(self, records: dict[str, dict[str, Any]], texts: dict[str, list[float]] | None = None):
        self.records = records  # insertion order = dict order
        self.texts = texts or {}
        self.calls: list[tuple[str, Any]] = []

    # -- SearchEngine protocol
    def knn(self, query: Any, *, key: str, limit: int, where: Where | None) -> list[tuple[str, float]]:
        self.calls.append(("knn", key))
        matching = [i for i, r in self.records.items() if _match(where, i, r)]
        if key == "#embedding":
            if isinstance(query, str):
                query = self.texts[query]
            if isinstance(query, SparseVector):
                raise InvalidArgumentError("a sparse query needs a sparse key")
            q = np.asarray(query, dtype=np.float64)
            dist = []
            for i in matching:
                e = np.asarray(self.records[i]["embedding"], dtype=np.float64)
                if e.shape != q.shape:
                    raise InvalidArgumentError(f"dimension mismatch: {q.shape} vs {e.shape}")
                dist.append((i, float(((e - q) ** 2).sum())))
        else:
            if not isinstance(query, SparseVector):
                raise InvalidArgumentError(f"key {key!r} takes sparse queries")
            dist = []
            for i in matching:
                vec = self.records[i].get("sparse", {}).get(key)
                if vec is None:
                    continue
                score = vec.dot(query)
                if score != 0:
                    dist.append((i, -score))
        dist.sort(key=lambda t: (t[1], t[0]))
        return dist[:limit]

    def scan(self, *, where: Where | None, limit: int | None, offset: int) -> list[str]:
        self.calls.append(("scan", where))
        ids = [i for i, r in self.records.items() if _match(where, i, r)]
        return ids[offset:] if limit is None else ids[offset : offset + limit]

    def fetch(self, ids: list[str], fields: set[str]) -> dict[str, dict]:
        self.calls.append(("fetch", frozenset(fields)))
        return {i: {f: self.records[i].get(f) for f in fields} for i in ids if i in self.records}


def _match(where: Where | None, id_: str, record: dict[str, Any]) -> bool:
    # The reference semantics the SQL compiler is tested against; the engine gets parsed trees.
    return matches(where, None, id=id_, metadata=record.get("metadata"), document=record.get("document"))


def five_records() -> dict[str, dict[str, Any]]:
    """a..e at squared-L2 distances 0, 1, 4, 9, 16 from [0, 0] and 9, 4, 13, 0, 25 from [3, 0]."""
    return {
        "a": {"embedding": [0.0, 0.0], "metadata": {"cat": "x", "year": 2020}, "document": "alpha", "uri": "u/a"},
        "b": {"embedding": [1.0, 0.0], "metadata": {"cat": "x", "year": 2021}, "document": "beta", "uri": "u/b"},
        "c": {"embedding": [0.0, 2.0], "metadata": {"cat": "y", "year": 2022}, "document": "gamma", "uri": None},
        "d": {"embedding": [3.0, 0.0], "metadata": {"cat": "y"}, "document": "delta", "uri": "u/d"},
        "e": {"embedding": [0.0, 4.0], "metadata": {"year": 2019}, "document": None, "uri": "u/e"},
    }
