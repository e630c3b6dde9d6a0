"""The server half of the wire: one handler per route of ``retrieval.http.wire.ROUTES``.

Each handler parses a request into the typed values of the Backend seam (validating it with the
same rules as the client handles: ``retrieval.validation`` and the filter parsers), calls the
backend once and returns the JSON answer. Handlers are plain functions; the app runs them in a
thread pool so engine work never blocks the event loop.

The server never embeds, never builds an embedding function named by a request and never reads a
URI: it stores configurations and URIs and hands them back (DESIGN section 7).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Callable, Mapping

from retrieval import validation as v
from retrieval.backend import Backend
from retrieval.config import modified_metadata, split_legacy_metadata
from retrieval.errors import InvalidArgumentError, NotFoundError
from retrieval.http.wire import (
    collection_to_wire,
    configuration_from_wire,
    configuration_update_from_wire,
    embeddings_from_wire,
)
from retrieval.query.filters import parse_where, parse_where_document
from retrieval.server.limits import Limits
from retrieval.telemetry import span
from retrieval.types import INCLUDE_GET, CollectionRecord, GetRequest, QueryRequest, RecordBatch

Handler = Callable[["ServerState", Mapping[str, str], Mapping[str, str], Any], Any]


class Created(dict):
    """An answer the app sends with status 201 (chromadb's server answers ``add`` so)."""


CREATED = Created()


class ServerState:
    """What handlers share: the backend and a cache of collection records by id.

    Record verbs address a collection by id; the cache saves a SQLite read per request. The
    server owns its path, so only its own deletes, renames and resets invalidate entries.

    A collection id that belongs to another tenant or database than the path names answers exactly
    like a missing id (same status, same message): an id must not reveal what exists elsewhere
    (chromadb's GHSA-2wm9-hf6c-p5cr looked collections up by id alone).
    """

    def __init__(self, backend: Backend, limits: Limits | None = None):
        self.backend = backend
        self.limits = limits or Limits()
        self._records: dict[str, CollectionRecord] = {}
        # id -> (tenant, database, name) of collections deleted through this server
        self._deleted: dict[str, tuple[str, str, str]] = {}
        self._lock = threading.Lock()

    def collection(self, path: Mapping[str, str]) -> CollectionRecord:
        tenant, database = path["tenant"], path["database"]
        collection_id = collection_uuid(path["collection"])
        record = self._records.get(collection_id)
        deleted = self._deleted.get(collection_id)
        if record is None and deleted is not None and deleted[:2] == (tenant, database):
            # A client's stale handle: say so, as the embedded engine does.
            raise NotFoundError(
                f"collection {deleted[2]!r} was deleted; get or create it again (client.get_or_create_collection)"
            )
        if record is None:
            try:
                record = self.backend.get_collection_by_id(tenant, database, collection_id)
            except NotFoundError:
                raise _missing(collection_id, tenant, database) from None
            with self._lock:
                self._records[collection_id] = record
        if record.tenant != tenant or record.database != database:
            raise _missing(collection_id, tenant, database)
        return record

    def forget(self, collection_id: str | None = None, *, deleted: CollectionRecord | None = None) -> None:
        """Drop cached records (all when ``collection_id`` is None); ``deleted`` is a deleted one."""
        with self._lock:
            if collection_id is None:
                self._records.clear()
            else:
                self._records.pop(collection_id, None)
                if deleted is not None:
                    self._deleted[collection_id] = (deleted.tenant, deleted.database, deleted.name)

    def check_batch(self, n: int) -> None:
        """Refuse a write of more records than the server's ``max_batch_size``."""
        limit = self.max_batch_size()
        if limit is not None and n > limit:
            raise InvalidArgumentError(
                f"batch of {n} records exceeds the server's max_batch_size {limit}; split it (chromadb's client "
                "reads the limit from the pre-flight checks)"
            )

    def max_batch_size(self) -> int | None:
        """The smaller of the engine's limit and the configured one (None: no limit known)."""
        ours = self.backend.get_max_batch_size()
        limits = [n for n in (ours, self.limits.max_batch_size) if isinstance(n, int) and n > 0]
        return min(limits) if limits else None


def collection_uuid(text: str) -> str:
    """A collection id from a path, as the engine spells it; anything but a UUID is a 400, as on
    chromadb's server ("Collection ID is not a valid UUIDv4")."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidArgumentError(
            f"collection id {text!r} is not a valid UUID (Collection ID is not a valid UUIDv4); this route takes "
            "the collection's id, not its name: read it from get_collection(name).id"
        ) from None


def _missing(collection_id: str, tenant: str, database: str) -> NotFoundError:
    return NotFoundError(f"collection {collection_id!r} does not exist in tenant {tenant!r} / database {database!r}")


def _body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        # A null body is not "no arguments": ``POST .../get`` with null must not return everything.
        got = "no body" if body is None else f"JSON {type(body).__name__} {body!r:.80}"
        raise InvalidArgumentError(f"request body must be a JSON object; got {got}")
    return body


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgumentError(f"query parameter {name} must be an integer; got {raw!r}") from None


def _filters(body: Mapping[str, Any]) -> tuple[Any, Any]:
    # chromadb's clients send {} for "no filter" in places; it means the same as null.
    return parse_where(body.get("where") or None), parse_where_document(body.get("where_document") or None)


def _include(body: Mapping[str, Any], allowed: tuple[str, ...]) -> tuple[str, ...]:
    include = body.get("include")
    if include is None:
        return ("documents", "metadatas")
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise InvalidArgumentError(f"include must be a list of strings; got {include!r}")
    bad = [i for i in include if i not in allowed]
    if bad:
        raise InvalidArgumentError(f"include {bad} not understood; choose from {list(allowed)}")
    return tuple(c for c in ("embeddings", "documents", "uris", "metadatas") if c in include)


def _name(body: Mapping[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str):
        raise InvalidArgumentError(f"'name' must be a string; got {name!r}")
    return name


# ------------------------------------------------------------------------------- system


def heartbeat(state: ServerState, path, query, body) -> Any:
    return {"nanosecond heartbeat": time.time_ns()}


def get_version(state: ServerState, path, query, body) -> Any:
    return state.backend.get_version()


def pre_flight_checks(state: ServerState, path, query, body) -> Any:
    limit = state.max_batch_size()
    return {"max_batch_size": -1 if limit is None else limit, "supports_base64_encoding": True}


def reset(state: ServerState, path, query, body) -> Any:
    try:
        return state.backend.reset()
    finally:
        state.forget()


def get_user_identity(state: ServerState, path, query, body) -> Any:
    # No authentication: the identity chromadb's single-node server reports without auth.
    return {"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]}


# ---------------------------------------------------------------------- tenants/databases


def create_tenant(state: ServerState, path, query, body) -> Any:
    state.backend.create_tenant(_name(_body(body)))
    return {}


def get_tenant(state: ServerState, path, query, body) -> Any:
    return {"name": state.backend.get_tenant(path["tenant"]), "resource_name": None}


def create_database(state: ServerState, path, query, body) -> Any:
    state.backend.create_database(_name(_body(body)), path["tenant"])
    return {}


def get_database(state: ServerState, path, query, body) -> Any:
    return state.backend.get_database(path["database"], path["tenant"])


def list_databases(state: ServerState, path, query, body) -> Any:
    limit, offset = v.validate_limit_offset(_int_param(query, "limit"), _int_param(query, "offset"))
    return state.backend.list_databases(path["tenant"], limit, offset)


def delete_database(state: ServerState, path, query, body) -> Any:
    try:
        state.backend.delete_database(path["database"], path["tenant"])
    finally:
        state.forget()
    return {}


# ---------------------------------------------------------------------------- collections


def create_collection(state: ServerState, path, query, body) -> Any:
    body = _body(body)
    name = v.validate_collection_name(body.get("name"))
    metadata = body.get("metadata")
    # chromadb's ``hnsw:*`` metadata keys configure the index and, as on chromadb's server, stay
    # in the metadata as sent (retrieval's own clients strip them before sending).
    _, legacy_hnsw = split_legacy_metadata(metadata)
    if metadata is not None:
        metadata = v.validate_metadata(metadata, 0, allow_none=False) or None
    config = configuration_from_wire(body.get("configuration"), legacy_hnsw)
    get_or_create = body.get("get_or_create", False)
    if not isinstance(get_or_create, bool):
        raise InvalidArgumentError(f"get_or_create must be true or false; got {get_or_create!r}")
    record = state.backend.create_collection(path["tenant"], path["database"], name, config, metadata, get_or_create)
    return collection_to_wire(record)


def get_collection(state: ServerState, path, query, body) -> Any:
    return collection_to_wire(state.backend.get_collection(path["tenant"], path["database"], path["collection"]))


def get_collection_by_id(state: ServerState, path, query, body) -> Any:
    return collection_to_wire(state.collection(path))


def list_collections(state: ServerState, path, query, body) -> Any:
    limit, offset = v.validate_limit_offset(_int_param(query, "limit"), _int_param(query, "offset"))
    records = state.backend.list_collections(path["tenant"], path["database"], limit, offset)
    return [collection_to_wire(r) for r in records]


def count_collections(state: ServerState, path, query, body) -> Any:
    return state.backend.count_collections(path["tenant"], path["database"])


def modify_collection(state: ServerState, path, query, body) -> Any:
    from retrieval.config import CollectionConfig

    body = _body(body)
    record = state.collection(path)
    name = body.get("new_name")
    if name is not None:
        v.validate_collection_name(name)
    metadata = body.get("new_metadata")
    if metadata is not None:
        metadata = modified_metadata(metadata)
    config = None
    if body.get("new_configuration") is not None:
        current = CollectionConfig.from_json(record.configuration_json)
        config = configuration_update_from_wire(current, body["new_configuration"])
    try:
        state.backend.modify_collection(record, name, metadata, config)
    finally:
        state.forget(record.id)
    return {}


def delete_collection(state: ServerState, path, query, body) -> Any:
    record = state.backend.get_collection(path["tenant"], path["database"], path["collection"])
    try:
        state.backend.delete_collection(path["tenant"], path["database"], path["collection"])
    finally:
        state.forget(record.id, deleted=record)
    return {}


# -------------------------------------------------------------------------------- records


def _batch(body: Mapping[str, Any], mode: str) -> RecordBatch:
    ids = v.validate_ids(body.get("ids"))
    n = len(ids)
    embeddings = body.get("embeddings")
    vectors = None
    if embeddings is not None:
        vectors = v.validate_embeddings(embeddings_from_wire(embeddings), n)
    elif mode != "update":
        raise InvalidArgumentError(
            f"{mode} needs embeddings: the server does not embed (embed documents, images or uris in the "
            "client with the collection's embedding function)"
        )
    batch = RecordBatch(
        ids=ids,
        embeddings=vectors,
        metadatas=v.validate_metadatas(body.get("metadatas"), n, allow_none=True),
        documents=v.validate_strings(body.get("documents"), n, "documents"),
        uris=v.validate_strings(body.get("uris"), n, "uris"),
    )
    sparse = body.get("sparse")
    if sparse:
        batch.sparse = _sparse_columns(sparse, n)
    return batch


def _sparse_columns(sparse: Any, n: int) -> dict[str, list[Any]]:
    from embedders.sparse import SparseVector

    if not isinstance(sparse, Mapping):
        raise InvalidArgumentError(f"'sparse' must map a key to one sparse vector (or null) per record; got {sparse!r}")
    out = {}
    for key, column in sparse.items():
        if not isinstance(column, list) or len(column) != n:
            raise InvalidArgumentError(f"sparse[{key!r}] must hold {n} entries, one per id")
        out[key] = [None if item is None else SparseVector.from_dict(item) for item in column]
    return out


def _writer(mode: str) -> Handler:
    def write(state: ServerState, path, query, body) -> Any:
        with span("retrieval.validate", verb=mode):
            batch = _batch(_body(body), mode)
        state.check_batch(len(batch.ids))
        state.backend.write(state.collection(path), mode, batch)
        return CREATED if mode == "add" else {}

    write.__name__ = mode
    return write


def delete(state: ServerState, path, query, body) -> Any:
    body = _body(body)
    record = state.collection(path)
    ids = body.get("ids")
    ids = None if ids is None else v.validate_ids(ids, allow_empty=True)
    where, where_document = _filters(body)
    limit = v.validate_delete(ids, where, where_document, body.get("limit"))
    if limit == 0:
        return {"deleted": 0}
    return {"deleted": state.backend.delete(record, ids, where, where_document, limit)}


def count(state: ServerState, path, query, body) -> Any:
    return state.backend.count(state.collection(path))


def get(state: ServerState, path, query, body) -> Any:
    body = _body(body)
    record = state.collection(path)
    ids = body.get("ids")
    ids = None if ids is None else v.validate_ids(ids)
    where, where_document = _filters(body)
    limit, offset = v.validate_limit_offset(body.get("limit"), body.get("offset"))
    include = _include(body, INCLUDE_GET)
    request = GetRequest(ids=ids, where=where, where_document=where_document, limit=limit, offset=offset, include=include)
    records = state.backend.get(record, request)
    out = {"ids": records.ids, "include": list(body.get("include") or ["documents", "metadatas"])}
    for column in ("embeddings", "documents", "uris", "metadatas"):
        out[column] = getattr(records, column) if column in include else None
    return out


def query(state: ServerState, path, query_params, body) -> Any:
    body = _body(body)
    record = state.collection(path)
    raw = body.get("query_embeddings")
    if raw is None:
        raise InvalidArgumentError("query needs query_embeddings: the server does not embed query texts or images")
    vectors = v.validate_embeddings(embeddings_from_wire(raw, "query_embeddings"), what="query_embeddings")
    ids = body.get("ids")
    ids = None if ids is None else v.validate_ids(ids, allow_empty=True)
    where, where_document = _filters(body)
    include = _include(body, INCLUDE_GET + ("distances",))
    request = QueryRequest(
        embeddings=vectors,
        n_results=_n_results(state, body.get("n_results", 10)),
        ids=ids,
        where=where,
        where_document=where_document,
        include=include,
    )
    answer = state.backend.query(record, request)
    wanted = body.get("include")
    wanted = ["documents", "metadatas", "distances"] if wanted is None else wanted
    out: dict[str, Any] = {"ids": [r.ids for r in answer.records], "include": list(wanted)}
    for column in ("embeddings", "documents", "uris", "metadatas"):
        out[column] = [getattr(r, column) for r in answer.records] if column in include else None
    out["distances"] = answer.distances if "distances" in wanted else None
    return out


def _n_results(state: ServerState, value: Any) -> int:
    n = v.validate_n_results(value)
    if n > state.limits.max_n_results:
        raise InvalidArgumentError(
            f"n_results {n} exceeds the server's max_n_results {state.limits.max_n_results}; page with get(limit=, offset=)"
        )
    return n


def search(state: ServerState, path, query, body) -> Any:
    from retrieval.search.plan import Search

    body = _body(body)
    record = state.collection(path)
    searches = body.get("searches")
    if not isinstance(searches, list) or not searches:
        raise InvalidArgumentError(f"'searches' must be a non-empty list of search objects; got {searches!r}")
    parsed = []
    for position, search in enumerate(searches):
        try:
            parsed.append(Search.from_dict(search))
        except (TypeError, KeyError, AttributeError) as e:  # a malformed dict is the client's error
            raise InvalidArgumentError(f"searches[{position}] is not a valid search: {e}") from e
    return dict(state.backend.search(record, parsed))


HANDLERS: dict[str, Handler] = {
    "heartbeat": heartbeat,
    "get_version": get_version,
    "pre_flight_checks": pre_flight_checks,
    "reset": reset,
    "get_user_identity": get_user_identity,
    "create_tenant": create_tenant,
    "get_tenant": get_tenant,
    "list_databases": list_databases,
    "create_database": create_database,
    "get_database": get_database,
    "delete_database": delete_database,
    "count_collections": count_collections,
    "list_collections": list_collections,
    "create_collection": create_collection,
    "get_collection_by_id": get_collection_by_id,
    "get_collection": get_collection,
    "modify_collection": modify_collection,
    "delete_collection": delete_collection,
    "add": _writer("add"),
    "update": _writer("update"),
    "upsert": _writer("upsert"),
    "delete": delete,
    "count": count,
    "get": get,
    "query": query,
    "search": search,
}
