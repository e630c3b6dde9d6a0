"""Bad input gets an error naming the value and the fix, and nothing is written."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import DimensionMismatchError, DuplicateIDError, InvalidArgumentError
from retrieval.validation import MAX_BATCH_SIZE


@pytest.fixture
def seeded(collection):
    collection.add(ids=["seed"], embeddings=[[1.0, 2.0, 3.0]], metadatas=[{"k": 1}], documents=["seed doc"])
    return collection


def snapshot(col):
    return col.get(include=["embeddings", "metadatas", "documents", "uris"])


def assert_unchanged(col, before):
    after = snapshot(col)
    assert after["ids"] == before["ids"]
    np.testing.assert_array_equal(after["embeddings"], before["embeddings"])
    assert after["metadatas"] == before["metadatas"] and after["documents"] == before["documents"]


E3 = [[0.0, 0.0, 1.0]]

BAD_WRITES = [
    (dict(ids=["a", "a"], embeddings=E3 * 2), "duplicated: 'a'"),
    (dict(ids=[], embeddings=[]), "non-empty"),
    (dict(ids=[1], embeddings=E3), "must be strings"),
    (dict(ids=[""], embeddings=E3), "non-empty strings"),
    (dict(ids=["a"], embeddings=[[np.nan, 0.0, 0.0]]), "NaN or infinity"),
    (dict(ids=["a"], embeddings=[[np.inf, 0.0, 0.0]]), "NaN or infinity"),
    (dict(ids=["a"], embeddings=[[1e39, 0.0, 0.0]]), r"embeddings\[0\] .* beyond float32's range"),
    (dict(ids=["a"], embeddings=np.array([[0.0, -1e39, 0.0]])), "beyond float32's range"),
    (dict(ids=["a"], embeddings=[[1.0, 2.0]]), "stores 3-d vectors; got 2-d"),
    (dict(ids=["a", "b"], embeddings=E3), "got 1 embeddings for 2 ids"),
    (dict(ids=["a"], embeddings=E3, documents=["x", "y"]), "got 2 documents for 1 ids"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{}]), "empty dict"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{"n": {"x": 1}}]), "nested"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{"l": []}]), "empty list"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{"l": [1, "x"]}]), "must all be str"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{"f": float("nan")}]), "not finite"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{"n": 2**63}]), r"9223372036854775808 at metadatas\[0\]\['n'\] is outside the 64-bit"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{"n": -(2**63) - 1}]), "outside the 64-bit integer range"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{"l": [1, 2**70]}]), "outside the 64-bit integer range"),
    (dict(ids=["a"], embeddings=E3, metadatas=[{"u": np.uint64(2**64 - 1)}]), "outside the 64-bit integer range"),
    (dict(ids=["a"], embeddings=E3, documents=[5]), "must be a string"),
    (dict(ids=["a"], embeddings=[[1.0, 2.0, 3.0], [1.0]]), "equal-length|numeric vectors of one length"),
    (dict(ids=["a"], embeddings=[["x", "y", "z"]]), "numeric"),
    (dict(ids=["a"]), "needs embeddings"),
    (dict(ids=["a"], documents=["no embedding function"]), "no embedding function"),
]


@pytest.mark.parametrize("kwargs,message", BAD_WRITES)
@pytest.mark.parametrize("verb", ["add", "upsert"])
def test_bad_writes_are_rejected_and_write_nothing(seeded, verb, kwargs, message):
    before = snapshot(seeded)
    with pytest.raises(InvalidArgumentError, match=message):
        getattr(seeded, verb)(**kwargs)
    assert_unchanged(seeded, before)


def test_a_value_beyond_float32_is_refused_without_a_numpy_warning(seeded):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" would be raised here
        with pytest.raises(InvalidArgumentError, match="beyond float32's range"):
            seeded.query(query_embeddings=[[1e39, 0.0, 0.0]], n_results=1)


def test_none_metadata_values(seeded):
    """As in chromadb: None in add means the key is absent; in update/upsert it deletes the key."""
    seeded.add(ids=["a", "b"], embeddings=E3 * 2, metadatas=[{"n": None}, {"n": None, "m": 1}])
    assert seeded.get(ids=["a", "b"])["metadatas"] == [None, {"m": 1}]
    assert seeded.get(where={"n": {"$ne": 5}}, ids=["a", "b"])["ids"] == ["a", "b"]
    seeded.upsert(ids=["b"], embeddings=E3, metadatas=[{"m": None, "k": 2}])
    assert seeded.get(ids=["b"])["metadatas"] == [{"k": 2}]


def test_error_classes_subclass_builtins(seeded):
    with pytest.raises(DuplicateIDError):
        seeded.add(ids=["x", "x"], embeddings=E3 * 2)
    with pytest.raises(DimensionMismatchError, match="did the embedding function change"):
        seeded.add(ids=["x"], embeddings=[[1.0]])
    with pytest.raises(ValueError):
        seeded.add(ids=["x"], embeddings=[[1.0]])


def test_batch_above_max_batch_size(seeded, client):
    assert client.get_max_batch_size() == MAX_BATCH_SIZE
    ids = [str(i) for i in range(MAX_BATCH_SIZE + 1)]
    with pytest.raises(InvalidArgumentError, match="max batch size"):
        seeded.add(ids=ids, embeddings=np.zeros((len(ids), 3), dtype=np.float32))
    assert seeded.count() == 1


def test_bad_update_writes_nothing(seeded):
    before = snapshot(seeded)
    with pytest.raises(InvalidArgumentError):
        seeded.update(ids=["seed"], embeddings=[[1.0, 2.0]])
    with pytest.raises(InvalidArgumentError):
        seeded.update(ids=["seed", "seed"], metadatas=[{"a": 1}, {"a": 2}])
    with pytest.raises(InvalidArgumentError):
        seeded.update(ids=["seed"], metadatas=[{"a": {"nested": 1}}])
    assert_unchanged(seeded, before)


@pytest.mark.parametrize(
    "where,message",
    [
        ({"k": {"$gtt": 1}}, "gtt"),
        ({"k": {"$in": []}}, r"\$in"),
        ({"k": {"$gt": "a"}}, r"\$gt"),
        ({"$and": []}, r"\$and"),
        ({"a": 1, "b": 2}, r"\$and"),
        # chromadb 1.5.9 refuses these as well; the message says the fix.
        ({}, r"where=\{\} is an empty filter; pass where=None"),
        ({"$and": [{"k": 1}]}, r"'\$and' needs at least two filters; got 1: use that filter itself"),
        ({"$or": [{"k": 1}]}, r"'\$or' needs at least two filters; got 1"),
        ({"k": {"$eq": [1, 2]}}, "eq"),
    ],
)
def test_bad_where(seeded, where, message):
    with pytest.raises(InvalidArgumentError, match=message):
        seeded.get(where=where)
    with pytest.raises(InvalidArgumentError, match=message):
        seeded.query(query_embeddings=E3, where=where)
    with pytest.raises(InvalidArgumentError, match=message):
        seeded.delete(where=where)
    assert seeded.count() == 1


@pytest.mark.parametrize(
    "where_document",
    [{"$contains": ""}, {"$regex": ""}, {"$and": []}, {"$unknown": "x"}, {"$regex": "(unclosed"}, {"$contains": 5},
     {}, {"$or": [{"$contains": "seed"}]}],
)
def test_bad_where_document(seeded, where_document):
    with pytest.raises(InvalidArgumentError):
        seeded.get(where_document=where_document)
    with pytest.raises(InvalidArgumentError):
        seeded.query(query_embeddings=E3, where_document=where_document)
    with pytest.raises(InvalidArgumentError):
        seeded.delete(where_document=where_document)
    assert seeded.count() == 1


def test_empty_where_document_says_the_fix(seeded):
    with pytest.raises(InvalidArgumentError, match=r"where_document=\{\} is an empty filter; pass where_document=None"):
        seeded.delete(where_document={})
    assert seeded.count() == 1


def test_int_outside_64_bits_in_a_large_batch_is_refused_before_the_write(seeded):
    """A batch big enough to overlap graph insertion with the commit (issue 8): refused at the edge."""
    n = 600
    vectors = np.random.default_rng(0).random((n, 3), dtype=np.float32)
    metadatas = [{"i": i} for i in range(n - 1)] + [{"i": 2**64}]
    before = snapshot(seeded)
    with pytest.raises(InvalidArgumentError, match=rf"metadatas\[{n - 1}\]\['i'\] is outside the 64-bit"):
        seeded.add(ids=[f"r{i}" for i in range(n)], embeddings=vectors, metadatas=metadatas)
    assert_unchanged(seeded, before)
    # The same batch with a valid last value is written and found by vector search.
    metadatas[-1] = {"i": 2**63 - 1}
    seeded.add(ids=[f"r{i}" for i in range(n)], embeddings=vectors, metadatas=metadatas)
    assert seeded.query(query_embeddings=vectors[-1:], n_results=1)["ids"] == [[f"r{n - 1}"]]
    assert seeded.get(where={"i": 2**63 - 1})["ids"] == [f"r{n - 1}"]


def test_settings_refuse_unknown_keys_naming_the_closest():
    from retrieval import Settings

    with pytest.raises(InvalidArgumentError, match=r"unknown setting 'allow_rest'.*did you mean 'allow_reset'\?"):
        Settings(allow_rest=True)
    with pytest.raises(InvalidArgumentError, match=r"did you mean 'chroma_server_host'"):
        Settings(chroma_server_hots="x")
    with pytest.raises(InvalidArgumentError, match=r"unknown setting 'zzz'.*own settings are \['is_persistent'"):
        Settings(zzz=1)
    # chromadb's own settings are accepted and kept, so chromadb code constructs unchanged.
    s = Settings(chroma_server_host="localhost", chroma_server_http_port=8000, allow_reset=True)
    assert (s.chroma_server_host, s.chroma_server_http_port, s.allow_reset) == ("localhost", 8000, True)
    assert s.copy(is_persistent=True).chroma_server_host == "localhost"


@pytest.mark.parametrize("n_results", [0, -1, 1.5, "3", True])
def test_bad_n_results(seeded, n_results):
    with pytest.raises(InvalidArgumentError, match="n_results"):
        seeded.query(query_embeddings=E3, n_results=n_results)


@pytest.mark.parametrize("include", [["nope"], ["ids"], "documents", ["distances"]])
def test_bad_include(seeded, include):
    with pytest.raises(InvalidArgumentError, match="include"):
        seeded.get(include=include)


def test_bad_query_inputs(seeded):
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        seeded.query()
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        seeded.query(query_embeddings=E3, query_texts=["x"])
    with pytest.raises(DimensionMismatchError):
        seeded.query(query_embeddings=[[1.0, 2.0]])
    with pytest.raises(InvalidArgumentError, match="NaN"):
        seeded.query(query_embeddings=[[np.nan, 1.0, 1.0]])
    with pytest.raises(InvalidArgumentError, match="no embedding function"):
        seeded.query(query_texts=["hello"])


def test_bad_limit_offset(seeded):
    with pytest.raises(InvalidArgumentError, match="limit"):
        seeded.get(limit=-1)
    with pytest.raises(InvalidArgumentError, match="offset"):
        seeded.get(offset=-2)


# ---------------------------------------------------------------- issue 8: nothing left behind
@pytest.mark.parametrize(
    "spec,error,message",
    [
        ({"name": "nonexistent", "config": {}}, "UnknownNameError", "nonexistent"),
        ({"name": "chroma_bm25", "config": {"k": -1}}, "ConfigError", "k must be >= 0"),
    ],
)
def test_bad_sparse_configuration_raises_and_writes_nothing(client, spec, error, message):
    import embedders

    client.create_collection("kept", embedding_function=None)
    with pytest.raises(InvalidArgumentError, match=message) as info:
        client.create_collection("sparse", embedding_function=None,
                                 configuration={"sparse": {"key": "sp", "embedding_function": spec}})
    # In retrieval's tree (HTTP 400), still the embedders class, and the cause kept.
    assert type(info.value).__name__ == error and info.value.http_status == 400
    assert isinstance(info.value, getattr(embedders, error)) and isinstance(info.value.__cause__, getattr(embedders, error))
    assert [c.name for c in client.list_collections()] == ["kept"] and client.count_collections() == 1
    good = client.create_collection("sparse", embedding_function=None,
                                    configuration={"sparse": {"key": "sp", "embedding_function": {"name": "chroma_bm25", "config": {}}}})
    assert good.configuration["sparse"]["key"] == "sp"


def test_list_collections_builds_embedding_functions_lazily(tmp_path):
    """A collection whose function is not registered in this process lists, counts and reads;
    only embedding with it fails, clearly, and the others are untouched."""
    import retrieval
    from embedders import HashEmbeddingFunction
    from retrieval.utils.embedding_functions import register_embedding_function
    import embedders

    @register_embedding_function
    class Elsewhere(HashEmbeddingFunction):
        @staticmethod
        def name() -> str:
            return "test_validation_elsewhere"

        @staticmethod
        def build_from_config(config):
            return Elsewhere(**config)

    path = str(tmp_path / "db")
    try:
        client = retrieval.PersistentClient(path)
        client.create_collection("elsewhere", embedding_function=Elsewhere(dim=8)).add(ids=["a"], documents=["x"])
        client.create_collection("here", embedding_function=HashEmbeddingFunction(dim=8))
        client.close()
    finally:
        embedders.embedding_functions.unregister("test_validation_elsewhere")
    client = retrieval.PersistentClient(path)
    try:
        listed = {c.name: c for c in client.list_collections()}
        assert sorted(listed) == ["elsewhere", "here"]
        other = listed["elsewhere"]
        assert other.count() == 1 and other.get()["documents"] == ["x"]
        with pytest.raises(InvalidArgumentError, match="test_validation_elsewhere") as info:
            other.add(ids=["b"], documents=["y"])
        assert isinstance(info.value, embedders.UnknownNameError)
        with pytest.raises(InvalidArgumentError, match="test_validation_elsewhere"):
            other.embedding_function  # noqa: B018
        assert other.count() == 1
        here = listed["here"]
        here.add(ids=["h"], documents=["hello"])
        assert isinstance(here.embedding_function, HashEmbeddingFunction)
        assert here.query(query_texts=["hello"], n_results=1)["ids"] == [["h"]]
    finally:
        client.close()


def test_delete_with_an_empty_id_list_raises(seeded):
    with pytest.raises(InvalidArgumentError, match=r"delete\(ids=\[\]\) names no record to delete; pass at least one id"):
        seeded.delete(ids=[])
    with pytest.raises(InvalidArgumentError, match=r"delete\(ids=\[\]\)"):
        seeded.delete(ids=[], where={"k": 1})
    assert seeded.count() == 1


@pytest.mark.parametrize("bad", [5.0, "x", ["a"]])
def test_collection_metadata_that_is_not_a_dict_is_refused(client, seeded, bad):
    """Found by the schemathesis run: a non-dict new_metadata was a 500 on the server."""
    with pytest.raises(InvalidArgumentError, match="collection metadata must be a dict"):
        seeded.modify(metadata=bad)
    with pytest.raises(InvalidArgumentError, match="collection metadata must be a dict"):
        client.create_collection("never-made", metadata=bad, embedding_function=None)
    assert "never-made" not in [c.name for c in client.list_collections()]


def test_get_with_an_empty_id_list_raises_but_query_does_not(seeded):
    """chromadb 1.5.9: get(ids=[]) raises ("non-empty list"); query(ids=[]) answers nothing."""
    with pytest.raises(InvalidArgumentError, match=r"ids must be a non-empty list"):
        seeded.get(ids=[])
    assert seeded.query(query_embeddings=[[1.0, 2.0, 3.0]], ids=[], n_results=1)["ids"] == [[]]


def test_embedder_and_loader_errors_surface_in_retrievals_tree(client):
    """Errors from embedders/loaders leave Client and Collection as retrieval errors with a status."""
    import embedders
    from embedders import HashEmbeddingFunction
    from loaders import ImageLoader

    col = client.create_collection("multi", embedding_function=HashEmbeddingFunction(dim=8), data_loader=ImageLoader())
    with pytest.raises(InvalidArgumentError, match="memory://does/not/exist.png") as info:
        col.add(ids=["a"], uris=["memory://does/not/exist.png"])
    assert isinstance(info.value, embedders.LoadError) and info.value.uri == "memory://does/not/exist.png"
    assert info.value.http_status == 400 and isinstance(info.value.__cause__, embedders.LoadError)
    with pytest.raises(InvalidArgumentError, match="does/not/exist") as info:
        col.query(query_uris=["memory://does/not/exist.png"])
    assert isinstance(info.value, embedders.LoadError)
    assert col.count() == 0
