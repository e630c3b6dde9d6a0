"""Where a collection's vectors are: the one place that knows, and the only reader and mover of them.

A write commits its vectors to SQLite's ``vectors`` table with the record (one transaction, one
fsync: acknowledged means durable). Persistent collections then move them, in batches, into the
collection's vector file (vector_file.py): append and fsync the slots, then one transaction sets
each record's ``slot``, deletes the moved rows and raises ``collections.vector_slots``. So every
vector is stored once at full precision: in the ``vectors`` table while recent (or always, for
in-memory databases), in the file after. A row in ``vectors`` wins over a slot; writers keep a
record's ``slot`` NULL while its vector has a row (an update clears it, a move sets it as it deletes
the row), so a filter can read each candidate's slot with the record itself (``Candidates``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from retrieval.store.db import Database
from retrieval.store.vector_file import VectorFile
from retrieval.store.vectors import distances_to_raw, exact_l2, prepare, top_k

VECTOR_DIRNAME = "vectors"  # <persist>/vectors/<collection id>.bin: truth, apart from the index caches


def vector_file_path(persist_directory: Path, collection_id: str) -> Path:
    return persist_directory / VECTOR_DIRNAME / f"{collection_id}.bin"


# Vectors moved into the file per transaction, and how many a writer leaves in SQLite before it moves
# them itself: bounds the write lock's hold (~8 MB at 512-d) and the SQLite pages they occupy.
MOVE_BATCH = 4096
# A write with at least this many new vectors appends them to the vector file itself, inside its
# transaction (the fsync is amortised over the batch); smaller writes leave them in SQLite.
DIRECT_WRITE_MIN = 256
_READ_CHUNK = 8192
# The collection's vectors still in SQLite, oldest first (parameters: collection id, limit or -1).
# The vectors table holds only recent vectors: the join is driven from it.
_RECENT_VECTORS = (
    "SELECT v.label, v.embedding FROM vectors v CROSS JOIN records r ON r.label = v.label "
    "WHERE r.collection_id = ? ORDER BY v.label LIMIT ?"
)

# A page of the collection's records with their vectors' whereabouts (parameters: collection id, the
# last id of the page before, page size). Walks the (collection_id, id) index: no sort, no full scan.
PAGE_AFTER_ID = (
    "SELECT r.label, r.slot, v.embedding, r.id FROM records r LEFT JOIN vectors v ON v.label = r.label "
    "WHERE r.collection_id = ? AND r.id > ? ORDER BY r.id LIMIT ?"
)


def vectors_from_blobs(blobs: list[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32, copy=False)


class Candidates(NamedTuple):
    """Records matching a filter: their labels, ascending, and each one's slot in the vector file
    (-1 where the vector is still in SQLite), read in the filter's own SQL pass."""

    labels: np.ndarray
    slots: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[tuple[int, int]]) -> Candidates:
        pairs = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=2 * len(rows)).reshape(-1, 2)
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        return cls(np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1]))


def _scorer(queries: np.ndarray, space: str):
    return lambda vectors, norms: distances_to_raw(queries, vectors, norms, space)


def _norms(vectors: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors))


