"""The graph's stragglers searched through lists (store/stragglers.py), and recall at the documented settings."""

from __future__ import annotations

import numpy as np
import pytest

import retrieval
from retrieval.store import graph_upkeep, reads, stragglers
from retrieval.store.hnsw import HnswIndex
from retrieval.config import HnswConfig
from retrieval.store.stragglers import Stragglers
from retrieval.store.vectors import VectorMatrix

DIM = 32


def _clustered(n: int, dim: int, clusters: int, seed: int, noise: float = 0.6) -> np.ndarray:
    """The scale benchmark's shape of data (bench/scale_data.py): unit centres plus noise, normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32) * np.float32(noise / np.sqrt(dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def listed(monkeypatch):
    """Stragglers that are searched through lists from 64 of them on."""
    monkeypatch.setattr(stragglers, "LISTS_MIN_ROWS", 64)


@pytest.mark.parametrize("space", ["l2", "cosine", "ip"])
def test_every_listed_straggler_is_found_by_its_own_vector(listed, space):
    x = np.random.default_rng(1).standard_normal((3000, DIM)).astype(np.float32)
    if space == "ip":  # unit vectors: in ip space a longer vector could outrank a row's own one
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.arange(10, 3010, dtype=np.int64)
    found = Stragglers(DIM, space)
    found.upsert(labels, x)
    built_at_once = Stragglers.of(DIM, space, labels, x)  # a sweep's result: straight into lists
    for each in (found, built_at_once):
        assert each.indexed and sorted(each.labels.tolist()) == labels.tolist()
        got, dist = each.search(x, 1)
        assert (got[:, 0] == labels).all()
        assert np.allclose(dist[:, 0], 0.0, atol=1e-5)


def test_lists_follow_changes_and_removals(listed):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, DIM)).astype(np.float32)
    labels = np.arange(2000, dtype=np.int64)
    found = Stragglers(DIM, "l2")
    found.upsert(labels, x)
    lists = found._lists
    # A changed vector: the new one finds the label, the old one no longer returns it at distance 0.
    moved = rng.standard_normal((1, DIM)).astype(np.float32) * 5
    found.upsert(labels[:1], moved)
    assert found.search(moved, 1)[0][0, 0] == 0
    got, dist = found.search(x[:1], 3)
    assert not ((got[0] == 0) & (dist[0] < 1e-3)).any()
    # A removed label is never returned; a new one is found from the tail before any rebuild.
    found.remove(labels[1:2])
    assert 1 not in found.search(x[1:2], 10)[0][0]
    new = rng.standard_normal((1, DIM)).astype(np.float32)
    found.upsert(np.asarray([5000]), new)
    assert found.search(new, 1)[0][0, 0] == 5000
    assert found._lists is lists  # three changes: still the same lists plus the tail
    # Enough changes rebuild the lists; every straggler is still found by its own vector.
    fresh = rng.standard_normal((300, DIM)).astype(np.float32)
    found.upsert(np.arange(6000, 6300), fresh)
    assert found._lists is not lists and found._loose.count == 0
    got, _ = found.search(fresh, 1)
    assert (got[:, 0] == np.arange(6000, 6300)).all()
    assert found.count == 2000 - 1 + 1 + 300
    expected = set(range(2000)) - {1} | {5000} | set(range(6000, 6300))
    assert sorted(found.labels.tolist()) == sorted(expected)
    assert found.has(np.asarray([0, 1, 5000, 6299, 7000])).tolist() == [True, False, True, True, False]


def test_filtered_search_of_lists_returns_only_what_passes(listed):
    x = np.random.default_rng(6).standard_normal((2000, DIM)).astype(np.float32)
    labels = np.arange(2000, dtype=np.int64)
    found = Stragglers(DIM, "l2")
    found.upsert(labels, x)
    found.upsert(np.asarray([1]), x[1:2] + 1)  # one in the exact tail too
    x[1] += 1
    odd = lambda label: label % 2 == 1  # noqa: E731
    got, dist = found.search(x, 3, odd)
    finite = np.isfinite(dist)
    assert (got[finite] % 2 == 1).all() and (got[~finite] == -1).all()
    assert (got[1::2, 0] == labels[1::2]).all()  # each passing straggler by its own vector
    assert not (got[0::2, 0] == labels[0::2]).any()


@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_a_filter_that_passes_fewer_than_k_returns_only_those(listed, space):
    x = np.random.default_rng(7).standard_normal((2000, DIM)).astype(np.float32)
    found = Stragglers(DIM, space)
    found.upsert(np.arange(2000), x)
    found.remove(np.asarray([8]))  # a dropped row next to the passing one
    got, dist = found.search(x[7:9], 5, {7, 8}.__contains__)
    assert got[0].tolist() == [7, -1, -1, -1, -1] and np.isinf(dist[0, 1:]).all()
    assert set(got[1].tolist()) <= {7, -1}  # the dropped one never comes back (7 only if its list is probed)


def test_lists_give_way_to_a_scan_when_few_remain(listed):
    x = np.random.default_rng(3).standard_normal((100, DIM)).astype(np.float32)
    found = Stragglers(DIM, "cosine")
    found.upsert(np.arange(100), x)
    assert found.indexed
    found.remove(np.arange(50))
    assert not found.indexed and sorted(found.labels.tolist()) == list(range(50, 100))
    assert (found.search(x[50:], 1)[0][:, 0] == np.arange(50, 100)).all()


def test_lists_find_near_neighbours_among_clustered_stragglers(listed):
    """Not only a straggler's own vector: near-duplicate queries get (nearly) the exact top-10 of the stragglers."""
    x = _clustered(4000, DIM, clusters=40, seed=4)
    found = Stragglers(DIM, "cosine")
    found.upsert(np.arange(len(x)), x)
    exact = VectorMatrix(DIM, "cosine")
    exact.upsert(np.arange(len(x)), x)
    rng = np.random.default_rng(5)
    q = x[rng.choice(len(x), 200, replace=False)] + rng.standard_normal((200, DIM)).astype(np.float32) * 0.02
    got, _ = found.search(q, 10)
    truth, _ = exact.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())])
    assert recall >= 0.9


