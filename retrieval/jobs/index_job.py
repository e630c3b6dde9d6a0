"""``retrieval index`` / ``retrieval embed``: embed a photo archive, resumably, skipping bad files.

This module holds the embedding pipeline both commands share; ``index`` writes through
:mod:`retrieval.jobs.sync` (a rerun is a sync: new files added, changed ones re-embedded,
gone ones reported or pruned). The jobs are crash-safe by construction rather than by
bookkeeping:

* every chunk of records is written with one call (one SQLite transaction: all or nothing),
  so a killed job loses at most the chunks in flight (the one being embedded and the one
  being written);
* a rerun compares what is stored with what is listed and embeds only the difference; ids
  are stable (see :mod:`retrieval.jobs.sources`), so nothing is embedded twice and nothing
  is missed;
* a file that cannot be read or decoded (missing, corrupt, truncated, not an image, over
  the pixel limit) is embedded as a blank placeholder inside its batch, so the batch keeps
  its speed, and its vector is dropped before the write: no partial record is ever stored.
  Each one gets a line in the report file (JSON lines: id, uri, reason) and the summary
  counts them; the job never aborts for one bad file.

``retrieval embed SOURCE --out DIR`` runs the same pipeline into Parquet shards instead of
a collection (:mod:`retrieval.jobs.parquet`); ``retrieval index --from-parquet DIR`` loads
such shards into a collection without re-embedding.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.jobs.sources import SourceItem

__all__ = ["JobStats", "SkippingLoader", "embed_chunks", "embed_items", "open_target", "progress_bar", "stored_ids", "write_report"]

#: Batches per write: big enough that per-transaction costs vanish, small enough that a
#: crash loses little.
BATCHES_PER_CHUNK = 8


@dataclass
class JobStats:
    """What a job did; printed as its summary."""

    total: int = 0
    already_stored: int = 0
    written: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, uri, reason)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Images processed per second (written plus skipped as bad)."""
        done = self.written + len(self.failed)
        return done / self.seconds if self.seconds > 0 else 0.0


class SkippingLoader:
    """Wraps an ``ImageLoader`` so a bad file becomes a recorded failure, not an exception.

    In place of an image that cannot be loaded it returns a blank one of the right size, so
    the batch it is in still goes through the fast path in one piece; the caller drops
    the vectors of :attr:`failed` URIs before writing.

    It also keeps each image's :func:`loaders.photo_metadata.photo_metadata` (size, format,
    EXIF) in :attr:`photos`, read from the image the loader opened anyway: no second read.

    Args:
        inner: A ``loaders.ImageLoader`` (or any loader with the same ``load``/``fetch``/``decode``).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed: dict[str, str] = {}
        self.photos: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _fail(self, uri: str, exc: Exception) -> None:
        with self._lock:
            self.failed.setdefault(uri, str(exc))

    def _opened(self, uri: str, image: Any) -> None:
        from loaders.photo_metadata import photo_metadata

        meta = photo_metadata(image)
        with self._lock:
            self.photos[uri] = meta

    def take_photos(self, uris: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Remove and return the photo metadata of ``uris`` (``{}`` for one never opened)."""
        with self._lock:  # the loader may already be opening the next chunk's images
            return {uri: self.photos.pop(uri, {}) for uri in uris}

    def load(self, uris: Sequence[str], *, fit: Any = None) -> list[np.ndarray]:
        def placeholder(uri: str, exc: Exception) -> np.ndarray:
            self._fail(uri, exc)
            return _blank(fit)

        return self.inner.load(uris, fit=fit, on_error=placeholder, on_open=self._opened)

    def fetch(self, uris: Sequence[str]) -> list[Any]:
        from loaders.image import EncodedImage, ImageHeader

        def placeholder(uri: str, exc: Exception) -> Any:
            self._fail(uri, exc)
            return EncodedImage(uri, b"", ImageHeader(None, 1, 1, "RGB", 1))  # routed to decode()

        return self.inner.fetch(uris, on_error=placeholder, on_open=self._opened)

    def decode(self, data: bytes, *, uri: str = "<bytes>", fit: Any = None) -> np.ndarray:
        from embedders.errors import LoadError

        if uri in self.failed:
            return _blank(fit)
        try:
            return self.inner.decode(data, uri=uri, fit=fit, on_open=self._opened)
        except LoadError as exc:
            self._fail(uri, exc)
            return _blank(fit)

    def __call__(self, uris: Sequence[str]) -> list[np.ndarray]:
        return self.load(uris)


