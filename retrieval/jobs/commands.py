"""The ``retrieval index`` and ``retrieval embed`` subcommands (parser entries live in retrieval/cli.py).

    retrieval index photos/ --path .chroma --collection photos --model ViT-B-32 ...
    retrieval index photos/ --prune | --dry-run | --watch      (a rerun is a sync)
    retrieval index 'photos/**/*.jpg' | list.txt | list.csv | list.parquet | s3://bucket/photos/
    retrieval index --from-parquet embeddings/ --collection photos
    retrieval embed photos/ --out embeddings/
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_job_arguments", "add_sync_arguments", "run_embed", "run_index"]


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``index`` and ``embed`` share: model, device, batch size, workers, report."""
    parser.add_argument("--model", default="tiny-shapes",
                        help="open_clip model: a bundled name, local-dir:/path, hf-hub:org/repo or an architecture "
                             "(with --checkpoint) (default %(default)s)")
    parser.add_argument("--checkpoint", default=None, help="weights tag or file for an open_clip architecture")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default 256 on a GPU, 64 on a CPU)")
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: one per core + 4)")
    parser.add_argument("--report", default=None,
                        help="JSON-lines file listing every change (index) or skipped file (embed) with its reason "
                             "(default ./index-report-<collection>.jsonl, written only when files were skipped)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _embedding_function(args: argparse.Namespace) -> Any:
    from embedders import build_embedding_function

    config = {"model_name": args.model}
    if args.checkpoint:
        config["checkpoint"] = args.checkpoint
    ef = build_embedding_function("open_clip", config, device=args.device)
    if args.batch_size is None:
        import torch

        cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
        args.batch_size = 256 if cuda else 64
    ef.set_runtime_options(batch_size=args.batch_size)
    return ef


def _loader(args: argparse.Namespace) -> Any:
    from loaders import ImageLoader

    return ImageLoader(max_workers=args.workers)


def _check(args: argparse.Namespace) -> str | None:
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size must be a positive integer; got {args.batch_size}"
    if args.workers is not None and args.workers < 1:
        return f"--workers must be a positive integer; got {args.workers}"
    return None


def _summary(stats: Any, report: str) -> str:
    from retrieval.jobs.index_job import write_report
    from retrieval.jobs.summary import pace

    parts = [f"{stats.already_stored} already stored"]
    if stats.failed:
        write_report(report, stats.failed)
        parts.append(f"{len(stats.failed)} skipped as unreadable (reasons in {report})")
    else:
        parts.append("0 skipped")
    return f"{'; '.join(parts)}; {pace(stats.written + len(stats.failed), stats.seconds, 'image')}"


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """``index``'s sync options: --prune, --dry-run, --watch, --poll-interval."""
    parser.add_argument("--prune", action="store_true",
                        help="remove the records of files that are gone (by default they are only reported)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what a sync would add, update and remove; write nothing")
    parser.add_argument("--watch", action="store_true",
                        help="after syncing, keep applying changes as they happen until Ctrl-C or SIGTERM")
    parser.add_argument("--poll-interval", type=float, default=2.0,
                        help="with --watch, seconds between relists where there are no file-system events "
                             "(remote URLs, globs, lists) (default %(default)s)")


def run_index(args: argparse.Namespace) -> int:
    """``retrieval index``: sync SOURCE (or load ``--from-parquet DIR``) into a collection."""
    from retrieval.errors import RetrievalError
    from retrieval.jobs.index_job import open_target
    from retrieval.jobs.sources import NoImagesError, list_source

    problem = _check(args)
    if problem is None and (args.source is None) == (args.from_parquet is None):
        problem = "give a SOURCE to index, or --from-parquet DIR (not both)"
    if problem is None and not args.poll_interval > 0:
        problem = f"--poll-interval must be a positive number of seconds; got {args.poll_interval}"
    if problem is None and args.from_parquet is not None and (args.watch or args.dry_run or args.prune):
        problem = "--watch, --dry-run and --prune sync a SOURCE; they do not apply to --from-parquet"
    if problem is None and args.watch and args.dry_run:
        problem = "--dry-run prints one sync's plan; drop --watch (or --dry-run)"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.from_parquet is not None:
        return _index_parquet(args)
    try:
        items = list_source(args.source)
    except NoImagesError as exc:
        if not args.watch:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        items = []  # a watched folder may start empty
    except (RetrievalError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        try:
            return _dry_run(args, items)
        except (RetrievalError, RuntimeError) as exc:  # e.g. the path is served by `retrieval run`
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        ef = _embedding_function(args)
        ef(["probe"])  # load the model now: a bad --model or --device fails before the store is created
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        client = open_target(args.path, args.host, args.port)
    except (RetrievalError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        collection = client.get_or_create_collection(
            args.collection, embedding_function=ef, data_loader=_loader(args),
            configuration={"hnsw": {"space": "cosine"}},
        )
        loader = collection.data_loader or _loader(args)  # the stored loader keeps its pixel limit
        if args.workers is not None:
            loader.set_runtime_options(max_workers=args.workers)
        if args.watch:
            return _watch(args, collection, ef, loader)
        return _sync_once(args, items, collection, ef, loader)
    except _user_errors() as exc:  # a bad name, model or option: say so, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()


def _report(args: argparse.Namespace) -> Any:
    from retrieval.jobs.sync import ReportWriter

    # An explicit --report gets every change; the default file appears only when something was skipped.
    return ReportWriter(args.report or f"index-report-{args.collection}.jsonl", every_change=bool(args.report))


def _sync_once(args: argparse.Namespace, items: Any, collection: Any, ef: Any, loader: Any) -> int:
    from retrieval.jobs.sources import stat_items
    from retrieval.jobs.summary import count, pace
    from retrieval.jobs.sync import apply_sync, plan_sync, stored_records

    plan = plan_sync(stat_items(items), stored_records(collection))
    result = apply_sync(plan, collection, ef, loader, prune=args.prune, batch_size=args.batch_size,
                        progress=not args.quiet)
    report = _report(args)
    report.write(result.changes)
    where = f"{args.host}:{args.port}" if args.host else args.path
    listed = f"; changes listed in {report.path}" if report.lines else ""
    print(f"indexed {count(result.added + result.updated, 'image')} into collection {args.collection!r} at {where} "
          f"({collection.count()} total): {result.counts()}{listed}; "
          f"{pace(result.added + result.updated + len(result.failed), result.seconds, 'image')}")
    return 0


def _dry_run(args: argparse.Namespace, items: Any) -> int:
    """Plan a sync against what is stored and print it; open nothing for writing, create nothing."""
    from retrieval.errors import NotFoundError
    from retrieval.jobs.index_job import open_target
    from retrieval.jobs.sources import stat_items
    from retrieval.jobs.sync import plan_sync, stored_records
    from retrieval.store.db import DB_FILENAME

    stored: dict[str, Any] = {}
    if args.host or os.path.isfile(os.path.join(args.path, DB_FILENAME)):
        client = open_target(args.path, args.host, args.port)
        try:
            stored = stored_records(client.get_collection(args.collection))
        except NotFoundError:
            pass  # nothing stored yet: everything would be added
        finally:
            client.close()
    plan = plan_sync(stat_items(items), stored)
    for change in plan.changes(args.prune):
        verb = "keep" if change.action == "gone" else change.action
        print(f"would {verb}\t{change.id}\t({change.reason})")
    removing = f"remove {len(plan.gone)}" if args.prune else f"remove 0 ({len(plan.gone)} gone, kept without --prune)"
    print(f"dry run: would add {len(plan.add)}, update {len(plan.update)}, {removing}; {plan.unchanged} unchanged; "
          "nothing written")
    return 0


def _watch(args: argparse.Namespace, collection: Any, ef: Any, loader: Any) -> int:
    import signal
    import threading

    from retrieval.jobs.watch import watch_source

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001 - the signal API's shape
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        totals = watch_source(
            args.source, collection, ef, loader, prune=args.prune, batch_size=args.batch_size,
            progress=not args.quiet, poll_interval=args.poll_interval, report=_report(args),
            stop=stop, echo=lambda line: print(line, flush=True),
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"stopped watching {args.source}: {totals.added} added, {totals.updated} updated, {totals.removed} "
          f"removed, {len(totals.failed)} skipped-bad in all", flush=True)
    return 0


def _index_parquet(args: argparse.Namespace) -> int:
    import time

    from embedders import build_embedding_function
    from retrieval.errors import RetrievalError
    from retrieval.jobs.index_job import open_target, stored_ids
    from retrieval.jobs.parquet import read_shards, shard_paths
    from retrieval.jobs.summary import count, pace

    if not shard_paths(args.from_parquet):  # refused before the store is created
        print(f"error: no .parquet shards in {args.from_parquet!r} (write some with `retrieval embed`)", file=sys.stderr)
        return 2
    client = open_target(args.path, args.host, args.port)
    where = f"{args.host}:{args.port}" if args.host else args.path
    started, written, skipped, collection = time.perf_counter(), 0, 0, None
    try:
        for ids, uris, vectors, spec in read_shards(args.from_parquet):
            if collection is None:
                ef = None
                if spec is not None:  # the shards' model, so text queries land in the same space
                    ef = build_embedding_function(spec["name"], spec["config"], device=args.device)
                collection = client.get_or_create_collection(
                    args.collection, embedding_function=ef, data_loader=_loader(args),
                    configuration={"hnsw": {"space": "cosine"}},
                )
            have = stored_ids(collection, ids)
            keep = [i for i, id_ in enumerate(ids) if id_ not in have]
            skipped += len(ids) - len(keep)
            if keep:
                collection.add(ids=[ids[i] for i in keep], embeddings=vectors[keep],
                               uris=[uris[i] for i in keep] if uris[0] is not None else None,
                               metadatas=[{"file": ids[i]} for i in keep])
                written += len(keep)
        seconds = time.perf_counter() - started
        print(f"indexed {count(written, 'image')} into collection {args.collection!r} at {where} "
              f"({collection.count()} total); {skipped} already stored; {pace(written, seconds, 'image')}")
    except (*_user_errors(), ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    return 0


def _user_errors() -> tuple[type[Exception], ...]:
    from embedders.errors import ConfigError, ModelUnavailableError, UnknownNameError
    from retrieval.errors import RetrievalError

    return (RetrievalError, ConfigError, ModelUnavailableError, UnknownNameError)


def run_embed(args: argparse.Namespace) -> int:
    """``retrieval embed``: SOURCE into Parquet shards under ``--out``."""
    from retrieval.errors import RetrievalError
    from retrieval.jobs.index_job import embed_items
    from retrieval.jobs.parquet import ShardWriter
    from retrieval.jobs.sources import list_source
    from retrieval.jobs.summary import count

    problem = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        items = list_source(args.source)
    except (RetrievalError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        ef = _embedding_function(args)
        ef(["probe"])  # load the model now: a bad --model fails before any work
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    writer = ShardWriter(args.out, ef)
    stats = embed_items(items, ef, _loader(args), writer, batch_size=args.batch_size, progress=not args.quiet)
    report = args.report or os.path.join(args.out, "embed-report.jsonl")
    print(f"embedded {count(stats.written, 'image')} into {args.out} ({len(writer.existing_ids)} total); "
          f"{_summary(stats, report)}")
    return 0