def test_graph_stragglers_searched_through_lists_are_found_in_a_collection(monkeypatch):
    """End to end: the stragglers a sweep finds sit in lists, and every record is still found by its
    own vector through the HNSW path, with and without a filter (hnsw.py, stragglers)."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    monkeypatch.setattr(reads, "EXACT_FILTER_MAX_ROWS", 0)
    monkeypatch.setattr(reads, "EXACT_FILTER_MAX_FRACTION", 0.0)
    monkeypatch.setattr(stragglers, "LISTS_MIN_ROWS", 8)
    n = 6000
    vectors = np.random.default_rng(3).standard_normal((n, 64)).astype(np.float32)
    ids = [str(i) for i in range(n)]
    with retrieval.EphemeralClient() as client:
        col = client.create_collection("live", configuration={"hnsw": {"space": "l2"}})
        col.add(ids=ids, embeddings=vectors, metadatas=[{"even": i % 2 == 0} for i in range(n)])
        (report,) = client.verify(sample=None)
        assert report.ok and report.stragglers >= 8  # the graph alone would miss these records
        assert client._backend.engine.state(col._record).index().stragglers.indexed
        res = col.query(query_embeddings=vectors, n_results=3, include=["distances"])
        assert [r[0] for r in res["ids"]] == ids
        assert all(d[0] == 0.0 for d in res["distances"])
        chosen = [i for i in range(n) if i % 2 == 1]
        res = col.query(query_embeddings=vectors[chosen], n_results=2, where={"even": False}, include=[])
        assert [r[0] for r in res["ids"]] == [ids[i] for i in chosen]


def _recall_at_10(configuration: dict, x: np.ndarray, queries: np.ndarray) -> float:
    with retrieval.EphemeralClient() as client:
        col = client.create_collection("recall", embedding_function=None, configuration={"hnsw": {"space": "cosine", **configuration}})
        col.add(ids=[str(i) for i in range(len(x))], embeddings=x)
        assert client._backend.engine.builder.idle(timeout=120)  # the graph answers, not the pending tail's exact scan
        res = col.query(query_embeddings=queries, n_results=10, include=[])
    truth = np.argsort(-(queries @ x.T), axis=1, kind="stable")[:, :10]
    return float(np.mean([len({int(i) for i in got} & set(t.tolist())) / 10 for got, t in zip(res["ids"], truth)]))


def test_documented_high_recall_setting_reaches_its_recall_on_clustered_data(monkeypatch):
    """README: ``{"ef_search": 400}`` keeps recall@10 >= 0.95 where clusters are dense (the scale
    benchmark's data, smaller). A much narrower search on the same data misses, so the measure can fail."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    x = _clustered(8000, 64, clusters=8, seed=6)
    rng = np.random.default_rng(7)
    q = x[rng.choice(len(x), 100, replace=False)] + rng.standard_normal((100, 64)).astype(np.float32) * np.float32(0.1 / 8)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    assert _recall_at_10({"ef_search": 400}, x, q) >= 0.95
    assert _recall_at_10({}, x, q) >= 0.8  # the defaults (ef_search 100, max_neighbors 16)
    assert _recall_at_10({"ef_search": 10, "max_neighbors": 4}, x, q) < 0.95


def test_listed_stragglers_come_back_with_a_reopened_checkpoint(tmp_path, monkeypatch):
    """The checkpoint keeps straggler labels only (its format is unchanged); a reopen lists them again."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    monkeypatch.setattr(stragglers, "LISTS_MIN_ROWS", 8)
    vectors = np.random.default_rng(4).standard_normal((6000, 64)).astype(np.float32)
    ids = [str(i) for i in range(len(vectors))]
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("kept", configuration={"hnsw": {"space": "l2"}})
        col.add(ids=ids, embeddings=vectors)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("kept")
        index = client._backend.engine.state(col._record).index()
        assert index.stragglers.count >= 8 and index.stragglers.indexed
        res = col.query(query_embeddings=vectors, n_results=2, include=["distances"])
        assert [r[0] for r in res["ids"]] == ids
        assert all(d[0] == 0.0 for d in res["distances"])


def test_records_inserted_between_sweeps_are_found_by_their_own_vector(monkeypatch):
    """A record the builder inserts leaves the pending tail at once, before any sweep (with background
    sweeps off, sweeps run only as the graph grows by half), so its own search must find it then: the
    builder lists those the graph misses as stragglers with each chunk it inserts."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    monkeypatch.setattr(graph_upkeep, "SWEEP_WHEN_IDLE", False)
    x = np.random.default_rng(11).standard_normal((7000, 64)).astype(np.float32)
    ids = [str(i) for i in range(len(x))]
    with retrieval.EphemeralClient() as client:
        col = client.create_collection("between", embedding_function=None,
                                       configuration={"hnsw": {"space": "l2", "ef_search": 12, "max_neighbors": 6}})
        col.add(ids=ids[:6000], embeddings=x[:6000])
        client._backend.engine.flush()  # swept: the next sweep is due at 9,000 records
        col.add(ids=ids[6000:], embeddings=x[6000:])
        assert client._backend.engine.builder.idle(timeout=120)
        state = client._backend.engine.state(col._record)
        with state.lock:
            assert len(state.pending) == 0 and state.index().changed_since_sweep == 1000  # inserted, not swept
        res = col.query(query_embeddings=x[6000:], n_results=1, include=["distances"])
        missed = [i for i, got in zip(ids[6000:], res["ids"]) if got != [i]]
        assert not missed, f"{len(missed)} of 1,000 new records not found by their own vector, e.g. {missed[:5]}"


@pytest.mark.parametrize("background_sweeps", [False, True])
def test_records_later_insertions_cut_off_are_found_again_after_the_background_sweep(monkeypatch, background_sweeps):
    """Inserting new records prunes old records' in-links; a record left with none is no longer found
    by its own vector, new or old. Once the writes stop, the builder sweeps in the background and
    lists those as stragglers. Without that sweep (the control) some stay lost until the graph grew by half."""
    monkeypatch.setattr(graph_upkeep, "SWEEP_WHEN_IDLE", background_sweeps)
    x, ids = _cut_off_data(monkeypatch)
    with retrieval.EphemeralClient() as client:
        col = _swept_sparse_collection(client, x, ids)
        for start in range(6000, 8500, 500):
            col.add(ids=ids[start : start + 500], embeddings=x[start : start + 500])
        assert client._backend.engine.builder.idle(timeout=120)
        res = col.query(query_embeddings=x, n_results=1)
        missed = [i for i, got in zip(ids, res["ids"]) if got != [i]]
    if background_sweeps:
        assert not missed, f"{len(missed)} records not found by their own vector after the sweep, e.g. {missed[:5]}"
    else:
        assert missed, "the control found every record: this data no longer shows cut-offs"


def test_a_sweep_that_insertions_interleave_with_keeps_their_straggler_state():
    """Labels inserted or removed while a sweep reads its pages keep the state those writes left:
    the sweep may have seen them before."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    index = HnswIndex(8, HnswConfig(space="l2"))
    index.upsert(np.arange(40), x[:40])
    index.begin_sweep()
    assert index.sweep_current
    index.remove(np.array([2]))  # the sweep saw 2 missed, then it was deleted
    index.upsert(np.array([40, 41]), x[40:42])  # inserted meanwhile; 41 listed by the builder's self-query
    index.stragglers.upsert(np.array([41]), x[41:42])
    assert not index.sweep_current
    missed = [(np.array([1, 2, 41]), x[[1, 2, 41]])]  # 41 as the sweep read it: say it missed it too
    index.stragglers.upsert(np.array([7]), x[7:8])  # from the previous sweep: the new one found it
    index.set_stragglers(missed, 40)
    assert sorted(index.stragglers.labels.tolist()) == [1, 41]
    assert index.changed_since_sweep == 2 and not index.sweep_current


@pytest.mark.parametrize("recheck", [False, True])
def test_a_burst_is_self_queried_again_once_the_tail_drains(monkeypatch, recheck):
    """A later chunk of a burst (a large add, a replay after a crash) may cut off a record an earlier
    chunk inserted, after that chunk's own check. When the tail drains, the builder checks the
    earlier chunks again, so every new record is findable without waiting for the sweep (off here;
    old records it cut off are the sweep's). The control shows the cut-offs exist."""
    monkeypatch.setattr(graph_upkeep, "SWEEP_WHEN_IDLE", False)
    if not recheck:
        monkeypatch.setattr(graph_upkeep, "RECHECK_MAX", 0)
    x, ids = _cut_off_data(monkeypatch)
    with retrieval.EphemeralClient() as client:
        col = _swept_sparse_collection(client, x, ids)
        col.add(ids=ids[6000:], embeddings=x[6000:])  # one burst of ten chunks
        assert client._backend.engine.builder.idle(timeout=120)
        res = col.query(query_embeddings=x[6000:], n_results=1)
        missed = [i for i, got in zip(ids[6000:], res["ids"]) if got != [i]]
    if recheck:
        assert not missed, f"{len(missed)} of 2,500 new records not found by their own vector, e.g. {missed[:5]}"
    else:
        assert missed, "the control found every new record: this data no longer shows cut-offs"


def _cut_off_data(monkeypatch) -> tuple[np.ndarray, list[str]]:
    """64-d Gaussian vectors that a sparse graph cuts off as they are inserted in chunks of 250 (later
    chunks cut off records of earlier ones), with queries going through the graph."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    monkeypatch.setattr(graph_upkeep, "INSERT_CHUNK", 250)
    x = np.random.default_rng(5).standard_normal((8500, 64)).astype(np.float32)
    return x, [str(i) for i in range(len(x))]


def _swept_sparse_collection(client, x: np.ndarray, ids: list[str]):
    """A collection of the first 6,000 records in a sparse graph (M 6, ef 12), indexed and swept; the
    2,500 left to add stay under SWEEP_GROWTH, so no sweep follows them for growth."""
    col = client.create_collection("cut", embedding_function=None,
                                   configuration={"hnsw": {"space": "l2", "ef_search": 12, "max_neighbors": 6}})
    col.add(ids=ids[:6000], embeddings=x[:6000])
    client._backend.engine.flush()
    return col
