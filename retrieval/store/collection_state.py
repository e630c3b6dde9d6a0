"""The in-memory side of one collection: its graph, its pending tail, exact search, filter caches.

SQLite and the vector file hold the truth; this object holds what is derived from them and keeps
it in step. Nothing loads at open: the first ANN query loads the graph (recovery.py: its checkpoint
plus the oplog after it, put into the pending tail), in a background thread for large collections,
while queries are answered by an exact scan of the vector file.

Costs follow the change (DESIGN section 4): a write commits to SQLite and lands in the pending
tail (pending.py), searched exactly next to the graph; the graph's owed work (graph_upkeep.py:
insertions, sweeps, checkpoints) runs in the background builder (graph_builder.py). Neither
``close()`` nor recovery sweeps or saves anything after a small write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from retrieval.config import HnswConfig
from retrieval.store.checkpoint_files import remove_checkpoint
from retrieval.store.db import Database
from retrieval.store.graph_builder import GraphBuilder, shared_builder
from retrieval.store.graph_upkeep import GraphUpkeep
from retrieval.store.hnsw import HnswIndex, merge_top_k
from retrieval.store.pending import PendingWrites
from retrieval.store.recovery import LoadCancelled, read_graph, rebuild_graph, replay_into
from retrieval.store.vector_store import MOVE_BATCH, Candidates, CollectionVectors, vector_file_path
from retrieval.store.vectors import VectorMatrix, search_chunks

logger = logging.getLogger("retrieval")

# A search over-fetches past graph elements the pending tail hides up to this many times k; beyond
# that it excludes them inside hnswlib (a per-candidate callback: slower, but k stays k).
OVERFETCH_MAX_FACTOR = 4
# Writers wait for the builder while the pending tail holds more than this: it bounds the exact scan
# every query makes of the tail (~40 ms at 1 GiB) and how far acknowledged writes run ahead of the graph.
# Not peak memory: the tail hands its rows back as it drains into the graph (vectors.py), so graph +
# tail stays under the finished graph's size. At 1M x 512 this lets a bulk load run at write speed
# for its first half (measured: 256 MiB held ingest to the graph's build rate past 130k records).
PENDING_MAX_BYTES = 1 << 30
FILTER_CACHE_ENTRIES = 64
# A persistent collection with at least this many records loads its graph in a background thread;
# queries meanwhile scan the vector file exactly (vector_store.nearest_all: ~0.12 s at 1M x 512 on two cores).
# Smaller graphs load in the call that needs them (well under that).
BACKGROUND_LOAD_MIN_RECORDS = 20_000
# A batch of more queries than this waits for the graph instead: each exact answer scans the whole
# file, and past a few dozen of them the load itself is the faster way.
EXACT_WHILE_LOADING_MAX_QUERIES = 16
# Replayed records the graph may already hold are compared with it on load up to this many (about
# 40 us each): a half-inserted write. More than that is a large update, which the builder redoes.
SETTLE_ON_LOAD_MAX = 8192
# Keep every vector in memory for exact search only while that copy stays this small; beyond it
# the HNSW graph is the only in-memory copy (see exact_search).
EXACT_MATRIX_MAX_BYTES = 64 << 20
# Candidate vectors of recent filters on large in-memory collections (cleared by every write).
CANDIDATE_CACHE_MAX_BYTES = 128 << 20


class CollectionState:
    """Caches of one collection. Every method must be called with ``self.lock`` held."""

    def __init__(
        self, db: Database, collection_id: str, config: HnswConfig, dimension: int | None, builder: GraphBuilder | None = None
    ):
        self.db = db
        self.builder = builder if builder is not None else shared_builder()
        self.graph_lock = threading.Lock()  # held by whoever mutates the graph: the builder, flush, verify
        self.pending: PendingWrites | None = None  # acknowledged writes the graph does not hold yet
        self.cancelled = False  # the collection is being deleted: background work stops
        self.collection_id = collection_id
        self.config = config
        self.dimension = dimension
        self.lock = threading.RLock()
        self.directory: Path | None = db.directory / collection_id if db.directory is not None else None
        self._index: HnswIndex | None = None
        self._matrix: VectorMatrix | None = None
        self.applied_seq = 0  # newest oplog entry reflected in the graph plus the pending tail
        self.load_problem: str | None = None  # why the last load rebuilt instead of using the checkpoint
        self._count: int | None = None
        # Filter cache: label sets of recent filters, valid until the next write (like a search
        # engine's filter cache; repeated filters such as a category page skip SQL entirely).
        self._filter_cache: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._candidate_cache: OrderedDict[Any, VectorMatrix] = OrderedDict()
        self._sparse_docs: dict[str, int] = {}  # documents per sparse index, for BM25's IDF
        self._vectors: CollectionVectors | None = None
        self._vectors_lock = threading.Lock()
        self._unmoved = 0  # vectors this process wrote to SQLite since it last moved them to the file
        self._loader: threading.Thread | None = None  # loading the graph in the background
        self._loaded = threading.Condition(self.lock)  # notified when a background load ends
        self.upkeep = GraphUpkeep(self)  # the graph's owed work: insertions, sweeps, checkpoints

    @property
    def vectors(self) -> CollectionVectors:
        """Where the collection's vectors are (SQLite, the vector file). Needs a dimension."""
        with self._vectors_lock:  # not self.lock: readers come here holding the database's lock
            if self._vectors is None:
                self._vectors = CollectionVectors(self.db, self.collection_id, self.dimension)
            return self._vectors

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
        self, queries: np.ndarray, k: int, candidates: Candidates | None = None, cache_key: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among all records or among a filter's ``candidates``.

        Collections whose vectors fit EXACT_MATRIX_MAX_BYTES keep them in memory. Larger ones do not
        hold a second copy of every vector next to the HNSW graph: a filter's candidates, or every
        record, are scored in place in the vector file (vector_store.py). Without a file (an in-memory
        database) candidates are read from SQLite once and kept with the filter's cache entry.
        """
        if self.dimension is None or self.count() == 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        in_memory = self.count() * self.dimension * 4 <= EXACT_MATRIX_MAX_BYTES
        if in_memory and (candidates is None or cache_key is None):
            matrix = self._full_matrix()
            return matrix.search(queries, k, rows=None if candidates is None else matrix.rows_for(candidates.labels))
        if candidates is None and self.vectors.file is not None:
            return self.vectors.nearest_all(queries, k, self.config.space)
        if candidates is None:
            return search_chunks(queries, k, self.vectors.pages(), self.config.space)
        if not in_memory and self.vectors.file is not None:
            return self.vectors.nearest(queries, k, candidates, self.config.space)
        # Without a vector file (an in-memory database) a filter's candidates are gathered once into
        # a contiguous matrix and kept with the filter's cache entry: repeating a filter then scans
        # them without reading them from SQLite again.
        subset = self._candidate_cache.get(cache_key)
        if subset is None:
            if in_memory:
                matrix = self._full_matrix()
                subset = matrix.subset(matrix.rows_for(candidates.labels))
            else:
                chunks = [self.vectors.read(candidates.labels)]
                subset = VectorMatrix.from_chunks(self.dimension, self.config.space, chunks, capacity=len(candidates.labels))
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
                self.dimension, self.config.space, self.vectors.pages(), capacity=self.count()
            )
        return self._matrix

    def index(self) -> HnswIndex | None:
        """The HNSW index, loaded now if need be (after a background load in flight, if any); None
        while the collection has no vectors."""
        while self._loader is not None:
            self._loaded.wait()  # releases self.lock meanwhile, so the loader can install the graph
        if self._index is None and self.dimension is not None:
            self._install(*self._read_graph(lambda: self.cancelled))
        return self._index

    @property
    def loaded_index(self) -> HnswIndex | None:
        """The graph if it is in memory (nothing is loaded)."""
        return self._index

    def swap_index(self, old: HnswIndex, new: HnswIndex) -> bool:
        """Make ``new`` the graph if ``old`` still is and the collection is open (a compaction's swap)."""
        with self.lock:
            if self._index is not old or self.cancelled:
                return False
            self._index = new
            return True

    def loads_in_background(self) -> bool:
        """Whether the graph is not in memory and is, or would be, loaded by a background thread."""
        if self._index is not None or self.dimension is None:
            return False
        return self._loader is not None or (self.durable and self.count() >= BACKGROUND_LOAD_MIN_RECORDS)

    def graph(self) -> HnswIndex | None:
        """The index if it is in memory; else a large collection's starts loading in a background
        thread and None is returned: the caller answers exactly meanwhile. Small ones load now."""
        if self._index is None and self._loader is None and self.dimension is not None:
            if self.loads_in_background():
                self._loader = threading.Thread(
                    target=self._load_in_background, name=f"retrieval-load-{self.collection_id[:8]}", daemon=True
                )
                self._loader.start()
            else:
                self.index()
        return self._index

    @property
    def loading(self) -> bool:
        return self._loader is not None

    def _load_in_background(self) -> None:
        graph = None
        try:
            graph = self._read_graph(lambda: self.cancelled)
        except LoadCancelled:
            pass
        except Exception:
            if not self.cancelled:  # else its files were closed or deleted under it: expected
                logger.exception("collection %s: loading the index failed; queries stay exact", self.collection_id)
        with self.lock:
            try:
                if graph is not None and not self.cancelled and self._index is None:
                    self._install(*graph)
            except Exception:
                logger.exception("collection %s: loading the index failed; queries stay exact", self.collection_id)
            finally:
                self._loader = None
                self._loaded.notify_all()

    def _read_graph(self, should_stop: Callable[[], bool]) -> tuple[HnswIndex, int]:
        """The graph from its checkpoint, else rebuilt from the records (and checkpointed), and the
        oplog seq it reflects: the long part of loading, run without the collection's lock."""
        found = read_graph(self.db, self.collection_id, self.directory, self.config, self.vectors, self.dimension, should_stop)
        self.load_problem = found.problem
        if found.rebuilt and self.durable:
            self.upkeep.save(found.index, found.seq)
        return found.index, found.seq

    def _install(self, index: HnswIndex, seq: int) -> None:
        """Make ``index`` the graph, with the oplog after ``seq`` in a new pending tail (recovery.py).
        Under the lock: writes committed while the graph loaded are in that oplog, not yet queued."""
        self.pending = PendingWrites(self.dimension, self.config.space)
        self.applied_seq = replay_into(self.pending, self.db, self.collection_id, seq, self.vectors)
        # A checkpoint claims the oplog only up to its oldest pending write, so the replay may queue
        # records the graph already holds: the rest of a write the builder had half inserted. Those
        # it holds with the same vector are settled now; left pending, every query would have to hide
        # them from the graph (hnswlib's per-candidate filter) until the builder re-inserted them.
        # The checkpoint's sweep skipped what was pending then (a re-run upsert of the same vectors
        # is), so settling lists the ones the graph does not find, as the builder's insertion would.
        held, vectors = self.pending.overlap(index.max_label)
        if 0 < len(held) <= SETTLE_ON_LOAD_MAX:
            same = index.holds(held, vectors)
            self.pending.drop(held[same])
            index.list_unfound(held[same], vectors[same])  # not installed yet: no search runs on it
        # Checkpoints are swept before they are saved; one written by an older version may not be:
        # sweep it in the background (until then a cut-off record may be missed).
        self.upkeep.reset(sweep_owed=index.changed_since_sweep > 0)
        self._index = index
        self.upkeep.wake()

    def rebuild_index(self) -> HnswIndex | None:
        """Replace the index with one built from SQLite (and checkpoint it when durable)."""
        self.index()  # not while a background load is in flight
        self._index = None
        if self.dimension is None:
            return None
        rebuilt = rebuild_graph(self.db, self.collection_id, self.config, self.vectors, self.dimension)
        if self.durable:
            self.upkeep.save(rebuilt.index, rebuilt.seq)
        self._install(rebuilt.index, rebuilt.seq)
        return self._index

    def record_labels(self) -> list[int]:
        """Every label in the collection's records table (what the index must hold)."""
        with self.db.reading() as conn:
            return [row[0] for row in conn.execute("SELECT label FROM records WHERE collection_id = ?", (self.collection_id,))]

    # ------------------------------------------------------------------ queries over graph + tail

    def ann_search(self, queries: np.ndarray, k: int, filter_fn=None, candidates: Candidates | None = None):
        """Top-k from the graph merged with an exact scan of the pending tail.

        Raises RuntimeError when the two together cannot produce k results (the caller answers
        exactly instead).
        """
        if self._index is None and len(queries) <= EXACT_WHILE_LOADING_MAX_QUERIES and self.loads_in_background():
            answer = self.exact_search(queries, k, candidates)  # first, then start the load
            self.graph()
            return answer
        index = self.index()
        pending = self.pending
        hidden_bound = pending.overlap_bound(index.max_label)
        if hidden_bound > OVERFETCH_MAX_FACTOR * k:
            # Too many graph elements may be stale to over-fetch past them: skip them in the search.
            hidden, allowed = pending.hidden_set(), filter_fn
            filter_fn = (lambda label: label not in hidden) if allowed is None else (
                lambda label: label not in hidden and allowed(label))
            hidden_bound = 0
        graph_k = min(k + hidden_bound, index.live_count)
        if graph_k > 0:
            labels, dist = self._graph_search(index, queries, graph_k, filter_fn)
        else:
            labels = np.zeros((len(queries), 0), np.int64)
            dist = np.zeros((len(queries), 0), np.float32)
        if pending.empty:
            return labels[:, :k], dist[:, :k]
        dist = np.where(pending.hides(labels), np.float32(np.inf), dist).astype(np.float32)
        tail_labels, tail_dist = pending.search(queries, k, None if candidates is None else candidates.labels)
        labels, dist = merge_top_k(tail_labels, tail_dist, labels, dist, k)
        if labels.shape[1] < k or not np.isfinite(dist).all():
            raise RuntimeError("graph and pending tail hold fewer than k results")
        return labels, dist

    def _graph_search(self, index: HnswIndex, queries: np.ndarray, k: int, filter_fn):
        """hnswlib's search, retried while the builder inserts: an element it has counted but not yet
        linked can leave a search short of k (measured: ~1 in 1,400 searches during add_items)."""
        for attempt in range(3):
            try:
                return index.search(queries, k, filter_fn)
            except RuntimeError:
                if not self.upkeep.inserting or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ writes

    def begin_write(self) -> None:
        """Before a write commits: have the graph in memory or loading, so the builder can index the
        write (a load replays it from the oplog, under this lock: never twice)."""
        if self.dimension is not None:
            self.graph()

    def wait_for_room(self, timeout: float = 60.0) -> None:
        """Hold a writer while the pending tail is over PENDING_MAX_BYTES and the builder is catching up."""
        deadline = time.monotonic() + timeout
        while self.pending is not None and self.pending.nbytes > PENDING_MAX_BYTES and self.builder.running:
            if time.monotonic() > deadline:
                return  # the builder is stuck or slow: accept the write rather than hang
            self.builder.idle(timeout=0.05)

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
        first_seq: int,
        last_seq: int,
        count_delta: int,
    ) -> None:
        """Reflect a committed write in the caches: the exact matrix, and the pending tail the
        builder will take into the graph. O(size of the write). On failure, drop the caches: they
        reload from SQLite.
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
            if self._index is None and self._loader is None and len(upserted) and self.count() == count_delta:
                self._index = HnswIndex(self.dimension, self.config)  # the collection's first records
                self.pending = PendingWrites(self.dimension, self.config.space)
            if self._index is not None:
                self.pending.put(np.asarray(upserted, dtype=np.int64), vectors, first_seq)
                self.pending.delete(removed, first_seq)
                self.applied_seq = max(self.applied_seq, last_seq)
                self.upkeep.wake()
        except BaseException:
            self.drop_caches()
            raise

    def left_in_sqlite(self, count: int) -> None:
        """A committed write left ``count`` vectors in SQLite: once MOVE_BATCH gathered, the writer
        moves them into the vector file itself (amortised; SQLite keeps few vectors)."""
        if not self.durable or not count:
            return
        self._unmoved += count
        if self._unmoved >= MOVE_BATCH:
            self.move_vectors()

    def move_vectors(self) -> None:
        """Move the collection's recent vectors from SQLite into its vector file (vector_store.py).

        Never fails its caller (a committed write, a background step): vectors it leaves behind are
        durable in SQLite and move next time."""
        if not self.durable or self.dimension is None:
            return
        try:
            while self.vectors.move_to_file() == MOVE_BATCH:
                pass
            self._unmoved = 0
        except Exception:
            logger.warning("collection %s: could not move vectors into the vector file", self.collection_id, exc_info=True)

    def stop_background(self) -> None:
        """No more background work for this collection (its client closes): wait for the step in flight."""
        self.cancelled = True
        self.builder.forget(self.upkeep)
        with self.graph_lock:
            pass
        loader = self._loader
        if loader is not None:
            loader.join()  # stops at its next chunk (should_stop)

    def close_files(self) -> None:
        if self._vectors is not None:
            self._vectors.close()
            self._vectors = None

    def set_config(self, config: HnswConfig) -> None:
        self.config = config
        if self._index is not None:
            self._index.set_config(config)

    def drop_caches(self) -> None:
        self._index = None
        self.pending = None
        self._matrix = None
        self._count = None
        self._invalidate()
        self.upkeep.reset(sweep_owed=False)

    def destroy(self) -> None:
        """Forget the collection's caches and checkpoint (it was deleted). Callers set ``cancelled``
        and hold ``graph_lock`` first, so no background step is writing a checkpoint meanwhile."""
        self.builder.forget(self.upkeep)
        self.drop_caches()
        self.close_files()
        if self.db.directory is not None:
            vector_file_path(self.db.directory, self.collection_id).unlink(missing_ok=True)
        if self.directory is not None and self.directory.exists():
            remove_checkpoint(self.directory)
            try:
                self.directory.rmdir()
            except OSError:
                pass


__all__ = ["CollectionState"]
