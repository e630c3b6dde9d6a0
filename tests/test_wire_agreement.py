"""The two halves of the wire agree, verb by verb, on generated valid and invalid requests.

For every verb that takes a body, hypothesis draws one request (ids, vectors, metadata, filters,
limits, include lists: good and bad values mixed) and sends it through

- the client half: our ``Collection`` handle (what ``retrieval.HttpClient`` refuses before sending),
  over a backend that records the typed values it is handed, then our client's encoding of those
  values (``Calls``) into the server's parser;
- the server half: the request as chromadb's own client puts it on the wire (the JSON body), into
  the server's handler over the same recording backend.

Both halves must accept the same requests, refuse the others with the same error class, and hand
the backend equal typed values. Deliberate differences are excluded from the generated space and
named where they are (the server does not embed; ``{}`` filters are chromadb clients' "no filter").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.collection import Collection
from retrieval.config import CollectionConfig
from retrieval.errors import InvalidArgumentError
from retrieval.http.calls import Calls
from retrieval.http.verbs import VERBS, CheckedBody
from retrieval.http.wire import ROUTES, dumps, loads
from retrieval.server import handlers
from retrieval.types import CollectionRecord, QueryAnswer, Records

RECORD = CollectionRecord(
    id="0b6a0c44-0d0a-4f5e-9d4e-7d1c9c3f2a11", name="agree", tenant="default_tenant", database="default_database",
    config=CollectionConfig(), metadata=None, dimension=None,
)
PATH = {"tenant": RECORD.tenant, "database": RECORD.database, "collection": RECORD.id}


class Recorder:
    """A backend that records what it is handed and answers with empty results."""

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []

    def get_collection_by_id(self, tenant, database, collection_id):
        return RECORD

    def get_max_batch_size(self):
        return 100_000

    def write(self, record, mode, batch):
        self.calls.append((mode, (batch,)))

    def delete(self, record, ids, where, where_document, limit):
        self.calls.append(("delete", (ids, where, where_document, limit)))
        return 0

    def get(self, record, request):
        self.calls.append(("get", (request,)))
        return Records(ids=[], embeddings=np.zeros((0, 0), np.float32), documents=[], uris=[], metadatas=[])

    def query(self, record, request):
        self.calls.append(("query", (request,)))
        n = len(request.embeddings)
        empty = Records(ids=[], embeddings=np.zeros((0, 0), np.float32), documents=[], uris=[], metadatas=[])
        return QueryAnswer(records=[empty] * n, distances=[np.zeros(0, np.float32)] * n)

    def modify_collection(self, record, name, metadata, config):
        self.calls.append(("modify_collection", (name, metadata, config)))
        return record

    def create_collection(self, tenant, database, name, config, metadata, get_or_create):
        self.calls.append(("create_collection", (name, config, metadata, get_or_create)))
        return RECORD

    def search(self, record, searches):
        self.calls.append(("search", (searches,)))
        return {}

    def __getattr__(self, verb):  # tenants and databases
        return lambda *args: self.calls.append((verb, args))


def plain(value):
    """Typed values as comparable plain data (arrays as lists, dataclasses as dicts, trees as dicts)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict") and not isinstance(value, (Records,)):
            return value.to_dict()
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):  # a dict, or a batch's read-only sparse columns
        return {k: plain(v) for k, v in value.items()}
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def outcome(run):
    """(accepted, error class) of running one half; a non-RetrievalError is a bug, not an answer."""
    try:
        run()
    except InvalidArgumentError as error:
        return False, type(error)
    return True, None


# --------------------------------------------------------------------------- generated values

def mostly(valid, invalid):
    """Valid values four times in five, so both accepted and refused requests are common."""
    return st.integers(0, 4).flatmap(lambda k: valid if k else invalid)


