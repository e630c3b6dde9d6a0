"""Threads: many threads mixing writes and reads on one client never deadlock, fail or tear a record.

Each write stores a record whose embedding, metadata and document are all derived from
``(id, version)``, so a record whose columns come from two different writes is detectable.
"""

from __future__ import annotations

import threading
import time
import traceback

import numpy as np
import pytest

import retrieval
from retrieval.store import graph_upkeep, reads

from durability_model import check_index_matches_sql

DIM = 8
ID_SPACE = 600
THREADS = 16


def vector(n: int, version: int) -> np.ndarray:
    return np.random.default_rng([n, version]).normal(size=DIM).astype(np.float32)


def records(ns, versions):
    return dict(
        ids=[f"id{n}" for n in ns],
        embeddings=np.vstack([vector(n, v) for n, v in zip(ns, versions)]),
        metadatas=[{"n": int(n), "version": int(v), "parity": int(n) % 2} for n, v in zip(ns, versions)],
        documents=[f"id{n} version {v}" for n, v in zip(ns, versions)],
    )


def check_consistent(col) -> dict:
    """Every record's columns come from one write; count, get and an all-records query agree."""
    got = col.get(include=["embeddings", "metadatas", "documents"])
    ids = got["ids"]
    assert len(ids) == len(set(ids)) == col.count()
    for id_, emb, meta, doc in zip(ids, got["embeddings"], got["metadatas"], got["documents"]):
        n, v = meta["n"], meta["version"]
        assert id_ == f"id{n}" and doc == f"id{n} version {v}", (id_, meta, doc)
        np.testing.assert_array_equal(emb, vector(n, v))
    if ids:
        res = col.query(query_embeddings=np.zeros((2, DIM)), n_results=len(ids))
        assert sorted(res["ids"][0]) == sorted(ids)
    return {i: (m["version"], d) for i, m, d in zip(ids, got["metadatas"], got["documents"])}


def worker(col, seed: int, deadline: float, errors: list, counts: dict) -> None:
    rng = np.random.default_rng(seed)
    try:
        while time.monotonic() < deadline:
            ns = rng.choice(ID_SPACE, size=int(rng.integers(1, 12)), replace=False)
            r = rng.random()
            if r < 0.2:
                col.add(**records(ns, rng.integers(1 << 30, size=len(ns))))
                verb = "add"
            elif r < 0.4:
                col.upsert(**records(ns, rng.integers(1 << 30, size=len(ns))))
                verb = "upsert"
            elif r < 0.5:
                col.delete(ids=[f"id{n}" for n in ns])
                verb = "delete"
            elif r < 0.55:
                col.delete(where={"n": int(ns[0])})
                verb = "delete_where"
            elif r < 0.75:
                wanted = [f"id{n}" for n in ns]
                got = col.get(ids=wanted, include=["metadatas", "documents"])
                assert [i for i in wanted if i in got["ids"]] == got["ids"]  # order of `ids`, no strays
                for i, m, d in zip(got["ids"], got["metadatas"], got["documents"]):
                    assert d == f"{i} version {m['version']}"
                verb = "get"
            else:
                k = int(rng.integers(1, 40))
                where = {"parity": int(rng.integers(2))} if rng.random() < 0.3 else None
                q = rng.normal(size=(int(rng.integers(1, 3)), DIM)).astype(np.float32)
                res = col.query(query_embeddings=q, n_results=k, where=where, include=["distances", "metadatas"])
                for row_ids, row_d, row_m in zip(res["ids"], res["distances"], res["metadatas"]):
                    assert len(row_ids) == len(set(row_ids)) <= k
                    assert all(a <= b + 1e-5 for a, b in zip(row_d, row_d[1:]))
                    if where is not None:
                        assert all(m["parity"] == where["parity"] for m in row_m)
                verb = "query"
            counts[verb] = counts.get(verb, 0) + 1
    except BaseException:
        errors.append(traceback.format_exc())


