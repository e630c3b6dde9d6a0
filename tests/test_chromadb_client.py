"""chromadb's own clients (``chromadb-client==1.5.9``: HttpClient, AsyncHttpClient, AdminClient)
against a real ``retrieval run`` on 127.0.0.1, unchanged: the wire speaks Chroma's v2 API."""

from __future__ import annotations

import asyncio
import os

import httpx
import numpy as np
import pytest

from tests.http_server import RunningServer

chromadb = pytest.importorskip("chromadb")
errors = pytest.importorskip("chromadb.errors")


# Set CHROMA_PEER to chromadb 1.5.9's ``chroma`` executable (its own venv, see bench/README.md) to
# run every test against chromadb's server as well: the same assertions must hold on both.
PEER = os.environ.get("CHROMA_PEER")


@pytest.fixture(scope="module", params=["retrieval"] + (["chroma"] if PEER else []))
def server(request, tmp_path_factory):
    program = [PEER] if request.param == "chroma" else None
    server = RunningServer(tmp_path_factory.mktemp(f"{request.param}-wire") / "db", program=program)
    yield server
    code = server.stop()
    if request.param == "retrieval":
        assert code == 0


def server_kind(client) -> str:
    return "retrieval" if client.get_version() == retrieval_version() else "chroma"


def retrieval_version() -> str:
    import retrieval

    return retrieval.__version__


def _settings():
    return chromadb.Settings(anonymized_telemetry=False)


@pytest.fixture
def client(server):
    return chromadb.HttpClient(host="127.0.0.1", port=server.port, settings=_settings())


@pytest.fixture
def col(client, request):
    name = "c-" + request.node.name.replace("[", "-").replace("]", "")[:40]
    col = client.create_collection(name, embedding_function=None)
    col.add(
        ids=["a", "b", "c", "d"],
        embeddings=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]],
        documents=["apple pie", "banana bread", "cherry tart ✓", None],
        metadatas=[{"tag": "t1", "n": 1}, {"tag": "t3", "n": 2}, {"tag": "t3", "n": 3}, None],
    )
    yield col
    client.delete_collection(name)


def test_system_endpoints(client):
    assert client.heartbeat() > 0
    assert isinstance(client.get_version(), str)
    assert client.get_max_batch_size() > 1000
    with pytest.raises(errors.ChromaError):  # the server was not started with allow_reset
        client.reset()


def test_collections_and_name_rules(client):
    col = client.create_collection("wire-cols", metadata={"owner": "me"}, embedding_function=None)
    assert col.metadata == {"owner": "me"}
    assert client.get_collection("wire-cols", embedding_function=None).id == col.id
    assert client.get_or_create_collection("wire-cols", embedding_function=None).id == col.id
    assert "wire-cols" in [c.name for c in client.list_collections()]
    assert client.count_collections() >= 1
    with pytest.raises(errors.ChromaError):  # chromadb's server answers a duplicate with 409 ChromaError
        client.create_collection("wire-cols", embedding_function=None)
    for bad in ("ab", "-starts-with-dash", "has space", "a..b", "127.0.0.1"):
        with pytest.raises(errors.InvalidArgumentError):
            client.create_collection(bad, embedding_function=None)
    with pytest.raises(errors.NotFoundError):
        client.get_collection("never-made", embedding_function=None)
    col.modify(name="wire-cols-2", metadata={"owner": "you"})
    assert client.get_collection("wire-cols-2", embedding_function=None).metadata == {"owner": "you"}
    client.create_collection("wire-cols-3", embedding_function=None)
    with pytest.raises(errors.ChromaError) as raised:  # renaming onto a taken name
        col.modify(name="wire-cols-3")
    # chromadb's server fails with a 500 (InternalError); ours answers 409, as for create.
    assert isinstance(raised.value, errors.InternalError) == (server_kind(client) == "chroma")
    client.delete_collection("wire-cols-2")
    client.delete_collection("wire-cols-3")
    with pytest.raises(errors.NotFoundError):
        client.delete_collection("wire-cols-2")


def test_configuration_read_back(client, server):
    col = client.create_collection("wire-cfg", configuration={"hnsw": {"space": "cosine", "ef_search": 42}},
                                   embedding_function=None)
    assert col.configuration_json["hnsw"] == {
        "space": "cosine", "ef_construction": 100, "ef_search": 42, "max_neighbors": 16, "resize_factor": 1.2,
        "sync_threshold": 1000,
    }
    legacy = client.create_collection("wire-legacy", metadata={"hnsw:space": "ip"}, embedding_function=None)
    assert legacy.configuration_json["hnsw"]["space"] == "ip"
    # A stored embedding-function config (as chromadb's client sends it) comes back as stored; the
    # server never builds it.
    ef = {"type": "known", "name": "open_clip", "config": {"model_name": "ViT-B-32", "checkpoint": "laion2b_s34b_b79k"}}
    url = f"{server.url}/api/v2/tenants/default_tenant/databases/default_database/collections"
    httpx.post(url, json={"name": "wire-ef", "configuration": {"embedding_function": ef}}).raise_for_status()
    fetched = client.get_collection("wire-ef", embedding_function=None)
    assert fetched.configuration_json["embedding_function"] == ef
    col.modify(configuration={"hnsw": {"ef_search": 77}})
    assert client.get_collection("wire-cfg", embedding_function=None).configuration_json["hnsw"]["ef_search"] == 77
    for name in ("wire-cfg", "wire-legacy", "wire-ef"):
        client.delete_collection(name)


