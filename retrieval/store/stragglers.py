"""The graph's stragglers, searched next to every HNSW query at a cost that grows slowly with their number.

Stragglers are the elements a search for their own vector does not reach in the graph (hnsw.py
explains why they exist). Every search must also look at them, or those records are lost to
queries. Scanning them all costs O(stragglers) per query, and their number grows faster than the
graph: on the scale benchmark's clustered 512-d vectors at its 1M density (1,000 per cluster; M 16,
ef 100) 315 of 100k and 3,387 of 300k were stragglers, so ~46,000 are expected at 1M, whose exact
scan (5.5 ms a query) would cost 5x the rest of the query.

So once there are ``LISTS_MIN_ROWS``, they are also grouped into a small inverted file:
``sqrt(count)`` centres drawn from the stragglers themselves, each straggler listed under its
nearest centre, the lists stored contiguously. A query scans the centres, then only the lists of
its ``PROBES`` nearest centres: ~9 sqrt(count) rows instead of count (1,900 of 46,000). A straggler
queried with its own vector is still always found: the centre it is listed under is its nearest
(the same distance function chooses both; equal centres are removed, so only rounding could reorder
it, and then among the ``PROBES`` nearest). Stragglers whose vector changes or that are added after
the lists were built are scanned exactly until the lists are rebuilt (when they or the removals since
the build pass ``REBUILD_FRACTION`` of the count); each vector is held once, in the lists or out of
them. A filtered search calls the filter only on the rows it probes.

A second HNSW graph over the stragglers was the other candidate: it costs ~50x more to build
(hnswlib inserts ~3,000 512-d vectors/s on two cores; the lists take one matrix product, 0.3 s for
50,000) and it has stragglers of its own, so findability would again need an exact fallback.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from retrieval.store.vectors import VectorMatrix, distances, exact_l2, prepare, top_k

# Below this many stragglers one exact scan costs about what probing lists does (measured on 512-d:
# 1,640 rows 0.18 ms exact, 0.13 ms lists; 4,096 rows 0.43 ms, 0.16 ms; 50,000 rows 5.4 ms, 0.32 ms).
LISTS_MIN_ROWS = 2048
# Lists a query scans. Each holds ~sqrt(count) stragglers; 8 of them find nearly every straggler
# among a query's true neighbours on clustered data (tests/test_stragglers.py measures it).
PROBES = 8
# Rebuild the lists once the loose stragglers plus the removals since the last build reach this share.
REBUILD_FRACTION = 0.1
# Rows whose distances to the centres are held at once while the lists are built.
_ASSIGN_CHUNK = 8192


class Stragglers:
    """The straggler labels and their current vectors, searchable exactly or through lists.

    Each straggler's vector is held once: in the lists, or in ``_loose`` (every straggler while
    there are few; those changed or added since the lists were built otherwise).
    """

    def __init__(self, dim: int, space: str):
        self.dim = dim
        self.space = space
        self._lists: InvertedLists | None = None
        self._loose = VectorMatrix(dim, space)  # searched by an exact scan

    @classmethod
    def of(cls, dim: int, space: str, labels: np.ndarray, vectors: np.ndarray) -> Stragglers:
        """The stragglers ``labels`` (distinct) with their raw ``vectors``: a sweep's result, or a checkpoint's
        list. A large set goes straight into lists, not through the exact matrix first (at 1M the
        stragglers are ~100 MB of vectors, and each pass through a copy was held at the sweep's end)."""
        out = cls(dim, space)
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) >= LISTS_MIN_ROWS:
            out._lists = InvertedLists.build(labels, prepare(vectors, space), space)
        elif len(labels):
            out._loose.upsert(labels, vectors)
        return out

    @property
    def count(self) -> int:
        return self._loose.count + (self._lists.live_count if self._lists is not None else 0)

    @property
    def labels(self) -> np.ndarray:
        if self._lists is None:
            return self._loose.labels
        return np.concatenate([self._lists.live()[0], self._loose.labels])

    @property
    def indexed(self) -> bool:
        """Whether searches probe lists (True) or scan every straggler (False)."""
        return self._lists is not None

    def has(self, labels: np.ndarray) -> np.ndarray:
        found = self._loose.has(labels)
        if self._lists is not None:
            found |= self._lists.has(labels)
        return found

    def held(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stragglers among ``labels`` (distinct) and their vectors, prepared for the space."""
        labels = np.asarray(labels, dtype=np.int64)
        loose = self._loose.has(labels)
        found = [labels[loose]]
        vectors = [self._loose.raw_rows(self._loose.rows_for(labels[loose]))]
        if self._lists is not None:
            listed = self._lists.has(labels) & ~loose
            found.append(labels[listed])
            vectors.append(self._lists.vectors_of(labels[listed]))
        return np.concatenate(found), np.concatenate(vectors).reshape(-1, self.dim)

    def upsert(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if not len(labels):
            return
        if self._lists is not None:
            self._lists.drop(labels)  # an older vector of these labels may be listed
        self._loose.upsert(labels, vectors)
        self._reorganise()

    def remove(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if not len(labels) or not self.has(labels).any():
            return
        if self._lists is not None:
            self._lists.drop(labels)
        self._loose.remove(labels)
        self._reorganise()

    def search(
        self, queries: np.ndarray, k: int, filter_fn: Callable[[int], bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k stragglers per query, ``(labels, distances)``; rows may be padded with label -1 at
        distance inf when fewer than k were looked at."""
        if self._lists is None:
            return _scan(self._loose, queries, k, filter_fn)
        labels, dist = self._lists.search(queries, k, filter_fn)
        if self._loose.count:
            loose_labels, loose_dist = _scan(self._loose, queries, k, filter_fn)
            labels, dist = np.concatenate([labels, loose_labels], axis=1), np.concatenate([dist, loose_dist], axis=1)
            keep, dist = top_k(dist, k)
            labels = np.take_along_axis(labels, keep, axis=1)
        return labels, dist

    def _reorganise(self) -> None:
        """Build the lists when there are enough stragglers, rebuild them when enough has changed,
        give them up when few remain."""
        lists = self._lists
        if self.count < LISTS_MIN_ROWS:
            if lists is not None:
                self._lists = None
                self._loose.upsert(*lists.live())
            return
        if lists is None or self._loose.count + lists.dropped > REBUILD_FRACTION * self.count:
            labels, vectors = lists.live() if lists is not None else (np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32))
            loose = self._loose
            labels = np.concatenate([labels, loose.labels])
            vectors = np.concatenate([vectors, loose.raw_rows(np.arange(loose.count))])
            self._lists = InvertedLists.build(labels, vectors, self.space)
            self._loose = VectorMatrix(self.dim, self.space)


