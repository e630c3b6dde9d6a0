"""SparseVector validation and the BM25 sparse embedding function."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedders.bm25 import ENGLISH_STOPWORDS, BM25EmbeddingFunction, murmur3_32, term_id
from embedders.errors import ConfigError, UnsupportedInputError
from embedders.sparse import SparseVector


# ---------------------------------------------------------------- SparseVector
def test_sparse_vector_round_trip_and_coercion():
    v = SparseVector(indices=np.array([1, 5, 2**32 - 1]), values=[np.float32(0.5), 2, -1.5])
    assert v.indices == [1, 5, 2**32 - 1] and all(type(i) is int for i in v.indices)
    assert v.values == [0.5, 2.0, -1.5] and all(type(x) is float for x in v.values)
    wire = v.to_dict()
    assert wire == {"#type": "sparse_vector", "indices": [1, 5, 2**32 - 1], "values": [0.5, 2.0, -1.5]}
    assert SparseVector.from_dict(wire) == v
    assert SparseVector.from_dict({"indices": [1], "values": [1.0], "tokens": ["x"]}) == SparseVector([1], [1.0])
    assert hash(v) == hash(SparseVector.from_dict(wire)) and len(v) == 3
    assert SparseVector([], []).to_dict()["indices"] == []
    assert SparseVector([1, 2], [1.0, 2.0]).dot(SparseVector([2, 3], [3.0, 5.0])) == 6.0


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: SparseVector([1, 2], [1.0]), ValueError, "as many values as indices"),
        (lambda: SparseVector([2, 1], [1.0, 1.0]), ValueError, r"strictly ascending; indices\[1\]=1 follows 2"),
        (lambda: SparseVector([1, 1], [1.0, 1.0]), ValueError, "strictly ascending"),
        (lambda: SparseVector([-1], [1.0]), ValueError, "outside"),
        (lambda: SparseVector([2**32], [1.0]), ValueError, "outside"),
        (lambda: SparseVector([1], [math.nan]), ValueError, "not finite"),
        (lambda: SparseVector([1], [math.inf]), ValueError, "not finite"),
        (lambda: SparseVector([1.5], [1.0]), TypeError, "must be an int"),
        (lambda: SparseVector([True], [1.0]), TypeError, "must be an int"),
        (lambda: SparseVector([1], ["a"]), TypeError, "must be a number"),
        (lambda: SparseVector(3, [1.0]), TypeError, "must be a list"),
        (lambda: SparseVector.from_dict({"#type": "dense", "indices": [], "values": []}), ValueError, "expected #type"),
        (lambda: SparseVector.from_dict({"indices": []}), ValueError, "needs 'indices' and 'values'"),
        (lambda: SparseVector.from_dict({"indices": [], "values": [], "x": 1}), ValueError, "unknown keys"),
        (lambda: SparseVector.from_dict([1]), TypeError, "must be a dict"),
    ],
)
def test_sparse_vector_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ---------------------------------------------------------------- hashing
def test_murmur3_matches_reference_values():
    # Reference values of MurmurHash3_x86_32 with seed 0 (what mmh3.hash returns).
    assert murmur3_32(b"") == 0
    assert murmur3_32(b"foo") == -156908512
    assert murmur3_32(b"hello") == 613153351
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog") == 776992547
    assert term_id("foo") == 156908512
    assert all(0 <= term_id(t) < 2**32 for t in ["a", "é", "日本", "x" * 40])


# ---------------------------------------------------------------- tokenization and weights
def test_tokenize_like_chromadb():
    ef = BM25EmbeddingFunction()
    tokens = ef.tokenize("Error ERR-4012: the pump's motor is Running!")
    assert tokens == ["error", "err", "4012", "pump", "motor", "run"]
    assert ef.tokenize("x" * 41 + " ok") == ["ok"]
    assert ef.tokenize("ERR_QUOTA_EXCEEDED_19") == ["err_quota_exceeded_19"]
    raw = BM25EmbeddingFunction(stemmer=None, stopwords=["pump"])
    assert raw.tokenize("The pump is RUNNING") == ["the", "is", "running"]
    assert "the" in ENGLISH_STOPWORDS and len(ENGLISH_STOPWORDS) > 150


def test_document_weights_are_bm25_saturated_and_length_normalised():
    ef = BM25EmbeddingFunction(k1=1.2, b=0.75, avg_doc_length=4.0, stemmer=None)
    (vec,) = ef(["pump pump seal"])
    base = 1.2 * (1 - 0.75 + 0.75 * 3 / 4.0)
    expected = {term_id("pump"): 2 * 2.2 / (2 + base), term_id("seal"): 1 * 2.2 / (1 + base)}
    assert vec.indices == sorted(expected)
    assert vec.values == pytest.approx([expected[i] for i in vec.indices])
    # Longer documents get lower weight for the same term frequency (b > 0) ...
    (short,), (long,) = ef(["seal"]), ef(["seal " + "filler " * 10])
    seal = term_id("seal")
    assert dict(zip(short.indices, short.values))[seal] > dict(zip(long.indices, long.values))[seal]
    # ... and term frequency saturates below k1 + 1.
    (many,) = ef(["seal " * 1000])
    assert many.values[0] < 2.2


def test_query_weights_are_one_per_distinct_term():
    ef = BM25EmbeddingFunction()
    (q,) = ef.embed_query(["pump PUMP pumps seal the"])
    assert q.indices == sorted({term_id("pump"), term_id("seal")}) and q.values == [1.0, 1.0]


def test_empty_and_bare_string_inputs():
    ef = BM25EmbeddingFunction()
    assert ef(["", "the and of"]) == [SparseVector([], []), SparseVector([], [])]
    assert ef("one text") == ef(["one text"])
    assert ef([]) == [] and ef.embed_query([]) == []


@pytest.mark.parametrize("bad", [[1], ["ok", None], [np.zeros((2, 2, 3), np.uint8)], b"bytes", 3])
def test_non_text_inputs_are_refused(bad):
    with pytest.raises(UnsupportedInputError, match="'chroma_bm25'"):
        BM25EmbeddingFunction()(bad)


# ---------------------------------------------------------------- config
def test_config_round_trip():
    ef = BM25EmbeddingFunction(k1=1.5, b=0.5, avg_doc_length=100, token_max_length=20, stopwords=["B", "a"])
    config = ef.get_config()
    assert config == {  # chromadb's keys (k, include_tokens), so chromadb reads it
        "k": 1.5, "b": 0.5, "avg_doc_length": 100.0, "token_max_length": 20, "include_tokens": False,
        "stopwords": ["a", "b"],
    }
    again = BM25EmbeddingFunction.build_from_config(config)
    assert again.get_config() == config
    assert again(["a b c"]) == ef(["a b c"])
    assert "stopwords" not in BM25EmbeddingFunction().get_config()  # the default list is not stored
    assert BM25EmbeddingFunction(stemmer=None).get_config()["stemmer"] is None  # ours: only when off
    assert BM25EmbeddingFunction.name() == "chroma_bm25" and BM25EmbeddingFunction().is_sparse()
    assert BM25EmbeddingFunction().modalities() == frozenset({"text"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"k2": 1.2}, "unknown key 'k2'"),
        ({"k": -1}, "k must be >= 0"),
        ({"k1": "1"}, "k must be a finite number"),
        ({"k": 1.0, "k1": 2.0}, "keep only 'k'"),
        ({"include_tokens": "yes"}, "include_tokens must be True or False"),
        ({"b": 1.5}, r"b must be in \[0, 1\]"),
        ({"avg_doc_length": 0}, "avg_doc_length must be > 0"),
        ({"token_max_length": 0}, "token_max_length must be an integer >= 1"),
        ({"stopwords": "the"}, "stopwords must be a list of strings"),
        ({"stemmer": "porter"}, "stemmer must be one of"),
        ({"trust_remote_code": True}, "refused"),
    ],
)
def test_bad_config(config, message):
    with pytest.raises(ConfigError, match=message):
        BM25EmbeddingFunction.build_from_config(config)


def test_config_cannot_change_after_creation():
    ef = BM25EmbeddingFunction()
    ef.validate_config_update(ef.get_config(), ef.get_config())
    with pytest.raises(ConfigError, match=r"\['k'\] cannot change"):
        ef.validate_config_update(ef.get_config(), {**ef.get_config(), "k": 2.0})
