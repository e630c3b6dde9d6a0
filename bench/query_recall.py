"""Single-query p50 and recall@10 through ``query()`` at several ``ef_search``, on the scale benchmark's data.

    PYTHONPATH=$PWD python bench/query_recall.py --n 300000 --clusters 300 --ef 100,400 --workdir /tmp/qr

Issue 16, part 7. The store is built once under ``--workdir`` (bulk add in batches of 5,000, then
``close()``: graph built, swept, checkpointed) and reused by later runs with the same data. Each run opens
it in this process and, for each ``ef_search`` (set with ``modify``, as a user would), answers
``--queries`` near-duplicate queries one at a time (a stored vector plus noise of norm 0.1, as
``bench/scale.py``), against exact brute-force top-10.

``--clusters`` sets how dense the data is: ``bench/scale.py`` always uses 1,000 clusters, so its 1M
run has 1,000 records per cluster; ``--n 300000 --clusters 300`` has that density at 300k, which is what
makes recall fall and the graph's stragglers grow (hnsw.py, stragglers.py). For each ef the stragglers
are searched through their lists and then by an exact scan of all of them (``LISTS_MIN_ROWS`` lifted),
alternating in the same run: compare those two columns, not times across runs (the machine is shared).
``--pad-stragglers 46000`` prices the straggler set expected at 1M (stragglers grew 3.6x per 3x records at
1,000 records per cluster: 315 of 100k, 3,387 of 300k) on a 300k graph.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import scale_data
import retrieval
from retrieval.store import stragglers

D = 512
BATCH = 5_000


def build(path: Path, vectors: Path, n: int) -> None:
    client = retrieval.PersistentClient(path=str(path))
    col = client.create_collection("bench", embedding_function=None, metadata={"hnsw:space": "cosine"})
    started = time.perf_counter()
    for lo in range(0, n, BATCH):
        x = scale_data.read_rows(vectors, D, lo, min(n, lo + BATCH))
        col.add(ids=[f"r-{i}" for i in range(lo, lo + len(x))], embeddings=x)
    client.close()
    print(f"built {n:,} records in {time.perf_counter() - started:.0f} s (add + close)", flush=True)


def measure(col, queries: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    for q in queries[:20]:  # warm-up
        col.query(query_embeddings=q[None], n_results=10, include=[])
    latencies, found = [], []
    for q in queries:
        started = time.perf_counter()
        r = col.query(query_embeddings=q[None], n_results=10, include=[])
        latencies.append(time.perf_counter() - started)
        found.append([int(s[2:]) for s in r["ids"][0]])
    return float(np.median(latencies)) * 1e3, scale_data.recall(found, truth)


def reload_stragglers(client, col, lists_min_rows: int, pad_to: int) -> None:
    """Rebuild the collection's straggler set as a load does, listed from ``lists_min_rows`` on, padded
    with random other records up to ``pad_to`` (a benchmark's reach into the engine: the only way to
    compare lists and a scan on one graph, and to price a larger straggler set on a smaller graph)."""
    stragglers.LISTS_MIN_ROWS = lists_min_rows
    state = client._backend.engine.state(col._record)
    with state.lock:
        index = state.index()
        labels = index.stragglers.labels.copy()
        if pad_to > len(labels):
            others = np.setdiff1d(index.labels(), labels)
            labels = np.concatenate([labels, np.random.default_rng(0).choice(others, pad_to - len(labels), replace=False)])
        fresh = stragglers.Stragglers(index.dim, index.config.space)
        fresh.upsert(labels, index.vectors(labels))
        index.stragglers = fresh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--ef", default="100,400", help="comma list of ef_search values")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--pad-stragglers", type=int, default=0,
                    help="price this many stragglers (padded with records the graph also finds, so answers stay the same)")
    ap.add_argument("--workdir", required=True, help="where the data and the store are kept between runs")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{args.n}-c{args.clusters}"
    vectors, store = workdir / f"vectors-c{args.clusters}-{args.n}.f32", workdir / f"store-{tag}"
    if not vectors.exists():
        scale_data.Workload(D, "clustered", clusters=args.clusters).generate(vectors, args.n)
    if not store.exists():
        build(store, vectors, args.n)
    queries, _ = scale_data.near_duplicate_queries(vectors, D, args.n, args.queries, seed=1234)
    truth = scale_data.exact_top_k(vectors, D, queries, 0, args.n)
    manifest = json.loads(next(store.glob("*/manifest.json")).read_text())
    print(f"n={args.n:,}, {args.n // args.clusters:,} records per cluster, {len(manifest['stragglers']):,} stragglers", flush=True)
    listed_from = stragglers.LISTS_MIN_ROWS
    with retrieval.PersistentClient(path=str(store)) as client:
        col = client.get_collection("bench", embedding_function=None)
        for ef in (int(e) for e in args.ef.split(",")):
            col.modify(configuration={"hnsw": {"ef_search": ef}})
            row = []
            for mode, threshold in (("lists", listed_from), ("exact scan", 1 << 62)):
                reload_stragglers(client, col, threshold, args.pad_stragglers)
                p50, rec = measure(col, queries, truth)
                row.append(f"{mode}: p50 {p50:.3f} ms recall@10 {rec}")
            print(f"ef_search={ef}: " + " | ".join(row), flush=True)
        col.modify(configuration={"hnsw": {"ef_search": 100}})


if __name__ == "__main__":
    main()
