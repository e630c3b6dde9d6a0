"""``EmbeddedBackend``: the Backend seam over the storage engine in this process.

It owns the translation between the seam's types and the engine's: records leave without their
hnswlib labels, and Search requests are evaluated here, next to the data, so the HTTP server can
answer ``POST .../search`` with one engine call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from retrieval.config import CollectionConfig
from retrieval.errors import InvalidArgumentError, NotAllowedError, NotFoundError
from retrieval.query.filters import Where, WhereDocument
from retrieval.search.execute import execute_many
from retrieval.store import shared_engines
from retrieval.store.engine import Engine
from retrieval.store.reads import Rows
from retrieval.telemetry import span
from retrieval.types import CollectionRecord, GetRequest, QueryAnswer, QueryRequest, RecordBatch, Records
from retrieval.validation import MAX_BATCH_SIZE

DENSE_KEY = "#embedding"


class EmbeddedBackend:
    """The engine behind the Backend protocol (see ``retrieval.backend``).

    Args:
        engine: the storage engine (persistent or in-memory).
        allow_reset: whether ``reset()`` may delete everything.
        release: called by ``close()`` instead of closing the engine (shared engines are
            reference-counted by their owner).
    """

    def __init__(self, engine: Engine, *, allow_reset: bool = False, release: Any = None):
        self.engine = engine
        self.allow_reset = allow_reset
        self._release = release

    # ------------------------------------------------------------------ system

    def heartbeat(self) -> int:
        return time.time_ns()

    def get_version(self) -> str:
        from retrieval import __version__

        return __version__

    def get_max_batch_size(self) -> int:
        return MAX_BATCH_SIZE

    def reset(self) -> bool:
        if not self.allow_reset:
            raise NotAllowedError(
                "reset() is disabled: it deletes every collection. Create the client with "
                "Settings(allow_reset=True) to allow it (ALLOW_RESET=TRUE for a server)."
            )
        self.engine.reset()
        return True

    def close(self, budget_s: float | None = None) -> None:
        """Close the store; ``budget_s`` bounds the indexing and checkpoint a large backlog owes
        (the rest is replayed from the oplog on the next open)."""
        if self._release is not None:
            self._release(self.engine, budget_s)
        else:
            self.engine.close(budget_s)

    def verify(self, repair: bool = False, sample: int | None = 1000) -> list[Any]:
        """Index-versus-SQLite check of every collection (see ``retrieval.store.verify``)."""
        return self.engine.verify(repair=repair, sample=sample)

    # ------------------------------------------------------- tenants/databases

    def create_tenant(self, name: str) -> None:
        self.engine.namespaces.create_tenant(name)

    def get_tenant(self, name: str) -> str:
        return self.engine.namespaces.get_tenant(name)

    def create_database(self, name: str, tenant: str) -> None:
        self.engine.namespaces.create_database(name, tenant)

    def get_database(self, name: str, tenant: str) -> dict[str, Any]:
        return self.engine.namespaces.get_database(name, tenant)

    def list_databases(self, tenant: str, limit: int | None, offset: int) -> list[dict[str, Any]]:
        return self.engine.namespaces.list_databases(tenant, limit, offset)

    def delete_database(self, name: str, tenant: str) -> None:
        self.engine.delete_database(name, tenant)

    # ------------------------------------------------------------- collections

    def create_collection(
        self, tenant: str, database: str, name: str, config: CollectionConfig, metadata: dict | None, get_or_create: bool
    ) -> CollectionRecord:
        self.engine.namespaces.require_database(tenant, database)
        record, _ = self.engine.create_collection(
            name, config, metadata, get_or_create=get_or_create, tenant=tenant, database=database
        )
        return record

    def get_collection(self, tenant: str, database: str, name: str) -> CollectionRecord:
        return self.engine.get_collection(name, tenant, database)

    def get_collection_by_id(self, tenant: str, database: str, collection_id: str) -> CollectionRecord:
        record = self.engine.get_collection_by_id(collection_id)
        if record.tenant != tenant or record.database != database:
            raise NotFoundError(
                f"collection {collection_id!r} does not exist in tenant {tenant!r} / database {database!r}"
            )
        return record

    def list_collections(self, tenant: str, database: str, limit: int | None, offset: int) -> list[CollectionRecord]:
        return self.engine.list_collections(limit, offset, tenant, database)

    def count_collections(self, tenant: str, database: str) -> int:
        return self.engine.count_collections(tenant, database)

    def modify_collection(
        self, collection: CollectionRecord, name: str | None, metadata: dict | None, config: CollectionConfig | None
    ) -> CollectionRecord:
        return self.engine.modify_collection(collection.id, name=name, metadata=metadata, config=config)

    def delete_collection(self, tenant: str, database: str, name: str) -> None:
        self.engine.delete_collection(name, tenant, database)

    # ----------------------------------------------------------------- records

    def write(self, collection: CollectionRecord, mode: str, batch: RecordBatch) -> None:
        with span("retrieval.commit", **_attrs(collection), mode=mode, records=len(batch.ids)):
            self._write(collection, mode, batch)

    def _write(self, collection: CollectionRecord, mode: str, batch: RecordBatch) -> None:
        if mode == "add":
            self.engine.add(collection, batch)
        elif mode == "update":
            self.engine.update(collection, batch)
        elif mode == "upsert":
            self.engine.upsert(collection, batch)
        else:
            raise InvalidArgumentError(f"write mode must be add, update or upsert; got {mode!r}")

    def delete(
        self,
        collection: CollectionRecord,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None = None,
    ) -> int:
        with span("retrieval.commit", **_attrs(collection), mode="delete", records=None if ids is None else len(ids)):
            return self.engine.delete(collection, ids, where, where_document, limit)

    def count(self, collection: CollectionRecord) -> int:
        return self.engine.reads.count(collection)

    def get(self, collection: CollectionRecord, request: GetRequest) -> Records:
        rows = self.engine.reads.get(
            collection,
            ids=request.ids,
            where=request.where,
            where_document=request.where_document,
            limit=request.limit,
            offset=request.offset,
            fields=set(request.include),
        )
        return _records(rows)

    def query(self, collection: CollectionRecord, request: QueryRequest) -> QueryAnswer:
        with span("retrieval.query", **_attrs(collection), queries=len(request.embeddings), n_results=request.n_results):
            return self._query(collection, request)

    def _query(self, collection: CollectionRecord, request: QueryRequest) -> QueryAnswer:
        per_query, distances = self.engine.reads.query(
            collection,
            request.embeddings,
            request.n_results,
            ids=request.ids,
            where=request.where,
            where_document=request.where_document,
            fields=set(request.include),
        )
        return QueryAnswer(records=[_records(rows) for rows in per_query], distances=distances)

    def search(self, collection: CollectionRecord, searches: Sequence[Any]) -> Any:
        return execute_many(searches, _StoreSearch(self, collection))


def open_embedded_backend(persist_directory: str | None, *, synchronous: str = "FULL", allow_reset: bool = False) -> EmbeddedBackend:
    """An in-memory backend (``persist_directory=None``) or the shared engine of a persist path."""
    if persist_directory is None:
        return EmbeddedBackend(Engine(None), allow_reset=allow_reset)
    engine = shared_engines.acquire(Path(persist_directory), synchronous)
    return EmbeddedBackend(engine, allow_reset=allow_reset, release=shared_engines.release)


def _attrs(collection: CollectionRecord) -> dict[str, Any]:
    """Span attributes naming a collection (retrieval.telemetry)."""
    return {"collection": collection.name, "collection_id": collection.id, "tenant": collection.tenant,
            "database": collection.database}


def _records(rows: Rows) -> Records:
    return Records(
        ids=rows.ids, embeddings=rows.embeddings, documents=rows.documents, uris=rows.uris, metadatas=rows.metadatas
    )


# Search field -> stored column. Behind the seam ``data`` carries the record's URI: the collection
# handle loads it with its data loader (a backend never reads a URI).
_COLUMN_OF_FIELD = {
    "document": "documents",
    "embedding": "embeddings",
    "metadata": "metadatas",
    "uri": "uris",
    "data": "uris",
}


class _StoreSearch:
    """The Search evaluator's engine protocol (``retrieval.search.execute.SearchEngine``) over one
    collection. Knn queries arrive embedded: dense vectors, or ``SparseVector``s for a sparse key."""

    def __init__(self, backend: EmbeddedBackend, collection: CollectionRecord):
        self.backend = backend
        self.collection = collection
        sparse = collection.config.sparse
        self.sparse_key = sparse.key if sparse is not None else None

    def knn(self, query: Any, *, key: str, limit: int, where: Any) -> list[tuple[str, float]]:
        if key == DENSE_KEY:
            if isinstance(query, str) or hasattr(query, "indices") or np.ndim(query) != 1:
                raise InvalidArgumentError(
                    f"a '#embedding' Knn query must be a dense vector here (texts and images are embedded by the "
                    f"collection handle); got {type(query).__name__}"
                )
            vector = np.asarray(query, dtype=np.float32).reshape(1, -1)
            answer = self.backend.query(self.collection, QueryRequest(embeddings=vector, n_results=limit, where=where))
            return list(zip(answer.records[0].ids, answer.distances[0].tolist()))
        if self.sparse_key is not None and key == self.sparse_key:
            from embedders.sparse import SparseVector

            if not isinstance(query, SparseVector):
                raise InvalidArgumentError(
                    f"a sparse Knn query for key {key!r} must be a SparseVector here; got {type(query).__name__}"
                )
            return self.backend.engine.sparse_query(self.collection, key, query, limit, where=where)
        known = [DENSE_KEY] + ([self.sparse_key] if self.sparse_key else [])
        raise InvalidArgumentError(
            f"Knn key {key!r} is not an index of collection {self.collection.name!r}; use one of {known} "
            "(a sparse key is created with configuration={'sparse': {'key': ..., 'embedding_function': ...}})"
        )

    def scan(self, *, where: Any, limit: int | None, offset: int) -> list[str]:
        request = GetRequest(where=where, limit=limit, offset=offset)
        return self.backend.get(self.collection, request).ids

    def fetch(self, ids: list[str], fields: set[str]) -> dict[str, dict]:
        columns = tuple({_COLUMN_OF_FIELD[f] for f in fields if f in _COLUMN_OF_FIELD})
        got = self.backend.get(self.collection, GetRequest(ids=ids, include=columns))
        return {
            id_: {f: getattr(got, _COLUMN_OF_FIELD[f])[position] for f in fields if f in _COLUMN_OF_FIELD}
            for position, id_ in enumerate(got.ids)
        }

