"""chromadb code runs unchanged under ``import retrieval as chromadb`` (issue 9).

One test per difference a user moving from chromadb 1.5.9 hit: the default function's space,
custom embedding functions the chromadb way, ``delete``'s answer and ``limit``, ``include=["data"]``
returning URIs, chromadb's parameter names and persisted config keys, ``Schema``, and import paths.
Expected values were checked against chromadb 1.5.9 (its sources and its getting-started page).
"""

from __future__ import annotations

import io
import json
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

import embedders
import retrieval
from embedders import HashEmbeddingFunction
from retrieval import InvalidArgumentError
from retrieval.config import CollectionConfig, ComponentSpec, SparseConfig


# ``client`` (conftest.py) runs each test on the embedded ephemeral and persistent clients and over HTTP.


# ------------------------------------------------------------------ 1. the default function's space
def test_default_embedding_function_measures_l2_like_chromadb(client):
    from retrieval.utils.embedding_functions import DefaultEmbeddingFunction

    assert DefaultEmbeddingFunction().default_space() == "l2"
    # chromadb's getting-started page, unchanged: it prints [[1.0404..., 1.2430...]].
    collection = client.create_collection(name="my_collection")
    collection.add(
        ids=["id1", "id2"],
        documents=["This is a document about pineapple", "This is a document about oranges"],
    )
    results = collection.query(query_texts=["This is a query document about hawaii"], n_results=2)
    assert collection.configuration["hnsw"]["space"] == "l2"
    assert results["ids"] == [["id1", "id2"]]
    assert results["distances"][0] == pytest.approx([1.0404, 1.2431], abs=2e-3)


def test_default_collection_with_explicit_embeddings_ranks_by_l2(client):
    col = client.create_collection("explicit")  # default function, never called: embeddings given
    col.add(ids=["near", "same-direction"], embeddings=[[1.0, 0.0], [10.0, 10.0]])
    got = col.query(query_embeddings=[[3.0, 3.0]], n_results=2)
    # l2 (chromadb): "near" is 13 away, "same-direction" 98; cosine would put "same-direction" first.
    assert got["ids"] == [["near", "same-direction"]]
    assert got["distances"][0] == pytest.approx([13.0, 98.0])


# ------------------------------------------------------------------ 2. custom embedding functions
def test_chromadb_type_names_import_from_every_path():
    from retrieval import Documents, EmbeddingFunction, Embeddings, Images, Metadata  # noqa: F401
    from retrieval.api.types import (  # noqa: F401
        Document,
        Embeddable,
        EmbeddingFunction as ApiEmbeddingFunction,
        IDs,
        Include,
        Metadatas,
        Space,
        SparseEmbeddingFunction,
        SparseVector,
        Where,
        WhereDocument,
    )
    from retrieval.utils.embedding_functions import EmbeddingFunction as UtilsEmbeddingFunction

    assert EmbeddingFunction is ApiEmbeddingFunction is UtilsEmbeddingFunction is embedders.EmbeddingFunction


class ChromaStyle(retrieval.EmbeddingFunction[retrieval.Documents]):
    """chromadb's custom-function recipe: only ``__call__``."""

    def __call__(self, input: retrieval.Documents) -> retrieval.Embeddings:
        return [np.array([len(t), t.count("a"), 1.0], dtype=np.float32) for t in input]


