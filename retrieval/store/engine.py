"""The embedded storage engine: collections and records over SQLite plus per-collection caches.

Write path (DESIGN section 4): the caller has validated everything; the engine checks what needs
stored state (dimension, existing ids), commits the whole batch in one ``BEGIN IMMEDIATE``
transaction, applies it to the in-memory index, then returns (the acknowledgement).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from retrieval.config import CollectionConfig
from retrieval.errors import NotFoundError, UniqueConstraintError
from retrieval.query.filter_sql import (
    METADATA_INDEX_DELETE,
    METADATA_INDEX_INSERT,
    compile_filter,
    metadata_index_rows,
)
from retrieval.store.collection_state import CollectionState
from retrieval.store.db import Database, id_chunks
from retrieval.store.namespaces import DEFAULT_DATABASE, DEFAULT_TENANT, Namespaces
from retrieval.store.reads import Reader
from retrieval.store.verify import DEFAULT_SAMPLE, VerifyReport, verify_collection
from retrieval.store.sparse_index import (
    SPARSE_INDEX_DELETE_COLLECTION,
    SPARSE_INDEX_DELETE_LABEL,
    SPARSE_INDEX_INSERT,
    sparse_doc_count,
    sparse_knn,
    sparse_rows,
)
from retrieval.telemetry import span
from retrieval.types import CollectionRecord, RecordBatch
from retrieval.validation import check_dimension

logger = logging.getLogger("retrieval")

# Writes with at least this many new vectors overlap graph insertion with the SQLite commit.
OVERLAP_MIN_VECTORS = 256



def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)




class Engine(Reader, Namespaces):
    """One database (persistent directory or in-memory) and the collections in it."""

    def __init__(self, directory: Path | None, synchronous: str = "FULL"):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.db = Database(directory, synchronous=synchronous)
        self._states: dict[str, CollectionState] = {}
        self._states_lock = threading.Lock()
        self._deleted: set[str] = set()  # ids of collections deleted while this engine was open
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="retrieval-index")
        self.closed = False

    # -------------------------------------------------------------- collections

    def create_collection(
        self,
        name: str,
        config: CollectionConfig,
        metadata: dict | None,
        *,
        get_or_create: bool = False,
        tenant: str = DEFAULT_TENANT,
        database: str = DEFAULT_DATABASE,
    ) -> tuple[CollectionRecord, bool]:
        """Create a collection; returns (record, created). With get_or_create, an existing one is returned."""
        with self.db.transaction() as conn:
            existing = self._find(conn, name, tenant, database)
            if existing is not None:
                if get_or_create:
                    return existing, False
                raise UniqueConstraintError(
                    f"collection {name!r} already exists; use get_collection or get_or_create_collection"
                )
            collection_id = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO collections (id, name, tenant, database, configuration, metadata, dimension, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (collection_id, name, tenant, database, config.to_json(), _json(metadata), time.time()),
            )
            return self._find(conn, name, tenant, database), True

    def get_collection(self, name: str, tenant: str = DEFAULT_TENANT, database: str = DEFAULT_DATABASE) -> CollectionRecord:
        with self.db.reading() as conn:
            found = self._find(conn, name, tenant, database)
        if found is None:
            raise NotFoundError(f"collection {name!r} does not exist; create it with create_collection({name!r})")
        return found

    def get_collection_by_id(self, collection_id: str) -> CollectionRecord:
        with self.db.reading() as conn:
            row = conn.execute(_SELECT_COLLECTION + " WHERE id = ?", (collection_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"collection {collection_id!r} does not exist (was it deleted?)")
        return _collection(row)

    def list_collections(
        self, limit: int | None, offset: int, tenant: str = DEFAULT_TENANT, database: str = DEFAULT_DATABASE
    ) -> list[CollectionRecord]:
        with self.db.reading() as conn:
            rows = conn.execute(
                _SELECT_COLLECTION + " WHERE tenant = ? AND database = ? ORDER BY created_at, rowid LIMIT ? OFFSET ?",
                (tenant, database, -1 if limit is None else limit, offset),
            ).fetchall()
        return [_collection(r) for r in rows]

    def count_collections(self, tenant: str = DEFAULT_TENANT, database: str = DEFAULT_DATABASE) -> int:
        with self.db.reading() as conn:
            return conn.execute(
                "SELECT COUNT(*) FROM collections WHERE tenant = ? AND database = ?", (tenant, database)
            ).fetchone()[0]

    def delete_collection(self, name: str, tenant: str = DEFAULT_TENANT, database: str = DEFAULT_DATABASE) -> None:
        record = self.get_collection(name, tenant, database)
        state = self.state(record)
        with state.lock:
            with self.db.transaction() as conn:
                _delete_collection_rows(conn, record.id)
            self._deleted.add(record.id)
            state.destroy()
        with self._states_lock:
            self._states.pop(record.id, None)

    def modify_collection(
        self,
        collection_id: str,
        *,
        name: str | None = None,
        metadata: dict | None = None,
        config: CollectionConfig | None = None,
    ) -> CollectionRecord:
        record = self.get_collection_by_id(collection_id)
        with self.db.transaction() as conn:
            if name is not None and name != record.name:
                if self._find(conn, name, record.tenant, record.database) is not None:
                    raise UniqueConstraintError(f"cannot rename to {name!r}: a collection with that name exists")
                conn.execute("UPDATE collections SET name = ? WHERE id = ?", (name, collection_id))
            if metadata is not None:
                conn.execute("UPDATE collections SET metadata = ? WHERE id = ?", (_json(metadata), collection_id))
            if config is not None:
                conn.execute("UPDATE collections SET configuration = ? WHERE id = ?", (config.to_json(), collection_id))
        if config is not None:
            state = self.state(record)
            with state.lock:
                state.set_config(config.hnsw)
        return self.get_collection_by_id(collection_id)

    def state(self, record: CollectionRecord) -> CollectionState:
        self._require_live(record)
        with self._states_lock:
            state = self._states.get(record.id)
            if state is None:
                config = CollectionConfig.from_json(record.configuration_json)
                state = CollectionState(self.db, record.id, config.hnsw, record.dimension)
                self._states[record.id] = state
            return state

    @staticmethod
    def _find(conn, name: str, tenant: str, database: str) -> CollectionRecord | None:
        row = conn.execute(
            _SELECT_COLLECTION + " WHERE name = ? AND tenant = ? AND database = ?", (name, tenant, database)
        ).fetchone()
        return None if row is None else _collection(row)

    # ------------------------------------------------------------------ writes

    def add(self, record: CollectionRecord, batch: RecordBatch) -> int:
        """Insert records whose ids are new; existing ids are skipped with a warning (chromadb's rule)."""
        return self._write(record, batch, mode="add")

    def update(self, record: CollectionRecord, batch: RecordBatch) -> int:
        """Change existing records; missing ids are skipped with a logged error (chromadb's rule)."""
        return self._write(record, batch, mode="update")

    def upsert(self, record: CollectionRecord, batch: RecordBatch) -> int:
        return self._write(record, batch, mode="upsert")

    def _require_live(self, record: CollectionRecord) -> None:
        """Refuse a stale handle to a deleted collection: a write through it would be acknowledged,
        then unreachable. Writers call this under the state lock, which delete_collection holds."""
        if record.id in self._deleted:
            raise NotFoundError(
                f"collection {record.name!r} was deleted; get or create it again (client.get_or_create_collection)"
            )

    def _write(self, record: CollectionRecord, batch: RecordBatch, mode: str) -> int:
        state = self.state(record)
        with state.lock:
            self._require_live(record)
            if batch.embeddings is not None:
                check_dimension(batch.embeddings, state.dimension, record.name)
            state.begin_write()
            indexing = None
            try:
                with self.db.transaction() as conn:
                    existing = _existing(conn, record.id, batch.ids)
                    if mode == "add" and existing:
                        skipped = [i for i in batch.ids if i in existing]
                        logger.warning("add: %d ids already exist and were skipped: %s", len(skipped), skipped[:10])
                    if mode == "update":
                        missing = [i for i in batch.ids if i not in existing]
                        if missing:
                            logger.error("update: %d ids do not exist and were skipped: %s", len(missing), missing[:10])
                    new_positions = [p for p, i in enumerate(batch.ids) if i not in existing] if mode != "update" else []
                    old_positions = [p for p, i in enumerate(batch.ids) if i in existing] if mode != "add" else []
                    if new_positions and batch.embeddings is None:
                        raise AssertionError("new records need embeddings")  # the Collection layer guarantees this
                    first_vectors = state.dimension is None and batch.embeddings is not None and bool(new_positions)
                    if first_vectors:  # the first write fixes the collection's dimension
                        conn.execute(
                            "UPDATE collections SET dimension = ? WHERE id = ?", (batch.embeddings.shape[1], record.id)
                        )
                    changed = _changed_vectors(batch, old_positions, existing)
                    first = _next_label(conn)
                    new_labels = np.arange(first, first + len(new_positions), dtype=np.int64)
                    labels = np.concatenate(
                        [new_labels, np.asarray([existing[batch.ids[p]][0] for p in changed], dtype=np.int64)]
                    )
                    positions = new_positions + changed
                    vectors = batch.embeddings[positions] if positions else None
                    if len(positions) >= OVERLAP_MIN_VECTORS:
                        # Graph insertion (hnswlib, GIL released) runs while SQLite writes and syncs.
                        # Readers cannot see it early: they wait for the collection lock we hold.
                        indexing = self._pool.submit(state.index_for_write(vectors.shape[1]).upsert, labels, vectors)
                    _insert(conn, record.id, batch, new_positions, new_labels)
                    _update(conn, record.id, batch, old_positions, existing, set(changed))
                    last_seq = _log(conn, record.id, labels, state.durable)
            except BaseException:
                if indexing is not None:  # the index may hold vectors SQLite rolled back: rebuild it
                    concurrent.futures.wait([indexing])
                    state.drop_caches()
                raise
            if first_vectors:  # only once committed: a rolled-back first write leaves no dimension behind
                state.dimension = batch.embeddings.shape[1]
            indexed = indexing is not None
            if indexed and indexing.exception() is not None:
                # Committed, so acknowledged; the index is only a cache and reloads from SQLite.
                logger.warning("collection %s: index update failed (%s); reloading it", record.name, indexing.exception())
                state.drop_caches()
            with span("retrieval.index", collection=record.name, records=len(labels), overlapped=indexed):
                state.apply(labels, vectors, [], last_seq, count_delta=len(new_positions), indexed=indexed)
            return len(new_positions) + len(old_positions)

    def delete(
        self,
        record: CollectionRecord,
        ids: list[str] | None,
        where: Any = None,
        where_document: Any = None,
        limit: int | None = None,
    ) -> int:
        """Delete the matching records (the first ``limit`` in insertion order); returns how many."""
        state = self.state(record)
        with state.lock:
            self._require_live(record)
            state.begin_write()
            with self.db.transaction() as conn:
                labels = self._select_labels(conn, record.id, ids, where, where_document)
                if limit is not None:
                    labels = sorted(labels)[:limit]
                if not labels:
                    return 0
                param = json.dumps(labels)
                conn.execute("DELETE FROM records WHERE label IN (SELECT value FROM json_each(?))", (param,))
                conn.execute("DELETE FROM vectors WHERE label IN (SELECT value FROM json_each(?))", (param,))
                conn.executemany(METADATA_INDEX_DELETE, [(label,) for label in labels])
                conn.executemany(SPARSE_INDEX_DELETE_LABEL, [(label,) for label in labels])
                last_seq = _log(conn, record.id, np.asarray(labels), state.durable)
            state.apply(np.zeros(0, dtype=np.int64), None, labels, last_seq, count_delta=-len(labels))
            return len(labels)

    def _select_labels(self, conn, collection_id: str, ids, where, where_document) -> list[int]:
        sql, params = compile_filter(where, where_document)
        # A filter that is one positive metadata lookup drives the query from the metadata index;
        # `+` keeps SQLite from scanning the whole collection through its id index instead.
        scope = "+r.collection_id" if sql.startswith("r.label IN (") else "r.collection_id"
        query = f"SELECT r.label FROM records r WHERE {scope} = ? AND ({sql})"
        args: list[Any] = [collection_id, *params]
        if ids is None:
            return [row[0] for row in conn.execute(query, args)]
        labels = []
        for placeholders, chunk in id_chunks(ids):
            labels += [row[0] for row in conn.execute(f"{query} AND r.id IN ({placeholders})", args + chunk)]
        return labels

    def sparse_query(
        self, record: CollectionRecord, key: str, query: Any, limit: int, where: Any = None, where_document: Any = None
    ) -> list[tuple[str, float]]:
        """Top ``limit`` (id, -score) pairs of a sparse (BM25) index, scored with IDF."""
        state = self.state(record)
        with state.lock, self.db.reading() as conn:
            candidates = None
            if where is not None or where_document is not None:
                candidates = set(self._select_labels(conn, record.id, None, where, where_document))
            n_docs = state.sparse_doc_count(key, lambda: sparse_doc_count(conn, record.id, key))
            hits = sparse_knn(conn, record.id, key, query, limit, candidate_labels=candidates, idf=True, n_docs=n_docs)
            if not hits:
                return []
            id_of = dict(
                conn.execute(
                    "SELECT label, id FROM records WHERE label IN (SELECT value FROM json_each(?))",
                    (json.dumps([label for label, _ in hits]),),
                ).fetchall()
            )
        return [(id_of[label], distance) for label, distance in hits if label in id_of]

    # --------------------------------------------------------------- integrity

    def verify(self, repair: bool = False, sample: int | None = DEFAULT_SAMPLE) -> list[VerifyReport]:
        """Check every collection's vector index against SQLite (store/verify.py), oldest first.

        Args:
            repair: rebuild the index of each collection where a problem is found.
            sample: records per collection to self-query and compare vectors for (None: all).
        """
        with self.db.reading() as conn:
            rows = conn.execute(_SELECT_COLLECTION + " ORDER BY created_at, rowid").fetchall()
        reports = []
        for row in rows:
            record = _collection(row)
            state = self.state(record)
            with state.lock:
                reports.append(verify_collection(state, record, repair=repair, sample=sample))
        return reports

    # --------------------------------------------------------------- lifecycle

    def flush(self) -> None:
        for state in list(self._states.values()):
            with state.lock:
                state.flush()

    def reset(self) -> None:
        """Delete every collection and record."""
        with self._states_lock:
            states = list(self._states.values())
            self._states.clear()
        for state in states:
            with state.lock:
                state.destroy()
        with self.db.transaction() as conn:
            for (collection_id,) in conn.execute("SELECT id FROM collections").fetchall():
                _delete_collection_rows(conn, collection_id)
                self._deleted.add(collection_id)
                if self.db.directory is not None:
                    CollectionState(self.db, collection_id, CollectionConfig().hnsw, None).destroy()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            self._states.clear()
            self._pool.shutdown(wait=True)
            self.db.close()


_SELECT_COLLECTION = "SELECT id, name, tenant, database, configuration, metadata, dimension FROM collections"


def _collection(row) -> CollectionRecord:
    return CollectionRecord(
        id=row[0],
        name=row[1],
        tenant=row[2],
        database=row[3],
        configuration_json=row[4],
        metadata=json.loads(row[5]) if row[5] is not None else None,
        dimension=row[6],
    )


def _delete_collection_rows(conn, collection_id: str) -> None:
    labels = "SELECT label FROM records WHERE collection_id = ?"
    conn.execute(f"DELETE FROM metadata_index WHERE label IN ({labels})", (collection_id,))
    conn.execute(f"DELETE FROM vectors WHERE label IN ({labels})", (collection_id,))
    conn.execute(SPARSE_INDEX_DELETE_COLLECTION, (collection_id,))
    conn.execute("DELETE FROM records WHERE collection_id = ?", (collection_id,))
    conn.execute("DELETE FROM oplog WHERE collection_id = ?", (collection_id,))
    conn.execute("DELETE FROM collections WHERE id = ?", (collection_id,))


def _existing(conn, collection_id: str, ids: list[str]) -> dict[str, tuple]:
    found = {}
    for placeholders, chunk in id_chunks(ids):
        rows = conn.execute(
            "SELECT r.id, r.label, v.embedding, r.document, r.uri, r.metadata FROM records r "
            f"JOIN vectors v ON v.label = r.label WHERE r.collection_id = ? AND r.id IN ({placeholders})",
            [collection_id, *chunk],
        ).fetchall()
        found.update((row[0], row[1:]) for row in rows)
    return found


def _next_label(conn) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    return (row[0] if row else 0) + 1


def _changed_vectors(batch: RecordBatch, positions: list[int], existing: dict[str, tuple]) -> list[int]:
    """Positions of existing records whose vector the batch changes (identical vectors need no index work)."""
    if batch.embeddings is None:
        return []
    blobs = batch.embeddings.astype("<f4", copy=False)
    return [p for p in positions if blobs[p].tobytes() != existing[batch.ids[p]][1]]


def _insert(conn, collection_id: str, batch: RecordBatch, positions: list[int], labels: np.ndarray) -> None:
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
                _json(metadata),
            )
        )
        vector_rows.append((label, blobs[p].tobytes()))
        meta_rows.extend(metadata_index_rows(label, metadata))
    conn.executemany(
        "INSERT INTO records (label, collection_id, id, document, uri, metadata) VALUES (?, ?, ?, ?, ?, ?)", rows
    )
    conn.executemany("INSERT INTO vectors (label, embedding) VALUES (?, ?)", vector_rows)
    conn.executemany(METADATA_INDEX_INSERT, meta_rows)
    if batch.sparse:
        _write_sparse(conn, collection_id, batch, positions, labels)


