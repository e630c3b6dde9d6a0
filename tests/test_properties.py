"""Property tests: get/query with filters equal a brute-force oracle (equality, not subset)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import retrieval
from retrieval.query.evaluate import matches
from retrieval.query.filters import parse_where, parse_where_document

KEYS = ["a", "b", "c"]
scalars = st.one_of(
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["x", "y", "z", "%", "_", "x_y"]),
    st.booleans(),
)
metadata = st.one_of(st.none(), st.dictionaries(st.sampled_from(KEYS), scalars, min_size=1, max_size=3))
documents = st.one_of(st.none(), st.text(alphabet="abxyz %_", min_size=0, max_size=8))


@st.composite
def comparisons(draw):
    key = draw(st.sampled_from(KEYS))
    op = draw(st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        value = draw(st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False, width=32)))
    elif op in ("$in", "$nin"):
        kind = draw(st.sampled_from(["int", "str", "bool"]))
        base = {"int": st.integers(-5, 5), "str": st.sampled_from(["x", "y", "%"]), "bool": st.booleans()}[kind]
        value = draw(st.lists(base, min_size=1, max_size=3))
    else:
        value = draw(scalars)
    return {key: {op: value}}


wheres = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=2, max_size=3)),
    ),
    max_leaves=5,
)
where_documents = st.one_of(
    st.builds(lambda s: {"$contains": s}, st.text(alphabet="abxyz%_", min_size=1, max_size=2)),
    st.builds(lambda s: {"$not_contains": s}, st.text(alphabet="abxyz%_", min_size=1, max_size=2)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(st.tuples(metadata, documents), min_size=1, max_size=40),
    where=st.one_of(st.none(), wheres),
    where_document=st.one_of(st.none(), where_documents),
    n_results=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_get_and_query_equal_oracle(records, where, where_document, n_results, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(len(records), 4)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(records))]
    col = retrieval.EphemeralClient().create_collection("prop", embedding_function=None)
    col.add(ids=ids, embeddings=X, metadatas=[m for m, _ in records], documents=[d for _, d in records])
    tree, doc_tree = parse_where(where), parse_where_document(where_document)
    expected = [
        i for i, (m, d) in enumerate(records) if matches(tree, doc_tree, id=ids[i], metadata=m, document=d)
    ]
    got = col.get(where=where, where_document=where_document)
    assert got["ids"] == [ids[i] for i in expected]
    q = rng.normal(size=4).astype(np.float32)
    res = col.query(query_embeddings=[q], n_results=n_results, where=where, where_document=where_document)
    dist = ((X[expected] - q) ** 2).sum(axis=1) if expected else np.zeros(0)
    k = min(n_results, len(expected))
    assert len(res["ids"][0]) == k
    np.testing.assert_allclose(res["distances"][0], np.sort(dist)[:k], rtol=1e-4, atol=1e-5)
    assert set(res["ids"][0]) <= {ids[i] for i in expected}
