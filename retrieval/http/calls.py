"""The client half of the wire: each Backend verb as a :class:`~retrieval.http.wire.Call` (sans-IO).

``Calls`` has one method per verb of :class:`retrieval.backend.Backend`, with the same arguments;
each says which route and which collection, and takes its body encoding and its answer decoding
from the verb's entry in :data:`retrieval.http.verbs.VERBS` (the table the server parses with).
The sync and async transports differ only in how they send a ``Call`` (``retrieval.http.transport``).
"""

from __future__ import annotations

from typing import Any, Sequence

from retrieval.config import CollectionConfig
from retrieval.http.verbs import VERBS
from retrieval.http.wire import Call, configuration_update_to_wire
from retrieval.types import CollectionRecord, GetRequest, QueryRequest, RecordBatch


def _call(verb: str, *args: Any, params: dict | None = None, **path: str) -> Call:
    """The call for ``verb``: its body encoded from ``args`` (when it takes one), its answer read back."""
    spec = VERBS[verb]
    body = spec.encode(*args) if spec.encode is not None else None
    return Call.to(verb, body=body, params=params, decode=spec.read, **path)


def _ref(collection: CollectionRecord) -> dict[str, str]:
    return {"tenant": collection.tenant, "database": collection.database, "collection": collection.id}


def _page(limit: int | None, offset: int) -> dict[str, Any]:
    return {"limit": limit, "offset": offset or None}


class Calls:
    """Requests for every Backend verb (see ``retrieval.backend.Backend`` for their meaning)."""

    # ------------------------------------------------------------------ system
    def heartbeat(self) -> Call:
        return _call("heartbeat")

    def get_version(self) -> Call:
        return _call("get_version")

    def pre_flight_checks(self) -> Call:
        return _call("pre_flight_checks")

    def reset(self) -> Call:
        return _call("reset")

    def get_user_identity(self) -> Call:
        return _call("get_user_identity")

    # ------------------------------------------------------- tenants/databases
    def create_tenant(self, name: str) -> Call:
        return _call("create_tenant", name)

    def get_tenant(self, name: str) -> Call:
        return _call("get_tenant", tenant=name)

    def create_database(self, name: str, tenant: str) -> Call:
        return _call("create_database", name, tenant=tenant)

    def get_database(self, name: str, tenant: str) -> Call:
        return _call("get_database", tenant=tenant, database=name)

    def list_databases(self, tenant: str, limit: int | None, offset: int) -> Call:
        return _call("list_databases", tenant=tenant, params=_page(limit, offset))

    def delete_database(self, name: str, tenant: str) -> Call:
        return _call("delete_database", tenant=tenant, database=name)

    # ------------------------------------------------------------- collections
    def create_collection(
        self, tenant: str, database: str, name: str, config: CollectionConfig, metadata: dict | None, get_or_create: bool
    ) -> Call:
        return _call("create_collection", name, config, metadata, get_or_create, tenant=tenant, database=database)

    def get_collection(self, tenant: str, database: str, name: str) -> Call:
        return _call("get_collection", tenant=tenant, database=database, collection=name)

    def get_collection_by_id(self, tenant: str, database: str, collection_id: str) -> Call:
        return _call("get_collection_by_id", tenant=tenant, database=database, collection=collection_id)

    def list_collections(self, tenant: str, database: str, limit: int | None, offset: int) -> Call:
        return _call("list_collections", tenant=tenant, database=database, params=_page(limit, offset))

    def count_collections(self, tenant: str, database: str) -> Call:
        return _call("count_collections", tenant=tenant, database=database)

    def modify_collection(
        self, collection: CollectionRecord, name: str | None, metadata: dict | None, config: CollectionConfig | None
    ) -> Call:
        update = None
        if config is not None:
            update = configuration_update_to_wire(collection.config, config)
        # New metadata replaces the old: the verb stores the collection's loader in it again.
        loader = collection.config.data_loader
        call = _call("modify_collection", name, metadata, update, loader, **_ref(collection))
        # chromadb's server answers with an empty object: read the collection back by id.
        call.then = lambda answer: self.get_collection_by_id(collection.tenant, collection.database, collection.id)
        return call

    def delete_collection(self, tenant: str, database: str, name: str) -> Call:
        return _call("delete_collection", tenant=tenant, database=database, collection=name)

    # ----------------------------------------------------------------- records
    def write(self, collection: CollectionRecord, mode: str, batch: RecordBatch) -> Call:
        return _call(mode, batch, **_ref(collection))

    def delete(
        self, collection: CollectionRecord, ids: list[str] | None, where: Any, where_document: Any, limit: int | None
    ) -> Call:
        return _call("delete", ids, where, where_document, limit, **_ref(collection))

    def count(self, collection: CollectionRecord) -> Call:
        return _call("count", **_ref(collection))

    def get(self, collection: CollectionRecord, request: GetRequest) -> Call:
        return _call("get", request, **_ref(collection))

    def query(self, collection: CollectionRecord, request: QueryRequest) -> Call:
        return _call("query", request, **_ref(collection))

    def search(self, collection: CollectionRecord, searches: Sequence[Any]) -> Call:
        return _call("search", searches, **_ref(collection))
