"""Property: a Search built with the builder and the same Search sent through its JSON wire
form (``Search.from_dict(json.loads(json.dumps(s.to_dict())))``) give identical results."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedders.sparse import SparseVector
from retrieval.errors import InvalidArgumentError
from retrieval.search.execute import execute
from retrieval.search.keys import K
from retrieval.search.plan import GroupBy, MaxK, MinK, Search
from retrieval.search.rank import Knn, Val
from retrieval.search.rrf import Rrf
from search_fake import FakeEngine, five_records

SPARSE = {
    "a": SparseVector([1, 2], [1.0, 0.5]),
    "b": SparseVector([2], [2.0]),
    "c": SparseVector([1, 3], [0.25, 1.0]),
    "e": SparseVector([3], [3.0]),
}


def make_engine() -> FakeEngine:
    records = five_records()
    for i, vec in SPARSE.items():
        records[i]["sparse"] = {"sp": vec}
    return FakeEngine(records)


wheres = st.sampled_from([
    None,
    K("cat") == "x",
    K("year") >= 2020,
    (K("cat") == "y") | (K("year") < 2021),
    K.ID.not_in(["b"]),
    K.DOCUMENT.contains("a") & (K("year") != 2022),
])

dense = st.builds(
    Knn,
    query=st.sampled_from([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0], [0.5, 4.0]]),
    limit=st.integers(1, 6),
    default=st.one_of(st.none(), st.sampled_from([0, 5, 100.5])),
    return_rank=st.booleans(),
)
sparse = st.builds(
    Knn,
    query=st.sampled_from([SparseVector([1], [1.0]), SparseVector([2, 3], [1.0, 0.5])]),
    key=st.just("sp"),
    limit=st.integers(1, 4),
    default=st.one_of(st.none(), st.just(1.0)),
    return_rank=st.booleans(),
)
knns = st.one_of(dense, sparse)
values = st.builds(Val, st.one_of(st.integers(-3, 3), st.floats(-2, 2, allow_nan=False).map(lambda f: round(f, 3))))


def _combine(children: st.SearchStrategy) -> st.SearchStrategy:
    pair = st.tuples(children, children)
    return st.one_of(
        pair.map(lambda p: p[0] + p[1]),
        pair.map(lambda p: p[0] - p[1]),
        pair.map(lambda p: p[0] * p[1]),
        pair.map(lambda p: p[0] / p[1]),
        pair.map(lambda p: p[0].max(p[1])),
        pair.map(lambda p: p[0].min(p[1])),
        children.map(lambda c: -c),
        children.map(abs),
        children.map(lambda c: c.log()),
        children.map(lambda c: (c / 10).exp()),
        st.builds(
            Rrf,
            st.lists(knns, min_size=1, max_size=3),
            k=st.sampled_from([1, 60]),
            normalize=st.booleans(),
        ),
    )


ranks = st.recursive(st.one_of(knns, knns, values), _combine, max_leaves=5)
groups = st.one_of(
    st.none(),
    st.builds(
        GroupBy,
        st.sampled_from(["cat", ["cat", "year"], "year"]),
        st.one_of(
            st.builds(MinK, st.sampled_from([K.SCORE, ["year", "#score"]]), st.integers(1, 3)),
            st.builds(MaxK, st.sampled_from([K.SCORE, ["year"]]), st.integers(1, 3)),
        ),
    ),
)
selects = st.lists(st.sampled_from(["#document", "#score", "#metadata", "year", "#embedding", "#uri"]), unique=True)


def outcome(search: Search, engine: FakeEngine) -> str:
    try:
        return repr(execute(search, engine))
    except InvalidArgumentError as exc:
        return f"error: {exc}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=wheres,
    rank=st.one_of(st.none(), ranks),
    group=groups,
    limit=st.one_of(st.none(), st.tuples(st.integers(1, 6), st.integers(0, 3))),
    select=selects,
)
def test_builder_and_wire_forms_agree(where, rank, group, limit, select):
    built = Search().where(where).rank(rank).group_by(group).select(*select)
    if limit is not None:
        built = built.limit(limit[0], offset=limit[1])
    wire = json.loads(json.dumps(built.to_dict()))
    parsed = Search.from_dict(wire)
    assert parsed.to_dict() == wire
    engine = make_engine()
    assert outcome(built, engine) == outcome(parsed, engine)