texts = st.text(alphabet="ab✓-_", min_size=1, max_size=3)
ids = mostly(
    st.lists(texts, min_size=1, max_size=4, unique=True),
    st.one_of(st.just([]), st.just(["a", "a"]), st.just(["a", ""]), st.lists(st.integers(0, 3), min_size=1, max_size=2)),
)
floats = st.floats(-4, 4, allow_nan=False, width=32)
scalars = mostly(st.one_of(st.integers(-3, 3), floats, st.booleans(), texts, st.lists(st.integers(0, 3), min_size=1, max_size=2)),
                 st.one_of(st.none(), st.just([]), st.dictionaries(texts, st.integers(-3, 3), max_size=1), st.just(2**63)))  # past int64, within JSON
metadata = st.one_of(st.none(), st.dictionaries(mostly(texts, st.sampled_from(["", "#doc", "hnsw:space"])), scalars,
                                                min_size=1, max_size=3), st.just({}))
# ``{}`` filters are left out: the handle refuses ``where={}`` as chromadb's client does, while the
# server takes ``{}`` for "no filter" because chromadb's clients send it so.
where = mostly(st.sampled_from([None, {"tag": "t1"}, {"n": {"$gte": 2}}, {"$and": [{"tag": "t1"}, {"n": 1}]},
                                {"tags": {"$contains": "x"}}, {"tag": {"$in": ["a", "b"]}}]),
               st.sampled_from([{"$or": [{"tag": "t1"}]}, {"tag": {"$in": []}}, {"tag": {"$bogus": 1}}, {"$and": "x"},
                                {"n": {"$gt": "2"}}, {"tag": [1, 2]}, {"n": None}]))
where_document = mostly(st.sampled_from([None, {"$contains": "a"}, {"$not_contains": "b"}, {"$regex": "^a"},
                                         {"$and": [{"$contains": "a"}, {"$contains": "b"}]}]),
                        st.sampled_from([{"$regex": "("}, {"$contains": 3}, {"$bogus": "a"}, {"$contains": ""}]))
count = mostly(st.one_of(st.none(), st.integers(0, 5)), st.sampled_from([-1, True, 2.5]))
# "data" is left out of include: the client loads it with its data loader, the server never does.
include = mostly(st.one_of(st.none(), st.lists(st.sampled_from(["documents", "metadatas", "embeddings", "uris"]),
                                               max_size=4, unique=True)),
                 st.lists(st.sampled_from(["distances", "bogus", "documents"]), min_size=1, max_size=2, unique=True))


@st.composite
def vectors(draw, n):
    """``n`` vectors of one dimension, sometimes one fewer or one more, ragged or not numbers."""
    dim = draw(st.integers(1, 3))
    if not draw(st.integers(0, 4)):
        n = draw(st.sampled_from([max(n - 1, 0), n + 1]))
    rows = [draw(st.lists(floats, min_size=dim, max_size=dim)) for _ in range(n)]
    if rows and not draw(st.integers(0, 4)):
        rows[-1] = draw(st.sampled_from([[], [1.0] * (dim + 1), ["x"] * dim]))
    return rows


def column(values, n):
    """None, or a column of ``n`` values (sometimes of the wrong length)."""
    sizes = mostly(st.just(n), st.sampled_from([max(n - 1, 0), n + 1]))
    return st.one_of(st.none(), sizes.flatmap(lambda k: st.lists(values, min_size=k, max_size=k)))


@st.composite
def writes(draw, mode):
    record_ids = draw(ids)
    n = len(record_ids)
    embeddings = vectors(n)
    request = {"ids": record_ids, "embeddings": draw(mostly(embeddings, st.none()) if mode != "update" else
                                                         st.one_of(embeddings, st.none())),
               "metadatas": draw(column(metadata, n))}
    if request["embeddings"] is not None:
        # Without embeddings the handle embeds documents and uris with the collection's function
        # (the server never embeds): only vectors sent with them are compared.
        request["documents"] = draw(column(st.one_of(texts, st.none()), n))
        request["uris"] = draw(column(st.one_of(texts, st.none()), n))
    return request


