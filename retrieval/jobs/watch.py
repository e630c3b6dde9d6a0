"""``retrieval index SOURCE --watch``: apply the source's changes as they happen, until Ctrl-C or SIGTERM.

The design keeps one rule that makes it hard to lose a change: **events only mark ids
dirty; the sync loop does the work.** Event threads add to a :class:`DirtySet` under a
lock; each cycle *takes* the whole set (an atomic swap) and syncs it with the same
:func:`~retrieval.jobs.sync.plan_sync` / :func:`~retrieval.jobs.sync.apply_sync` as a run.
An edit that lands while a batch is being embedded marks its id again, and the next cycle
picks it up; the fingerprint is taken *before* the file is read, so a file rewritten
mid-read is seen as changed once more rather than stored with a stale fingerprint.

Where changes come from:

* a local folder: file-system events through ``watchdog`` (inotify, FSEvents,
  ReadDirectoryChangesW); a changed file marks its own id, a folder created, moved or
  deleted marks "relist everything". As a net under lost events (an inotify queue
  overflow), the whole folder is relisted every :data:`EVENT_RESCAN_SECONDS` as well;
* anything else (an ``s3://`` or ``memory://`` URL, a glob, a URI list), or when watchdog
  cannot start: polling, a full relist every ``poll_interval`` seconds.

Events are debounced: a cycle starts once no event has arrived for ``debounce`` seconds (at
most ``4 * debounce`` after the first), so a photo being copied is embedded once, whole.
The watch remembers what it stored, so a cycle touches only what changed; a file that
fails to load is not retried until its fingerprint changes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from retrieval.jobs.fingerprint import Fingerprint
from retrieval.jobs.sources import IMAGE_SUFFIXES, NoImagesError, SourceItem, list_source, stat_items
from retrieval.jobs.sync import ReportWriter, SyncResult, apply_sync, plan_sync, stored_records

__all__ = ["DirtySet", "watch_source"]

#: With events, a full relist this often anyway (lost events heal within this time).
EVENT_RESCAN_SECONDS = 60.0
#: After a cycle fails (a server restarting under ``--host``, a disk error), wait this long and retry.
RETRY_SECONDS = 5.0


class DirtySet:
    """Ids whose files changed, noted by event threads and taken whole by the sync loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ids: set[str] = set()
        self._full = False
        self._last = 0.0

    def mark(self, id_: str | None = None) -> None:
        """Note a changed id; ``None`` means "relist everything"."""
        with self._lock:
            if id_ is None:
                self._full = True
            else:
                self._ids.add(id_)
            self._last = time.monotonic()
            self._wake.set()

    def take(self) -> tuple[bool, set[str]]:
        """``(relist everything?, ids)`` noted since the last take; resets the set."""
        with self._lock:
            taken = (self._full, self._ids)
            self._full, self._ids = False, set()
            self._wake.clear()
            return taken

    def wait(self, stop: threading.Event, timeout: float, debounce: float) -> bool:
        """Block until something is marked and has settled, ``stop`` is set or ``timeout`` passes.

        Returns:
            Whether something is marked.
        """
        deadline = time.monotonic() + timeout
        while not stop.is_set() and not self._wake.is_set():
            if time.monotonic() >= deadline:
                return False
            self._wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        if stop.is_set():
            return False
        first = time.monotonic()
        while not stop.is_set():
            with self._lock:
                quiet = time.monotonic() - self._last
            if quiet >= debounce or time.monotonic() - first >= 4 * debounce:
                break
            time.sleep(min(0.05, debounce))
        return True


