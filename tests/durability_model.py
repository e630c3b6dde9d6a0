"""Shared pieces of the durability suites: a reference model, a deterministic workload and checks.

The workload is a numbered sequence of write calls (``op(k)``), so a child process that runs it
and a parent that verifies it agree on every record without passing data around. Running this file
as a script is the crash-test child: it performs ops from a start index, printing ``ACK k`` after
each call returns, until killed.

``Model`` is an independent statement of chromadb's write semantics (add skips existing ids,
update skips missing ones, metadata merges and a ``None`` value deletes its key, an empty metadata
is ``None``, a re-added id goes to the end of insertion order).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

import numpy as np

DIM = 16
COLLECTION = "crashy"


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Rec:
    embedding: tuple  # of float32 values, exact
    metadata: dict | None
    document: str | None
    uri: str | None


def _strip_none(metadata: dict | None) -> dict | None:
    if metadata is None:
        return None
    clean = {k: v for k, v in metadata.items() if v is not None}
    return clean or None


def _merge(old: dict | None, new: dict) -> dict | None:
    merged = dict(old or {})
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


def _vec(row) -> tuple:
    return tuple(np.asarray(row, dtype=np.float32).tolist())


class Model:
    """Records in insertion order: ``dict`` order is the order ``get()`` must return."""

    def __init__(self) -> None:
        self.records: dict[str, Rec] = {}

    def copy(self) -> Model:
        out = Model()
        out.records = dict(self.records)
        return out

    def apply(self, kind: str, kw: dict) -> None:
        getattr(self, kind)(**kw)

    def _column(self, kw_value, i):
        return None if kw_value is None else kw_value[i]

    def add(self, ids, embeddings, metadatas=None, documents=None, uris=None) -> None:
        for i, id_ in enumerate(ids):
            if id_ in self.records:
                continue
            self.records[id_] = Rec(
                _vec(embeddings[i]),
                _strip_none(self._column(metadatas, i)),
                self._column(documents, i),
                self._column(uris, i),
            )

    def update(self, ids, embeddings=None, metadatas=None, documents=None, uris=None, *, _upsert=False) -> None:
        for i, id_ in enumerate(ids):
            old = self.records.get(id_)
            if old is None:
                if _upsert:
                    self.add([id_], [embeddings[i]], None if metadatas is None else [metadatas[i]],
                             None if documents is None else [documents[i]], None if uris is None else [uris[i]])
                continue
            metadata = old.metadata
            if metadatas is not None and metadatas[i] is not None:
                metadata = _merge(metadata, metadatas[i])
            self.records[id_] = Rec(
                old.embedding if embeddings is None else _vec(embeddings[i]),
                metadata,
                old.document if documents is None else documents[i],
                old.uri if uris is None else uris[i],
            )

    def upsert(self, ids, embeddings, metadatas=None, documents=None, uris=None) -> None:
        self.update(ids, embeddings, metadatas, documents, uris, _upsert=True)

    def delete(self, ids) -> None:
        for id_ in ids:
            self.records.pop(id_, None)

    # ----------------------------------------------------------------- reference queries

    def matrix(self) -> tuple[list[str], np.ndarray]:
        ids = list(self.records)
        if not ids:
            return ids, np.zeros((0, DIM), np.float32)
        return ids, np.asarray([self.records[i].embedding for i in ids], dtype=np.float32)


def l2_squared(queries: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Brute force, in float64 so it is the reference, not another approximation."""
    q = np.asarray(queries, dtype=np.float64)
    x = np.asarray(X, dtype=np.float64)
    return ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)


# ----------------------------------------------------------------------------- the workload


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([20240601, *key])


def batch_add(n: int, size: int) -> dict:
    X = _rng(n).normal(size=(size, DIM)).astype(np.float32)
    return dict(
        ids=[f"b{n}-{j}" for j in range(size)],
        embeddings=X,
        metadatas=[{"batch": n, "j": j, "tag": ["red", "blue"][j % 2], "w": j / 4, "ok": j % 3 == 0} for j in range(size)],
        documents=[f"document {n}/{j} ünïcode ✓" for j in range(size)],
        uris=[f"file:///data/{n}/{j}.png" for j in range(size)],
    )


