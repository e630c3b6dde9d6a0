"""The Search API against real collections: Knn equals query(), hybrid BM25 + dense, multimodal Knn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import embedders.shapes
import retrieval
from embedders import HashEmbeddingFunction, OpenCLIPEmbeddingFunction
from embedders.bm25 import BM25EmbeddingFunction
from embedders.sparse import SparseVector
from loaders import ImageLoader
from retrieval import GroupBy, InvalidArgumentError, K, Knn, MinK, Rrf, Search

CORPUS = json.loads((Path(__file__).parent / "data" / "hybrid_corpus.json").read_text())
SPARSE = {"sparse": {"key": "sparse_embedding", "embedding_function": BM25EmbeddingFunction()}}


@pytest.fixture(params=["ephemeral", "persistent"])
def vectors(request, tmp_path):
    client = retrieval.EphemeralClient() if request.param == "ephemeral" else retrieval.PersistentClient(str(tmp_path / "db"))
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 16)).astype(np.float32)
    col = client.create_collection("vecs", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    col.add(
        ids=[f"v{i}" for i in range(len(X))],
        embeddings=X,
        metadatas=[{"group": f"g{i % 7}", "i": i} for i in range(len(X))],
        documents=[f"vector number {i}" for i in range(len(X))],
    )
    yield col, X, rng
    client.close()


def test_knn_alone_equals_query(vectors):
    col, X, rng = vectors
    q = rng.normal(size=16).astype(np.float32)
    for where in (None, {"group": "g3"}):
        expected = col.query(query_embeddings=[q], n_results=16, where=where, include=["distances"])
        search = Search(where=where, rank=Knn(query=q, limit=16), limit=16, select=[K.SCORE])
        rows = col.search(search).rows()[0]
        assert [r["id"] for r in rows] == expected["ids"][0]
        np.testing.assert_allclose([r["score"] for r in rows], expected["distances"][0], rtol=1e-5, atol=1e-6)


def test_builder_and_dict_forms_agree_on_a_collection(vectors):
    col, X, rng = vectors
    q = rng.normal(size=16).astype(np.float32)
    built = (
        Search()
        .where((K("i") >= 100) & K.DOCUMENT.contains("number"))
        .rank(Knn(query=q, limit=50) * 0.5 + Knn(query=X[0], limit=50, default=2.0) * 0.5)
        .group_by(GroupBy(keys=["group"], aggregate=MinK(keys=[K.SCORE], k=2)))
        .limit(5, offset=1)
        .select(K.DOCUMENT, K.SCORE, "group")
    )
    wire = Search.from_dict(json.loads(json.dumps(built.to_dict())))
    a, b = col.search(built).rows()[0], col.search(wire).rows()[0]
    assert a == b and len(a) == 5
    assert all(int(r["id"][1:]) >= 100 for r in a)
    assert all(set(r["metadata"]) == {"group"} for r in a)


def test_rank_none_returns_insertion_order(vectors):
    col, _, _ = vectors
    rows = col.search(Search().where(K("group") == "g1").limit(3, offset=2)).rows()[0]
    assert [r["id"] for r in rows] == ["v15", "v22", "v29"]


def test_errors_name_the_bad_part(vectors):
    col, _, _ = vectors
    with pytest.raises(InvalidArgumentError, match="not an index"):
        col.search(Search().rank(Knn(query=[0.1] * 16, key="nope")))
    with pytest.raises(InvalidArgumentError, match="16-d"):
        col.search(Search().rank(Knn(query=[0.1] * 3)))
    with pytest.raises(InvalidArgumentError):
        col.search(Search().rank(Knn(query=[0.1] * 16, limit=-1)))
    with pytest.raises(InvalidArgumentError):
        Rrf([])


@pytest.fixture(scope="module")
def corpus_collection():
    """The bundled text set, with MiniLM (the default embedding function) and BM25."""
    client = retrieval.EphemeralClient()
    col = client.create_collection("corpus", configuration=SPARSE)
    docs = CORPUS["documents"]
    col.add(ids=[d["id"] for d in docs], documents=[d["text"] for d in docs], metadatas=[d["metadata"] for d in docs])
    return col


def _metrics(col, make_rank):
    recall, rr = [], []
    for q in CORPUS["queries"]:
        ids = [r["id"] for r in col.search(Search().rank(make_rank(q["text"])).limit(10)).rows()[0]]
        relevant = set(q["relevant"])
        recall.append(len(relevant & set(ids)) / len(relevant))
        rr.append(next((1 / (i + 1) for i, x in enumerate(ids) if x in relevant), 0.0))
    return float(np.mean(recall)), float(np.mean(rr))


def test_hybrid_beats_dense_and_bm25(corpus_collection):
    col = corpus_collection
    dense = _metrics(col, lambda t: Knn(query=t, limit=50))
    bm25 = _metrics(col, lambda t: Knn(query=t, key="sparse_embedding", limit=50))
    rrf = _metrics(
        col,
        # default=50: a document missing from one list ranks just past its end instead of being dropped
        lambda t: Rrf(
            [
                Knn(query=t, limit=50, return_rank=True, default=50),
                Knn(query=t, key="sparse_embedding", limit=50, return_rank=True, default=50),
            ]
        ),
    )
    print(f"\nrecall@10 / MRR@10: dense {dense[0]:.3f}/{dense[1]:.3f}  bm25 {bm25[0]:.3f}/{bm25[1]:.3f}  rrf {rrf[0]:.3f}/{rrf[1]:.3f}")
    assert rrf[0] >= max(dense[0], bm25[0]) and rrf[1] > dense[1] and rrf[1] > bm25[1]


def test_sparse_index_follows_writes():
    client = retrieval.EphemeralClient()
    col = client.create_collection("sparse", embedding_function=HashEmbeddingFunction(), configuration=SPARSE)
    col.add(ids=["a", "b"], documents=["error E-4012 on pump", "router manual"])
    hits = lambda text: [r["id"] for r in col.search(Search().rank(Knn(query=text, key="sparse_embedding"))).rows()[0]]  # noqa: E731
    assert hits("E-4012") == ["a"]
    col.update(ids=["a"], documents=["nothing relevant"])
    assert hits("E-4012") == []
    col.upsert(ids=["c"], documents=["E-4012 again"])
    col.delete(ids=["b"])
    assert hits("E-4012") == ["c"] and hits("router") == []
    query_vec = BM25EmbeddingFunction().embed_query(["E-4012"])[0]
    assert isinstance(query_vec, SparseVector)
    rows = col.search(Search().rank(Knn(query=query_vec, key="sparse_embedding"))).rows()[0]
    assert [r["id"] for r in rows] == ["c"]


def test_sparse_configuration_persists(tmp_path):
    path = str(tmp_path / "db")
    with retrieval.PersistentClient(path) as client:
        col = client.create_collection("persisted", embedding_function=HashEmbeddingFunction(), configuration=SPARSE)
        col.add(ids=["a"], documents=["quartz watch"])
    with retrieval.PersistentClient(path) as client:
        col = client.get_collection("persisted")
        assert col.configuration["sparse"]["embedding_function"]["name"] == "chroma_bm25"  # chromadb's name
        col.add(ids=["b"], documents=["quartz crystal"])
        rows = col.search(Search().rank(Knn(query="quartz", key="sparse_embedding"))).rows()[0]
        assert {r["id"] for r in rows} == {"a", "b"}


def test_multimodal_knn_by_text_and_image_with_uri_selection(tmp_path):
    paths = []
    for colour, shape in [("red", "circle"), ("blue", "star"), ("green", "triangle")]:
        path = tmp_path / f"{colour}_{shape}.png"
        embedders.shapes.render_shape(colour, shape, size=96, rng=np.random.default_rng(len(paths))).save(path)
        paths.append(str(path))
    col = retrieval.EphemeralClient().create_collection(
        "pics", embedding_function=OpenCLIPEmbeddingFunction(device="cpu"), data_loader=ImageLoader()
    )
    col.add(ids=["red", "blue", "green"], uris=paths)
    rows = col.search(Search().rank(Knn(query="a blue star")).limit(1).select(K.URI, K.SCORE, K("#data"))).rows()[0]
    assert rows[0]["id"] == "blue" and rows[0]["uri"] == paths[1]
    image = np.asarray(embedders.shapes.render_shape("green", "triangle", size=150, rng=np.random.default_rng(9)))
    assert col.search(Search().rank(Knn(query=image)).limit(1)).rows()[0][0]["id"] == "green"
