"""chromadb 1.5.9 documentation code that used to behave differently under ``import retrieval as
chromadb``: the pre-0.4 settings, ``Schema`` JSON and ``collection.schema``, and the message for an
index that cannot be turned off."""

from __future__ import annotations

import re

import pytest

import embedders
import retrieval
from retrieval.utils.embedding_functions import ChromaBm25EmbeddingFunction
from retrieval.errors import InvalidArgumentError
from retrieval.schema import HnswIndexConfig, Schema, SparseVectorIndexConfig, StringInvertedIndexConfig, VectorIndexConfig

chromadb = pytest.importorskip("chromadb")
chroma_types = pytest.importorskip("chromadb.api.types")


def test_pre_0_4_settings_are_refused_with_chromadb_s_migration_message(tmp_path):
    from chromadb.config import LEGACY_ERROR

    plain = re.sub(r"\x1b\[\d+m", "", LEGACY_ERROR)  # chromadb colours it for a terminal
    for settings in ({"chroma_db_impl": "duckdb+parquet", "persist_directory": str(tmp_path / "db")},
                     {"chroma_db_impl": "duckdb"}, {"chroma_api_impl": "rest"}):
        with pytest.raises(ValueError) as raised:
            retrieval.Client(retrieval.Settings(**settings))
        assert isinstance(raised.value, InvalidArgumentError)
        assert plain in str(raised.value)
    assert "PersistentClient(path=" in str(raised.value) or "chroma_api_impl" in str(raised.value)
    assert not (tmp_path / "db").exists()  # nothing was written
    # chromadb's current settings still construct.
    assert retrieval.Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_db_impl=None).allow_reset is False


def _chromadb_schema(build):
    return build(chroma_types.Schema(), chroma_types).serialize_to_json()


@pytest.mark.parametrize("build", [
    lambda s, t: s,
    lambda s, t: s.create_index(t.VectorIndexConfig(space="ip", embedding_function=None, hnsw=t.HnswIndexConfig(ef_search=50))),
    lambda s, t: s.create_index(t.VectorIndexConfig(embedding_function=embedders.HashEmbeddingFunction(dim=8),
                                                    hnsw=t.HnswIndexConfig(max_neighbors=8, ef_construction=64))),
    lambda s, t: s.create_index(t.StringInvertedIndexConfig(), key="genre"),
], ids=["default", "ip-no-function", "hash-function", "inverted-index"])
def test_schema_json_is_chromadb_s(build):
    ours = build(Schema(), retrieval.schema)
    theirs = _chromadb_schema(build)
    if "genre" in theirs["keys"]:  # chromadb records the (no-op here) index on the key
        theirs["keys"].pop("genre")
    assert ours.serialize_to_json() == theirs
    # Either side's JSON reads back into the same schema.
    again = Schema.deserialize_from_json(theirs)
    assert again.serialize_to_json() == theirs
    if "hash" not in str(theirs):  # chromadb cannot rebuild retrieval's own functions
        back = chroma_types.Schema.deserialize_from_json(ours.serialize_to_json())
        assert back.serialize_to_json() == theirs


def test_schema_round_trip_with_a_sparse_index():
    schema = Schema().create_index(VectorIndexConfig(space="cosine", embedding_function=None)).create_index(
        SparseVectorIndexConfig(embedding_function=ChromaBm25EmbeddingFunction()), key="sparse_embedding")
    data = schema.serialize_to_json()
    assert data["keys"]["sparse_embedding"]["sparse_vector"]["sparse_vector_index"]["config"]["embedding_function"]["name"] == "chroma_bm25"
    again = Schema.deserialize_from_json(data)
    assert again.serialize_to_json() == data
    assert again.to_configuration()["hnsw"] == schema.to_configuration()["hnsw"] == {"space": "cosine"}
    assert again.to_configuration()["sparse"]["key"] == "sparse_embedding"
    assert again.sparse_indexes["sparse_embedding"].embedding_function.name() == "chroma_bm25"


def test_unknown_function_in_json_warns_and_is_left_unset():
    data = Schema().serialize_to_json()
    data["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["embedding_function"] = {
        "type": "known", "name": "no-such-function", "config": {}}
    with pytest.warns(UserWarning, match="Could not reconstruct embedding function no-such-function"):
        assert Schema.deserialize_from_json(data).vector_index.embedding_function is None


def test_collection_schema_describes_its_indexes():
    client = retrieval.EphemeralClient()
    ef = embedders.HashEmbeddingFunction(dim=8)
    col = client.create_collection("with-schema", embedding_function=ef,
                                   configuration={"hnsw": {"space": "ip", "ef_search": 33}})
    schema = col.schema
    assert isinstance(schema, Schema)
    vector = schema.vector_index
    assert (vector.space, vector.hnsw.ef_search, vector.embedding_function) == ("ip", 33, ef)
    config = schema.serialize_to_json()["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    assert config["embedding_function"] == {"name": "hash", "type": "known", "config": ef.get_config()}
    # A collection created from that schema gets the same settings.
    twin = client.create_collection("from-schema", schema=Schema.deserialize_from_json(schema.serialize_to_json()))
    assert twin.configuration["hnsw"]["space"] == "ip" and twin.configuration["hnsw"]["ef_search"] == 33
    assert twin.configuration["embedding_function"]["name"] == "hash"


def test_turning_off_an_inverted_index_globally_says_globally():
    with pytest.raises(InvalidArgumentError, match="metadata filtering cannot be turned off globally in retrieval"):
        Schema().delete_index(StringInvertedIndexConfig())
    with pytest.raises(InvalidArgumentError, match="metadata filtering on 'year' cannot be turned off"):
        Schema().delete_index(StringInvertedIndexConfig(), key="year")
    assert HnswIndexConfig(ef_search=3).set_fields() == {"ef_search": 3}
