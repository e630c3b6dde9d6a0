"""HNSW configuration, distance definitions, and exact vs ANN query planning."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval import InvalidArgumentError
from retrieval.store import reads


def brute_force(X, q, space):
    if space == "l2":
        return ((X - q) ** 2).sum(axis=1)
    if space == "ip":
        return 1.0 - X @ q
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    return 1.0 - Xn @ (q / np.linalg.norm(q))


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    return rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)


@pytest.mark.parametrize("space", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("how", ["configuration", "legacy"])
def test_distances_match_chroma_definitions(client, data, space, how):
    X, Q = data
    kwargs = {"configuration": {"hnsw": {"space": space}}} if how == "configuration" else {"metadata": {"hnsw:space": space}}
    col = client.create_collection("dist", embedding_function=None, **kwargs)
    assert col.configuration["hnsw"]["space"] == space
    col.add(ids=[str(i) for i in range(len(X))], embeddings=X)
    res = col.query(query_embeddings=Q, n_results=10)
    for q, ids, dist in zip(Q, res["ids"], res["distances"]):
        expected = brute_force(X, q, space)
        order = np.argsort(expected)[:10]
        assert [int(i) for i in ids] == order.tolist()
        np.testing.assert_allclose(dist, expected[order], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("space", ["l2", "cosine", "ip"])
def test_hnsw_path_matches_exact(client, space, monkeypatch):
    """Force the ANN path on a small collection: results and distances agree with brute force."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 10)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 16)).astype(np.float32)
    col = client.create_collection("ann", embedding_function=None, configuration={"hnsw": {"space": space, "ef_search": 200}})
    col.add(ids=[str(i) for i in range(len(X))], embeddings=X)
    q = rng.normal(size=16).astype(np.float32)
    res = col.query(query_embeddings=[q], n_results=5)
    expected = brute_force(X, q, space)
    np.testing.assert_allclose(res["distances"][0], np.sort(expected)[:5], rtol=1e-4, atol=1e-4)


def test_configuration_and_legacy_keys(client):
    col = client.create_collection(
        "cfg",
        embedding_function=None,
        metadata={"hnsw:space": "ip", "hnsw:M": 8, "hnsw:construction_ef": 50, "hnsw:search_ef": 20, "owner": "me"},
    )
    hnsw = col.configuration["hnsw"]
    assert (hnsw["space"], hnsw["max_neighbors"], hnsw["ef_construction"], hnsw["ef_search"]) == ("ip", 8, 50, 20)
    assert col.metadata == {"owner": "me"}
    col2 = client.create_collection(
        "cfg2",
        embedding_function=None,
        configuration={"hnsw": {"ef_construction": 64, "max_neighbors": 12, "batch_size": 50, "sync_threshold": 500, "resize_factor": 1.5, "num_threads": 1}},
    )
    reread = client.get_collection("cfg2").configuration["hnsw"]
    assert reread["ef_construction"] == 64 and reread["max_neighbors"] == 12
    assert reread["batch_size"] == 50 and reread["sync_threshold"] == 500 and reread["resize_factor"] == 1.5
    assert col2.configuration["hnsw"]["space"] == "l2"  # default


@pytest.mark.parametrize(
    "configuration,message",
    [
        ({"hnsw": {"space": "hamming"}}, "space"),
        ({"hnsw": {"ef_search": 0}}, "ef_search"),
        ({"hnsw": {"max_neighbors": -1}}, "max_neighbors"),
        ({"hnsw": {"resize_factor": 1.0}}, "resize_factor"),
        ({"hnsw": {"bogus": 1}}, "bogus"),
        ({"nope": {}}, "nope"),
    ],
)
def test_bad_configuration(client, configuration, message):
    with pytest.raises(InvalidArgumentError, match=message):
        client.create_collection("bad", embedding_function=None, configuration=configuration)
    assert client.count_collections() == 0


