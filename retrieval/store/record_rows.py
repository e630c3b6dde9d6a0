"""The SQL side of a write: reading the rows a batch touches, inserting and updating records, their
metadata and sparse index rows, and logging vector-index changes to the oplog.

``Engine`` runs these inside one ``BEGIN IMMEDIATE`` transaction per write (``retrieval.store.engine``).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from retrieval.query.filter_sql import METADATA_INDEX_DELETE, METADATA_INDEX_INSERT, metadata_index_rows
from retrieval.store.db import id_chunks
from retrieval.store.sparse_index import SPARSE_INDEX_DELETE_LABEL, SPARSE_INDEX_INSERT, sparse_rows
from retrieval.types import RecordBatch


def to_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def existing_records(conn, collection_id: str, ids: list[str]) -> dict[str, tuple]:
    found = {}
    for placeholders, chunk in id_chunks(ids):
        rows = conn.execute(
            "SELECT r.id, r.label, r.document, r.uri, r.metadata FROM records r "
            f"WHERE r.collection_id = ? AND r.id IN ({placeholders})",
            [collection_id, *chunk],
        ).fetchall()
        found.update((row[0], row[1:]) for row in rows)
    return found


def next_label(conn) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    return (row[0] if row else 0) + 1


def changed_vectors(
    batch: RecordBatch, positions: list[int], existing: dict[str, tuple], read_vectors: Callable
) -> list[int]:
    """Positions of existing records whose vector the batch changes (identical vectors need no index work).

    ``read_vectors(labels)`` gives the stored ``(labels, vectors)`` (vector_store.py)."""
    if batch.embeddings is None or not positions:
        return []
    labels = np.asarray([existing[batch.ids[p]][0] for p in positions], dtype=np.int64)
    found, stored = read_vectors(labels)
    old = {label: row.tobytes() for label, row in zip(found.tolist(), stored.astype("<f4", copy=False))}
    new = batch.embeddings.astype("<f4", copy=False)
    return [p for p, label in zip(positions, labels.tolist()) if new[p].tobytes() != old.get(label)]


def insert_records(
    conn, collection_id: str, batch: RecordBatch, positions: list[int], labels: np.ndarray, slots: np.ndarray | None = None
) -> None:
    """Insert new records. Their vectors go into the vectors table, or, with ``slots`` (the first
    ``len(positions)`` of them), are already in the vector file."""
    if not positions:
        return
    rows, vector_rows, meta_rows = [], [], []
    blobs = batch.embeddings.astype("<f4", copy=False)
    for label, p in zip(labels.tolist(), positions):
        metadata = _strip_none(batch.metadatas[p]) if batch.metadatas is not None else None
        rows.append(
            (
                label,
                collection_id,
                batch.ids[p],
                batch.documents[p] if batch.documents is not None else None,
                batch.uris[p] if batch.uris is not None else None,
                to_json(metadata),
                None if slots is None else int(slots[len(rows)]),
            )
        )
        if slots is None:
            vector_rows.append((label, blobs[p].tobytes()))
        meta_rows.extend(metadata_index_rows(label, metadata))
    conn.executemany(
        "INSERT INTO records (label, collection_id, id, document, uri, metadata, slot) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
    )
    conn.executemany("INSERT INTO vectors (label, embedding) VALUES (?, ?)", vector_rows)
    conn.executemany(METADATA_INDEX_INSERT, meta_rows)
    if batch.sparse:
        _write_sparse(conn, collection_id, batch, positions, labels)


def update_records(
    conn,
    collection_id: str,
    batch: RecordBatch,
    positions: list[int],
    existing: dict[str, tuple],
    changed: set[int],
    labels: np.ndarray | None = None,
    slots: np.ndarray | None = None,
) -> None:
    """Apply update semantics to existing records (``changed``: positions with a new vector). With
    ``slots``, the new vectors are already in the vector file: ``slots[i]`` holds ``labels[i]``'s."""
    rows, vector_rows, relabelled = [], [], []
    for p in positions:
        label, old_doc, old_uri, old_meta_json = existing[batch.ids[p]]
        if p in changed:
            vector_rows.append((batch.embeddings[p].astype("<f4").tobytes(), label))
        document = batch.documents[p] if batch.documents is not None else old_doc
        uri = batch.uris[p] if batch.uris is not None else old_uri
        metadata = json.loads(old_meta_json) if old_meta_json is not None else None
        if batch.metadatas is not None and batch.metadatas[p] is not None:
            metadata = _merge(metadata, batch.metadatas[p])
            relabelled.append((label, metadata))
        rows.append((document, uri, to_json(metadata), label))
    conn.executemany("UPDATE records SET document = ?, uri = ?, metadata = ? WHERE label = ?", rows)
    if slots is not None:  # the new vectors are in new slots: any older recent copy goes
        slot_of = dict(zip(labels.tolist(), slots.tolist()))
        moved = [(slot_of[label], label) for _, label in vector_rows]
        conn.executemany("UPDATE records SET slot = ? WHERE label = ?", moved)
        conn.executemany("DELETE FROM vectors WHERE label = ?", [(label,) for _, label in moved])
    else:  # a new vector is recent again: into the vectors table; the record's old slot no longer counts
        conn.executemany("INSERT OR REPLACE INTO vectors (embedding, label) VALUES (?, ?)", vector_rows)
        conn.executemany("UPDATE records SET slot = NULL WHERE label = ?", [(label,) for _, label in vector_rows])
    if relabelled:
        conn.executemany(METADATA_INDEX_DELETE, [(label,) for label, _ in relabelled])
        conn.executemany(
            METADATA_INDEX_INSERT, [row for label, meta in relabelled for row in metadata_index_rows(label, meta)]
        )
    if batch.sparse and positions:
        labels = [existing[batch.ids[p]][0] for p in positions]
        conn.executemany(SPARSE_INDEX_DELETE_LABEL, [(label,) for label in labels])
        _write_sparse(conn, collection_id, batch, positions, np.asarray(labels, dtype=np.int64))


def _write_sparse(conn, collection_id: str, batch: RecordBatch, positions: list[int], labels: np.ndarray) -> None:
    """Index the batch's sparse vectors (one per record and key, None for none)."""
    rows = []
    for key, vectors in batch.sparse.items():
        for label, p in zip(labels.tolist(), positions):
            if vectors[p] is not None:
                rows.extend(sparse_rows(collection_id, key, label, vectors[p]))
    conn.executemany(SPARSE_INDEX_INSERT, rows)


def _merge(old: dict | None, new: dict) -> dict | None:
    merged = dict(old or {})
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


def _strip_none(metadata: dict | None) -> dict | None:
    if metadata is None:
        return None
    clean = {k: v for k, v in metadata.items() if v is not None}
    return clean or None


def log_changes(conn, collection_id: str, labels: np.ndarray, durable: bool) -> int:
    """Append vector-index changes to the oplog (persistent databases only); returns the last seq."""
    if not durable or len(labels) == 0:
        return 0
    conn.executemany("INSERT INTO oplog (collection_id, label) VALUES (?, ?)", [(collection_id, int(l)) for l in labels])
    return conn.execute("SELECT last_insert_rowid()").fetchone()[0]
