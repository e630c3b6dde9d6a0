"""The work one collection's HNSW graph is owed: insertions, deletion marks, sweeps, compaction, checkpoints.

A write is acknowledged once SQLite commits it; its vectors wait in the collection's pending tail,
where queries find them exactly (collection_state.py). ``GraphUpkeep`` catches the graph up, one
bounded step at a time (``background_step``), in the shared background thread (graph_builder.py) or
in the caller's thread when someone needs it done now (``wait_until_indexed``, ``flush``, a
closing client's ``checkpoint_if_due``). Every step runs with the collection's ``graph_lock`` held:
only one thread changes the graph, while queries go on under the collection's ``lock``.

A checkpoint is always swept first (hnsw.py, stragglers), so a reopened graph finds every record it
holds and the oplog after the checkpoint covers the rest (recovery.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from retrieval.config import HnswConfig
from retrieval.store.db import Database
from retrieval.store.graph_builder import GraphBuilder
from retrieval.store.hnsw import HnswIndex
from retrieval.store.pending import PendingWrites
from retrieval.store.vector_store import CollectionVectors
from retrieval.telemetry import span

logger = logging.getLogger("retrieval")

# Compact (rebuild) the HNSW graph once this fraction of its elements are deletion marks:
# marked elements still cost search time and degrade recall after heavy churn.
COMPACT_DELETED_FRACTION = 0.25
# Checkpoint when the changes the graph took since its last checkpoint reach this fraction of the
# index (and at least sync_threshold): bounded replay on a crash, amortised O(1) checkpoint (and
# sweep) cost per write.
CHECKPOINT_BACKLOG_FRACTION = 0.2
# Pending vectors are inserted this many at a time (close() waits for at most one chunk).
INSERT_CHUNK = 2048
# Pages of vectors a sweep or compaction reads (and holds the collection lock for).
SWEEP_PAGE = 2048
# Once the tail is drained, sweep in the background whenever the graph changed since its last sweep,
# so a record that later insertions cut off is found again within one sweep's time (False: only when
# the graph grew by SWEEP_GROWTH, hnsw.py). Such a sweep yields to writes between its pages and goes on
# where it stopped; it searches on one thread, leaving the others to queries.
SWEEP_WHEN_IDLE = True
# Seconds of sweeping in one background step before the builder turns to other collections.
SWEEP_STEP_S = 0.1
# Pages of a background sweep: the step in flight is what a close() waits for (measured at 1M on one
# thread: a page of 2,048 self-queries held a close for 0.6 s).
BACKGROUND_SWEEP_PAGE = 256
# Once the tail is drained, the records of a burst's earlier chunks are self-queried again: a later
# chunk may have cut one off, and the background sweep reaches it only after a pass over every record
# (minutes at 1M). O(burst); a larger burst (a bulk load) is left to the sweep.
RECHECK_MAX = 65_536


@dataclass
class _SweepRun:
    """A sweep under way: the pages still to read, what it missed so far, how many it looked at."""

    index: HnswIndex
    pages: Iterator[tuple[np.ndarray, np.ndarray]]
    missed: list = field(default_factory=list)
    live: int = 0


class CollectionGraph(Protocol):
    """What the upkeep needs of its collection (``CollectionState`` is the one implementation)."""

    db: Database
    collection_id: str
    config: HnswConfig
    dimension: int | None
    directory: Path | None
    lock: threading.RLock
    graph_lock: threading.Lock
    pending: PendingWrites | None
    applied_seq: int
    cancelled: bool
    builder: GraphBuilder
    vectors: CollectionVectors

    @property
    def durable(self) -> bool: ...

    @property
    def loaded_index(self) -> HnswIndex | None: ...

    def index(self) -> HnswIndex | None: ...

    def swap_index(self, old: HnswIndex, new: HnswIndex) -> bool: ...

    def count(self) -> int: ...

    def move_vectors(self) -> None: ...


class GraphUpkeep:
    """The owed graph work of one collection (``state``); the background builder runs its steps."""

    def __init__(self, state: CollectionGraph):
        self.state = state
        self.backlog = 0  # changes the graph took since its last checkpoint
        self.sweep_owed = False  # a checkpoint from before checkpoints were always swept
        self.inserting = False  # inside hnswlib's add_items (a search may then come back short)
        self._sweep_run: _SweepRun | None = None
        self._burst: list[np.ndarray] | None = []  # chunks inserted since the tail was last drained (None: too many)

    # What the builder needs of a piece of work (graph_builder.BackgroundWork).
    @property
    def graph_lock(self) -> threading.Lock:
        return self.state.graph_lock

    @property
    def cancelled(self) -> bool:
        return self.state.cancelled

    def reset(self, sweep_owed: bool) -> None:
        """A new graph was installed (loaded, or rebuilt): it owes nothing but maybe a sweep."""
        self.backlog = 0
        self.sweep_owed = sweep_owed
        self._burst = []

    def wake(self) -> None:
        """Schedule the builder when anything is owed."""
        pending = self.state.pending
        if pending is not None and not pending.empty or self.sweep_owed:
            self.state.builder.wake(self)

    def background_step(self, should_stop: Callable[[], bool], checkpoints: bool = True) -> bool:
        """One bounded piece of owed graph work; True while more remains. Caller holds ``graph_lock``.

        ``checkpoints=False``: leave checkpoints to the caller (``flush``, ``close``), which writes one
        at the end, and sweeps only as the graph grew (SWEEP_GROWTH): the caller sweeps as it needs to.

        In order: pending deletions (cheap), a checkpoint when one is due, a compaction when too
        many elements are deletion marks, one chunk of pending insertions, then an owed sweep.
        """
        state = self.state
        with state.lock:
            index, pending = state.loaded_index, state.pending
            if index is None or state.cancelled:
                return False
            deletes = pending.take_deletes()
            if deletes:
                index.remove(deletes)
                self.backlog += len(deletes)
            compact = bool(index.deleted) and len(index.deleted) >= COMPACT_DELETED_FRACTION * index.element_count
            # Every checkpoint sweeps the whole graph first: during a bulk load (a long tail still to
            # insert) checkpoint only as the graph doubles, so sweeps cost at most ~2x the load's size.
            checkpoint_due = checkpoints and self.backlog >= max(
                state.config.sync_threshold, CHECKPOINT_BACKLOG_FRACTION * index.element_count
            ) and (len(pending) < INSERT_CHUNK or self.backlog >= index.element_count)
            labels = np.zeros(0, dtype=np.int64)
            if not compact and not checkpoint_due:
                labels, vectors, versions = pending.take(INSERT_CHUNK)
                if len(labels):
                    index.prepare(labels)  # resizing the graph needs searches excluded
        if compact:
            self._compact(index, should_stop)
            return True
        if checkpoint_due:
            if state.durable:
                self._checkpoint(index, should_stop)  # resets the backlog once saved
            elif not index.needs_sweep() or self._sweep(index, should_stop):
                self.backlog = 0  # nothing to save, but stragglers still need finding
            return True
        if len(labels):
            self.inserting = True
            try:
                index.insert(labels, vectors)  # the long part: searches go on meanwhile
            finally:
                self.inserting = False
            # Before they leave the tail, the chunk's records must be findable in the graph: those
            # its own search misses become stragglers. The self-queries (tens of ms a chunk) run
            # without the lock, as sweeps do, so queries go on; the chunk is still in the tail.
            missed_labels, missed_vectors = index.misses(labels, vectors)
            with state.lock:
                if state.loaded_index is index and state.pending is pending:
                    index.note_inserted(labels, vectors)
                    index.add_stragglers(missed_labels, missed_vectors)
                    pending.settle(labels, versions)
                    self.backlog += len(labels)
                    self._note_burst(labels)
            return True
        self._recheck_burst(index)
        state.move_vectors()  # idle: what small writes left in SQLite goes into the vector file
        # The tail is drained: sweep for records the insertions cut off (hnsw.py, stragglers), a
        # bounded step at a time; writes arriving meanwhile are inserted between its pages.
        if self.sweep_owed or index.needs_sweep() or (checkpoints and SWEEP_WHEN_IDLE and index.changed_since_sweep):
            if checkpoints:  # the builder: a bounded step that yields to writes
                step_ends = time.monotonic() + SWEEP_STEP_S
                swept = self._sweep(index, lambda: should_stop() or time.monotonic() >= step_ends, in_background=True)
            else:
                swept = self._sweep(index, should_stop)
            if not swept:
                return True  # stopped early (a write, the step's time, close): it goes on from there
        with state.lock:
            swept_meanwhile = checkpoints and SWEEP_WHEN_IDLE and index.changed_since_sweep > 0  # writes came during it
            return state.loaded_index is index and (not pending.empty or swept_meanwhile)

    def _note_burst(self, labels: np.ndarray) -> None:
        if self._burst is not None:
            self._burst.append(labels)
            if sum(len(chunk) for chunk in self._burst) > RECHECK_MAX:
                self._burst = None

    def _recheck_burst(self, index: HnswIndex) -> None:
        """Self-query the records of the drained burst's earlier chunks again and list those the graph
        now misses as stragglers (the last chunk was checked after every insertion of the burst)."""
        state = self.state
        burst, self._burst = self._burst, []
        if not burst or len(burst) < 2:
            return
        labels, vectors = state.vectors.read(np.concatenate(burst[:-1]))  # current vectors of live records
        with state.lock:
            if state.loaded_index is not index or state.cancelled:
                return
            settled = ~state.pending.hides(labels)  # written again since: rechecked with their new burst
        # Without the lock, as sweeps do: queries go on. A record written again meanwhile has its
        # graph hits hidden by the tail until the builder inserts (and re-lists) its new vector.
        missed_labels, missed_vectors = index.misses(labels[settled], vectors[settled])
        with state.lock:
            if state.loaded_index is index and not state.cancelled:
                index.add_stragglers(missed_labels, missed_vectors)

    def wait_until_indexed(self, sweep: bool = False) -> None:
        """Do the owed graph work now (in this thread), until the graph holds every record.

        Args:
            sweep: also sweep if the graph changed at all since its last sweep (``verify``), not
                only once it grew by SWEEP_GROWTH.
        """
        state = self.state
        with state.graph_lock:
            with state.lock:
                index = state.index()
            while self.background_step(lambda: state.cancelled, checkpoints=False):
                pass
            if sweep and index is not None and state.loaded_index is index and index.changed_since_sweep:
                self._sweep(index, lambda: state.cancelled)
        if self.backlog:  # a checkpoint may be due: the builder writes it (this caller may be a reader)
            state.builder.wake(self)

    def refresh_stragglers(self, index: HnswIndex | None = None, *, if_changed: bool = False) -> None:
        """Sweep the index for records the graph no longer finds, and checkpoint when durable.
        ``if_changed``: sweep only if the graph changed since its last sweep (the builder's steps
        may just have swept it: at 1M a sweep takes minutes).

        Synchronous, with the collection's ``lock`` held: for a graph that holds every record (after
        a rebuild, or ``wait_until_indexed``)."""
        state = self.state
        index = index if index is not None else state.loaded_index
        if index is None:
            return
        if not if_changed or index.changed_since_sweep or self.sweep_owed:
            self._sweep_run = None  # this sweep replaces one under way
            index.sweep(state.vectors.pages())
            self.sweep_owed = False
        if state.durable:
            self.save(index, state.applied_seq)

    def flush(self) -> None:
        """Finish the owed graph work, then sweep and checkpoint if anything is not yet in one.

        Explicit maintenance (``engine.flush()``): O(collection). ``close()`` does not call it."""
        state = self.state
        self.wait_until_indexed()
        with state.graph_lock, state.lock:
            index = state.loaded_index
            if state.durable and index is not None and (self.backlog or index.changed_since_sweep or self.sweep_owed):
                self.refresh_stragglers(index, if_changed=True)

    def checkpoint_if_due(self, deadline: float | None = None) -> None:
        """Index what is pending and checkpoint, when the changes the last checkpoint lacks (the
        graph's backlog plus the pending tail) reach the checkpoint threshold; otherwise nothing.

        ``deadline`` (``time.monotonic()``): stop there, indexed or not, and save nothing unless the
        graph holds every record and is swept by then. Nothing is lost either way: the oplog after
        the last checkpoint goes into the pending tail on the next open (a server stopped with a
        grace period must not be killed mid-save)."""
        state = self.state
        with state.lock:
            index, pending = state.loaded_index, state.pending
            if not state.durable or index is None or state.cancelled:
                return
            owed = self.backlog + len(pending) + len(pending.deletes)
            if owed < max(state.config.sync_threshold, CHECKPOINT_BACKLOG_FRACTION * index.element_count):
                return
        if deadline is None:
            self.flush()
            return

        def should_stop() -> bool:
            return state.cancelled or time.monotonic() >= deadline

        with state.graph_lock:
            while self.background_step(should_stop, checkpoints=False) and not should_stop():
                pass
            with state.lock:
                index, done = state.loaded_index, state.pending is not None and state.pending.empty
            if index is None or not done or should_stop():
                return  # out of time: the next open replays the oplog instead
            if (index.changed_since_sweep or self.sweep_owed) and not self._sweep(index, should_stop):
                return
            with state.lock:
                if state.loaded_index is index and state.pending.empty and (self.backlog or index.changed_since_sweep):
                    self.save(index, state.applied_seq)

    def save(self, index: HnswIndex, seq: int) -> None:
        """Write the index durably, then forget the oplog it covers (never past it).

        The row at ``seq`` itself stays: it is the database's evidence that it has every write
        the checkpoint reflects (see ``recovery.check_database_has``); replay starts after it.
        """
        state = self.state
        with span("retrieval.checkpoint", collection_id=state.collection_id, applied_seq=seq):
            state.move_vectors()  # so the checkpoint can leave out (nearly) every vector
            index.save(state.directory, seq, state.vectors.slots_of)
        with state.db.transaction() as conn:
            conn.execute("DELETE FROM oplog WHERE collection_id = ? AND seq < ?", (state.collection_id, seq))
        self.backlog = 0

    def _sweep(self, index: HnswIndex, should_stop: Callable[[], bool], in_background: bool = False) -> bool:
        """Sweep the graph a page at a time; queries go on meanwhile (hnsw.py, _EF_FLOOR). Returns
        False when stopped early; the next call goes on from the next page.

        ``in_background``: stop when writes are waiting (the builder inserts them, then goes on), and
        search on one thread. Otherwise (a checkpoint, ``verify``) the sweep must see the graph as it
        is: one that insertions interleaved with is started again. Records still pending are skipped
        (the tail finds them)."""
        state = self.state
        with state.lock:
            run = self._sweep_run
            if run is None or run.index is not index or not (in_background or index.sweep_current):
                page = BACKGROUND_SWEEP_PAGE if in_background else SWEEP_PAGE
                run = self._sweep_run = _SweepRun(index, state.vectors.pages(page))
                index.begin_sweep()
        for labels, vectors in run.pages:
            with state.lock:
                if state.loaded_index is not index or state.cancelled:
                    self._sweep_run = None
                    return False
                # Pending records are not in the graph yet, and a record deleted since its page was
                # read is gone: neither is a straggler.
                settled = ~state.pending.hides(labels)
            # Without the lock: queries go on (only this thread changes the graph, under graph_lock).
            labels, vectors = labels[settled], vectors[settled]
            run.live += len(labels)
            run.missed.append(index.misses(labels, vectors, 1 if in_background else None))
            if should_stop() or (in_background and not state.pending.empty):
                return False
        with state.lock:
            if state.loaded_index is not index or self._sweep_run is not run:
                return False
            index.set_stragglers(run.missed, run.live)
            self._sweep_run = None
            self.sweep_owed = False
        return True

    def _checkpoint(self, index: HnswIndex, should_stop: Callable[[], bool]) -> None:
        """Sweep, then save the graph with the newest oplog seq it is known to reflect.

        Only the builder (holding ``graph_lock``) changes the graph, so it stands still from the
        sweep to the save while queries go on and new writes queue in the pending tail. The seq is
        the last one before the oldest pending entry: replay after a crash re-queues the rest.
        """
        state = self.state
        with state.lock:
            deletes = state.pending.take_deletes()
            if deletes:
                index.remove(deletes)
            oldest = state.pending.first_seq()
            bound = state.applied_seq if oldest is None else oldest - 1
        if not self._sweep(index, should_stop):
            return
        with state.db.reading() as conn:
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM oplog WHERE collection_id = ? AND seq <= ?",
                (state.collection_id, bound),
            ).fetchone()[0]
        self.save(index, seq)

    def _compact(self, index: HnswIndex, should_stop: Callable[[], bool]) -> None:
        """Rebuild the graph without its deletion marks, off to the side, then swap it in.

        Reads the vectors a page at a time; a write committed meanwhile is in the pending tail,
        which is inserted into the new graph after the swap (twice is harmless: same vector).
        """
        state = self.state
        logger.info("collection %s: compacting index (%d deleted elements)", state.collection_id, len(index.deleted))
        fresh = HnswIndex(state.dimension, state.config, capacity=state.count())
        for labels, vectors in state.vectors.pages(SWEEP_PAGE, should_stop=should_stop):
            fresh.upsert(labels, vectors)
        if should_stop():
            return
        # Sweep what the new graph holds: records added since their page was read are pending.
        fresh.sweep((labels[keep], vectors[keep]) for labels, vectors in state.vectors.pages(SWEEP_PAGE, should_stop=should_stop)
                    if (keep := labels <= fresh.max_label).any())
        if should_stop():
            return
        if state.swap_index(index, fresh):
            # Every pending vector goes into the new graph (its labels were hidden from the old one).
            self.backlog = max(state.config.sync_threshold, CHECKPOINT_BACKLOG_FRACTION * fresh.element_count)


__all__ = ["CHECKPOINT_BACKLOG_FRACTION", "COMPACT_DELETED_FRACTION", "GraphUpkeep", "INSERT_CHUNK", "SWEEP_PAGE"]
