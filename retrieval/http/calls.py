"""The client half of the wire: each Backend verb as a :class:`~retrieval.http.wire.Call` (sans-IO).

``Calls`` has one method per verb of :class:`retrieval.backend.Backend`, with the same arguments;
each returns the request to make and the decoder of its answer. The sync and async transports
differ only in how they send a ``Call`` (``retrieval.http.transport``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from retrieval.config import CollectionConfig
from retrieval.http.wire import (
    Call,
    collection_from_wire,
    configuration_update_to_wire,
    embeddings_from_answer,
    embeddings_to_base64,
    public_configuration,
)
from retrieval.loader_metadata import with_loader
from retrieval.types import CollectionRecord, GetRequest, QueryAnswer, QueryRequest, RecordBatch, Records


def _tree(value: Any) -> Any:
    return None if value is None else value.to_dict()


def _ref(collection: CollectionRecord) -> dict[str, str]:
    return {"tenant": collection.tenant, "database": collection.database, "collection": collection.id}


def records_from_wire(answer: dict[str, Any]) -> Records:
    return Records(
        ids=answer["ids"],
        embeddings=embeddings_from_answer(answer.get("embeddings")),
        documents=answer.get("documents"),
        uris=answer.get("uris"),
        metadatas=answer.get("metadatas"),
    )


def query_answer_from_wire(answer: dict[str, Any]) -> QueryAnswer:
    n = len(answer["ids"])

    def column(name: str) -> list:
        values = answer.get(name)
        return values if values is not None else [None] * n

    records = [
        Records(
            ids=ids,
            embeddings=embeddings_from_answer(embeddings),
            documents=documents,
            uris=uris,
            metadatas=metadatas,
        )
        for ids, embeddings, documents, uris, metadatas in zip(
            answer["ids"], column("embeddings"), column("documents"), column("uris"), column("metadatas")
        )
    ]
    distances = [np.asarray(d if d is not None else [], dtype=np.float32) for d in column("distances")]
    return QueryAnswer(records=records, distances=distances)


def _search_result(answer: dict[str, Any]) -> Any:
    from retrieval.search.result import SearchResult

    return SearchResult(answer)


class Calls:
    """Requests for every Backend verb (see ``retrieval.backend.Backend`` for their meaning)."""

    # ------------------------------------------------------------------ system
    def heartbeat(self) -> Call:
        return Call.to("heartbeat", decode=lambda a: int(a["nanosecond heartbeat"]))

    def get_version(self) -> Call:
        return Call.to("get_version", decode=str)

    def pre_flight_checks(self) -> Call:
        return Call.to("pre_flight_checks")

    def reset(self) -> Call:
        return Call.to("reset", decode=bool)

    def get_user_identity(self) -> Call:
        return Call.to("get_user_identity")

    # ------------------------------------------------------- tenants/databases
    def create_tenant(self, name: str) -> Call:
        return Call.to("create_tenant", body={"name": name}, decode=lambda a: None)

    def get_tenant(self, name: str) -> Call:
        return Call.to("get_tenant", tenant=name, decode=lambda a: a["name"])

    def create_database(self, name: str, tenant: str) -> Call:
        return Call.to("create_database", tenant=tenant, body={"name": name}, decode=lambda a: None)

    def get_database(self, name: str, tenant: str) -> Call:
        return Call.to("get_database", tenant=tenant, database=name, decode=_database)

    def list_databases(self, tenant: str, limit: int | None, offset: int) -> Call:
        return Call.to(
            "list_databases", tenant=tenant, params={"limit": limit, "offset": offset or None},
            decode=lambda a: [_database(d) for d in a],
        )

    def delete_database(self, name: str, tenant: str) -> Call:
        return Call.to("delete_database", tenant=tenant, database=name, decode=lambda a: None)

    # ------------------------------------------------------------- collections
    def create_collection(
        self, tenant: str, database: str, name: str, config: CollectionConfig, metadata: dict | None, get_or_create: bool
    ) -> Call:
        body = {
            "name": name,
            "metadata": with_loader(metadata, config.data_loader),  # Chroma's server drops configuration.data_loader
            "configuration": {**public_configuration(config), "hnsw": config.hnsw.to_dict(include_host=False)},
            "schema": None,
            "get_or_create": get_or_create,
        }
        return Call.to("create_collection", tenant=tenant, database=database, body=body, decode=collection_from_wire)

    def get_collection(self, tenant: str, database: str, name: str) -> Call:
        return Call.to("get_collection", tenant=tenant, database=database, collection=name, decode=collection_from_wire)

    def get_collection_by_id(self, tenant: str, database: str, collection_id: str) -> Call:
        return Call.to(
            "get_collection_by_id", tenant=tenant, database=database, collection=collection_id,
            decode=collection_from_wire,
        )

    def list_collections(self, tenant: str, database: str, limit: int | None, offset: int) -> Call:
        return Call.to(
            "list_collections", tenant=tenant, database=database, params={"limit": limit, "offset": offset or None},
            decode=lambda a: [collection_from_wire(c) for c in a],
        )

    def count_collections(self, tenant: str, database: str) -> Call:
        return Call.to("count_collections", tenant=tenant, database=database, decode=int)

    def modify_collection(
        self, collection: CollectionRecord, name: str | None, metadata: dict | None, config: CollectionConfig | None
    ) -> Call:
        update = None
        if config is not None:
            update = configuration_update_to_wire(CollectionConfig.from_json(collection.configuration_json), config)
        if metadata is not None:  # new metadata replaces the old: keep the loader stored in it
            metadata = with_loader(metadata, CollectionConfig.from_json(collection.configuration_json).data_loader)
        body = {"new_name": name, "new_metadata": metadata, "new_configuration": update}
        # chromadb's server answers with an empty object: read the collection back by id.
        call = Call.to("modify_collection", **_ref(collection), body=body)
        call.then = lambda answer: self.get_collection_by_id(collection.tenant, collection.database, collection.id)
        return call

    def delete_collection(self, tenant: str, database: str, name: str) -> Call:
        return Call.to("delete_collection", tenant=tenant, database=database, collection=name, decode=lambda a: None)

    # ----------------------------------------------------------------- records
    def write(self, collection: CollectionRecord, mode: str, batch: RecordBatch) -> Call:
        body: dict[str, Any] = {
            "ids": batch.ids,
            "embeddings": None if batch.embeddings is None else embeddings_to_base64(batch.embeddings),
            "metadatas": _absent_keys_dropped(batch.metadatas) if mode == "add" else batch.metadatas,
            "documents": batch.documents,
            "uris": batch.uris,
        }
        if batch.sparse:  # retrieval's extension: sparse vectors computed by the client
            body["sparse"] = batch.sparse
        return Call.to(mode, **_ref(collection), body=body, decode=lambda a: None)

    def delete(
        self, collection: CollectionRecord, ids: list[str] | None, where: Any, where_document: Any, limit: int | None
    ) -> Call:
        body: dict[str, Any] = {"ids": ids, "where": _tree(where), "where_document": _tree(where_document)}
        if limit is not None:
            body["limit"] = limit
        return Call.to("delete", **_ref(collection), body=body, decode=lambda a: int((a or {}).get("deleted", 0)))

    def count(self, collection: CollectionRecord) -> Call:
        return Call.to("count", **_ref(collection), decode=int)

    def get(self, collection: CollectionRecord, request: GetRequest) -> Call:
        body = {
            "ids": request.ids,
            "where": _tree(request.where),
            "where_document": _tree(request.where_document),
            "limit": request.limit,
            "offset": request.offset or None,
            "include": list(request.include),
        }
        return Call.to("get", **_ref(collection), body=body, decode=records_from_wire)

    def query(self, collection: CollectionRecord, request: QueryRequest) -> Call:
        body = {
            "ids": request.ids,
            # chromadb's server takes query vectors as lists only.
            "query_embeddings": np.asarray(request.embeddings, dtype=np.float32),
            "n_results": request.n_results,
            "where": _tree(request.where),
            "where_document": _tree(request.where_document),
            "include": list(request.include) + ["distances"],
        }
        return Call.to("query", **_ref(collection), body=body, decode=query_answer_from_wire)

    def search(self, collection: CollectionRecord, searches: Sequence[Any]) -> Call:
        body = {"searches": [s.to_dict() for s in searches], "read_level": "index_and_wal"}
        return Call.to("search", **_ref(collection), body=body, decode=_search_result)


def _absent_keys_dropped(metadatas: list | None) -> list | None:
    """In ``add``, a None value means the key is absent: leave it out, as chromadb's client does
    (chroma's server refuses a null there; in update/upsert a null deletes the key)."""
    if metadatas is None:
        return None
    return [None if m is None else ({k: v for k, v in m.items() if v is not None} or None) for m in metadatas]


def _database(answer: dict[str, Any]) -> dict[str, Any]:
    return {"id": answer.get("id"), "name": answer["name"], "tenant": answer["tenant"]}

