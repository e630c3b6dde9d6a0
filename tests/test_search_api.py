"""Search API objects: keys and filters, rank expressions, dict forms, and every error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from embedders.sparse import SparseVector
from retrieval.errors import InvalidArgumentError
from retrieval.query.filters import parse_where
from retrieval.search.keys import And, Comparison, K, Key, Or, Where
from retrieval.search.plan import Aggregate, GroupBy, Limit, MaxK, MinK, Search, Select
from retrieval.search.rank import Abs, Div, Exp, Knn, Log, Max, Min, Mul, Rank, Sub, Sum, Val
from retrieval.search.rrf import Rrf


# ---------------------------------------------------------------- keys and filters
def test_special_keys():
    assert Key is K
    assert [k.name for k in (K.ID, K.DOCUMENT, K.EMBEDDING, K.METADATA, K.SCORE, K.URI, K.DATA)] == [
        "#id", "#document", "#embedding", "#metadata", "#score", "#uri", "#data",
    ]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (K("status") == "active", {"status": {"$eq": "active"}}),
        (K("n") != 3, {"n": {"$ne": 3}}),
        (K("n") > 1, {"n": {"$gt": 1}}),
        (K("n") >= 1.5, {"n": {"$gte": 1.5}}),
        (K("n") < 1, {"n": {"$lt": 1}}),
        (K("n") <= 1, {"n": {"$lte": 1}}),
        (K("tag").is_in(["a", "b"]), {"tag": {"$in": ["a", "b"]}}),
        (K("tag").not_in(("a",)), {"tag": {"$nin": ["a"]}}),
        (K("tags").contains("x"), {"tags": {"$contains": "x"}}),
        (K("tags").not_contains(3), {"tags": {"$not_contains": 3}}),
        (K.DOCUMENT.contains("x"), {"#document": {"$contains": "x"}}),
        (K.DOCUMENT.not_regex("^a"), {"#document": {"$not_regex": "^a"}}),
        (K.DOCUMENT.regex("b+"), {"#document": {"$regex": "b+"}}),
        (K.ID.is_in(["1", "2"]), {"#id": {"$in": ["1", "2"]}}),
        (K("n") == np.int64(4), {"n": {"$eq": 4}}),
        (K("ok") == np.bool_(True), {"ok": {"$eq": True}}),
        (K("tag").is_in({"a"}), {"tag": {"$in": ["a"]}}),
        (K("n").is_in(np.array([1, 2])), {"n": {"$in": [1, 2]}}),
    ],
)
def test_comparisons(where, expected):
    assert where.to_dict() == expected
    assert Where.from_dict(expected) == where
    # One filter algebra: K builds exactly the node a where= dict parses into.
    assert parse_where(expected) == where and type(parse_where(expected)) is type(where)


def test_and_or_flatten():
    a, b, c = K("a") == 1, K("b") == 2, K("c") == 3
    assert (a & b & c).to_dict() == {"$and": [a.to_dict(), b.to_dict(), c.to_dict()]}
    assert ((a | b) & c).to_dict() == {"$and": [{"$or": [a.to_dict(), b.to_dict()]}, c.to_dict()]}
    assert isinstance(a | b | c, Or) and len((a | b | c).conditions) == 3
    assert isinstance((a & b), And)


def test_where_from_dict_shorthand_and_single_clause():
    assert Where.from_dict({"a": 1}) == Comparison("a", "$eq", 1)
    assert Where.from_dict({"$and": [{"a": 1}]}) == Comparison("a", "$eq", 1)
    nested = {"$or": [{"a": {"$in": [1, 2]}}, {"$and": [{"b": {"$gt": 0}}, {"#document": {"$contains": "z"}}]}]}
    assert Where.from_dict(nested).to_dict() == nested


def test_keys_compare_to_keys_by_name():
    assert (K("a") == K("a")) is True and (K("a") != K("b")) is True
    assert len({K("year"), K("year"), K.SCORE}) == 2
    assert Select({K("x"), K("x"), K.DOCUMENT}).keys == ("#document", "x")


def test_filter_has_no_truth_value():
    with pytest.raises(TypeError, match="combine filters with &"):
        1 < K("x") < 5  # noqa: B015
    with pytest.raises(TypeError):
        bool(K("a") == 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: K(""), "non-empty"),
        (lambda: K("a").is_in("abc"), "must be a list"),
        (lambda: K("a").is_in([{"x": 1}]), "must be a str, int, float or bool"),
        (lambda: K("a") == None, "must be a single str, int, float or bool; got None"),  # noqa: E711
        (lambda: K("a").regex("x"), r"\$regex matches the document only"),
        (lambda: K.DOCUMENT.regex(3), "must be a non-empty string"),
        (lambda: K.DOCUMENT.regex("(unclosed"), "invalid or unsupported"),
        (lambda: K.DOCUMENT == "x", r"'\$eq' is not supported for key '#document'"),
        (lambda: K.ID.contains("x"), r"'\$contains' is not supported for key '#id'"),
        (lambda: K.EMBEDDING == 1, "'#embedding' is not supported; the special keys are '#id' and '#document'"),
        (lambda: K.SCORE > 0.5, "'#score' is not supported"),
        (lambda: K.DOCUMENT.contains(3), "must be a non-empty string"),
        # The cases issue 8 found building and failing only inside search():
        (lambda: K("x").is_in([]), "empty list; give at least one value"),
        (lambda: K("x") == float("nan"), "NaN"),
        (lambda: K("x") == 2**70, "outside the 64-bit integer range"),
        (lambda: K("x") > "a", r"must be an int or float; got str 'a' \(\$gt"),
        (lambda: K("x").is_in([1, "a"]), r"mixes types \(number, str\)"),
        (lambda: K.ID == 3, "must be a string id"),
        (lambda: K.DOCUMENT.contains(""), "must be a non-empty string; got ''"),
        (lambda: Where.from_dict({"a": 1, "b": 2}), "has 2 entries but must have exactly one"),
        (lambda: Where.from_dict({}), "cannot be empty; pass None"),
        (lambda: Where.from_dict({"a": {"$eq": 1, "$ne": 2}}), "has 2 entries but must have exactly one"),
        (lambda: Where.from_dict({"a": {"$like": 1}}), r"operator '\$like' is not supported for key 'a'"),
        (lambda: Where.from_dict({"$and": []}), r"'\$and' needs at least two filters; got 0"),
        (lambda: Where.from_dict({"$not": [{"a": 1}]}), r"'\$not' is not supported"),
        (lambda: Where.from_dict({"$or": [{"a": 1}, 3]}), "where must be a dict"),
        (lambda: Where.from_dict([1]), "must be a dict"),
    ],
)
def test_filter_errors(make, message):
    with pytest.raises(InvalidArgumentError, match=message):
        make()


# ---------------------------------------------------------------- rank expressions
def test_numbers_auto_wrap_and_flatten():
    knn = Knn(query=[1.0, 2.0])
    assert knn * 0.5 == Mul((knn, Val(0.5)))
    assert 2 + knn + 3 == Sum((Val(2), knn, Val(3)))
    assert knn - 1 == Sub(knn, Val(1)) and 1 - knn == Sub(Val(1), knn)
    assert knn / 2 == Div(knn, Val(2)) and 2 / knn == Div(Val(2), knn)
    assert -knn == Mul((Val(-1), knn))
    assert abs(knn) == Abs(knn) == knn.abs()
    assert knn.exp() == Exp(knn) and knn.log() == Log(knn)
    assert knn.max(1).max(2) == Max((knn, Val(1), Val(2)))
    assert knn.min(Val(0)) == Min((knn, Val(0)))
    with pytest.raises(TypeError):
        knn + "x"  # type: ignore[operator]


KNN_DICT = {"$knn": {"query": [0.5, 1.5], "key": "#embedding", "limit": 16}}
CANONICAL = [
    KNN_DICT,
    {"$knn": {"query": "hello", "key": "bm25", "limit": 4, "default": 10.0, "return_rank": True}},
    {"$knn": {"query": {"#type": "sparse_vector", "indices": [1, 9], "values": [0.5, 2.0]}, "key": "sp", "limit": 3}},
    {"$val": 1.5},
    {"$val": -2},
    {"$sum": [KNN_DICT, {"$val": 1}, {"$val": 2}]},
    {"$mul": [KNN_DICT, {"$val": 0.5}]},
    {"$max": [KNN_DICT, {"$val": 0}]},
    {"$min": [KNN_DICT, {"$val": 0}]},
    {"$sub": {"left": KNN_DICT, "right": {"$val": 1}}},
    {"$div": {"left": {"$val": 1}, "right": KNN_DICT}},
    {"$abs": KNN_DICT},
    {"$exp": {"$log": KNN_DICT}},
]


@pytest.mark.parametrize("data", CANONICAL)
def test_rank_dict_round_trips_exactly(data):
    rank = Rank.from_dict(data)
    assert rank.to_dict() == data
    assert Rank.from_dict(json.loads(json.dumps(rank.to_dict()))) == rank


def test_knn_dict_defaults_and_shapes():
    knn = Rank.from_dict({"$knn": {"query": [1, 2]}})
    assert knn == Knn(query=[1.0, 2.0], key="#embedding", limit=16, default=None, return_rank=False)
    assert Knn(query=np.array([1, 2], dtype=np.float32), key=K.EMBEDDING).to_dict() == {
        "$knn": {"query": [1.0, 2.0], "key": "#embedding", "limit": 16}
    }
    assert Knn(query=[[0.25, 0.5]]).query == [0.25, 0.5]  # chromadb's single-embedding form
    assert Knn(query=np.array([[0.25, 0.5]])).to_dict()["$knn"]["query"] == [0.25, 0.5]
    sparse = Knn(query={"indices": [3], "values": [1.0]}, key="sp")  # untagged sparse form accepted
    assert sparse.query == SparseVector([3], [1.0])


def test_image_queries_convert_once_and_serialise_compactly():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    knn = Knn(query=grey)
    assert knn.query.shape == (3, 4, 3) and knn.query.dtype == np.uint8
    wire = knn.to_dict()["$knn"]["query"]
    assert wire["#type"] == "image" and wire["shape"] == [3, 4, 3] and wire["dtype"] == "uint8"
    back = Rank.from_dict(json.loads(json.dumps(knn.to_dict())))
    assert back == knn and np.array_equal(back.query, knn.query)
    pil = Knn(query=Image.fromarray(np.full((2, 2, 3), 200, np.uint8)))
    assert pil.query.shape == (2, 2, 3) and int(pil.query[0, 0, 0]) == 200


def test_rrf_serialises_to_arithmetic():
    a = Knn(query=[1.0], return_rank=True)
    b = Knn(query="text", key="bm25", return_rank=True)
    rrf = Rrf([a, b], k=10, weights=[3, 1], normalize=True)
    assert rrf.weights_used == (0.75, 0.25)
    expected = -(0.75 / (10 + a) + 0.25 / (10 + b))
    assert rrf.to_dict() == expected.to_dict()
    assert rrf.to_dict()["$mul"][0] == {"$val": -1}
    assert list(rrf.knns()) == [a, b]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Knn(query=[1.0], limit=0), "limit must be a positive integer; got 0"),
        (lambda: Knn(query=[1.0], limit=-3), "positive integer"),
        (lambda: Knn(query=[1.0], limit=True), "positive integer"),
        (lambda: Knn(query=[1.0], limit=2.0), "positive integer"),
        (lambda: Knn(query=[1.0], key="#document"), "'#embedding' or a sparse embedding key"),
        (lambda: Knn(query=[1.0], key=""), "non-empty"),
        (lambda: Knn(query=[1.0], default="x"), "default must be a number"),
        (lambda: Knn(query=[1.0], default=float("nan")), "must be finite"),
        (lambda: Knn(query=[1.0], return_rank=1), "return_rank must be a bool"),
        (lambda: Knn(query=[]), "cannot be empty"),
        (lambda: Knn(query=[1.0, "a"]), "item 1 of the vector"),
        (lambda: Knn(query=[1.0, float("inf")]), "finite"),
        (lambda: Knn(query=[True]), "expected a number"),
        (lambda: Knn(query=[[1.0], [2.0]]), "item 0 of the vector"),
        (lambda: Knn(query=np.array([np.nan])), "NaN"),
        (lambda: Knn(query=np.array(["a"])), "must hold numbers"),
        (lambda: Knn(query=np.zeros((2, 2, 2, 2))), "shape"),
        (lambda: Knn(query=np.zeros((4, 4, 2), np.uint8)), "as an image"),
        (lambda: Knn(query=np.full((2, 3), -0.5)), "pass a dense vector as a 1-d array"),
        (lambda: Knn(query={"#type": "image", "dtype": "uint8", "shape": [1, 1, 3], "data": "AAA"}), "base64"),
        (lambda: Knn(query={"#type": "image", "dtype": "uint8", "shape": [1, 1], "data": ""}), r"\[H, W, 3\]"),
        (lambda: Knn(query={"#type": "image", "shape": [1, 1, 3], "data": ""}), "exactly the keys"),
        (lambda: Knn(query=3), "must be a str, a list of floats"),
        (lambda: Knn(query={"a": 1}), "a dict query must be"),
        (lambda: Knn(query={"indices": [2, 1], "values": [1.0, 1.0]}), "strictly ascending"),
        (lambda: Knn(query={"#type": "image", "dtype": "uint8", "shape": [1, 1, 3], "data": "AAA="}), "holds 2 bytes"),
        (lambda: Knn(query={"#type": "image", "dtype": "float", "shape": [1, 1, 3], "data": ""}), "uint8"),
        (lambda: Val("1"), "must be a number"),
        (lambda: Val(True), "must be a number"),
        (lambda: Val(float("inf")), "finite"),
        (lambda: Sum((Val(1),)), "at least 2"),
        (lambda: Sub(Val(1), "x"), r"\$sub.right"),
        (lambda: Rrf([]), "non-empty list of ranks"),
        (lambda: Rrf([Knn(query=[1.0])], k=0), "k must be positive"),
        (lambda: Rrf([Knn(query=[1.0])], k=-1), "k must be positive"),
        (lambda: Rrf([Knn(query=[1.0])], weights=[1, 2]), "2 weights for 1 ranks"),
        (lambda: Rrf([Knn(query=[1.0]), Knn(query=[2.0])], weights=[1, -1]), "non-negative"),
        (lambda: Rrf([Knn(query=[1.0])], weights=[0], normalize=True), "sum to more than 0"),
        (lambda: Rrf([Knn(query=[1.0])], weights="ab"), "list of numbers"),
        (lambda: Rrf(["x"]), r"Rrf ranks\[0\]"),
    ],
)
def test_rank_errors(make, message):
    with pytest.raises(InvalidArgumentError, match=message):
        make()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"$val": 1, "$knn": {}}, "exactly one operator"),
        ({}, "exactly one operator"),
        ({"$pow": [1, 2]}, "unknown operator '\\$pow'"),
        ([], "must be a dict"),
        ({"$val": "a"}, r"rank.\$val: Val value must be a number"),
        ({"$sum": [{"$val": 1}]}, "at least 2"),
        ({"$sum": {"$val": 1}}, "at least 2"),
        ({"$sub": {"left": {"$val": 1}}}, "'left'"),
        ({"$knn": {"key": "#embedding"}}, "needs a 'query'"),
        ({"$knn": {"query": [1.0], "k": 3}}, r"unknown fields \['k'\]"),
        ({"$knn": [1.0]}, "must be a dict"),
        (
            {"$sum": [{"$val": 1}, {"$knn": {"query": [1.0], "limit": 0}}]},
            r"rank.\$sum\[1\].\$knn: Knn limit must be a positive integer; got 0",
        ),
        ({"$abs": {"$mul": [{"$val": 1}, {"$foo": 1}]}}, r"rank.\$abs.\$mul\[1\] has unknown operator"),
    ],
)
def test_rank_dict_errors_name_the_bad_part(data, message):
    with pytest.raises(InvalidArgumentError, match=message):
        Rank.from_dict(data)


# ---------------------------------------------------------------- search plan
def test_builder_is_immutable_and_matches_constructor():
    base = Search()
    built = (
        base.where(K("year") >= 2020)
        .rank(Knn(query=[0.1, 0.2]))
        .group_by(GroupBy(K("cat"), MinK(keys=K.SCORE, k=2)))
        .limit(5, offset=1)
        .select(K.DOCUMENT, K.SCORE, "year")
    )
    assert base == Search() and base.rank_expr is None
    direct = Search(
        where={"year": {"$gte": 2020}},
        rank={"$knn": {"query": [0.1, 0.2]}},
        group_by={"keys": ["cat"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 2}}},
        limit={"offset": 1, "limit": 5},
        select=["#document", "#score", "year"],
    )
    assert built == direct
    assert built.to_dict() == {
        "filter": {"year": {"$gte": 2020}},
        "rank": {"$knn": {"query": [0.1, 0.2], "key": "#embedding", "limit": 16}},
        "group_by": {"keys": ["cat"], "aggregate": {"$min_k": {"keys": ["#score"], "k": 2}}},
        "limit": {"offset": 1, "limit": 5},
        "select": {"keys": ["#document", "#score", "year"]},
    }
    assert Search.from_dict(json.loads(json.dumps(built.to_dict()))) == built
    with pytest.raises(AttributeError, match="immutable"):
        built._rank = None  # type: ignore[misc]


def test_search_defaults_and_select_all():
    assert Search().to_dict() == {
        "filter": None, "rank": None, "group_by": {}, "limit": {"offset": 0}, "select": {"keys": []},
    }
    assert Search(limit=3).page == Limit(limit=3)
    assert Search(where=None).where_clause is None
    with pytest.raises(InvalidArgumentError, match="cannot be empty; pass None for no filter"):
        Search(where={})  # chromadb 1.5.9 refuses it too
    assert Search().select_all().selection.keys == ("#document", "#embedding", "#metadata", "#score", "#uri")
    assert Search(select={"b", "a"}).selection.keys == ("a", "b")  # sets are sorted: stable wire form
    assert Select("#document").keys == ("#document",)
    assert Select([K.SCORE, "#score", "x"]).keys == ("#score", "x")


def test_group_by_and_aggregate_dicts():
    g = GroupBy([K("a"), "b"], MaxK(keys=["#score", "rank"], k=3))
    assert g.to_dict() == {"keys": ["a", "b"], "aggregate": {"$max_k": {"keys": ["#score", "rank"], "k": 3}}}
    assert GroupBy.from_dict(g.to_dict()) == g
    assert GroupBy.from_dict({}) is None
    assert Aggregate.from_dict({"$min_k": {"keys": ["#score"], "k": 1}}) == MinK(K.SCORE, 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Limit(offset=-1), "offset must be a non-negative integer"),
        (lambda: Limit(limit=0), "limit must be a positive integer"),
        (lambda: Search().limit(0), "positive integer"),
        (lambda: Limit.from_dict({"skip": 1}), r"unknown fields \['skip'\]"),
        (lambda: Search(limit="3"), "limit must be an int"),
        (lambda: Select(["#vector"]), "cannot select unknown key '#vector'"),
        (lambda: Select.from_dict({"keys": "#document"}), "must be a list"),
        (lambda: Select([3]), "non-empty string"),
        (lambda: MinK(keys=K.SCORE, k=0), "k must be a positive integer"),
        (lambda: MaxK(keys=[], k=1), "at least one key"),
        (lambda: MinK(keys=K.DOCUMENT, k=1), "'#score' or metadata fields"),
        (lambda: GroupBy(K.SCORE, MinK(K.SCORE, 1)), "must be metadata fields"),
        (lambda: GroupBy([], MinK(K.SCORE, 1)), "at least one metadata key"),
        (lambda: GroupBy("a", "min"), "MinK"),
        (lambda: GroupBy.from_dict({"keys": ["a"]}), "both 'keys' and 'aggregate'"),
        (lambda: Aggregate.from_dict({"$top_k": {"keys": ["#score"], "k": 1}}), r"unknown fields \['\$top_k'\]"),
        (lambda: Aggregate.from_dict({"$min_k": {"keys": ["#score"]}}), "needs 'keys' and 'k'"),
        (lambda: Search.from_dict({"where": {}}), r"unknown fields \['where'\]"),
        (lambda: Search(where=3), "where must be a filter"),
        (lambda: Search(rank=3), "rank must be a rank expression"),
        (lambda: Search(group_by=[1]), "group_by must be GroupBy"),
        (lambda: Search(rank={"$knn": {"query": [1.0], "limit": -1}}), "positive integer"),
    ],
)
def test_plan_errors(make, message):
    with pytest.raises(InvalidArgumentError, match=message):
        make()
