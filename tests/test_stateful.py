"""Stateful property test: random add/update/upsert/delete/query/reopen/crash sequences against a model.

After every step the store must equal the model exactly: count, ids in insertion order, every
embedding, metadata (with None-deletes-key merges), document and uri. Filtered gets are compared
with ``retrieval.query.evaluate.matches`` over the model, queries with brute-force squared l2.

Profiles: ``stateful-ci`` (the default run, ~15 s) and ``stateful-slow`` (``-m slow``; or set
``RETRIEVAL_HYPOTHESIS_PROFILE=slow`` to run the default test with it).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import retrieval
import retrieval.store.shared_engines
from retrieval.query.evaluate import matches
from retrieval.query.filters import parse_where, parse_where_document
from retrieval.store import checkpoint_files, graph_upkeep

from durability_model import Model, Rec, check_index_matches_sql, l2_squared

settings.register_profile(
    "stateful-ci", max_examples=100, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "stateful-slow", max_examples=400, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

DIM = 3
POOL = ["a", "b", "c", "d", "e", "f", "g", "h", "ü-ñ", "id with space"]

ids_st = st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True)
# Multiples of 1/2 in a small range: exact in float32, and ties happen (query checks must cope).
coord = st.integers(-4, 4).map(lambda i: i / 2)
vector_st = st.lists(coord, min_size=DIM, max_size=DIM)
values = {
    "color": st.sampled_from(["red", "green", "blue"]),
    "n": st.one_of(st.integers(-3, 3), st.sampled_from([0.5, -1.5, 2.0])),
    "flag": st.booleans(),
    "tags": st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=2, unique=True),
}


def metadata_st(allow_none: bool):
    value = lambda key: st.one_of(st.none(), values[key]) if allow_none else values[key]  # noqa: E731
    return st.sampled_from(sorted(values)).flatmap(
        lambda first: st.fixed_dictionaries({first: value(first)}, optional={k: value(k) for k in values if k != first})
    )


def column(draw, n: int, element, *, absent: bool = True):
    """A whole column (list of n) or None (not given)."""
    if absent and draw(st.booleans()):
        return None
    return [draw(element) for _ in range(n)]


doc_st = st.one_of(st.none(), st.text(alphabet="abc xyz", max_size=6))
uri_st = st.one_of(st.none(), st.sampled_from(["file:///1.png", "s3://b/k", "https://x/ä"]))


@st.composite
def comparisons(draw):
    key = draw(st.sampled_from(sorted(values)))
    if key == "tags":
        op = draw(st.sampled_from(["$contains", "$not_contains"]))
        return {key: {op: draw(st.sampled_from(["x", "y", "z"]))}}
    op = draw(st.sampled_from(["$eq", "$ne", "$in", "$nin"] + (["$gt", "$gte", "$lt", "$lte"] if key == "n" else [])))
    if op in ("$in", "$nin"):
        return {key: {op: draw(st.lists(values[key], min_size=1, max_size=3))}}
    return {key: {op: draw(values[key])}}


wheres = st.recursive(
    comparisons(),
    lambda inner: st.builds(lambda op, xs: {op: xs}, st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=2, max_size=3)),
    max_leaves=4,
)
where_documents = st.one_of(
    st.builds(lambda s: {"$contains": s}, st.sampled_from(["a", "b", "x", "ab"])),
    st.builds(lambda s: {"$not_contains": s}, st.sampled_from(["a", "z"])),
)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._old_fraction = graph_upkeep.CHECKPOINT_BACKLOG_FRACTION
        graph_upkeep.CHECKPOINT_BACKLOG_FRACTION = 0  # checkpoint every sync_threshold (2) writes
        # This test checks logic, not the disk (its crashes lose no OS cache): skip fsyncs, which
        # would otherwise dominate its run time and make shrinking a failure take many minutes.
        self._old_fsyncs = checkpoint_files.fsync_file, checkpoint_files.fsync_dir
        checkpoint_files.fsync_file = checkpoint_files.fsync_dir = lambda path: None
        self.dir = tempfile.mkdtemp(prefix="stateful-")
        self.path = os.path.join(self.dir, "db")
        self.client = self._open()
        self.col = self.client.create_collection(
            "model", embedding_function=None, configuration={"hnsw": {"sync_threshold": 2, "batch_size": 2}}
        )
        self.model = Model()

    def _open(self):
        return retrieval.PersistentClient(self.path, settings=retrieval.Settings(sqlite_synchronous="OFF"))

    def teardown(self) -> None:
        try:
            if not self.client._closed:
                self.client.close()
        finally:
            graph_upkeep.CHECKPOINT_BACKLOG_FRACTION = self._old_fraction
            checkpoint_files.fsync_file, checkpoint_files.fsync_dir = self._old_fsyncs
            retrieval.store.shared_engines.forget_all()
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ writes

    @rule(data=st.data())
    def add(self, data):
        ids = data.draw(ids_st)
        kw = dict(ids=ids, embeddings=[data.draw(vector_st) for _ in ids])
        kw["metadatas"] = column(data.draw, len(ids), st.one_of(st.none(), metadata_st(False)))
        kw["documents"] = column(data.draw, len(ids), doc_st)
        kw["uris"] = column(data.draw, len(ids), uri_st)
        self.col.add(**kw)
        self.model.add(**kw)

    @rule(data=st.data())
    def update(self, data):
        ids = data.draw(ids_st)
        kw = dict(ids=ids, metadatas=column(data.draw, len(ids), st.one_of(st.none(), metadata_st(True))))
        if data.draw(st.booleans()):  # documents and uris need embeddings (no embedding function)
            kw["embeddings"] = [data.draw(vector_st) for _ in ids]
            kw["documents"] = column(data.draw, len(ids), doc_st)
            kw["uris"] = column(data.draw, len(ids), uri_st)
        if all(v is None for k, v in kw.items() if k != "ids"):
            kw["metadatas"] = [{"color": "red"} for _ in ids]
        self.col.update(**kw)
        self.model.update(**kw)

    @rule(data=st.data())
    def upsert(self, data):
        ids = data.draw(ids_st)
        kw = dict(ids=ids, embeddings=[data.draw(vector_st) for _ in ids])
        kw["metadatas"] = column(data.draw, len(ids), st.one_of(st.none(), metadata_st(True)))
        kw["documents"] = column(data.draw, len(ids), doc_st)
        kw["uris"] = column(data.draw, len(ids), uri_st)
        self.col.upsert(**kw)
        self.model.upsert(**kw)

    @rule(ids=st.lists(st.sampled_from(POOL), min_size=1, max_size=5, unique=True))
    def delete_ids(self, ids):
        self.col.delete(ids=ids)
        self.model.delete(ids)

    @rule(where=wheres)
    def delete_where(self, where):
        tree = parse_where(where)
        doomed = [i for i, r in self.model.records.items() if matches(tree, None, id=i, metadata=r.metadata, document=r.document)]
        self.col.delete(where=where)
        self.model.delete(doomed)

    # ------------------------------------------------------------------ lifecycle

    @rule()
    def reopen(self):
        self.client.close()
        self.client = self._open()
        self.col = self.client.get_collection("model")
        check_index_matches_sql(self.client, self.col)

    @rule()
    def crash_and_reopen(self):
        """No closing checkpoint: the oplog must carry everything since the last one."""
        engine = self.client._backend.engine
        engine.stop_background()  # a dead process does no background work either
        engine._states.clear()
        engine.db.close()
        engine.closed = True
        self.client._closed = True
        retrieval.store.shared_engines.forget_all()
        self.client = self._open()
        self.col = self.client.get_collection("model")
        check_index_matches_sql(self.client, self.col)

    # ------------------------------------------------------------------ reads

    @rule(where=st.one_of(st.none(), wheres), where_document=st.one_of(st.none(), where_documents))
    def filtered_get(self, where, where_document):
        if where is None and where_document is None:
            return
        tree, doc_tree = parse_where(where), parse_where_document(where_document)
        want = [i for i, r in self.model.records.items()
                if matches(tree, doc_tree, id=i, metadata=r.metadata, document=r.document)]
        assert self.col.get(where=where, where_document=where_document)["ids"] == want

    @rule(q=vector_st, k=st.integers(1, 12), where=st.one_of(st.none(), wheres), ann=st.booleans())
    def query(self, q, k, where, ann):
        from retrieval.store import reads

        tree = parse_where(where)
        ids = [i for i, r in self.model.records.items() if matches(tree, None, id=i, metadata=r.metadata, document=r.document)]
        old = reads.EXACT_MAX_ROWS
        reads.EXACT_MAX_ROWS = 0 if ann else old  # ann: the HNSW path whenever k < candidates
        try:
            res = self.col.query(query_embeddings=[q], n_results=k, where=where, include=["distances", "embeddings"])
        finally:
            reads.EXACT_MAX_ROWS = old
        got_ids, got_d = res["ids"][0], np.asarray(res["distances"][0])
        if not ids:
            assert got_ids == []
            return
        X = np.asarray([self.model.records[i].embedding for i in ids], np.float32)
        D = l2_squared(np.asarray([q], np.float32), X)[0]
        dist_of = dict(zip(ids, D))
        kk = min(k, len(ids))
        assert len(got_ids) == len(set(got_ids)) == kk
        # Ties make the order ambiguous: compare the distance profile, and each id's own distance.
        np.testing.assert_allclose(got_d, np.sort(D)[:kk], atol=1e-5)
        np.testing.assert_allclose(got_d, [dist_of[i] for i in got_ids], atol=1e-5)

    # ------------------------------------------------------------------ the invariant

    @invariant()
    def store_equals_model(self):
        got = self.col.get(include=["embeddings", "metadatas", "documents", "uris"])
        assert got["ids"] == list(self.model.records)
        assert self.col.count() == len(self.model.records)
        for i, id_ in enumerate(got["ids"]):
            want = self.model.records[id_]
            have = Rec(tuple(np.asarray(got["embeddings"][i], np.float32).tolist()), got["metadatas"][i],
                       got["documents"][i], got["uris"][i])
            assert have == want, (id_, have, want)


def _profile() -> settings:
    return settings.get_profile("stateful-" + os.environ.get("RETRIEVAL_HYPOTHESIS_PROFILE", "ci"))


def test_store_matches_model():
    run_state_machine_as_test(StoreMachine, settings=_profile())


@pytest.mark.slow
def test_store_matches_model_slow():
    run_state_machine_as_test(StoreMachine, settings=settings.get_profile("stateful-slow"))
