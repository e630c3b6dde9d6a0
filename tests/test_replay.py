"""Replay idempotence: a checkpoint that claims less of the oplog than its graph holds (the
checkpoint died before truncating the oplog, or it was taken while records were pending) makes the
next open replay writes the graph already has; the store must come out exact and every record
findable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import retrieval
from retrieval.store import graph_upkeep, reads
from retrieval.store.graph_upkeep import GraphUpkeep

from durability_model import (
    COLLECTION,
    DIM,
    Model,
    ann_equals_exact,
    check_index_matches_sql,
    check_queries,
    diff,
    op,
    snapshot,
)



def _checkpoint_keeping_oplog(self, index, seq):
    """A checkpoint that dies after the manifest and before the oplog truncation."""
    index.save(self.state.directory, seq)
    self.backlog = 0


def _manifest(path: str, collection_id: str) -> Path:
    return Path(path) / collection_id / "manifest.json"


@pytest.mark.parametrize("rollback", ["zero", "middle", "one_back"])
def test_replay_is_idempotent_when_applied_seq_rolls_back(persist_dir, monkeypatch, rollback):
    monkeypatch.setattr(GraphUpkeep, "save", _checkpoint_keeping_oplog)
    monkeypatch.setattr(graph_upkeep, "CHECKPOINT_BACKLOG_FRACTION", 0)
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection(COLLECTION, embedding_function=None, configuration={"hnsw": {"sync_threshold": 2}})
    model = Model()
    for k in range(45):  # 15 churn cycles: adds, merges, deletes, re-adds, compactions
        kind, kw = op(k, "churn")
        getattr(col, kind)(**kw)
        model.apply(kind, kw)
    collection_id = col.id
    client._backend.engine.flush()  # a checkpoint (close() writes none)
    client.close()
    manifest_path = _manifest(persist_dir, collection_id)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["applied_seq"] > 2
    manifest["applied_seq"] = {"zero": 0, "middle": manifest["applied_seq"] // 2, "one_back": manifest["applied_seq"] - 1}[rollback]
    manifest_path.write_text(json.dumps(manifest))  # the CRC covers the index file only: still trusted

    for round_ in range(2):  # replay, then replay what that checkpoint left again
        client = retrieval.PersistentClient(persist_dir)
        col = client.get_collection(COLLECTION)
        if round_ == 0:
            state = client._backend.engine.state(col._record)
            with state.lock:
                state.index()
                # The replay re-queued writes the graph holds already, with the same vectors: settled
                # on load, so queries need not hide them from the graph.
                assert len(state.pending) == 0
        assert diff(snapshot(col), model) == ""
        check_index_matches_sql(client, col)  # no duplicates, no resurrected deletes, current vectors
        check_queries(col, model)
        ann_equals_exact(col, model)
        with monkeypatch.context() as m:
            m.setattr(reads, "EXACT_MAX_ROWS", 0)
            res = col.query(query_embeddings=np.zeros((1, DIM)), n_results=len(model.records) - 1)
        assert len(res["ids"][0]) == len(set(res["ids"][0])) == len(model.records) - 1
        client.close()


def test_replayed_records_settled_on_load_stay_findable(persist_dir, monkeypatch):
    """A checkpoint's sweep skips what is pending at the time: a re-run upsert of the same vectors,
    say, queued over records the graph already holds. After a crash the replay queues them again and
    the load settles them (same vector): the ones the graph does not find must become stragglers,
    or nothing finds them. A sparse graph (2 links, narrow beams) has plenty such records."""
    monkeypatch.setattr(GraphUpkeep, "save", _checkpoint_keeping_oplog)  # so the replay can start at 0
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    X = np.random.default_rng(5).normal(size=(1500, DIM)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(X))]
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection(COLLECTION, embedding_function=None, configuration={
        "hnsw": {"space": "l2", "max_neighbors": 2, "ef_construction": 4, "ef_search": 4}})
    col.add(ids=ids, embeddings=X)
    collection_id = col.id
    client._backend.engine.flush()  # a swept checkpoint
    client.close()
    manifest_path = _manifest(persist_dir, collection_id)
    manifest = json.loads(manifest_path.read_text())
    unfound = [ids[label - 1] for label in manifest["stragglers"]]  # labels count from 1, in add order
    assert unfound, "the sparse graph should leave some records unfound by their own vector"
    manifest["stragglers"], manifest["applied_seq"] = [], 0  # swept while every record was pending
    manifest_path.write_text(json.dumps(manifest))

    client = retrieval.PersistentClient(persist_dir)
    col = client.get_collection(COLLECTION)
    got = col.get(ids=unfound, include=["embeddings"])
    res = col.query(query_embeddings=np.asarray(got["embeddings"]), n_results=1)
    assert [row[0] for row in res["ids"]] == got["ids"]
    client.close()
