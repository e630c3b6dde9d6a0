"""The server half of the wire: one handler per route of ``retrieval.http.wire.ROUTES``.

Each handler finds the collection its path names, parses the body with the verb's entry in
:data:`retrieval.http.verbs.VERBS` (the table the clients encode with, validating with the same
rules as the client handles), calls the backend once and encodes the answer with the same entry. Handlers are plain functions; the app runs them in a
thread pool, or on the event loop when they are reads known to be cheap (``retrieval.server.runner``).

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
from retrieval.errors import InvalidArgumentError, NotFoundError, NotSupportedError
from retrieval.http.verbs import VERBS
from retrieval.http.wire import configuration_update_from_wire
from retrieval.server.limits import Limits
from retrieval.telemetry import span
from retrieval.types import CollectionRecord

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


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgumentError(f"query parameter {name} must be an integer; got {raw!r}") from None


def _page(query: Mapping[str, str]) -> tuple[int | None, int]:
    return v.validate_limit_offset(_int_param(query, "limit"), _int_param(query, "offset"))


def _parse(verb: str, body: Any) -> Any:
    return VERBS[verb].parse(verb, body)


def _answer(verb: str, value: Any, body: Any = None) -> Any:
    return VERBS[verb].answer(value, body)


# ------------------------------------------------------------------------------- system


def heartbeat(state: ServerState, path, query, body) -> Any:
    return _answer("heartbeat", time.time_ns())


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
    return _answer("create_tenant", state.backend.create_tenant(_parse("create_tenant", body)))


def get_tenant(state: ServerState, path, query, body) -> Any:
    return _answer("get_tenant", state.backend.get_tenant(path["tenant"]))


def create_database(state: ServerState, path, query, body) -> Any:
    return _answer("create_database", state.backend.create_database(_parse("create_database", body), path["tenant"]))


def get_database(state: ServerState, path, query, body) -> Any:
    return state.backend.get_database(path["database"], path["tenant"])


def list_databases(state: ServerState, path, query, body) -> Any:
    return state.backend.list_databases(path["tenant"], *_page(query))


def delete_database(state: ServerState, path, query, body) -> Any:
    try:
        state.backend.delete_database(path["database"], path["tenant"])
    finally:
        state.forget()
    return _answer("delete_database", None)


# ---------------------------------------------------------------------------- collections


def create_collection(state: ServerState, path, query, body) -> Any:
    new = _parse("create_collection", body)
    record = state.backend.create_collection(
        path["tenant"], path["database"], new.name, new.config, new.metadata, new.get_or_create
    )
    return _answer("create_collection", record)


def get_collection(state: ServerState, path, query, body) -> Any:
    return _answer("get_collection", state.backend.get_collection(path["tenant"], path["database"], path["collection"]))


def get_collection_by_id(state: ServerState, path, query, body) -> Any:
    return _answer("get_collection_by_id", state.collection(path))


def list_collections(state: ServerState, path, query, body) -> Any:
    records = state.backend.list_collections(path["tenant"], path["database"], *_page(query))
    return _answer("list_collections", records)


def count_collections(state: ServerState, path, query, body) -> Any:
    return state.backend.count_collections(path["tenant"], path["database"])


def modify_collection(state: ServerState, path, query, body) -> Any:
    record = state.collection(path)
    change = _parse("modify_collection", body)
    config = None
    if change.configuration is not None:
        config = configuration_update_from_wire(record.config, change.configuration)
    try:
        state.backend.modify_collection(record, change.name, change.metadata, config)
    finally:
        state.forget(record.id)
    return _answer("modify_collection", {})


def delete_collection(state: ServerState, path, query, body) -> Any:
    record = state.backend.get_collection(path["tenant"], path["database"], path["collection"])
    try:
        state.backend.delete_collection(path["tenant"], path["database"], path["collection"])
    finally:
        state.forget(record.id, deleted=record)
    return _answer("delete_collection", None)


# -------------------------------------------------------------------------------- records


def _writer(mode: str) -> Handler:
    def write(state: ServerState, path, query, body) -> Any:
        record = state.collection(path)
        with span("retrieval.validate", verb=mode):
            batch = _parse(mode, body)
        state.check_batch(len(batch.ids))
        state.backend.write(record, mode, batch)
        return CREATED if mode == "add" else _answer(mode, None)

    write.__name__ = mode
    return write


def delete(state: ServerState, path, query, body) -> Any:
    record = state.collection(path)
    deletion = _parse("delete", body)
    if deletion.limit == 0:
        return _answer("delete", 0)
    n = state.backend.delete(record, deletion.ids, deletion.where, deletion.where_document, deletion.limit)
    return _answer("delete", n)


def count(state: ServerState, path, query, body) -> Any:
    return state.backend.count(state.collection(path))


def get(state: ServerState, path, query, body) -> Any:
    record = state.collection(path)
    return _answer("get", state.backend.get(record, _parse("get", body)), body)


def query(state: ServerState, path, query_params, body) -> Any:
    record = state.collection(path)
    request = _parse("query", body)
    if request.n_results > state.limits.max_n_results:
        raise InvalidArgumentError(
            f"n_results {request.n_results} exceeds the server's max_n_results {state.limits.max_n_results}; page "
            "with get(limit=, offset=)"
        )
    return _answer("query", state.backend.query(record, request), body)


def search(state: ServerState, path, query, body) -> Any:
    record = state.collection(path)
    return _answer("search", state.backend.search(record, _parse("search", body)))


# ---------------------------------------------------------------- chromadb Cloud's features


def _not_supported(what: str) -> Handler:
    def refuse(state: ServerState, path, query, body) -> Any:
        state.collection(path)  # a missing collection is still a 404, as on chroma's server
        raise NotSupportedError(
            f"{what} is a distributed-Chroma feature; a single-node server (retrieval's, or chroma run) does not "
            "support it"
        )

    return refuse


def get_indexing_status(state: ServerState, path, query, body) -> Any:
    state.collection(path)
    raise NotSupportedError(
        "indexing status is a distributed-Chroma feature; here every acknowledged write is queryable at once "
        "(what the graph does not hold yet is scanned exactly), so there is nothing to wait for"
    )


def get_attached_function(state: ServerState, path, query, body) -> Any:
    state.collection(path)
    raise NotFoundError(f"attached function {path['function']!r} not found (a single-node server has none)")


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
    "fork_collection": _not_supported("collection forking"),
    "fork_count": _not_supported("counting forks"),
    "get_indexing_status": get_indexing_status,
    "attach_function": _not_supported("attaching functions"),
    "get_attached_function": get_attached_function,
    "detach_function": _not_supported("detaching functions"),
}
