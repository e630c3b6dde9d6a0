"""Chroma's column-major result dicts, built from the engine's rows."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from retrieval.store.reads import Rows
from retrieval.types import GetResult, QueryResult

Loader = Callable[[Sequence[str | None]], list[Any]]


def engine_fields(include: Sequence[str]) -> set[str]:
    """The stored columns an include list needs ('data' is loaded from the URIs)."""
    fields = {f for f in include if f in ("embeddings", "documents", "uris", "metadatas")}
    if "data" in include:
        fields.add("uris")
    return fields


def get_result(rows: Rows, include: Sequence[str], load: Loader | None) -> GetResult:
    return {
        "ids": rows.ids,
        "embeddings": rows.embeddings if "embeddings" in include else None,
        "documents": rows.documents if "documents" in include else None,
        "uris": rows.uris if "uris" in include else None,
        "data": _data(rows, load) if "data" in include else None,
        "metadatas": rows.metadatas if "metadatas" in include else None,
        "included": list(include),
    }


def query_result(
    per_query: list[Rows], distances: list[np.ndarray], include: Sequence[str], load: Loader | None
) -> QueryResult:
    def column(name: str, value: Callable[[Rows], Any]):
        return [value(rows) for rows in per_query] if name in include else None

    return {
        "ids": [rows.ids for rows in per_query],
        "embeddings": column("embeddings", lambda r: r.embeddings),
        "documents": column("documents", lambda r: r.documents),
        "uris": column("uris", lambda r: r.uris),
        "data": column("data", lambda r: _data(r, load)),
        "metadatas": column("metadatas", lambda r: r.metadatas),
        "distances": [np.asarray(row, dtype=np.float64).tolist() for row in distances] if "distances" in include else None,
        "included": list(include),
    }


def _data(rows: Rows, load: Loader | None) -> list[Any]:
    """Loaded data for records with a URI, None for the others (e.g. text records)."""
    uris = rows.uris or []
    if load is None or not any(u is not None for u in uris):
        return [None] * len(rows.ids)
    return load(uris)