def hammer(col, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    errors: list[str] = []
    counts: dict[str, int] = {}
    threads = [threading.Thread(target=worker, args=(col, t, deadline, errors, counts), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running long after the deadline (deadlock?): {stuck}"
    assert not errors, errors[0]
    assert all(counts.get(v, 0) > 0 for v in ("add", "upsert", "delete", "get", "query")), counts
    return counts


@pytest.mark.parametrize("kind", ["ephemeral", "persistent"])
def test_sixteen_threads_mix_writes_and_reads(kind, tmp_path, monkeypatch):
    # Small thresholds so checkpoints, compactions and the HNSW path all run under contention.
    monkeypatch.setattr(graph_upkeep, "CHECKPOINT_BACKLOG_FRACTION", 0)
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 50)
    path = str(tmp_path / "db")
    client = retrieval.EphemeralClient() if kind == "ephemeral" else retrieval.PersistentClient(path)
    col = client.create_collection("threads", embedding_function=None, configuration={"hnsw": {"sync_threshold": 20}})
    col.add(**records(range(0, ID_SPACE, 2), [0] * (ID_SPACE // 2)))
    hammer(col, seconds=3.0)
    before = check_consistent(col)
    check_index_matches_sql(client, col)
    client.close()
    if kind == "persistent":
        client = retrieval.PersistentClient(path)
        col = client.get_collection("threads")
        assert check_consistent(col) == before
        check_index_matches_sql(client, col)
        client.close()


def test_threads_on_several_collections_and_clients_of_one_path(persist_dir, monkeypatch):
    """Two clients of one path (one shared engine) and two collections, written at once."""
    monkeypatch.setattr(graph_upkeep, "CHECKPOINT_BACKLOG_FRACTION", 0)
    a = retrieval.PersistentClient(persist_dir)
    b = retrieval.PersistentClient(persist_dir)
    cols = [a.create_collection("one", embedding_function=None, configuration={"hnsw": {"sync_threshold": 10}}),
            b.create_collection("two", embedding_function=None)]
    deadline = time.monotonic() + 2.0
    errors: list[str] = []
    counts: dict[str, int] = {}
    threads = [threading.Thread(target=worker, args=(cols[t % 2], 100 + t, deadline, errors, counts), daemon=True)
               for t in range(8)]
    threads.append(threading.Thread(target=lambda: [a.list_collections() for _ in range(200)], daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not [t for t in threads if t.is_alive()], "deadlock"
    assert not errors, errors[0]
    states = [check_consistent(c) for c in cols]
    a.close()
    b.close()
    c = retrieval.PersistentClient(persist_dir)
    assert [check_consistent(c.get_collection(n)) for n in ("one", "two")] == states
    c.close()


def test_open_while_another_thread_closes_the_last_client(persist_dir, monkeypatch):
    """Threads of one process share a path: opening it while the last client closes must wait for
    that close, not report the path as 'in use by another process'."""
    from retrieval.store.engine import Engine

    flush = Engine.flush

    def slow_flush(self):  # widen the window between releasing the engine and its lock
        time.sleep(0.3)
        flush(self)

    monkeypatch.setattr(Engine, "flush", slow_flush)
    first = retrieval.PersistentClient(persist_dir)
    first.create_collection("handoff", embedding_function=None).add(ids=["x"], embeddings=[[1.0]])
    closing = threading.Thread(target=first.close)
    closing.start()
    time.sleep(0.05)
    second = retrieval.PersistentClient(persist_dir)  # raised PersistPathLockedError before the fix
    col = second.get_collection("handoff")
    col.add(ids=["y"], embeddings=[[2.0]])
    closing.join(timeout=30)
    assert not closing.is_alive()
    assert col.get()["ids"] == ["x", "y"]
    second.close()
    third = retrieval.PersistentClient(persist_dir)
    assert third.get_collection("handoff").count() == 2
    third.close()


def test_threads_opening_and_closing_clients_of_one_path(persist_dir):
    """Per-request clients (open, write, close) from many threads: no spurious lock errors."""
    errors: list[str] = []

    def cycles(t: int) -> None:
        try:
            for i in range(15):
                with retrieval.PersistentClient(persist_dir) as client:
                    col = client.get_or_create_collection("per-request", embedding_function=None)
                    col.add(ids=[f"{t}-{i}"], embeddings=[[float(t), float(i)]])
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=cycles, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not [t for t in threads if t.is_alive()], "deadlock"
    assert not errors, errors[0]
    with retrieval.PersistentClient(persist_dir) as client:
        assert client.get_collection("per-request").count() == 8 * 15


def test_writes_to_a_deleted_collection_are_refused_not_lost(persist_dir):
    """A stale handle must not acknowledge writes that nothing can reach afterwards."""
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("doomed", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    client.delete_collection("doomed")
    for write in (lambda: col.add(ids=["b"], embeddings=[[1.0, 2.0]]),
                  lambda: col.upsert(ids=["a"], embeddings=[[1.0, 2.0]]),
                  lambda: col.update(ids=["a"], metadatas=[{"k": 1}]),
                  lambda: col.delete(ids=["a"])):
        with pytest.raises(retrieval.NotFoundError, match="'doomed' was deleted"):
            write()
    with client._backend.engine.db.reading() as conn:
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0, "orphaned records"
    new = client.create_collection("doomed", embedding_function=None)  # same name, new collection
    assert new.count() == 0
    client.close()


def test_writes_racing_delete_collection_are_visible_or_refused(persist_dir):
    """Every acknowledged write happened before the delete (and went with it): none survive as orphans."""
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("racing", embedding_function=None)
    acked, refused, errors = [], [], []

    def writer(t: int) -> None:
        for i in range(200):
            try:
                col.add(ids=[f"{t}-{i}"], embeddings=[[float(t), float(i)]])
                acked.append(1)
            except retrieval.NotFoundError:
                refused.append(1)
                return
            except BaseException:
                errors.append(traceback.format_exc())
                return

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    client.delete_collection("racing")
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert acked and refused
    with client._backend.engine.db.reading() as conn:
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0, "orphaned records"
    client.close()


@pytest.mark.slow
def test_sixteen_threads_for_half_a_minute(persist_dir, monkeypatch):
    monkeypatch.setattr(graph_upkeep, "CHECKPOINT_BACKLOG_FRACTION", 0)
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 50)
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("threads", embedding_function=None, configuration={"hnsw": {"sync_threshold": 20}})
    col.add(**records(range(0, ID_SPACE, 2), [0] * (ID_SPACE // 2)))
    hammer(col, seconds=30.0)
    before = check_consistent(col)
    client.close()
    client = retrieval.PersistentClient(persist_dir)
    col = client.get_collection("threads")
    assert check_consistent(col) == before
    check_index_matches_sql(client, col)
    client.close()
