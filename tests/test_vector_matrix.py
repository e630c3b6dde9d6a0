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
