"""The sans-IO wire codec: what the client encodes, the server decodes into the same typed values,
and what the server answers, the client decodes back; chromadb's own shapes are read and written."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from retrieval import errors
from retrieval.config import CollectionConfig, ComponentSpec, HnswConfig, SparseConfig
from retrieval.http import wire
from retrieval.http.calls import Calls
from retrieval.http.verbs import query_answer_from_wire, records_from_wire
from retrieval.loader_metadata import LOADER_KEY
from retrieval.query.filters import parse_where, parse_where_document
from retrieval.server import handlers
from retrieval.types import CollectionRecord, GetRequest, QueryRequest, RecordBatch

RECORD = CollectionRecord(
    id="0b6a0c44-0d0a-4f5e-9d4e-7d1c9c3f2a11",
    name="photos",
    tenant="acme",
    database="prod",
    config=CollectionConfig(
        hnsw=HnswConfig(space="cosine", ef_search=40),
        embedding_function=ComponentSpec("open_clip", {"model_name": "ViT-B-32"}),
        data_loader=ComponentSpec("image", {}),
    ),
    metadata={"owner": "ünï"},
    dimension=512,
)


class FakeBackend:
    """Records what the server handlers pass to the backend."""

    def __init__(self):
        self.calls = []

    def get_collection_by_id(self, tenant, database, collection_id):
        assert (tenant, database, collection_id) == (RECORD.tenant, RECORD.database, RECORD.id)
        return RECORD

    def get_max_batch_size(self):  # asked by the server's batch-size check, not a recorded call
        return 1000

    def __getattr__(self, verb):
        def record(*args):
            self.calls.append((verb, args))
            return self.answers.get(verb)

        return record

    answers: dict = {}


def _serve(call: wire.Call, backend: FakeBackend):
    """Run a client Call through the server handler for its route, as the app would."""
    route = call.route
    template = wire.API_PREFIX + route.path
    path_params = {}
    for part, value in zip(template.split("/"), (wire.API_PREFIX + call.path).split("/")):
        if part.startswith("{"):
            path_params[part.strip("{}")] = value
    body = wire.parse_body(wire.dumps(call.body)) if call.body is not None else None
    params = {k: str(v) for k, v in (call.params or {}).items()}
    return handlers.HANDLERS[route.verb](handlers.ServerState(backend), path_params, params, body)


def test_every_route_has_a_handler_and_a_client_call():
    assert set(wire.ROUTES) == set(handlers.HANDLERS)
    client_verbs = {name for name in vars(Calls) if not name.startswith("_")}
    # The client sends every route but chromadb Cloud's; write() covers add/update/upsert.
    assert set(wire.ROUTES) - client_verbs == {"add", "update", "upsert", *wire.CHROMADB_ONLY}
    assert client_verbs - set(wire.ROUTES) == {"write"}


def test_write_round_trip_base64_embeddings():
    batch = RecordBatch(
        ids=["a", "b"],
        embeddings=np.array([[0.5, -1.25, 3.0], [1e-8, 2.0, -0.0]], dtype=np.float32),
        metadatas=[{"tag": "t3", "n": 1}, None],
        documents=["héllo ✓", None],
        uris=[None, "file:///x.png"],
    )
    call = Calls().write(RECORD, "upsert", batch)
    assert call.route.method == "POST" and call.path.endswith(f"/collections/{RECORD.id}/upsert")
    assert all(isinstance(e, str) for e in call.body["embeddings"])  # base64 on the wire
    backend = FakeBackend()
    assert _serve(call, backend) == {}
    (verb, (record, mode, got)), = backend.calls
    assert (verb, record, mode) == ("write", RECORD, "upsert")
    np.testing.assert_array_equal(got.embeddings, batch.embeddings)
    assert (got.ids, got.metadatas, got.documents, got.uris) == (batch.ids, batch.metadatas, batch.documents, batch.uris)


def test_base64_is_chromadb_packing_and_lists_work_too():
    vector = [0.1, 0.2, -3.5]
    packed = base64.b64encode(struct.pack("<3f", *vector)).decode()  # chromadb's pack_embedding_safely
    assert wire.embeddings_to_base64(np.array([vector], np.float32)) == [packed]
    decoded = wire.embeddings_from_wire([packed, packed])
    np.testing.assert_array_equal(decoded, np.array([vector, vector], np.float32))
    assert wire.embeddings_from_wire([[1, 2], [3, 4]]) == [[1, 2], [3, 4]]  # lists go to the validator
    with pytest.raises(errors.InvalidArgumentError, match="one non-zero length"):
        wire.embeddings_from_wire([packed, base64.b64encode(b"\0" * 8).decode()])
    with pytest.raises(errors.InvalidArgumentError, match="mixes"):
        wire.embeddings_from_wire([packed, [1.0, 2.0, 3.0]])


def test_get_round_trip_with_parsed_filters():
    request = GetRequest(
        ids=["a"],
        where=parse_where({"$and": [{"tag": {"$in": ["t1", "t3"]}}, {"n": {"$gte": 2}}]}),
        where_document=parse_where_document({"$contains": "ünï"}),
        limit=5,
        offset=2,
        include=("embeddings", "documents"),  # stored_columns order, as the handle builds it
    )
    backend = FakeBackend()
    from retrieval.types import Records

    backend.answers = {"get": Records(ids=["a"], embeddings=np.ones((1, 3), np.float32), documents=["d"])}
    answer = _serve(Calls().get(RECORD, request), backend)
    (_, (_, got)), = backend.calls
    assert got == request
    decoded = records_from_wire(wire.loads(wire.dumps(answer)))
    assert decoded.ids == ["a"] and decoded.documents == ["d"] and decoded.metadatas is None
    np.testing.assert_array_equal(decoded.embeddings, np.ones((1, 3), np.float32))


def test_query_round_trip():
    from retrieval.types import QueryAnswer, Records

    request = QueryRequest(embeddings=np.array([[1, 0], [0, 1]], np.float32), n_results=3, include=("metadatas",))
    backend = FakeBackend()
    backend.answers = {
        "query": QueryAnswer(
            records=[Records(ids=["x"], metadatas=[{"k": 1}]), Records(ids=[], metadatas=[])],
            distances=[np.array([0.25], np.float32), np.array([], np.float32)],
        )
    }
    answer = _serve(Calls().query(RECORD, request), backend)
    (_, (_, got)), = backend.calls
    np.testing.assert_array_equal(got.embeddings, request.embeddings)
    assert (got.n_results, got.include) == (3, ("metadatas",))
    decoded = query_answer_from_wire(wire.loads(wire.dumps(answer)))
    assert [r.ids for r in decoded.records] == [["x"], []]
    assert decoded.records[0].metadatas == [{"k": 1}] and decoded.records[0].documents is None
    assert decoded.distances[0].tolist() == [0.25]


def test_collection_json_is_chromadb_shape_and_round_trips():
    data = wire.loads(wire.dumps(wire.collection_to_wire(RECORD)))
    assert data["schema"]["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"] == "cosine"
    assert set(data) == {"id", "name", "configuration_json", "schema", "metadata", "dimension", "tenant", "database",
                         "log_position", "version"}
    assert data["configuration_json"]["hnsw"] == {
        "space": "cosine", "ef_construction": 100, "ef_search": 40, "max_neighbors": 16, "resize_factor": 1.2,
        "sync_threshold": 1000,
    }
    assert data["configuration_json"]["embedding_function"] == {
        "type": "known", "name": "open_clip", "config": {"model_name": "ViT-B-32"}
    }
    back = wire.collection_from_wire(data)
    assert back.config == RECORD.config  # typed on both sides of the wire, parsed once on arrival
    assert (back.id, back.name, back.metadata, back.dimension, back.tenant) == (
        RECORD.id, "photos", {"owner": "ünï"}, 512, "acme"
    )


def test_chromadb_create_configuration_is_read():
    # What chromadb-client 1.5.9 sends for configuration={"hnsw": {...}} with its default function.
    sent = {"hnsw": {"space": "ip", "ef_search": 20}, "spann": None,
            "embedding_function": {"type": "known", "name": "default", "config": {}}}
    config = wire.configuration_from_wire(sent, {"max_neighbors": 8})
    assert (config.hnsw.space, config.hnsw.ef_search, config.hnsw.max_neighbors) == ("ip", 20, 8)
    assert config.embedding_function == ComponentSpec("default", {})
    assert wire.configuration_from_wire({"embedding_function": {"type": "legacy"}}, None).embedding_function.legacy
    with pytest.raises(errors.InvalidArgumentError, match="unknown hnsw"):
        wire.configuration_from_wire({"hnsw": {"bogus": 1}}, None)
    sparse = SparseConfig("sparse_embedding", ComponentSpec("chroma_bm25", {}))
    assert wire.configuration_from_wire({"sparse": sparse.to_dict()}, None).sparse == sparse


def test_modify_sends_only_changed_settings_and_reads_back():
    old = RECORD.config
    import dataclasses

    new = dataclasses.replace(old, hnsw=old.hnsw.modified({"ef_search": 77}))
    call = Calls().modify_collection(RECORD, "renamed", {"a": 1}, new)
    stored_loader = {LOADER_KEY: json.dumps(old.data_loader.to_dict(), sort_keys=True)}  # kept through a modify
    assert call.body == {"new_name": "renamed", "new_metadata": {"a": 1, **stored_loader},
                         "new_configuration": {"hnsw": {"ef_search": 77}, "spann": None, "embedding_function": None}}
    assert call.then is not None and call.then({}).route.verb == "get_collection_by_id"
    assert wire.configuration_update_from_wire(old, call.body["new_configuration"]) == new


@pytest.mark.parametrize(
    "error, status, name",
    [
        (errors.InvalidArgumentError("bad"), 400, "InvalidArgumentError"),
        (errors.DimensionMismatchError("dim"), 400, "InvalidArgumentError"),
        (errors.DuplicateIDError("dup"), 400, "InvalidArgumentError"),
        (errors.NotFoundError("gone"), 404, "NotFoundError"),
        (errors.UniqueConstraintError("taken"), 409, "ChromaError"),
        (errors.NotAllowedError("no"), 403, "ChromaError"),
        (errors.InternalError("oops"), 500, "InternalError"),
    ],
)
def test_errors_map_both_ways(error, status, name):
    got_status, body = wire.error_to_wire(error)
    assert (got_status, body["error"], body["message"]) == (status, name, str(error))
    back = wire.error_from_wire(got_status, body)
    assert type(back) is type(error) and str(back) == str(error)


def test_errors_from_chromadb_server_and_unexpected_failures():
    # chromadb's server names the code only; the status picks our class.
    assert type(wire.error_from_wire(409, {"error": "ChromaError", "message": "Collection [x] already exists"})) is (
        errors.UniqueConstraintError
    )
    assert type(wire.error_from_wire(400, {"error": "InvalidArgumentError", "message": "m"})) is errors.InvalidArgumentError
    assert type(wire.error_from_wire(502, None, "bad gateway")) is errors.InternalError
    status, body = wire.error_to_wire(KeyError("secret internal detail"))
    assert status == 500 and "secret" not in body["message"] and body["error"] == "InternalError"


def test_bad_bodies_are_client_errors():
    with pytest.raises(errors.InvalidArgumentError, match="not valid JSON"):
        wire.parse_body(b"{nope")
    state = handlers.ServerState(FakeBackend())
    path = {"tenant": RECORD.tenant, "database": RECORD.database, "collection": RECORD.id}
    with pytest.raises(errors.InvalidArgumentError, match="does not embed"):
        handlers.HANDLERS["add"](state, path, {}, {"ids": ["a"], "documents": ["text only"]})
    with pytest.raises(errors.InvalidArgumentError, match="does not embed"):
        handlers.HANDLERS["query"](state, path, {}, {"query_texts": ["a"]})
    with pytest.raises(errors.InvalidArgumentError, match="JSON object"):
        handlers.HANDLERS["get"](state, path, {}, [1, 2])
    assert state.backend.calls == []  # nothing reached the backend
