"""Each verb of Chroma's v2 REST API defined once: its request body and its answer, both ways.

A :class:`Verb` is the whole wire contract of one route of :data:`retrieval.http.wire.ROUTES`:

- ``body``: the request body's fields, each a JSON schema (:class:`Body`). The server checks every
  body against it (``Verb.parse``), the OpenAPI document publishes it, and the agreement test
  (``tests/test_wire_agreement.py``) generates requests from it;
- ``encode(...)`` (client): the typed Backend arguments as that JSON body;
- ``decode(body)`` (server): the checked body as the typed Backend arguments, validated with the
  rules the client handles run (``retrieval.validation``, the filter parsers), so a request one half
  refuses the other refuses with the same error class;
- ``answer(value, body)`` (server): the Backend's typed answer as chromadb's JSON;
- ``read(json)`` (client): that JSON back as the typed answer;
- ``returns``: the answer's JSON schema, published in the OpenAPI document and checked in the tests.

The client half (``retrieval.http.calls``) and the server half (``retrieval.server.handlers``) are
thin: they say which verb and which collection; everything about the JSON lives here. A wire change
is one edit in this file.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from retrieval import validation as v
from retrieval.config import CollectionConfig, ComponentSpec, modified_metadata, split_legacy_metadata
from retrieval.errors import InvalidArgumentError
from retrieval.http import answers
from retrieval.http.body import (
    BOOLEAN,
    COLUMN_OF_OBJECTS,
    COLUMN_OF_STRINGS,
    COUNT,
    EMBEDDINGS,
    FILTER,
    INCLUDE,
    OBJECT,
    STRING,
    STRINGS,
    Body,
    CheckedBody,
    nullable,
)
from retrieval.http.wire import (
    CHROMADB_ONLY,
    collection_from_wire,
    collection_to_wire,
    configuration_from_wire,
    embeddings_from_answer,
    embeddings_from_wire,
    embeddings_to_base64,
    public_configuration,
)
from retrieval.loader_metadata import split_loader, with_loader
from retrieval.query.filters import parse_where, parse_where_document
from retrieval.types import (
    DEFAULT_INCLUDE_GET,
    DEFAULT_INCLUDE_QUERY,
    INCLUDE_GET,
    INCLUDE_QUERY,
    GetRequest,
    QueryAnswer,
    QueryRequest,
    RecordBatch,
    Records,
)


def _identity(value: Any, *_: Any) -> Any:
    return value


@dataclass(frozen=True)
class Verb:
    """One REST verb's wire contract (see the module docstring)."""

    body: Body | None = None
    encode: Callable[..., Any] | None = None
    decode: Callable[[Mapping[str, Any]], Any] | None = None
    answer: Callable[..., Any] = _identity
    read: Callable[[Any], Any] = _identity
    returns: dict[str, Any] | None = None  # the answer's JSON schema (retrieval.http.answers)

    def parse(self, name: str, body: Any) -> Any:
        """The server half: a request body as the typed value its handler passes to the backend."""
        assert self.body is not None and self.decode is not None, f"{name} takes no body"
        checked = CheckedBody(name, self.body, body)
        value = self.decode(checked)
        checked.check_rest()
        return value


# --------------------------------------------------------------------------------- helpers

_SERVER_DOES_NOT_EMBED = (
    ": the server does not embed (embed documents, images, uris or query texts in the client with the "
    "collection's embedding function)"
)


def _tree(value: Any) -> Any:
    return None if value is None else value.to_dict()


def _filters(body: Mapping[str, Any]) -> tuple[Any, Any]:
    # chromadb's clients send {} for "no filter" in places; it means the same as null.
    return parse_where(body.get("where") or None), parse_where_document(body.get("where_document") or None)


def _include(body: Mapping[str, Any], allowed: tuple[str, ...]) -> tuple[str, ...]:
    include = body.get("include")
    if include is None:
        return ("documents", "metadatas")
    if not all(isinstance(i, str) for i in include):
        raise InvalidArgumentError(f"include must be a list of strings; got {include!r}")
    bad = [i for i in include if i not in allowed]
    if bad:
        raise InvalidArgumentError(f"include {bad} not understood; choose from {list(allowed)}")
    return tuple(c for c in ("embeddings", "documents", "uris", "metadatas") if c in include)


