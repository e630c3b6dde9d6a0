"""The embedding job on Ray Data: the same shards as ``retrieval embed``, on a local Ray or a cluster.

The plan, stage by stage:

1. **Driver.** The source is listed as today (:func:`retrieval.jobs.sources.list_source`); ids
   already in the output folder's shards are dropped; the rest is cut into fixed shards of
   ``shard_size`` ids, and those into Ray blocks of :data:`DECODE_BATCH` rows (one decode task each).
2. **CPU tasks** (``map_batches`` with a function): each reads its files' bytes (fsspec) and
   decodes them straight to the model's input size (Pillow, JPEG draft mode), exactly as the
   single-process loader does. A file that cannot be read or decoded becomes a row with an
   ``error`` (the loader's message) and blank pixels: it is reported, never dropped.
3. **Actor pool** (``map_batches`` with a class, ``ActorPoolStrategy(1, N)``, ``num_gpus``):
   each actor loads the model once and embeds the good rows of each batch. Ray restarts an
   actor that dies and retries its batch (``max_restarts``, ``max_task_retries``).
4. **Driver.** Rows stream back; once every row of a shard is back, its good rows are
   written atomically as one Parquet shard (:class:`retrieval.jobs.parquet.ShardWriter`)
   named by its content (``part-r<digest>.parquet``). A killed job leaves only whole shards,
   and a rerun skips their ids.

Every listed item ends in exactly one place: a shard, the report (with the reason), or
"already stored"; a row Ray never returned is reported too, so the counts always add up.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.jobs.index_job import JobStats
from retrieval.jobs.sources import SourceItem

__all__ = ["INSTALL_HINT", "RayJobOptions", "RayNotInstalledError", "RayUnreachableError", "embed_with_ray",
           "ray_session", "require_ray", "shard_name"]

INSTALL_HINT = "pip install 'retrieval[ray]'  (or: pip install 'ray[data]==2.60.0' aiohttp)"
#: Files per decode task at least: a Ray task costs milliseconds to schedule, so 64-file tasks ran
#: at 0.63x the single-process job's images/s past start-up on 2 cores, 256-file tasks at 0.95x.
DECODE_BATCH = 256
#: Why a row never came back, for the report (a Ray failure we could not see, not a bad file).
LOST = "the Ray job returned no row for it (rerun the job to retry it)"


class RayNotInstalledError(ImportError):
    """``--ray`` was asked for but Ray Data is not installed."""


class RayUnreachableError(ConnectionError):
    """``--address`` names a Ray cluster that does not answer."""


def require_ray() -> Any:
    """Import Ray Data, or raise :class:`RayNotInstalledError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra, not only ray core
    except ImportError as exc:
        raise RayNotInstalledError(f"--ray needs Ray Data, which is not installed: {INSTALL_HINT}") from exc
    return ray


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected: to ``address``, to the Ray already initialised in this process, or a local one.

    A local Ray started here is shut down on exit. It is given at least 4 logical CPUs: Ray
    schedules by logical CPUs, and on a 2-core machine a pool actor plus Ray Data's own
    bookkeeping would leave no CPU for the decode tasks, so the job would never start.
    """
    import logging

    ray = require_ray()
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset plans and timings: noise here
    if ray.is_initialized():
        yield ray
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            raise RayUnreachableError(
                f"cannot reach the Ray cluster at {address!r}: {type(exc).__name__}: {exc} (is it running? "
                "`ray start --head` starts one; leave out --address to run on a local Ray)"
            ) from exc
    else:
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class RayJobOptions:
    """How the job uses the cluster.

    Args:
        batch_size: Images per forward pass (a decode task takes at least :data:`DECODE_BATCH`).
        workers: Most embedding actors (the pool grows from one to this many).
        gpus_per_worker: GPUs each actor holds (0: embed on CPUs).
        device: The actors' torch device when ``gpus_per_worker`` is 0 (``auto``/``cpu``).
        shard_size: Images per output shard.
        max_pixels: The loader's decompression-bomb limit.
        decode_threads: Reader threads per decode task (hide the latency of remote URIs).
    """

    batch_size: int = 64
    workers: int = 1
    gpus_per_worker: float = 0
    device: str = "auto"
    shard_size: int = 4096
    max_pixels: int | None = None
    decode_threads: int = 2


def shard_name(ids: Sequence[str]) -> str:
    """A shard's file name, from its ids: the same shard always gets the same name.

    Example:
        >>> shard_name(["a.jpg", "b.jpg"])
        'part-rf7199d4ec1aed67f.parquet'
    """
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    return f"part-r{digest}.parquet"


def embed_with_ray(
    items: Sequence[SourceItem],
    writer: Any,
    embedding_function: Any,
    options: RayJobOptions,
    *,
    progress: bool = True,
) -> JobStats:
    """Embed the ``items`` not yet in ``writer``'s folder on the connected Ray cluster.

    Args:
        items: What to embed (from :func:`retrieval.jobs.sources.list_source`).
        writer: A :class:`retrieval.jobs.parquet.ShardWriter` on the output folder.
        embedding_function: An ``OpenCLIPEmbeddingFunction`` (driver side: its config and input
            geometry travel to the workers; each actor builds its own copy).
        options: Cluster usage (see :class:`RayJobOptions`).
        progress: A progress bar on stderr.

    Returns:
        The job's statistics; ``written + already_stored + len(failed) == total``.
    """
    import ray.data

    started = time.perf_counter()
    stats = JobStats(total=len(items))
    todo = [it for it in items if it.id not in writer.existing_ids]
    stats.already_stored = len(items) - len(todo)
    shards = [todo[i:i + options.shard_size] for i in range(0, len(todo), options.shard_size)]
    if not shards:
        stats.seconds = time.perf_counter() - started
        return stats
    geometry = embedding_function.image_geometry()
    spec = {"name": embedding_function.name(), "config": embedding_function.get_config()}
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts images; Ray's counts blocks per operator
    decode_rows = max(options.batch_size, DECODE_BATCH)
    dataset = (
        ray.data.from_arrow(_blocks(shards, decode_rows))
        .map_batches(
            decode_batch,
            batch_size=decode_rows,
            fn_kwargs={"geometry": geometry, "max_pixels": options.max_pixels, "threads": options.decode_threads},
            num_cpus=1,
            # Room for a batch of encoded files, their decoded pixels and the fitted output. Also
            # keeps decoding in tasks of its own: Ray fuses a task stage into the next actor
            # stage (into one process) when the two ask for the same resources.
            memory=_decode_memory(decode_rows, geometry.size),
        )
        .map_batches(
            ImageEmbedder,
            batch_size=options.batch_size,
            fn_constructor_kwargs={"spec": spec, "device": "cuda" if options.gpus_per_worker else options.device,
                                   "batch_size": options.batch_size, "geometry": geometry},
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=options.workers),
            num_gpus=options.gpus_per_worker or None,
            num_cpus=_actor_cpus(options),
            # Ray Data's actor pools restart a dead actor and retry its batch (max_restarts=-1,
            # max_task_retries=-1 by default); tests/test_ray_job.py kills one to hold it to that.
        )
    )
    _collect(dataset, shards, writer, stats, progress)
    stats.seconds = time.perf_counter() - started
    return stats


def _actor_cpus(options: RayJobOptions) -> float:
    """CPUs per actor: one feeds a GPU; on CPUs an actor gets half a node (torch uses them all)."""
    import ray

    if options.gpus_per_worker:
        return 1
    largest = max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")), default=2)
    return max(1, int(largest // 2))


def _decode_memory(batch_size: int, size: tuple[int, int]) -> int:
    """Bytes a decode task may need: a worker process (~150 MiB measured) plus 8x its batch of pixels."""
    return (192 << 20) + 8 * batch_size * size[0] * size[1] * 3


def _blocks(shards: list[list[SourceItem]], rows: int) -> list[Any]:
    """The job's input as Ray blocks of ``rows`` items (one decode task each); rows carry their shard."""
    import pyarrow as pa

    blocks = []
    for number, shard in enumerate(shards):
        for start in range(0, len(shard), rows):
            part = shard[start:start + rows]
            blocks.append(pa.table({
                "shard": pa.array([number] * len(part), pa.int64()),
                "id": pa.array([it.id for it in part], pa.string()),
                "uri": pa.array([it.uri for it in part], pa.string()),
            }))
    return blocks


def decode_batch(batch: dict[str, np.ndarray], *, geometry: Any, max_pixels: int | None, threads: int) -> dict:
    """CPU task: read and decode a batch of URIs to model-input pixels; failures become ``error`` rows.

    Example:
        >>> from embedders.preprocess import Geometry
        >>> out = decode_batch({"id": np.array(["x"]), "uri": np.array(["/no/such.jpg"])},
        ...                    geometry=Geometry((8, 8)), max_pixels=None, threads=1)
        >>> out["pixels"].shape, "no such file" in out["error"][0]
        ((1, 8, 8, 3), True)
    """
    from loaders import ImageLoader

    limit = {} if max_pixels is None else {"max_pixels": max_pixels}
    loader = ImageLoader(max_workers=threads, **limit)
    errors: dict[str, str] = {}

    def failed(uri: str, exc: Exception) -> None:
        errors[uri] = str(exc)

    uris = [str(u) for u in batch["uri"]]
    height, width = geometry.size
    pixels = np.zeros((len(uris), height, width, 3), np.uint8)
    for i, image in enumerate(loader.load(uris, fit=geometry, on_error=failed)):
        if image is not None:
            pixels[i] = image
    return {**batch, "pixels": pixels, "error": np.array([errors.get(u, "") for u in uris], dtype=object)}


class ImageEmbedder:
    """Actor: builds the embedding function once, then embeds the good rows of each batch.

    Args:
        spec: ``{"name", "config"}`` of the embedding function (registry name: no import path
            crosses the wire).
        device: Its torch device.
        batch_size: Images per forward pass.
        geometry: The input geometry; a blank image of it warms the model up and fixes the
            vector width, so rows that failed to decode get a zero vector of the right size.
    """

    def __init__(self, spec: dict[str, Any], device: str, batch_size: int, geometry: Any) -> None:
        from embedders import build_embedding_function

        self.ef = build_embedding_function(spec["name"], spec["config"], device=device)
        self.ef.set_runtime_options(batch_size=batch_size)
        blank = np.zeros((*geometry.size, 3), np.uint8)
        self.dim = len(self.ef([blank])[0])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = np.array([not e for e in batch["error"]], dtype=bool)
        vectors = np.zeros((len(good), self.dim), np.float32)
        if good.any():
            # The pixels are already at the model's size: the function only normalises them.
            vectors[good] = np.asarray(self.ef(list(batch["pixels"][good])), dtype=np.float32)
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["vector"] = vectors
        return out


def _collect(dataset: Any, shards: list[list[SourceItem]], writer: Any, stats: JobStats, progress: bool) -> None:
    """Gather rows per shard; write each shard once all its rows are back; report the rest."""
    from tqdm import tqdm

    good: dict[int, list[tuple[str, str, np.ndarray]]] = {k: [] for k in range(len(shards))}
    seen: dict[int, set[str]] = {k: set() for k in range(len(shards))}
    bar = tqdm(total=sum(map(len, shards)), disable=not progress, unit="img", desc="embedding (ray)",
               file=sys.stderr, smoothing=0.1)
    with bar:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for k, id_, uri, error, vector in zip(batch["shard"], batch["id"], batch["uri"], batch["error"],
                                                  batch["vector"]):
                k, id_, uri = int(k), str(id_), str(uri)
                if k not in good or id_ in seen[k]:
                    continue  # a row delivered twice (never observed; cheap to rule out)
                seen[k].add(id_)
                if error:
                    stats.failed.append((id_, uri, str(error)))
                else:
                    good[k].append((id_, uri, vector))
                if len(seen[k]) == len(shards[k]):
                    _write_shard(writer, shards[k], good.pop(k), stats)
            bar.update(len(batch["id"]))
    for k in list(good):  # a shard Ray left incomplete: store what came back, report the rest
        _write_shard(writer, shards[k], good.pop(k), stats)
        stats.failed.extend((it.id, it.uri, LOST) for it in shards[k] if it.id not in seen[k])


def _write_shard(writer: Any, shard: list[SourceItem], rows: list[tuple[str, str, np.ndarray]], stats: JobStats) -> None:
    if not rows:
        return  # every file of the shard was bad: all reported, nothing to store
    order = {it.id: i for i, it in enumerate(shard)}
    rows.sort(key=lambda row: order[row[0]])  # listing order inside the shard, whatever Ray's order
    ids = [r[0] for r in rows]
    writer.write(ids, [r[1] for r in rows], np.stack([r[2] for r in rows]), name=shard_name(ids))
    stats.written += len(rows)
