"""Hybrid search: dense (MiniLM) and BM25 results fused with reciprocal rank fusion.

    python examples/hybrid_search.py
"""

from __future__ import annotations

import json
from pathlib import Path

import retrieval
from embedders.bm25 import BM25EmbeddingFunction
from retrieval import K, Knn, Rrf, Search

corpus = json.loads((Path(__file__).resolve().parents[1] / "tests" / "data" / "hybrid_corpus.json").read_text())
client = retrieval.EphemeralClient()
docs = client.create_collection(  # default embedding function: all-MiniLM-L6-v2, bundled
    "docs", configuration={"sparse": {"key": "sparse_embedding", "embedding_function": BM25EmbeddingFunction()}}
)
docs.add(ids=[d["id"] for d in corpus["documents"]], documents=[d["text"] for d in corpus["documents"]])

question = next(q["text"] for q in corpus["queries"] if q["kind"] == "mixed")
hybrid = Search().rank(
    Rrf([Knn(query=question, return_rank=True, limit=50), Knn(query=question, key="sparse_embedding", return_rank=True, limit=50)])
).limit(5).select(K.DOCUMENT, K.SCORE)
print(question)
for row in docs.search(hybrid).rows()[0]:
    print(f"  {row['score']:.4f}  {row['id']}: {row['document'][:70]}")
