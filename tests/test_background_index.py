"""Costs follow the change (issue 16): acknowledged writes are queryable before the graph holds them,
close() and recovery neither sweep nor save, and the background builder catches up.

The builder is paused where a test looks at the pending tail: what it asserts then is what a query
sees between an acknowledgement and the builder's next step.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import retrieval
from retrieval.store import reads
from retrieval.store.hnsw import HnswIndex

from durability_model import check_index_matches_sql

DIM = 16


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def graph_path(monkeypatch):
    """Every unfiltered query goes through graph + tail (no small-collection exact scan)."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)


@pytest.fixture
def calls(monkeypatch):
    """Counts of the O(collection) operations: sweeps (self-queries) and checkpoint saves."""
    counted = {"misses": 0, "save": 0}
    for name in counted:
        original = getattr(HnswIndex, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            counted[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(HnswIndex, name, counting)
    return counted


@pytest.mark.parametrize("kind", ["ephemeral", "persistent"])
def test_acknowledged_writes_are_found_before_the_graph_holds_them(tmp_path, graph_path, kind):
    client = retrieval.EphemeralClient() if kind == "ephemeral" else retrieval.PersistentClient(str(tmp_path / "db"))
    builder = client._backend.engine.builder
    col = client.create_collection("tail", embedding_function=None, configuration={"hnsw": {"space": "l2"}})
    X = _vectors(3000)
    col.add(ids=[str(i) for i in range(2000)], embeddings=X[:2000], metadatas=[{"odd": i % 2} for i in range(2000)])
    assert builder.idle(timeout=120)
    builder.pause()
    try:
        col.add(ids=[str(i) for i in range(2000, 3000)], embeddings=X[2000:], metadatas=[{"odd": i % 2} for i in range(2000, 3000)])
        col.update(ids=["5"], embeddings=X[2500:2501] + 0.001)  # a graph element's vector changes
        col.delete(ids=["7", "2999"])  # one in the graph, one still pending
        state = client._backend.engine.state(col._record)
        assert len(state.pending) == 1000 and len(state.pending.deletes) == 2  # 1,000 new + "5" - "2999"
        res = col.query(query_embeddings=X[2000:2010], n_results=1, include=["distances"])
        assert [r[0] for r in res["ids"]] == [str(i) for i in range(2000, 2010)]
        assert all(d[0] == 0.0 for d in res["distances"])
        assert col.query(query_embeddings=X[2500:2501] + 0.001, n_results=2)["ids"][0][0] in {"5", "2500"}
        assert "5" in col.query(query_embeddings=X[2500:2501] + 0.001, n_results=2)["ids"][0]
        assert col.query(query_embeddings=X[5:6], n_results=1)["ids"][0] != ["5"]  # its old vector is stale
        hits = col.query(query_embeddings=X[[7, 2999]], n_results=3)["ids"]
        assert "7" not in hits[0] and "2999" not in hits[1]
        filtered = col.query(query_embeddings=X[2001:2002], n_results=1, where={"odd": 1})
        assert filtered["ids"] == [["2001"]]
    finally:
        builder.resume()
    assert builder.idle(timeout=120)
    if kind == "persistent":
        check_index_matches_sql(client, col)
    assert col.query(query_embeddings=X[2000:2010], n_results=1)["ids"] == [[str(i)] for i in range(2000, 2010)]
    client.close()


def test_close_after_a_small_write_neither_sweeps_nor_saves(tmp_path, graph_path, calls):
    path = str(tmp_path / "db")
    client = retrieval.PersistentClient(path)
    col = client.create_collection("big", embedding_function=None)
    X = _vectors(5000, seed=1)
    col.add(ids=[str(i) for i in range(5000)], embeddings=X)
    client._backend.engine.flush()  # a swept checkpoint of everything
    client.close()

    calls.update(misses=0, save=0)
    client = retrieval.PersistentClient(path)
    col = client.get_collection("big")
    Y = _vectors(10, seed=2)
    col.add(ids=[f"n{i}" for i in range(10)], embeddings=Y)
    client.close()  # the builder may have inserted the 10: no sweep of the 5,000, no save
    assert calls == {"misses": 0, "save": 0}

    client = retrieval.PersistentClient(path)
    builder = client._backend.engine.builder
    builder.pause()  # recovery queues the 10 from the oplog; the first answers need no graph work
    col = client.get_collection("big")
    assert col.query(query_embeddings=Y, n_results=1)["ids"] == [[f"n{i}"] for i in range(10)]
    state = client._backend.engine.state(col._record)
    assert len(state.pending) == 10 and calls["save"] == 0
    builder.resume()
    client.close()


def test_recovery_reads_only_the_oplog_after_the_checkpoint(tmp_path, graph_path, calls):
    """A crash after a checkpoint: reopening queues what came after it, sweeps nothing, saves nothing,
    and answers every acknowledged record from its first query."""
    path = str(tmp_path / "db")
    client = retrieval.PersistentClient(path)
    col = client.create_collection("crashy", embedding_function=None)
    X = _vectors(4000, seed=3)
    col.add(ids=[str(i) for i in range(3000)], embeddings=X[:3000])
    client._backend.engine.flush()
    client._backend.engine.builder.pause()  # then 1,000 more that no graph or checkpoint holds
    col.add(ids=[str(i) for i in range(3000, 4000)], embeddings=X[3000:])
    col.delete(ids=["0", "3999"])
    engine = client._backend.engine
    engine.stop_background()  # the process dies: no background work, nothing at exit
    engine._states.clear()
    engine.db.close()
    retrieval.store.shared_engines.forget_all()

    calls.update(misses=0, save=0)
    client = retrieval.PersistentClient(path)
    client._backend.engine.builder.pause()
    col = client.get_collection("crashy")
    assert col.count() == 3998
    res = col.query(query_embeddings=X[[1, 2999, 3000, 3998]], n_results=1)["ids"]
    assert res == [["1"], ["2999"], ["3000"], ["3998"]]
    assert "0" not in col.query(query_embeddings=X[:1], n_results=3)["ids"][0]
    state = client._backend.engine.state(col._record)
    assert len(state.pending) == 999 and len(state.pending.deletes) == 2  # the oplog after the checkpoint
    assert calls == {"misses": 0, "save": 0}
    client._backend.engine.builder.resume()
    assert client._backend.engine.builder.idle(timeout=120)
    check_index_matches_sql(client, col)
    client.close()


def test_writers_wait_for_the_builder_when_the_tail_is_full(monkeypatch, graph_path):
    from retrieval.store import collection_state

    monkeypatch.setattr(collection_state, "PENDING_MAX_BYTES", 64 * DIM * 4)
    client = retrieval.EphemeralClient()
    col = client.create_collection("throttled", embedding_function=None)
    X = _vectors(2000, seed=4)
    for start in range(0, 2000, 100):
        col.add(ids=[str(i) for i in range(start, start + 100)], embeddings=X[start : start + 100])
        state = client._backend.engine.state(col._record)
        assert state.pending.nbytes <= 64 * DIM * 4 + 100 * DIM * 4  # at most one batch over the cap
    assert col.query(query_embeddings=X[:5], n_results=1)["ids"] == [[str(i)] for i in range(5)]


def test_a_drained_tail_gives_its_memory_back():
    """The tail's rows go back to the OS as the builder drains it: at the end of a bulk load the graph
    grows by what the tail held, and both at their peak at once would be the load's peak memory."""
    from retrieval.store.pending import PendingWrites

    def resident_mib() -> float:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024

    dim, n = 512, 48_000  # 94 MiB of vectors
    tail = PendingWrites(dim, "cosine")
    rng = np.random.default_rng(5)
    for start in range(0, n, 4000):
        tail.put(np.arange(start, start + 4000), rng.standard_normal((4000, dim), dtype=np.float32), first_seq=1)
    full_bytes, full_mib = tail.vectors.nbytes, resident_mib()
    while len(tail) > 2000:
        labels, _, versions = tail.take(2048)
        tail.settle(labels, versions)
    assert tail.vectors.nbytes < full_bytes / 4
    assert resident_mib() < full_mib - 60  # measured by the OS, not by our own count
    kept = tail.labels()[:3]
    labels, dist = tail.search(tail.vectors.raw_rows(tail.vectors.rows_for(kept)), 1)  # what is left still answers
    assert labels[:, 0].tolist() == kept.tolist() and np.allclose(dist, 0, atol=1e-5)
    left = len(tail)
    tail.put(np.arange(n, n + 4000), rng.standard_normal((4000, dim), dtype=np.float32), first_seq=2)
    assert len(tail) == left + 4000 and tail.vectors.has(np.array([n, n + 3999])).all()


def test_close_with_a_budget_stops_indexing_and_loses_nothing(tmp_path, monkeypatch):
    """A server stopped with a grace period closes within its budget even with a large unindexed
    backlog; what it did not index and save is replayed from the oplog on the next open."""
    from retrieval.store import graph_upkeep, reads

    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    monkeypatch.setattr(graph_upkeep, "INSERT_CHUNK", 64)  # many small steps: the budget can cut in
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    client = retrieval.PersistentClient(path=str(tmp_path))
    col = client.create_collection("budget", configuration={"hnsw": {"space": "l2"}})
    engine = client._backend.engine
    engine.builder.pause()
    try:
        col.add(ids=[str(i) for i in range(len(vectors))], embeddings=vectors)
        state = engine.state(col._record)
        assert len(state.pending) == len(vectors)  # nothing indexed yet
        engine.close(budget_s=0.0)  # out of time at once: nothing indexed, nothing saved
    finally:
        engine.builder.resume()
    assert not list(tmp_path.glob("*/manifest.json"))
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("budget")
        got = col.query(query_embeddings=vectors[::300], n_results=1, include=[])
        assert got["ids"] == [[str(i)] for i in range(0, len(vectors), 300)]
        client._backend.engine.close(budget_s=60.0)  # time enough: indexed and checkpointed
    assert list(tmp_path.glob("*/manifest.json"))


def _crash(client) -> None:
    """What SIGKILL leaves: no background work, nothing at exit."""
    engine = client._backend.engine
    engine.stop_background()
    engine._states.clear()
    engine.db.close()
    retrieval.store.shared_engines.forget_all()


@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_a_large_graph_loads_in_the_background_while_queries_answer_exactly(tmp_path, graph_path, monkeypatch, space):
    """Reopening a large collection answers its first query from an exact scan of the vector file
    while the graph loads in a background thread; writes meanwhile are queued once, by the load."""
    import threading

    from retrieval.store import collection_state, recovery
    from tests.test_hnsw import brute_force

    monkeypatch.setattr(collection_state, "BACKGROUND_LOAD_MIN_RECORDS", 1000)
    path = str(tmp_path / "db")
    X = _vectors(3000, seed=8)
    client = retrieval.PersistentClient(path)
    col = client.create_collection("big", embedding_function=None, configuration={"hnsw": {"space": space}})
    col.add(ids=[str(i) for i in range(2500)], embeddings=X[:2500], metadatas=[{"i": i} for i in range(2500)])
    client._backend.engine.flush()  # a checkpoint; then changes after it, left in the oplog
    col.add(ids=[str(i) for i in range(2500, 2600)], embeddings=X[2500:2600], metadatas=[{"i": i} for i in range(2500, 2600)])
    replaced = X[10].copy()
    X[10] = _vectors(1, seed=9)[0]
    col.update(ids=["10"], embeddings=X[10:11])  # its old slot stays behind in the file
    col.delete(ids=["11", "2550"])
    _crash(client)

    release = threading.Event()
    original = recovery.load_checkpoint

    def slow_load(*args, **kwargs):
        assert release.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(recovery, "load_checkpoint", slow_load)
    client = retrieval.PersistentClient(path)
    col = client.get_collection("big")
    state = client._backend.engine.state(col._record)
    live = np.array([i for i in range(2600) if i not in (11, 2550)])
    # The replaced vector's stale slot and a deleted record's are the best matches of the first two.
    queries = np.vstack([replaced, X[[11, 10, 12, 2599]], _vectors(2, seed=10)])

    def check(members):
        got = col.query(query_embeddings=queries, n_results=5, include=["distances"])
        for q, ids, dist in zip(queries, got["ids"], got["distances"]):
            expected = brute_force(X[members], q, space)
            order = np.argsort(expected, kind="stable")[:5]
            assert [int(i) for i in ids] == members[order].tolist()
            np.testing.assert_allclose(dist, expected[order], rtol=1e-4, atol=1e-4)

    check(live)  # the first answer: exact, the graph not loaded
    assert state.loading and state.pending is None
    filtered = col.query(query_embeddings=queries[:1], n_results=3, where={"i": {"$gte": 100}})["ids"][0]
    assert filtered == [str(i) for i in live[live >= 100][np.argsort(brute_force(X[live[live >= 100]], queries[0], space))[:3]]]
    col.add(ids=[str(i) for i in range(2600, 3000)], embeddings=X[2600:], metadatas=[{"i": i} for i in range(2600, 3000)])
    live = np.concatenate([live, np.arange(2600, 3000)])
    check(live)  # a write while loading: found at once (it is in the records the scan reads)
    release.set()
    many = col.query(query_embeddings=X[live[:20]], n_results=1)["ids"]  # a large batch waits for the graph
    assert many == [[str(i)] for i in live[:20]] and not state.loading and state.pending is not None
    state.upkeep.wait_until_indexed()
    assert not state.loading and state.graph() is not None
    assert col.query(query_embeddings=X[2999:3000], n_results=1)["ids"] == [["2999"]]
    assert col.count() == len(live)
    assert client._backend.engine.builder.idle(timeout=120)
    if space == "l2":  # (a cosine graph holds unit vectors, which the helper does not compare)
        check_index_matches_sql(client, col)  # the write made while loading went in once
    client.close()


def test_close_while_the_graph_loads_stops_the_load(tmp_path, graph_path, monkeypatch):
    import time

    from retrieval.store import collection_state, vector_store

    monkeypatch.setattr(collection_state, "BACKGROUND_LOAD_MIN_RECORDS", 1000)
    path = str(tmp_path / "db")
    X = _vectors(2000, seed=11)
    with retrieval.PersistentClient(path) as client:
        col = client.create_collection("big", embedding_function=None)
        col.add(ids=[str(i) for i in range(2000)], embeddings=X)
        client._backend.engine.flush()
    reads_done = []
    original = vector_store.CollectionVectors.read_slots

    def slow_read_slots(self, slots):
        reads_done.append(len(slots))
        time.sleep(0.05)
        return original(self, slots)

    monkeypatch.setattr(vector_store.CollectionVectors, "read_slots", slow_read_slots)
    monkeypatch.setattr("retrieval.store.graph_file._CHUNK", 16)  # 125 chunks: over 6 s to load
    client = retrieval.PersistentClient(path)
    col = client.get_collection("big")
    assert col.query(query_embeddings=X[:1], n_results=1)["ids"] == [["0"]]
    deadline = time.monotonic() + 30
    while not reads_done and time.monotonic() < deadline:  # the loader is under way
        time.sleep(0.01)
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 2.0 and 0 < len(reads_done) < 125
    monkeypatch.undo()
    with retrieval.PersistentClient(path) as client:  # the checkpoint is intact
        col = client.get_collection("big")
        assert col.query(query_embeddings=X[1999:], n_results=1)["ids"] == [["1999"]]


def test_close_after_a_bulk_load_sweeps_the_graph_once(tmp_path, graph_path, monkeypatch):
    """The builder's steps sweep a graph that grew; the checkpoint close() then writes does not sweep
    it again (at 1M records a sweep takes minutes)."""
    sweeps = []
    monkeypatch.setattr(HnswIndex, "set_stragglers", lambda self, *a, _o=HnswIndex.set_stragglers: sweeps.append("step") or _o(self, *a))
    monkeypatch.setattr(HnswIndex, "sweep", lambda self, *a, _o=HnswIndex.sweep: sweeps.append("refresh") or _o(self, *a))
    client = retrieval.PersistentClient(str(tmp_path / "db"))
    col = client.create_collection("bulk", embedding_function=None)
    X = _vectors(3000, seed=12)
    client._backend.engine.builder.pause()
    try:
        col.add(ids=[str(i) for i in range(3000)], embeddings=X)
        client.close()  # a load past the checkpoint threshold: indexed, swept and saved here
    finally:
        client._backend.engine.builder.resume()
    assert sweeps == ["step"] and list(tmp_path.glob("db/*/manifest.json"))
    with retrieval.PersistentClient(str(tmp_path / "db")) as client:
        col = client.get_collection("bulk")
        state = client._backend.engine.state(col._record)
        assert col.query(query_embeddings=X[:3], n_results=1)["ids"] == [["0"], ["1"], ["2"]]
        assert state.pending is not None and len(state.pending) == 0  # nothing replayed


EXIT_CHILD = """
import sys, numpy as np, retrieval
from retrieval.store import shared_engines
shared_engines.EXIT_BUDGET_S = float(sys.argv[2])
client = retrieval.PersistentClient(sys.argv[1])
client._backend.engine.builder.pause()  # all the graph work is still owed at exit, however fast this machine
col = client.get_or_create_collection("left_open", embedding_function=None)
X = np.random.default_rng(0).standard_normal((6000, 16)).astype(np.float32)
for start in range(0, 6000, 1000):
    col.add(ids=[str(i) for i in range(start, start + 1000)], embeddings=X[start : start + 1000])
print(col.id, flush=True)
# no close(): the interpreter's exit closes the client
"""


@pytest.mark.parametrize("budget", [0.0, 60.0])
def test_a_client_left_open_is_closed_at_exit_within_a_budget(tmp_path, budget):
    """A script that ends without close() does not wait at exit for the graph to take a bulk load:
    past EXIT_BUDGET_S it leaves the rest to the oplog, and the next open finds every record."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = {"PYTHONPATH": os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")]), "PATH": os.environ["PATH"]}
    child = subprocess.run([sys.executable, "-c", EXIT_CHILD, str(tmp_path), str(budget)], capture_output=True, text=True,
                           env=env, timeout=300)
    assert child.returncode == 0, child.stderr
    collection_id = child.stdout.split()[0]
    saved = (tmp_path / collection_id / "manifest.json").exists()
    assert saved == (budget > 0)  # a whole load owes a checkpoint: made only when the budget allows
    client = retrieval.PersistentClient(str(tmp_path))
    col = client.get_collection("left_open")
    X = np.random.default_rng(0).standard_normal((6000, 16)).astype(np.float32)
    assert col.count() == 6000
    found = col.query(query_embeddings=X[::250], n_results=1)["ids"]
    assert found == [[str(i)] for i in range(0, 6000, 250)]
    client.close()


def test_a_replay_queues_each_record_with_its_own_oplog_seq(tmp_path):
    """A checkpoint claims the oplog up to the oldest pending write. Replayed records carry their own
    writes' seqs, so once the first replayed write is in the graph a checkpoint claims it: with the
    replay's first seq on every record, no checkpoint could claim anything new until the whole replay
    was inserted, and the next open replayed records the graph already held."""
    from retrieval.store.pending import PendingWrites
    from retrieval.store.recovery import replay_into

    client = retrieval.PersistentClient(str(tmp_path))
    col = client.create_collection("replayed", embedding_function=None)
    X = _vectors(400, seed=8)
    col.add(ids=[str(i) for i in range(100)], embeddings=X[:100])
    client._backend.engine.flush()
    for start in (100, 200, 300):  # three writes after the checkpoint, then a deletion from the first
        col.add(ids=[str(i) for i in range(start, start + 100)], embeddings=X[start : start + 100])
    col.delete(ids=["150"])
    engine = client._backend.engine
    with engine.db.reading() as conn:
        rows = conn.execute("SELECT seq, label FROM oplog WHERE collection_id = ? ORDER BY seq", (col.id,)).fetchall()
        live = {row[0] for row in conn.execute("SELECT label FROM records WHERE collection_id = ?", (col.id,))}
        label_200 = conn.execute("SELECT label FROM records WHERE collection_id = ? AND id = '200'", (col.id,)).fetchone()[0]
    checkpoint_seq = rows[0][0]  # the row a checkpoint keeps as evidence; replay starts after it
    after = rows[1:]
    deleted_first_seq = min(seq for seq, label in after if label not in live)
    second_write_seq = min(seq for seq, label in after if label == label_200)
    tail = PendingWrites(DIM, "cosine")
    assert replay_into(tail, engine.db, col.id, checkpoint_seq, engine.state(col._record).vectors) == rows[-1][0]
    assert len(tail) == 299 and len(tail.deletes) == 1 and tail.first_seq() == after[0][0]
    labels, _, versions = tail.take(99)  # the first write's records (less the deleted one), oldest first
    tail.settle(labels, versions)
    assert tail.first_seq() == deleted_first_seq  # the deletion is still owed
    tail.take_deletes()
    assert tail.first_seq() == second_write_seq  # a checkpoint now claims the whole first write
    client.close()


_EXIT_WHILE_INDEXING = """
import sys, time
import numpy as np
import retrieval
client = retrieval.EphemeralClient()  # never closed, as in most chromadb scripts
col = client.create_collection("exit-while-indexing", embedding_function=None)
X = np.random.default_rng(0).standard_normal((40_000, 64)).astype(np.float32)
for lo in range(0, len(X), 5_000):
    col.add(ids=[str(i) for i in range(lo, lo + 5_000)], embeddings=X[lo:lo + 5_000])
time.sleep(float(sys.argv[1]))  # the script ends while the builder is inside hnswlib
"""


def test_a_script_that_ends_while_the_graph_is_built_exits_cleanly(tmp_path):
    """The interpreter's exit waits for the builder's step: a daemon thread returning from hnswlib
    after finalization began aborted the process (exit status 134, "terminate called without an
    active exception") in about half of these runs before."""
    import subprocess
    import sys

    script = tmp_path / "ends_while_indexing.py"
    script.write_text(_EXIT_WHILE_INDEXING)
    for pause in ("0.05", "0.2", "0.4", "0.8"):
        done = subprocess.run([sys.executable, str(script), pause], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "terminate" not in done.stderr, (pause, done.returncode, done.stderr[-2000:])
