"""Durability: kill -9 during writes and checkpoints, replay idempotence, delete/re-add across flushes.

The crash tests run the workload of ``durability_model.py`` in a child process, SIGKILL it, and
reopen the path here (a fresh process as far as the store is concerned). An acknowledged write must
be there exactly; the one write in flight may be there entirely or not at all.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import retrieval
import retrieval.store.shared_engines
from retrieval.store import graph_upkeep, reads, recovery

from durability_model import (
    COLLECTION,
    Model,
    ann_equals_exact,
    check_index_matches_sql,
    check_queries,
    diff,
    op,
    snapshot,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
WORKLOAD = str(TESTS / "durability_model.py")


def _env(**extra: str) -> dict:
    path = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_child(path: str, mode: str, start: int, *, kill_after_acks: int | None = None, jitter: float = 0.0,
              kill_at: str = "", stop: int | None = None) -> tuple[list[int], int, str]:
    """Run the workload from op ``start``; returns (acknowledged ops, return code, stderr).

    ``kill_after_acks``: SIGKILL the child ``jitter`` seconds after it acknowledged that many ops.
    ``kill_at``: the child kills itself at a checkpoint stage (see ``_install_kill_hook``).
    """
    if stop is None:  # a self-killing child must not run forever if its stage never comes
        stop = start + (3000 if kill_at else 100_000)
    # Unbuffered bytes: a buffered reader's readline() reads ahead, and communicate() below reads the
    # pipe itself, so acknowledgements already read ahead would be lost (seen once adds got fast).
    proc = subprocess.Popen(
        [sys.executable, WORKLOAD, path, mode, str(start), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, env=_env(KILL_AT=kill_at),
    )
    lines = []
    try:
        if kill_after_acks is not None:
            acks = 0
            while acks < kill_after_acks:
                line = proc.stdout.readline().decode()
                if not line:
                    break
                lines.append(line)
                acks += line.startswith("ACK")
            time.sleep(jitter)
            proc.send_signal(signal.SIGKILL)
        out, err = (data.decode() for data in proc.communicate(timeout=120))
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    lines += out.splitlines(keepends=True)
    acked = [int(line.split()[1]) for line in lines if line.startswith("ACK")]
    assert acked == list(range(start, start + len(acked))), acked
    return acked, proc.returncode, err


def simulate_crash(client) -> None:
    """Drop a client's engine the way a crash would: no closing checkpoint, lock released."""
    engine = client._backend.engine
    engine.stop_background()  # a dead process does no background work either
    engine._states.clear()
    engine.db.close()
    engine.closed = True
    client._closed = True
    retrieval.store.shared_engines.forget_all()


def verify_reopen(path: str, candidates: list[Model], *, ann: bool = True) -> int:
    """Reopen with no repair; the store must equal one of the candidate models. Returns its position.

    The ANN checks run on the graph as loaded (the checkpoint, swept when saved, with the replayed
    oplog in the pending tail), before the builder inserts anything; then again once the tail is
    inserted and swept. Not in between: an insertion may cut an old record off until the next sweep
    finds it (hnsw.py, stragglers), crash or no crash.
    """
    client = retrieval.PersistentClient(path)
    try:
        col = client.get_collection(COLLECTION)
        state = client._backend.engine.state(col._record)
        client._backend.engine.builder.pause()
        try:
            got = snapshot(col)
            problems = [diff(got, want) for want in candidates]
            assert "" in problems, f"store matches no allowed state: {problems}"
            which = problems.index("")
            model = candidates[which]
            check_queries(col, model)
            if ann:
                with state.lock:
                    state.index()  # loaded now, not in the background
                ann_equals_exact(col, model)
        finally:
            client._backend.engine.builder.resume()
        check_index_matches_sql(client, col)
        if ann:
            state.upkeep.wait_until_indexed(sweep=True)
            ann_equals_exact(col, model)
        return which
    finally:
        client.close()