def op(k: int, mode: str) -> tuple[str, dict]:
    """The k-th write call of a workload.

    ``add``: batches of 20 new records. ``churn``: cycles add (10 new records plus the re-add of an
    id deleted two cycles earlier), upsert (3 changed records with a key-deleting merge, one new)
    and delete (2 records, and the record the previous upsert created).
    """
    if mode == "add":
        return "add", batch_add(k, 20)
    n, step = divmod(k, 3)
    if step == 0:
        kw = batch_add(n, 10)
        if n >= 3:  # b{n-3}-3 was deleted by the delete step of cycle n-1: add it back, new vector
            kw["ids"].append(f"b{n - 3}-3")
            kw["embeddings"] = np.vstack([kw["embeddings"], _rng(n, 7).normal(size=(1, DIM)).astype(np.float32)])
            kw["metadatas"].append({"batch": n, "readded": True})
            kw["documents"].append(f"re-added in {n}")
            kw["uris"].append(f"file:///re/{n}")
        return "add", kw
    if step == 1:
        ids = [f"b{n - 1}-{j}" for j in range(3)] + [f"u{n}"] if n >= 1 else [f"u{n}"]
        X = _rng(n, 1).normal(size=(len(ids), DIM)).astype(np.float32)
        return "upsert", dict(
            ids=ids,
            embeddings=X,
            metadatas=[{"tag": None, "up": n} for _ in ids],
            documents=[f"upserted {n}" for _ in ids],
            uris=[f"file:///up/{n}/{i}" for i in range(len(ids))],
        )
    ids = [f"u{n}"] + ([f"b{n - 2}-3", f"b{n - 2}-4"] if n >= 2 else [])
    return "delete", dict(ids=ids)


def model_after(n_ops: int, mode: str) -> Model:
    model = Model()
    for k in range(n_ops):
        model.apply(*op(k, mode))
    return model


# ----------------------------------------------------------------------------- checks


def snapshot(col) -> Model:
    """What the store holds, as a Model (insertion order kept)."""
    got = col.get(include=["embeddings", "metadatas", "documents", "uris"])
    model = Model()
    for i, id_ in enumerate(got["ids"]):
        assert id_ not in model.records, f"duplicate id {id_!r} in get()"
        model.records[id_] = Rec(_vec(got["embeddings"][i]), got["metadatas"][i], got["documents"][i], got["uris"][i])
    return model


def diff(got: Model, want: Model) -> str:
    """'' when equal, else a short description of the first differences."""
    if list(got.records) == list(want.records) and got.records == want.records:
        return ""
    missing = [i for i in want.records if i not in got.records]
    extra = [i for i in got.records if i not in want.records]
    changed = [i for i in want.records if i in got.records and got.records[i] != want.records[i]]
    order = list(got.records) != list(want.records)
    return f"missing={missing[:5]} extra={extra[:5]} changed={changed[:5]} order_differs={order}"


def check_index_matches_sql(client, col) -> None:
    """The loaded HNSW index holds exactly the live labels, with their stored vectors."""
    engine = client._backend.engine
    state = engine.state(col._record)
    state.upkeep.wait_until_indexed()  # the pending tail is not in the graph yet
    with state.lock:
        index = state.index()
        if index is None:
            assert col.count() == 0
            return
        pages = list(state.vectors.pages())  # every record's vector, wherever it is kept
        want_labels = np.concatenate([p[0] for p in pages]) if pages else np.zeros(0, np.int64)
        by_label = np.argsort(want_labels)
        want_labels = want_labels[by_label]
        labels = np.sort(index.labels())
        assert labels.tolist() == want_labels.tolist(), "index labels differ from the records table"
        assert index.live_count == len(want_labels) == col.count()
        if len(want_labels):
            stored = np.asarray(index.index.get_items(labels), dtype=np.float32)
            np.testing.assert_array_equal(stored, np.concatenate([p[1] for p in pages])[by_label])


