"""Each vector is stored once: recent ones in SQLite, the rest in the collection's vector file.

Covers where vectors live (vector_store.py), the file's crash and damage story (vector_file.py),
checkpoints that leave the vectors out (graph_file.py), and databases written before the file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import retrieval
from retrieval.store import reads, vector_store
from retrieval.store.checkpoint_files import INDEX_FILENAME
from retrieval.store.vector_file import HEADER_BYTES, VectorFileError, slot_dtype
from retrieval.store.vector_store import vector_file_path
from tests.test_hnsw import brute_force

DIM = 128
N = 300


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch):
    monkeypatch.setattr(vector_store, "MOVE_BATCH", 64)
    monkeypatch.setattr("retrieval.store.collection_state.MOVE_BATCH", 64)
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)  # queries go through the graph


def _vectors(n=N, seed=0):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _sql(path: Path, query: str, *args):
    with sqlite3.connect(path / "retrieval.sqlite3") as conn:
        return conn.execute(query, args).fetchall()


def _filled(path: Path, space="l2"):
    vectors = _vectors()
    with retrieval.PersistentClient(path=str(path)) as client:
        col = client.create_collection("col", configuration={"hnsw": {"space": space}})
        col.add(ids=[str(i) for i in range(N)], embeddings=vectors, metadatas=[{"i": i} for i in range(N)])
        client._backend.engine.flush()  # index, move and checkpoint everything
        return col.id, vectors


def _finds_all(col, vectors) -> bool:
    got = col.query(query_embeddings=vectors, n_results=1, include=[])
    return got["ids"] == [[str(i)] for i in range(len(vectors))]


def test_vectors_move_into_the_file_and_read_back_exactly(tmp_path):
    collection_id, vectors = _filled(tmp_path)
    assert _sql(tmp_path, "SELECT COUNT(*) FROM vectors") == [(0,)]
    assert _sql(tmp_path, "SELECT COUNT(*) FROM records WHERE slot IS NULL") == [(0,)]
    assert _sql(tmp_path, "SELECT vector_slots FROM collections WHERE id = ?", collection_id) == [(N,)]
    size = vector_file_path(tmp_path, collection_id).stat().st_size
    assert size == HEADER_BYTES + N * slot_dtype(DIM).itemsize
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        got = col.get(ids=["7", "3"], include=["embeddings"])
        np.testing.assert_array_equal(got["embeddings"], vectors[[7, 3]])
        assert _finds_all(col, vectors)


def test_checkpoint_leaves_the_vectors_to_the_file(tmp_path):
    collection_id, vectors = _filled(tmp_path)
    index_bytes = (tmp_path / collection_id / INDEX_FILENAME).stat().st_size
    assert index_bytes < vectors.nbytes / 2  # links and labels only: the vectors are in the file once
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        assert _finds_all(col, vectors)
        got = col.query(query_embeddings=vectors[:5], n_results=1, include=["distances"])
        assert np.allclose(got["distances"], 0.0)


@pytest.mark.parametrize("space", ["cosine", "ip"])
def test_stripped_checkpoint_in_other_spaces(tmp_path, space):
    _, vectors = _filled(tmp_path, space)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        assert _finds_all(client.get_collection("col"), vectors)


def test_updates_and_deletes_after_the_move(tmp_path):
    _, vectors = _filled(tmp_path)
    fresh = _vectors(3, seed=9)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        col.update(ids=["1", "2", "3"], embeddings=fresh)
        col.delete(ids=["4"])
        np.testing.assert_array_equal(col.get(ids=["1", "2", "3"], include=["embeddings"])["embeddings"], fresh)
        client._backend.engine.flush()
    assert _sql(tmp_path, "SELECT COUNT(*) FROM vectors") == [(0,)]
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        np.testing.assert_array_equal(col.get(ids=["1", "2", "3"], include=["embeddings"])["embeddings"], fresh)
        assert col.get(ids=["4"])["ids"] == []
        assert col.query(query_embeddings=fresh[:1], n_results=1, include=[])["ids"] == [["1"]]
        assert col.count() == N - 1


def test_recent_writes_stay_in_sqlite_until_moved_and_are_found(tmp_path):
    _, vectors = _filled(tmp_path)
    extra = _vectors(5, seed=3)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        # Nothing moves them now. (Not stop_background(): it cancels only collections already open,
        # and the builder would move these once idle, racing the check below.)
        builder = client._backend.engine.builder
        builder.pause()
        try:
            col.add(ids=[f"x{i}" for i in range(5)], embeddings=extra)
            assert _sql(tmp_path, "SELECT COUNT(*) FROM vectors") == [(5,)]
            got = col.get(ids=["x2", "5"], include=["embeddings"])
            np.testing.assert_array_equal(got["embeddings"], np.stack([extra[2], vectors[5]]))
        finally:
            builder.resume()
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        assert col.query(query_embeddings=extra[4:5], n_results=1, include=[])["ids"] == [["x4"]]


def test_a_move_whose_commit_fails_leaves_nothing_behind(tmp_path, monkeypatch):
    collection_id, vectors = _filled(tmp_path)
    extra = _vectors(100, seed=4)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        client._backend.engine.stop_background()
        state = client._backend.engine.state(col._record)
        real_append = state.vectors.file.append

        def append_then_fail(labels, batch):
            real_append(labels, batch)
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(state.vectors.file, "append", append_then_fail)
        col.add(ids=[f"x{i}" for i in range(100)], embeddings=extra)  # the writer's move fails: the add does not
        assert state.vectors.file.count == N  # the appended slots were cut off again
        monkeypatch.undo()
        np.testing.assert_array_equal(col.get(ids=["x7"], include=["embeddings"])["embeddings"], extra[7:8])
    assert _sql(tmp_path, "SELECT COUNT(*) FROM vectors") == [(100,)]
    assert vector_file_path(tmp_path, collection_id).stat().st_size == HEADER_BYTES + N * slot_dtype(DIM).itemsize


def test_uncommitted_and_torn_slots_are_cut_off_on_open(tmp_path):
    """A crash after appending slots and before their commit leaves them (maybe torn) past the
    committed count: nothing refers to them, and opening cuts them off."""
    collection_id, vectors = _filled(tmp_path)
    path = vector_file_path(tmp_path, collection_id)
    with open(path, "ab") as f:
        f.write(b"\x7f" * (slot_dtype(DIM).itemsize * 2 + 100))
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        assert _finds_all(col, vectors)
        col.add(ids=["new"], embeddings=_vectors(1, seed=5))
        client._backend.engine.flush()
        (report,) = client.verify(sample=None)
        assert report.ok, str(report)
    assert path.stat().st_size == HEADER_BYTES + (N + 1) * slot_dtype(DIM).itemsize


def test_a_short_or_missing_vector_file_is_reported_not_ignored(tmp_path):
    collection_id, _ = _filled(tmp_path)
    path = vector_file_path(tmp_path, collection_id)
    with open(path, "r+b") as f:
        f.truncate(HEADER_BYTES + 10 * slot_dtype(DIM).itemsize)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        with pytest.raises(VectorFileError, match="holds 10 vectors but the database committed 300"):
            client.get_collection("col").get(ids=["1"], include=["embeddings"])
        (report,) = client.verify(sample=None)
        assert not report.ok and "holds 10 vectors" in report.vector_file_problem
    path.unlink()
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        (report,) = client.verify(sample=None)
        assert "missing" in report.vector_file_problem


@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_a_damaged_slot_is_found_by_verify_and_repaired_from_the_graph(tmp_path, space):
    collection_id, vectors = _filled(tmp_path, space)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        assert _finds_all(col, vectors)  # the graph is loaded: it holds its own copy of each vector
        (label,) = _sql(tmp_path, "SELECT label FROM records WHERE id = '42'")[0]
        (slot,) = _sql(tmp_path, "SELECT slot FROM records WHERE id = '42'")[0]
        offset = HEADER_BYTES + slot * slot_dtype(DIM).itemsize + 16 + 4 * 3
        with open(vector_file_path(tmp_path, collection_id), "r+b") as f:  # bit rot in one float
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x40]))
        (report,) = client.verify(sample=None)
        assert report.damaged_vectors == 1 and report.examples == ["42"]
        (report,) = client.verify(repair=True, sample=None)
        assert report.repaired and report.problems_after_repair == 0, str(report)
        got = col.get(ids=["42"], include=["embeddings"])["embeddings"][0]
        np.testing.assert_allclose(got, vectors[42], rtol=1e-5, atol=1e-6)


def test_a_version_1_database_upgrades_and_moves_its_vectors(tmp_path, monkeypatch):
    """Version 1 kept every vector in SQLite: it opens, reads, and moves them once written to."""
    monkeypatch.setattr("retrieval.store.collection_state.MOVE_BATCH", 10**9)
    vectors = _vectors()
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        client._backend.engine.stop_background()
        col = client.create_collection("col", configuration={"hnsw": {"space": "l2"}})
        col.add(ids=[str(i) for i in range(N)], embeddings=vectors)
    with sqlite3.connect(tmp_path / "retrieval.sqlite3") as conn:  # back to version 1's shape
        assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone() == (N,)
        conn.execute("ALTER TABLE records DROP COLUMN slot")
        conn.execute("ALTER TABLE collections DROP COLUMN vector_slots")
        conn.execute("UPDATE schema_info SET value = '1' WHERE key = 'version'")
    for p in (tmp_path / "vectors").glob("*"):
        p.unlink()
    monkeypatch.undo()
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        np.testing.assert_array_equal(col.get(ids=["9"], include=["embeddings"])["embeddings"], vectors[9:10])
        col.add(ids=["new"], embeddings=_vectors(1, seed=8))
        client._backend.engine.flush()
    assert _sql(tmp_path, "SELECT value FROM schema_info WHERE key = 'version'") == [("2",)]
    assert _sql(tmp_path, "SELECT COUNT(*) FROM vectors") == [(0,)]
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        assert _finds_all(client.get_collection("col"), vectors)


def test_deleting_a_collection_removes_its_vector_file(tmp_path):
    collection_id, _ = _filled(tmp_path)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        client.delete_collection("col")
    assert not vector_file_path(tmp_path, collection_id).exists()


def test_in_memory_clients_keep_vectors_in_sqlite():
    client = retrieval.EphemeralClient()
    col = client.create_collection("col")
    vectors = _vectors(100)
    col.add(ids=[str(i) for i in range(100)], embeddings=vectors)
    np.testing.assert_array_equal(col.get(ids=["5"], include=["embeddings"])["embeddings"], vectors[5:6])
    assert _finds_all(col, vectors)


def test_a_large_write_goes_straight_into_the_file(tmp_path):
    collection_id, _ = _filled(tmp_path)
    extra = _vectors(400, seed=6)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        client._backend.engine.stop_background()  # nothing moves anything in the background
        col.add(ids=[f"x{i}" for i in range(400)], embeddings=extra)
        assert _sql(tmp_path, "SELECT COUNT(*) FROM vectors") == [(0,)]
        assert _sql(tmp_path, "SELECT vector_slots FROM collections WHERE id = ?", collection_id) == [(N + 400,)]
        np.testing.assert_array_equal(col.get(ids=["x399"], include=["embeddings"])["embeddings"], extra[399:400])
        col.upsert(ids=[str(i) for i in range(300)], embeddings=extra[:300])  # new vectors for old records
        assert _sql(tmp_path, "SELECT COUNT(*) FROM vectors") == [(0,)]
        np.testing.assert_array_equal(col.get(ids=["5"], include=["embeddings"])["embeddings"], extra[5:6])
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        assert col.query(query_embeddings=extra[399:400], n_results=1, include=[])["ids"] == [["x399"]]
        np.testing.assert_array_equal(col.get(ids=["5"], include=["embeddings"])["embeddings"], extra[5:6])


def test_a_large_write_that_fails_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    from retrieval.store import engine as engine_module

    collection_id, _ = _filled(tmp_path)
    path = vector_file_path(tmp_path, collection_id)
    size = path.stat().st_size
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")

        def fail(*args, **kwargs):
            raise sqlite3.OperationalError("disk I/O error (simulated)")

        monkeypatch.setattr(engine_module, "log_changes", fail)  # after the append, before the commit
        with pytest.raises(Exception, match="simulated"):
            col.add(ids=[f"x{i}" for i in range(400)], embeddings=_vectors(400, seed=7))
        monkeypatch.undo()
        assert path.stat().st_size == size
        assert col.count() == N
        col.add(ids=["after"], embeddings=_vectors(1, seed=8))
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        (report,) = client.verify(sample=None)
        assert report.ok and report.records == N + 1, str(report)


def test_loading_the_graph_does_not_keep_the_vector_file_in_memory(tmp_path):
    """The load reads every slot through the mapping; those pages are given back afterwards."""
    big = np.random.default_rng(1).standard_normal((4000, DIM)).astype(np.float32)
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("col", configuration={"hnsw": {"space": "l2"}})
        col.add(ids=[str(i) for i in range(len(big))], embeddings=big)
        client._backend.engine.flush()
        collection_id = col.id
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("col")
        assert col.query(query_embeddings=big[:1], n_results=1, include=[])["ids"] == [["0"]]
        mapped = vector_file_path(tmp_path, collection_id)
        resident = 0
        with open("/proc/self/smaps") as f:  # the mapping's resident kilobytes after the load
            inside = False
            for line in f:
                if line.split()[0][0].isdigit() or line.split()[0][0] in "abcdef":
                    inside = line.rstrip().endswith(str(mapped))
                elif inside and line.startswith("Rss:"):
                    resident += int(line.split()[1])
        assert resident * 1024 < big.nbytes / 10, resident


def test_undo_steps_run_only_when_a_transaction_does_not_commit(tmp_path):
    from retrieval.store.db import Database

    db = Database(tmp_path)
    undone = []
    with db.transaction():
        db.on_rollback(lambda: undone.append("committed"))
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.on_rollback(lambda: undone.append("first"))
            db.on_rollback(lambda: undone.append("second"))
            raise RuntimeError("fails before the commit")
    db.close()
    assert undone == ["second", "first"]


def _resident_kib(path: Path) -> int:
    """The resident kilobytes of this process's mappings of ``path``."""
    resident, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if head[0].isdigit() or head[0] in "abcdef":
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                resident += int(line.split()[1])
    return resident


