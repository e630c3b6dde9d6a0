"""Every public method of chromadb-client 1.5.9's ``HttpClient``, ``AsyncHttpClient``,
``AdminClient``, ``Collection`` and ``AsyncCollection``, called against a real ``retrieval run``.

The methods are enumerated by introspection: a chromadb release that adds one fails
``test_every_public_method_has_a_scenario`` until it gets a scenario here. Each scenario returns a
plain summary of what the call did (values that are the same on any server, or the error class),
compared with what the same call does against ``chroma run``: live when ``CHROMA_PEER`` names
chromadb 1.5.9's ``chroma`` executable, else the outcomes recorded from it in
``tests/data/chroma_1.5.9_method_outcomes.json`` (re-record with ``CHROMA_PEER=... RECORD_OUTCOMES=1``).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.http_server import RunningServer

chromadb = pytest.importorskip("chromadb")
from chromadb.api.async_client import AsyncClient  # noqa: E402
from chromadb.api.client import AdminClient, Client  # noqa: E402
from chromadb.api.models.AsyncCollection import AsyncCollection  # noqa: E402
from chromadb.api.models.Collection import Collection  # noqa: E402

PEER = os.environ.get("CHROMA_PEER")
RECORDED = Path(__file__).parent / "data" / "chroma_1.5.9_method_outcomes.json"
CLASSES = {"Client": Client, "AdminClient": AdminClient, "AsyncClient": AsyncClient, "Collection": Collection,
           "AsyncCollection": AsyncCollection}
_names = itertools.count()


def public_members(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_"))


async def m(value: Any) -> Any:
    """A sync client's value, or an async client's awaited: one scenario serves both."""
    return await value if inspect.isawaitable(value) else value


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def settings(server, api: str = "chromadb.api.fastapi.FastAPI") -> Any:
    return chromadb.Settings(anonymized_telemetry=False, chroma_server_host="127.0.0.1",
                             chroma_server_http_port=server.port, chroma_api_impl=api)


class World:
    """What a scenario gets: a client of the right kind and a fresh collection holding 4 records."""

    def __init__(self, server, kind: str):
        self.server, self.kind = server, kind

    async def start(self) -> World:
        if self.kind.startswith("Async"):
            self.client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=self.server.port,
                                                         settings=chromadb.Settings(anonymized_telemetry=False))
        else:
            self.client = chromadb.HttpClient(host="127.0.0.1", port=self.server.port,
                                              settings=chromadb.Settings(anonymized_telemetry=False))
        self.admin = chromadb.AdminClient(settings(self.server))
        self.col = await m(self.client.create_collection(unique("col"), embedding_function=None))
        await m(self.col.add(ids=["a", "b", "c", "d"], embeddings=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]],
                             documents=["apple", "banana", "cherry", None],
                             metadatas=[{"tag": "t1"}, {"tag": "t3"}, {"tag": "t3"}, None]))
        return self


def error(run) -> str:
    """The chromadb error class a call raised (or "ok")."""
    async def go():
        try:
            await m(run())
        except Exception as e:  # noqa: BLE001 - the class is the outcome
            return f"error:{type(e).__name__}"
        return "ok"

    return go()


# ---------------------------------------------------------------------------------- scenarios
# Each takes the World and returns a JSON-able summary.


async def s_heartbeat(w):
    return type(await m(w.client.heartbeat())).__name__


async def s_get_version(w):
    return type(await m(w.client.get_version())).__name__


async def s_get_max_batch_size(w):
    return (await m(w.client.get_max_batch_size())) > 1000


async def s_get_settings(w):
    return type(w.client.get_settings()).__name__


async def s_get_user_identity(w):
    identity = await m(w.client.get_user_identity())
    return {"tenant": identity.tenant, "databases": list(identity.databases)}


async def s_reset(w):
    return await error(lambda: w.client.reset())  # the servers run without allow_reset


async def s_create_collection(w):
    col = await m(w.client.create_collection(unique("create"), metadata={"k": 1}, embedding_function=None))
    duplicate = await error(lambda: w.client.create_collection(col.name, embedding_function=None))
    return [col.metadata, await m(col.count()), duplicate]


async def s_get_collection(w):
    got = await m(w.client.get_collection(w.col.name, embedding_function=None))
    return [got.id == w.col.id, await error(lambda: w.client.get_collection("never-made-here", embedding_function=None))]


async def s_get_collection_by_id(w):
    got = await m(w.client.get_collection_by_id(w.col.id))
    missing = await error(lambda: w.client.get_collection_by_id("0b6a0c44-0d0a-4f5e-9d4e-7d1c9c3f2a11"))
    return [got.name == w.col.name, missing]


async def s_get_or_create_collection(w):
    again = await m(w.client.get_or_create_collection(w.col.name, embedding_function=None))
    new = await m(w.client.get_or_create_collection(unique("goc"), embedding_function=None))
    return [again.id == w.col.id, await m(new.count())]


async def s_list_collections(w):
    listed = await m(w.client.list_collections())
    return [w.col.name in [c.name for c in listed], type(listed[0]).__name__]


async def s_count_collections(w):
    return (await m(w.client.count_collections())) >= 1


async def s_delete_collection(w):
    await m(w.client.delete_collection(w.col.name))
    return [await error(lambda: w.client.get_collection(w.col.name)),
            await error(lambda: w.client.delete_collection(w.col.name))]


async def s_set_tenant(w):
    tenant = unique("tenant")
    w.admin.create_tenant(tenant)
    w.admin.create_database("db1", tenant=tenant)
    await m(w.client.set_tenant(tenant, database="db1"))
    return [w.client.tenant == tenant, await m(w.client.count_collections()),
            await error(lambda: w.client.set_tenant(unique("no-tenant")))]


async def s_set_database(w):
    w.admin.create_database(unique("db"))
    return [await error(lambda: w.client.set_database(unique("no-db"))), await m(w.client.list_collections()) != []]


async def s_close(w):
    if not hasattr(w.client, "close"):
        return "no close"
    await m(w.client.close())
    return "closed"


async def s_clear_system_cache(w):
    type(w.client).clear_system_cache()
    return "ok"


async def s_from_system(w):
    try:
        return type(type(w.client).from_system(w.client._system)).__name__
    except NotImplementedError:  # AsyncClient: "Use .from_system_async() instead"
        return "error:NotImplementedError"


async def s_from_system_async(w):
    return type(await type(w.client).from_system_async(w.client._system)).__name__


async def s_create(w):
    client = await AsyncClient.create(settings=settings(w.server, "chromadb.api.async_fastapi.AsyncFastAPI"))
    return type(await client.heartbeat()).__name__


async def s_get_chroma_cloud_api_key_from_clients(w):
    return type(w.client).get_chroma_cloud_api_key_from_clients()


# --------------------------------------------------------------------------------- AdminClient


async def s_create_tenant(w):
    tenant = unique("tenant")
    w.admin.create_tenant(tenant)
    return [w.admin.get_tenant(tenant)["name"] == tenant, await error(lambda: w.admin.create_tenant(tenant))]


async def s_get_tenant(w):
    return [w.admin.get_tenant("default_tenant")["name"], await error(lambda: w.admin.get_tenant(unique("none")))]


async def s_create_database(w):
    name = unique("db")
    w.admin.create_database(name)
    return [w.admin.get_database(name)["name"] == name, await error(lambda: w.admin.create_database(name))]


async def s_get_database(w):
    got = w.admin.get_database("default_database")
    return [got["name"], got["tenant"], await error(lambda: w.admin.get_database(unique("none")))]


async def s_list_databases(w):
    tenant = unique("tenant")
    w.admin.create_tenant(tenant)
    for name in ("db-1", "db-2", "db-3"):
        w.admin.create_database(name, tenant=tenant)
    return [[d["name"] for d in w.admin.list_databases(tenant=tenant)],
            [d["name"] for d in w.admin.list_databases(limit=1, offset=1, tenant=tenant)]]


async def s_delete_database(w):
    name = unique("db")
    w.admin.create_database(name)
    w.admin.delete_database(name)
    return [await error(lambda: w.admin.get_database(name)), await error(lambda: w.admin.delete_database(name))]


# ---------------------------------------------------------------------------------- collections


async def s_add(w):
    await m(w.col.add(ids=["e"], embeddings=[[0.5, 0.5, 0.5]], documents=["elder"]))
    return [await m(w.col.count()), await error(lambda: w.col.add(ids=["x"], embeddings=[[1.0, 2.0]]))]


async def s_count(w):
    return await m(w.col.count())


async def s_get(w):
    got = await m(w.col.get(where={"tag": "t3"}, include=["documents", "metadatas"]))
    page = await m(w.col.get(limit=2, offset=1))
    return [sorted(got["ids"]), sorted(got["documents"]), page["ids"], await error(lambda: w.col.get(ids=[]))]


async def s_peek(w):
    peeked = await m(w.col.peek(limit=2))
    return [peeked["ids"], len(peeked["embeddings"])]


async def s_query(w):
    res = await m(w.col.query(query_embeddings=[[1, 0.1, 0]], n_results=2, where={"tag": {"$in": ["t1", "t3"]}}))
    return [res["ids"], [round(d, 4) for d in res["distances"][0]],
            await error(lambda: w.col.query(query_embeddings=[[1.0, 2.0]]))]


async def s_update(w):
    await m(w.col.update(ids=["a"], metadatas=[{"tag": "t9"}], documents=["apricot"], embeddings=[[1, 0, 0.1]]))
    got = await m(w.col.get(ids=["a"]))
    return [got["metadatas"], got["documents"]]


async def s_upsert(w):
    await m(w.col.upsert(ids=["a", "z"], embeddings=[[1, 0, 0], [0, 0, 0.5]], metadatas=[{"n": 1}, {"n": 2}]))
    got = await m(w.col.get(ids=["a", "z"], include=["metadatas"]))
    return [sorted(zip(got["ids"], [json.dumps(x, sort_keys=True) for x in got["metadatas"]])), await m(w.col.count())]


async def s_delete(w):
    deleted = await m(w.col.delete(where={"tag": "t3"}, limit=1))
    return [deleted, await m(w.col.count()), await error(lambda: w.col.delete(ids=[]))]


async def s_modify(w):
    name = unique("renamed")
    await m(w.col.modify(name=name, metadata={"m": 2}, configuration={"hnsw": {"ef_search": 77}}))
    got = await m(w.client.get_collection(name, embedding_function=None))
    return [got.metadata, got.configuration_json["hnsw"]["ef_search"]]


async def s_search(w):
    from chromadb import K, Knn, Search

    return await error(lambda: w.col.search(Search().where(K("tag") == "t3").rank(Knn(query=[0, 0, 1])).limit(2)))


async def s_fork(w):
    return await error(lambda: w.col.fork(unique("fork")))


async def s_fork_count(w):
    return await error(lambda: w.col.fork_count())


async def s_get_indexing_status(w):
    return await error(lambda: w.col.get_indexing_status())


async def s_get_model(w):
    model = w.col.get_model()
    return [type(model).__name__, model.name == w.col.name]


async def s_attach_function(w):
    from chromadb.api.functions import RECORD_COUNTER_FUNCTION

    return await error(lambda: w.col.attach_function(RECORD_COUNTER_FUNCTION, "counter", unique("out")))


async def s_get_attached_function(w):
    return await error(lambda: w.col.get_attached_function("counter"))


async def s_detach_function(w):
    return await error(lambda: w.col.detach_function("counter"))


async def s_properties(w):
    """Every property of a collection handle, in one scenario (they read what the server returned)."""
    col = w.col
    return {
        "configuration": sorted(col.configuration),
        "configuration_json": col.configuration_json["hnsw"],
        "database": col.database, "tenant": col.tenant, "id": type(col.id).__name__,
        "metadata": col.metadata, "name": col.name == w.col.name,
        "schema": col.schema.serialize_to_json()["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"],
    }


PROPERTIES = ("configuration", "configuration_json", "database", "id", "metadata", "name", "schema", "tenant")
SCENARIOS = {name[2:]: fn for name, fn in globals().items() if name.startswith("s_")}


def members() -> list[tuple[str, str]]:
    """(class, scenario) for every public member: a collection's properties share one scenario; a
    client's plain attributes (``tenant``, ``database``) are what ``set_tenant`` checks."""
    out = []
    for kind, cls in CLASSES.items():
        for name in public_members(cls):
            if kind.endswith("Collection") and name in PROPERTIES:
                out.append((kind, "properties"))
            elif callable(getattr(cls, name)):
                out.append((kind, name))
    return sorted(set(out))


