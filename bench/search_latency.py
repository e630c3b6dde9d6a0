"""Search API latency at scale: a two-Knn RRF search against a single `query()`, same collection.

    python bench/search_latency.py [--n 100000] [--d 512]

Two fusions are timed: two dense Knns (a query vector and a second vector), and dense + BM25
(the hybrid case, over synthetic documents). The figure that matters is the ratio to one query().
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

import retrieval
from embedders.bm25 import BM25EmbeddingFunction
from retrieval import Knn, Rrf, Search

WORDS = [f"term{i}" for i in range(5000)]


def p50_ms(fn, queries) -> float:
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.n, args.d)).astype(np.float32)
    docs = [" ".join(rng.choice(WORDS, size=12)) for _ in range(args.n)]
    client = retrieval.PersistentClient(path=tempfile.mkdtemp(prefix="search-bench-"))
    sparse = {"sparse": {"key": "bm25", "embedding_function": BM25EmbeddingFunction()}}
    col = client.create_collection("bench", embedding_function=None, configuration={"hnsw": {"space": "cosine"}, **sparse})
    start = time.perf_counter()
    for lo in range(0, args.n, 5000):
        col.add(ids=[str(i) for i in range(lo, lo + 5000)], embeddings=X[lo : lo + 5000], documents=docs[lo : lo + 5000])
    ingest = time.perf_counter() - start
    Q = X[rng.choice(args.n, args.queries)] + rng.normal(scale=0.1, size=(args.queries, args.d)).astype(np.float32)
    texts = [" ".join(rng.choice(WORDS, size=3)) for _ in range(args.queries)]

    single = p50_ms(lambda q: col.query(query_embeddings=[q], n_results=10), Q)
    two_dense = p50_ms(
        lambda q: col.search(Search().rank(Rrf([Knn(query=q, return_rank=True, default=16), Knn(query=-q, return_rank=True, default=16)])).limit(10)),
        Q,
    )
    pairs = list(zip(Q, texts))
    hybrid = p50_ms(
        lambda qt: col.search(Search().rank(Rrf([Knn(query=qt[0], return_rank=True, default=16), Knn(query=qt[1], key="bm25", return_rank=True, default=16)])).limit(10)),
        pairs,
    )
    print(json.dumps({
        "n": args.n, "d": args.d, "ingest_s": round(ingest, 1),
        "query_p50_ms": round(single, 3),
        "rrf_two_dense_p50_ms": round(two_dense, 3), "rrf_two_dense_vs_query": round(two_dense / single, 2),
        "rrf_dense_bm25_p50_ms": round(hybrid, 3), "rrf_dense_bm25_vs_query": round(hybrid / single, 2),
    }))
    client.close()


if __name__ == "__main__":
    main()
