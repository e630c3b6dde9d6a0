"""Load and faults against a real ``retrieval run``: 16 (slow: 32) client threads mix writes and
queries for a bounded time; the server is SIGKILLed mid-load and restarted. Then every write whose
client got a success answer is present, intact and findable by query; no batch is partial; the
clients saw clear connection errors (ServerUnavailableError), never wrong data; the index agrees
with the records (``verify``)."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import retrieval
from retrieval.errors import ServerUnavailableError
from tests.http_server import RunningServer

DIM = 16
BATCH = 5


def vector(record_id: str) -> list[float]:
    """A deterministic unit vector per id (sha256, not Python's salted hash)."""
    raw = np.frombuffer(hashlib.sha256(record_id.encode()).digest()[: DIM * 2], dtype=np.int16).astype(np.float32)
    return (raw / np.linalg.norm(raw)).tolist()


def document(record_id: str) -> str:
    return f"doc of {record_id}"


@dataclass
class Ledger:
    """What the clients were told, shared by the threads."""

    acked: list[list[str]] = field(default_factory=list)  # batches whose add answered success
    uncertain: list[list[str]] = field(default_factory=list)  # batches whose add failed to connect / lost its answer
    connection_errors: int = 0
    queries_ok: int = 0
    wrong: list[str] = field(default_factory=list)  # wrong data or unexpected errors: must stay empty
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(port: int):
    return retrieval.HttpClient(host="127.0.0.1", port=port, timeout=10, retries=1)


def _writer(port: int, name: str, ledger: Ledger, stop: threading.Event) -> None:
    col = _client(port).get_collection("load")
    k = 0
    while not stop.is_set():
        ids = [f"{name}-b{k}-{i}" for i in range(BATCH)]
        k += 1
        try:
            col.add(ids=ids, embeddings=[vector(i) for i in ids], documents=[document(i) for i in ids],
                    metadatas=[{"batch": f"{name}-b{k - 1}"}] * BATCH)
        except ServerUnavailableError:
            with ledger.lock:
                ledger.uncertain.append(ids)
                ledger.connection_errors += 1
            time.sleep(0.05)
            continue
        except Exception as error:  # noqa: BLE001 - anything else is a finding
            with ledger.lock:
                ledger.wrong.append(f"add {ids[0]}: {type(error).__name__}: {error}")
            continue
        with ledger.lock:
            ledger.acked.append(ids)


def _querier(port: int, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    col = _client(port).get_collection("load")
    rng = random.Random(seed)
    while not stop.is_set():
        with ledger.lock:
            batch = rng.choice(ledger.acked) if ledger.acked else None
        if batch is None:
            time.sleep(0.01)
            continue
        target = rng.choice(batch)
        try:
            got = col.query(query_embeddings=[vector(target)], n_results=3, include=["documents", "distances"])
        except ServerUnavailableError:
            with ledger.lock:
                ledger.connection_errors += 1
            time.sleep(0.05)
            continue
        except Exception as error:  # noqa: BLE001
            with ledger.lock:
                ledger.wrong.append(f"query {target}: {type(error).__name__}: {error}")
            continue
        problems = [f"{rid} came back with {doc!r}" for rid, doc in zip(got["ids"][0], got["documents"][0]) if doc != document(rid)]
        if not got["ids"][0] or got["ids"][0][0] != target or got["distances"][0][0] > 1e-4:
            problems.append(f"acknowledged {target} not the top hit: {got['ids'][0]} {got['distances'][0]}")
        with ledger.lock:
            ledger.wrong.extend(problems)
            ledger.queries_ok += 1


def run_load_and_kill(tmp_path, clients: int, seconds_before_kill: float, seconds_after_kill: float) -> None:
    path = tmp_path / "db"
    server = RunningServer(path)
    restarted = None
    try:
        _client(server.port).create_collection("load", embedding_function=None, metadata={"hnsw:space": "l2"})
        ledger, stop = Ledger(), threading.Event()
        writers = clients * 5 // 8
        threads = [threading.Thread(target=_writer, args=(server.port, f"w{i}", ledger, stop)) for i in range(writers)]
        threads += [threading.Thread(target=_querier, args=(server.port, ledger, stop, i)) for i in range(clients - writers)]
        for t in threads:
            t.start()
        time.sleep(seconds_before_kill)
        server.process.kill()  # SIGKILL mid-load: no shutdown, no checkpoint
        server.process.wait(10)
        time.sleep(seconds_after_kill)
        stop.set()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a client hung"
        assert ledger.wrong == [], ledger.wrong[:10]
        assert len(ledger.acked) > 10 and ledger.queries_ok > 10, (len(ledger.acked), ledger.queries_ok)
        assert ledger.connection_errors > 0  # the clients did see the server go away
        print(f"{clients} clients: {len(ledger.acked)} batches acknowledged, {len(ledger.uncertain)} uncertain, "
              f"{ledger.queries_ok} queries checked, {ledger.connection_errors} connection errors")

        restarted = RunningServer(path)
        col = _client(restarted.port).get_collection("load")
        acked_ids = [i for batch in ledger.acked for i in batch]
        got = col.get(ids=acked_ids, include=["documents", "embeddings"])
        assert sorted(got["ids"]) == sorted(acked_ids), "an acknowledged write was lost"
        for rid, doc, emb in zip(got["ids"], got["documents"], got["embeddings"]):
            assert doc == document(rid) and np.allclose(emb, vector(rid), atol=1e-6), rid
        for batch in ledger.uncertain:  # all or nothing
            present = len(col.get(ids=batch, include=[])["ids"])
            assert present in (0, BATCH), (batch, present)
        everything = col.get(include=["metadatas"])
        sizes: dict[str, int] = {}
        for meta in everything["metadatas"]:
            sizes[meta["batch"]] = sizes.get(meta["batch"], 0) + 1
        assert set(sizes.values()) == {BATCH}, "a partial batch is stored"
        sample = random.Random(0).sample(acked_ids, min(300, len(acked_ids)))
        hits = col.query(query_embeddings=[vector(i) for i in sample], n_results=1, include=[])["ids"]
        assert [h[0] for h in hits] == sample, "an acknowledged write is not findable by query"
    finally:
        for s in (server, restarted):
            if s is not None:
                s.stop()
    local = retrieval.PersistentClient(str(path))
    try:
        assert all(report.ok for report in local.verify(sample=None)), "index and records disagree after the crash"
    finally:
        local.close()


def test_sixteen_clients_sigkill_mid_load_lose_no_acknowledged_write(tmp_path):
    run_load_and_kill(tmp_path, clients=16, seconds_before_kill=5, seconds_after_kill=1.5)


@pytest.mark.slow
def test_thirty_two_clients_longer_load_and_kill(tmp_path):
    run_load_and_kill(tmp_path, clients=32, seconds_before_kill=30, seconds_after_kill=3)
