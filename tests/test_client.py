"""Clients and collection management, for every client kind."""

from __future__ import annotations

import subprocess
import sys

import pytest

import retrieval
from retrieval import InvalidArgumentError, NotFoundError, UniqueConstraintError


def test_heartbeat_and_version(client):
    assert isinstance(client.heartbeat(), int) and client.heartbeat() > 10**18
    assert client.get_version() == retrieval.__version__


def test_reset_needs_allow_reset(client):
    client.create_collection("keep", embedding_function=None)
    with pytest.raises(retrieval.NotAllowedError, match="allow_reset=True"):
        client.reset()
    assert client.count_collections() == 1


def test_reset_when_allowed(tmp_path):
    client = retrieval.PersistentClient(str(tmp_path / "db"), settings=retrieval.Settings(allow_reset=True))
    col = client.create_collection("gone", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    assert client.reset() is True
    assert client.count_collections() == 0
    col = client.create_collection("gone", embedding_function=None)
    assert col.count() == 0
    client.close()


def test_client_with_settings(tmp_path):
    settings = retrieval.Settings(is_persistent=True, persist_directory=str(tmp_path / "s"), anonymized_telemetry=False)
    client = retrieval.Client(settings)
    client.create_collection("abc", embedding_function=None)
    client.close()
    reopened = retrieval.PersistentClient(str(tmp_path / "s"))
    assert [c.name for c in reopened.list_collections()] == ["abc"]
    reopened.close()


def test_ephemeral_clients_are_independent():
    a, b = retrieval.EphemeralClient(), retrieval.EphemeralClient()
    a.create_collection("only-in-a", embedding_function=None)
    assert b.count_collections() == 0


def test_create_get_list_delete(client):
    names = ["alpha", "beta", "gamma"]
    for name in names:
        client.create_collection(name, embedding_function=None, metadata={"owner": name})
    assert client.count_collections() == 3
    assert [c.name for c in client.list_collections()] == names  # oldest first
    assert [c.name for c in client.list_collections(limit=2, offset=1)] == ["beta", "gamma"]
    got = client.get_collection("beta")
    assert got.metadata == {"owner": "beta"} and got.name == "beta"
    client.delete_collection("beta")
    assert client.count_collections() == 2
    with pytest.raises(NotFoundError, match="'beta' does not exist"):
        client.get_collection("beta")
    with pytest.raises(NotFoundError):
        client.delete_collection("beta")


def test_create_existing_fails_get_or_create_returns_it(client):
    col = client.create_collection("dup", embedding_function=None)
    col.add(ids=["x"], embeddings=[[1.0]])
    with pytest.raises(UniqueConstraintError, match="already exists"):
        client.create_collection("dup", embedding_function=None)
    again = client.get_or_create_collection("dup", embedding_function=None)
    assert again.id == col.id and again.count() == 1
    assert client.create_collection("dup", embedding_function=None, get_or_create=True).id == col.id


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 513, "-abc", "abc-", "a..b", "has space", "ünïcode", "192.168.1.1", "", "abc/def"],
)
def test_invalid_collection_names(client, name):
    with pytest.raises(InvalidArgumentError, match="collection name"):
        client.create_collection(name, embedding_function=None)
    assert client.count_collections() == 0


@pytest.mark.parametrize("name", ["abc", "a.b-c_d", "A1" * 256, "x" * 512, "123"])
def test_valid_collection_names(client, name):
    assert client.create_collection(name, embedding_function=None).name == name


def test_modify_name_and_metadata(client):
    col = client.create_collection("before", embedding_function=None, metadata={"a": 1})
    col.add(ids=["x"], embeddings=[[1.0, 2.0]])
    col.modify(name="after", metadata={"b": "two"})
    assert col.name == "after" and col.metadata == {"b": "two"}
    reread = client.get_collection("after")
    assert reread.metadata == {"b": "two"} and reread.count() == 1
    with pytest.raises(NotFoundError):
        client.get_collection("before")
    client.create_collection("taken", embedding_function=None)
    with pytest.raises(UniqueConstraintError):
        col.modify(name="taken")
    with pytest.raises(InvalidArgumentError):
        col.modify(name="x")


def test_collection_metadata_validation(client):
    with pytest.raises(InvalidArgumentError, match="nested"):
        client.create_collection("bad", embedding_function=None, metadata={"a": {"b": 1}})
    assert client.count_collections() == 0


def test_import_is_light():
    code = (
        "import time, sys; t = time.perf_counter(); import retrieval; "
        "print(time.perf_counter() - t); "
        "print(any(m in sys.modules for m in ('torch', 'open_clip', 'fastapi', 'sentence_transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False", "import retrieval must not import torch, open_clip or fastapi"


def test_public_names():
    for name in ["Client", "EphemeralClient", "PersistentClient", "Settings", "Collection", "GetResult", "QueryResult"]:
        assert hasattr(retrieval, name)
        assert name in retrieval.__all__


def test_stale_handle_to_deleted_collection_raises(client):
    col = client.create_collection("doomed", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    client.delete_collection("doomed")
    for call in (
        lambda: col.add(ids=["b"], embeddings=[[1.0, 2.0]]),
        lambda: col.get(),
        lambda: col.count(),
        lambda: col.query(query_embeddings=[[1.0, 2.0]]),
        lambda: col.delete(ids=["a"]),
    ):
        with pytest.raises(NotFoundError, match="was deleted"):
            call()
    again = client.create_collection("doomed", embedding_function=None)
    assert again.count() == 0


def test_rolled_back_first_write_fixes_no_dimension(client, monkeypatch, over_http, in_this_process):
    from retrieval.store import engine

    col = client.create_collection("first", embedding_function=None)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(engine, "log_changes", fail)
    # Over HTTP the server hides its internals: a 500, InternalError (a RuntimeError), no detail.
    with pytest.raises(RuntimeError, match="internal server error" if over_http else "disk full"):
        col.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0]])
    monkeypatch.undo()
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])  # a different dimension is fine: nothing was stored
    assert col.count() == 1


def test_chromadb_import_paths():
    code = (
        "import sys; from retrieval.config import Settings; "
        "from retrieval.utils import embedding_functions as ef; from retrieval.utils.data_loaders import ImageLoader; "
        "assert 'torch' not in sys.modules; "
        "assert ef.OpenCLIPEmbeddingFunction.__name__ == 'OpenCLIPEmbeddingFunction'; "
        "assert ef.DefaultEmbeddingFunction().name() == 'default'; print(ImageLoader().name())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "image"


def test_missing_collection_is_also_a_value_error(client):
    with pytest.raises(ValueError):
        client.get_collection("missing")
