"""Open + first query of a large store, alone (issue 16, part 5): the exact scan that answers while the graph loads.

    PYTHONPATH=$PWD python bench/first_query.py --build DIR --n 1000000     # ~1 min: records and vector file, no graph
    PYTHONPATH=$PWD python bench/first_query.py DIR --runs 4                 # each run a fresh process

The store is written with the builder paused and closed without indexing, so it has no graph checkpoint:
what the first query costs does not depend on one (it scans the vector file either way; the graph
loads, or is rebuilt, in the background after it). ``bench/scale.py`` measures the same figure on a
store with a checkpoint, next to LanceDB; this one takes a minute instead of forty.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

DIM = 512


def build(path: str, n: int) -> None:
    import retrieval

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(1, n // 1000), DIM)).astype(np.float32)
    client = retrieval.PersistentClient(path)
    client._backend.engine.builder.pause()  # no graph: the store is records and the vector file
    col = client.create_collection("bench", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    for start in range(0, n, 5000):
        rows = np.arange(start, min(n, start + 5000))
        vectors = centres[rows % len(centres)] + 0.3 * rng.standard_normal((len(rows), DIM)).astype(np.float32)
        col.add(ids=[str(i) for i in rows], embeddings=vectors, metadatas=[{"i": int(i)} for i in rows])
    client._backend.engine.close(budget_s=0.0)
    os._exit(0)  # the paused builder's thread would otherwise be waited for


def first_query(path: str, seed: int) -> None:
    import retrieval

    started = time.perf_counter()
    client = retrieval.PersistentClient(path)
    col = client.get_collection("bench", embedding_function=None)
    query = np.random.default_rng(seed).standard_normal((1, DIM)).astype(np.float32)
    col.query(query_embeddings=query, n_results=10)
    print(f"{time.perf_counter() - started:.3f}", flush=True)
    os._exit(0)  # leave the background load running: it is not part of the figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("--build", action="store_true", help="write the store first")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--once", type=int, default=None, help=argparse.SUPPRESS)  # one run in this process
    args = ap.parse_args()
    if args.build:
        build(args.path, args.n)
    if args.once is not None:
        first_query(args.path, args.once)
    times = [
        float(subprocess.run([sys.executable, __file__, args.path, "--once", str(i)], check=True, capture_output=True,
                             text=True).stdout)
        for i in range(args.runs)
    ]
    print(f"open + first query (s), {args.runs} fresh processes: " + ", ".join(f"{t:.3f}" for t in times))


if __name__ == "__main__":
    main()