def test_records_include_limit_offset(col):
    got = col.get(ids=["b", "a"], include=["documents", "metadatas", "embeddings"])
    # chromadb's server answers in insertion order, ours in the order of ids: compare as records.
    rows = sorted(zip(got["ids"], got["documents"], np.asarray(got["embeddings"]).tolist()))
    assert rows == [("a", "apple pie", [1, 0, 0]), ("b", "banana bread", [0, 1, 0])]
    assert col.get(limit=2, offset=1)["ids"] == ["b", "c"]
    assert col.get(include=[])["documents"] is None
    col.update(ids=["a"], metadatas=[{"tag": "t9"}], documents=["apple crumble"], embeddings=[[1, 0, 0.1]])
    col.upsert(ids=["e"], embeddings=[[0.5, 0.5, 0.5]], documents=["elder"], metadatas=[{"tag": "t3"}])
    got = col.get(ids=["a"])
    assert got["metadatas"] == [{"tag": "t9", "n": 1}] and got["documents"] == ["apple crumble"]
    assert col.count() == 5
    assert col.delete(where={"tag": "t3"})["deleted"] == 3
    assert sorted(col.get()["ids"]) == ["a", "d"]


def test_query_where_and_where_document(col):
    res = col.query(query_embeddings=[[1, 0.1, 0]], n_results=2, include=["distances", "documents", "metadatas"])
    assert res["ids"] == [["a", "d"]] and res["distances"][0][0] == pytest.approx(0.01, abs=1e-5)
    assert col.query(query_embeddings=[[1, 0, 0]], n_results=5, where={"tag": "t3"})["ids"] == [["b", "c"]]
    res = col.query(query_embeddings=[[0, 0, 1]], n_results=5, where={"$and": [{"n": {"$gte": 2}}, {"tag": {"$in": ["t3"]}}]},
                    where_document={"$contains": "✓"})
    assert res["ids"] == [["c"]] and res["documents"] == [["cherry tart ✓"]]
    assert col.get(where_document={"$not_contains": "a"})["ids"] == ["d"]


def test_errors_raise_chromadb_classes(col, client):
    with pytest.raises(errors.InvalidArgumentError):  # wrong dimension
        col.add(ids=["x"], embeddings=[[1.0, 2.0]])
    with pytest.raises(errors.InvalidArgumentError):  # wrong dimension at query time
        col.query(query_embeddings=[[1.0, 2.0]])
    with pytest.raises(errors.NotFoundError):
        client.get_collection("no-such-collection", embedding_function=None)
    assert col.count() == 4  # nothing was written


def test_unicode_round_trip(col):
    text = "日本語 ✓ émoji 🚀 \u0000 null"
    col.add(ids=["ü-id"], embeddings=[[0.3, 0.3, 0.3]], documents=[text], metadatas=[{"ключ": "значение"}])
    got = col.get(ids=["ü-id"])
    assert got["documents"] == [text] and got["metadatas"] == [{"ключ": "значение"}]


def test_plain_list_embeddings_work_too(col, server):
    url = (f"{server.url}/api/v2/tenants/default_tenant/databases/default_database/collections/{col.id}/add")
    httpx.post(url, json={"ids": ["plain"], "embeddings": [[0.2, 0.2, 0.2]]}).raise_for_status()
    np.testing.assert_allclose(col.get(ids=["plain"], include=["embeddings"])["embeddings"], [[0.2, 0.2, 0.2]])


def test_tenants_and_databases_with_admin_client(server):
    admin = chromadb.AdminClient(chromadb.Settings(
        chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
        chroma_server_http_port=server.port, anonymized_telemetry=False,
    ))
    admin.create_tenant("wire-tenant")
    admin.create_database("wire-db", tenant="wire-tenant")
    assert admin.get_tenant("wire-tenant")["name"] == "wire-tenant"
    assert admin.get_database("wire-db", tenant="wire-tenant")["name"] == "wire-db"
    assert [d["name"] for d in admin.list_databases(tenant="wire-tenant")] == ["wire-db"]
    scoped = chromadb.HttpClient(host="127.0.0.1", port=server.port, tenant="wire-tenant", database="wire-db",
                                 settings=_settings())
    scoped.create_collection("scoped", embedding_function=None)
    assert [c.name for c in scoped.list_collections()] == ["scoped"]
    with pytest.raises(Exception):  # chromadb's client refuses a database that does not exist
        chromadb.HttpClient(host="127.0.0.1", port=server.port, tenant="wire-tenant", database="nope",
                            settings=_settings())
    admin.delete_database("wire-db", tenant="wire-tenant")
    with pytest.raises(errors.NotFoundError):
        admin.get_database("wire-db", tenant="wire-tenant")


