"""``retrieval embed --ray`` and ``retrieval index --ray``: the batch job on a Ray cluster.

    retrieval embed photos/ --out embeddings/ --ray                         # a local Ray
    retrieval embed s3://bucket/photos/ --out /shared/emb --ray --address ray://head:10001 --gpus-per-worker 1 --workers 8
    retrieval index photos/ --ray --path .chroma --collection photos        # embed on Ray, then load the shards
    retrieval index photos/ --ray --host db.internal --port 8000            # ... into a server

Ray is imported only here and only with ``--ray``; without the ``ray`` extra, ``--ray``
answers with one line saying how to install it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

__all__ = ["add_ray_arguments", "run_ray_embed", "run_ray_index"]


def add_ray_arguments(parser: argparse.ArgumentParser, *, shards_folder: bool = False) -> None:
    """``--ray`` and its options; ``shards_folder`` adds ``--out`` (``index``, which has none)."""
    group = parser.add_argument_group("on Ray (past one machine)")
    group.add_argument("--ray", action="store_true",
                       help="run the job on Ray Data: a local Ray, or the cluster at --address; --workers then "
                            "sets the most embedding actors (needs the ray extra: pip install 'retrieval[ray]')")
    group.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    group.add_argument("--gpus-per-worker", type=float, default=None,
                       help="GPUs per embedding actor (default: 1 when the cluster has GPUs, else 0)")
    group.add_argument("--shard-size", type=int, default=4096, help="images per output shard (default %(default)s)")
    if shards_folder:
        group.add_argument("--out", default=None,
                           help="folder for the job's shards, kept so a rerun resumes "
                                "(default ./ray-shards-<collection>)")


def _problem(args: argparse.Namespace) -> str | None:
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size must be a positive integer; got {args.batch_size}"
    if args.workers is not None and args.workers < 1:
        return f"--workers must be a positive integer; got {args.workers}"
    if args.shard_size < 1:
        return f"--shard-size must be a positive integer; got {args.shard_size}"
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        return f"--gpus-per-worker must be 0 or more; got {args.gpus_per_worker}"
    if getattr(args, "from_parquet", None) is not None:
        return "--ray embeds a SOURCE; --from-parquet loads shards without Ray (drop one of them)"
    syncing = [flag for flag in ("watch", "prune", "dry_run") if getattr(args, flag, False)]
    if syncing:
        flags = ", ".join("--" + flag.replace("_", "-") for flag in syncing)
        return f"--ray embeds new files into shards; {flags} sync a folder without Ray (drop --ray or {flags})"
    return None


def run_ray_embed(args: argparse.Namespace) -> int:
    """``retrieval embed SOURCE --out DIR --ray``: SOURCE into Parquet shards, on Ray."""
    code, _ = _embed(args, args.out)
    return code


def run_ray_index(args: argparse.Namespace) -> int:
    """``retrieval index SOURCE --ray``: embed on Ray into shards, then load them (``--path`` or ``--host``)."""
    from retrieval.jobs.commands import run_index

    if args.source is None:
        print("error: --ray needs a SOURCE to index (a folder, glob, URI list or fsspec URL)", file=sys.stderr)
        return 2
    out = args.out or f"ray-shards-{args.collection}"
    code, written_any = _embed(args, out)
    if code or not written_any:
        return code
    # The shards are our Parquet format: loading them is `index --from-parquet`, one code path.
    return run_index(argparse.Namespace(**{**vars(args), "source": None, "from_parquet": out}))


def _embed(args: argparse.Namespace, out: str) -> tuple[int, bool]:
    """Run the Ray job; returns (exit code, whether the folder holds any shard)."""
    from retrieval.errors import RetrievalError
    from retrieval.jobs.index_job import write_report
    from retrieval.jobs.parquet import ShardWriter
    from retrieval.jobs.ray_job import (
        LOST,
        RayNotInstalledError,
        RayUnreachableError,
        embed_with_ray,
        ray_session,
        require_ray,
    )
    from retrieval.jobs.sources import list_source

    problem = _problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2, False
    try:
        ray_module = require_ray()
        items = list_source(args.source)
    except (RayNotInstalledError, RetrievalError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, False
    try:
        ef = _driver_embedding_function(args)
        ef.image_geometry()  # load the model here: a bad --model fails before the cluster does any work
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, False
    try:
        with ray_session(args.address) as ray:
            options = _options(args, ray)
            writer = ShardWriter(out, ef)  # only now: a job that cannot start writes nothing
            stats = embed_with_ray(items, writer, ef, options, progress=not args.quiet)
    except (_ClusterTooSmall, RayUnreachableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, False
    except ray_module.exceptions.RayError as exc:  # failed in the cluster, past Ray's retries
        print(f"error: the Ray job failed: {_root_cause(exc)} (finished shards stay in {out}; rerun to resume)",
              file=sys.stderr)
        return 1, False
    report = args.report or os.path.join(out, "embed-report.jsonl")
    if stats.failed:
        write_report(report, stats.failed)
    reported = f"{len(stats.failed)} reported (reasons in {report})" if stats.failed else "0 reported"
    print(f"embedded {stats.written} images into {out} on Ray ({len(writer.existing_ids)} total); "
          f"listed {stats.total} = {stats.written} embedded + {stats.already_stored} already stored + {reported}; "
          f"{stats.rate:.1f} images/s over {stats.seconds:.1f} s")
    lost = sum(1 for f in stats.failed if f[2] == LOST)
    if lost:
        print(f"error: Ray returned no row for {lost} images (listed in {report}); rerun to retry them",
              file=sys.stderr)
        return 1, bool(writer.existing_ids)
    return 0, bool(writer.existing_ids)


def _root_cause(exc: BaseException) -> str:
    """The worker's own error line out of Ray's wrapped report (its last ``SomeError: ...`` line).

    Example:
        >>> _root_cause(RuntimeError("The actor died ...\\n  File x\\nembedders.errors.ConfigError: bad model"))
        'embedders.errors.ConfigError: bad model'
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return causes[-1] if causes else next((line for line in lines if line), type(exc).__name__)