def crash_loop(path: str, mode: str, trials: int, seed: int, kill_plan) -> dict:
    """Run ``trials`` killed children on one path, verifying after each; returns statistics."""
    rng = random.Random(seed)
    model = Model()
    done = 0  # ops known applied
    stats = {"in_flight_applied": 0, "in_flight_absent": 0, "acked": 0, "stage_killed": 0, "stage_not_reached": 0}
    for trial in range(trials):
        kwargs = kill_plan(rng, trial)
        acked, rc, err = run_child(path, mode, done, **kwargs)
        # A checkpoint sweeps the whole graph, so as the store grows its checkpoints come further
        # apart: a child may end all its ops before its n-th one. That trial is a clean run (checked
        # like the others); the tests require most staged trials to be killed.
        staged = "kill_at" in kwargs
        stats["stage_not_reached"] += staged and rc == 0
        stats["stage_killed"] += staged and rc == -signal.SIGKILL
        assert rc == -signal.SIGKILL or (staged and rc == 0), f"child was not killed (rc={rc}): {err[-2000:]}"
        assert "Traceback" not in err, err[-2000:]
        for k in acked:
            model.apply(*op(k, mode))
        done += len(acked)
        stats["acked"] += len(acked)
        with_next = model.copy()
        with_next.apply(*op(done, mode))
        which = verify_reopen(path, [model, with_next])
        stats["in_flight_applied" if which else "in_flight_absent"] += 1
        # The next child re-runs op `done` (every op is idempotent), so the model stays exact.
    return stats


# ------------------------------------------------------------------------------ 1. kill -9 during adds


def _random_kill(rng: random.Random, trial: int) -> dict:
    return {"kill_after_acks": rng.randint(1, 25), "jitter": rng.uniform(0, 0.006)}


def test_kill9_during_adds_keeps_every_acknowledged_batch(tmp_path):
    stats = crash_loop(str(tmp_path / "db"), "add", trials=8, seed=1, kill_plan=_random_kill)
    assert stats["acked"] > 0


@pytest.mark.slow
def test_kill9_during_adds_many_trials(tmp_path):
    stats = crash_loop(str(tmp_path / "db"), "add", trials=40, seed=2, kill_plan=_random_kill)
    assert stats["acked"] > 0


def test_batches_are_all_or_nothing_after_kill(tmp_path):
    """Group what survived by batch: a batch is either complete or absent, never partial."""
    path = str(tmp_path / "db")
    acked, rc, _ = run_child(path, "add", 0, kill_after_acks=5, jitter=0.002)
    assert rc == -signal.SIGKILL
    client = retrieval.PersistentClient(path)
    got = client.get_collection(COLLECTION).get(include=["metadatas"])
    client.close()
    sizes: dict[int, int] = {}
    for metadata in got["metadatas"]:
        sizes[metadata["batch"]] = sizes.get(metadata["batch"], 0) + 1
    assert set(sizes.values()) == {20}, sizes
    assert set(acked) <= set(sizes) <= set(acked) | {len(acked)}


# ------------------------------------------------------------------------------ 2. kill -9 during checkpoints

STAGES = ["checksum", "write_atomic", "fsync_dir-odd", "fsync_dir-even"]


def _stage_kill(stages):
    def plan(rng: random.Random, trial: int) -> dict:
        stage = stages[trial % len(stages)]
        if stage == "random":
            return {"kill_after_acks": rng.randint(1, 30), "jitter": rng.uniform(0, 0.01)}
        nth = rng.randint(2, 25)
        if stage.startswith("fsync_dir"):  # two calls per checkpoint: after the index and after the manifest
            return {"kill_at": f"fsync_dir:{2 * nth - (stage.endswith('odd'))}"}
        return {"kill_at": f"{stage}:{nth}"}

    return plan


def test_kill9_at_each_checkpoint_stage_reopens_without_repair(tmp_path):
    stats = crash_loop(str(tmp_path / "db"), "churn", trials=10, seed=3, kill_plan=_stage_kill(STAGES + ["random"]))
    assert stats["acked"] > 0 and stats["stage_killed"] >= 3 * stats["stage_not_reached"], stats


@pytest.mark.slow
def test_kill9_during_checkpoints_many_trials(tmp_path):
    stats = crash_loop(str(tmp_path / "db"), "churn", trials=60, seed=4, kill_plan=_stage_kill(STAGES + ["random"] * 4))
    assert stats["acked"] > 0 and stats["stage_killed"] >= 3 * stats["stage_not_reached"], stats


# ------------------------------------------------------------------------------ 4. delete / re-add across boundaries

BOUNDARIES = ["none", "checkpoint", "close", "crash"]