@pytest.mark.parametrize("space", ["l2", "cosine", "ip"])
def test_filtered_exact_queries_score_candidates_in_the_vector_file(tmp_path, monkeypatch, space):
    """A filter's candidates are scored where their vectors lie: dense slots as one mapped span,
    scattered ones gathered, recent ones from SQLite; answers and distances equal a brute force,
    and the scan leaves no pages of the file in the process."""
    from retrieval.store import collection_state

    monkeypatch.setattr(collection_state, "EXACT_MATRIX_MAX_BYTES", 0)  # no in-memory copy: the file path
    rng = np.random.default_rng(5)
    X = rng.standard_normal((900, DIM)).astype(np.float32)
    X[0] *= 3.0
    with retrieval.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("col", configuration={"hnsw": {"space": space}})
        col.add(ids=[str(i) for i in range(800)], embeddings=X[:800], metadatas=[{"i": i} for i in range(800)])
        for i in range(800, 900, 10):  # small writes: their vectors stay in SQLite
            col.add(ids=[str(j) for j in range(i, i + 10)], embeddings=X[i : i + 10], metadatas=[{"i": j} for j in range(i, i + 10)])
        X[3] = rng.standard_normal(DIM)  # an update: a recent vector replaces one in the file
        col.update(ids=["3"], embeddings=X[3:4])
        col.delete(ids=["5"])
        live = np.array([i for i in range(900) if i != 5])
        queries = np.vstack([X[:1], rng.standard_normal((2, DIM)).astype(np.float32)])
        for where, members in [
            ({"$and": [{"i": {"$gte": 0}}, {"i": {"$lt": 300}}]}, live[live < 300]),  # dense slots
            ({"i": {"$in": list(range(0, 900, 7))}}, live[live % 7 == 0]),  # scattered, some recent
            ({"i": {"$gte": 780}}, live[live >= 780]),  # straddles the file and SQLite
        ]:
            got = col.query(query_embeddings=queries, n_results=10, where=where, include=["distances"])
            for q, ids, dist in zip(queries, got["ids"], got["distances"]):
                expected = brute_force(X[members], q, space)
                order = np.argsort(expected, kind="stable")[:10]
                assert [int(i) for i in ids] == members[order].tolist()
                np.testing.assert_allclose(dist, expected[order], rtol=1e-4, atol=1e-4)
        assert _resident_kib(vector_file_path(tmp_path, col.id)) * 1024 < X.nbytes / 10


