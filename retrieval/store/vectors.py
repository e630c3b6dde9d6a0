"""Exact (brute-force) vector search over an in-memory matrix.

This is part of the engine, not a fallback: small collections, selective filters and queries asking
for as many results as there are records are answered here with recall 1.0. Rows are kept
contiguous (a delete moves the last row into the hole) so a scan touches only live vectors.
"""

from __future__ import annotations

import mmap

import numpy as np

_GROWTH = 1.5
# Vectors of a matrix at least this large live in an anonymous memory mapping, so that rows freed
# by deletions can be handed back to the OS in place (``_release_free_rows``)...
_MAPPED_MIN_BYTES = 4 << 20
# ... once this many bytes of them are free.
_RELEASE_MIN_BYTES = 8 << 20
_FEW_QUERIES = 4
# One query is scored by numpy's own loop (vecdot, numpy >= 2; else einsum), never by BLAS: OpenBLAS
# runs every threaded call on one pool for the whole process, so a query's sgemv waited for the graph
# builder's BLAS work. Filtered queries (2,000 candidates of 512-d) while 20k records were indexed:
# p50 8 ms in some stretches with sgemv, 0.26-0.37 ms with vecdot; once indexed 0.25 ms either way.
# The price, on a quiet machine (512-d): vecdot 0.13 ms to two-thread sgemv's 0.05 at 2,000 rows,
# 0.27 to 0.11 at 5,000 (one-thread sgemv 0.20), 2.9 to 1.9 ms at 20,000.
_one_query_dots = getattr(np, "vecdot", lambda matrix, query: np.einsum("ij,j->i", matrix, query))


def prepare(vectors: np.ndarray, space: str) -> np.ndarray:
    """The form a vector is searched in: unit length for cosine, as given otherwise."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if space != "cosine":
        return vectors
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]  # einsum: no temporary of squares
    return vectors / np.maximum(norms, 1e-30)


def distances(queries: np.ndarray, matrix: np.ndarray, space: str, sq_norms: np.ndarray | None = None) -> np.ndarray:
    """Chroma's distance for each (query, row) pair.

    l2 is the squared euclidean distance; ip is ``1 - <q, x>``; cosine is ``1 - cos(q, x)``
    (``queries`` and ``matrix`` already prepared).
    """
    dots = _dots(queries, matrix)
    if space == "l2":
        if sq_norms is None:
            sq_norms = np.einsum("ij,ij->i", matrix, matrix)
        q_norms = np.einsum("ij,ij->i", queries, queries)
        out = q_norms[:, None] + sq_norms[None, :] - 2.0 * dots
        return np.maximum(out, 0.0, out=out)
    return 1.0 - dots


def distances_to_raw(queries: np.ndarray, vectors: np.ndarray, norms: np.ndarray, space: str) -> np.ndarray:
    """Chroma's distance from prepared ``queries`` to raw rows with their stored norms: the vector
    file's rows, scored where they lie (any row stride) instead of copied and prepared first."""
    dots = _dots(queries, vectors)
    if space == "cosine":
        return 1.0 - dots / np.maximum(norms, 1e-30)
    if space == "ip":
        return 1.0 - dots
    q_norms = np.einsum("ij,ij->i", queries, queries)
    out = q_norms[:, None] + np.square(norms)[None, :] - 2.0 * dots
    return np.maximum(out, 0.0, out=out)


