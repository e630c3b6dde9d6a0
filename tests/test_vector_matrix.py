"""The in-memory matrix behind exact search (retrieval.store.vectors.VectorMatrix): upserts and
removals in any mix keep exactly the live vectors, contiguous, each findable by label."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.store.vectors import VectorMatrix

DIM = 4

# One step: ("upsert" | "remove", labels); labels in a small range so steps collide.
_steps = st.lists(
    st.tuples(st.sampled_from(["upsert", "remove"]), st.lists(st.integers(0, 40), max_size=25)),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(_steps)
def test_upserts_and_removals_keep_exactly_the_live_vectors(steps):
    matrix, model = VectorMatrix(DIM, "l2"), {}
    rng = np.random.default_rng(0)
    for op, labels in steps:
        labels = np.asarray(labels, dtype=np.int64)
        if op == "upsert":
            labels = np.unique(labels)
            vectors = rng.standard_normal((len(labels), DIM)).astype(np.float32)
            matrix.upsert(labels, vectors)
            model.update(zip(labels.tolist(), vectors))
        else:  # duplicates and absent labels included
            matrix.remove(labels)
            for label in labels.tolist():
                model.pop(label, None)
        assert matrix.count == len(model)
        assert sorted(matrix.labels.tolist()) == sorted(model)
        for label, vector in model.items():
            assert matrix.contains(label)
            np.testing.assert_array_equal(matrix.raw_rows(matrix.rows_for(np.asarray([label])))[0], vector)
        assert not matrix.has(np.asarray([k for k in range(41) if k not in model], dtype=np.int64)).any()
    if model:  # the contiguous rows answer exact search: each live vector finds itself
        labels = np.asarray(sorted(model), dtype=np.int64)
        found, _ = matrix.search(np.stack([model[k] for k in labels.tolist()]), 1)
        assert (found[:, 0] == labels).all()


def test_removing_a_chunk_from_the_front_of_a_large_matrix_moves_the_tail_into_it():
    matrix = VectorMatrix(DIM, "l2")
    vectors = np.arange(5000 * DIM, dtype=np.float32).reshape(5000, DIM)
    matrix.upsert(np.arange(5000), vectors)
    matrix.remove(np.arange(0, 4000, 2))  # every other one of the first 4,000
    assert matrix.count == 3000
    live = np.concatenate([np.arange(1, 4000, 2), np.arange(4000, 5000)])
    assert sorted(matrix.labels.tolist()) == live.tolist()
    np.testing.assert_array_equal(matrix.raw_rows(matrix.rows_for(live)), vectors[live])


def test_distances_agree_with_a_float64_reference_for_one_few_and_many_queries():
    """One query takes its own path (numpy's loop, not BLAS: see ``vectors._one_query_dots``), a few
    another, many a third; on contiguous rows and on strided ones (a view into the vector file)."""
    from retrieval.store.vectors import distances, prepare

    rng = np.random.default_rng(3)
    rows = rng.standard_normal((300, 72)).astype(np.float32)
    for matrix in (rows[:, :64].copy(), rows[:, :64]):  # contiguous, then strided
        for count in (1, 3, 9):
            for space in ("l2", "ip", "cosine"):
                queries = prepare(rng.standard_normal((count, 64)).astype(np.float32), space)
                m = prepare(matrix, space) if space == "cosine" else matrix
                q64, m64 = queries.astype(np.float64), np.asarray(m, dtype=np.float64)
                if space == "l2":
                    expected = ((q64[:, None, :] - m64[None, :, :]) ** 2).sum(axis=2)
                else:
                    expected = 1.0 - q64 @ m64.T
                got = distances(queries, m, space)
                assert got.shape == (count, len(matrix))
                np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
