"""client.verify() and `retrieval doctor`: an index that disagrees with SQLite is found and rebuilt.

Each damage test writes a checkpoint that hnswlib and the manifest accept (the CRC matches), so
nothing but verify can notice: the damage is exactly what a buggy recovery would leave behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import retrieval
from retrieval.cli import main
from retrieval.config import HnswConfig
from retrieval.store import reads
from retrieval.store.checkpoint_files import read_manifest
from retrieval.store.hnsw import HnswIndex
from retrieval.store.vector_file import VectorFile
from retrieval.store.vector_store import vector_file_path

N, DIM = 1200, 16


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A closed persistent store with N l2 records (ids "0".."N-1"); queries go through HNSW."""
    monkeypatch.setattr(reads, "EXACT_MAX_ROWS", 0)
    path = tmp_path / "db"
    vectors = np.random.default_rng(7).standard_normal((N, DIM)).astype(np.float32)
    with retrieval.PersistentClient(path=str(path)) as client:
        col = client.create_collection("docs", configuration={"hnsw": {"space": "l2"}})
        col.add(ids=[str(i) for i in range(N)], embeddings=vectors)
        client._backend.engine.flush()  # a checkpoint to damage (close() writes none)
    return path, vectors


def _damage(path: Path, change) -> None:
    """Load the collection's checkpoint, apply ``change(index)``, save it as a valid checkpoint."""
    import sqlite3

    (directory,) = [p.parent for p in path.glob("*/manifest.json")]
    manifest = read_manifest(directory)
    with sqlite3.connect(path / "retrieval.sqlite3") as conn:
        (committed,) = conn.execute("SELECT vector_slots FROM collections WHERE id = ?", (directory.name,)).fetchone()
    vector_file = VectorFile(vector_file_path(path, directory.name), DIM, committed)
    index, _ = HnswIndex.load(directory, DIM, HnswConfig(space="l2"), vector_file.read)
    vector_file.close()
    change(index)
    index.save(directory, manifest.applied_seq)  # with its vectors inline: a checkpoint either way


def _label(path: Path, record_id: str) -> int:
    import sqlite3

    with sqlite3.connect(path / "retrieval.sqlite3") as conn:
        return conn.execute("SELECT label FROM records WHERE id = ?", (record_id,)).fetchone()[0]


def _finds_itself(col, vectors, i: int) -> bool:
    got = col.query(query_embeddings=vectors[i : i + 1], n_results=3, include=["distances"])
    return got["ids"][0][0] == str(i) and got["distances"][0][0] == 0.0


def test_healthy_store_is_ok(store):
    path, vectors = store
    with retrieval.PersistentClient(path=str(path)) as client:
        (report,) = client.verify(sample=None)
    assert report.ok and report.problems == 0
    assert (report.records, report.indexed, report.sampled) == (N, N, N)
    assert not report.repaired and report.examples == []
    assert report.to_dict()["ok"] is True
    assert str(report).endswith(": ok")


def test_label_marked_deleted_in_hnswlib_is_found_and_repaired(store):
    path, vectors = store
    label = _label(path, "17")
    # hnswlib's own mark, not in the manifest's list: only a probe of hnswlib can see it
    _damage(path, lambda index: index.index.mark_deleted(label))
    with retrieval.PersistentClient(path=str(path)) as client:
        col = client.get_collection("docs")
        assert col.get(ids=["17"])["ids"] == ["17"]  # SQLite has it...
        assert not _finds_itself(col, vectors, 17)  # ...the query cannot reach it
        (report,) = client.verify()
        assert (report.wrongly_deleted, report.missing, report.phantom) == (1, 0, 0)
        assert report.examples == ["17"] and not report.ok
        (fixed,) = client.verify(repair=True)
        assert fixed.repaired and fixed.problems_after_repair == 0 and fixed.ok
        assert _finds_itself(col, vectors, 17)
        (again,) = client.verify(sample=None)
        assert again.ok and again.problems == 0


def test_label_in_the_manifests_deleted_list_is_found(store):
    path, vectors = store
    label = _label(path, "5")
    _damage(path, lambda index: index.remove([label]))
    with retrieval.PersistentClient(path=str(path)) as client:
        (report,) = client.verify(repair=True)
        assert report.wrongly_deleted == 1 and report.examples == ["5"] and report.ok
        assert _finds_itself(client.get_collection("docs"), vectors, 5)


def test_missing_phantom_and_stale_are_found(store, tmp_path):
    path, vectors = store
    missing_label, stale_label = _label(path, "3"), _label(path, "4")

    def rebuild_wrongly(index: HnswIndex) -> None:
        fresh = HnswIndex(DIM, HnswConfig(space="l2"))
        labels = index.labels()
        keep = labels[labels != missing_label]
        fresh.upsert(keep, index.vectors(keep))
        fresh.upsert(np.asarray([10**9]), np.ones((1, DIM), np.float32))  # a label no record has
        fresh.upsert(np.asarray([stale_label]), -vectors[4:5])  # another vector than SQLite's
        index.index, index.deleted, index.stragglers = fresh.index, fresh.deleted, fresh.stragglers

    _damage(path, rebuild_wrongly)
    with retrieval.PersistentClient(path=str(path)) as client:
        (report,) = client.verify(sample=None)
        assert (report.missing, report.phantom, report.stale_vectors) == (1, 1, 1)
        assert {"3", "4"} <= set(report.examples)
        assert "missing from the index" in str(report) and "--repair" in str(report)
        (fixed,) = client.verify(repair=True, sample=None)
        assert fixed.ok and fixed.problems_after_repair == 0
        col = client.get_collection("docs")
        assert _finds_itself(col, vectors, 3) and _finds_itself(col, vectors, 4)


def test_unusable_checkpoint_is_reported(store):
    path, _ = store
    (index_file,) = path.glob("*/index.hnsw")
    index_file.write_bytes(index_file.read_bytes()[:-10])
    with retrieval.PersistentClient(path=str(path)) as client:
        (report,) = client.verify()
    assert report.ok  # the load rebuilt it from SQLite...
    assert "checksum" in report.checkpoint_problem  # ...and verify says so


def test_ephemeral_and_empty_collections(tmp_path):
    client = retrieval.EphemeralClient()
    client.create_collection("empty")
    col = client.create_collection("small")
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    empty, small = client.verify()
    assert (empty.collection, empty.records, empty.ok) == ("empty", 0, True)
    assert (small.records, small.indexed, small.sampled, small.ok) == (2, 2, 2, True)


def test_doctor_reports_repairs_and_exits_nonzero_while_broken(store, capsys):
    path, _ = store
    label = _label(path, "9")
    _damage(path, lambda index: index.index.mark_deleted(label))
    assert main(["doctor", "--path", str(path)]) == 1
    out = capsys.readouterr()
    assert "docs: 1200 records" in out.out and "1 wrongly marked deleted" in out.out and "'9'" in out.out
    assert "--repair" in out.err
    assert main(["doctor", "--path", str(path), "--repair"]) == 0
    assert "repaired" in capsys.readouterr().out
    assert main(["doctor", "--path", str(path), "--full"]) == 0
    assert "1200 self-queried: ok" in capsys.readouterr().out


def test_doctor_refuses_a_path_without_a_database(tmp_path, capsys):
    assert main(["doctor", "--path", str(tmp_path / "nothing")]) == 2
    assert "no retrieval database" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()  # nothing was created
