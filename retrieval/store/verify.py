"""Does a collection's vector index agree with SQLite? (``Client.verify()``, ``retrieval doctor``)

SQLite is the truth and the index a cache of it (DESIGN section 4), so every disagreement is the
index's fault and a rebuild from SQLite repairs it. Checked, per collection:

- missing: a record whose label the index does not hold (a query can never return it);
- wrongly deleted: a record whose label the index (hnswlib's own mark or the manifest's list)
  treats as deleted;
- phantom: a live label in the index that no record has (a query would return a ghost);
- stale vectors: the index holds another vector than SQLite (sampled);
- self-query misses: a record's own vector, searched the way ``query`` searches, does not return
  it (sampled; hnsw.py explains the stragglers that make this hold for healthy indexes).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import numpy as np

from retrieval.store.collection_state import CollectionState
from retrieval.store.graph_file import as_stored
from retrieval.store.vector_file import VectorFileError
from retrieval.store.vectors import prepare
from retrieval.types import CollectionRecord

# Records self-queried and vector-compared per collection unless the caller asks for more (None: all).
DEFAULT_SAMPLE = 1000
MAX_EXAMPLES = 10
_CHUNK = 4096


@dataclass
class VerifyReport:
    """What ``verify`` found in one collection (counts, plus up to 10 example record ids)."""

    collection: str
    tenant: str
    database: str
    records: int = 0  # live rows in SQLite
    indexed: int = 0  # live labels in the index
    missing: int = 0
    wrongly_deleted: int = 0
    phantom: int = 0
    stale_vectors: int = 0
    sampled: int = 0  # records self-queried and vector-compared
    self_query_misses: int = 0
    damaged_vectors: int = 0  # vector-file slots that fail their checksum (checked: all, or the sample)
    vector_file_problem: str | None = None  # the vector file cannot be opened (missing, short, foreign)
    stragglers: int = 0  # records found by exact scan next to the graph (hnsw.py); not a fault
    checkpoint_problem: str | None = None  # why the index checkpoint was not used on load, if it was not
    examples: list[str] = field(default_factory=list)  # ids of affected records
    repaired: bool = False
    problems_after_repair: int | None = None

    @property
    def problems(self) -> int:
        return (
            self.missing + self.wrongly_deleted + self.phantom + self.stale_vectors + self.self_query_misses
            + self.damaged_vectors + (self.vector_file_problem is not None)
        )

    @property
    def ok(self) -> bool:
        """True when nothing is wrong now: no problem found, or every one repaired."""
        return self.problems == 0 if not self.repaired else self.problems_after_repair == 0

    def to_dict(self) -> dict:
        return {**asdict(self), "problems": self.problems, "ok": self.ok}

    def __str__(self) -> str:
        where = self.collection if (self.tenant, self.database) == ("default_tenant", "default_database") else (
            f"{self.tenant}/{self.database}/{self.collection}"
        )
        head = f"{where}: {self.records} records, {self.indexed} indexed, {self.sampled} self-queried"
        if self.problems == 0:
            return f"{head}: ok" + (f" (checkpoint not used on load: {self.checkpoint_problem})" if self.checkpoint_problem else "")
        found = ", ".join(
            f"{n} {what}"
            for n, what in [
                (self.missing, "missing from the index"),
                (self.wrongly_deleted, "wrongly marked deleted"),
                (self.phantom, "phantom labels"),
                (self.stale_vectors, "stale vectors"),
                (self.self_query_misses, "not found by their own vector"),
                (self.damaged_vectors, "damaged vectors in the vector file"),
                (int(self.vector_file_problem is not None), f"vector file unusable ({self.vector_file_problem})"),
            ]
            if n
        )
        tail = f"; e.g. {', '.join(map(repr, self.examples))}" if self.examples else ""
        if self.repaired:
            fixed = "repaired" if self.problems_after_repair == 0 else (
                f"repair left {self.problems_after_repair} problems"
            )
            return f"{head}: {found}{tail}; {fixed}"
        if self.vector_file_problem is not None:
            return f"{head}: {found}{tail}; restore the vector file from a backup (nothing else holds those vectors)"
        return f"{head}: {found}{tail}; repair (--repair) rebuilds the index from the records"


def verify_collection(
    state: CollectionState, record: CollectionRecord, *, repair: bool = False, sample: int | None = DEFAULT_SAMPLE, seed: int = 0
) -> VerifyReport:
    """Check one collection's index against SQLite; with ``repair``, rebuild it when anything is wrong.

    The caller holds ``state.lock``.
    """
    report = VerifyReport(record.name, record.tenant, record.database)
    damaged = _check(state, report, sample, seed)
    if repair and report.problems:
        if report.vector_file_problem is None:  # else: nothing here holds what the file lost
            if len(damaged):
                _restore_from_graph(state, damaged)  # the graph's copy: the only other one there is
            if report.problems == report.self_query_misses + report.damaged_vectors:
                state.upkeep.refresh_stragglers()  # the graph is whole; it only cut some records off since the last sweep
            else:
                state.rebuild_index()
        after = VerifyReport(record.name, record.tenant, record.database)
        _check(state, after, sample, seed)
        report.repaired = True
        report.problems_after_repair = after.problems
        report.stragglers = after.stragglers
    return report


def _check(state: CollectionState, report: VerifyReport, sample: int | None, seed: int) -> np.ndarray:
    """Fill in the report; returns the labels whose stored vector is damaged."""
    records = np.asarray(sorted(state.record_labels()), dtype=np.int64)
    report.records = len(records)
    damaged = np.zeros(0, np.int64)
    try:
        index = state.index()
    except VectorFileError as e:
        report.vector_file_problem = str(e)
        return damaged
    report.checkpoint_problem = state.load_problem
    if index is None:  # no vectors yet: nothing to index
        return damaged
    in_graph = index.all_labels()
    marked = index.marked_deleted(in_graph) | index.deleted
    live = np.setdiff1d(in_graph, np.fromiter(marked, dtype=np.int64, count=len(marked)))
    report.indexed = len(live)
    report.stragglers = index.stragglers.count
    missing = np.setdiff1d(records, in_graph)
    wrongly_deleted = np.intersect1d(records, np.fromiter(marked, dtype=np.int64, count=len(marked)))
    phantom = np.setdiff1d(live, records)
    report.missing, report.wrongly_deleted, report.phantom = len(missing), len(wrongly_deleted), len(phantom)
    bad = set(missing.tolist()) | set(wrongly_deleted.tolist())

    checkable = np.intersect1d(records, live)
    if sample is not None and len(checkable) > sample:
        checkable = np.sort(np.asarray(random.Random(seed).sample(checkable.tolist(), sample), dtype=np.int64))
    report.sampled = len(checkable)
    damaged = state.vectors.damaged(records if sample is None else checkable)
    report.damaged_vectors = len(damaged)
    bad |= set(damaged.tolist())
    checkable = np.setdiff1d(checkable, damaged)  # compared with the graph, they would only look stale
    k = min(3, len(live))
    for start in range(0, len(checkable), _CHUNK):
        labels = checkable[start : start + _CHUNK]
        stored = _stored_vectors(state, labels)
        held = index.vectors(labels)
        stale = ~np.all(np.isclose(prepare(stored, state.config.space), held, rtol=1e-5, atol=1e-6), axis=1)
        report.stale_vectors += int(stale.sum())
        bad |= set(labels[stale].tolist())
        try:
            found, _ = index.search(stored, k)
            miss = ~(found == labels[:, None]).any(axis=1)
        except RuntimeError:  # hnswlib could not reach k elements at all
            miss = np.ones(len(labels), dtype=bool)
        report.self_query_misses += int(miss.sum())
        bad |= set(labels[miss].tolist())
    report.examples = _ids(state, sorted(bad)[:MAX_EXAMPLES])
    return damaged


def _restore_from_graph(state: CollectionState, labels: np.ndarray) -> None:
    """Put back damaged stored vectors from the graph's copy: exact for l2 and ip; a cosine graph
    keeps unit vectors, scaled back by the norm stored with the slot.

    A graph loaded after the damage took the damaged vector itself: those stay damaged (reported)."""
    index = state.index()
    held_labels = np.intersect1d(np.asarray(labels, dtype=np.int64), index.labels())
    if not len(held_labels):
        return
    held = index.vectors(held_labels)
    _, damaged = state.vectors.read(held_labels)
    intact = ~np.all(as_stored(damaged, state.config.space) == held, axis=1)  # else: loaded from the damage
    if state.config.space == "cosine":
        held = held * state.vectors.norms(held_labels)[:, None]
    if intact.any():
        state.vectors.replace(held_labels[intact], held[intact])


def _stored_vectors(state: CollectionState, labels: np.ndarray) -> np.ndarray:
    found, vectors = state.vectors.read(labels)
    row_of = {label: i for i, label in enumerate(found.tolist())}
    return vectors[[row_of[int(label)] for label in labels]]


def _ids(state: CollectionState, labels: list[int]) -> list[str]:
    if not labels:
        return []
    with state.db.reading() as conn:
        rows = dict(
            conn.execute(
                "SELECT label, id FROM records WHERE label IN (SELECT value FROM json_each(?))", (str(labels),)
            ).fetchall()
        )
    return [rows[label] for label in labels if label in rows]


__all__ = ["DEFAULT_SAMPLE", "VerifyReport", "verify_collection"]
