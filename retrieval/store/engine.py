"""The embedded storage engine: collections and records over SQLite plus per-collection caches.

Write path (DESIGN section 4): the caller has validated everything; the engine checks what needs
stored state (dimension, existing ids), commits the whole batch in one ``BEGIN IMMEDIATE``
transaction, queues it in the collection's pending tail (found by queries from then on), then
returns (the acknowledgement). The graph takes it in the background (graph_builder.py); closing
waits for no more than the builder's step in flight.

The engine's other parts: ``reads`` (reads.py: get, count, query planning), ``namespaces``
(namespaces.py: tenants and databases), each collection's ``CollectionState`` (collection_state.py:
graph, pending tail, vector store) with its ``upkeep`` (graph_upkeep.py: the background graph work)
and recovery (recovery.py: the oplog replayed at load).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.config import CollectionConfig
from retrieval.errors import NotFoundError, UniqueConstraintError
from retrieval.query.filter_sql import METADATA_INDEX_DELETE, collection_filter
from retrieval.store.collection_state import CollectionState
from retrieval.store.db import Database, id_chunks
from retrieval.store.graph_builder import shared_builder
from retrieval.store.namespaces import DEFAULT_DATABASE, DEFAULT_TENANT, Namespaces
from retrieval.store.reads import Reader
from retrieval.store.record_rows import (
    changed_vectors,
    existing_records,
    insert_records,
    log_changes,
    next_label,
    to_json,
    update_records,
)
from retrieval.store.vector_file import VectorFileError
from retrieval.store.vector_store import DIRECT_WRITE_MIN, Candidates
from retrieval.store.verify import DEFAULT_SAMPLE, VerifyReport, verify_collection
from retrieval.store.sparse_index import (
    SPARSE_INDEX_DELETE_COLLECTION,
    SPARSE_INDEX_DELETE_LABEL,
    sparse_doc_count,
    sparse_knn,
)
from retrieval.telemetry import span
from retrieval.types import CollectionRecord, RecordBatch
from retrieval.validation import check_dimension

logger = logging.getLogger("retrieval")






class Engine:
    """One database (persistent directory or in-memory) and the collections in it."""

    def __init__(self, directory: Path | None, synchronous: str = "FULL"):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.db = Database(directory, synchronous=synchronous)
        self.namespaces = Namespaces(self.db)  # tenants and databases
        self.reads = Reader(self.db, self)  # get, count and query
        self._states: dict[str, CollectionState] = {}
        self._states_lock = threading.Lock()
        self._deleted: set[str] = set()  # ids of collections deleted while this engine was open
        self.builder = shared_builder()  # the process's background thread for owed graph work
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
                (collection_id, name, tenant, database, config.to_json(), to_json(metadata), time.time()),
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
        state.cancelled = True  # a background sweep of it stops at its next page
        with state.graph_lock, state.lock:
            with self.db.transaction() as conn:
                _delete_collection_rows(conn, record.id)
            self._deleted.add(record.id)
            state.destroy()
        with self._states_lock:
            self._states.pop(record.id, None)

    def delete_database(self, name: str, tenant: str) -> None:
        """Delete a database and every collection in it."""
        self.namespaces.get_database(name, tenant)
        for record in self.list_collections(None, 0, tenant, name):
            self.delete_collection(record.name, tenant, name)
        self.namespaces.forget_database(name, tenant)

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
                conn.execute("UPDATE collections SET metadata = ? WHERE id = ?", (to_json(metadata), collection_id))
            if config is not None:
                conn.execute("UPDATE collections SET configuration = ? WHERE id = ?", (config.to_json(), collection_id))
        if config is not None:
            state = self.state(record)
            with state.lock:
                state.set_config(config.hnsw)
        return self.get_collection_by_id(collection_id)

    def state(self, record: CollectionRecord) -> CollectionState:
        self.require_live(record)
        with self._states_lock:
            state = self._states.get(record.id)
            if state is None:
                state = CollectionState(self.db, record.id, record.config.hnsw, record.dimension, self.builder)
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

    def require_live(self, record: CollectionRecord) -> None:
        """Refuse a stale handle to a deleted collection: a write through it would be acknowledged,
        then unreachable. Writers call this under the state lock, which delete_collection holds."""
        if record.id in self._deleted:
            raise NotFoundError(
                f"collection {record.name!r} was deleted; get or create it again (client.get_or_create_collection)"
            )

    def _write(self, record: CollectionRecord, batch: RecordBatch, mode: str) -> int:
        state = self.state(record)
        state.wait_for_room()
        with state.lock:
            self.require_live(record)
            if batch.embeddings is not None:
                check_dimension(batch.embeddings, state.dimension, record.name)
            state.begin_write()
            with self.db.transaction() as conn:
                existing = existing_records(conn, record.id, batch.ids)
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
                changed = changed_vectors(batch, old_positions, existing, lambda labels: state.vectors.read(labels))
                first = next_label(conn)
                new_labels = np.arange(first, first + len(new_positions), dtype=np.int64)
                labels = np.concatenate(
                    [new_labels, np.asarray([existing[batch.ids[p]][0] for p in changed], dtype=np.int64)]
                )
                positions = new_positions + changed
                vectors = batch.embeddings[positions] if positions else None
                slots = None
                if state.durable and state.dimension is not None and len(positions) >= DIRECT_WRITE_MIN:
                    # A large write's vectors go straight into the vector file (one more fsync, no
                    # second pass through SQLite); small ones wait in SQLite for a batched move.
                    slots = state.vectors.append_in(conn, labels, vectors)
                insert_records(conn, record.id, batch, new_positions, new_labels, slots)
                update_records(conn, record.id, batch, old_positions, existing, set(changed), labels, slots)
                last_seq = log_changes(conn, record.id, labels, state.durable)
            if first_vectors:  # only once committed: a rolled-back first write leaves no dimension behind
                state.dimension = batch.embeddings.shape[1]
            with span("retrieval.index", collection=record.name, records=len(labels)):
                state.apply(labels, vectors, [], _first_seq(last_seq, len(labels)), last_seq, count_delta=len(new_positions))
            if slots is None:
                state.left_in_sqlite(len(labels))
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
            self.require_live(record)
            state.begin_write()
            with self.db.transaction() as conn:
                labels = self.select_labels(conn, record.id, ids, where, where_document)
                if limit is not None:
                    labels = sorted(labels)[:limit]
                if not labels:
                    return 0
                param = json.dumps(labels)
                conn.execute("DELETE FROM records WHERE label IN (SELECT value FROM json_each(?))", (param,))
                conn.execute("DELETE FROM vectors WHERE label IN (SELECT value FROM json_each(?))", (param,))
                conn.executemany(METADATA_INDEX_DELETE, [(label,) for label in labels])
                conn.executemany(SPARSE_INDEX_DELETE_LABEL, [(label,) for label in labels])
                last_seq = log_changes(conn, record.id, np.asarray(labels), state.durable)
            state.apply(
                np.zeros(0, dtype=np.int64), None, labels, _first_seq(last_seq, len(labels)), last_seq, count_delta=-len(labels)
            )
            return len(labels)

    def select_labels(self, conn, collection_id: str, ids, where, where_document) -> list[int]:
        """Labels of the collection's records matching ``ids`` and the filters (the caller holds ``conn``)."""
        return [row[0] for row in self._matching(conn, "r.label", collection_id, ids, where, where_document)]

    def select_candidates(self, conn, collection_id: str, ids, where, where_document) -> Candidates:
        """The matching records' labels with their vector-file slots, in one pass (the caller holds ``conn``)."""
        rows = self._matching(conn, "r.label, coalesce(r.slot, -1)", collection_id, ids, where, where_document)
        return Candidates.from_rows(rows)

    @staticmethod
    def _matching(conn, columns: str, collection_id: str, ids, where, where_document) -> list[tuple]:
        sql, args = collection_filter(collection_id, where, where_document, by_ids=ids is not None)
        query = f"SELECT {columns} FROM records r WHERE {sql}"
        if ids is None:
            return conn.execute(query, args).fetchall()
        rows = []
        for placeholders, chunk in id_chunks(ids):
            rows += conn.execute(f"{query} AND r.id IN ({placeholders})", args + chunk).fetchall()
        return rows

    def sparse_query(
        self, record: CollectionRecord, key: str, query: Any, limit: int, where: Any = None, where_document: Any = None
    ) -> list[tuple[str, float]]:
        """Top ``limit`` (id, -score) pairs of a sparse (BM25) index, scored with IDF."""
        state = self.state(record)
        with state.lock, self.db.reading() as conn:
            candidates = None
            if where is not None or where_document is not None:
                candidates = set(self.select_labels(conn, record.id, None, where, where_document))
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
            try:
                state.upkeep.wait_until_indexed(sweep=True)  # verify checks the graph itself: first the owed work
            except VectorFileError:
                pass  # verify_collection reports it
            with state.graph_lock, state.lock:
                reports.append(verify_collection(state, record, repair=repair, sample=sample))
        return reports

    # --------------------------------------------------------------- lifecycle

    def flush(self) -> None:
        """Finish all owed graph work and checkpoint every collection: O(collections' size), explicit only."""
        for state in list(self._states.values()):
            state.upkeep.flush()

    def reset(self) -> None:
        """Delete every collection and record."""
        with self._states_lock:
            states = list(self._states.values())
            self._states.clear()
        for state in states:
            state.cancelled = True
            with state.graph_lock, state.lock:
                state.destroy()
        with self.db.transaction() as conn:
            for (collection_id,) in conn.execute("SELECT id FROM collections").fetchall():
                _delete_collection_rows(conn, collection_id)
                self._deleted.add(collection_id)
                if self.db.directory is not None:
                    CollectionState(self.db, collection_id, CollectionConfig().hnsw, None, self.builder).destroy()

    def stop_background(self) -> None:
        """Cancel this engine's owed graph work and wait for the step in flight (what a crash leaves)."""
        for state in list(self._states.values()):
            state.stop_background()

    def close(self, budget_s: float | None = None) -> None:
        """Finish what is owed only where a checkpoint is due anyway, then stop and close.

        Costs what changed, not what exists: after a small write nothing is swept or saved
        (acknowledged writes are in SQLite and the oplog; the next open queues those the last
        checkpoint lacks). A collection whose changes since its checkpoint reach the checkpoint
        threshold (a fifth of it) is indexed and checkpointed first, as the builder would have done:
        O(N) for at least N/5 changes, so a bulk load reopens without replaying it.

        ``budget_s`` bounds that work (``retrieval run`` on SIGTERM passes its shutdown budget): what
        is not indexed and saved by then is replayed from the oplog on the next open.
        """
        if self.closed:
            return
        try:
            deadline = None if budget_s is None else time.monotonic() + budget_s
            for state in list(self._states.values()):
                state.upkeep.checkpoint_if_due(deadline)
            self.stop_background()
            for state in list(self._states.values()):
                state.close_files()
        finally:
            self.closed = True
            self._states.clear()
            self.db.close()


def _first_seq(last_seq: int, entries: int) -> int:
    """The first oplog seq of a write that logged ``entries`` rows ending at ``last_seq`` (one writer:
    a transaction's rows are consecutive); 0 where nothing is logged (in-memory collections)."""
    return last_seq - entries + 1 if last_seq else 0


_SELECT_COLLECTION = "SELECT id, name, tenant, database, configuration, metadata, dimension FROM collections"


def _collection(row) -> CollectionRecord:
    return CollectionRecord(
        id=row[0],
        name=row[1],
        tenant=row[2],
        database=row[3],
        config=CollectionConfig.from_json(row[4]),  # parsed once, where the record enters
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
