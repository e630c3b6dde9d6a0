"""The in-memory side of one collection: its vector index, exact-search matrix and checkpoints.

SQLite holds the truth; this object holds caches derived from it and keeps them in step. Both
caches load lazily: opening a collection reads nothing, the first ANN query loads the index
checkpoint (and replays the oplog after it), the first exact search loads the matrix.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from retrieval.config import HnswConfig
from retrieval.store.db import Database
from retrieval.store.hnsw import CorruptIndexError, HnswIndex, remove_checkpoint
from retrieval.store.vectors import VectorMatrix, search_chunks
from retrieval.telemetry import span

logger = logging.getLogger("retrieval")

# Compact (rebuild) the HNSW graph once this fraction of its elements are deletion marks:
# marked elements still cost search time and degrade recall after heavy churn.
COMPACT_DELETED_FRACTION = 0.25
# Checkpoint when the un-checkpointed oplog reaches this fraction of the index (and at least
# sync_threshold): bounded replay on a crash, amortised O(1) checkpoint cost per write.
CHECKPOINT_BACKLOG_FRACTION = 0.2
FILTER_CACHE_ENTRIES = 64
# Keep every vector in memory for exact search only while that copy stays this small; beyond it
# the HNSW graph is the only in-memory copy (see exact_search).
EXACT_MATRIX_MAX_BYTES = 64 << 20
# Candidate vectors of recent filters on large collections (cleared by every write).
CANDIDATE_CACHE_MAX_BYTES = 128 << 20
_READ_CHUNK = 8192

_SELECT_VECTORS_OF_COLLECTION = (
    "SELECT v.label, v.embedding FROM records r JOIN vectors v ON v.label = r.label "
    "WHERE r.collection_id = ? ORDER BY r.label"
)


def _unpack(rows: list[tuple[int, bytes]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return labels, vectors_from_blobs([r[1] for r in rows], dim)


def vectors_from_blobs(blobs: list[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32, copy=False)


class CollectionState:
    """Caches of one collection. Every method must be called with ``self.lock`` held."""

    def __init__(self, db: Database, collection_id: str, config: HnswConfig, dimension: int | None):
        self.db = db
        self.collection_id = collection_id
        self.config = config
        self.dimension = dimension
        self.lock = threading.RLock()
        self.directory: Path | None = db.directory / collection_id if db.directory is not None else None
        self._index: HnswIndex | None = None
        self._matrix: VectorMatrix | None = None
        self.applied_seq = 0  # newest oplog entry reflected in self._index
        self.backlog = 0  # oplog entries since the last checkpoint
        self.load_problem: str | None = None  # why the last load rebuilt instead of using the checkpoint
        self._count: int | None = None
        # Filter cache: label sets of recent filters, valid until the next write (like a search
        # engine's filter cache; repeated filters such as a category page skip SQL entirely).
        self._filter_cache: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._candidate_cache: OrderedDict[Any, VectorMatrix] = OrderedDict()
        self._sparse_docs: dict[str, int] = {}  # documents per sparse index, for BM25's IDF

    # ------------------------------------------------------------------ counts and filters

    def count(self) -> int:
        if self._count is None:
            with self.db.reading() as conn:
                self._count = conn.execute(
                    "SELECT COUNT(*) FROM records WHERE collection_id = ?", (self.collection_id,)
                ).fetchone()[0]
        return self._count

    def cached_labels(self, key: Any, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Labels matching a filter, from the cache when no write happened since."""
        try:
            hit = self._filter_cache.get(key)
        except TypeError:  # an unhashable filter value: just compute it
            return compute()
        if hit is not None:
            self._filter_cache.move_to_end(key)
            return hit
        labels = compute()
        self._filter_cache[key] = labels
        if len(self._filter_cache) > FILTER_CACHE_ENTRIES:
            self._filter_cache.popitem(last=False)
        return labels

    @property
    def durable(self) -> bool:
        return self.directory is not None

    # ------------------------------------------------------------------ loading

    def exact_search(
        self, queries: np.ndarray, k: int, candidates: np.ndarray | None = None, cache_key: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among all records or among ``candidates`` (labels).

        Collections whose vectors fit EXACT_MATRIX_MAX_BYTES keep them in memory. Larger ones do not
        hold a second copy of every vector next to the HNSW graph: a filter's candidate vectors are
        read from SQLite once and kept with the filter's cache entry (within a byte budget), and a
        scan of everything streams through in chunks.
        """
        if self.dimension is None or self.count() == 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        in_memory = self.count() * self.dimension * 4 <= EXACT_MATRIX_MAX_BYTES
        if in_memory and (candidates is None or cache_key is None):
            matrix = self._full_matrix()
            return matrix.search(queries, k, rows=None if candidates is None else matrix.rows_for(candidates))
        if candidates is None:
            return search_chunks(queries, k, self._vector_chunks(None), self.config.space)
        # A filter's candidates are gathered once into a contiguous matrix and kept with the filter's
        # cache entry: repeating a filter then scans them without copying (or reading) them again.
        subset = self._candidate_cache.get(cache_key)
        if subset is None:
            labels = np.sort(candidates)
            if in_memory:
                matrix = self._full_matrix()
                subset = matrix.subset(matrix.rows_for(labels))
            else:
                chunks = self._vector_chunks(labels)
                subset = VectorMatrix.from_chunks(self.dimension, self.config.space, chunks, capacity=len(labels))
            if cache_key is not None and subset.nbytes <= CANDIDATE_CACHE_MAX_BYTES:
                self._candidate_cache[cache_key] = subset
                while sum(m.nbytes for m in self._candidate_cache.values()) > CANDIDATE_CACHE_MAX_BYTES:
                    self._candidate_cache.popitem(last=False)
        else:
            self._candidate_cache.move_to_end(cache_key)
        return subset.search(queries, k)

    def _full_matrix(self) -> VectorMatrix:
        if self._matrix is None:
            self._matrix = VectorMatrix.from_chunks(
                self.dimension, self.config.space, self._vector_chunks(None), capacity=self.count()
            )
        return self._matrix

    def _vector_chunks(self, labels: np.ndarray | None):
        """``(labels, raw vectors)`` chunks from SQLite: the collection's, or the given labels'."""
        with self.db.reading() as conn:
            if labels is None:
                cursor = conn.execute(_SELECT_VECTORS_OF_COLLECTION, (self.collection_id,))
                while rows := cursor.fetchmany(_READ_CHUNK):
                    yield _unpack(rows, self.dimension)
                return
            for start in range(0, len(labels), _READ_CHUNK):
                chunk = labels[start : start + _READ_CHUNK].tolist()
                sql = f"SELECT label, embedding FROM vectors WHERE label IN ({', '.join('?' * len(chunk))})"
                rows = conn.execute(sql, chunk).fetchall()
                if rows:
                    yield _unpack(rows, self.dimension)

    def index(self) -> HnswIndex | None:
        """The HNSW index, loading or rebuilding it on first use; None while the collection has no vectors."""
        if self._index is None and self.dimension is not None:
            self._index = self._load_or_rebuild()
        return self._index

    def _load_or_rebuild(self) -> HnswIndex:
        if self.directory is not None and (self.directory / "manifest.json").exists():
            try:
                index, manifest = HnswIndex.load(self.directory, self.dimension, self.config)
                self._check_database_has(manifest.applied_seq)
                self.applied_seq = manifest.applied_seq
                if self._replay(index) or index.changed_since_sweep:
                    # Insertions since the last sweep (replayed, or in a checkpoint written without
                    # a sweep by a process that then died) can cut old elements off the graph
                    # (hnsw.py, stragglers): sweep and checkpoint now, so every record is findable.
                    self.refresh_stragglers(index)
                return index
            except CorruptIndexError as e:
                self.load_problem = str(e)
                logger.warning(
                    "collection %s: index checkpoint not usable (%s); rebuilding it from the records", self.collection_id, e
                )
        return self._rebuild()

    def _check_database_has(self, applied_seq: int) -> None:
        """Refuse a checkpoint that reflects writes SQLite does not have.

        SQLite can lose its last commits while the fsynced checkpoint keeps them (power loss under
        ``synchronous=NORMAL``, a restored backup); such an index holds phantom records, deletion
        marks on live ones and vectors SQLite never stored. Every applied_seq is the seq of one of
        this collection's own oplog rows, and ``_checkpoint`` keeps that row, so its absence proves
        the database is behind. (The global sequence alone cannot tell: other collections' writes
        may have reissued the lost numbers before this index is loaded.)
        """
        if applied_seq == 0:
            return
        with self.db.reading() as conn:
            found = conn.execute(
                "SELECT 1 FROM oplog WHERE collection_id = ? AND seq = ?", (self.collection_id, applied_seq)
            ).fetchone()
        if found is None:
            raise CorruptIndexError(
                f"checkpoint reflects oplog seq {applied_seq}, which the database does not have "
                "(lost commits or a restored database)"
            )

    def _replay(self, index: HnswIndex) -> int:
        """Apply oplog entries after the checkpoint; returns how many. Idempotent: it applies final
        states, not deltas."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT seq, label FROM oplog WHERE collection_id = ? AND seq > ? ORDER BY seq",
                (self.collection_id, self.applied_seq),
            ).fetchall()
            if not rows:
                return 0
            touched = sorted({label for _, label in rows})
            present = conn.execute(
                "SELECT label, embedding FROM vectors WHERE label IN (SELECT value FROM json_each(?)) ORDER BY label",
                (_json_list(touched),),
            ).fetchall()
        if present:
            labels = np.fromiter((r[0] for r in present), dtype=np.int64, count=len(present))
            index.upsert(labels, vectors_from_blobs([r[1] for r in present], self.dimension))
        index.remove(set(touched) - {r[0] for r in present})
        self.applied_seq = rows[-1][0]
        self.backlog = len(rows)
        return len(rows)

    def _rebuild(self) -> HnswIndex:
        with self.db.reading() as conn:
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM oplog WHERE collection_id = ?", (self.collection_id,)
            ).fetchone()[0]
        index = HnswIndex(self.dimension, self.config, capacity=self.count())
        for labels, vectors in self._vector_chunks(None):
            index.upsert(labels, vectors)
        self.applied_seq = seq
        self.backlog = 0
        self.refresh_stragglers(index)
        return index

    def rebuild_index(self) -> HnswIndex | None:
        """Replace the index with one built from SQLite (and checkpoint it when durable)."""
        self._index = None
        if self.dimension is None:
            return None
        self._index = self._rebuild()
        return self._index

    def refresh_stragglers(self, index: HnswIndex | None = None) -> None:
        """Sweep the index for records the graph no longer finds, and checkpoint when durable."""
        index = index if index is not None else self._index
        if index is None:
            return
        index.sweep(self._vector_chunks(None))
        if self.durable:
            self._checkpoint(index)

    def record_labels(self) -> list[int]:
        """Every label in the collection's records table (what the index must hold)."""
        with self.db.reading() as conn:
            return [row[0] for row in conn.execute("SELECT label FROM records WHERE collection_id = ?", (self.collection_id,))]

    # ------------------------------------------------------------------ writes

    def begin_write(self) -> None:
        """Load the index before a write commits, so loading cannot replay that write twice."""
        if self.dimension is not None:
            self.index()

    def index_for_write(self, dim: int) -> HnswIndex:
        """The index a write adds to: loaded by begin_write(), or new for the collection's first vectors."""
        if self._index is None:
            self._index = HnswIndex(dim, self.config)
        return self._index

    def sparse_doc_count(self, key: str, compute: Callable[[], int]) -> int:
        if key not in self._sparse_docs:
            self._sparse_docs[key] = compute()
        return self._sparse_docs[key]

    def _invalidate(self) -> None:
        self._filter_cache.clear()
        self._candidate_cache.clear()
        self._sparse_docs.clear()

    def apply(
        self,
        upserted: np.ndarray,
        vectors: np.ndarray | None,
        removed: list[int],
        last_seq: int,
        count_delta: int,
        indexed: bool = False,
    ) -> None:
        """Reflect a committed write in the caches (``indexed``: the vectors are already in the graph).

        On failure, drop the caches: they reload from SQLite.
        """
        self._invalidate()
        if self._count is not None:
            self._count += count_delta
        try:
            if self._matrix is not None:
                if self.count() * self._matrix.dim * 4 > EXACT_MATRIX_MAX_BYTES:
                    self._matrix = None  # outgrown: exact_search reads from SQLite from now on
                else:
                    if len(upserted):
                        self._matrix.upsert(upserted, vectors)
                    if removed:
                        self._matrix.remove(np.asarray(removed, dtype=np.int64))
            if self._index is None and self.dimension is not None and len(upserted) and not indexed:
                self.index_for_write(self.dimension)  # the collection's first vectors
            if self._index is not None:
                if len(upserted) and not indexed:
                    self._index.upsert(upserted, vectors)
                if removed:
                    self._index.remove(removed)
                self.applied_seq = max(self.applied_seq, last_seq)
            self.backlog += len(upserted) + len(removed)
            self._maintain()
        except BaseException:
            self.drop_caches()
            raise

    def _maintain(self) -> None:
        index = self._index
        if index is None:
            return
        if index.deleted and len(index.deleted) >= COMPACT_DELETED_FRACTION * index.element_count:
            logger.info("collection %s: compacting index (%d deleted elements)", self.collection_id, len(index.deleted))
            self._index = self._rebuild()
            return
        threshold = max(self.config.sync_threshold, CHECKPOINT_BACKLOG_FRACTION * index.element_count)
        if self.backlog >= threshold:
            if self.durable:
                self._checkpoint(index)
            else:  # no checkpoint to write, but stragglers still need finding (hnsw.py)
                if index.needs_sweep():
                    index.sweep(self._vector_chunks(None))
                self.backlog = 0

    def _checkpoint(self, index: HnswIndex) -> None:
        """Write the index durably, then forget the oplog it covers (never past it).

        The row at applied_seq itself stays: it is the database's evidence that it has every write
        the checkpoint reflects (see ``_check_database_has``); replay starts after it.
        """
        if index.needs_sweep():
            index.sweep(self._vector_chunks(None))  # the stragglers it finds persist with the checkpoint
        with span("retrieval.checkpoint", collection_id=self.collection_id, applied_seq=self.applied_seq):
            index.save(self.directory, self.applied_seq)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM oplog WHERE collection_id = ? AND seq < ?", (self.collection_id, self.applied_seq))
        self.backlog = 0

    def flush(self) -> None:
        """Sweep and checkpoint if anything is not yet in one (called on close), so the next open
        finds every record without sweeping."""
        if self.durable and self._index is not None and (self.backlog or self._index.changed_since_sweep):
            self.refresh_stragglers()

    def set_config(self, config: HnswConfig) -> None:
        self.config = config
        if self._index is not None:
            self._index.set_config(config)

    def drop_caches(self) -> None:
        self._index = None
        self._matrix = None
        self._count = None
        self._invalidate()
        self.backlog = 0

    def destroy(self) -> None:
        self.drop_caches()
        if self.directory is not None and self.directory.exists():
            remove_checkpoint(self.directory)
            try:
                self.directory.rmdir()
            except OSError:
                pass


def _json_list(values) -> str:
    return json.dumps(list(values))


__all__ = ["CollectionState", "vectors_from_blobs"]
