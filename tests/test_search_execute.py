"""Search evaluation rules, each against hand-computed scores on five 2-d records.

Squared L2 distances: from Q = [0, 0]: a 0, b 1, c 4, d 9, e 16; from Q2 = [3, 0]: a 9, b 4,
c 13, d 0, e 25. Metadata: cat a,b = "x", c,d = "y", e none; year a 2020, b 2021, c 2022, e 2019.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedders.sparse import SparseVector
from retrieval.errors import InvalidArgumentError
from retrieval.search.execute import execute, execute_many
from retrieval.search.keys import K
from retrieval.search.plan import GroupBy, MaxK, MinK, Search
from retrieval.search.rank import Knn, Val
from retrieval.search.rrf import Rrf
from search_fake import FakeEngine, five_records

Q = [0.0, 0.0]
Q2 = [3.0, 0.0]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(five_records(), texts={"origin": Q})


def run(engine: FakeEngine, search: Search) -> list[tuple[str, float]]:
    result = execute(search.select(K.SCORE), engine)
    assert result.scores is not None
    return list(zip(result.ids, result.scores))


# ---------------------------------------------------------------- no rank
def test_no_rank_returns_insertion_order_without_scores(engine):
    result = execute(Search().select(K.SCORE, K.DOCUMENT), engine)
    assert result.ids == ["a", "b", "c", "d", "e"]
    assert result.scores is None
    assert result.documents == ["alpha", "beta", "gamma", "delta", None]


def test_no_rank_filter_limit_offset_reach_scan(engine):
    search = Search().where(K("year") >= 2020).limit(2, offset=1)
    result = execute(search, engine)
    assert result.ids == ["b", "c"]
    # The engine gets the very tree the Search holds: parsed once, never re-parsed from a dict.
    scans = [where for call, where in engine.calls if call == "scan"]
    assert len(scans) == 1 and scans[0] is search.where_clause


# ---------------------------------------------------------------- knn rules
def test_single_knn_scores_are_distances_within_its_limit(engine):
    assert run(engine, Search(rank=Knn(query=Q, limit=3))) == [("a", 0.0), ("b", 1.0), ("c", 4.0)]


def test_default_limit_is_16(engine):
    assert Knn(query=Q).limit == 16
    assert [i for i, _ in run(engine, Search(rank=Knn(query=Q)))] == ["a", "b", "c", "d", "e"]


def test_text_query_is_passed_to_engine(engine):
    assert run(engine, Search(rank=Knn(query="origin", limit=2))) == [("a", 0.0), ("b", 1.0)]


def test_knns_without_default_intersect(engine):
    # Q top 3: a b c; Q2 top 3: d b a -> only a, b are in both.
    rank = Knn(query=Q, limit=3) + Knn(query=Q2, limit=3)
    assert run(engine, Search(rank=rank)) == [("b", 5.0), ("a", 9.0)]


def test_missing_document_gets_the_default(engine):
    # Candidates must be in Q's top 3 (no default): a b c; c is not in Q2's top 3 -> 100.
    rank = Knn(query=Q, limit=3) + Knn(query=Q2, limit=3, default=100)
    assert run(engine, Search(rank=rank)) == [("b", 5.0), ("a", 9.0), ("c", 104.0)]


def test_with_all_defaults_the_union_is_scored(engine):
    rank = Knn(query=Q, limit=3, default=50) + Knn(query=Q2, limit=3, default=100)
    assert run(engine, Search(rank=rank)) == [("b", 5.0), ("a", 9.0), ("d", 50.0), ("c", 104.0)]


def test_return_rank_gives_positions(engine):
    assert run(engine, Search(rank=Knn(query=Q, limit=3, return_rank=True))) == [
        ("a", 0.0), ("b", 1.0), ("c", 2.0),
    ]
    # Q2 top 2 positions: d 0, b 1 (others default 7), plus distances from Q.
    rank = Knn(query=Q2, limit=2, return_rank=True, default=7) + Knn(query=Q, limit=5)
    assert run(engine, Search(rank=rank)) == [("b", 2.0), ("a", 7.0), ("d", 9.0), ("c", 11.0), ("e", 23.0)]


def test_where_restricts_every_knn(engine):
    search = Search(where=K("cat") == "y", rank=Knn(query=Q, limit=5))
    assert run(engine, search) == [("c", 4.0), ("d", 9.0)]
    assert all(c[0] != "scan" for c in engine.calls)


def test_each_knn_node_runs_once(engine):
    knn = Knn(query=Q, limit=3)
    run(engine, Search(rank=knn * 2 + knn))
    assert sum(1 for c in engine.calls if c[0] == "knn") == 1


def test_sparse_key_knn(engine):
    for i, vec in {"a": ([1, 5], [1.0, 2.0]), "c": ([5], [3.0]), "d": ([9], [1.0])}.items():
        engine.records[i]["sparse"] = {"bm25": SparseVector(*vec)}
    query = SparseVector([5, 9], [1.0, 0.5])
    assert run(engine, Search(rank=Knn(query=query, key="bm25"))) == [("c", -3.0), ("a", -2.0), ("d", -0.5)]


def test_engine_errors_propagate(engine):
    with pytest.raises(InvalidArgumentError, match="dimension mismatch"):
        execute(Search(rank=Knn(query=[1.0, 2.0, 3.0])), engine)


# ---------------------------------------------------------------- RRF
def test_rrf_formula(engine):
    # Positions: Q a0 b1 c2; Q2 d0 b1 a2; missing -> 10.
    rank = Rrf([
        Knn(query=Q, limit=3, return_rank=True, default=10),
        Knn(query=Q2, limit=3, return_rank=True, default=10),
    ])
    expected = {
        "a": -(1 / 60 + 1 / 62), "b": -(1 / 61 + 1 / 61), "c": -(1 / 62 + 1 / 70), "d": -(1 / 70 + 1 / 60),
    }
    got = run(engine, Search(rank=rank))
    assert [i for i, _ in got] == ["a", "b", "d", "c"]
    for i, score in got:
        assert score == pytest.approx(expected[i], rel=1e-12)


def test_rrf_weights_and_normalize(engine):
    knns = [Knn(query=Q, limit=3, return_rank=True, default=10), Knn(query=Q2, limit=3, return_rank=True, default=10)]
    raw = dict(run(engine, Search(rank=Rrf(knns, k=1, weights=[2, 1]))))
    norm = dict(run(engine, Search(rank=Rrf(knns, k=1, weights=[2, 1], normalize=True))))
    assert raw["b"] == pytest.approx(-(2 / 2 + 1 / 2))
    assert raw["d"] == pytest.approx(-(2 / 11 + 1 / 1))
    for i in raw:
        assert norm[i] == pytest.approx(raw[i] / 3)


# ---------------------------------------------------------------- arithmetic
def test_arithmetic_per_document(engine):
    knn = Knn(query=Q, limit=5)
    assert run(engine, Search(rank=(knn - 5).abs())) == [("c", 1.0), ("b", 4.0), ("d", 4.0), ("a", 5.0), ("e", 11.0)]
    assert run(engine, Search(rank=abs(knn * 2 - 10))) == [("c", 2.0), ("b", 8.0), ("d", 8.0), ("a", 10.0), ("e", 22.0)]
    assert run(engine, Search(rank=knn.max(2).min(10))) == [("a", 2.0), ("b", 2.0), ("c", 4.0), ("d", 9.0), ("e", 10.0)]
    assert run(engine, Search(rank=-knn)) == [("e", -16.0), ("d", -9.0), ("c", -4.0), ("b", -1.0), ("a", -0.0)]
    assert run(engine, Search(rank=1 + knn / 2)) == [("a", 1.0), ("b", 1.5), ("c", 3.0), ("d", 5.5), ("e", 9.0)]
    assert run(engine, Search(rank=10 - knn)) == [("e", -6.0), ("d", 1.0), ("c", 6.0), ("b", 9.0), ("a", 10.0)]


def test_exp_and_log(engine):
    knn = Knn(query=Q, limit=5)
    got = run(engine, Search(rank=(knn + 1).log()))
    assert [i for i, _ in got] == ["a", "b", "c", "d", "e"]
    assert [s for _, s in got] == pytest.approx([math.log(v + 1) for v in (0, 1, 4, 9, 16)])
    assert [s for _, s in run(engine, Search(rank=(Val(0) - knn).exp()))] == pytest.approx(
        [math.exp(-v) for v in (16, 9, 4, 1, 0)]
    )


def test_ieee_division_and_nan_sort_last(engine):
    knn = Knn(query=Q, limit=5)
    got = run(engine, Search(rank=Val(1) / knn))
    assert [i for i, _ in got] == ["e", "d", "c", "b", "a"] and got[-1][1] == math.inf
    got = run(engine, Search(rank=(knn - 2).log()))  # a, b: log of a negative -> NaN, last, by id
    assert [i for i, _ in got] == ["c", "d", "e", "a", "b"]
    assert math.isnan(got[-1][1]) and math.isnan(got[-2][1])


# ---------------------------------------------------------------- group_by
@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        (MinK(keys=K.SCORE, k=1), ["a", "c", "e"]),
        (MaxK(keys=K.SCORE, k=1), ["b", "d", "e"]),
        (MinK(keys=K.SCORE, k=2), ["a", "b", "c", "d", "e"]),
        (MinK(keys=[K("year"), K.SCORE], k=1), ["a", "c", "e"]),  # d has no year: sorts last
        (MaxK(keys=[K("year"), K.SCORE], k=1), ["b", "c", "e"]),
    ],
)
def test_group_by_keeps_k_per_group(engine, aggregate, expected):
    search = Search(rank=Knn(query=Q, limit=5), group_by=GroupBy(K("cat"), aggregate))
    assert [i for i, _ in run(engine, search)] == expected


def test_group_by_then_resorted_by_score_then_limited(engine):
    search = Search(rank=Knn(query=Q2, limit=5), group_by=GroupBy("cat", MinK("#score", 1)))
    # groups: x {a 9, b 4} -> b; y {c 13, d 0} -> d; none {e 25} -> e
    assert run(engine, search) == [("d", 0.0), ("b", 4.0), ("e", 25.0)]
    assert run(engine, search.limit(1, offset=1)) == [("b", 4.0)]


def test_group_by_several_keys(engine):
    search = Search(rank=Knn(query=Q, limit=5), group_by=GroupBy(["cat", "year"], MinK("#score", 1)))
    assert [i for i, _ in run(engine, search)] == ["a", "b", "c", "d", "e"]


def test_group_by_needs_rank(engine):
    with pytest.raises(InvalidArgumentError, match="group_by needs a rank"):
        execute(Search(group_by=GroupBy("cat", MinK(K.SCORE, 1))), engine)


# ---------------------------------------------------------------- limit and select
def test_limit_and_offset_apply_after_ranking(engine):
    assert run(engine, Search(rank=Knn(query=Q, limit=5)).limit(2, offset=1)) == [("b", 1.0), ("c", 4.0)]
    assert run(engine, Search(rank=Knn(query=Q, limit=5), limit=10)) == run(engine, Search(rank=Knn(query=Q, limit=5)))
    assert run(engine, Search(rank=Knn(query=Q, limit=5)).limit(3, offset=10)) == []


def test_default_select_returns_ids_only(engine):
    result = execute(Search(rank=Knn(query=Q, limit=2)), engine)
    assert result.ids == ["a", "b"]
    assert (result.documents, result.embeddings, result.metadatas, result.scores, result.uris, result.data) == (
        None, None, None, None, None, None,
    )
    assert not any(c[0] == "fetch" for c in engine.calls)


def test_select_fields(engine):
    search = Search(rank=Knn(query=Q, limit=2)).select_all()
    result = execute(search, engine)
    assert result.documents == ["alpha", "beta"]
    assert result.embeddings == [[0.0, 0.0], [1.0, 0.0]]
    assert result.metadatas == [{"cat": "x", "year": 2020}, {"cat": "x", "year": 2021}]
    assert result.scores == [0.0, 1.0]
    assert result.uris == ["u/a", "u/b"]
    assert result.data is None
    assert [c for c in engine.calls if c[0] == "fetch"] == [
        ("fetch", frozenset({"document", "embedding", "metadata", "uri"}))
    ]


def test_select_metadata_keys_by_name(engine):
    result = execute(Search(rank=Knn(query=Q, limit=5)).select(K("year"), "cat"), engine)
    assert result.metadatas == [
        {"year": 2020, "cat": "x"},
        {"year": 2021, "cat": "x"},
        {"year": 2022, "cat": "y"},
        {"cat": "y"},
        {"year": 2019},
    ]
    assert result.documents is None


def test_embeddings_come_back_as_lists(engine):
    engine.records["a"]["embedding"] = np.array([0.0, 0.0], dtype=np.float32)
    result = execute(Search(rank=Knn(query=Q, limit=1)).select(K.EMBEDDING), engine)
    assert result.embeddings == [[0.0, 0.0]] and isinstance(result.embeddings[0], list)


def test_rank_without_knn_is_an_error(engine):
    with pytest.raises(InvalidArgumentError, match="at least one Knn"):
        execute(Search(rank=Val(1) + Val(2)), engine)


# ---------------------------------------------------------------- batches and rows
def test_execute_many_is_column_major_with_rows(engine):
    result = execute_many(
        [
            Search(rank=Knn(query=Q, limit=2)).select(K.DOCUMENT, K.SCORE),
            Search().limit(1).select(K.METADATA),
        ],
        engine,
    )
    assert result["ids"] == [["a", "b"], ["a"]]
    assert result["documents"] == [["alpha", "beta"], None]
    assert result["scores"] == [[0.0, 1.0], None]
    assert result["metadatas"] == [None, [{"cat": "x", "year": 2020}]]
    assert result["select"] == [["#document", "#score"], ["#metadata"]]
    assert result.rows() == [
        [{"id": "a", "document": "alpha", "score": 0.0}, {"id": "b", "document": "beta", "score": 1.0}],
        [{"id": "a", "metadata": {"cat": "x", "year": 2020}}],
    ]


def test_rows_skip_none_values(engine):
    result = execute_many(Search().select(K.DOCUMENT, K.URI).where(K.ID.is_in(["c", "e"])), engine)
    assert result.rows() == [[{"id": "c", "document": "gamma"}, {"id": "e", "uri": "u/e"}]]


def test_execute_many_rejects_non_searches(engine):
    with pytest.raises(InvalidArgumentError, match=r"searches\[1\] must be a Search"):
        execute_many([Search(), {"rank": None}], engine)  # type: ignore[list-item]