def test_pages_walk_the_id_index_without_sorting_the_collection(tmp_path):
    """A sweep reads every record a page at a time; in label order SQLite read and sorted the whole
    collection for each page (quadratic: most of a 1M sweep's time)."""
    client = retrieval.PersistentClient(str(tmp_path))
    col = client.create_collection("paged", embedding_function=None)
    X = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    col.add(ids=[f"r{i:03d}" for i in range(300)], embeddings=X)
    state = client._backend.engine.state(col._record)
    with state.db.reading() as conn:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + vector_store.PAGE_AFTER_ID, (col.id, "", 64)))
    assert "sqlite_autoindex_records_1 (collection_id=? AND id>?)" in plan and "TEMP B-TREE" not in plan, plan
    pages = list(state.vectors.pages(64))
    assert [len(labels) for labels, _ in pages] == [64, 64, 64, 64, 44]
    labels = np.concatenate([labels for labels, _ in pages])
    assert sorted(labels.tolist()) == sorted(set(labels.tolist())) and len(labels) == 300
    vectors = np.concatenate([vectors for _, vectors in pages])
    assert {v.tobytes() for v in vectors} == {x.tobytes() for x in X}
    client.close()


@pytest.mark.parametrize("threads", [1, 3])
def test_whole_file_and_span_scans_split_over_threads_agree_with_brute_force(tmp_path, monkeypatch, threads):
    """A scan cut into parts (one per scan thread) and stretches must give what one pass over
    every row gives: the same best slots in order, and each asked-for slot's own score."""
    from retrieval.store import vector_file
    from retrieval.store.vector_file import VectorFile

    monkeypatch.setattr(vector_file, "_SCAN_THREADS", threads)
    monkeypatch.setattr(vector_file, "_SCAN_PART_MIN", 50)
    monkeypatch.setattr(vector_file, "_SCAN_STRETCH", 37)  # parts end inside stretches
    vectors = _vectors(1000, seed=3)
    file = VectorFile(tmp_path / "v.bin", DIM, committed=0)
    file.append(np.arange(1000, 2000), vectors)
    queries = _vectors(4, seed=4)

    def score(rows, norms):  # squared l2, as the store scores raw rows
        return (queries ** 2).sum(1)[:, None] + np.square(norms)[None, :] - 2.0 * queries @ np.asarray(rows).T

    slots, labels, scores = file.nearest_slots(score, 10)
    expected = np.argsort(score(vectors, np.linalg.norm(vectors, axis=1)), axis=1, kind="stable")[:, :10]
    assert slots.tolist() == expected.tolist()
    assert labels.tolist() == (expected + 1000).tolist()
    assert np.all(np.diff(scores, axis=1) >= 0)

    asked = np.concatenate([np.arange(999, 0, -2), [5, 5]])  # dense enough to be scored as one span
    full = score(vectors, np.linalg.norm(vectors, axis=1))
    np.testing.assert_allclose(file.scan(asked, score), full[:, asked], rtol=1e-4, atol=1e-3)
    file.close()