def check_queries(col, model: Model, k: int = 10, n_queries: int = 8, seed: int = 0) -> None:
    """count == len(get()), and exact queries agree with brute force (ids in order, distances)."""
    import pytest

    from retrieval.store import reads

    ids, X = model.matrix()
    assert col.count() == len(col.get(include=[])["ids"]) == len(ids)
    if not ids:
        return
    rng = np.random.default_rng(seed)
    Q = np.vstack([X[rng.integers(len(ids), size=n_queries // 2)], rng.normal(size=(n_queries - n_queries // 2, DIM))])
    Q = Q.astype(np.float32)
    kk = min(k, len(ids))
    D = l2_squared(Q, X)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reads, "EXACT_MAX_ROWS", 10**9)  # the exact path, whatever the size
        res = col.query(query_embeddings=Q, n_results=kk, include=["distances"])
    for qi in range(len(Q)):
        want = [ids[j] for j in np.argsort(D[qi], kind="stable")[:kk]]
        assert res["ids"][qi] == want, f"query {qi}: {res['ids'][qi]} != {want}"
        np.testing.assert_allclose(res["distances"][qi], np.sort(D[qi])[:kk], rtol=1e-4, atol=1e-4)


def ann_equals_exact(col, model: Model, k: int = 5, seed: int = 1) -> None:
    """Force the HNSW path and hold it to the exact answer.

    Deterministic: k distinct live ids, each with its true distance (a stale vector in the index
    would show), and a stored vector's own record found at distance 0. Statistical (HNSW is
    approximate, and a rare miss on a near-tie happens even on a healthy graph): recall >= 0.95.
    """
    import pytest

    from retrieval.store import reads

    ids, X = model.matrix()
    if len(ids) <= k:
        return
    rng = np.random.default_rng(seed)
    own = rng.integers(len(ids), size=4)
    Q = np.vstack([X[own], rng.normal(size=(4, DIM))]).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reads, "EXACT_MAX_ROWS", 0)
        res = col.query(query_embeddings=Q, n_results=k, include=["distances"])
    D = l2_squared(Q, X)
    position = {id_: j for j, id_ in enumerate(ids)}
    hits = 0
    for qi in range(len(Q)):
        got = res["ids"][qi]
        assert len(got) == len(set(got)) == k and set(got) <= set(position), got
        np.testing.assert_allclose(res["distances"][qi], [D[qi, position[i]] for i in got], rtol=1e-4, atol=1e-4)
        if qi < len(own):
            assert ids[own[qi]] in got, f"ANN query for {ids[own[qi]]!r}'s own vector did not find it: {got}"
        hits += len({ids[j] for j in np.argsort(D[qi])[:k]} & set(got))
    assert hits >= 0.95 * k * len(Q), f"ANN recall {hits / (k * len(Q)):.3f}: {res['ids']}"


# ----------------------------------------------------------------------------- the child


def _install_kill_hook(spec: str) -> None:
    """``KILL_AT=name:n``: SIGKILL ourselves on the n-th call of ``retrieval.store.checkpoint_files.<name>``.

    ``checksum`` runs after the temp index file is written (before it replaces the old one);
    ``write_atomic`` after the index file replaced the old one (before the manifest);
    ``fsync_dir`` alternates: odd calls after the index rename, even calls after the manifest
    rename (before the oplog is truncated).
    """
    from retrieval.store import checkpoint_files

    name, nth = spec.split(":")
    original = getattr(checkpoint_files, name)
    calls = [0]

    def hooked(*args, **kwargs):
        calls[0] += 1
        if name == "fsync_dir":
            result = original(*args, **kwargs)
        if calls[0] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        return result if name == "fsync_dir" else original(*args, **kwargs)

    setattr(checkpoint_files, name, hooked)


def main(argv: list[str]) -> None:
    path, mode, start, stop = argv[0], argv[1], int(argv[2]), int(argv[3])
    import retrieval
    from retrieval.store import graph_upkeep

    configuration = None
    if mode == "churn":
        # Checkpoint on every write, so a kill lands inside or around a checkpoint.
        graph_upkeep.CHECKPOINT_BACKLOG_FRACTION = 0
        configuration = {"hnsw": {"sync_threshold": 2, "batch_size": 2}}
    if os.environ.get("KILL_AT"):
        _install_kill_hook(os.environ["KILL_AT"])
    client = retrieval.PersistentClient(path)
    col = client.get_or_create_collection(COLLECTION, configuration=configuration, embedding_function=None)
    print("READY", flush=True)
    for k in range(start, stop):
        kind, kw = op(k, mode)
        getattr(col, kind)(**kw)
        print(f"ACK {k}", flush=True)
        if mode == "churn" and k % 7 == 6:
            col.query(query_embeddings=kw["embeddings"][:1] if "embeddings" in kw else np.zeros((1, DIM)), n_results=3)
    print("DONE", flush=True)
    client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
