"""Chroma's v2 REST API as data: routes, JSON shapes and error bodies (sans-IO).

Nothing here touches a socket or imports an HTTP library. The same rules serve three parties, so
the wire cannot drift between them:

- the sync and the async HTTP transports (``retrieval.http.transport``) turn a Backend verb into a
  :class:`Call` with :mod:`retrieval.http.calls` and its answer back into a typed value;
- the server (``retrieval.server``) routes the table below (:mod:`retrieval.server.handlers`).

Both halves encode and decode each verb's body and answer with its one entry in
:mod:`retrieval.http.verbs`; this module holds the routes and the shapes the verbs share
(collections, configurations, embeddings, errors).

The shapes are those chromadb 1.5.9's own server speaks (its Rust frontend, ``rust/frontend/src/
server.rs``), so chromadb's ``HttpClient`` / ``AsyncHttpClient`` / ``AdminClient`` work unchanged:

- a collection is ``{"id", "name", "configuration_json": {"hnsw": {...}, "spann", "embedding_function"},
  "schema", "metadata", "dimension", "tenant", "database", "log_position", "version"}``;
- embeddings sent to the server are lists of floats or base64 strings of little-endian float32
  (``supports_base64_encoding`` in the pre-flight checks);
- an error is ``{"error": <name>, "message": ...}`` with a status; chromadb's client maps ``error`` to
  its exception class. The server names errors as chromadb's does (``InvalidArgumentError``,
  ``NotFoundError``, ``InternalError``, else ``ChromaError``) and adds ``retrieval_error``, the exact
  class of :mod:`retrieval.errors`, which our clients raise.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from retrieval.config import CollectionConfig, ComponentSpec, HnswConfig, SparseConfig
from retrieval.loader_metadata import split_loader
from retrieval.errors import (
    AuthenticationError,
    InternalError,
    InvalidArgumentError,
    NotAllowedError,
    NotFoundError,
    NotSupportedError,
    PersistPathLockedError,
    RequestTimeoutError,
    RequestTooLargeError,
    RetrievalError,
    UniqueConstraintError,
    error_class,
)
from retrieval.types import CollectionRecord

API_PREFIX = "/api/v2"
_DB = "/tenants/{tenant}/databases/{database}"
_COLLECTIONS = _DB + "/collections"
_ONE = _COLLECTIONS + "/{collection}"


@dataclass(frozen=True)
class Route:
    """One verb of the API: its HTTP method and path template (under ``API_PREFIX``).

    ``idempotent`` calls may be retried by a client after a transport failure. ``action`` is what
    a credential needs to make the call when the server has auth on (``retrieval.server.auth``):
    ``public`` (no credential), ``authenticated`` (any valid one), ``read``, ``write`` or ``admin``.
    ``aliases`` are further paths the server answers the same way (clients use ``path``).
    """

    verb: str
    method: str
    path: str
    idempotent: bool
    action: str
    aliases: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) + self.aliases


def _routes(*rows: tuple) -> dict[str, Route]:
    return {row[0]: Route(*row) for row in rows}


# Order matters to the server's router: ``by-id`` before ``{collection}``.
ROUTES: dict[str, Route] = _routes(
    # chromadb's AsyncHttpClient asks the API root for its heartbeat, its HttpClient /heartbeat.
    ("heartbeat", "GET", "/heartbeat", True, "public", ("",)),
    ("get_version", "GET", "/version", True, "public"),
    ("pre_flight_checks", "GET", "/pre-flight-checks", True, "authenticated"),
    ("reset", "POST", "/reset", False, "admin"),
    ("get_user_identity", "GET", "/auth/identity", True, "authenticated"),
    ("create_tenant", "POST", "/tenants", False, "admin"),
    ("get_tenant", "GET", "/tenants/{tenant}", True, "read"),
    ("list_databases", "GET", "/tenants/{tenant}/databases", True, "read"),
    ("create_database", "POST", "/tenants/{tenant}/databases", False, "admin"),
    ("get_database", "GET", _DB, True, "read"),
    ("delete_database", "DELETE", _DB, False, "admin"),
    ("count_collections", "GET", _DB + "/collections_count", True, "read"),
    ("list_collections", "GET", _COLLECTIONS, True, "read"),
    ("create_collection", "POST", _COLLECTIONS, False, "write"),
    ("get_collection_by_id", "GET", _COLLECTIONS + "/by-id/{collection}", True, "read"),
    ("get_collection", "GET", _ONE, True, "read"),  # {collection} is the name
    ("modify_collection", "PUT", _ONE, True, "write"),  # {collection} is the id
    ("delete_collection", "DELETE", _ONE, False, "write"),  # {collection} is the name
    ("add", "POST", _ONE + "/add", False, "write"),
    ("update", "POST", _ONE + "/update", True, "write"),
    ("upsert", "POST", _ONE + "/upsert", True, "write"),
    ("delete", "POST", _ONE + "/delete", False, "write"),
    ("count", "GET", _ONE + "/count", True, "read"),
    ("get", "POST", _ONE + "/get", True, "read"),
    ("query", "POST", _ONE + "/query", True, "read"),
    ("search", "POST", _ONE + "/search", True, "read"),
    # chromadb Cloud's features, which chroma's single-node server refuses (501) and so do we: its
    # clients call them, and should hear "not supported" rather than "no such route".
    ("fork_collection", "POST", _ONE + "/fork", False, "write"),
    ("fork_count", "GET", _ONE + "/fork_count", True, "read"),
    ("get_indexing_status", "GET", _ONE + "/indexing_status", True, "read"),
    ("attach_function", "POST", _ONE + "/functions/attach", False, "write"),
    ("get_attached_function", "GET", _ONE + "/functions/{function}", True, "read"),
    ("detach_function", "POST", _ONE + "/attached_functions/{function}/detach", False, "write"),
)

#: Routes only chromadb's clients call (retrieval's clients have no such verb).
CHROMADB_ONLY = ("fork_collection", "fork_count", "get_indexing_status", "attach_function", "get_attached_function",
                 "detach_function")


@dataclass
class Call:
    """One request to make and how to read its answer: what a transport needs, and nothing more.

    Args:
        route: the verb's route; ``path`` is its template filled in (not yet URL-quoted).
        body: the JSON body (a value for :func:`dumps`) or None.
        params: query-string parameters.
        decode: turns the answer's JSON into the typed value the Backend verb returns.
        then: when set, the answer is not final: ``then(answer)`` is the next call to make (e.g.
            ``modify`` reads the collection back), and its decoded answer is the result.
    """

    route: Route
    path: str
    body: Any = None
    params: dict[str, Any] | None = None
    decode: Callable[[Any], Any] = lambda answer: answer
    then: Callable[[Any], Call] | None = None

    @classmethod
    def to(cls, verb: str, *, body: Any = None, params: dict | None = None, decode=None, **path: str) -> Call:
        route = ROUTES[verb]
        params = {k: v for k, v in (params or {}).items() if v is not None} or None
        return cls(route, route.path.format(**path), body, params, decode or (lambda answer: answer))


# ------------------------------------------------------------------------------------- JSON


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):  # Where trees, Search parts, SparseVector
        return to_dict()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


try:  # orjson is several times faster on embedding-heavy bodies; plain json works too
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency
    def dumps(value: Any) -> bytes:
        return json.dumps(value, default=_default, ensure_ascii=False).encode()

    loads = json.loads


def parse_body(raw: bytes) -> Any:
    """A request body as JSON; malformed JSON is the client's error."""
    if not raw:
        return None
    try:
        return loads(raw)
    except ValueError as e:
        raise InvalidArgumentError(f"request body is not valid JSON: {e}") from e


