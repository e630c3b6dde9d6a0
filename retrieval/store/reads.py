"""The engine's read path: get, count and nearest-neighbour query planning.

Query planning (DESIGN section 4): exact numpy search for small collections, for selective filters
and whenever ``n_results`` reaches the number of candidates; HNSW otherwise. A filtered query
always returns the true top-k of the filtered set when it is answered exactly, and never fewer
results than exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from retrieval.query.filter_sql import collection_filter
from retrieval.store.collection_state import CollectionState
from retrieval.store.db import Database, id_chunks
from retrieval.store.vector_store import Candidates
from retrieval.types import CollectionRecord
from retrieval.validation import check_dimension

# Up to this many live records, a full exact scan is as fast as HNSW and has recall 1.0.
EXACT_MAX_ROWS = 5_000
# Filtered queries scan their candidates exactly up to this many rows, or below this fraction of
# the collection; broader filters use HNSW with a membership test.
EXACT_FILTER_MAX_ROWS = 20_000
EXACT_FILTER_MAX_FRACTION = 0.1


@dataclass
class Rows:
    """Column-major rows read from the records table."""

    labels: list[int]
    ids: list[str]
    embeddings: np.ndarray | None
    documents: list[str | None] | None
    uris: list[str | None] | None
    metadatas: list[dict | None] | None

    def take(self, order: list[int]) -> Rows:
        return Rows(
            labels=[self.labels[i] for i in order],
            ids=[self.ids[i] for i in order],
            embeddings=None if self.embeddings is None else self.embeddings[order],
            documents=None if self.documents is None else [self.documents[i] for i in order],
            uris=None if self.uris is None else [self.uris[i] for i in order],
            metadatas=None if self.metadatas is None else [self.metadatas[i] for i in order],
        )


class Collections(Protocol):
    """What the read path needs of the engine's collections (engine.py)."""

    def state(self, record: CollectionRecord) -> CollectionState: ...

    def require_live(self, record: CollectionRecord) -> None: ...

    def select_candidates(self, conn, collection_id: str, ids, where, where_document) -> Candidates: ...


class Reader:
    """The engine's read verbs over its database and collections."""

    def __init__(self, db: Database, collections: Collections):
        self.db = db
        self.collections = collections

    def state(self, record: CollectionRecord) -> CollectionState:
        return self.collections.state(record)

    def count(self, record: CollectionRecord) -> int:
        state = self.state(record)
        with state.lock:
            return state.count()

    def get(
        self,
        record: CollectionRecord,
        *,
        ids: list[str] | None = None,
        where: Any = None,
        where_document: Any = None,
        limit: int | None = None,
        offset: int = 0,
        fields: set[str],
    ) -> Rows:
        """Records matching all given conditions: in the order of ``ids`` when given, else insertion order."""
        self.collections.require_live(record)
        walk = ids is None and limit is not None and self._label_walk_pays(record, offset + limit)
        sql, args = collection_filter(record.id, where, where_document, by_ids=ids is not None, walk_labels=walk)
        query = f"SELECT {_columns(fields)} FROM records r WHERE {sql}"
        with self.db.reading() as conn:
            if ids is None:
                query += " ORDER BY r.label LIMIT ? OFFSET ?"
                raw = conn.execute(query, args + [-1 if limit is None else limit, offset]).fetchall()
            else:
                raw = []
                for placeholders, chunk in id_chunks(ids):
                    raw += conn.execute(f"{query} AND r.id IN ({placeholders})", args + chunk).fetchall()
            raw = _with_vectors(self.state(record), raw, fields)
        rows = self._rows(raw, fields, record.dimension)
        if ids is not None:
            position = {id_: i for i, id_ in enumerate(rows.ids)}
            order = [position[i] for i in ids if i in position]
            end = None if limit is None else offset + limit
            rows = rows.take(order[offset:end])
        return rows

    def _label_walk_pays(self, record: CollectionRecord, rows: int) -> bool:
        """Whether the first ``rows`` records in label order are found sooner by walking the records
        table (labels are its rowids) than by sorting the collection: a walk passes other collections'
        records too, about ``rows / share`` in all (``share``: the collection's part of the labels
        given out), where a sort reads the whole collection. So a photo archive's ``peek()`` or the
        web page's first page costs its rows, not the archive (measured at 1M: 0.36 s before)."""
        with self.db.reading() as conn:
            labels_given = conn.execute("SELECT coalesce(max(label), 0) FROM records").fetchone()[0]
        size = self.count(record)
        return size > 0 and rows * labels_given < size * size

    def query(
        self,
        record: CollectionRecord,
        queries: np.ndarray,
        n_results: int,
        *,
        ids: list[str] | None = None,
        where: Any = None,
        where_document: Any = None,
        fields: set[str],
    ) -> tuple[list[Rows], list[np.ndarray]]:
        """Nearest neighbours of each query among the records matching the conditions."""
        state: CollectionState = self.state(record)
        with state.lock:
            check_dimension(queries, state.dimension, record.name, what="query embeddings")
            candidates = cache_key = None
            if ids is not None or where is not None or where_document is not None:

                def select() -> Candidates:
                    with self.db.reading() as conn:
                        return self.collections.select_candidates(conn, record.id, ids, where, where_document)

                # repr, not the trees themselves: dataclass equality says False == 0.
                cache_key = (None if ids is None else tuple(ids), repr(where), repr(where_document))
                candidates = state.cached_labels(cache_key, select)
            labels, distances = _nearest(state, queries, n_results, candidates, state.count(), cache_key)
            # Fetched under the same lock, so every label found is still a live record.
            found = _with_vectors(state, self._rows_by_label(np.unique(labels).tolist(), fields), fields)
            row_of = {row[0]: row for row in found}
        results, kept_distances = [], []
        for row_labels, row_distances in zip(labels.tolist(), distances):
            picked = [row_of[label] for label in row_labels]
            results.append(self._rows(picked, fields, record.dimension))
            kept_distances.append(row_distances)
        return results, kept_distances

    def _rows_by_label(self, labels: list[int], fields: set[str]) -> list[tuple]:
        raw: list[tuple] = []
        with self.db.reading() as conn:
            for start in range(0, len(labels), _LABEL_CHUNK):
                chunk = labels[start : start + _LABEL_CHUNK]
                sql = f"SELECT {_columns(fields)} FROM records r WHERE r.label IN ({', '.join('?' * len(chunk))})"
                raw += conn.execute(sql, chunk).fetchall()
        return raw

    @staticmethod
    def _rows(rows: list[tuple], fields: set[str], dim: int | None) -> Rows:
        cols = list(zip(*rows)) if rows else [[] for _ in range(2 + len(_FIELD_ORDER))]
        out = {"labels": list(cols[0]), "ids": list(cols[1])}
        i = 2
        for name in _FIELD_ORDER:
            if name in fields:
                values = list(cols[i])
                i += 1
                if name == "embeddings":
                    out[name] = np.stack(values) if values else np.zeros((0, dim or 0), np.float32)
                elif name == "metadatas":
                    out[name] = [_metadata_from_json(v) if v is not None else None for v in values]
                else:
                    out[name] = values
            else:
                out[name] = None
        return Rows(**out)


