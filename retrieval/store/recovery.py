"""Opening a collection's graph after a close or a crash: what it costs is what changed since the checkpoint.

A checkpoint (hnsw.py) is trusted only if the database has the oplog row it claims to reflect; then
the oplog after it goes into the pending tail (pending.py), where queries find it at once and the
background builder inserts it later. A checkpoint that cannot be trusted (or none) means a rebuild
from SQLite, the one open that costs the whole collection. Large collections run this in a
background thread while queries scan the vector file exactly (collection_state.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from retrieval.config import HnswConfig
from retrieval.store.checkpoint_files import MANIFEST_FILENAME, CorruptIndexError, Manifest
from retrieval.store.db import Database
from retrieval.store.hnsw import HnswIndex
from retrieval.store.pending import PendingWrites
from retrieval.store.vector_store import CollectionVectors

logger = logging.getLogger("retrieval")


@dataclass
class LoadedGraph:
    index: HnswIndex
    seq: int  # the newest oplog entry the graph reflects: replay starts after it
    rebuilt: bool = False  # built from the records, not loaded (the caller checkpoints it)
    problem: str | None = None  # why the checkpoint could not be used


def read_graph(
    db: Database,
    collection_id: str,
    directory: Path | None,
    config: HnswConfig,
    vectors: CollectionVectors,
    dimension: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> LoadedGraph:
    """The collection's graph from its checkpoint, else rebuilt from the records (no checkpoint, or
    one that cannot be trusted). Needs no lock: it reads files and committed rows only."""
    problem = None
    if has_checkpoint(directory):
        try:
            index, manifest = load_checkpoint(db, collection_id, directory, config, vectors, should_stop)
            return LoadedGraph(index, manifest.applied_seq)
        except CorruptIndexError as e:
            problem = str(e)
            logger.warning("collection %s: index checkpoint not usable (%s); rebuilding it from the records", collection_id, e)
    rebuilt = rebuild_graph(db, collection_id, config, vectors, dimension, should_stop)
    rebuilt.problem = problem
    return rebuilt


def rebuild_graph(
    db: Database,
    collection_id: str,
    config: HnswConfig,
    vectors: CollectionVectors,
    dimension: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> LoadedGraph:
    """A swept graph of every record, built from SQLite: O(collection). Writes committed meanwhile
    may or may not be in it; they are all after the seq it returns, so a replay queues them."""
    with db.reading() as conn:
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM oplog WHERE collection_id = ?", (collection_id,)).fetchone()[0]
        count = conn.execute("SELECT COUNT(*) FROM records WHERE collection_id = ?", (collection_id,)).fetchone()[0]
    index = HnswIndex(dimension, config, capacity=count)
    for labels, page in vectors.pages(should_stop=should_stop):
        index.upsert(labels, page)
    if should_stop():
        raise LoadCancelled
    index.sweep(vectors.pages())
    return LoadedGraph(index, seq, rebuilt=True)


def has_checkpoint(directory: Path | None) -> bool:
    return directory is not None and (directory / MANIFEST_FILENAME).exists()


class LoadCancelled(Exception):
    """A load stopped early: its collection closed or was deleted meanwhile."""


def load_checkpoint(
    db: Database,
    collection_id: str,
    directory: Path,
    config: HnswConfig,
    vectors: CollectionVectors,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[HnswIndex, Manifest]:
    """The checkpointed graph, or CorruptIndexError saying why it cannot be trusted; LoadCancelled
    once ``should_stop()`` (asked between chunks of vectors read back)."""

    def read_slots(slots: np.ndarray) -> np.ndarray:
        if should_stop():
            raise LoadCancelled
        return vectors.read_slots(slots)

    try:
        index, manifest = HnswIndex.load(directory, vectors.dim, config, read_slots, vectors.read)
    finally:
        vectors.release_pages()  # the load read every slot: hnswlib holds its own copy now
    check_database_has(db, collection_id, manifest.applied_seq)
    return index, manifest


def check_database_has(db: Database, collection_id: str, applied_seq: int) -> None:
    """Refuse a checkpoint that reflects writes SQLite does not have.

    SQLite can lose its last commits while the fsynced checkpoint keeps them (power loss under
    ``synchronous=NORMAL``, a restored backup); such an index holds phantom records, deletion
    marks on live ones and vectors SQLite never stored. Every applied_seq is the seq of one of
    this collection's own oplog rows, and a checkpoint keeps that row, so its absence proves the
    database is behind. (The global sequence alone cannot tell: other collections' writes may have
    reissued the lost numbers before this index is loaded.)
    """
    if applied_seq == 0:
        return
    with db.reading() as conn:
        found = conn.execute(
            "SELECT 1 FROM oplog WHERE collection_id = ? AND seq = ?", (collection_id, applied_seq)
        ).fetchone()
    if found is None:
        raise CorruptIndexError(
            f"checkpoint reflects oplog seq {applied_seq}, which the database does not have "
            "(lost commits or a restored database)"
        )


def replay_into(pending: PendingWrites, db: Database, collection_id: str, after_seq: int, vectors: CollectionVectors) -> int:
    """Put the oplog after ``after_seq`` into the pending tail; returns the last seq replayed (or ``after_seq``).

    Costs what changed since the checkpoint: the touched labels' current vectors are read and
    queued. Idempotent: it queues final states, not deltas, so entries the checkpoint already
    reflects do no harm.
    """
    with db.reading() as conn:
        rows = conn.execute(
            "SELECT seq, label FROM oplog WHERE collection_id = ? AND seq > ? ORDER BY seq",
            (collection_id, after_seq),
        ).fetchall()
        if not rows:
            return after_seq
        touched = np.unique(np.fromiter((label for _, label in rows), dtype=np.int64, count=len(rows)))
        present, current = vectors.read(touched)  # under the same hold of the database as the oplog
    # Each label is queued with the seq of its own first entry after the checkpoint, oldest first: a
    # checkpoint taken while some of them are still pending then claims the oplog up to the oldest
    # of those, not merely up to this replay's start (which made every later checkpoint claim nothing
    # new until the whole replay was inserted, so the next open replayed records the graph held).
    first_seq_of: dict[int, int] = {}
    for seq, label in rows:
        first_seq_of.setdefault(label, seq)
    if len(present):
        seqs = np.fromiter((first_seq_of[label] for label in present.tolist()), dtype=np.int64, count=len(present))
        order = np.argsort(seqs, kind="stable")
        pending.put(present[order], current[order], seqs[order])
    gone = sorted(set(touched.tolist()) - set(present.tolist()), key=first_seq_of.__getitem__)
    pending.delete(gone, [first_seq_of[label] for label in gone])
    return rows[-1][0]


__all__ = ["LoadCancelled", "LoadedGraph", "check_database_has", "read_graph", "rebuild_graph", "has_checkpoint", "load_checkpoint", "replay_into"]
