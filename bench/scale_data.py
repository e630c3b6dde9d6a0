"""The scale benchmark's data: seeded vectors in a raw float32 file, queries and exact ground truth.

Imported by the orchestrator (``scale.py``) and by every worker (``scale_worker.py``), including the
ones that run in a peer's venv, so it needs numpy only.

The vectors live in one file of little-endian float32 rows and are read back a slice at a time with
plain reads, never a memory map: a worker's peak RSS then measures the store, not the benchmark's copy
of the data (mapped pages would count as the worker's resident memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK_ROWS = 50_000  # generation unit: row r's value does not depend on how many rows are generated
QUERY_NOISE = 0.1  # norm of the noise added to a stored vector to make a near-duplicate query
K = 10


@dataclass(frozen=True)
class Workload:
    """What is stored: ``dist`` is "clustered" (CLIP-like: centres + noise) or "gaussian"."""

    d: int
    dist: str
    seed: int = 1234
    clusters: int = 1000
    noise: float = 0.6  # norm of the noise around a centre, before normalising

    def generate(self, path: Path, rows: int) -> None:
        """Write ``rows`` unit vectors to ``path``, CHUNK_ROWS at a time (bounded memory at 1M)."""
        rng = np.random.default_rng([self.seed, 0])
        centres = _unit(rng.standard_normal((self.clusters, self.d), dtype=np.float32))
        spread = np.float32(self.noise / np.sqrt(self.d))
        with open(path, "wb") as out:
            for chunk, lo in enumerate(range(0, rows, CHUNK_ROWS)):
                count = min(CHUNK_ROWS, rows - lo)
                rng = np.random.default_rng([self.seed, 1, chunk])
                noise = rng.standard_normal((count, self.d), dtype=np.float32)
                if self.dist == "clustered":
                    x = centres[rng.integers(0, self.clusters, count)] + noise * spread
                elif self.dist == "gaussian":
                    x = noise
                else:
                    raise ValueError(f"unknown distribution {self.dist!r}; use 'clustered' or 'gaussian'")
                out.write(_unit(x).astype("<f4").tobytes())


def read_rows(path: Path, d: int, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of a vector file, read (not mapped) into a fresh array."""
    with open(path, "rb") as f:
        f.seek(lo * d * 4)
        x = np.fromfile(f, dtype="<f4", count=(hi - lo) * d)
    if x.size != (hi - lo) * d:
        raise ValueError(f"{path} holds fewer than {hi} rows of {d} floats")
    return x.reshape(hi - lo, d)


def near_duplicate_queries(path: Path, d: int, n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` queries, each a stored vector (among the first ``n``) plus noise of norm QUERY_NOISE."""
    rng = np.random.default_rng([seed, 2])
    sources = np.sort(rng.choice(n, size=count, replace=False))
    q = np.stack([read_rows(path, d, int(i), int(i) + 1)[0] for i in sources])
    q += rng.standard_normal(q.shape, dtype=np.float32) * np.float32(QUERY_NOISE / np.sqrt(d))
    order = rng.permutation(count)  # queries in random order, not sorted by position
    return _unit(q)[order], sources[order]


def exact_top_k(path: Path, d: int, queries: np.ndarray, lo: int, hi: int, k: int = K) -> np.ndarray:
    """Exact cosine top-k row numbers among rows ``lo:hi`` (unit vectors: inner product), best first."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(lo, hi, CHUNK_ROWS):
        stop = min(hi, start + CHUNK_ROWS)
        scores = queries @ read_rows(path, d, start, stop).T
        kk = min(k, stop - start)
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        s = np.concatenate([best_s, np.take_along_axis(scores, part, axis=1)], axis=1)
        i = np.concatenate([best_i, part + start], axis=1)
        keep = np.argsort(-s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, keep, axis=1), np.take_along_axis(i, keep, axis=1)
    return best_i


def filter_windows(n: int, count: int, seed: int, fraction: float = 0.1) -> np.ndarray:
    """``count`` distinct ``[lo, hi)`` windows over the metadata field ``i``, each ~``fraction`` of n.

    Every query of the cold-filter measurement gets its own window, so no store can answer from a
    filter it has seen before.
    """
    width = max(K, int(n * fraction))
    rng = np.random.default_rng([seed, 3])
    lo = rng.choice(max(1, n - width), size=count, replace=count > n - width)
    return np.stack([lo, lo + width], axis=1).astype(np.int64)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean recall@k of result rows (row numbers) against exact top-k rows."""
    k = truth.shape[1]
    hits = sum(len(set(row[:k]) & set(int(x) for x in t)) for row, t in zip(found, truth))
    return round(hits / (k * len(found)), 4)


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x