def requests_for(verb):
    if verb in ("add", "update", "upsert"):
        return writes(verb)
    if verb == "delete":
        return st.fixed_dictionaries({"ids": st.one_of(st.none(), ids), "where": where,
                                      "where_document": where_document, "limit": count})
    if verb == "get":
        return st.fixed_dictionaries({"ids": st.one_of(st.none(), ids), "where": where, "where_document": where_document,
                                      "limit": count, "offset": count, "include": include})
    if verb == "query":
        return st.fixed_dictionaries({"query_embeddings": st.integers(0, 3).flatmap(vectors),
                                      "n_results": mostly(st.integers(1, 20), count),
                                      "ids": st.one_of(st.none(), ids), "where": where,
                                      "where_document": where_document, "include": include})
    if verb == "modify_collection":
        return st.fixed_dictionaries({"name": st.one_of(st.none(), st.sampled_from(["ok-name", "x", "a..b", "ünï"])),
                                      "metadata": metadata})
    raise AssertionError(verb)


# ----------------------------------------------------------------------------- the two halves


def client_half(verb, request, backend):
    col = Collection(backend, RECORD, None, None)
    if verb == "modify_collection":
        return col.modify(**request)
    return getattr(col, verb)(**request)


def chromadb_body(verb, request):
    """The request as chromadb's client puts it on the wire (lists as they are, None left in)."""
    if verb == "modify_collection":
        return {"new_name": request["name"], "new_metadata": request["metadata"], "new_configuration": None}
    body = dict(request)
    if verb == "delete" and body.get("limit") is None:
        body.pop("limit")
    return loads(dumps(body))


def server_half(verb, body, backend):
    return handlers.HANDLERS[verb](handlers.ServerState(backend), PATH, {}, body)


def resend(call, backend):
    """Our client's encoding of a call, decoded by the server (the round trip of ``Calls``)."""
    body = loads(dumps(call.body)) if call.body is not None else None
    return handlers.HANDLERS[call.route.verb](handlers.ServerState(backend), PATH, {}, body)


def encoded(verb, args):
    calls = Calls()
    if verb in ("add", "update", "upsert"):
        return calls.write(RECORD, verb, *args)
    return getattr(calls, verb)(RECORD, *args)


BODY_VERBS = ["add", "update", "upsert", "delete", "get", "query", "modify_collection"]


@pytest.mark.parametrize("verb", BODY_VERBS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_client_and_server_halves_agree(verb, data):
    request = data.draw(requests_for(verb), label="request")
    ours, theirs = Recorder(), Recorder()
    client = outcome(lambda: client_half(verb, request, ours))
    server = outcome(lambda: server_half(verb, chromadb_body(verb, request), theirs))
    assert client == server, (request, client, server)
    if not client[0]:
        assert ours.calls == [] and theirs.calls == []  # a refused request reaches no backend
        return
    if verb == "modify_collection":
        return  # the handle sends (name, metadata, config); compared below by value
    assert plain(ours.calls) == plain(theirs.calls)
    if not ours.calls:  # delete(limit=0): answered without the backend by both
        return
    # Our client's encoding of what the handle produced decodes to the same typed values.
    (_, args), = ours.calls
    again = Recorder()
    resend(encoded(verb, args), again)
    assert plain(again.calls) == plain(ours.calls)


def test_modify_halves_hand_the_same_values():
    ours, theirs = Recorder(), Recorder()
    request = {"name": "renamed", "metadata": {"k": 1}}
    client_half("modify_collection", request, ours)
    server_half("modify_collection", chromadb_body("modify_collection", request), theirs)
    assert ours.calls == theirs.calls == [("modify_collection", ("renamed", {"k": 1}, None))]


def test_none_valued_keys_are_absent_in_add_and_deletions_in_update():
    """Both halves hand the backend the same records; our client never sends a null in add (chroma's
    server refuses it there)."""
    metadatas = [{"k": None, "j": 1}, {"k": None}]
    for mode, expected in (("add", [{"j": 1}, None]), ("update", metadatas)):
        request = {"ids": ["a", "b"], "embeddings": [[1.0], [2.0]], "metadatas": metadatas}
        ours, theirs = Recorder(), Recorder()
        client_half(mode, request, ours)
        server_half(mode, chromadb_body(mode, request), theirs)
        assert plain(ours.calls) == plain(theirs.calls)
        (_, (batch,)), = ours.calls
        assert plain(batch.metadatas) == expected and plain(encoded(mode, (batch,)).body["metadatas"]) == expected


@pytest.mark.parametrize("verb", [verb for verb, spec in VERBS.items() if spec.body is not None])
@settings(max_examples=40, deadline=None)
@given(body=st.one_of(st.none(), st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2),
                      st.dictionaries(st.sampled_from(["ids", "name", "where", "limit", "searches", "query_embeddings",
                                                       "embeddings", "include", "new_name"]),
                                      st.one_of(st.none(), st.integers(), st.text(max_size=2), st.booleans(),
                                                st.lists(st.integers(), max_size=2)), max_size=3)))