def _dots(queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    if len(queries) == 1:
        return _one_query_dots(matrix, queries[0])[None, :]
    if len(queries) <= _FEW_QUERIES:
        # einsum runs single-threaded: for a few queries OpenBLAS's threads cost more than the
        # work once the cores are busy (2,000 rows x 4 queries: p95 16 ms against 5 ms).
        return np.einsum("ij,kj->ki", matrix, queries)
    # BLAS wants contiguous rows; a view into the vector file is strided (2.3x slower uncopied).
    return queries @ np.ascontiguousarray(matrix).T


def top_k(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise indices and values of the k smallest distances, ascending."""
    k = min(k, dist.shape[1])
    if k < dist.shape[1]:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(dist.shape[1]), dist.shape).copy()
    values = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


# Floats held at once while exact l2 distances of the top-k are recomputed (see exact_l2).
_REFINE_FLOATS = 1 << 22


def exact_l2(queries: np.ndarray, matrix: np.ndarray, idx: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recompute the chosen rows' l2 distances as sums of squared differences, re-sorted.

    ``|q|^2 + |x|^2 - 2<q, x>`` is fast but cancels catastrophically: a record queried with its own
    vector comes back at ~1e-5 instead of 0 (and near-ties can swap). hnswlib sums squared
    differences, so recomputing the k picks the same way makes exact and HNSW answers agree.
    """
    if idx.size == 0:
        return idx, dist
    rows = max(1, _REFINE_FLOATS // max(1, idx.shape[1] * matrix.shape[1]))
    out = np.empty(idx.shape, dtype=np.float32)
    for start in range(0, len(idx), rows):
        picked = matrix[idx[start : start + rows]]  # (queries, k, dim)
        diff = picked - queries[start : start + rows, None, :]
        out[start : start + rows] = np.einsum("qkd,qkd->qk", diff, diff)
    order = np.argsort(out, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(out, order, axis=1)


def search_chunks(
    queries: np.ndarray, k: int, chunks, space: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over ``(labels, raw vectors)`` chunks, holding one chunk at a time."""
    queries = prepare(queries, space)
    best_labels = np.zeros((len(queries), 0), dtype=np.int64)
    best_dist = np.zeros((len(queries), 0), dtype=np.float32)
    for labels, vectors in chunks:
        vectors = prepare(vectors, space)
        idx, dist = top_k(distances(queries, vectors, space), k)
        if space == "l2":
            idx, dist = exact_l2(queries, vectors, idx, dist)
        best_labels = np.concatenate([best_labels, labels[idx]], axis=1)
        best_dist = np.concatenate([best_dist, dist], axis=1)
        keep, best_dist = top_k(best_dist, k)
        best_labels = np.take_along_axis(best_labels, keep, axis=1)
    return best_labels, best_dist


def _zeroed_rows(capacity: int, dim: int) -> tuple[np.ndarray, mmap.mmap | None]:
    """A zeroed float32 (capacity, dim) array, in an anonymous mapping when large (and the platform
    can hand pages back: ``madvise``), with that mapping."""
    nbytes = capacity * dim * 4
    if nbytes < _MAPPED_MIN_BYTES or not hasattr(mmap, "MAP_PRIVATE") or not hasattr(mmap.mmap, "madvise"):
        return np.zeros((capacity, dim), dtype=np.float32), None
    # Private and anonymous: zero pages, resident once written, freed by MADV_DONTNEED (a shared
    # mapping, mmap's default, would keep them in shared memory).
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(mapping, dtype=np.float32).reshape(capacity, dim), mapping


class VectorMatrix:
    """Live vectors of one collection, addressable by label."""

    @classmethod
    def from_chunks(cls, dim: int, space: str, chunks, capacity: int = 0) -> VectorMatrix:
        """Build from ``(labels, raw vectors)`` chunks without materialising all rows twice."""
        matrix = cls(dim, space)
        matrix._ensure_row_capacity(capacity)
        for labels, vectors in chunks:
            matrix.upsert(labels, vectors)
        return matrix

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (a mapped matrix: only the rows not handed back)."""
        data = self._data.nbytes if self._mapping is None else self._touched * self.dim * 4
        return data + self._sq_norms.nbytes + self._labels.nbytes + self._row_of.nbytes

    def __init__(self, dim: int, space: str):
        self.dim = dim
        self.space = space
        self._data = np.zeros((0, dim), dtype=np.float32)
        self._mapping: mmap.mmap | None = None  # backs ``_data`` when it is large (_MAPPED_MIN_BYTES)
        self._touched = 0  # rows of ``_data`` that may be resident: live ones, and freed ones not yet handed back
        self._sq_norms = np.zeros(0, dtype=np.float32)
        self._labels = np.zeros(0, dtype=np.int64)  # row -> label
        self._row_of = np.full(0, -1, dtype=np.int64)  # label -> row, -1 when absent
        self.count = 0

    @property
    def labels(self) -> np.ndarray:
        return self._labels[: self.count]

    def rows_for(self, labels: np.ndarray) -> np.ndarray:
        """Row numbers of ``labels`` that are present (absent labels are dropped)."""
        labels = np.asarray(labels, dtype=np.int64)
        labels = labels[labels < len(self._row_of)]
        rows = self._row_of[labels]
        return rows[rows >= 0]

    def contains(self, label: int) -> bool:
        return label < len(self._row_of) and self._row_of[label] >= 0

    def has(self, labels: np.ndarray) -> np.ndarray:
        """Element-wise ``contains`` for an array of labels (any shape)."""
        labels = np.asarray(labels, dtype=np.int64)
        inside = (labels >= 0) & (labels < len(self._row_of))
        out = np.zeros(labels.shape, dtype=bool)
        out[inside] = self._row_of[labels[inside]] >= 0
        return out

    def raw_rows(self, rows: np.ndarray) -> np.ndarray:
        """A copy of the stored (space-prepared) vectors of ``rows``."""
        return self._data[rows].copy()

    def upsert(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace; ``vectors`` are raw, preparation for the space happens here."""
        labels = np.asarray(labels, dtype=np.int64)
        vectors = prepare(vectors, self.space)
        self._ensure_label_capacity(int(labels.max()) + 1 if len(labels) else 0)
        rows = self._row_of[labels]
        new = rows < 0
        n_new = int(new.sum())
        self._ensure_row_capacity(self.count + n_new)
        rows[new] = np.arange(self.count, self.count + n_new)
        self.count += n_new
        self._touched = max(self._touched, self.count)
        self._row_of[labels] = rows
        self._labels[rows] = labels
        self._data[rows] = vectors
        self._sq_norms[rows] = np.einsum("ij,ij->i", vectors, vectors)

    def remove(self, labels: np.ndarray) -> None:
        """Drop ``labels`` (absent ones are ignored); the last rows move into the holes, so the
        live rows stay contiguous. Vectorized: the builder drops a chunk of 2,048 pending rows at
        a time under the collection lock (a row-at-a-time loop held it, and the GIL, ~10 ms)."""
        labels = np.unique(np.asarray(labels, dtype=np.int64))
        labels = labels[self.has(labels)]
        if not len(labels):
            return
        gone = self._row_of[labels]
        count = self.count - len(gone)
        holes = np.sort(gone[gone < count])  # rows to fill, below the new end
        tail = np.arange(count, self.count)
        movers = tail[~np.isin(tail, gone)]  # surviving rows past the new end: as many as holes
        moved = self._labels[movers]
        self._data[holes] = self._data[movers]
        self._sq_norms[holes] = self._sq_norms[movers]
        self._labels[holes] = moved
        self._row_of[labels] = -1
        self._row_of[moved] = holes
        self.count = count
        self._release_free_rows()

    def subset(self, rows: np.ndarray) -> VectorMatrix:
        """A new matrix holding just ``rows`` (vectors already prepared for the space)."""
        out = VectorMatrix(self.dim, self.space)
        labels = self._labels[rows]
        out._ensure_label_capacity(int(labels.max()) + 1 if len(labels) else 0)
        out._data = self._data[rows]
        out._sq_norms = self._sq_norms[rows]
        out._labels = labels
        out._row_of[labels] = np.arange(len(labels))
        out.count = len(labels)
        return out

    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k labels and distances, optionally among ``rows`` only."""
        queries = prepare(queries, self.space)
        if rows is None:
            matrix, norms, labels = self._data[: self.count], self._sq_norms[: self.count], self.labels
        else:
            matrix, norms, labels = self._data[rows], self._sq_norms[rows], self._labels[rows]
        if len(labels) == 0:
            return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        idx, dist = top_k(distances(queries, matrix, self.space, norms), k)
        if self.space == "l2":
            idx, dist = exact_l2(queries, matrix, idx, dist)
        return labels[idx], dist

    def _ensure_row_capacity(self, needed: int) -> None:
        if needed <= len(self._data):
            return
        capacity = max(needed, int(len(self._data) * _GROWTH) + 16)
        data, self._mapping = _zeroed_rows(capacity, self.dim)
        data[: self.count] = self._data[: self.count]
        self._data = data
        self._touched = self.count
        for name in ("_sq_norms", "_labels"):
            old = getattr(self, name)
            grown = np.zeros(capacity, dtype=old.dtype)
            grown[: self.count] = old[: self.count]
            setattr(self, name, grown)

    def _release_free_rows(self) -> None:
        """Hand the pages of rows past the live ones back to the OS, in place (no copy).

        A pending tail drains as the builder inserts it into the graph: its freed rows must not stay
        resident while the graph grows by the same vectors, or the end of a bulk load holds both."""
        row_bytes = self.dim * 4
        if self._mapping is None or (self._touched - self.count) * row_bytes < _RELEASE_MIN_BYTES:
            return
        start = -(-self.count * row_bytes // mmap.PAGESIZE) * mmap.PAGESIZE  # the first page past the live rows
        if start < len(self._mapping):
            self._mapping.madvise(mmap.MADV_DONTNEED, start, len(self._mapping) - start)
        self._touched = self.count

    def _ensure_label_capacity(self, needed: int) -> None:
        if needed <= len(self._row_of):
            return
        grown = np.full(max(needed, int(len(self._row_of) * _GROWTH) + 16), -1, dtype=np.int64)
        grown[: len(self._row_of)] = self._row_of
        self._row_of = grown