def _optional_ids(body: Mapping[str, Any], *, allow_empty: bool = False) -> list[str] | None:
    ids = body.get("ids")
    return None if ids is None else v.validate_ids(ids, allow_empty=allow_empty)


def _name(body: Mapping[str, Any]) -> str:
    return body["name"]


def database_from_wire(answer: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": answer.get("id"), "name": answer["name"], "tenant": answer["tenant"]}


# ------------------------------------------------------------------------------ collections


@dataclass(frozen=True)
class NewCollection:
    """A parsed ``create_collection``."""

    name: str
    config: CollectionConfig
    metadata: dict | None
    get_or_create: bool


def _encode_create(name: str, config: CollectionConfig, metadata: dict | None, get_or_create: bool) -> dict:
    return {
        "name": name,
        "metadata": with_loader(metadata, config.data_loader),  # Chroma's server drops configuration.data_loader
        "configuration": {**public_configuration(config), "hnsw": config.hnsw.to_dict(include_host=False)},
        "schema": None,
        "get_or_create": get_or_create,
    }


def _decode_create(body: Mapping[str, Any]) -> NewCollection:
    name = v.validate_collection_name(body["name"])
    # Our HTTP clients also store the loader in the metadata, for Chroma's server: held here in the config.
    metadata, stored_loader = split_loader(body.get("metadata"))
    # chromadb's ``hnsw:*`` metadata keys configure the index and, as on chromadb's server, stay
    # in the metadata as sent (retrieval's own clients strip them before sending).
    _, legacy_hnsw = split_legacy_metadata(metadata)
    if metadata is not None:
        metadata = v.validate_metadata(metadata, 0, allow_none=False) or None
    config = configuration_from_wire(body.get("configuration"), legacy_hnsw)
    if config.data_loader is None and stored_loader is not None:
        config = dataclasses.replace(config, data_loader=stored_loader)
    return NewCollection(name, config, metadata, bool(body.get("get_or_create", False)))


@dataclass(frozen=True)
class CollectionChange:
    """A parsed ``modify_collection``: ``configuration`` is chromadb's ``new_configuration`` (applied
    to the stored configuration by ``wire.configuration_update_from_wire``)."""

    name: str | None
    metadata: dict | None
    configuration: Mapping[str, Any] | None


def _encode_modify(name: str | None, metadata: dict | None, update: dict | None, loader: ComponentSpec | None) -> dict:
    # New metadata replaces the old: store the collection's ``loader`` in it again (see _encode_create).
    metadata = None if metadata is None else with_loader(metadata, loader)
    return {"new_name": name, "new_metadata": metadata, "new_configuration": update}


def _decode_modify(body: Mapping[str, Any]) -> CollectionChange:
    name = body.get("new_name")
    if name is not None:
        v.validate_collection_name(name)
    metadata = body.get("new_metadata")
    if metadata is not None:  # the loader lives in the stored configuration here, not in the metadata
        metadata = modified_metadata(split_loader(metadata)[0] or {})
    return CollectionChange(name, metadata, body.get("new_configuration"))


# ---------------------------------------------------------------------------------- records


def _encode_batch(batch: RecordBatch) -> dict[str, Any]:
    # An add's metadatas hold no None values (``validation.validate_write_metadatas``): chroma's server
    # refuses them there.
    body: dict[str, Any] = {
        "ids": batch.ids,
        "embeddings": None if batch.embeddings is None else embeddings_to_base64(batch.embeddings),
        "metadatas": batch.metadatas,
        "documents": batch.documents,
        "uris": batch.uris,
    }
    if batch.sparse:  # retrieval's extension: sparse vectors computed by the client
        body["sparse"] = dict(batch.sparse)
    return body


def _decode_batch(mode: str, body: Mapping[str, Any]) -> RecordBatch:
    # In the handle's order (``retrieval.inputs``), so both halves name the same first problem.
    ids = v.validate_ids(body["ids"])
    n = len(ids)
    metadatas = v.validate_write_metadatas(body.get("metadatas"), n, mode)
    documents = v.validate_strings(body.get("documents"), n, "documents")
    uris = v.validate_strings(body.get("uris"), n, "uris")
    embeddings = body.get("embeddings")
    if embeddings is None and mode != "update":
        raise InvalidArgumentError(f"{mode} needs embeddings{_SERVER_DOES_NOT_EMBED}")
    vectors = None if embeddings is None else v.validate_embeddings(embeddings_from_wire(embeddings), n)
    sparse = body.get("sparse")
    return RecordBatch(ids=ids, embeddings=vectors, metadatas=metadatas, documents=documents, uris=uris,
                       sparse=_sparse_columns(sparse, n) if sparse else {})


def _sparse_columns(sparse: Mapping[str, Any], n: int) -> dict[str, list[Any]]:
    from embedders.sparse import SparseVector

    out = {}
    for key, column in sparse.items():
        if not isinstance(column, list) or len(column) != n:
            raise InvalidArgumentError(f"sparse[{key!r}] must hold {n} entries, one per id")
        out[key] = [None if item is None else SparseVector.from_dict(item) for item in column]
    return out


@dataclass(frozen=True)
class Deletion:
    """A parsed ``delete`` (chromadb 1.5.9's rules: ``validation.validate_delete``)."""

    ids: list[str] | None
    where: Any
    where_document: Any
    limit: int | None


def _encode_delete(ids: list[str] | None, where: Any, where_document: Any, limit: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"ids": ids, "where": _tree(where), "where_document": _tree(where_document)}
    if limit is not None:
        body["limit"] = limit
    return body


def _decode_delete(body: Mapping[str, Any]) -> Deletion:
    ids = _optional_ids(body, allow_empty=True)
    where, where_document = _filters(body)
    return Deletion(ids, where, where_document, v.validate_delete(ids, where, where_document, body.get("limit")))


def _encode_get(request: GetRequest) -> dict[str, Any]:
    return {
        "ids": request.ids,
        "where": _tree(request.where),
        "where_document": _tree(request.where_document),
        "limit": request.limit,
        "offset": request.offset or None,
        "include": list(request.include),
    }


def _decode_get(body: Mapping[str, Any]) -> GetRequest:
    # In the handle's order (``Collection.get``), so both halves name the same first problem.
    ids = _optional_ids(body)
    include = _include(body, INCLUDE_GET)
    limit, offset = v.validate_limit_offset(body.get("limit"), body.get("offset"))
    where, where_document = _filters(body)
    return GetRequest(ids=ids, where=where, where_document=where_document, limit=limit, offset=offset, include=include)


def records_to_wire(records: Records, body: Mapping[str, Any]) -> dict[str, Any]:
    include = _include(body, INCLUDE_GET)
    out: dict[str, Any] = {"ids": records.ids, "include": list(body.get("include") or DEFAULT_INCLUDE_GET)}
    for column in ("embeddings", "documents", "uris", "metadatas"):
        out[column] = getattr(records, column) if column in include else None
    return out


def records_from_wire(answer: Mapping[str, Any]) -> Records:
    return Records(
        ids=answer["ids"],
        embeddings=embeddings_from_answer(answer.get("embeddings")),
        documents=answer.get("documents"),
        uris=answer.get("uris"),
        metadatas=answer.get("metadatas"),
    )


def _encode_query(request: QueryRequest) -> dict[str, Any]:
    return {
        "ids": request.ids,
        # chromadb's server takes query vectors as lists only.
        "query_embeddings": np.asarray(request.embeddings, dtype=np.float32),
        "n_results": request.n_results,
        "where": _tree(request.where),
        "where_document": _tree(request.where_document),
        "include": list(request.include) + ["distances"],
    }


def _decode_query(body: Mapping[str, Any]) -> QueryRequest:
    # In the handle's order (``Collection.query``), so both halves name the same first problem.
    n_results = v.validate_n_results(body.get("n_results", 10))
    include = _include(body, INCLUDE_QUERY)
    ids = _optional_ids(body, allow_empty=True)
    where, where_document = _filters(body)
    vectors = v.validate_embeddings(embeddings_from_wire(body["query_embeddings"], "query_embeddings"),
                                    what="query_embeddings")
    return QueryRequest(embeddings=vectors, n_results=n_results, ids=ids, where=where, where_document=where_document,
                        include=include)


def query_answer_to_wire(answer: QueryAnswer, body: Mapping[str, Any]) -> dict[str, Any]:
    include = _include(body, INCLUDE_QUERY)
    wanted = body.get("include")
    wanted = list(DEFAULT_INCLUDE_QUERY) if wanted is None else list(wanted)
    out: dict[str, Any] = {"ids": [r.ids for r in answer.records], "include": wanted}
    for column in ("embeddings", "documents", "uris", "metadatas"):
        out[column] = [getattr(r, column) for r in answer.records] if column in include else None
    out["distances"] = answer.distances if "distances" in wanted else None
    return out


def query_answer_from_wire(answer: Mapping[str, Any]) -> QueryAnswer:
    n = len(answer["ids"])

    def column(name: str) -> list:
        values = answer.get(name)
        return values if values is not None else [None] * n

    records = [
        Records(ids=ids, embeddings=embeddings_from_answer(embeddings), documents=documents, uris=uris,
                metadatas=metadatas)
        for ids, embeddings, documents, uris, metadatas in zip(
            answer["ids"], column("embeddings"), column("documents"), column("uris"), column("metadatas")
        )
    ]
    distances = [np.asarray(d if d is not None else [], dtype=np.float32) for d in column("distances")]
    return QueryAnswer(records=records, distances=distances)


def _encode_search(searches: Sequence[Any]) -> dict[str, Any]:
    return {"searches": [s.to_dict() for s in searches], "read_level": "index_and_wal"}


def _decode_search(body: Mapping[str, Any]) -> list[Any]:
    from retrieval.search.plan import Search

    searches = body["searches"]
    if not searches:
        raise InvalidArgumentError("'searches' must be a non-empty list of search objects; got []")
    parsed = []
    for position, search in enumerate(searches):
        try:
            parsed.append(Search.from_dict(search))
        except (TypeError, KeyError, AttributeError) as e:  # a malformed dict is the client's error
            raise InvalidArgumentError(f"searches[{position}] is not a valid search: {e}") from e
    return parsed


def _search_result(answer: Any) -> Any:
    from retrieval.search.result import SearchResult

    return SearchResult(answer)


# ------------------------------------------------------------------------------- the table

_RECORD_FIELDS = dict(ids=STRINGS, embeddings=nullable(EMBEDDINGS), metadatas=COLUMN_OF_OBJECTS,
                      documents=COLUMN_OF_STRINGS, uris=COLUMN_OF_STRINGS, sparse=nullable(OBJECT))
_NONE = lambda answer, *_: None  # noqa: E731 - answers with no value ({} on the wire)


def _write(mode: str) -> Verb:
    # ``embeddings`` is required by add and upsert, checked after the ids as the handle does.
    return Verb(Body(_RECORD_FIELDS, ("ids",)), _encode_batch, functools.partial(_decode_batch, mode),
                answer=lambda value, *_: {}, read=_NONE, returns=answers.EMPTY)


NAMED = Body({"name": STRING}, ("name",))

VERBS: dict[str, Verb] = {
    "heartbeat": Verb(answer=lambda ns, *_: {"nanosecond heartbeat": ns},
                      read=lambda a: int(a["nanosecond heartbeat"]), returns=answers.HEARTBEAT),
    "get_version": Verb(read=str, returns=STRING),
    "pre_flight_checks": Verb(returns=answers.PRE_FLIGHT),
    "reset": Verb(read=bool, returns={"type": "boolean"}),
    "get_user_identity": Verb(returns=answers.IDENTITY),
    "create_tenant": Verb(NAMED, lambda name: {"name": name}, _name, answer=lambda *_: {}, read=_NONE, returns=answers.EMPTY),
    "get_tenant": Verb(answer=lambda name, *_: {"name": name, "resource_name": None}, read=lambda r: r["name"],
                       returns=answers.TENANT),
    "list_databases": Verb(read=lambda answer: [database_from_wire(d) for d in answer],
                           returns={"type": "array", "items": answers.DATABASE}),
    "create_database": Verb(NAMED, lambda name: {"name": name}, _name, answer=lambda *_: {}, read=_NONE,
                            returns=answers.EMPTY),
    "get_database": Verb(read=database_from_wire, returns=answers.DATABASE),
    "delete_database": Verb(answer=lambda *_: {}, read=_NONE, returns=answers.EMPTY),
    "count_collections": Verb(read=int, returns=answers.INTEGER),
    "list_collections": Verb(answer=lambda records, *_: [collection_to_wire(r) for r in records],
                             read=lambda answer: [collection_from_wire(c) for c in answer],
                             returns={"type": "array", "items": answers.COLLECTION}),
    "create_collection": Verb(
        Body({"name": STRING, "metadata": nullable(OBJECT), "configuration": nullable(OBJECT),
              "schema": nullable(OBJECT), "get_or_create": BOOLEAN}, ("name",)),
        _encode_create, _decode_create, answer=lambda record, *_: collection_to_wire(record), read=collection_from_wire,
        returns=answers.COLLECTION,
    ),
    "get_collection_by_id": Verb(answer=lambda record, *_: collection_to_wire(record), read=collection_from_wire,
                                 returns=answers.COLLECTION),
    "get_collection": Verb(answer=lambda record, *_: collection_to_wire(record), read=collection_from_wire,
                           returns=answers.COLLECTION),
    "modify_collection": Verb(
        Body({"new_name": nullable(STRING), "new_metadata": nullable(OBJECT), "new_configuration": nullable(OBJECT)}),
        _encode_modify, _decode_modify, answer=lambda *_: {}, returns=answers.EMPTY,
    ),
    "delete_collection": Verb(answer=lambda *_: {}, read=_NONE, returns=answers.EMPTY),
    "add": _write("add"),
    "update": _write("update"),
    "upsert": _write("upsert"),
    "delete": Verb(
        Body({"ids": nullable(STRINGS), "where": FILTER, "where_document": FILTER, "limit": nullable(COUNT)}),
        _encode_delete, _decode_delete, answer=lambda n, *_: {"deleted": n},
        read=lambda answer: int((answer or {}).get("deleted", 0)), returns=answers.DELETED,
    ),
    "count": Verb(read=int, returns=answers.INTEGER),
    "get": Verb(
        Body({"ids": nullable(STRINGS), "where": FILTER, "where_document": FILTER, "limit": nullable(COUNT),
              "offset": nullable(COUNT), "include": INCLUDE}),
        _encode_get, _decode_get, answer=records_to_wire, read=records_from_wire, returns=answers.RECORDS,
    ),
    "query": Verb(
        Body({"query_embeddings": EMBEDDINGS, "n_results": {"type": "integer", "minimum": 1},
              "ids": nullable(STRINGS), "where": FILTER, "where_document": FILTER, "include": INCLUDE},
             ("query_embeddings",), _SERVER_DOES_NOT_EMBED),
        _encode_query, _decode_query, answer=query_answer_to_wire, read=query_answer_from_wire,
        returns=answers.QUERY_ANSWER,
    ),
    "search": Verb(
        Body({"searches": {"type": "array", "items": OBJECT}, "read_level": STRING}, ("searches",)),
        _encode_search, _decode_search, answer=lambda result, *_: dict(result), read=_search_result,
        returns=answers.SEARCH_ANSWER,
    ),
    **{verb: Verb() for verb in CHROMADB_ONLY},  # answered "not supported"; their bodies are not parsed
}

# Query-string parameters of the verbs that page (``limit`` and ``offset``).
PAGED = ("list_databases", "list_collections")
