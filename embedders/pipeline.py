"""Overlap loading with embedding: the next batches are read and decoded while one is encoded.

Reading files and decoding/resizing images (Pillow, nvJPEG) release the GIL, so a background
thread preparing batches ahead (``prefetch_map``), itself fanning each batch out over the
loader's threads, keeps the encoder busy without a process pool. Embedding functions with
their own fast path (``OpenCLIPEmbeddingFunction.embed_image_uris``, see
``embedders.image_batches``) are used through :func:`embed_uris` as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from embedders.base import check_embeddings
from embedders.errors import LoadError

__all__ = ["batched", "embed_uris", "prefetch_map"]

T = TypeVar("T")
R = TypeVar("R")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of length ``size`` (the last may be shorter).

    Example:
        >>> list(batched([1, 2, 3, 4, 5], 2))
        [[1, 2], [3, 4], [5]]
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1; got {size!r}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def prefetch_map(fn: Callable[[T], R], items: Iterable[T], depth: int = 1) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, computing up to ``depth`` results ahead in a thread.

    Results come in order. An exception raised by ``fn`` is re-raised when its result is
    reached; pending work is cancelled when the consumer stops early.

    Example:
        >>> list(prefetch_map(lambda x: x * 2, [1, 2, 3]))
        [2, 4, 6]
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1; got {depth!r}")
    it = iter(items)
    pending: list[Future[R]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-prefetch") as pool:
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) > depth:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            for fut in pending:
                fut.cancel()


def embed_uris(
    embedding_function: Any,
    uris: Sequence[str],
    loader: Callable[[Sequence[str]], Sequence[Any]],
    *,
    batch_size: int | None = None,
    progress: bool | Callable[[int], Any] = False,
) -> list[np.ndarray]:
    """Load ``uris`` with ``loader`` and embed them, overlapping loading with embedding.

    Uses the embedding function's own ``embed_image_uris`` when it has one (e.g.
    ``OpenCLIPEmbeddingFunction`` also overlaps preprocessing), so callers need one path.

    Args:
        embedding_function: Any embedding function that accepts images.
        uris: URIs understood by ``loader``.
        loader: A data loader: a list of URIs in, a list of images out.
        batch_size: URIs per batch; ``None`` uses the function's own ``batch_size`` (or 64).
        progress: Show a tqdm progress bar, or a callable given each finished batch's size.

    Returns:
        One vector per URI, in order.

    Raises:
        LoadError: The loader returned ``None`` or the wrong number of items for a batch.

    Example:
        >>> import fsspec, io
        >>> from PIL import Image
        >>> from embedders import HashEmbeddingFunction
        >>> from loaders import ImageLoader
        >>> buf = io.BytesIO(); Image.new("RGB", (8, 8), "red").save(buf, "PNG")
        >>> with fsspec.open("memory://doc/red.png", "wb") as f: _ = f.write(buf.getvalue())
        >>> len(embed_uris(HashEmbeddingFunction(), ["memory://doc/red.png"], ImageLoader()))
        1
    """
    own = getattr(embedding_function, "embed_image_uris", None)
    if own is not None:
        return own(uris, loader, progress=progress, batch_size=batch_size)
    if batch_size is None:
        batch_size = getattr(embedding_function, "batch_size", None) or 64
    out: list[np.ndarray] = []
    with _progress(len(uris), progress is True) as bar:
        update = progress if callable(progress) else bar.update
        for batch, images in zip(batched(uris, batch_size), prefetch_map(loader, batched(uris, batch_size))):
            check_loaded(batch, images)
            # A foreign (chromadb-style) function gets the same one-vector-per-input check.
            vectors = embedding_function(list(images))
            out.extend(check_embeddings(vectors, len(batch), _name(embedding_function)))
            update(len(batch))
    return out


def check_loaded(uris: Sequence[str], loaded: Sequence[Any]) -> None:
    """Raise :class:`LoadError` unless ``loaded`` holds one non-``None`` item per URI."""
    if len(loaded) != len(uris):
        raise LoadError(f"the data loader returned {len(loaded)} items for {len(uris)} URIs")
    for uri, item in zip(uris, loaded):
        if item is None:
            raise LoadError(f"the data loader returned nothing for URI {uri!r}", uri=uri)


def _name(embedding_function: Any) -> str:
    try:
        return str(embedding_function.name())
    except Exception:  # noqa: BLE001 - legacy functions have no usable name()
        return type(embedding_function).__name__


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # tqdm is a core dependency; imported only when used

    return tqdm(total=total, disable=not enabled, unit="img", desc="embedding")