def test_search_api(col, client):
    from chromadb import K, Knn, Search

    if server_kind(client) == "chroma":
        pytest.skip("chromadb's single-node server does not implement Search (a ChromaError: 'not implemented')")

    result = col.search(
        Search().where(K("tag") == "t3").rank(Knn(query=[0, 0, 1])).limit(2).select(K.DOCUMENT, K.SCORE, "tag")
    )
    assert result["ids"] == [["c", "b"]]
    assert result["documents"] == [["cherry tart ✓", "banana bread"]]
    assert result["scores"][0][0] == pytest.approx(0.0, abs=1e-6)
    assert result["metadatas"] == [[{"tag": "t3"}, {"tag": "t3"}]]


def test_async_http_client(server):
    async def main():
        client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=server.port, settings=_settings())
        col = await client.create_collection("wire-async", embedding_function=None)
        await col.add(ids=["1", "2"], embeddings=[[1, 0], [0, 1]], documents=["one", "two"])
        assert await col.count() == 2
        res = await col.query(query_embeddings=[[0.9, 0.1]], n_results=1)
        assert res["ids"] == [["1"]]
        await client.delete_collection("wire-async")

    asyncio.run(main())


# ---------------------------------------------------------------------- gaps found in issue 18


def test_async_client_heartbeat_asks_the_api_root(server):
    # chromadb 1.5.9's AsyncHttpClient sends GET /api/v2 (its sync client GET /api/v2/heartbeat).
    async def main():
        client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=server.port, settings=_settings())
        return await client.heartbeat()

    assert asyncio.run(main()) > 0
    answer = httpx.get(f"{server.url}/api/v2")
    assert answer.status_code == 200 and answer.json()["nanosecond heartbeat"] > 0


def test_collection_id_that_is_not_a_uuid_is_invalid_argument(server, col):
    base = f"{server.url}/api/v2/tenants/default_tenant/databases/default_database/collections"
    for method, path, body in (("GET", "/not-a-uuid/count", None), ("POST", f"/{col.name}/get", {}),
                               ("GET", "/by-id/12345", None), ("PUT", "/zzz", {"new_name": "x-y-z"})):
        answer = httpx.request(method, base + path, json=body)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"] == "InvalidArgumentError"
        assert "UUID" in answer.json()["message"]
    # A UUID that names nothing is still a 404.
    assert httpx.get(f"{base}/0b6a0c44-0d0a-4f5e-9d4e-7d1c9c3f2a11/count").status_code == 404


@pytest.mark.parametrize("raw", [b"null", b"[1, 2]", b'"ids"', b"7"])
def test_record_route_with_a_non_object_body_is_400(server, col, raw):
    base = f"{server.url}/api/v2/tenants/default_tenant/databases/default_database/collections/{col.id}"
    ours = server_kind_of(server) == "retrieval"
    for verb in ("get", "query", "delete", "add", "upsert", "update", "search"):
        answer = httpx.post(f"{base}/{verb}", content=raw, headers={"Content-Type": "application/json"})
        if ours:
            assert answer.status_code == 400, (verb, raw, answer.text)
            assert answer.json()["error"] == "InvalidArgumentError"
            assert "must be a JSON object" in answer.json()["message"]
        else:  # chroma's server: 422 ChromaError ("Failed to deserialize the JSON body")
            assert 400 <= answer.status_code < 500, (verb, raw, answer.text)
    assert col.count() == 4


def server_kind_of(server) -> str:
    return "retrieval" if httpx.get(f"{server.url}/api/v2/version").json() == retrieval_version() else "chroma"


def test_delete_rules_are_chromadb_client_rules_on_the_server_too(server, col):
    # chromadb's client refuses these before sending; a raw request is refused by the server the
    # same way (400 InvalidArgumentError on chroma's server too), and ours by the handle as well.
    url = f"{server.url}/api/v2/tenants/default_tenant/databases/default_database/collections/{col.id}/delete"
    with pytest.raises(ValueError):
        col.delete(ids=[])
    with pytest.raises(ValueError, match="limit"):
        col.delete(ids=["a"], limit=1)
    for body in ({"ids": []}, {"ids": ["a"], "limit": 1}, {"limit": 1}):
        answer = httpx.post(url, json=body)
        assert answer.status_code == 400 and answer.json()["error"] == "InvalidArgumentError", (body, answer.text)
    answer = httpx.post(url, json={"ids": ["a"], "where": {"tag": "t1"}, "limit": -1})
    # Ours: 400 InvalidArgumentError; chroma's: 422 ChromaError ("expected u32").
    assert answer.status_code == (400 if server_kind_of(server) == "retrieval" else 422), answer.text
    assert col.count() == 4
    assert col.delete(ids=["a"], where={"tag": "t1"}, limit=1)["deleted"] == 1
