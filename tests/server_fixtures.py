"""Shared set-up for the server security, limits and fuzz tests: an in-process app with auth on,
two tenants holding one collection each, and one concrete request per route of the table."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from retrieval.http.wire import API_PREFIX, CHROMADB_ONLY, ROUTES
from retrieval.server.app import create_app
from retrieval.server.config import ServerConfig
from retrieval.store.backend import open_embedded_backend
from retrieval.types import GetRequest

ADMIN, USER_A, READER_A = "admin-token-0001", "user-a-token-0001", "reader-a-token-01"
TOKENS = [
    {"name": "admin", "token": ADMIN, "tenant": "*", "databases": ["*"], "actions": ["read", "write", "admin"]},
    {"name": "user-a", "token": USER_A, "tenant": "tenant-a", "databases": ["db-a"], "actions": ["read", "write", "admin"]},
    {"name": "reader-a", "token": READER_A, "tenant": "tenant-a", "databases": ["db-a"], "actions": ["read"]},
]
VECTORS = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    app: Any
    backend: Any
    ids: dict[str, str]  # collection name -> id


def make_world(extra_config: dict | None = None, *, allow_reset: bool = True) -> World:
    """An app over an in-memory engine with tenant-a/db-a/alpha and tenant-b/db-b/beta (3 records each)."""
    from retrieval.config import CollectionConfig

    backend = open_embedded_backend(None, allow_reset=allow_reset)
    ids = {}
    for tenant, database, name, prefix in (("tenant-a", "db-a", "alpha", "a"), ("tenant-b", "db-b", "beta", "b")):
        backend.create_tenant(tenant)
        backend.create_database(database, tenant)
        record = backend.create_collection(tenant, database, name, CollectionConfig(), {"owner": tenant}, False)
        from retrieval.types import RecordBatch
        import numpy as np

        backend.write(record, "add", RecordBatch(
            ids=[f"{prefix}{i}" for i in range(3)], embeddings=np.asarray(VECTORS, np.float32),
            metadatas=[{"secret": f"{tenant}-{i}"} for i in range(3)], documents=[f"{tenant} doc {i}" for i in range(3)],
            uris=None,
        ))
        ids[name] = record.id
    config = ServerConfig.from_dict({"auth": {"tokens": TOKENS}, "allow_reset": allow_reset, **(extra_config or {})}, environ={})
    return World(create_app(backend, config), backend, ids)


def snapshot(backend) -> dict:
    """Everything stored, to compare before and after refused requests."""
    out = {}
    for tenant in ("default_tenant", "tenant-a", "tenant-b"):
        for db in backend.list_databases(tenant, None, 0):
            for record in backend.list_collections(tenant, db["name"], None, 0):
                rows = backend.get(record, GetRequest(include=("documents", "metadatas", "embeddings")))
                out[(tenant, db["name"], record.name)] = (record.id, record.metadata, rows.ids, rows.documents, rows.metadatas,
                                                          rows.embeddings.tolist())
    return out


def requests_for(tenant: str, database: str, name: str, collection_id: str) -> dict[str, tuple[str, str, Any]]:
    """One valid request per route of the table, aimed at ``tenant/database`` and the collection
    (``name`` where the route takes a name, ``collection_id`` where it takes an id)."""
    bodies = {
        "create_tenant": {"name": "tenant-new"},
        "create_database": {"name": "db-new"},
        "create_collection": {"name": "gamma"},
        "modify_collection": {"new_metadata": {"x": 1}},
        "add": {"ids": ["new1"], "embeddings": [[0.5, 0.5, 0.0]]},
        "update": {"ids": ["a0", "b0"], "embeddings": [[0.1, 0.1, 0.1], [0.1, 0.1, 0.1]]},
        "upsert": {"ids": ["new2"], "embeddings": [[0.5, 0.0, 0.5]]},
        "delete": {"ids": ["a1", "b1"]},
        "get": {"include": ["documents", "metadatas"]},
        "query": {"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 3},
        "search": {"searches": [{"filter": None, "rank": None, "group_by": {}, "limit": {"offset": 0, "limit": 3},
                                 "select": {"keys": ["#document", "#metadata"]}}]},
        "reset": None,
    }
    by_name = ("get_collection", "delete_collection")
    out = {}
    for verb, route in ROUTES.items():
        collection = name if verb in by_name else collection_id
        path = route.path.format(tenant=tenant, database=database, collection=collection, function="counter")
        out[verb] = (route.method, API_PREFIX + path, bodies.get(verb))
    return out


# What a permitted request gets on the routes of chromadb Cloud's features: "not supported" (501),
# as from chroma's own single-node server, and "no such attached function" (404).
PERMITTED_STATUS = {**{verb: 501 for verb in CHROMADB_ONLY}, "get_attached_function": 404}


def permitted(verb: str, status: int) -> bool:
    """Whether ``status`` is what a permitted request for ``verb`` gets."""
    return status == PERMITTED_STATUS[verb] if verb in PERMITTED_STATUS else status in (200, 201)


def random_id() -> str:
    return str(uuid.uuid4())
