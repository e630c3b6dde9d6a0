"""The Backend seam (DESIGN section 7): the verbs ``Client`` and ``Collection`` handles call.

The handles validate input once, embed documents / images / URIs with the collection's embedding
function, and then call one backend with typed requests. Two implementations:

- ``retrieval.store.backend.EmbeddedBackend``: the storage engine in this process;
- ``retrieval.http.transport.HttpBackend``: Chroma's v2 REST API over HTTP (our server or chromadb's).

Nothing that crosses the seam carries engine internals (hnswlib labels, SQLite rows): collections are
``CollectionRecord``s with a typed ``CollectionConfig``, filters are parsed ``Where`` /
``WhereDocument`` trees, written records are immutable ``RecordBatch``es, read ones ``Records`` columns.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from retrieval.config import CollectionConfig
from retrieval.query.filters import Where, WhereDocument
from retrieval.types import CollectionRecord, GetRequest, QueryAnswer, QueryRequest, RecordBatch, Records

WRITE_MODES = ("add", "update", "upsert")


class Backend(Protocol):
    """What a client handle needs from storage, local or remote."""

    # ------------------------------------------------------------------ system
    def heartbeat(self) -> int: ...

    def get_version(self) -> str: ...

    def get_max_batch_size(self) -> int: ...

    def reset(self) -> bool:
        """Delete everything; raises NotAllowedError unless the backend's owner allowed it."""
        ...

    def close(self) -> None: ...

    # ------------------------------------------------------- tenants/databases
    def create_tenant(self, name: str) -> None: ...

    def get_tenant(self, name: str) -> str: ...

    def create_database(self, name: str, tenant: str) -> None: ...

    def get_database(self, name: str, tenant: str) -> dict[str, Any]: ...

    def list_databases(self, tenant: str, limit: int | None, offset: int) -> list[dict[str, Any]]: ...

    def delete_database(self, name: str, tenant: str) -> None: ...

    # ------------------------------------------------------------- collections
    def create_collection(
        self,
        tenant: str,
        database: str,
        name: str,
        config: CollectionConfig,
        metadata: dict | None,
        get_or_create: bool,
    ) -> CollectionRecord: ...

    def get_collection(self, tenant: str, database: str, name: str) -> CollectionRecord: ...

    def get_collection_by_id(self, tenant: str, database: str, collection_id: str) -> CollectionRecord: ...

    def list_collections(self, tenant: str, database: str, limit: int | None, offset: int) -> list[CollectionRecord]: ...

    def count_collections(self, tenant: str, database: str) -> int: ...

    def modify_collection(
        self,
        collection: CollectionRecord,
        name: str | None,
        metadata: dict | None,
        config: CollectionConfig | None,
    ) -> CollectionRecord: ...

    def delete_collection(self, tenant: str, database: str, name: str) -> None: ...

    # ----------------------------------------------------------------- records
    def write(self, collection: CollectionRecord, mode: str, batch: RecordBatch) -> None:
        """``mode`` is one of ``WRITE_MODES``; the batch is embedded and validated."""
        ...

    def delete(
        self,
        collection: CollectionRecord,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None,
    ) -> int:
        """Delete matching records (at most ``limit``); returns how many were deleted."""
        ...

    def count(self, collection: CollectionRecord) -> int: ...

    def get(self, collection: CollectionRecord, request: GetRequest) -> Records: ...

    def query(self, collection: CollectionRecord, request: QueryRequest) -> QueryAnswer: ...

    def search(self, collection: CollectionRecord, searches: Sequence[Any]) -> Any:
        """Evaluate ``Search`` requests whose Knn queries are already vectors; a ``SearchResult``."""
        ...