def _blank(fit: Any) -> np.ndarray:
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    return np.asarray(fit.fit_pil(image) if fit is not None else image, dtype=np.uint8)


def embed_chunks(
    items: Sequence[SourceItem],
    embedding_function: Any,
    loader: SkippingLoader,
    *,
    batch_size: int,
    on_progress: Callable[[int], Any],
) -> Iterator[tuple[list[SourceItem], np.ndarray, list[dict[str, Any]], list[tuple[str, str, str]]]]:
    """Embed ``items`` chunk by chunk.

    Yields, per chunk: the items that loaded, their vectors, their photo metadata (see
    :class:`SkippingLoader`) and the failures ``(id, uri, reason)``.
    """
    import embedders

    chunk = batch_size * BATCHES_PER_CHUNK
    for start in range(0, len(items), chunk):
        part = list(items[start:start + chunk])
        vectors = embedders.embed_uris(
            embedding_function, [it.uri for it in part], loader, batch_size=batch_size, progress=on_progress
        )
        good = [(it, v) for it, v in zip(part, vectors) if it.uri not in loader.failed]
        failures = [(it.id, it.uri, loader.failed[it.uri]) for it in part if it.uri in loader.failed]
        photos = loader.take_photos([it.uri for it in part])
        yield ([it for it, _ in good], np.array([v for _, v in good], dtype=np.float32),
               [photos[it.uri] for it, _ in good], failures)


def embed_items(
    items: Sequence[SourceItem],
    embedding_function: Any,
    loader: Any,
    writer: Any,
    *,
    batch_size: int,
    progress: bool = True,
) -> JobStats:
    """Like :func:`index_items`, into a :class:`retrieval.jobs.parquet.ShardWriter` instead."""
    started = time.perf_counter()
    stats = JobStats(total=len(items))
    todo = [it for it in items if it.id not in writer.existing_ids]
    stats.already_stored = len(items) - len(todo)
    skipping = SkippingLoader(loader)
    with progress_bar(len(todo), progress, "embedding") as bar:
        for good, vectors, _photos, failures in embed_chunks(
            todo, embedding_function, skipping, batch_size=batch_size, on_progress=bar.update
        ):
            stats.failed.extend(failures)
            if good:
                writer.write([it.id for it in good], [it.uri for it in good], vectors)
                stats.written += len(good)
    stats.seconds = time.perf_counter() - started
    return stats


def stored_ids(collection: Any, ids: Sequence[str], chunk: int = 5000) -> set[str]:
    """Which of ``ids`` the collection already holds (asked in chunks)."""
    found: set[str] = set()
    for start in range(0, len(ids), chunk):
        found.update(collection.get(ids=list(ids[start:start + chunk]), include=[])["ids"])
    return found


def write_report(path: str, failures: Sequence[tuple[str, str, str]]) -> None:
    """One JSON line per skipped file: ``{"id", "uri", "reason"}``."""
    with open(path, "w", encoding="utf-8") as f:
        for id_, uri, reason in failures:
            f.write(json.dumps({"id": id_, "uri": uri, "reason": reason}) + "\n")


def open_target(path: str | None, host: str | None, port: int) -> Any:
    """A client for the job's target: a local persist directory, or a server with ``--host``.

    Raises:
        RuntimeError: ``--host`` was given but this installation has no ``retrieval.HttpClient``.
    """
    import retrieval

    if host is None:
        return retrieval.PersistentClient(path=path)
    http_client = getattr(retrieval, "HttpClient", None)
    if http_client is None:
        raise RuntimeError(
            f"--host {host!r}: this installation of retrieval has no HttpClient; index into a local "
            "persist directory with --path instead, or upgrade retrieval"
        )
    return http_client(host=host, port=port)


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    # unit_scale keeps the rate readable at thousands of images/s; ETA comes with total.
    return tqdm(total=total, disable=not enabled, unit="img", desc=desc, file=sys.stderr,
                smoothing=0.1)
