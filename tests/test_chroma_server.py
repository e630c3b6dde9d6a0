"""retrieval's HTTP clients on Chroma's server: the data loader survives it, and what it refuses says why.

The loader is stored in the collection metadata and read back from either server. The encoding
tests always run. The server test runs against ``retrieval run``, and against
chromadb 1.5.9's ``chroma run`` too when ``CHROMA_PEER`` names its executable (as in
tests/test_chromadb_client.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

import retrieval
from embedders import OpenCLIPEmbeddingFunction
from embedders.assets import gallery_dir
from loaders import ImageLoader
from retrieval import K, Knn, Search
from retrieval.config import CollectionConfig, ComponentSpec
from retrieval.errors import NotSupportedError
from retrieval.http import wire
from retrieval.http.calls import Calls
from retrieval.loader_metadata import LOADER_KEY, split_loader, with_loader
from tests.http_server import RunningServer

PEER = os.environ.get("CHROMA_PEER")
LOADER = ComponentSpec("image", {"max_pixels": 123456789})


def test_the_loader_round_trips_through_metadata_and_leaves_the_users_keys_alone() -> None:
    stored = with_loader({"topic": "shapes", "n": 3}, LOADER)
    assert json.loads(stored[LOADER_KEY]) == {"name": "image", "type": "known", "config": {"max_pixels": 123456789}}
    assert split_loader(stored) == ({"topic": "shapes", "n": 3}, LOADER)
    assert split_loader(with_loader(None, LOADER)) == (None, LOADER)  # only the loader: no user metadata
    assert with_loader({"a": 1}, None) == {"a": 1} and split_loader({"a": 1}) == ({"a": 1}, None)
    # A value under the key that is no loader spec is the user's own metadata.
    assert split_loader({LOADER_KEY: "not json"}) == ({LOADER_KEY: "not json"}, None)


def test_the_client_writes_it_and_reads_it_from_a_server_that_dropped_the_configuration_key() -> None:
    config = CollectionConfig(embedding_function=ComponentSpec("open_clip", {"model_name": "tiny-shapes"}),
                              data_loader=LOADER)
    body = Calls().create_collection("default_tenant", "default_database", "shapes", config, {"topic": "x"},
                                     False).body
    assert split_loader(body["metadata"]) == ({"topic": "x"}, LOADER)
    # What chroma run answers: no "data_loader" in the configuration, the metadata as sent.
    answer = {"id": "0b8d4a45-7d1e-4e8f-9a57-1c0de0f1a001", "name": "shapes", "tenant": "default_tenant",
              "database": "default_database", "dimension": None, "metadata": body["metadata"],
              "configuration_json": {k: v for k, v in body["configuration"].items() if k != "data_loader"}}
    record = wire.collection_from_wire(answer)
    assert record.metadata == {"topic": "x"}
    assert record.config.data_loader == LOADER


def test_chromas_not_implemented_answer_is_an_error_naming_the_reason() -> None:
    # chroma run's exact answer to POST .../search (chromadb 1.5.9, single node).
    body = {"error": "ChromaError",
            "message": "Error executing plan: Not implemented: Search operation is not implemented for local executor"}
    error = wire.error_from_wire(501, body)
    assert isinstance(error, NotSupportedError) and isinstance(error, NotImplementedError)
    assert "not implemented for local executor" in str(error)
    assert "does not serve the Search API: use query() against it" in str(error)


def test_one_501_class_for_both_servers_and_only_search_names_the_search_api() -> None:
    # retrieval run's refusal of a distributed-Chroma feature comes back as the same class.
    status, body = wire.error_to_wire(NotSupportedError("collection forks are a distributed-Chroma feature"))
    error = wire.error_from_wire(status, body)
    assert status == 501 and type(error) is NotSupportedError and "Search API" not in str(error)
    # chroma run's 501 for a route other than search says only what it said.
    error = wire.error_from_wire(501, {"error": "ChromaError", "message": "Fork is not implemented"})
    assert type(error) is NotSupportedError and str(error) == "Fork is not implemented"


@pytest.fixture(params=["retrieval"] + (["chroma"] if PEER else []))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> RunningServer:
    program = [PEER] if request.param == "chroma" else None
    running = RunningServer(tmp_path / request.param, program=program)
    running.kind = request.param
    yield running
    running.stop()


def test_a_multimodal_collection_gets_its_loader_back_from_the_server(server: RunningServer) -> None:
    ef = OpenCLIPEmbeddingFunction("tiny-shapes", device="cpu")
    client = retrieval.HttpClient(host="127.0.0.1", port=server.port)
    photos = client.create_collection("shapes", embedding_function=ef, data_loader=ImageLoader(max_pixels=123456789),
                                      metadata={"topic": "shapes"})
    uris = sorted(str(p) for p in gallery_dir().glob("*.png"))
    photos.add(ids=[Path(u).stem for u in uris], uris=uris)
    assert photos.query(query_texts=["a red circle"], n_results=1)["ids"] == [["red_circle"]]

    # A new client, as in a new process: the embedding function and the loader come back.
    again = retrieval.HttpClient(host="127.0.0.1", port=server.port).get_collection("shapes")
    assert again.metadata == {"topic": "shapes"}  # the reserved key never shows
    assert again.data_loader is not None and again.data_loader.get_config() == {"max_pixels": 123456789}
    got = again.get(ids=["red_circle"], include=["data", "uris"])
    assert got["data"][0].shape[-1] == 3 and got["uris"] == [str(gallery_dir() / "red_circle.png")]
    assert again.query(query_texts=["a red circle"], n_results=1)["ids"] == [["red_circle"]]

    search = Search().rank(Knn(query="a red circle")).limit(1).select(K.ID)
    if server.kind == "chroma":
        with pytest.raises(NotSupportedError, match="does not serve the Search API"):
            again.search(search)
    else:
        assert again.search(search)["ids"] == [["red_circle"]]

    # New metadata replaces the old on both servers; the loader is kept.
    again.modify(metadata={"topic": "renamed"})
    third = retrieval.HttpClient(host="127.0.0.1", port=server.port).get_collection("shapes")
    assert third.metadata == {"topic": "renamed"}
    assert third.data_loader is not None and third.data_loader.get_config() == {"max_pixels": 123456789}
    if server.kind == "retrieval":
        # retrieval run keeps the loader in the configuration and the metadata clean.
        server.stop()
        with retrieval.PersistentClient(path=str(server.path)) as local:
            stored = local.get_collection("shapes")
            assert stored.metadata == {"topic": "renamed"}
            assert stored.configuration["data_loader"]["config"] == {"max_pixels": 123456789}


def test_records_filters_tenants_and_the_async_client(server: RunningServer) -> None:
    import asyncio

    client = retrieval.HttpClient(host="127.0.0.1", port=server.port)
    plain = client.create_collection("plain", embedding_function=None)
    plain.add(ids=["a", "b", "c"], embeddings=[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
              documents=["hello world", "goodbye", "hello again"], metadatas=[{"n": 1}, {"n": 2}, {"n": 3}])
    got = plain.query(query_embeddings=[[1, 0, 0]], n_results=3, where={"n": {"$gte": 2}},
                      where_document={"$contains": "hello"})
    assert got["ids"] == [["c"]]
    assert sorted(plain.get(where={"$or": [{"n": 1}, {"n": 3}]})["ids"]) == ["a", "c"]
    plain.delete(where={"n": 2})
    assert plain.count() == 2

    admin = retrieval.AdminClient(retrieval.Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI",
                                                     chroma_server_host="127.0.0.1",
                                                     chroma_server_http_port=server.port))
    admin.create_tenant("acme")
    admin.create_database("photos", tenant="acme")
    scoped = retrieval.HttpClient(host="127.0.0.1", port=server.port, tenant="acme", database="photos")
    scoped.create_collection("inside", embedding_function=None, data_loader=ImageLoader())
    assert [c.name for c in scoped.list_collections()] == ["inside"]
    assert "inside" not in [c.name for c in client.list_collections()]

    async def reopen() -> object:
        aclient = await retrieval.AsyncHttpClient(host="127.0.0.1", port=server.port, tenant="acme",
                                                  database="photos")
        collection = await aclient.get_collection("inside")
        return collection.data_loader

    assert asyncio.run(reopen()) is not None  # the loader comes back through the async client too