def test_bare_subclass_is_accepted_with_one_warning_and_chromadb_defaults(tmp_path):
    class Fresh(ChromaStyle):  # a class of its own: the warning is said once per class and process
        pass

    ef = Fresh()
    assert (ef.default_space(), ef.supported_spaces(), ef.is_legacy()) == ("l2", ["cosine", "l2", "ip"], True)
    client = retrieval.PersistentClient(str(tmp_path / "db"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        col = client.create_collection("mine", embedding_function=ef)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "Fresh cannot be saved" in messages[0]
    assert "@register_embedding_function" in messages[0]
    assert col.configuration["embedding_function"] == {"type": "legacy"}  # what chromadb stores
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per class, not on every call that passes it again
        client.get_or_create_collection("mine", embedding_function=ef)
        client.create_collection("mine-too", embedding_function=Fresh())
    assert col.configuration["hnsw"]["space"] == "l2"
    col.add(ids=["banana", "kiwi"], documents=["banana", "kiwi"])
    assert col.query(query_texts=["bananas"], n_results=1)["ids"] == [["banana"]]
    client.close()

    # Reopened without it: reading works; the first embed fails and names the fix (chromadb would
    # silently embed with its default function instead, in another vector space).
    client = retrieval.PersistentClient(str(tmp_path / "db"))
    assert client.get_collection("mine-too").configuration["embedding_function"] == {"type": "legacy"}
    col = client.get_collection("mine")
    assert col.get()["ids"] == ["banana", "kiwi"]
    fix = r"get_collection\('mine', embedding_function=MyEmbeddingFunction\(\)\)"
    with pytest.raises(InvalidArgumentError, match=fix):
        col.query(query_texts=["banana"])
    with pytest.raises(InvalidArgumentError, match=fix):
        col.add(ids=["fig"], documents=["fig"])
    assert col.count() == 2  # nothing written
    col = client.get_collection("mine", embedding_function=ChromaStyle())
    assert col.query(query_texts=["bananas"], n_results=1)["ids"] == [["banana"]]
    client.close()


def test_register_embedding_function_makes_a_custom_function_persist(tmp_path):
    from retrieval.utils.embedding_functions import register_embedding_function

    @register_embedding_function
    class Lengths(retrieval.EmbeddingFunction[retrieval.Documents]):
        def __init__(self, scale: float = 1.0):
            self.scale = scale

        def __call__(self, input):
            return [np.array([len(t) * self.scale, 1.0], dtype=np.float32) for t in input]

        @staticmethod
        def name() -> str:
            return "test_dropin_lengths"

        def get_config(self):
            return {"scale": self.scale}

        @staticmethod
        def build_from_config(config):
            return Lengths(**config)

    try:
        assert embedders.get_embedding_function_class("test_dropin_lengths") is Lengths
        client = retrieval.PersistentClient(str(tmp_path / "db"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a registered function persists: no warning
            client.create_collection("lengths", embedding_function=Lengths(scale=2.0))
        client.close()
        client = retrieval.PersistentClient(str(tmp_path / "db"))
        col = client.get_collection("lengths")
        assert col.configuration["embedding_function"] == {
            "name": "test_dropin_lengths", "type": "known", "config": {"scale": 2.0}
        }
        assert isinstance(col.embedding_function, Lengths) and col.embedding_function.scale == 2.0
        col.add(ids=["a", "b"], documents=["ab", "abcdef"])
        assert col.get(include=["embeddings"])["embeddings"][1].tolist() == [12.0, 1.0]
        client.close()
        with pytest.raises(InvalidArgumentError, match="built-in embedding function"):

            @register_embedding_function
            class Impostor(Lengths):
                @staticmethod
                def name() -> str:
                    return "default"
    finally:
        embedders.embedding_functions.unregister("test_dropin_lengths")


# ------------------------------------------------------------------ 3. delete's answer and limit
def test_delete_returns_the_count_and_honours_limit(client):
    col = client.create_collection("del", embedding_function=None)
    col.add(ids=[f"r{i}" for i in range(6)], embeddings=[[float(i), 1.0] for i in range(6)],
            metadatas=[{"kind": "odd" if i % 2 else "even"} for i in range(6)])
    assert col.delete(ids=["r0", "missing"]) == {"deleted": 1}
    assert col.delete(where={"kind": "odd"}, limit=2) == {"deleted": 2}
    assert col.get(where={"kind": "odd"})["ids"] == ["r5"]  # the oldest matches went first
    assert col.delete(where={"kind": "nothing"}) == {"deleted": 0}
    for bad, message in [
        ({"ids": []}, r"delete\(ids=\[\]\) names no record to delete; pass at least one id"),  # as chromadb 1.5.9
        ({"ids": ["r2"], "limit": 1}, "needs a where or where_document"),
        ({"where": {"kind": "even"}, "limit": -1}, "non-negative integer; got -1"),
        ({"where": {"kind": "even"}, "limit": "2"}, "non-negative integer; got '2'"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            col.delete(**bad)
    assert col.count() == 3  # the refused deletes wrote nothing
    assert col.delete(where={"kind": "even"}, limit=0) == {"deleted": 0}
    assert col.delete(where_document={"$contains": "x"}, limit=5) == {"deleted": 0}


# ------------------------------------------------------------------ 4. include=["data"] returns uris
def test_include_data_also_returns_uris(client):
    import fsspec
    from PIL import Image

    from loaders import ImageLoader

    uris = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buf, "PNG")
        uri = f"memory://test_dropin/img{i}.png"
        with fsspec.open(uri, "wb") as f:
            f.write(buf.getvalue())
        uris.append(uri)
    col = client.create_collection("imgs", embedding_function=HashEmbeddingFunction(dim=8), data_loader=ImageLoader())
    col.add(ids=["red", "blue"], uris=uris)
    col.add(ids=["text"], documents=["no image here"])
    got = col.get(ids=["red", "blue", "text"], include=["data"])
    assert got["uris"] == [uris[0], uris[1], None]
    assert [d.shape if d is not None else None for d in got["data"]] == [(8, 8, 3), (8, 8, 3), None]
    assert "uris" in got["included"] and "data" in got["included"]
    hits = col.query(query_uris=[uris[0]], n_results=2, include=["data"])
    assert hits["uris"][0][0] == uris[0] and hits["data"][0][0][0, 0].tolist() == [255, 0, 0]
    assert col.get(ids=["red"])["uris"] is None  # not asked for, not returned


# ------------------------------------------------------------------ 5. parameter names and stored configs
def test_chromadb_parameter_names_are_aliases():
    from retrieval.utils.embedding_functions import ChromaBm25EmbeddingFunction, OpenCLIPEmbeddingFunction

    clip = OpenCLIPEmbeddingFunction(model_name="ViT-B-32", checkpoint="laion2b_s34b_b79k", device="cpu")
    assert clip.checkpoint == clip.pretrained == "laion2b_s34b_b79k"
    assert OpenCLIPEmbeddingFunction("ViT-B-32", pretrained="laion2b_s34b_b79k").get_config() == clip.get_config()
    with pytest.raises(embedders.ConfigError, match="pass only one of them"):
        OpenCLIPEmbeddingFunction("ViT-B-32", checkpoint="a", pretrained="b")
    bm25 = ChromaBm25EmbeddingFunction(k=1.6, b=0.5)
    assert bm25.k == bm25.k1 == 1.6 and ChromaBm25EmbeddingFunction(k1=1.6, b=0.5).get_config() == bm25.get_config()
    assert ChromaBm25EmbeddingFunction.name() == "chroma_bm25"


# What chromadb 1.5.9's get_config() writes for the functions both libraries have.
CHROMADB_CONFIGS = {
    "default": {},
    "open_clip": {"model_name": "ViT-B-32", "checkpoint": "laion2b_s34b_b79k", "device": "cpu"},
    "sentence_transformer": {"model_name": "all-MiniLM-L6-v2", "device": "cuda", "normalize_embeddings": False,
                             "kwargs": {}},
    "chroma_bm25": {"k": 1.2, "b": 0.75, "avg_doc_length": 256.0, "token_max_length": 40, "include_tokens": False},
}


@pytest.mark.parametrize("name", sorted(CHROMADB_CONFIGS))
def test_configs_written_by_chromadb_are_read_and_ours_use_its_keys(name):
    chromadb_config = CHROMADB_CONFIGS[name]
    ef = embedders.build_embedding_function(name, chromadb_config)  # loads no weights
    ours = ef.get_config()
    assert type(ef).name() == name
    # Our keys are chromadb's keys, minus the host's device (never persisted here) ...
    assert set(ours) <= set(chromadb_config) - {"device", "kwargs"}
    assert {k: chromadb_config[k] for k in ours} == ours
    # ... so a config we write builds the same function again, here and (bar device) in chromadb.
    assert embedders.build_embedding_function(name, json.loads(json.dumps(ours))).get_config() == ours
    if "device" in chromadb_config:
        assert ef.device == "auto"  # chromadb's stored device is ignored: the host decides


def test_old_retrieval_configs_still_open(tmp_path):
    client = retrieval.PersistentClient(str(tmp_path / "db"))
    old = CollectionConfig(
        embedding_function=ComponentSpec("open_clip", {"model_name": "tiny-shapes", "pretrained": None, "normalize": True}),
        sparse=SparseConfig("bm25_key", ComponentSpec("bm25", {"k1": 1.5, "b": 0.75, "avg_doc_length": 256.0,
                                                               "token_max_length": 40, "stemmer": "snowball"})),
    )
    record, _ = client._backend.engine.create_collection("old", old, None)
    col = client.get_collection(record.name)
    assert col.embedding_function.get_config() == {"model_name": "tiny-shapes"}
    # The same function passed in code matches the stored (older) config.
    client.get_collection("old", embedding_function=embedders.OpenCLIPEmbeddingFunction("tiny-shapes"))
    client.close()


def test_chromadb_collection_configuration_json_is_understood():
    # chromadb's collection_configuration_to_json(), as its HttpClient sends and receives it.
    stored = {
        "hnsw": {"space": "l2", "ef_construction": 100, "ef_search": 100, "max_neighbors": 16,
                 "resize_factor": 1.2, "sync_threshold": 1000},
        "spann": None,
        "embedding_function": {"name": "default", "type": "known", "config": {}},
    }
    config = CollectionConfig.from_json(json.dumps(stored))
    assert config.embedding_function == ComponentSpec("default", {})
    assert config.to_public_dict()["embedding_function"] == stored["embedding_function"]
    legacy = CollectionConfig.from_json(json.dumps({**stored, "embedding_function": {"type": "legacy"}}))
    assert legacy.embedding_function.legacy and json.loads(legacy.to_json())["embedding_function"] == {"type": "legacy"}


# ------------------------------------------------------------------ 6. Schema
def test_schema_sets_space_hnsw_embedding_function_and_bm25_key(client):
    from retrieval import (
        FtsIndexConfig,
        HnswIndexConfig,
        Schema,
        SparseVectorIndexConfig,
        StringInvertedIndexConfig,
        VectorIndexConfig,
    )
    from retrieval.execution.expression.operator import K, Knn
    from retrieval.execution.expression.plan import Search
    from retrieval.utils.embedding_functions import ChromaBm25EmbeddingFunction

    schema = (
        Schema()
        .create_index(VectorIndexConfig(space="cosine", embedding_function=HashEmbeddingFunction(dim=16),
                                        hnsw=HnswIndexConfig(ef_search=77, max_neighbors=8)))
        .create_index(SparseVectorIndexConfig(embedding_function=ChromaBm25EmbeddingFunction(), source_key=K.DOCUMENT,
                                              bm25=True), key="sparse_embedding")
        .create_index(FtsIndexConfig(), key="#document")
        .create_index(StringInvertedIndexConfig(), key="genre")
    )
    col = client.create_collection("schema", schema=schema)
    config = col.configuration
    assert (config["hnsw"]["space"], config["hnsw"]["ef_search"], config["hnsw"]["max_neighbors"]) == ("cosine", 77, 8)
    assert config["embedding_function"]["name"] == "hash" and config["embedding_function"]["config"]["dim"] == 16
    assert config["sparse"]["key"] == "sparse_embedding"
    assert config["sparse"]["embedding_function"]["name"] == "chroma_bm25"
    col.add(ids=["a", "b"], documents=["pump overheating error", "quiet fan"], metadatas=[{"genre": "x"}] * 2)
    found = col.search(Search().rank(Knn(query="overheating pump", key="sparse_embedding")).limit(1))
    assert found["ids"] == [["a"]]
    assert col.get(where_document={"$contains": "fan"})["ids"] == ["b"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda s, c: s.create_index(c.VectorIndexConfig(spann=c.SpannIndexConfig(search_nprobe=4))), "retrieval runs HNSW"),
        (lambda s, c: s.delete_index(c.FtsIndexConfig(), key="#document"), "cannot be turned off"),
        (lambda s, c: s.delete_index(c.IntInvertedIndexConfig(), key="year"), "metadata filtering on 'year'"),
        (lambda s, c: s.create_index(c.VectorIndexConfig(), key="other"), "cannot be put on a key"),
        (lambda s, c: s.create_index(c.HnswIndexConfig(ef_serch=3)), "'ef_serch' is not a valid field"),
        (lambda s, c: s.create_index(c.SparseVectorIndexConfig(embedding_function=None), key="sp"), "needs an embedding_function"),
        (lambda s, c: s.create_index(c.SparseVectorIndexConfig(embedding_function=embedders.HashEmbeddingFunction(),
                                                                source_key="title"), key="sp"), "sourced from 'title'"),
        (lambda s, c: s.create_index(c.FtsIndexConfig(), key="title"), "applies to '#document' only"),
        (lambda s, c: s.create_index(key="genre"), "needs a specific index config"),
        (lambda s, c: s.set_cmek(object()), "CMEK"),
    ],
)
def test_schema_refuses_what_retrieval_cannot_honour(build, message):
    with pytest.raises(InvalidArgumentError, match=message):
        build(retrieval.Schema(), retrieval)


def test_schema_conflicts_with_other_arguments_write_nothing(client):
    from retrieval.schema import HnswIndexConfig, Schema, SparseVectorIndexConfig, VectorIndexConfig
    from retrieval.utils.embedding_functions import ChromaBm25EmbeddingFunction

    schema = Schema().create_index(VectorIndexConfig(space="ip", embedding_function=None))
    with pytest.raises(InvalidArgumentError, match="both schema and configuration set 'hnsw'"):
        client.create_collection("clash", schema=schema, configuration={"hnsw": {"space": "l2"}})
    with pytest.raises(InvalidArgumentError, match="pass it in the schema only"):
        client.create_collection("clash", schema=schema, embedding_function=HashEmbeddingFunction())
    two = Schema().create_index(SparseVectorIndexConfig(embedding_function=ChromaBm25EmbeddingFunction()), key="a")
    with pytest.raises(InvalidArgumentError, match="one sparse index per collection"):
        two.create_index(SparseVectorIndexConfig(embedding_function=ChromaBm25EmbeddingFunction()), key="b")
    assert client.count_collections() == 0
    col = client.create_collection("okay", schema=Schema().create_index(VectorIndexConfig(hnsw=HnswIndexConfig(ef_search=9))),
                                   embedding_function=None)
    assert col.configuration["hnsw"]["ef_search"] == 9 and col.embedding_function is None


# ------------------------------------------------------------------ 7. import paths
def test_chromadb_import_paths():
    from retrieval.api.types import Schema as ApiSchema
    from retrieval.config import Settings
    from retrieval.execution.expression import Search as ExprSearch
    from retrieval.execution.expression.operator import Eq, Gte, K, Key, Knn, Limit, Rrf, Select
    from retrieval.execution.expression.plan import Search
    from retrieval.utils.embedding_functions import (  # noqa: F401
        ChromaBm25EmbeddingFunction,
        DefaultEmbeddingFunction,
        OpenCLIPEmbeddingFunction,
        SentenceTransformerEmbeddingFunction,
        register_embedding_function,
    )

    assert Search is ExprSearch is retrieval.Search and ApiSchema is retrieval.Schema
    assert Settings is retrieval.Settings and K is Key is retrieval.K and Knn is retrieval.Knn
    assert Rrf is retrieval.Rrf and Limit is retrieval.Limit and Select is retrieval.Select
    assert Eq("genre", "jazz").to_dict() == (K("genre") == "jazz").to_dict() == {"genre": {"$eq": "jazz"}}
    assert Gte(K("year"), 2020).to_dict() == {"year": {"$gte": 2020}}


def test_search_written_with_chromadb_import_paths_runs(client):
    from retrieval.execution.expression.operator import Eq, K, Knn, Rrf
    from retrieval.execution.expression.plan import Search

    col = client.create_collection("songs", embedding_function=None)
    col.add(ids=["a", "b", "c"], embeddings=[[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]],
            metadatas=[{"genre": "jazz"}, {"genre": "jazz"}, {"genre": "rock"}])
    search = (Search().where(Eq("genre", "jazz"))
              .rank(Rrf([Knn(query=[1.0, 0.1], return_rank=True), Knn(query=[0.9, 0.0], return_rank=True)]))
              .limit(2).select(K.DOCUMENT, K.SCORE))
    assert col.search(search)["ids"] == [["a", "b"]]


def test_embedding_function_in_configuration_as_chromadb_passes_it(client):
    col = client.create_collection("in-config", configuration={"embedding_function": HashEmbeddingFunction(dim=12),
                                                               "hnsw": {"space": "ip"}})
    assert col.configuration["embedding_function"]["name"] == "hash" and col.configuration["hnsw"]["space"] == "ip"
    col.add(ids=["a"], documents=["hello"])
    assert col.get(include=["embeddings"])["embeddings"][0].shape == (12,)
    spec = {"name": "hash", "type": "known", "config": {"dim": 6}}
    assert client.create_collection("spec", configuration={"embedding_function": spec}).configuration[
        "embedding_function"]["config"]["dim"] == 6
    with pytest.raises(InvalidArgumentError, match="two embedding functions given"):
        client.create_collection("clash", embedding_function=HashEmbeddingFunction(dim=4),
                                 configuration={"embedding_function": HashEmbeddingFunction(dim=5)})
    assert [c.name for c in client.list_collections()] == ["in-config", "spec"]