class _LocalEvents:
    """watchdog's observer on a local folder, marking the ids of changed image files."""

    def __init__(self, root: str, dirty: DirtySet) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.root = root.rstrip("/")
        relative = self.relative

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if event.is_directory:
                    if event.event_type in ("created", "deleted", "moved"):
                        dirty.mark()  # a folder moved in or out: what it holds is not in the event
                    return
                for path in (event.src_path, getattr(event, "dest_path", "")):
                    id_ = relative(os.fsdecode(path)) if path else None
                    if id_ is not None:
                        dirty.mark(id_)

        self.observer = Observer()
        self.observer.schedule(Handler(), self.root, recursive=True)
        self.observer.start()

    def relative(self, path: str) -> str | None:
        if not path.startswith(self.root + os.sep) or PurePosixPath(path).suffix.lower() not in IMAGE_SUFFIXES:
            return None
        return path[len(self.root) + 1:].replace(os.sep, "/")

    def items(self, ids: set[str]) -> list[SourceItem]:
        """The marked ids that exist now (one stat each); the others are gone."""
        import fsspec

        fs = fsspec.filesystem("file")
        out = []
        for id_ in sorted(ids):
            path = os.path.join(self.root, *id_.split("/"))
            try:
                info = fs.info(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if info.get("type") == "file":
                out.append(SourceItem(id_, os.path.abspath(path), Fingerprint.from_info(info)))
        return out

    @property
    def alive(self) -> bool:
        return self.observer.is_alive()

    def close(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=10)


def _events_for(source: str, dirty: DirtySet, echo: Callable[[str], Any]) -> _LocalEvents | None:
    """File-system events for a local folder; ``None`` (poll instead) for anything else."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in ("file", "local") or not fs.isdir(path):
        return None
    try:
        return _LocalEvents(path, dirty)
    except Exception as exc:  # noqa: BLE001 - no watchdog, inotify limits, ...: polling still works
        echo(f"warning: file-system events unavailable for {source!r} ({type(exc).__name__}: {exc}); polling")
        return None


def watch_source(
    source: str,
    collection: Any,
    embedding_function: Any,
    loader: Any,
    *,
    prune: bool,
    batch_size: int,
    progress: bool,
    poll_interval: float,
    report: ReportWriter,
    stop: threading.Event,
    echo: Callable[[str], Any] = print,
    debounce: float = 0.25,
) -> SyncResult:
    """Sync ``source`` into ``collection``, then keep applying its changes until ``stop`` is set.

    Args:
        source: As for ``retrieval index``.
        collection, embedding_function, loader, prune, batch_size, progress: As for
            :func:`~retrieval.jobs.sync.apply_sync`.
        poll_interval: Seconds between full relists when polling.
        report: Where each cycle's changes are appended.
        stop: Set by the caller's SIGINT/SIGTERM handler; the watch ends after the chunk in flight.
        echo: Prints one summary line per cycle that changed something.
        debounce: Seconds of quiet after an event before a cycle starts.

    Returns:
        Totals over every cycle.
    """
    dirty = DirtySet()
    events = _events_for(source, dirty, echo)  # started before the first listing: nothing slips between
    stored = stored_records(collection)
    bad: dict[str, Fingerprint | None] = {}
    kept_gone: set[str] = set()
    totals = SyncResult()
    how = "file-system events" if events else f"polling every {poll_interval:g} s"
    rescan = EVENT_RESCAN_SECONDS if events else poll_interval
    dirty.mark()
    first = True
    try:
        while not stop.is_set():
            if events is not None and not events.alive:
                echo("warning: the file-system event observer stopped; polling instead")
                events, rescan = None, poll_interval
            if not dirty.wait(stop, rescan, debounce):
                if not stop.is_set():
                    dirty.mark()
                continue
            full, ids = dirty.take()
            if full or events is None:
                listing = _listing(source, echo)
                if listing is None:
                    continue
                items, scope = stat_items(listing), None
            else:
                items, scope = events.items(ids), ids
            plan = plan_sync(items, stored, scope=scope)
            _skip_known_bad(plan, bad)
            if not prune:  # a gone file kept is reported once, not every cycle
                kept_gone.difference_update(it.id for it in items)
                plan.gone = [(i, uri) for i, uri in plan.gone if i not in kept_gone]
                kept_gone.update(i for i, _ in plan.gone)
            try:
                result = apply_sync(plan, collection, embedding_function, loader, prune=prune,
                                    batch_size=batch_size, progress=progress, should_stop=stop.is_set)
            except Exception as exc:  # noqa: BLE001 - a long-lived watch outlives a server restart
                if first:
                    raise  # a first sync that fails is a setup problem (a bad model, a wrong --host): say so
                echo(f"warning: sync failed ({type(exc).__name__}: {exc}); retrying in {RETRY_SECONDS:g} s")
                stored = _reread(collection, stored)
                kept_gone.clear()
                dirty.mark()
                stop.wait(RETRY_SECONDS)
                continue
            _remember(result, plan, stored, bad)
            _add_up(totals, result)
            report.write(result.changes)
            if first or result.changes:
                echo(f"{time.strftime('%H:%M:%S')} synced {source} ({collection.count()} total): {result.counts()}")
            if first:
                echo(f"watching {source} ({how}); Ctrl-C or SIGTERM stops")
                first = False
    finally:
        if events is not None:
            events.close()
    return totals


def _reread(collection: Any, stored: dict[str, Any]) -> dict[str, Any]:
    """What the collection holds after a failed cycle (part of it may have been written)."""
    try:
        return stored_records(collection)
    except Exception:  # noqa: BLE001 - still unreachable: the next full cycle's upserts are idempotent anyway
        return stored


def _listing(source: str, echo: Callable[[str], Any]) -> list[SourceItem] | None:
    """The whole source; ``None`` when it cannot be listed (then nothing counts as gone)."""
    from retrieval.errors import InvalidArgumentError

    try:
        return list_source(source)
    except NoImagesError:
        return []  # the folder was emptied: everything in it is gone
    except (InvalidArgumentError, OSError) as exc:
        # The folder itself vanished (an unmounted drive, a moved library): pruning everything
        # would be the wrong answer, so wait for it to come back.
        echo(f"warning: cannot list {source!r} ({exc}); skipping this cycle")
        return None


def _skip_known_bad(plan: Any, bad: dict[str, Fingerprint | None]) -> None:
    """A file that failed to load is not retried until its fingerprint changes."""
    def retry(item: SourceItem) -> bool:
        return item.id not in bad or bad[item.id] != item.fingerprint

    plan.add = [it for it in plan.add if retry(it)]
    plan.update = [(it, why) for it, why in plan.update if retry(it)]


def _remember(result: SyncResult, plan: Any, stored: dict[str, Any], bad: dict[str, Fingerprint | None]) -> None:
    """Keep the watch's memory of the collection in step with what the cycle wrote and removed."""
    stored.update(result.written)
    for id_ in result.written:
        bad.pop(id_, None)
    fingerprints = {it.id: it.fingerprint for it in plan.to_embed()}
    for change in result.failed:
        bad[change.id] = fingerprints.get(change.id)
    if result.removed:
        for id_, _ in plan.gone:
            stored.pop(id_, None)
    for id_, _ in plan.gone:
        bad.pop(id_, None)


def _add_up(totals: SyncResult, result: SyncResult) -> None:
    totals.added += result.added
    totals.updated += result.updated
    totals.removed += result.removed
    totals.gone += result.gone
    totals.failed.extend(result.failed)
    totals.seconds += result.seconds
