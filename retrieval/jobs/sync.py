"""A rerun of ``retrieval index SOURCE`` is a sync: the collection follows the folder.

Two steps, each usable alone (``--dry-run`` stops after the first):

1. :func:`plan_sync` compares what the source lists (each file's
   :class:`~retrieval.jobs.fingerprint.Fingerprint`, from the listing: one stat per file, no
   read) with what the collection stores (:func:`stored_records`), and decides per id:

   ==========  =================================================================================
   add         listed, not stored
   update      listed and stored, but the fingerprint differs (or none is stored, or the URI
               moved): re-embedded and written in place under the same id
   unchanged   listed, same fingerprint: costs nothing more
   gone        stored by ``index`` (it carries the ``file`` key) but no longer listed; reported,
               and removed only with ``prune`` (``--prune``). A rename is a gone id plus a new one
   ==========  =================================================================================

2. :func:`apply_sync` embeds the adds and updates chunk by chunk and writes each chunk with
   **one** ``upsert`` (one transaction) that carries the vectors together with their
   fingerprints and photo metadata. A crash anywhere therefore leaves every record either
   wholly old (old vector, old fingerprint: the next run sees the change again and redoes it)
   or wholly new; there is no state in which a new fingerprint sits beside an old vector.
   Prunes are deletes by id, idempotent. So killing a sync at any moment and rerunning it
   converges to the folder's state.

A file that cannot be loaded is skipped and reported (its old record, if any, stays as it
was, so the next run tries again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.jobs.fingerprint import FINGERPRINT_KEYS, ID_KEY, Fingerprint
from retrieval.jobs.index_job import SkippingLoader, embed_chunks, progress_bar
from retrieval.jobs.sources import SourceItem

__all__ = ["Change", "ReportWriter", "Stored", "SyncPlan", "SyncResult", "apply_sync", "plan_sync",
           "record_metadata", "stored_records", "write_chunk"]

#: Ids deleted per transaction when pruning.
PRUNE_CHUNK = 1000


@dataclass(frozen=True)
class Stored:
    """What a sync needs to know of one stored record: its URI and its ``file``/``file_*`` keys."""

    uri: str | None
    metadata: Mapping[str, Any]

    @classmethod
    def of(cls, uri: str | None, metadata: Mapping[str, Any] | None) -> Stored:
        """Keeps only the keys a sync reads (a million photos' EXIF need not sit in memory)."""
        meta = metadata or {}
        return cls(uri, {k: meta[k] for k in (ID_KEY, *FINGERPRINT_KEYS) if meta.get(k) is not None})


@dataclass(frozen=True)
class Change:
    """One line of the report: ``action`` is add, update, remove, gone or skip."""

    action: str
    id: str
    uri: str | None
    reason: str

    def to_json(self) -> str:
        return json.dumps({"action": self.action, "id": self.id, "uri": self.uri, "reason": self.reason})


@dataclass
class SyncPlan:
    """What a sync will do; :meth:`changes` lists it as report lines."""

    add: list[SourceItem] = field(default_factory=list)
    update: list[tuple[SourceItem, str]] = field(default_factory=list)  # (item, why)
    gone: list[tuple[str, str | None]] = field(default_factory=list)  # (id, stored uri)
    unchanged: int = 0

    def changes(self, prune: bool) -> list[Change]:
        """Every planned change, with its reason (removals as ``remove`` with ``prune``, else ``gone``)."""
        out = [Change("add", it.id, it.uri, "new file") for it in self.add]
        out += [Change("update", it.id, it.uri, why) for it, why in self.update]
        out += [Change("remove" if prune else "gone", id_, uri,
                       "file is gone" if prune else "file is gone; kept (rerun with --prune to remove it)")
                for id_, uri in self.gone]
        return out

    def to_embed(self) -> list[SourceItem]:
        """Adds and updates, in id order."""
        return sorted([*self.add, *(it for it, _ in self.update)], key=lambda it: it.id)


@dataclass
class SyncResult:
    """What :func:`apply_sync` did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    gone: int = 0
    unchanged: int = 0
    failed: list[Change] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)  # everything written or reported, skips included
    written: dict[str, Stored] = field(default_factory=dict)  # id -> what is now stored (for a watch's memory)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Images embedded (or skipped as bad) per second."""
        done = self.added + self.updated + len(self.failed)
        return done / self.seconds if self.seconds > 0 else 0.0

    def counts(self) -> str:
        """``"3 added, 1 updated, 0 removed, 36 unchanged, 0 skipped-bad"`` (and the gone ones kept)."""
        text = (f"{self.added} added, {self.updated} updated, {self.removed} removed, {self.unchanged} unchanged, "
                f"{len(self.failed)} skipped-bad")
        if self.gone:
            text += f", {self.gone} gone (kept; rerun with --prune to remove them)"
        return text


def stored_records(collection: Any, page: int = 5000) -> dict[str, Stored]:
    """Every record's URI and fingerprint keys, read in pages (no vectors)."""
    out: dict[str, Stored] = {}
    offset = 0
    while True:
        got = collection.get(include=["metadatas", "uris"], limit=page, offset=offset)
        for id_, uri, meta in zip(got["ids"], got["uris"] or [None] * len(got["ids"]),
                                  got["metadatas"] or [None] * len(got["ids"])):
            out[id_] = Stored.of(uri, meta)
        if len(got["ids"]) < page:
            return out
        offset += page


def plan_sync(
    items: Sequence[SourceItem], stored: Mapping[str, Stored], *, scope: Iterable[str] | None = None
) -> SyncPlan:
    """Compare a listing with what is stored (see the module docstring for the rules).

    Args:
        items: The listed files, with fingerprints (:func:`retrieval.jobs.sources.stat_items`).
        stored: What the collection holds (:func:`stored_records`, or a watch's memory of it).
        scope: Only these ids were looked at (a watch's changed paths): an id of ``scope``
            that ``items`` lacks is gone; ids outside it are left alone. ``None``: ``items`` is
            the whole source, so every stored ``index`` record it lacks is gone.
    """
    plan = SyncPlan()
    for item in items:
        have = stored.get(item.id)
        if have is None:
            plan.add.append(item)
            continue
        why = _why_changed(item, have)
        if why is None:
            plan.unchanged += 1
        else:
            plan.update.append((item, why))
    listed = {it.id for it in items}
    candidates = stored.keys() if scope is None else (i for i in scope if i in stored)
    plan.gone = sorted((i, stored[i].uri) for i in candidates
                       if i not in listed and ID_KEY in stored[i].metadata)
    return plan


def _why_changed(item: SourceItem, have: Stored) -> str | None:
    before = Fingerprint.from_metadata(have.metadata)
    if before is None:
        return "no fingerprint stored"
    if have.uri is not None and have.uri != item.uri:
        return f"moved from {have.uri}"
    if item.fingerprint is None:
        return "cannot stat the file"  # the load will say why, or succeed and store a fingerprint
    return item.fingerprint.change_from(before)


def record_metadata(item: SourceItem, photo: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata ``index`` writes: photo keys, the list's columns, the id and the fingerprint.

    Keys this writer owns that the file no longer has are ``None``, so an update removes a
    replaced photo's stale EXIF instead of merging it (keys people added themselves stay).
    """
    from loaders.photo_metadata import PHOTO_KEYS

    meta: dict[str, Any] = dict.fromkeys(PHOTO_KEYS)
    meta.update(photo)
    meta.update(item.columns)  # a list's own columns win over what the file says
    meta[ID_KEY] = item.id
    meta.update(item.fingerprint.to_metadata() if item.fingerprint else dict.fromkeys(FINGERPRINT_KEYS))
    return meta


def write_chunk(collection: Any, items: Sequence[SourceItem], vectors: np.ndarray,
                metadatas: Sequence[Mapping[str, Any]]) -> None:
    """One chunk of adds and updates in one ``upsert``: vectors, fingerprints and metadata together."""
    collection.upsert(ids=[it.id for it in items], embeddings=vectors, uris=[it.uri for it in items],
                      metadatas=list(metadatas))


def prune_chunk(collection: Any, ids: Sequence[str]) -> None:
    """Delete one chunk of gone records (idempotent: a rerun after a crash deletes what is left)."""
    collection.delete(ids=list(ids))


def apply_sync(
    plan: SyncPlan,
    collection: Any,
    embedding_function: Any,
    loader: Any,
    *,
    prune: bool,
    batch_size: int,
    progress: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
) -> SyncResult:
    """Carry out ``plan``: embed and upsert adds and updates, then prune (with ``prune``).

    Writing chunk *i* overlaps embedding chunk *i + 1* (one write in flight at most).

    Args:
        plan: From :func:`plan_sync`.
        collection: The target collection (embedded or over HTTP).
        embedding_function: The collection's embedding function.
        loader: An ``ImageLoader``; wrapped in :class:`~retrieval.jobs.index_job.SkippingLoader`.
        prune: Delete the gone records (else they are only reported).
        batch_size: Images per forward pass.
        progress: Show a tqdm bar (images/s and ETA) on stderr.
        should_stop: Polled between chunks; ``True`` stops after the chunk being written (a
            watch's SIGTERM). What is left is found again by the next sync.
    """
    started = time.perf_counter()
    result = SyncResult(unchanged=plan.unchanged)
    reasons = {it.id: why for it, why in plan.update}
    todo = plan.to_embed()
    skipping = SkippingLoader(loader)
    with progress_bar(len(todo), progress and bool(todo), "indexing") as bar, \
            ThreadPoolExecutor(1, thread_name_prefix="index-writer") as writer:
        pending: Future[None] | None = None
        for good, vectors, photos, failures in embed_chunks(
            todo, embedding_function, skipping, batch_size=batch_size, on_progress=bar.update
        ):
            result.failed.extend(Change("skip", id_, uri, reason) for id_, uri, reason in failures)
            if pending is not None:
                pending.result()  # at most one write in flight; a failed write stops the job here
            if good:
                metadatas = [record_metadata(it, photo) for it, photo in zip(good, photos)]
                pending = writer.submit(write_chunk, collection, good, vectors, metadatas)
                for item, meta in zip(good, metadatas):
                    result.written[item.id] = Stored.of(item.uri, meta)
                    if item.id in reasons:
                        result.updated += 1
                        result.changes.append(Change("update", item.id, item.uri, reasons[item.id]))
                    else:
                        result.added += 1
                        result.changes.append(Change("add", item.id, item.uri, "new file"))
            if should_stop():
                break
        if pending is not None:
            pending.result()
    result.changes.extend(result.failed)
    pruning = prune and not should_stop()
    if pruning:
        gone_ids = [id_ for id_, _ in plan.gone]
        for start in range(0, len(gone_ids), PRUNE_CHUNK):
            prune_chunk(collection, gone_ids[start:start + PRUNE_CHUNK])
        result.removed = len(gone_ids)
    else:
        result.gone = len(plan.gone)
    result.changes.extend(c for c in plan.changes(pruning) if c.action in ("remove", "gone"))
    result.seconds = time.perf_counter() - started
    return result


class ReportWriter:
    """The JSON-lines report: one line per change (``{"action", "id", "uri", "reason"}``).

    The file is created on the first change of this run (a sync with nothing to report leaves
    none) and appended to after that (a watch reports cycle after cycle).

    Args:
        path: The file.
        every_change: Write every batch of changes; ``False``: only batches in which a file was
            skipped (so a default report appears only when there is a problem to read about).
    """

    def __init__(self, path: str, every_change: bool = True) -> None:
        self.path = path
        self.every_change = every_change
        self.lines = 0

    def write(self, changes: Sequence[Change]) -> None:
        if not changes or not (self.every_change or any(c.action == "skip" for c in changes)):
            return
        with open(self.path, "a" if self.lines else "w", encoding="utf-8") as f:
            f.writelines(change.to_json() + "\n" for change in changes)
        self.lines += len(changes)
