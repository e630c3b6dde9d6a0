"""The SQLite sparse index against a brute-force oracle, and BM25 on the bundled hybrid corpus."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedders.bm25 import BM25EmbeddingFunction
from embedders.sparse import SparseVector
from retrieval.store.sparse_index import (
    SPARSE_INDEX_DDL,
    SPARSE_INDEX_DELETE_COLLECTION,
    bm25_idf,
    delete_sparse,
    insert_sparse,
    sparse_doc_count,
    sparse_knn,
    sparse_rows,
)

CORPUS = Path(__file__).parent / "data" / "hybrid_corpus.json"


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:")
    c.executescript(SPARSE_INDEX_DDL)
    c.executescript(SPARSE_INDEX_DDL)  # idempotent
    return c


def brute_force(docs: dict[int, SparseVector], query: SparseVector, limit: int, candidates, idf: bool):
    n = len(docs)
    df: dict[int, int] = {}
    for vec in docs.values():
        for t, w in zip(vec.indices, vec.values):
            if w != 0:
                df[t] = df.get(t, 0) + 1
    q = {t: w for t, w in zip(query.indices, query.values) if w != 0}
    if idf:
        q = {t: w * bm25_idf(n, df.get(t, 0)) for t, w in q.items()}
    scored = []
    for label, vec in docs.items():
        if candidates is not None and label not in candidates:
            continue
        d = dict(zip(vec.indices, vec.values))
        shared = [t for t in q if d.get(t, 0) != 0]
        if shared:
            total = 0.0
            for t in shared:  # same order as the index accumulates, so ties stay exact
                total += q[t] * d[t]
            scored.append((-total, label))
    scored.sort()
    return [(label, dist) for dist, label in scored[:limit]]


def sparse_vectors(max_term: int = 12) -> st.SearchStrategy[SparseVector]:
    return st.dictionaries(
        st.integers(0, max_term), st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, -0.5]), max_size=6
    ).map(lambda d: SparseVector(sorted(d), [d[k] for k in sorted(d)]))


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(sparse_vectors(), min_size=0, max_size=15),
    query=sparse_vectors(),
    limit=st.integers(1, 8),
    idf=st.booleans(),
    restrict=st.booleans(),
)
def test_sparse_knn_matches_brute_force(docs, query, limit, idf, restrict):
    conn = sqlite3.connect(":memory:")
    conn.executescript(SPARSE_INDEX_DDL)
    indexed = {label * 3 + 1: vec for label, vec in enumerate(docs)}
    for label, vec in indexed.items():
        insert_sparse(conn, "col", "bm25", label, vec)
    insert_sparse(conn, "other", "bm25", 1, SparseVector(list(range(13)), [9.0] * 13))  # other collection
    insert_sparse(conn, "col", "splade", 1, SparseVector(list(range(13)), [9.0] * 13))  # other key
    candidates = set(list(indexed)[::2]) if restrict else None
    got = sparse_knn(conn, "col", "bm25", query, limit, candidates, idf=idf)
    want = brute_force(indexed, query, limit, candidates, idf)
    assert [label for label, _ in got] == [label for label, _ in want]
    assert [d for _, d in got] == pytest.approx([d for _, d in want], abs=1e-9)
    assert all(a[1] <= b[1] for a, b in zip(got, got[1:]))


def test_insert_replace_delete(conn):
    insert_sparse(conn, "c", "k", 1, SparseVector([1, 2], [1.0, 1.0]))
    insert_sparse(conn, "c", "k", 2, SparseVector([2], [2.0]))
    insert_sparse(conn, "c", "k", 3, SparseVector([], []))  # counted, though it has no terms
    assert sparse_doc_count(conn, "c", "k") == 3
    assert sparse_knn(conn, "c", "k", SparseVector([1, 2], [1.0, 1.0]), 10) == [(1, -2.0), (2, -2.0)]
    insert_sparse(conn, "c", "k", 1, SparseVector([3], [1.0]))  # replaces label 1's terms
    assert sparse_knn(conn, "c", "k", SparseVector([1, 2], [1.0, 1.0]), 10) == [(2, -2.0)]
    insert_sparse(conn, "c", "k2", 2, SparseVector([2], [5.0]))  # a second key of record 2
    delete_sparse(conn, [2, 3])  # by label: every key's vector goes, and the doc count follows
    assert sparse_doc_count(conn, "c", "k") == 1 and sparse_doc_count(conn, "c", "k2") == 0
    assert sparse_knn(conn, "c", "k", SparseVector([2, 3], [1.0, 1.0]), 10) == [(1, -1.0)]
    conn.execute(SPARSE_INDEX_DELETE_COLLECTION, ("c",))
    assert sparse_doc_count(conn, "c", "k") == 0
    assert conn.execute("SELECT COUNT(*) FROM sparse_index").fetchone()[0] == 0


def test_edge_cases(conn):
    insert_sparse(conn, "c", "k", 1, SparseVector([1], [1.0]))
    assert sparse_knn(conn, "c", "k", SparseVector([], []), 5) == []
    assert sparse_knn(conn, "c", "k", SparseVector([1], [1.0]), 0) == []
    assert sparse_knn(conn, "c", "k", SparseVector([7], [1.0]), 5) == []
    assert sparse_knn(conn, "c", "k", SparseVector([1], [1.0]), 5, candidate_labels=set()) == []
    assert sparse_rows("c", "k", 4, SparseVector([1, 2], [0.0, 3.0])) == [("c", "k", -1, 4, 1.0), ("c", "k", 2, 4, 3.0)]
    many_terms = SparseVector(list(range(2000)), [1.0] * 2000)  # more terms than one statement binds
    assert sparse_knn(conn, "c", "k", many_terms, 5) == [(1, -1.0)]


def test_idf_formula(conn):
    assert bm25_idf(10, 1) == pytest.approx(math.log(1 + 9.5 / 1.5))
    assert bm25_idf(10, 10) > 0  # never negative, unlike the classic Robertson IDF
    for label in range(4):
        insert_sparse(conn, "c", "k", label, SparseVector([0, label + 1], [1.0, 1.0]))
    got = dict(sparse_knn(conn, "c", "k", SparseVector([0, 1], [1.0, 1.0]), 4, idf=True))
    assert got[0] == pytest.approx(-(bm25_idf(4, 4) + bm25_idf(4, 1)))
    assert got[3] == pytest.approx(-bm25_idf(4, 4))


def test_bm25_finds_the_exact_rare_terms_in_the_hybrid_corpus(conn):
    corpus = json.loads(CORPUS.read_text())
    docs, queries = corpus["documents"], corpus["queries"]
    assert 60 <= len(docs) <= 150 and 20 <= len(queries) <= 40
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids)
    assert all(q["kind"] in ("lexical", "semantic", "mixed") and set(q["relevant"]) <= set(ids) for q in queries)
    ef = BM25EmbeddingFunction()
    for label, vec in enumerate(ef([d["text"] for d in docs])):
        insert_sparse(conn, "c", "bm25", label, vec)
    reciprocal_ranks = []
    for query in queries:
        (qv,) = ef.embed_query([query["text"]])
        top = [ids[label] for label, _ in sparse_knn(conn, "c", "bm25", qv, 10, idf=True)]
        if query["kind"] == "lexical":
            assert top and top[0] in query["relevant"], (query, top[:3])
        rank = next((i for i, d in enumerate(top) if d in query["relevant"]), None)
        reciprocal_ranks.append(0.0 if rank is None else 1 / (rank + 1))
    # BM25 alone misses paraphrases: the room the dense half of a hybrid search fills.
    assert 0.5 < float(np.mean(reciprocal_ranks)) < 0.95
