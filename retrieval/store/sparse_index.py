"""An inverted index of sparse vectors in SQLite, and exact top-k search over it.

One table, ``sparse_index``: a row per (collection, key, term, label) holding the weight,
plus one marker row per indexed vector with ``term = -1`` (real terms are >= 0), so the
document count that IDF needs is a cheap index range count, and deleting a record's rows by
``label`` (or a collection's by ``collection_id``) removes its marker too. The primary key
(``WITHOUT ROWID``, clustered by term) serves term lookups; ``sparse_index_by_label`` serves
deletes by label. Labels are the records table's never-reused integer labels.

Search is term-at-a-time: fetch the postings of the query's terms, accumulate
``sum(query_weight * [idf] * doc_weight)`` per label, keep the best ``limit``. Scores are
returned as distances (``-score``, ascending) because the Search API ranks lower first.
With ``idf=True`` each query weight is multiplied by BM25's IDF,
``ln(1 + (N - df + 0.5) / (df + 0.5))``, from the index's own document frequencies.
"""

from __future__ import annotations

import heapq
import math
import sqlite3
from collections.abc import Iterable

from embedders.sparse import SparseVector

__all__ = [
    "DOC_MARKER_TERM",
    "SPARSE_INDEX_DDL",
    "SPARSE_INDEX_DELETE_COLLECTION",
    "SPARSE_INDEX_DELETE_LABEL",
    "SPARSE_INDEX_INSERT",
    "bm25_idf",
    "delete_sparse",
    "insert_sparse",
    "sparse_doc_count",
    "sparse_knn",
    "sparse_rows",
]

DOC_MARKER_TERM = -1

SPARSE_INDEX_DDL = """
CREATE TABLE IF NOT EXISTS sparse_index (
    collection_id TEXT NOT NULL,
    key TEXT NOT NULL,
    term INTEGER NOT NULL,          -- -1: one marker row per indexed vector (weight = its term count)
    label INTEGER NOT NULL,
    weight REAL NOT NULL,
    PRIMARY KEY (collection_id, key, term, label)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sparse_index_by_label ON sparse_index (label);
"""

# Parameters: each row of sparse_rows(...).
SPARSE_INDEX_INSERT = (
    "INSERT OR REPLACE INTO sparse_index (collection_id, key, term, label, weight) VALUES (?, ?, ?, ?, ?)"
)
# Parameters: (label,). Removes every key's vector of that record.
SPARSE_INDEX_DELETE_LABEL = "DELETE FROM sparse_index WHERE label = ?"
# Parameters: (collection_id,).
SPARSE_INDEX_DELETE_COLLECTION = "DELETE FROM sparse_index WHERE collection_id = ?"

_CHUNK = 500  # query terms per statement: well under SQLite's bound-parameter limit


def sparse_rows(collection_id: str, key: str, label: int, vec: SparseVector) -> list[tuple[str, str, int, int, float]]:
    """The ``sparse_index`` rows of one vector: its marker row, then its non-zero weights.

    Example:
        >>> sparse_rows("c1", "bm25", 7, SparseVector([3, 9], [0.5, 0.0]))
        [('c1', 'bm25', -1, 7, 1.0), ('c1', 'bm25', 3, 7, 0.5)]
    """
    postings = [
        (collection_id, key, term, label, weight) for term, weight in zip(vec.indices, vec.values) if weight != 0.0
    ]
    return [(collection_id, key, DOC_MARKER_TERM, label, float(len(postings))), *postings]


def insert_sparse(conn: sqlite3.Connection, collection_id: str, key: str, label: int, vec: SparseVector) -> None:
    """Index ``vec`` under (``key``, ``label``), replacing what was there (call inside a transaction)."""
    conn.execute(
        "DELETE FROM sparse_index WHERE collection_id = ? AND key = ? AND label = ?", (collection_id, key, label)
    )
    conn.executemany(SPARSE_INDEX_INSERT, sparse_rows(collection_id, key, label, vec))


def delete_sparse(conn: sqlite3.Connection, labels: Iterable[int]) -> None:
    """Remove every sparse vector of these records (call inside a transaction)."""
    conn.executemany(SPARSE_INDEX_DELETE_LABEL, [(label,) for label in labels])


def sparse_doc_count(conn: sqlite3.Connection, collection_id: str, key: str) -> int:
    """How many vectors are indexed under ``key`` (BM25's N), empty ones included."""
    row = conn.execute(
        "SELECT COUNT(*) FROM sparse_index WHERE collection_id = ? AND key = ? AND term = ?",
        (collection_id, key, DOC_MARKER_TERM),
    ).fetchone()
    return int(row[0])


def bm25_idf(n_docs: int, df: int) -> float:
    """BM25's IDF, ``ln(1 + (N - df + 0.5) / (df + 0.5))``: positive for any df <= N."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def sparse_knn(
    conn: sqlite3.Connection,
    collection_id: str,
    key: str,
    query: SparseVector,
    limit: int,
    candidate_labels: set[int] | None = None,
    idf: bool = False,
    n_docs: int | None = None,
) -> list[tuple[int, float]]:
    """The best ``limit`` (label, distance) pairs, distance ascending (``-score``; ties by label).

    Only labels sharing at least one term with ``query`` are returned. ``candidate_labels``
    restricts the result (e.g. to the records a filter matched); IDF always counts the
    whole index; ``n_docs`` passes in its size when the caller knows it (counting costs a scan).

    Example:
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = conn.executescript(SPARSE_INDEX_DDL)
        >>> insert_sparse(conn, "c", "k", 1, SparseVector([5], [2.0]))
        >>> insert_sparse(conn, "c", "k", 2, SparseVector([5, 6], [1.0, 1.0]))
        >>> sparse_knn(conn, "c", "k", SparseVector([5, 6], [1.0, 3.0]), limit=5)
        [(2, -4.0), (1, -2.0)]
    """
    if limit <= 0 or len(query) == 0:
        return []
    weights = {t: w for t, w in zip(query.indices, query.values) if w != 0.0}  # query terms are >= 0
    postings: dict[int, list[tuple[int, float]]] = {t: [] for t in weights}
    terms = list(weights)
    for start in range(0, len(terms), _CHUNK):
        chunk = terms[start : start + _CHUNK]
        rows = conn.execute(
            "SELECT term, label, weight FROM sparse_index WHERE collection_id = ? AND key = ? "
            f"AND term IN ({','.join('?' * len(chunk))})",
            (collection_id, key, *chunk),
        )
        for term, label, weight in rows:
            postings[term].append((label, weight))
    if idf:
        if n_docs is None:
            n_docs = sparse_doc_count(conn, collection_id, key)
        for term, plist in postings.items():
            weights[term] *= bm25_idf(n_docs, len(plist))
    scores: dict[int, float] = {}
    for term, plist in postings.items():
        qw = weights[term]
        for label, weight in plist:
            if candidate_labels is None or label in candidate_labels:
                scores[label] = scores.get(label, 0.0) + qw * weight
    best = heapq.nsmallest(limit, ((-s, label) for label, s in scores.items()))
    return [(label, distance) for distance, label in best]
