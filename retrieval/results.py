"""Chroma's column-major result dicts, built from what a backend returns."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from retrieval.types import STORED_COLUMNS, GetResult, QueryAnswer, QueryResult, Records

Loader = Callable[[Sequence[str | None]], list[Any]]


def stored_columns(include: Sequence[str]) -> tuple[str, ...]:
    """The stored columns an include list needs ('data' is loaded from the URIs)."""
    wanted = set(include) | ({"uris"} if "data" in include else set())
    return tuple(c for c in STORED_COLUMNS if c in wanted)


def get_result(records: Records, include: Sequence[str], load: Loader | None) -> GetResult:
    return {
        "ids": records.ids,
        "embeddings": records.embeddings if "embeddings" in include else None,
        "documents": records.documents if "documents" in include else None,
        "uris": records.uris if "uris" in include else None,
        "data": _data(records, load) if "data" in include else None,
        "metadatas": records.metadatas if "metadatas" in include else None,
        "included": list(include),
    }


def query_result(answer: QueryAnswer, include: Sequence[str], load: Loader | None) -> QueryResult:
    per_query = answer.records

    def column(name: str, value: Callable[[Records], Any]):
        return [value(records) for records in per_query] if name in include else None

    return {
        "ids": [records.ids for records in per_query],
        "embeddings": column("embeddings", lambda r: r.embeddings),
        "documents": column("documents", lambda r: r.documents),
        "uris": column("uris", lambda r: r.uris),
        "data": column("data", lambda r: _data(r, load)),
        "metadatas": column("metadatas", lambda r: r.metadatas),
        "distances": [np.asarray(row, dtype=np.float64).tolist() for row in answer.distances]
        if "distances" in include
        else None,
        "included": list(include),
    }


def _data(records: Records, load: Loader | None) -> list[Any]:
    """Loaded data for records with a URI, None for the others (e.g. text records)."""
    uris = records.uris or []
    if load is None or not any(u is not None for u in uris):
        return [None] * len(records.ids)
    return load(uris)