def _metadata_from_json(text: str) -> Any:
    """A stored metadata dict. orjson parses it ~4x faster than json (every query's answer reads
    n_results of them) and alike for what validation lets in (64-bit integers, finite floats);
    json takes anything orjson refuses."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


_LABEL_CHUNK = 10_000
_FIELD_ORDER = ("embeddings", "documents", "uris", "metadatas")
# The embeddings column selects the label again: _with_vectors puts the vector in its place.
_FIELD_COLUMNS = {"embeddings": "r.label", "documents": "r.document", "uris": "r.uri", "metadatas": "r.metadata"}


def _with_vectors(state: CollectionState, rows: list[tuple], fields: set[str]) -> list[tuple]:
    """Rows with each record's vector (vector_store.py) in the embeddings column, when asked for.
    Callers hold the database (or the collection) so the records cannot change in between."""
    if "embeddings" not in fields or not rows:
        return rows
    found, vectors = state.vectors.read(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
    vector_of = dict(zip(found.tolist(), vectors))
    return [(r[0], r[1], vector_of[r[0]], *r[3:]) for r in rows]


def _columns(fields: set[str]) -> str:
    return ", ".join(["r.label", "r.id"] + [_FIELD_COLUMNS[f] for f in _FIELD_ORDER if f in fields])


def _nearest(
    state: CollectionState,
    queries: np.ndarray,
    n_results: int,
    candidates: Candidates | None,
    live: int,
    cache_key: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and distances of the top ``n_results`` per query, choosing exact or HNSW search."""
    empty = (np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32))
    if candidates is None:
        if live == 0:
            return empty
        k = min(n_results, live)
        if live <= EXACT_MAX_ROWS or k >= live:
            return state.exact_search(queries, k)
        return _ann(state, queries, k)
    matching = len(candidates.labels)
    if matching == 0:
        return empty
    k = min(n_results, matching)
    selective = matching <= EXACT_FILTER_MAX_ROWS or matching <= EXACT_FILTER_MAX_FRACTION * live
    if selective or k >= matching or live <= EXACT_MAX_ROWS:
        return state.exact_search(queries, k, candidates, cache_key)
    allowed = set(candidates.labels.tolist())
    return _ann(state, queries, k, allowed.__contains__, candidates, cache_key)


def _ann(state: CollectionState, queries: np.ndarray, k: int, filter_fn=None, candidates=None, cache_key=None):
    try:
        return state.ann_search(queries, k, filter_fn, candidates)  # the graph plus its pending tail
    except RuntimeError:
        # hnswlib could not reach k elements for some query (tiny ef, many deletions, an element
        # still being linked): that query is answered exactly, the others of its batch by the graph.
        if len(queries) == 1:
            return state.exact_search(queries, k, candidates, cache_key)
        answers = [_ann(state, queries[i : i + 1], k, filter_fn, candidates, cache_key) for i in range(len(queries))]
        return np.vstack([labels for labels, _ in answers]), np.vstack([dist for _, dist in answers])