def test_malformed_bodies_are_invalid_argument_for_every_verb(verb, body):
    """Any JSON value as a body: an answer or InvalidArgumentError, never another exception, and a
    body the verb's schema refuses never reaches the backend."""
    backend = Recorder()
    state = handlers.ServerState(backend)
    spec = VERBS[verb]
    try:
        CheckedBody(verb, spec.body, body).check_rest()
        well_typed = True
    except InvalidArgumentError:
        well_typed = False
    try:
        handlers.HANDLERS[verb](state, PATH, {}, body)
    except InvalidArgumentError:
        pass
    if not well_typed:
        assert backend.calls == []


def test_every_body_verb_is_generated_and_every_route_has_a_verb():
    assert set(VERBS) == set(ROUTES)
    with_body = {verb for verb, spec in VERBS.items() if spec.body is not None}
    # Tenants, databases and collections are created by name (checked in test_http_wire); search
    # bodies are Search trees (tests/test_search_roundtrip.py).
    assert with_body - set(BODY_VERBS) == {"create_tenant", "create_database", "create_collection", "search"}


def test_nan_cannot_cross_json():
    # The generator draws no NaN: JSON has none (orjson writes null), so the halves differ by design.
    assert loads(dumps([math.nan])) == [None]


def test_every_answer_matches_the_schema_its_verb_publishes():
    """The server's answers, one real request per route, against the answer schemas in the verb table
    (the same ones the OpenAPI document publishes), so the published shapes cannot drift either."""
    import json

    from jsonschema import Draft202012Validator
    from starlette.testclient import TestClient

    from retrieval.server.openapi import openapi_document
    from tests.server_fixtures import ADMIN, bearer, make_world, permitted
    from tests.server_fixtures import requests_for as route_requests

    world = make_world()
    client = TestClient(world.app)
    document = openapi_document("test", auth=True)
    requests = route_requests("tenant-a", "db-a", "alpha", world.ids["alpha"])
    last = ("delete_collection", "delete_database", "reset")
    checked = 0
    for verb in [v for v in requests if v not in last] + list(last):
        method, path, body = requests[verb]
        response = client.request(method, path, headers=bearer(ADMIN), content=None if body is None else json.dumps(body))
        assert permitted(verb, response.status_code), (verb, response.text)
        route = ROUTES[verb]
        responses = document["paths"]["/api/v2" + route.path][route.method.lower()]["responses"]
        if response.status_code >= 400:
            schema = responses["default"]["content"]["application/json"]["schema"]
        else:
            schema = responses[str(response.status_code)]["content"]["application/json"]["schema"]
            assert schema == VERBS[verb].returns
            checked += 1
        errors = [e.message for e in Draft202012Validator(schema).iter_errors(response.json())]
        assert not errors, (verb, errors, response.text[:300])
    assert checked == len(VERBS) - 6  # every verb but the six "not supported" ones answered