def _update(
    conn, collection_id: str, batch: RecordBatch, positions: list[int], existing: dict[str, tuple], changed: set[int]
) -> None:
    """Apply update semantics to existing records (``changed``: positions with a new vector)."""
    rows, vector_rows, relabelled = [], [], []
    for p in positions:
        label, _, old_doc, old_uri, old_meta_json = existing[batch.ids[p]]
        if p in changed:
            vector_rows.append((batch.embeddings[p].astype("<f4").tobytes(), label))
        document = batch.documents[p] if batch.documents is not None else old_doc
        uri = batch.uris[p] if batch.uris is not None else old_uri
        metadata = json.loads(old_meta_json) if old_meta_json is not None else None
        if batch.metadatas is not None and batch.metadatas[p] is not None:
            metadata = _merge(metadata, batch.metadatas[p])
            relabelled.append((label, metadata))
        rows.append((document, uri, _json(metadata), label))
    conn.executemany("UPDATE records SET document = ?, uri = ?, metadata = ? WHERE label = ?", rows)
    conn.executemany("UPDATE vectors SET embedding = ? WHERE label = ?", vector_rows)
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


def _log(conn, collection_id: str, labels: np.ndarray, durable: bool) -> int:
    """Append vector-index changes to the oplog (persistent databases only); returns the last seq."""
    if not durable or len(labels) == 0:
        return 0
    conn.executemany("INSERT INTO oplog (collection_id, label) VALUES (?, ?)", [(collection_id, int(l)) for l in labels])
    return conn.execute("SELECT last_insert_rowid()").fetchone()[0]
