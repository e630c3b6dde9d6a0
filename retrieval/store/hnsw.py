"""The hnswlib index of one collection: searches, sweeps, and its checkpoint (saved and loaded
through checkpoint_files.py, which says how each file is written and checked).

Stragglers. hnswlib's neighbour selection keeps each element's links short and diverse; when later
insertions refill a neighbour list, the long links that lead to outlying elements are the ones it
prunes. In l2 space with unnormalised vectors the elements of large norm ("anti-hubs") lose their
last in-links this way, and a query with such an element's own vector no longer reaches it. This
is not damage (a rebuild from SQLite has the same holes): 64-d Gaussian vectors, M=16,
ef_construction=100, ef_search=100 leave 1.9% of 20k and 4.8% of 46k elements unfound, mostly old
ones. ``sweep()`` self-queries every element and keeps the misses as stragglers; every search also
searches them (stragglers.py: exactly, or through lists once there are many) and merges, so each
live record is found by its own vector. A sweep runs after every rebuild, before every checkpoint
(the straggler labels persist in its manifest), and in the background whenever the graph changed
since the last one and the builder has drained the pending tail (graph_upkeep.py: it yields to writes
between its pages and goes on where it stopped). In between, the builder self-queries each chunk it
inserts (``list_unfound``), as does a load for replayed records it settles, so a new record is
findable when it leaves the tail; an old record that later insertions cut off is found again once
the background sweep has passed it (64-d l2 Gaussian, M 6: 1,523 of 8,500 records were cut off by
2,500 insertions into 6,000 swept ones; tests/test_stragglers.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable

import hnswlib
import numpy as np

from retrieval.config import HnswConfig
# The file functions are called through the module (files.fsync_dir, ...): the durability tests
# replace them there to kill the process between a checkpoint's steps.
from retrieval.store import checkpoint_files as files
from retrieval.store.checkpoint_files import (
    FULL_INDEX_TMP, INDEX_FILENAME, MANIFEST_FORMAT, CorruptIndexError, Manifest, read_manifest,
)
from retrieval.store.graph_file import GraphFileError, restore_vectors, strip_vectors
from retrieval.store.stragglers import Stragglers

logger = logging.getLogger("retrieval")

_INITIAL_CAPACITY = 1024
# Self-queries per knn_query call during a sweep (bounds the temporary result arrays).
_SWEEP_CHUNK = 8192
# A sweep searches at growing beam widths, each pass only for what the narrower one missed: on
# 20k clustered 512-d cosine vectors ef 4 finds 96% of elements (at a quarter of ef 16's cost),
# ef 16 99.9%; on 64-d l2 Gaussian data ef 16 finds ~75%. The last pass runs at ef_search.
_SWEEP_PREFILTER_EFS = (4, 16)
# Sweep again at a checkpoint once this many elements (as a fraction of the graph at the last
# sweep) were inserted or changed. Recovery and rebuilds always sweep. Measured on 60k 64-d l2
# Gaussian inserts (CPU seconds, misses of a self-query of all 60k in the writing process):
# no sweeps 11.3 s / 3774; 1.0: 17.2 s / 2439; 0.5: 22.4 s / 0; 0.2: 30.5 s / 0.
SWEEP_GROWTH = 0.5
# hnswlib's ef is one setting per index, shared by every thread that searches it: a sweep that
# lowered it would lower the recall of queries running meanwhile. So it stays at this floor and each
# search asks for its beam as k (hnswlib searches with max(ef, k)) and keeps the first k it wants:
# the same work, and self-queries need no lock against queries.
_EF_FLOOR = 1


class HnswIndex:
    """hnswlib with chromadb's distance conventions and resize policy."""

    def __init__(self, dim: int, config: HnswConfig, capacity: int = _INITIAL_CAPACITY):
        self.dim = dim
        self.config = config
        self.index = hnswlib.Index(space=config.space, dim=dim)
        self.index.init_index(
            max_elements=max(capacity, _INITIAL_CAPACITY),
            ef_construction=config.ef_construction,
            M=config.max_neighbors,
        )
        self.index.set_ef(_EF_FLOOR)
        self.deleted: set[int] = set()
        self.stragglers = Stragglers(dim, config.space)
        self.changed_since_sweep = 0  # insertions and vector changes since the last sweep
        self.swept_size = 0  # live elements at the last sweep
        self.max_label = -1  # the largest label ever inserted: larger ones are surely not in the graph
        self._touched: set[int] | None = None  # labels inserted or removed since a sweep began
        self._changes_before_sweep = 0

    # ------------------------------------------------------------------ writes

    def upsert(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Add new labels and replace the vectors of existing ones (``prepare`` + ``insert`` + ``note_inserted``).

        Deleted slots are not reused (hnswlib's slot reuse forgets which label it evicted);
        the engine compacts the index instead when too many elements are deleted.
        """
        labels = np.asarray(labels, dtype=np.int64)
        self.prepare(labels)
        self.insert(labels, vectors)
        self.note_inserted(labels, vectors)

    def prepare(self, labels: np.ndarray) -> None:
        """Make room for ``labels`` and unmark the deleted ones among them. Not safe while searches
        run (hnswlib's resize moves the graph): the background builder calls it under the collection lock."""
        revived = [int(label) for label in labels if int(label) in self.deleted]
        for label in revived:  # a label comes back only through replay; unmark so it is searchable again
            self.index.unmark_deleted(label)
            self.deleted.discard(label)
        needed = self.index.element_count + len(labels)
        if needed > self.index.max_elements:
            grown = max(needed, int(self.index.max_elements * self.config.resize_factor) + 1)
            self.index.resize_index(grown)

    def insert(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """hnswlib's insertion alone: safe while other threads search (hnswlib locks per element)."""
        self.index.add_items(np.asarray(vectors, dtype=np.float32), labels, num_threads=self.config.num_threads)

    def note_inserted(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Bookkeeping after ``insert`` (under the collection lock: searches read the stragglers)."""
        self.changed_since_sweep += len(labels)
        if len(labels):
            self.max_label = max(self.max_label, int(labels.max()))
        if self._touched is not None:
            self._touched.update(np.asarray(labels, dtype=np.int64).tolist())
        if self.stragglers.count:  # a straggler's new vector must be what the exact scan sees
            known = self.stragglers.has(labels)
            if known.any():
                self.stragglers.upsert(labels[known], np.asarray(vectors, dtype=np.float32)[known])

    def list_unfound(self, labels: np.ndarray, vectors: np.ndarray) -> int:
        """Self-query just-inserted elements and list those the graph does not return as stragglers:
        until the next sweep, nothing else would find them once they leave the pending tail. Returns
        how many were listed. Changes the stragglers, which searches read: callers hold the collection lock."""
        missed_labels, missed_vectors = self.misses(np.asarray(labels, dtype=np.int64), np.asarray(vectors, dtype=np.float32))
        self.add_stragglers(missed_labels, missed_vectors)
        return len(missed_labels)

    def add_stragglers(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """List records the graph misses (found by ``misses``) as stragglers. Searches read them:
        callers hold the collection lock."""
        if len(labels):
            self.stragglers.upsert(labels, vectors)

    def remove(self, labels) -> None:
        for label in labels:
            label = int(label)
            if self._touched is not None:
                self._touched.add(label)
            self.stragglers.remove(np.asarray([label], dtype=np.int64))  # a sweep may list one the graph lacks
            if label in self.deleted:
                continue
            try:
                self.index.mark_deleted(label)
            except RuntimeError:  # not in the index: nothing to remove
                continue
            self.deleted.add(label)

    @property
    def element_count(self) -> int:
        return self.index.element_count

    @property
    def live_count(self) -> int:
        return self.index.element_count - len(self.deleted)

    # ----------------------------------------------------------------- queries

    def search(self, queries: np.ndarray, k: int, filter_fn=None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k over the graph and the stragglers; raises RuntimeError when hnswlib
        cannot find k results."""
        labels, dist = self.graph_search(queries, k, filter_fn)
        if not self.stragglers.count:
            return labels, dist
        extra_labels, extra_dist = self.stragglers.search(queries, k, filter_fn)
        return merge_top_k(labels, dist, extra_labels, extra_dist, k)

    def graph_search(self, queries: np.ndarray, k: int, filter_fn=None) -> tuple[np.ndarray, np.ndarray]:
        """hnswlib's top-k alone (what a sweep measures)."""
        beam = max(k, min(self.config.ef_search, self.live_count))  # asked for as k: see _EF_FLOOR
        # hnswlib starts threads per call: worth it for batches, pure overhead for one query.
        threads = 1 if filter_fn is not None or len(queries) < 4 * self.config.num_threads else self.config.num_threads
        while True:
            try:
                labels, dist = self.index.knn_query(queries, k=beam, num_threads=threads, filter=filter_fn)
                return labels[:, :k].astype(np.int64), dist[:, :k]
            except RuntimeError:
                # Fewer elements than the beam pass the filter (say most of the graph is hidden by
                # pending upserts): the search went through all it could reach, and hnswlib then
                # refuses to return fewer than asked. A smaller beam still gets the k nearest.
                if beam <= k:
                    raise
                beam = max(k, beam // 2)

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """The vectors hnswlib holds for ``labels`` (unit length in cosine space)."""
        if not len(labels):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.index.get_items(np.asarray(labels, dtype=np.int64).tolist()), dtype=np.float32)

    def holds(self, labels: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Per label: does the graph hold it (not deleted) with this vector (prepared for the space)?"""
        try:
            stored = self.vectors(labels)
        except RuntimeError:  # a label it does not hold, or holds deleted: ask one at a time
            if len(labels) == 1:
                return np.zeros(1, dtype=bool)
            return np.concatenate([self.holds(labels[i : i + 1], vectors[i : i + 1]) for i in range(len(labels))])
        # hnswlib normalises cosine vectors itself: allow for rounding in the last bits.
        return np.all(np.abs(stored - vectors) <= 1e-6 * np.maximum(1.0, np.abs(vectors)), axis=1)

    def sweep(self, vector_chunks: Iterable[tuple[np.ndarray, np.ndarray]] | None = None) -> int:
        """Self-query every live element; those the graph does not return become the stragglers.

        Args:
            vector_chunks: ``(labels, vectors)`` of every live element, e.g. read from SQLite: much
                faster than asking hnswlib (``get_items`` costs ~40 us a 512-d vector). By default
                the vectors come from hnswlib.

        Returns how many there are. The background builder runs the same two halves
        (``misses`` per page, then ``set_stragglers``) a page at a time.
        """
        if vector_chunks is None:
            live = self.labels()
            vector_chunks = (
                (live[start : start + _SWEEP_CHUNK], self.vectors(live[start : start + _SWEEP_CHUNK]))
                for start in range(0, len(live), _SWEEP_CHUNK)
            )
        self.begin_sweep()
        missed: list[tuple[np.ndarray, np.ndarray]] = []
        live_count = 0
        for chunk, vectors in vector_chunks:
            live_count += len(chunk)
            missed.append(self.misses(chunk, vectors))
        return self.set_stragglers(missed, live_count)

    def begin_sweep(self) -> None:
        """A sweep starts. Insertions and removals may go on while it reads its pages (the builder
        interleaves them with a background sweep); for the labels they touch, the straggler state
        they leave wins over what the sweep saw, which may be from before (``set_stragglers``)."""
        self._touched = set()
        self._changes_before_sweep = self.changed_since_sweep

    @property
    def sweep_current(self) -> bool:
        """Whether nothing was inserted since the sweep under way began: it sees the graph as it is."""
        return self._touched is not None and self.changed_since_sweep == self._changes_before_sweep

    def misses(self, labels: np.ndarray, vectors: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The elements among ``labels`` that a search for their own vector does not return.

        Cost: a cheap pass at a small ef, then only its misses again at wider beams up to
        ``ef_search`` (a wider beam finds what a narrower one found), on ``threads`` threads
        (default ``num_threads``). Safe while queries run: each search asks for its own beam (_EF_FLOOR).
        """
        for ef in (*(e for e in _SWEEP_PREFILTER_EFS if e < self.config.ef_search), self.config.ef_search):
            hit = self._graph_finds(labels, vectors, ef, threads or self.config.num_threads)
            labels, vectors = labels[~hit], vectors[~hit]
        return labels, vectors

    def set_stragglers(self, missed: list[tuple[np.ndarray, np.ndarray]], live_count: int) -> int:
        """Install a finished sweep's misses as the stragglers (``missed`` is emptied: its pages go
        as soon as they are joined, not after the lists are built). Labels inserted or removed since
        the sweep began keep their current straggler state (``begin_sweep``)."""
        labels = np.concatenate([m[0] for m in missed]) if missed else np.zeros(0, dtype=np.int64)
        vectors = np.concatenate([m[1] for m in missed]) if missed else np.zeros((0, self.dim), dtype=np.float32)
        missed.clear()
        if self._touched:
            touched = np.fromiter(self._touched, dtype=np.int64, count=len(self._touched))
            kept = ~np.isin(labels, touched)
            held_labels, held_vectors = self.stragglers.held(touched)
            labels = np.concatenate([labels[kept], held_labels])
            vectors = np.concatenate([vectors[kept], held_vectors])
        changed_meanwhile = self.changed_since_sweep - self._changes_before_sweep if self._touched is not None else 0
        self.stragglers = Stragglers.of(self.dim, self.config.space, labels, vectors)
        self.changed_since_sweep = changed_meanwhile
        self.swept_size = live_count
        self._touched = None
        return len(labels)

    def needs_sweep(self) -> bool:
        """Whether the graph changed enough since the last sweep (SWEEP_GROWTH) to sweep again."""
        return self.changed_since_sweep > 0 and self.changed_since_sweep >= SWEEP_GROWTH * self.swept_size

    def _graph_finds(self, labels: np.ndarray, vectors: np.ndarray, ef: int, threads: int) -> np.ndarray:
        """Per element: does a search for its own vector at this ef return it?"""
        if not len(labels):
            return np.zeros(0, dtype=bool)
        beam = min(max(ef, 2), self.live_count)  # asked for as k: see _EF_FLOOR
        try:
            found, _ = self.index.knn_query(vectors, k=beam, num_threads=threads)
        except RuntimeError:  # fewer than that reachable: count each as not found
            return np.zeros(len(labels), dtype=bool)
        # The first two: an exact duplicate may tie with the element at distance 0.
        return (found[:, :2].astype(np.int64) == labels[:, None]).any(axis=1)

    def set_config(self, config: HnswConfig) -> None:
        self.config = config
        self.index.set_num_threads(config.num_threads)

    # ------------------------------------------------------------- checkpoints

    def save(self, directory: Path, applied_seq: int, slots_of: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Checkpoint the graph. With ``slots_of`` (labels -> vector-file slots, -1 for none) the index
        file leaves out the vectors the vector file holds (graph_file.py)."""
        directory.mkdir(parents=True, exist_ok=True)
        index_path = directory / INDEX_FILENAME
        tmp = directory / (INDEX_FILENAME + ".tmp")
        if slots_of is None:
            self.index.save_index(str(tmp))
        else:
            full = directory / FULL_INDEX_TMP
            self.index.save_index(str(full))
            try:
                strip_vectors(full, tmp, self.dim, slots_of)
            finally:
                full.unlink(missing_ok=True)
        crc, size = files.checksum(tmp)
        files.fsync_file(tmp)
        os.replace(tmp, index_path)
        files.fsync_dir(directory)
        manifest = Manifest(
            format=MANIFEST_FORMAT,
            applied_seq=applied_seq,
            dim=self.dim,
            space=self.config.space,
            max_neighbors=self.config.max_neighbors,
            ef_construction=self.config.ef_construction,
            element_count=self.index.element_count,
            deleted_labels=sorted(self.deleted),
            crc32=crc,
            index_bytes=size,
            stragglers=sorted(self.stragglers.labels.tolist()),
            changed_since_sweep=self.changed_since_sweep,
            swept_size=self.swept_size,
            max_label=self.max_label,
            vectors_in_file=slots_of is not None,
        )
        files.write_manifest(directory, manifest)

    @classmethod
    def load(
        cls,
        directory: Path,
        dim: int,
        config: HnswConfig,
        read_slots: Callable[[np.ndarray], np.ndarray] | None = None,
        read_vectors: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> tuple[HnswIndex, Manifest]:
        """Load a checkpoint, or raise CorruptIndexError saying why it cannot be trusted.

        ``read_slots`` gives vectors back from the vector file for a checkpoint saved without them;
        ``read_vectors`` (labels -> found labels, vectors) the stragglers' vectors."""
        manifest = read_manifest(directory)
        expected = (dim, config.space, config.max_neighbors, config.ef_construction)
        found = (manifest.dim, manifest.space, manifest.max_neighbors, manifest.ef_construction)
        if found != expected:
            raise CorruptIndexError(f"index parameters {found} disagree with the collection's {expected}")
        index_path = directory / INDEX_FILENAME
        try:
            crc, size = files.checksum(index_path)
        except FileNotFoundError:
            raise CorruptIndexError("index file is missing") from None
        if (crc, size) != (manifest.crc32, manifest.index_bytes):
            raise CorruptIndexError(f"index file checksum or size mismatch ({size} bytes, manifest says {manifest.index_bytes})")
        self = cls.__new__(cls)
        self.dim = dim
        self.config = config
        self.index = hnswlib.Index(space=config.space, dim=dim)
        try:
            if manifest.vectors_in_file:
                if read_slots is None:
                    raise CorruptIndexError("the checkpoint needs the vector file, which this collection lacks")
                full = directory / FULL_INDEX_TMP
                try:
                    restore_vectors(index_path, full, dim, read_slots, config.space)
                    self.index.load_index(str(full), max_elements=manifest.element_count)
                finally:
                    full.unlink(missing_ok=True)
            else:
                self.index.load_index(str(index_path), max_elements=manifest.element_count)
        except (RuntimeError, OSError, ValueError, IndexError, GraphFileError) as e:  # hnswlib: RuntimeError
            raise CorruptIndexError(f"hnswlib could not load the index: {e}") from e
        if self.index.element_count != manifest.element_count or self.index.dim != dim:
            raise CorruptIndexError("index contents disagree with its manifest")
        self.index.set_ef(_EF_FLOOR)
        self.index.set_num_threads(config.num_threads)
        # hnswlib keeps deletion marks in the file but cannot list them; the manifest does.
        self.deleted = {int(label) for label in manifest.deleted_labels}
        self.stragglers = Stragglers(dim, config.space)
        self.changed_since_sweep = manifest.changed_since_sweep
        self.swept_size = manifest.swept_size
        self._touched, self._changes_before_sweep = None, 0
        if manifest.max_label is not None:
            self.max_label = manifest.max_label
        else:  # a checkpoint from before max_label was kept
            ids = self.all_labels()
            self.max_label = int(ids.max()) if len(ids) else -1
        try:
            stragglers = np.asarray(manifest.stragglers, dtype=np.int64)
            if len(stragglers) and read_vectors is not None:
                # From the store, not hnswlib's get_items (~40 us a vector): a straggler deleted or
                # changed since is the pending tail's business after the replay.
                found, vectors = read_vectors(stragglers)
                self.stragglers = Stragglers.of(dim, config.space, found, vectors)
            elif len(stragglers):
                self.stragglers = Stragglers.of(dim, config.space, stragglers, self.vectors(stragglers))
        except (RuntimeError, ValueError, TypeError) as e:  # a label hnswlib does not hold
            raise CorruptIndexError(f"manifest lists stragglers the index does not hold: {e}") from e
        return self, manifest

    def all_labels(self) -> np.ndarray:
        """Every label in the graph, deleted or not."""
        return np.asarray(self.index.get_ids_list(), dtype=np.int64)

    def marked_deleted(self, labels) -> set[int]:
        """Which of ``labels`` hnswlib itself marks deleted (it has no query for that; the manifest's
        list is ours). Probes with ``unmark_deleted`` and puts each mark back, so the index is unchanged."""
        marked = set()
        for label in labels:
            label = int(label)
            try:
                self.index.unmark_deleted(label)
            except RuntimeError:  # not deleted (or not present): nothing was changed
                continue
            self.index.mark_deleted(label)
            marked.add(label)
        return marked

    def labels(self) -> np.ndarray:
        ids = np.asarray(self.index.get_ids_list(), dtype=np.int64)
        if not self.deleted:
            return ids
        return ids[~np.isin(ids, np.fromiter(self.deleted, dtype=np.int64))]


def merge_top_k(labels_a, dist_a, labels_b, dist_b, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise union of two top-k lists (a label in both counts once), best k first."""
    dist_b = np.array(dist_b, dtype=np.float32)
    dist_b[(labels_b[:, :, None] == labels_a[:, None, :]).any(axis=2)] = np.inf  # already in a
    labels = np.concatenate([labels_a, labels_b], axis=1)
    dist = np.concatenate([np.asarray(dist_a, dtype=np.float32), dist_b], axis=1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(labels, order, axis=1), np.take_along_axis(dist, order, axis=1)
