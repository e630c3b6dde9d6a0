"""Persistence: reopen in a fresh process, path ownership, checkpoints and recovery."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import retrieval
import retrieval.store.shared_engines
from retrieval import PersistPathLockedError
from retrieval.store import graph_upkeep

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def fill(col, n=300, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    col.add(
        ids=[f"id{i}" for i in range(n)],
        embeddings=X,
        metadatas=[{"i": i, "tag": f"t{i % 5}"} for i in range(n)],
        documents=[f"document number {i}" for i in range(n)],
        uris=[f"file:///img/{i}.png" for i in range(n)],
    )
    return X


def test_reopen_in_fresh_process_gives_back_everything(persist_dir):
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("photos", embedding_function=None, metadata={"owner": "me", "hnsw:space": "cosine"})
    X = fill(col)
    col.delete(ids=["id3", "id4"])
    col.update(ids=["id5"], metadatas=[{"i": None, "new": True}], documents=["changed"], embeddings=X[6:7])
    expected = col.get(include=["embeddings", "metadatas", "documents", "uris"])
    expected_query = col.query(query_embeddings=X[:3], n_results=7, where={"tag": "t1"})
    client.close()
    out = run_python(
        f"""
        import json, retrieval
        client = retrieval.PersistentClient({persist_dir!r})
        col = client.get_collection("photos")
        got = col.get(include=["embeddings", "metadatas", "documents", "uris"])
        got["embeddings"] = got["embeddings"].tolist()
        import numpy as np
        q = col.query(query_embeddings={X[:3].tolist()!r}, n_results=7, where={{"tag": "t1"}})
        print(json.dumps({{"get": got, "query": q["ids"], "metadata": col.metadata, "space": col.configuration["hnsw"]["space"]}}))
        """
    )
    got = json.loads(out)
    assert got["get"]["ids"] == expected["ids"]
    np.testing.assert_array_equal(np.asarray(got["get"]["embeddings"], dtype=np.float32), expected["embeddings"])
    assert got["get"]["metadatas"] == expected["metadatas"]
    assert got["get"]["documents"] == expected["documents"] and got["get"]["uris"] == expected["uris"]
    assert got["query"] == expected_query["ids"]
    assert got["metadata"] == {"owner": "me"} and got["space"] == "cosine"


def test_second_process_gets_clear_error_and_data_is_untouched(persist_dir):
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("owned", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    out = run_python(
        f"""
        import retrieval
        try:
            retrieval.PersistentClient({persist_dir!r})
        except retrieval.PersistPathLockedError as e:
            print("LOCKED", e)
        """
    )
    assert out.startswith("LOCKED") and persist_dir in out and "HttpClient" in out
    assert col.count() == 1
    client.close()
    # closing releases the lock: another process may now open the path
    out = run_python(f"import retrieval; print(retrieval.PersistentClient({persist_dir!r}).get_collection('owned').count())")
    assert out.strip() == "1"


def test_clients_in_one_process_share_the_path(persist_dir):
    a = retrieval.PersistentClient(persist_dir)
    b = retrieval.PersistentClient(persist_dir)
    a.create_collection("shared", embedding_function=None).add(ids=["x"], embeddings=[[1.0]])
    assert b.get_collection("shared").count() == 1
    a.close()
    assert b.get_collection("shared").count() == 1  # still open through b
    b.close()


def test_checkpoint_and_oplog_replay(persist_dir, monkeypatch):
    """Writes after the last checkpoint are replayed from the oplog on open."""
    monkeypatch.setattr(graph_upkeep, "CHECKPOINT_BACKLOG_FRACTION", 1e9)  # never checkpoint on writes
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("replay", embedding_function=None, configuration={"hnsw": {"sync_threshold": 10}})
    X = fill(col, n=200)
    client._backend.engine.flush()  # checkpoint now: the later writes only exist in SQLite + oplog
    col.delete(ids=[f"id{i}" for i in range(0, 200, 2)])
    col.upsert(ids=["id1", "new"], embeddings=[X[0] * 0, X[2]])
    # Simulate a crash: drop the engine without its closing checkpoint.
    engine = client._backend.engine
    engine.stop_background()  # a dead process does no background work either
    engine._states.clear()
    engine.db.close()
    retrieval.store.shared_engines.forget_all()
    client2 = retrieval.PersistentClient(persist_dir)
    col2 = client2.get_collection("replay")
    assert col2.count() == 101
    state = client2._backend.engine.state(col2._record)
    state.upkeep.wait_until_indexed()  # replayed deletions are marked in the graph by the builder
    with state.lock:
        index = state.index()
    assert index.live_count == 101
    res = col2.query(query_embeddings=[X[2]], n_results=1)
    assert res["ids"][0][0] in {"new"}
    client2.close()


@pytest.mark.parametrize("damage", ["truncate", "empty", "bitflip", "missing_index", "missing_manifest", "bad_manifest", "wrong_dim"])
def test_damaged_index_is_rebuilt(persist_dir, damage, caplog, monkeypatch):
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("damaged", embedding_function=None)
    X = fill(col, n=400)
    col.delete(ids=["id7"])
    before = col.query(query_embeddings=X[:4], n_results=5)
    collection_id = col.id
    client._backend.engine.flush()  # write a checkpoint to damage (close() does not: it costs what changed)
    client.close()
    directory = Path(persist_dir) / collection_id
    index_file, manifest_file = directory / "index.hnsw", directory / "manifest.json"
    if damage == "truncate":
        data = index_file.read_bytes()
        index_file.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        index_file.write_bytes(b"")
    elif damage == "bitflip":
        data = bytearray(index_file.read_bytes())
        data[len(data) // 3] ^= 0x10
        index_file.write_bytes(bytes(data))
    elif damage == "missing_index":
        index_file.unlink()
    elif damage == "missing_manifest":
        manifest_file.unlink()
    elif damage == "bad_manifest":
        manifest_file.write_text("{not json")
    elif damage == "wrong_dim":
        manifest = json.loads(manifest_file.read_text())
        manifest["dim"] = 3
        manifest_file.write_text(json.dumps(manifest))
    monkeypatch.setattr("retrieval.store.reads.EXACT_MAX_ROWS", 10)  # make queries use the index
    client = retrieval.PersistentClient(persist_dir)
    col = client.get_collection("damaged")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        after = col.query(query_embeddings=X[:4], n_results=5)
    if damage != "missing_manifest":
        assert "rebuilding" in caplog.text
    assert after["ids"] == before["ids"]
    np.testing.assert_allclose(after["distances"], before["distances"], rtol=1e-5, atol=1e-6)
    client.close()


def test_no_pickle_anywhere():
    for path in list((ROOT / "retrieval").rglob("*.py")) + list((ROOT / "embedders").rglob("*.py")) + list((ROOT / "loaders").rglob("*.py")):
        text = path.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, path
        assert "allow_pickle=True" not in text, path


def test_failed_commit_leaves_no_phantom_vectors_in_the_index(client, monkeypatch, over_http):
    """Big writes insert into the graph while SQLite commits; a rollback must not leave vectors behind."""
    from retrieval.store import engine, reads

    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 10)  # answer through the HNSW index
    rng = np.random.default_rng(4)
    col = client.create_collection("phantom", embedding_function=None)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    col.add(ids=[f"a{i}" for i in range(300)], embeddings=X)
    Y = rng.normal(size=(306, 8)).astype(np.float32)

    def fail(*args, **kwargs):
        raise RuntimeError("disk I/O error")

    real_log = engine.log_changes
    monkeypatch.setattr(engine, "log_changes", fail)
    # Over HTTP the server hides its internals: a 500, InternalError (a RuntimeError), no detail.
    with pytest.raises(RuntimeError, match="internal server error" if over_http else "disk I/O error"):
        col.add(ids=[f"b{i}" for i in range(len(Y))], embeddings=Y)
    monkeypatch.setattr(engine, "log_changes", real_log)
    assert col.count() == 300
    res = col.query(query_embeddings=Y[:5], n_results=20)
    assert all(i.startswith("a") for row in res["ids"] for i in row)
    col.add(ids=["b0"], embeddings=Y[:1])
    assert col.query(query_embeddings=Y[:1], n_results=1)["ids"] == [["b0"]]


def test_unclosed_client_loses_nothing_at_exit(persist_dir):
    """chromadb code rarely calls close(): a process that just exits leaves every record findable
    (exit costs what changed: no checkpoint is written, the next open queues the oplog)."""
    run_python(
        f"""
        import numpy as np, retrieval
        col = retrieval.PersistentClient({persist_dir!r}).create_collection("exit", embedding_function=None)
        col.add(ids=[str(i) for i in range(50)], embeddings=np.eye(50, dtype=np.float32))
        """
    )
    client = retrieval.PersistentClient(persist_dir)
    col = client.get_collection("exit")
    assert col.count() == 50
    eye = np.eye(50, dtype=np.float32)
    assert col.query(query_embeddings=eye, n_results=1)["ids"] == [[str(i)] for i in range(50)]
    client.close()