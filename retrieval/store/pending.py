"""Acknowledged writes the HNSW graph does not reflect yet: the collection's unindexed tail.

A write is acknowledged once SQLite has committed it; its vectors then wait here until the
background builder (graph_builder.py) inserts them into the graph, and its deletions wait here
until the builder marks them in the graph. Queries search this tail exactly and merge it with the
graph's answer (as LanceDB, Qdrant and Milvus do with their unindexed segments), so a record is
found from its acknowledgement on, whatever the builder has done so far:

- a graph hit whose label is pending is dropped (the tail holds the label's newest vector; the
  graph may hold an older one, or the same one while the builder settles it);
- a graph hit whose label has a pending deletion is dropped.

The tail keeps write order (oldest first), so the builder inserts in the order records were
acknowledged, and each entry remembers the first oplog sequence of its write: a checkpoint of the
graph may then claim every oplog entry before the oldest pending one (``first_seq``).
"""

from __future__ import annotations

import itertools

import numpy as np

from retrieval.store.vectors import VectorMatrix


class PendingWrites:
    """The tail of one collection. Callers hold the collection's lock."""

    def __init__(self, dim: int, space: str):
        self.vectors = VectorMatrix(dim, space)
        self._order: dict[int, tuple[int, int]] = {}  # label -> (version, first oplog seq of its write), oldest first
        self.deletes: dict[int, int] = {}  # label -> first oplog seq of the deleting write
        self._version = 0
        self._hidden: frozenset[int] | None = None  # cache of hidden_set(), dropped by every change

    def __len__(self) -> int:
        return len(self._order)

    @property
    def empty(self) -> bool:
        return not self._order and not self.deletes

    @property
    def nbytes(self) -> int:
        return self.vectors.count * self.vectors.dim * 4

    def put(self, labels: np.ndarray, vectors: np.ndarray, first_seq: int | np.ndarray) -> None:
        """Queue new or changed vectors (a changed label moves to the back: its newest vector wins).

        ``first_seq``: the oplog seq of the write, or one per label in ascending order (a replay)."""
        self._hidden = None
        if not len(labels):
            return
        self.vectors.upsert(labels, vectors)
        self._version += 1
        for label, seq in zip(labels.tolist(), _per_label(first_seq, len(labels))):
            self._order.pop(label, None)
            self.deletes.pop(label, None)
            self._order[label] = (self._version, seq)

    def delete(self, labels, first_seq: int | list[int] | np.ndarray) -> None:
        """Queue deletions; a deleted label's pending vector is dropped at once (``first_seq`` as for ``put``)."""
        self._hidden = None
        labels = [int(label) for label in labels]
        if not labels:
            return
        self.vectors.remove(np.asarray(labels, dtype=np.int64))
        for label, seq in zip(labels, _per_label(first_seq, len(labels))):
            self._order.pop(label, None)
            self.deletes.setdefault(label, seq)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """The oldest ``n`` pending vectors (copies) and their versions, for the builder to insert."""
        labels = np.fromiter(itertools.islice(self._order, n), dtype=np.int64)
        rows = self.vectors.rows_for(labels)
        vectors = self.vectors.raw_rows(rows)
        return labels, vectors, [self._order[label][0] for label in labels.tolist()]

    def settle(self, labels: np.ndarray, versions: list[int]) -> None:
        """Forget entries the graph now holds, unless a newer write replaced them meanwhile."""
        self._hidden = None
        done = [label for label, version in zip(labels.tolist(), versions) if self._order.get(label, (None,))[0] == version]
        for label in done:
            del self._order[label]
        if done:
            self.vectors.remove(np.asarray(done, dtype=np.int64))

    def overlap(self, graph_max_label: int) -> tuple[np.ndarray, np.ndarray]:
        """Pending labels the graph may hold too (it was given every label up to ``graph_max_label``),
        with their pending vectors (as prepared for the space)."""
        labels = self.vectors.labels
        labels = labels[labels <= graph_max_label].copy()
        return labels, self.vectors.raw_rows(self.vectors.rows_for(labels))

    def drop(self, labels: np.ndarray) -> None:
        """Forget pending vectors the graph already holds as they are: there is nothing to insert."""
        self.settle(labels, [self._order[label][0] for label in labels.tolist()])

    def take_deletes(self) -> list[int]:
        self._hidden = None
        labels = list(self.deletes)
        self.deletes.clear()
        return labels

    def first_seq(self) -> int | None:
        """The smallest oplog sequence any pending entry may come from (None when nothing is pending)."""
        # _order is oldest first, so its first entry has its smallest seq.
        seqs = [next(iter(self._order.values()))[1]] if self._order else []
        return min(seqs + list(self.deletes.values()), default=None)

    def hides(self, labels: np.ndarray) -> np.ndarray:
        """Which graph hits must be dropped: labels with a pending vector or a pending deletion."""
        hidden = np.zeros(labels.shape, dtype=bool)
        if self.vectors.count:
            hidden |= self.vectors.has(labels)
        if self.deletes:
            hidden |= np.isin(labels, np.fromiter(self.deletes, dtype=np.int64, count=len(self.deletes)))
        return hidden

    def hidden_set(self) -> frozenset[int]:
        """The labels ``hides`` drops, as a set for hnswlib's filter callback (cached until a change)."""
        if self._hidden is None:
            self._hidden = frozenset(self.vectors.labels.tolist()) | frozenset(self.deletes)
        return self._hidden

    def overlap_bound(self, graph_max_label: int) -> int:
        """How many graph hits ``hides`` may drop: the graph can only hold labels it was given."""
        if not self.vectors.count:
            return len(self.deletes)
        return int(np.count_nonzero(self.vectors.labels <= graph_max_label)) + len(self.deletes)

    def search(self, queries: np.ndarray, k: int, candidates: np.ndarray | None = None):
        """Exact top-k among the pending vectors (or those of them among ``candidates``)."""
        rows = None if candidates is None else self.vectors.rows_for(candidates)
        return self.vectors.search(queries, k, rows)

    def labels(self) -> np.ndarray:
        return self.vectors.labels.copy()


def _per_label(first_seq: int | list[int] | np.ndarray, count: int) -> list[int]:
    """One oplog seq per label: the write's for all of them, or the replay's own list."""
    return np.broadcast_to(np.asarray(first_seq, dtype=np.int64), (count,)).tolist()


__all__ = ["PendingWrites"]