# ------------------------------------------------------------------------------- embeddings


try:  # SIMD base64 (as chromadb's client uses): ~10x the standard library on embedding batches
    import pybase64 as _b64

    def _b64encode(data: bytes) -> str:
        return _b64.b64encode_as_string(data)
except ImportError:  # pragma: no cover - pybase64 is a dependency
    _b64 = base64

    def _b64encode(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")


def embeddings_to_base64(array: np.ndarray) -> list[str]:
    """Each row as base64 of little-endian float32, as chromadb's client sends them."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return [_b64encode(row.tobytes()) for row in array]


def embeddings_from_wire(values: Any, what: str = "embeddings") -> Any:
    """Embeddings as sent: base64 float32 strings (decoded to an (n, d) array) or lists (returned
    as they are, for the validator). Validation itself happens in ``retrieval.validation``."""
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        if isinstance(values, list) and any(isinstance(v, str) for v in values):
            raise InvalidArgumentError(f"{what} mixes base64 strings and lists; send one form")
        return values
    try:
        raw = [_b64.b64decode(v, validate=True) for v in values]
    except ValueError as e:
        raise InvalidArgumentError(f"{what}: invalid base64 ({e})") from e
    sizes = {len(r) for r in raw}
    if len(sizes) != 1 or next(iter(sizes)) % 4 or not next(iter(sizes)):
        raise InvalidArgumentError(f"{what} must be base64 float32 vectors of one non-zero length; got byte sizes {sorted(sizes)}")
    return np.frombuffer(b"".join(raw), dtype="<f4").reshape(len(raw), -1).astype(np.float32)


def embeddings_from_answer(values: Any) -> np.ndarray | None:
    """Embeddings in an answer (lists of floats) as an (n, d) float32 array."""
    if values is None:
        return None
    if not values:
        return np.zeros((0, 0), np.float32)
    return np.asarray(values, dtype=np.float32)


# ------------------------------------------------------------------------------ collections


# What chromadb's server reads back under "hnsw": its HnswConfiguration minus the host knobs
# (num_threads, batch_size) it does not serialize.
PUBLIC_HNSW_KEYS = ("space", "ef_construction", "ef_search", "max_neighbors", "resize_factor", "sync_threshold")


def public_configuration(config: CollectionConfig) -> dict[str, Any]:
    """A collection's ``configuration_json`` as chromadb's server returns it, defaults filled in.

    ``data_loader`` and ``sparse`` are retrieval's additions; chromadb's client ignores them.
    """
    hnsw = config.hnsw.to_dict()
    public = {key: hnsw[key] for key in PUBLIC_HNSW_KEYS}
    if hnsw["batch_size"] != HnswConfig().batch_size:
        # Ours to read back; left out at its default so the JSON equals chromadb's server's.
        public["batch_size"] = hnsw["batch_size"]
    out: dict[str, Any] = {
        "hnsw": public,
        "spann": None,
        "embedding_function": config.embedding_function.to_dict() if config.embedding_function else None,
    }
    if config.data_loader is not None:
        out["data_loader"] = config.data_loader.to_dict()
    if config.sparse is not None:
        out["sparse"] = config.sparse.to_dict()
    return out


def _index(enabled: bool, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"enabled": enabled, "config": config or {}}


def schema_to_wire(config: CollectionConfig) -> dict[str, Any]:
    """The collection's index layout in chromadb's serialized ``Schema`` shape.

    chromadb's client reads it back (``collection.schema``) and needs its vector index to apply
    ``modify(configuration=...)``: metadata values are indexed by type, documents by full text,
    ``#embedding`` by HNSW with this configuration.
    """
    hnsw = config.hnsw.to_dict()  # with num_threads (this host's), as chromadb's server reports it
    vector: dict[str, Any] = {"space": hnsw.pop("space")}
    if config.embedding_function is not None:
        vector["embedding_function"] = config.embedding_function.to_dict()
    vector["hnsw"] = hnsw
    defaults = {
        "string": {"fts_index": _index(False), "string_inverted_index": _index(True)},
        "float_list": {"vector_index": _index(False, dict(vector))},
        "sparse_vector": {"sparse_vector_index": _index(False, {"embedding_function": {"type": "unknown"}, "bm25": False})},
        "int": {"int_inverted_index": _index(True)},
        "float": {"float_inverted_index": _index(True)},
        "bool": {"bool_inverted_index": _index(True)},
    }
    keys: dict[str, Any] = {
        "#document": {"string": {"fts_index": _index(True), "string_inverted_index": _index(False)}},
        "#embedding": {"float_list": {"vector_index": _index(True, {**vector, "source_key": "#document"})}},
    }
    if config.sparse is not None:
        keys[config.sparse.key] = {"sparse_vector": {"sparse_vector_index": _index(True, {
            "embedding_function": config.sparse.embedding_function.to_dict(),
            "source_key": config.sparse.source_key,
        })}}
    return {"defaults": defaults, "keys": keys}


def collection_to_wire(record: CollectionRecord) -> dict[str, Any]:
    config = record.config
    return {
        "id": record.id,
        "name": record.name,
        "configuration_json": public_configuration(config),
        "schema": schema_to_wire(config),
        "metadata": record.metadata,
        "dimension": record.dimension,
        "tenant": record.tenant,
        "database": record.database,
        "log_position": 0,
        "version": 0,
    }


def collection_from_wire(data: Mapping[str, Any]) -> CollectionRecord:
    config = configuration_from_wire(data.get("configuration_json"), None)
    # Chroma's server keeps the data loader only in the metadata (retrieval.loader_metadata).
    metadata, stored_loader = split_loader(data.get("metadata"))
    if config.data_loader is None and stored_loader is not None:
        config = dataclasses.replace(config, data_loader=stored_loader)
    return CollectionRecord(
        id=str(data["id"]),
        name=data["name"],
        tenant=data.get("tenant", "default_tenant"),
        database=data.get("database", "default_database"),
        config=config,
        metadata=metadata,
        dimension=data.get("dimension"),
    )


def configuration_from_wire(configuration: Any, legacy_hnsw: Mapping[str, Any] | None) -> CollectionConfig:
    """A configuration as chromadb's client sends (or its server returns) it, parsed.

    ``legacy_hnsw`` holds the fields named by ``hnsw:*`` metadata keys; explicit ones win.
    """
    if configuration is None:
        configuration = {}
    if not isinstance(configuration, Mapping):
        raise InvalidArgumentError(f"configuration must be an object like {{'hnsw': {{...}}}}; got {configuration!r}")
    index = configuration.get("hnsw")
    if index is None and configuration.get("spann") is not None:
        # A single-node server has no SPANN index; keep what HNSW shares with it (the space).
        spann = configuration["spann"]
        index = {"space": spann.get("space")} if isinstance(spann, Mapping) else None
    if index is not None and not isinstance(index, Mapping):
        raise InvalidArgumentError(f"configuration['hnsw'] must be an object; got {index!r}")
    fields = dict(legacy_hnsw or {})
    fields.update({k: v for k, v in (index or {}).items() if v is not None})
    sparse = configuration.get("sparse")
    if sparse is not None and not (isinstance(sparse, Mapping) and isinstance(sparse.get("key"), str)):
        raise InvalidArgumentError(f"configuration['sparse'] must be {{'key': str, 'embedding_function': ...}}; got {sparse!r}")
    return CollectionConfig(
        hnsw=HnswConfig.from_dict(fields),
        embedding_function=ComponentSpec.from_dict(configuration.get("embedding_function"), "embedding_function"),
        data_loader=ComponentSpec.from_dict(configuration.get("data_loader"), "data_loader"),
        sparse=SparseConfig.from_dict(sparse) if sparse is not None else None,
    )


def configuration_update_to_wire(old: CollectionConfig, new: CollectionConfig) -> dict[str, Any]:
    """``new_configuration`` for ``modify``: the mutable HNSW settings that changed."""
    before, after = old.hnsw.to_dict(), new.hnsw.to_dict()
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    return {"hnsw": changed or None, "spann": None, "embedding_function": None}


def configuration_update_from_wire(config: CollectionConfig, update: Any) -> CollectionConfig:
    """Apply chromadb's ``new_configuration`` (``{"hnsw": {...}, "embedding_function": ...}``)."""
    if not isinstance(update, Mapping):
        raise InvalidArgumentError(f"new_configuration must be an object; got {update!r}")
    hnsw = update.get("hnsw") or (update.get("spann") if isinstance(update.get("spann"), Mapping) else None) or {}
    if not isinstance(hnsw, Mapping):
        raise InvalidArgumentError(f"new_configuration['hnsw'] must be an object; got {hnsw!r}")
    changes = {k: v for k, v in hnsw.items() if v is not None}
    out = dataclasses.replace(config, hnsw=config.hnsw.modified(changes)) if changes else config
    ef = update.get("embedding_function")
    if ef is not None:
        out = dataclasses.replace(out, embedding_function=ComponentSpec.from_dict(ef, "embedding_function"))
    return out


# ----------------------------------------------------------------------------------- errors

# chromadb's server names only these error codes; everything else is "ChromaError" (rust/error).
_CHROMA_NAMES = (
    (AuthenticationError, "AuthorizationError"),  # chromadb's 401
    (InvalidArgumentError, "InvalidArgumentError"),
    (NotFoundError, "NotFoundError"),
    (InternalError, "InternalError"),
)
# Names chromadb's servers (Rust and the older Python one) send, and ours from a status alone.
_FROM_CHROMA_NAME: dict[str, type[RetrievalError]] = {
    "InvalidArgumentError": InvalidArgumentError,
    "InvalidDimension": InvalidArgumentError,
    "DuplicateID": InvalidArgumentError,
    "InvalidUUID": InvalidArgumentError,
    "NotFoundError": NotFoundError,
    "UniqueConstraintError": UniqueConstraintError,
    "IDAlreadyExists": UniqueConstraintError,
    "InternalError": InternalError,
    "AuthError": NotAllowedError,
    "AuthorizationError": AuthenticationError,
}
_FROM_STATUS: dict[int, type[RetrievalError]] = {
    400: InvalidArgumentError,
    401: AuthenticationError,
    403: NotAllowedError,
    408: RequestTimeoutError,
    413: RequestTooLargeError,
    404: NotFoundError,
    409: UniqueConstraintError,
    423: PersistPathLockedError,
    501: NotSupportedError,
}
# What a 501 means in practice: Chroma's single-node server serves no Search API.
_SEARCH_ELSEWHERE = (
    " (Chroma's single-node server, `chroma run`, does not serve the Search API: use query() against it, "
    "or search() against `retrieval run`, Chroma's distributed deployment or Chroma Cloud)"
)


def error_to_wire(error: BaseException) -> tuple[int, dict[str, str]]:
    """The status and body for an exception raised while serving a request.

    Anything that is not a :class:`RetrievalError` is a bug: a 500 with no stack trace and no
    internal detail in its message (the server logs it).
    """
    if not isinstance(error, RetrievalError):
        return 500, {"error": "InternalError", "message": "internal server error (see the server log)",
                     "retrieval_error": "InternalError"}
    name = next((chroma for cls, chroma in _CHROMA_NAMES if isinstance(error, cls)), "ChromaError")
    message = str(error.args[0]) if error.args else type(error).__name__
    return error.http_status, {"error": name, "message": message, "retrieval_error": type(error).name()}


def error_from_wire(status: int, body: Any, text: str = "") -> RetrievalError:
    """The exception an error answer stands for, from our server or chromadb's."""
    if isinstance(body, Mapping) and "error" in body:
        message = str(body.get("message", body["error"]))
        ours = body.get("retrieval_error")
        if isinstance(ours, str):
            cls = error_class(ours)
            if cls is not RetrievalError or ours == "RetrievalError":
                return cls(message)
        cls = _FROM_CHROMA_NAME.get(str(body["error"])) or _FROM_STATUS.get(status, InternalError if status >= 500 else RetrievalError)
        if cls is NotSupportedError and "search" in message.lower():
            message += _SEARCH_ELSEWHERE
        return cls(message)
    cls = _FROM_STATUS.get(status, InternalError if status >= 500 else RetrievalError)
    return cls(f"HTTP {status}: {text[:500] or 'no body'}")