class InvertedLists:
    """An immutable grouping of prepared vectors under their nearest centre; labels can be dropped."""

    def __init__(self, space: str, centres: np.ndarray, vectors: np.ndarray, labels: np.ndarray, offsets: np.ndarray):
        self.space = space
        self.centres = centres
        self.centre_norms = np.einsum("ij,ij->i", centres, centres)
        self.vectors = vectors  # rows grouped by list: list i is rows offsets[i]:offsets[i + 1]
        self.sq_norms = np.einsum("ij,ij->i", vectors, vectors)
        self.labels = labels
        self.alive = np.ones(len(labels), dtype=bool)
        self.dropped = 0
        self.offsets = offsets
        self._sorted = np.argsort(labels, kind="stable")  # positions by label, for drop()

    @property
    def live_count(self) -> int:
        return len(self.labels) - self.dropped

    @classmethod
    def build(cls, labels: np.ndarray, vectors: np.ndarray, space: str) -> InvertedLists:
        """Lists over ``vectors`` (prepared for the space); centres are a seeded sample of them (no
        k-means: one assignment pass keeps the build at one matrix product)."""
        n_lists = max(1, int(math.sqrt(len(labels))))
        rng = np.random.default_rng(len(labels))
        # Distinct centres: equal ones would tie for a vector, and it could probe the wrong one.
        centres = np.unique(vectors[rng.choice(len(labels), size=n_lists, replace=False)], axis=0)
        n_lists = len(centres)
        centre_norms = np.einsum("ij,ij->i", centres, centres)
        assigned = np.concatenate([
            _nearest_centres(vectors[lo : lo + _ASSIGN_CHUNK], centres, centre_norms, space, 1)[:, 0]
            for lo in range(0, len(vectors), _ASSIGN_CHUNK)
        ])
        order = np.argsort(assigned, kind="stable")
        offsets = np.searchsorted(assigned[order], np.arange(n_lists + 1))
        return cls(space, centres, vectors[order], labels[order], offsets)

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, prepared vectors)`` of the rows not dropped (copies)."""
        return self.labels[self.alive], self.vectors[self.alive]

    def has(self, labels: np.ndarray) -> np.ndarray:
        """Element-wise: is the label listed and not dropped?"""
        labels = np.asarray(labels, dtype=np.int64)
        positions = self._positions(labels)
        return (self.labels[positions] == labels) & self.alive[positions]

    def vectors_of(self, labels: np.ndarray) -> np.ndarray:
        """The prepared vectors of listed, not dropped ``labels`` (a copy)."""
        return self.vectors[self._positions(np.asarray(labels, dtype=np.int64))]

    def drop(self, labels: np.ndarray) -> None:
        """Stop returning ``labels`` (those not listed are ignored)."""
        positions = self._positions(labels)
        positions = positions[(self.labels[positions] == labels) & self.alive[positions]]
        self.alive[positions] = False
        self.dropped += len(np.unique(positions))

    def _positions(self, labels: np.ndarray) -> np.ndarray:
        """Where each label would sit (its row when listed; check ``self.labels`` at it)."""
        where = np.searchsorted(self.labels, labels, sorter=self._sorted)
        return self._sorted[np.minimum(where, len(self.labels) - 1)]

    def search(self, queries: np.ndarray, k: int, filter_fn: Callable[[int], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = prepare(queries, self.space)
        probes = _nearest_centres(queries, self.centres, self.centre_norms, self.space, PROBES)
        out_labels = np.full((len(queries), k), -1, dtype=np.int64)
        out_dist = np.full((len(queries), k), np.inf, dtype=np.float32)
        for i, query in enumerate(queries[:, None, :]):
            # Each list is a contiguous slice: distances straight from views, no gathered copy.
            spans = [(self.offsets[p], self.offsets[p + 1]) for p in probes[i]]
            rows = np.concatenate([np.arange(lo, hi) for lo, hi in spans])
            dist = np.concatenate([distances(query, self.vectors[lo:hi], self.space, self.sq_norms[lo:hi]) for lo, hi in spans], axis=1)
            if self.dropped:
                dist[:, ~self.alive[rows]] = np.inf
            if filter_fn is not None:
                passes = np.fromiter(map(filter_fn, self.labels[rows].tolist()), dtype=bool, count=len(rows))
                dist[:, ~passes] = np.inf
            idx, dist = top_k(dist, k)
            found = np.isfinite(dist[0])  # fewer than k rows may be alive and pass the filter
            idx, dist = rows[idx[:, found]], dist[:, found]
            if self.space == "l2":
                idx, dist = exact_l2(query, self.vectors, idx, dist)
            out_labels[i, : idx.shape[1]] = self.labels[idx[0]]
            out_dist[i, : idx.shape[1]] = dist[0]
        return out_labels, out_dist


def _nearest_centres(vectors: np.ndarray, centres: np.ndarray, centre_norms: np.ndarray, space: str, n: int) -> np.ndarray:
    """Indices of each vector's ``n`` nearest centres, nearest first (the one place lists are chosen,
    so a straggler's own vector always probes the list it was put in)."""
    dist = distances(vectors, centres, space, centre_norms)
    if n == 1:  # building: argmin is a third cheaper than a partition
        return np.argmin(dist, axis=1)[:, None]
    idx, _ = top_k(dist, min(n, len(centres)))
    return idx


def _scan(matrix: VectorMatrix, queries: np.ndarray, k: int, filter_fn: Callable[[int], bool] | None):
    """Exact top-k over ``matrix``, or over its rows whose labels pass ``filter_fn``."""
    if filter_fn is None:
        return matrix.search(queries, k)
    passing = np.asarray([label for label in matrix.labels.tolist() if filter_fn(label)], dtype=np.int64)
    return matrix.search(queries, k, matrix.rows_for(passing))
