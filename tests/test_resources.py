"""Resources and path ownership: open/close cycles leak nothing; the path lock is clear and released."""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import retrieval
import retrieval.store.shared_engines
from retrieval import PersistPathLockedError
from retrieval.errors import RetrievalError

ROOT = Path(__file__).resolve().parents[1]


def open_fds() -> set[str]:
    """What this process has open, by target (so a leak names its file)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:  # the fd listdir itself used, closed by now
            pass
    return out


def python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def cycle(path: str, i: int, X: np.ndarray) -> None:
    client = retrieval.PersistentClient(path)
    col = client.get_or_create_collection("cycles", embedding_function=None)
    col.add(ids=[f"c{i}-{j}" for j in range(10)], embeddings=X[i % 50 * 10: i % 50 * 10 + 10],
            metadatas=[{"i": i}] * 10, documents=[f"cycle {i}"] * 10)
    col.query(query_embeddings=X[:2], n_results=5, where={"i": {"$gte": 0}})
    col.get(limit=5, include=["embeddings"])
    client.close()


def test_open_close_cycles_leak_no_descriptors_or_memory(persist_dir):
    psutil = pytest.importorskip("psutil")
    X = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    cycle(persist_dir, 0, X)  # warm up: imports, caches, first index file
    gc.collect()
    fds_before = open_fds()
    rss_before = psutil.Process().memory_info().rss
    for i in range(1, 101):
        cycle(persist_dir, i, X)
    gc.collect()
    leaked = open_fds() - fds_before
    assert not leaked, f"descriptors left open after 100 open/close cycles: {sorted(leaked)[:10]}"
    grown = psutil.Process().memory_info().rss - rss_before
    assert grown < 40 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB over 100 cycles"
    assert retrieval.store.shared_engines.open_count() == 0, "closed clients must leave no shared engine behind"
    client = retrieval.PersistentClient(persist_dir)
    assert client.get_collection("cycles").count() == 1010
    client.close()


def test_close_releases_the_path_lock_for_another_process(persist_dir):
    client = retrieval.PersistentClient(persist_dir)
    client.create_collection("handoff", embedding_function=None).add(ids=["a"], embeddings=[[1.0, 2.0]])
    client.close()
    done = python(f"""
        import retrieval
        client = retrieval.PersistentClient({persist_dir!r})
        col = client.get_collection("handoff")
        col.add(ids=["b"], embeddings=[[3.0, 4.0]])
        print(col.count())
        client.close()
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    client = retrieval.PersistentClient(persist_dir)  # and back: the child released it too
    assert client.get_collection("handoff").get()["ids"] == ["a", "b"]
    client.close()


def _fingerprint(path: str) -> dict[str, str]:
    out = {}
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_second_process_is_refused_while_a_writer_is_busy(persist_dir):
    """The refused process names the path, suggests client/server mode and touches nothing."""
    client = retrieval.PersistentClient(persist_dir)
    col = client.create_collection("owned", embedding_function=None)
    col.add(ids=[f"id{i}" for i in range(50)], embeddings=np.eye(50, dtype=np.float32))
    assert client._backend.engine.builder.idle(timeout=60)  # the owner's own background work is done
    before = _fingerprint(persist_dir)
    done = python(f"""
        import retrieval
        from retrieval.errors import PersistPathLockedError, RetrievalError
        for attempt in range(3):  # repeated attempts: each fails the same way, none writes
            try:
                retrieval.PersistentClient({persist_dir!r})
            except PersistPathLockedError as e:
                assert isinstance(e, RetrievalError) and isinstance(e, RuntimeError)
                print("LOCKED", e)
            else:
                print("OPENED")
    """)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("LOCKED") for line in lines), done.stdout
    message = lines[0]
    assert repr(os.path.realpath(persist_dir)) in message or persist_dir in message
    assert "HttpClient" in message and "retrieval run" in message
    assert _fingerprint(persist_dir) == before, "a refused process changed files under the path"
    col.add(ids=["after"], embeddings=np.ones((1, 50), np.float32))  # the owner is unaffected
    assert col.count() == 51
    client.close()


def test_lock_of_a_killed_owner_does_not_block(persist_dir):
    """The lock is an flock: the kernel drops it when the owner dies, so no stale lock file blocks."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time, retrieval
            client = retrieval.PersistentClient({persist_dir!r})
            client.create_collection("killed", embedding_function=None).add(ids=["x"], embeddings=[[1.0]])
            print("READY", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        with pytest.raises(PersistPathLockedError, match="in use by another process"):
            retrieval.PersistentClient(persist_dir)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    assert (Path(persist_dir) / "retrieval.lock").exists()  # the file stays; the lock does not
    client = retrieval.PersistentClient(persist_dir)
    assert client.get_collection("killed").get()["ids"] == ["x"]
    client.close()


def test_failed_open_leaves_nothing_open(persist_dir):
    """A refused open in this process releases whatever it opened before failing."""
    owner = subprocess.Popen(
        [sys.executable, "-c", f"import time, retrieval; c = retrieval.PersistentClient({persist_dir!r}); "
                               "print('READY', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert owner.stdout.readline().strip() == "READY", owner.stderr.read()
        fds = open_fds()
        for _ in range(20):
            with pytest.raises(RetrievalError):
                retrieval.PersistentClient(persist_dir)
        assert open_fds() == fds
        assert retrieval.store.shared_engines.open_count() == 0
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.communicate(timeout=60)
