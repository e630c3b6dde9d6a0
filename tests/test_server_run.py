"""``retrieval run`` as a real subprocess on 127.0.0.1, with retrieval's own HTTP clients:
multimodal collections embedded client-side, tenants, concurrency, reset rules, clean SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import retrieval
from retrieval import NotAllowedError, NotFoundError, Settings
from tests.http_server import RunningServer, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = RunningServer(tmp_path_factory.mktemp("served") / "db")
    yield server
    assert server.stop() == 0


def _ef():
    import embedders

    return embedders.build_embedding_function("hash", {"dim": 32, "modalities": ["text", "image"]})


def _image(color) -> np.ndarray:
    return np.full((24, 24, 3), color, dtype=np.uint8)


def test_import_retrieval_loads_no_server_or_http_library():
    code = "import sys, retrieval; print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'httpx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_multimodal_collection_embedded_and_loaded_client_side(server, tmp_path):
    from loaders import ImageLoader

    files = []
    for name, color in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        path = tmp_path / f"{name}.png"
        Image.fromarray(_image(color)).save(path)
        files.append(str(path))
    client = retrieval.HttpClient(host="127.0.0.1", port=server.port)
    col = client.create_collection("media", embedding_function=_ef(), data_loader=ImageLoader())
    col.add(ids=["t1", "t2"], documents=["a red circle", "blue star ✓"], metadatas=[{"kind": "text"}] * 2)
    col.add(ids=["i1"], images=[_image((200, 30, 30))], metadatas=[{"kind": "image"}])
    col.add(ids=["u1", "u2"], uris=files, metadatas=[{"kind": "uri"}] * 2)
    assert col.count() == 5

    # A fresh client rebuilds the stored embedding function and loader from get_collection(name).
    other = retrieval.HttpClient(host="127.0.0.1", port=server.port)
    again = other.get_collection("media")
    assert again.embedding_function is not None and again.data_loader is not None
    assert again.query(query_texts=["a red circle"], n_results=1)["ids"] == [["t1"]]
    hit = again.query(query_uris=[files[1]], n_results=1, where={"kind": "uri"}, include=["data", "uris"])
    assert hit["ids"] == [["u2"]] and hit["uris"] == [[files[1]]]
    assert np.asarray(hit["data"][0][0]).shape[:2] == (24, 24)  # loaded here, by the client's loader
    by_image = again.query(query_images=[_image((200, 30, 30))], n_results=1, where={"kind": "image"})
    assert by_image["ids"] == [["i1"]]
    got = again.get(ids=["u1"], include=["data"])
    assert got["uris"] == [files[0]] and got["data"][0] is not None

    from retrieval import K, Knn, Search

    result = again.search(Search().where(K("kind") == "text").rank(Knn(query="blue star")).limit(1).select(K.DOCUMENT))
    assert result["ids"] == [["t2"]] and result["documents"] == [["blue star ✓"]]
    client.close()
    other.close()


def test_tenants_databases_and_admin_client_from_chromadb_settings(server):
    admin = retrieval.AdminClient(Settings(
        chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
        chroma_server_http_port=server.port,
    ))
    admin.create_tenant("acme")
    admin.create_database("prod", tenant="acme")
    assert [d["name"] for d in admin.list_databases(tenant="acme")] == ["prod"]
    scoped = retrieval.HttpClient(host="127.0.0.1", port=server.port, tenant="acme", database="prod")
    scoped.create_collection("only-here", embedding_function=None)
    default = retrieval.HttpClient(host="127.0.0.1", port=server.port)
    assert "only-here" not in [c.name for c in default.list_collections()]
    with pytest.raises(NotFoundError):
        retrieval.HttpClient(host="127.0.0.1", port=server.port, tenant="acme", database="nope")
    admin.delete_database("prod", tenant="acme")
    with pytest.raises(NotFoundError):
        scoped.get_collection("only-here")


def test_threads_share_the_server(server):
    client = retrieval.HttpClient(host="127.0.0.1", port=server.port)
    col = client.create_collection("shared", embedding_function=None)
    errors = []

    def work(worker: int) -> None:
        try:
            mine = retrieval.HttpClient(host="127.0.0.1", port=server.port).get_collection("shared")
            rng = np.random.default_rng(worker)
            for batch in range(5):
                ids = [f"w{worker}-{batch}-{i}" for i in range(20)]
                mine.add(ids=ids, embeddings=rng.normal(size=(20, 8)))
                assert len(mine.query(query_embeddings=rng.normal(size=(1, 8)), n_results=5)["ids"][0]) == 5
        except Exception as e:  # collected: an assert in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and col.count() == 6 * 5 * 20


def test_reset_is_refused_unless_the_server_allows_it(server, tmp_path):
    with pytest.raises(NotAllowedError, match="ALLOW_RESET"):
        retrieval.HttpClient(host="127.0.0.1", port=server.port).reset()
    allowed = RunningServer(tmp_path / "db", env={"ALLOW_RESET": "TRUE"})
    try:
        client = retrieval.HttpClient(host="127.0.0.1", port=allowed.port)
        client.create_collection("gone", embedding_function=None)
        assert client.reset() is True and client.count_collections() == 0
    finally:
        assert allowed.stop() == 0


def test_sigterm_closes_cleanly_and_the_path_reopens(tmp_path):
    config = tmp_path / "server.yaml"
    config.write_text("allow_reset: false\nlog_level: warning\n")
    path = tmp_path / "db"
    server = RunningServer(path, config=config)
    try:
        col = retrieval.HttpClient(host="127.0.0.1", port=server.port).create_collection("kept", embedding_function=None)
        col.add(ids=[str(i) for i in range(50)], embeddings=np.random.default_rng(0).normal(size=(50, 4)))
        with pytest.raises(retrieval.PersistPathLockedError):  # the server owns its path
            retrieval.PersistentClient(path=str(path))
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log.read_text()
    client = retrieval.PersistentClient(path=str(path))
    assert client.get_collection("kept").count() == 50
    client.close()


def test_unreachable_server_fails_fast_with_a_clear_error():
    port = free_port()  # nothing listens here
    with pytest.raises(retrieval.ServerUnavailableError, match="retrieval run"):
        retrieval.HttpClient(host="127.0.0.1", port=port, retries=1, timeout=2)


def test_bad_server_config_names_the_key(tmp_path):
    from retrieval.server.config import ServerConfig

    bad = tmp_path / "server.yaml"
    bad.write_text("alow_reset: true\n")
    with pytest.raises(retrieval.InvalidArgumentError, match="did you mean 'allow_reset'"):
        ServerConfig.from_file(bad)


def test_async_http_client_against_the_server(server):
    import asyncio

    async def main():
        client = await retrieval.AsyncHttpClient(host="127.0.0.1", port=server.port)
        col = await client.get_or_create_collection("async-docs", embedding_function=_ef())
        await col.upsert(ids=["a", "b"], documents=["a red circle", "a blue star"])
        assert (await col.query(query_texts=["blue star"], n_results=1))["ids"] == [["b"]]
        assert [c.name for c in await client.list_collections()].count("async-docs") == 1
        assert (await col.delete(ids=["a"])) == {"deleted": 1}
        await client.delete_collection("async-docs")
        await client.close()

    asyncio.run(main())