def test_modify_configuration(client, data):
    X, Q = data
    col = client.create_collection("mod", embedding_function=None)
    col.add(ids=[str(i) for i in range(len(X))], embeddings=X)
    col.modify(configuration={"hnsw": {"ef_search": 33, "num_threads": 1}})
    assert col.configuration["hnsw"]["ef_search"] == 33
    assert client.get_collection("mod").configuration["hnsw"]["ef_search"] == 33
    with pytest.raises(InvalidArgumentError, match="cannot change after creation"):
        col.modify(configuration={"hnsw": {"space": "cosine"}})
    with pytest.raises(InvalidArgumentError, match="configuration"):
        col.modify(metadata={"hnsw:space": "cosine"})
    assert col.query(query_embeddings=Q[:1], n_results=3)["ids"][0]


def test_filtered_query_is_exact_top_k(client, monkeypatch):
    """A filtered query returns the true top-k of the filtered set, never fewer than exist."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 50)
    rng = np.random.default_rng(11)
    X = rng.normal(size=(2000, 12)).astype(np.float32)
    tags = rng.integers(0, 10, size=len(X))
    col = client.create_collection("filtered", embedding_function=None)
    col.add(ids=[str(i) for i in range(len(X))], embeddings=X, metadatas=[{"tag": f"t{t}"} for t in tags])
    for q in rng.normal(size=(5, 12)).astype(np.float32):
        res = col.query(query_embeddings=[q], n_results=10, where={"tag": "t3"})
        members = np.flatnonzero(tags == 3)
        expected = members[np.argsort(((X[members] - q) ** 2).sum(axis=1))[:10]]
        assert [int(i) for i in res["ids"][0]] == expected.tolist()
    # broad filters go through HNSW with a membership test and still fill n_results
    res = col.query(query_embeddings=X[:1], n_results=50, where={"tag": {"$ne": "t0"}})
    assert len(res["ids"][0]) == 50 and all(tags[int(i)] != 0 for i in res["ids"][0])


def test_n_results_at_least_live_count_returns_everything(client, monkeypatch):
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 5)
    X = np.random.default_rng(1).normal(size=(60, 4)).astype(np.float32)
    col = client.create_collection("all", embedding_function=None)
    col.add(ids=[str(i) for i in range(60)], embeddings=X)
    col.delete(ids=[str(i) for i in range(0, 60, 3)])
    res = col.query(query_embeddings=X[:2], n_results=1000)
    assert all(sorted(map(int, ids)) == [i for i in range(60) if i % 3] for ids in res["ids"])


@pytest.mark.parametrize("budget", [0, 64 << 20], ids=["vectors-from-sqlite", "vectors-in-memory"])
def test_exact_search_with_and_without_an_in_memory_copy(client, monkeypatch, budget):
    """Large collections keep no second in-memory copy of their vectors; exact answers stay exact."""
    from retrieval.store import collection_state, vector_store

    monkeypatch.setattr(collection_state, "EXACT_MATRIX_MAX_BYTES", budget)
    monkeypatch.setattr(vector_store, "_READ_CHUNK", 64)  # several chunks even on small data
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 50)
    rng = np.random.default_rng(21)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    tags = rng.integers(0, 6, size=len(X))
    col = client.create_collection("budget", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    col.add(ids=[str(i) for i in range(len(X))], embeddings=X, metadatas=[{"tag": int(t)} for t in tags])
    Q = rng.normal(size=(3, 6)).astype(np.float32)

    def check(where_tag):
        members = np.flatnonzero(tags == where_tag) if where_tag is not None else np.arange(len(X))
        members = [m for m in members if str(m) in alive]
        res = col.query(query_embeddings=Q, n_results=7, where=None if where_tag is None else {"tag": where_tag})
        for q, ids in zip(Q, res["ids"]):
            expected = np.asarray(members)[np.argsort(brute_force(X[members], q, "cosine"), kind="stable")[:7]]
            assert sorted(map(int, ids)) == sorted(expected.tolist())

    alive = {str(i) for i in range(len(X))}
    check(2)
    check(2)  # served from the candidate cache
    col.delete(ids=[str(i) for i in np.flatnonzero(tags == 2)[:5]])  # a write invalidates it
    alive -= {str(i) for i in np.flatnonzero(tags == 2)[:5]}
    check(2)
    res = col.query(query_embeddings=Q[:1], n_results=len(X))  # k >= live: a streamed full scan
    assert sorted(map(int, res["ids"][0])) == sorted(map(int, alive))


@pytest.mark.parametrize("space", ["cosine", "l2"])
def test_holds_tells_which_labels_the_graph_has_with_the_same_vector(space):
    """What a load settles instead of re-inserting: held, not deleted, same vector (cosine vectors
    are compared as hnswlib keeps them, normalised)."""
    from retrieval.config import HnswConfig
    from retrieval.store.hnsw import HnswIndex
    from retrieval.store.vectors import prepare

    x = np.random.default_rng(7).standard_normal((50, 12)).astype(np.float32) * 3
    index = HnswIndex(12, HnswConfig(space=space))
    index.upsert(np.arange(40), x[:40])
    index.remove([5])
    changed = x[6] + 0.01
    labels = np.array([1, 5, 6, 45, 2])  # held; deleted; held with another vector; never given; held
    vectors = prepare(np.stack([x[1], x[5], changed, x[45], x[2]]), space)
    assert index.holds(labels, vectors).tolist() == [True, False, False, False, True]
    assert index.holds(labels[[0, 4]], vectors[[0, 4]]).tolist() == [True, True]


def test_a_query_the_graph_cannot_fill_is_answered_exactly_without_its_batch(monkeypatch):
    """hnswlib answers a batch or raises for all of it; only the query it cannot fill goes exact."""
    import retrieval
    from retrieval.store.collection_state import CollectionState

    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    X = np.random.default_rng(5).normal(size=(300, 8)).astype(np.float32)
    col = retrieval.EphemeralClient().create_collection("short-of-k", embedding_function=None)
    col.add(ids=[str(i) for i in range(len(X))], embeddings=X)
    poison = X[7]
    graph_search, exact_search = CollectionState.ann_search, CollectionState.exact_search
    exact_rows = []

    def ann_short_of_k(self, queries, k, *args):
        if any(np.array_equal(q, poison) for q in queries):
            raise RuntimeError("Cannot return the results in a contiguous 2D array")
        return graph_search(self, queries, k, *args)

    def counted_exact(self, queries, k, *args):
        exact_rows.append(len(queries))
        return exact_search(self, queries, k, *args)

    monkeypatch.setattr(CollectionState, "ann_search", ann_short_of_k)
    monkeypatch.setattr(CollectionState, "exact_search", counted_exact)
    batch = X[[3, 7, 11, 20]]
    res = col.query(query_embeddings=batch, n_results=5, include=["distances"])
    assert exact_rows == [1]  # the poisoned query alone
    for q, ids, dist in zip(batch, res["ids"], res["distances"]):
        expected = np.argsort(((X - q) ** 2).sum(axis=1))[:5]
        assert [int(i) for i in ids] == expected.tolist() and dist[0] == 0.0


def test_a_filter_passing_fewer_than_the_beam_still_gets_its_k_nearest_from_the_graph():
    """The graph is searched with a beam of ef_search results; when fewer pass the filter (most of
    the graph hidden by pending upserts, or a narrow filter) the k nearest still come from it."""
    from retrieval.config import HnswConfig
    from retrieval.store.hnsw import HnswIndex

    x = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    index = HnswIndex(8, HnswConfig(space="l2", ef_search=100))
    index.upsert(np.arange(500), x)
    allowed = set(range(0, 500, 17))  # 30 elements: fewer than the beam of 100, more than k
    q = x[:3] + 0.01
    labels, _ = index.graph_search(q, 10, allowed.__contains__)
    members = np.asarray(sorted(allowed))
    for row, query in zip(labels, q):
        expected = members[np.argsort(((x[members] - query) ** 2).sum(axis=1))[:10]]
        assert sorted(row.tolist()) == sorted(expected.tolist())
    with pytest.raises(RuntimeError):  # fewer than k pass: the caller answers exactly
        index.graph_search(q, 10, set(range(5)).__contains__)