class CollectionVectors:
    """The vectors of one collection, read by label; moves recent ones into the file."""

    def __init__(self, db: Database, collection_id: str, dim: int):
        self.db = db
        self.collection_id = collection_id
        self.dim = dim
        self.path = vector_file_path(db.directory, collection_id) if db.directory is not None else None
        self._file: VectorFile | None = None

    @property
    def file(self) -> VectorFile | None:
        """The vector file, opened on first use (None for in-memory databases).

        Opened under the database's lock, which every user of the file already holds or takes first:
        one lock order, and the committed count cannot change while the file is checked against it."""
        if self._file is None and self.path is not None:
            with self.db.reading() as conn:
                if self._file is None:
                    row = conn.execute("SELECT vector_slots FROM collections WHERE id = ?", (self.collection_id,)).fetchone()
                    self._file = VectorFile(self.path, self.dim, row[0] if row else 0)
        return self._file

    # ------------------------------------------------------------------ reading

    def read(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, vectors)`` of the given labels' live records, in ascending label order."""
        labels = np.unique(np.asarray(labels, dtype=np.int64))
        found, parts = [], []
        with self.db.reading() as conn:
            for start in range(0, len(labels), _READ_CHUNK):
                chunk = labels[start : start + _READ_CHUNK].tolist()
                rows = conn.execute(
                    "SELECT r.label, r.slot, v.embedding FROM records r LEFT JOIN vectors v ON v.label = r.label "
                    f"WHERE r.label IN ({', '.join('?' * len(chunk))}) ORDER BY r.label",
                    chunk,
                ).fetchall()
                if rows:
                    got, vectors = self._resolve(rows)
                    found.append(got)
                    parts.append(vectors)
        if not found:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.concatenate(found), np.concatenate(parts)

    def nearest(self, queries: np.ndarray, k: int, candidates: Candidates, space: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k labels and distances among a filter's candidates, scored where their vectors
        lie: in place in the file's mapping (with their stored norms), or in SQLite while recent.

        No vector is copied into a matrix or kept: a new filter costs its SQL and one pass over its
        candidates' rows. Slots are never rewritten, so a slot read with the filter still holds that
        record's vector while the collection is locked; one moved to the file since is read by label."""
        queries = prepare(queries, space)
        in_file = candidates.slots >= 0
        labels = [np.broadcast_to(candidates.labels[in_file], (len(queries), int(in_file.sum())))]
        dist = [self.file.scan(candidates.slots[in_file], _scorer(queries, space))] if in_file.any() else []
        if not in_file.all():
            recent_labels, recent = self.read(candidates.labels[~in_file])
            labels.append(np.broadcast_to(recent_labels, (len(queries), len(recent_labels))))
            dist.append(_scorer(queries, space)(recent, _norms(recent)))
        return self._top(queries, k, np.concatenate(labels, axis=1), np.concatenate(dist, axis=1), space)

    def nearest_all(self, queries: np.ndarray, k: int, space: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k labels and distances among all the collection's records, without a graph
        (queries while it loads): every slot of the file scored in place, the best of them checked
        against the records, merged with the recent vectors still in SQLite.

        A slot counts while its record still names it: updates and deletes leave old slots behind,
        so the scan takes more than k and, when too many of those were left behind, takes more again."""
        queries = prepare(queries, space)
        with self.db.reading() as conn:
            rows = conn.execute(_RECENT_VECTORS, (self.collection_id, -1)).fetchall()
        recent_labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        recent = vectors_from_blobs([r[1] for r in rows], self.dim)
        labels = np.broadcast_to(recent_labels, (len(queries), len(rows)))
        dist = _scorer(queries, space)(recent, _norms(recent))
        total = self.file.count if self.file is not None else 0
        want = k + 16
        while total:
            slots, slot_labels, slot_dist = self.file.nearest_slots(_scorer(queries, space), min(want, total))
            current = self._current(slot_labels, slots)
            if want >= total or (current.sum(axis=1) + len(rows) >= k).all():
                labels = np.concatenate([labels, np.where(current, slot_labels, -1)], axis=1)
                dist = np.concatenate([dist, np.where(current, slot_dist, np.float32(np.inf))], axis=1)
                break
            want *= 4
        return self._top(queries, k, labels, dist, space)

    def _current(self, labels: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Whether each slot is the one its label's record names now."""
        unique = np.unique(labels)
        slot_of: dict[int, int] = {}
        with self.db.reading() as conn:
            for start in range(0, len(unique), _READ_CHUNK):
                chunk = unique[start : start + _READ_CHUNK].tolist()
                slot_of.update(conn.execute(
                    f"SELECT label, slot FROM records WHERE label IN ({', '.join('?' * len(chunk))}) AND slot IS NOT NULL", chunk
                ).fetchall())
        named = np.fromiter((slot_of.get(label, -1) for label in labels.ravel().tolist()), dtype=np.int64, count=labels.size)
        return named.reshape(labels.shape) == slots

    def _top(self, queries: np.ndarray, k: int, labels: np.ndarray, dist: np.ndarray, space: str) -> tuple[np.ndarray, np.ndarray]:
        """The k best of per-query ``labels`` and ``dist`` (prepared ``queries``)."""
        idx, best = top_k(dist, k)
        top = np.take_along_axis(labels, idx, axis=1)
        if space != "l2" or not top.size:
            return top, best
        # The fast l2 form cancels for near-identical vectors: recompute the picks exactly (exact_l2).
        picked, rows = np.unique(top, return_inverse=True)
        _, vectors = self.read(picked)
        idx, best = exact_l2(queries, vectors, rows.reshape(top.shape), best)
        return picked[idx], best

    def pages(self, page: int | None = None, should_stop=lambda: False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(labels, vectors)`` of every record, a page at a time, in id order; each page is read
        under its own short hold of the database (writers and readers go on in between).

        Pages follow the ``(collection_id, id)`` index, so each costs its own rows: in label order
        SQLite read every record of the collection and sorted them for each page (measured at 1M:
        0.1-0.23 s a page of 2,048, most of a sweep's time, against 2.5 ms now)."""
        page, after = page or _READ_CHUNK, ""
        while not should_stop():
            with self.db.reading() as conn:
                rows = conn.execute(PAGE_AFTER_ID, (self.collection_id, after, page)).fetchall()
            if not rows:
                return
            after = rows[-1][3]
            yield self._resolve(rows)

    def slots_of(self, labels: np.ndarray) -> np.ndarray:
        """Each label's slot in the file, -1 where it has none (a recent vector, or no record)."""
        labels = np.asarray(labels, dtype=np.int64)
        slots = np.full(len(labels), -1, dtype=np.int64)
        if self.path is None or not len(labels):
            return slots
        order = np.argsort(labels)
        sorted_labels = labels[order]
        known_labels, known_slots = [], []
        with self.db.reading() as conn:
            for start in range(0, len(sorted_labels), _READ_CHUNK):
                chunk = sorted_labels[start : start + _READ_CHUNK].tolist()
                rows = conn.execute(
                    f"SELECT r.label, r.slot FROM records r WHERE r.label IN ({', '.join('?' * len(chunk))}) "
                    "AND r.slot IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.label = r.label)",
                    chunk,
                ).fetchall()
                known_labels += [r[0] for r in rows]
                known_slots += [r[1] for r in rows]
        if known_labels:
            at = np.searchsorted(sorted_labels, np.asarray(known_labels, dtype=np.int64))
            slots[order[at]] = known_slots
        return slots

    def damaged(self, labels: np.ndarray) -> np.ndarray:
        """Which of ``labels`` have a vector-file slot that fails its checksum."""
        labels = np.asarray(labels, dtype=np.int64)
        slots = self.slots_of(labels)
        in_file = slots >= 0
        if not in_file.any():
            return np.zeros(0, np.int64)
        bad = self.file.damaged(slots[in_file], labels[in_file])
        return labels[in_file][bad]

    def norms(self, labels: np.ndarray) -> np.ndarray:
        """The norms stored with the labels' slots (what a cosine graph's unit copy was scaled by)."""
        return self.file.entries(self.slots_of(labels))["norm"].astype(np.float32)

    def replace(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Store these vectors for the labels as recent ones (a repair): they move into the file again."""
        blobs = np.asarray(vectors, dtype="<f4")
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO vectors (label, embedding) VALUES (?, ?)",
                [(int(label), blobs[i].tobytes()) for i, label in enumerate(labels)],
            )
            conn.executemany("UPDATE records SET slot = NULL WHERE label = ?", [(int(label),) for label in labels])

    def read_slots(self, slots: np.ndarray) -> np.ndarray:
        """The vectors in the given slots of the file (a checkpoint's, graph_file.py)."""
        return self.file.read(slots)

    def release_pages(self) -> None:
        """Drop the file's mapped pages from this process's RSS (vector_file.py) after a full read."""
        if self._file is not None:
            self._file.release_pages()

    def _resolve(self, rows: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``(label, slot, embedding blob or None)`` as labels and a matrix, in row order."""
        labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        # A row in the vectors table wins over a slot (module docstring): -1 marks those.
        slots = np.fromiter((-1 if r[2] is not None else r[1] for r in rows), dtype=np.int64, count=len(rows))
        in_file = slots >= 0
        if in_file.all():
            return labels, self.file.read(slots)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        in_sql = np.flatnonzero(~in_file)
        out[in_sql] = vectors_from_blobs([rows[i][2] for i in in_sql], self.dim)
        if in_file.any():
            out[in_file] = self.file.read(slots[in_file])
        return labels, out

    # ------------------------------------------------------------------ moving into the file

    def move_to_file(self, limit: int = MOVE_BATCH) -> int:
        """Move up to ``limit`` of the collection's recent vectors from SQLite into the file; returns
        how many moved (0 for in-memory databases). Holds the database's write lock throughout."""
        if self.path is None:
            return 0
        with self.db.transaction() as conn:
            rows = conn.execute(_RECENT_VECTORS, (self.collection_id, limit)).fetchall()
            if not rows:
                return 0
            labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            slots = self.append_in(conn, labels, vectors_from_blobs([r[1] for r in rows], self.dim))
            conn.executemany("UPDATE records SET slot = ? WHERE label = ?", zip(slots.tolist(), labels.tolist()))
            conn.executemany("DELETE FROM vectors WHERE label = ?", ((label,) for label in labels.tolist()))
        return len(rows)

    def append_in(self, conn, labels: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Inside a ``db.transaction()``: append the vectors to the file (fsynced) and raise the
        committed count in that transaction; returns their slots. If the transaction does not commit,
        the file is cut back (``db.on_rollback``): nothing may refer to slots never committed."""
        before = self.file.count
        self.db.on_rollback(lambda: self.file.truncate(before))
        slots = self.file.append(labels, vectors)
        conn.execute("UPDATE collections SET vector_slots = ? WHERE id = ?", (self.file.count, self.collection_id))
        return slots

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


__all__ = ["DIRECT_WRITE_MIN", "MOVE_BATCH", "Candidates", "CollectionVectors", "vector_file_path", "vectors_from_blobs"]