def run(server, kind: str, method: str) -> Any:
    async def go():
        world = await World(server, kind).start()
        return await SCENARIOS[method](world)

    return json.loads(json.dumps(asyncio.run(go())))


# ------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = {"retrieval": RunningServer(tmp_path_factory.mktemp("ours") / "db")}
    if PEER:
        started["chroma"] = RunningServer(tmp_path_factory.mktemp("peer") / "db", program=[PEER])
    yield started
    for server in started.values():
        server.stop()


# Where we answer differently from ``chroma run``, on purpose: key -> (ours, why).
DIFFERENCES = {
    "Collection.search": ("ok", "we serve the Search API over HTTP; chroma's single-node server says 'not implemented'"),
    "AsyncCollection.search": ("ok", "as Collection.search"),
    "Collection.get_indexing_status": (
        "error:ChromaError", "a clear 501 'not supported'; chroma's server fails with a 500 ('scout_logs is not implemented')"),
    "AsyncCollection.get_indexing_status": ("error:ChromaError", "as Collection.get_indexing_status"),
}


def test_every_public_method_has_a_scenario():
    missing = {f"{kind}.{name}" for kind, name in members() if name not in SCENARIOS}
    assert not missing, f"chromadb-client methods with no scenario here: {sorted(missing)}"


_recorded: dict[str, Any] = {}


@pytest.mark.parametrize("kind, method", members(), ids=lambda v: v)
def test_method_does_what_it_does_on_chroma(servers, kind, method):
    ours = run(servers["retrieval"], kind, method)
    key = f"{kind}.{method}"
    if PEER:
        theirs = run(servers["chroma"], kind, method)
        if os.environ.get("RECORD_OUTCOMES"):
            _recorded[key] = theirs
            RECORDED.write_text(json.dumps({**json.loads(RECORDED.read_text() or "{}"), **_recorded}
                                           if RECORDED.exists() else _recorded, indent=1, sort_keys=True) + "\n")
    else:
        theirs = json.loads(RECORDED.read_text())[key]
    if key in DIFFERENCES:
        assert ours == DIFFERENCES[key][0] != theirs
    else:
        assert ours == theirs