def _cross(client, path: str, boundary: str):
    if boundary == "checkpoint":
        client._backend.engine.flush()
    elif boundary == "close":
        client.close()
        client = retrieval.PersistentClient(path)
    elif boundary == "crash":
        simulate_crash(client)
        client = retrieval.PersistentClient(path)
    return client, client.get_collection("readd")


@pytest.mark.parametrize("b1,b2,b3", list(itertools.product(BOUNDARIES, repeat=3)))
def test_delete_then_readd_survives_every_boundary(persist_dir, monkeypatch, b1, b2, b3):
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)  # queries go through the HNSW index
    rng = np.random.default_rng(7)
    background = rng.normal(size=(40, 4)).astype(np.float32)
    v_old, v_new, v_gone = (np.full((1, 4), c, np.float32) for c in (10.0, -10.0, 20.0))
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("readd", embedding_function=None)
    col.add(ids=[f"bg{i}" for i in range(40)], embeddings=background)
    col.add(ids=["x", "gone"], embeddings=np.vstack([v_old, v_gone]), metadatas=[{"v": 1}, {"v": 1}], documents=["old", "gone"])
    client, col = _cross(client, persist_dir, b1)
    col.delete(ids=["x", "gone"])
    client, col = _cross(client, persist_dir, b2)
    col.add(ids=["x"], embeddings=v_new, metadatas=[{"v": 2}], documents=["new"])
    client, col = _cross(client, persist_dir, b3)
    client, col = _cross(client, persist_dir, "crash")  # and a final crash-reopen

    got = col.get(ids=["x", "gone"], include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == ["x"]
    np.testing.assert_array_equal(got["embeddings"], v_new)
    assert got["metadatas"] == [{"v": 2}] and got["documents"] == ["new"]
    all_ids = col.get()["ids"]
    assert col.count() == len(all_ids) == 41 and all_ids[-1] == "x"  # re-added: last in insertion order
    near_new = col.query(query_embeddings=v_new, n_results=1, include=["distances"])
    assert near_new["ids"] == [["x"]] and near_new["distances"] == [[0.0]]
    near_old = col.query(query_embeddings=np.vstack([v_old, v_gone]), n_results=3)
    assert all("gone" not in row for row in near_old["ids"])
    assert "x" not in near_old["ids"][0][:1]
    check_index_matches_sql(client, col)
    client.close()


# ------------------------------------------------------------------------------ 5. collections at different checkpoint states


TWO_STATES_CHILD = """
import os, sys, time
import retrieval
from retrieval.store import graph_upkeep
from durability_model import op
graph_upkeep.CHECKPOINT_BACKLOG_FRACTION = 0   # thresholds are the collections' sync_threshold
# No compactions: one checkpoints its new graph whatever the threshold, and whether one runs depends on
# the builder's timing (it applies deletions before the insertions queued with them, so a builder a few
# writes behind sees beta's small graph pass 25% marks: CI saw beta checkpointed that way).
graph_upkeep.COMPACT_DELETED_FRACTION = 2.0
client = retrieval.PersistentClient(sys.argv[1])
engine = client._backend.engine
alpha = client.create_collection("alpha", embedding_function=None, configuration={"hnsw": {"sync_threshold": 2}})
beta = client.create_collection("beta", embedding_function=None, configuration={"hnsw": {"sync_threshold": 100000}})
gamma = client.create_collection("gamma", embedding_function=None, configuration={"hnsw": {"sync_threshold": 100000}})
client.create_collection("empty", embedding_function=None)
def run(col, ks):
    for k in ks:
        kind, kw = op(k, "churn")
        getattr(col, kind)(**kw)
run(alpha, range(40))          # checkpointed after (nearly) every write
run(beta, range(25))           # never checkpointed: everything is in the oplog
run(gamma, range(21))
engine.state(gamma._record).upkeep.flush()   # one checkpoint, then more writes (deletes included) after it
run(gamma, range(21, 33))
run(alpha, range(40, 42))
engine.builder.idle(timeout=60)   # alpha's checkpoints are written in the background
print("READY", flush=True)
time.sleep(60)
"""


def test_collections_at_different_checkpoint_states_survive_kill9(tmp_path):
    path = str(tmp_path / "db")
    proc = subprocess.Popen([sys.executable, "-c", TWO_STATES_CHILD, path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", proc.stderr.read()
        # The child's state before the kill: alpha has a fresh checkpoint, beta none, gamma an old one.
        assert (Path(path) / retrieval_id(path, "alpha") / "manifest.json").exists()
        assert not (Path(path) / retrieval_id(path, "beta")).exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    expected = {"alpha": range(42), "beta": range(25), "gamma": range(33)}
    client = retrieval.PersistentClient(path)
    for name, ks in expected.items():
        model = Model()
        for k in ks:
            model.apply(*op(k, "churn"))
        col = client.get_collection(name)
        assert diff(snapshot(col), model) == "", name
        check_index_matches_sql(client, col)
        check_queries(col, model)
        ann_equals_exact(col, model)
    assert client.get_collection("empty").count() == 0
    client.close()


def retrieval_id(path: str, name: str) -> str:
    """A collection's id, read straight from SQLite (the owning process holds the path lock)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{Path(path) / 'retrieval.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0]
    finally:
        conn.close()


# ------------------------------------------------------------------------------ checkpoint and database disagree


@pytest.mark.parametrize("restored", ["database", "index"])
def test_checkpoint_from_another_point_in_time_is_not_trusted(persist_dir, monkeypatch, restored):
    """``database``: SQLite lost its last commits (power loss under synchronous=NORMAL, a restored
    backup) while the fsynced checkpoint kept them. ``index``: the index files come from an older
    backup while the oplog they would need is truncated. SQLite is the truth: the index must follow
    it, even when another collection's writes have meanwhile reissued the lost oplog numbers."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection(COLLECTION, embedding_function=None)
    client.create_collection("other", embedding_function=None)
    model = Model()
    for k in range(12):
        kind, kw = op(k, "churn")
        getattr(col, kind)(**kw)
        model.apply(kind, kw)
    collection_id = col.id
    client._backend.engine.flush()  # a checkpoint (close() writes none)
    client.close()
    db = Path(persist_dir) / "retrieval.sqlite3"
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0
    saved_db = db.read_bytes()
    index_dir = Path(persist_dir) / collection_id
    saved_index = {p.name: p.read_bytes() for p in index_dir.iterdir()}

    client = retrieval.PersistentClient(persist_dir)
    col = client.get_collection(COLLECTION)
    for k in range(12, 30):  # adds, moves, deletes, re-adds
        kind, kw = op(k, "churn")
        getattr(col, kind)(**kw)
        if restored == "index":
            model.apply(kind, kw)
    client._backend.engine.flush()  # a checkpoint reflecting them, and the oplog truncated up to it
    client.close()

    if restored == "database":
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        db.write_bytes(saved_db)
    else:
        for name, data in saved_index.items():
            (index_dir / name).write_bytes(data)
    client = retrieval.PersistentClient(persist_dir)
    filler = np.random.default_rng(5).normal(size=(400, 3)).astype(np.float32)
    client.get_collection("other").add(ids=[f"o{i}" for i in range(400)], embeddings=filler)
    col = client.get_collection(COLLECTION)
    assert diff(snapshot(col), model) == ""
    check_index_matches_sql(client, col)
    ann_equals_exact(col, model)
    client.close()


@pytest.mark.parametrize("ending", ["close", "crash"])
def test_reopen_uses_the_checkpoint_without_rebuilding(persist_dir, monkeypatch, caplog, ending):
    """Clean close and crash-after-checkpoint both load the checkpoint (plus replay): no rebuild."""
    monkeypatch.setattr(graph_upkeep, "CHECKPOINT_BACKLOG_FRACTION", 0)
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection(COLLECTION, embedding_function=None, configuration={"hnsw": {"sync_threshold": 30}})
    model = Model()
    for k in range(30):
        kind, kw = op(k, "churn")
        getattr(col, kind)(**kw)
        model.apply(kind, kw)
    if ending == "close":
        client.close()
    else:
        simulate_crash(client)
    rebuilds = []
    monkeypatch.setattr(recovery, "rebuild_graph", lambda *a, **k: rebuilds.append(1) or _original_rebuild(*a, **k))
    with caplog.at_level("WARNING", logger="retrieval"):
        client = retrieval.PersistentClient(persist_dir)
        col = client.get_collection(COLLECTION)
        check_index_matches_sql(client, col)
        ann_equals_exact(col, model)
    assert "rebuilding" not in caplog.text and not rebuilds
    client.close()


_original_rebuild = recovery.rebuild_graph