class _ClusterTooSmall(Exception):
    """The cluster cannot host what was asked (GPUs it does not have)."""


def _options(args: argparse.Namespace, ray: Any) -> Any:
    from retrieval.jobs.ray_job import RayJobOptions

    gpus = ray.cluster_resources().get("GPU", 0)
    per_worker = args.gpus_per_worker if args.gpus_per_worker is not None else (1 if gpus else 0)
    if per_worker > gpus:
        raise _ClusterTooSmall(
            f"--gpus-per-worker {per_worker:g}: the Ray cluster has {gpus:g} GPUs, so no actor could start "
            "(give --gpus-per-worker 0 to embed on CPUs, or --address of a cluster with GPUs)"
        )
    workers = args.workers or (max(1, int(gpus // per_worker)) if per_worker else 1)
    batch_size = args.batch_size or (256 if per_worker else 64)
    return RayJobOptions(batch_size=batch_size, workers=workers, gpus_per_worker=per_worker,
                         device="auto" if per_worker else _cpu_device(args.device), shard_size=args.shard_size)


def _cpu_device(device: str) -> str:
    return "cpu" if device == "auto" else device


def _driver_embedding_function(args: argparse.Namespace) -> Any:
    """The model on the driver (on its CPU): it names the shards' model and gives the input geometry."""
    from embedders import build_embedding_function

    config = {"model_name": args.model}
    if args.checkpoint:
        config["checkpoint"] = args.checkpoint
    return build_embedding_function("open_clip", config, device="cpu")


def _user_errors() -> tuple[type[Exception], ...]:
    from embedders.errors import ConfigError, ModelUnavailableError, UnknownNameError
    from retrieval.errors import RetrievalError

    return (RetrievalError, ConfigError, ModelUnavailableError, UnknownNameError)
