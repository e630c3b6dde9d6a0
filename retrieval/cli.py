"""The ``retrieval`` command line: index a folder of images, search it, inspect a database.

    retrieval index assets/gallery --path .chroma --collection gallery
    retrieval query "a red circle" --path .chroma --collection gallery -n 5
    retrieval list --path .chroma
    retrieval doctor --path .chroma [--repair]
    retrieval run --path .chroma --port 8000

A mistake is one line on stderr, ``error: ...``, naming the bad value and the command that fixes it
(exit 2; a failed job exits 1), and nothing is written: arguments are checked first, and the commands
that only read (``list``, ``query``, ``doctor``) never create a store. ``--debug`` (or
``RETRIEVAL_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn


class CliError(Exception):
    """A mistake the user can fix: printed as one line, ``error: <message>``, with exit ``status``.

    Status 2 is a usage error (a bad argument, a typo'd path); 1 is a job that failed.
    """

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line naming the fix, as every other CLI error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _open_existing(path: str, command: str):
    """A client on a persist path that already holds a database: a read command never creates one."""
    import retrieval
    from retrieval.errors import PersistPathLockedError
    from retrieval.store.db import DB_FILENAME

    if not (Path(path) / DB_FILENAME).is_file():
        raise CliError(
            f"{path!r} holds no retrieval database ({DB_FILENAME}); give the --path of one, "
            f"or create it with `retrieval index SOURCE --path {path}`"
        )
    try:
        return retrieval.PersistentClient(path=path)
    except PersistPathLockedError:
        raise CliError(
            f"{path!r} is in use by another process (a `retrieval run` serving it?); stop that process to "
            f"`retrieval {command}` it, or use the server: its web page or retrieval.HttpClient",
            status=1,
        ) from None


def _shown(distance: float) -> str:
    """Four decimals, with float noise around zero (a self-match's -1e-7) shown as 0.0000, never -0.0000."""
    return f"{0.0 if abs(distance) < 5e-5 else distance:.4f}"


def cmd_index(args: argparse.Namespace) -> int:
    if args.ray:
        from retrieval.jobs.ray_commands import run_ray_index

        return run_ray_index(args)
    from retrieval.jobs.commands import run_index

    return run_index(args)


def cmd_embed(args: argparse.Namespace) -> int:
    if args.ray:
        from retrieval.jobs.ray_commands import run_ray_embed

        return run_ray_embed(args)
    from retrieval.jobs.commands import run_embed

    return run_embed(args)


def cmd_query(args: argparse.Namespace) -> int:
    from retrieval.errors import NotFoundError

    if args.image and "://" not in args.image and not Path(args.image).is_file():
        raise CliError(f"--image {args.image!r} is not a file; give the path of an image to search with")
    client = _open_existing(args.path, "query")
    try:
        try:
            collection = client.get_collection(args.collection)
        except NotFoundError:
            names = [c.name for c in client.list_collections()]
            have = f"it holds {', '.join(map(repr, names))}" if names else "it holds no collections"
            raise CliError(
                f"no collection {args.collection!r} in {args.path!r} ({have}); pick one with --collection, "
                f"or create it with `retrieval index SOURCE --path {args.path} --collection {args.collection}`"
            ) from None
        if args.image:
            result = collection.query(query_uris=[args.image], n_results=args.n, include=["uris", "distances"])
        else:
            result = collection.query(query_texts=[args.text], n_results=args.n, include=["uris", "distances"])
        for rank, (id_, distance) in enumerate(zip(result["ids"][0], result["distances"][0]), start=1):
            print(f"{rank:>3}  {_shown(distance)}  {id_}")
    finally:
        client.close()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from retrieval.jobs.summary import count

    client = _open_existing(args.path, "list")
    try:
        collections = client.list_collections()
        for collection in collections:
            ef = (collection.configuration.get("embedding_function") or {}).get("name")
            print(f"{collection.name}\t{count(collection.count(), 'record')}\tembedding function: {ef}")
        if not collections:
            print(f"{args.path}: no collections")
    finally:
        client.close()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check every collection's index against its records; exit 1 if a problem is left unrepaired."""
    client = _open_existing(args.path, "doctor")
    try:
        reports = client.verify(repair=args.repair, sample=None if args.full else args.sample)
    finally:
        client.close()
    for report in reports:
        print(report)
    if not reports:
        print(f"{args.path}: no collections")
    bad = [r for r in reports if not r.ok]
    if bad:
        hint = "" if args.repair else " (run again with --repair to rebuild their indexes)"
        print(f"{len(bad)} of {len(reports)} collections have index problems{hint}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from retrieval.server.config import ServerConfig
    from retrieval.server.main import serve

    flags = {"path": args.path, "host": args.host, "port": args.port}
    if args.config:
        config = ServerConfig.from_file(args.config, **flags)
    else:
        config = ServerConfig.from_dict({}, overrides=flags)
    serve(config, allow_unauthenticated=args.allow_unauthenticated)  # binds its port before opening the path
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse what argparse cannot see, before any command opens or writes anything."""
    from retrieval.validation import validate_collection_name

    if getattr(args, "collection", None) is not None:
        validate_collection_name(args.collection)
    path = getattr(args, "path", None)
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise CliError(f"--path {path!r} is a file; give the folder of a store (a new folder for a new one)")
    port = getattr(args, "port", None)
    if port is not None and not 0 < port < 65536:
        raise CliError(f"--port must be 1-65535; got {port}")
    if args.command == "query":
        if not args.text and not args.image:
            raise CliError('give a text query or --image PATH: `retrieval query "a red circle"`')
        if args.text and args.image:
            raise CliError(f"give a text query or --image, not both (got {args.text!r} and --image {args.image!r})")
        if args.n < 1:
            raise CliError(f"-n must be a positive integer (the number of results); got {args.n}")
    if args.command == "doctor" and args.sample < 1:
        raise CliError(f"--sample must be a positive integer; got {args.sample} (or check every record with --full)")
    if args.command == "run" and args.config and not Path(args.config).is_file():
        raise CliError(
            f"--config {args.config!r} is not a file; give the path of a server.yaml "
            "(e.g. examples/gallery-server.yaml), or leave --config out"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="retrieval", description=__doc__.split("\n")[0])
    debug_help = "show the traceback of an error (also RETRIEVAL_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # Also accepted after the command; SUPPRESS keeps a subcommand from resetting the global flag.
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    default_path = os.environ.get("RETRIEVAL_PATH", "./.chroma")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = functools.partial(sub.add_parser, parents=[debug])

    from retrieval.jobs.commands import add_job_arguments, add_sync_arguments  # argparse only; the job loads on use
    from retrieval.jobs.ray_commands import add_ray_arguments  # argparse only; ray loads with --ray

    index = add_parser(
        "index", help="embed images (folder, glob, URI list, fsspec URL) into a collection; a rerun syncs"
    )
    index.add_argument("source", nargs="?", help="folder, glob, .txt/.csv/.parquet list of URIs, or fsspec URL")
    index.add_argument("--from-parquet", metavar="DIR", help="load embeddings written by `retrieval embed`")
    index.add_argument("--path", default=default_path, help="persist directory (default %(default)s)")
    index.add_argument("--host", default=None, help="index into a retrieval server instead of --path")
    index.add_argument("--port", type=int, default=8000)
    index.add_argument("--collection", default="images")
    add_job_arguments(index)
    add_sync_arguments(index)
    add_ray_arguments(index, shards_folder=True)
    index.set_defaults(func=cmd_index)

    embed = add_parser("embed", help="embed images into Parquet shards (id, uri, vector, model); resumable")
    embed.add_argument("source", help="folder, glob, .txt/.csv/.parquet list of URIs, or fsspec URL")
    embed.add_argument("--out", required=True, help="folder for the part-NNNNN.parquet shards")
    add_job_arguments(embed)
    add_ray_arguments(embed)
    embed.set_defaults(func=cmd_embed)

    query = add_parser("query", help="search a collection by text (or --image PATH)")
    query.add_argument("text", nargs="?", default="")
    query.add_argument("--image", help="query with this image file instead of text")
    query.add_argument("--path", default=default_path)
    query.add_argument("--collection", default="images")
    query.add_argument("-n", type=int, default=5, help="number of results")
    query.set_defaults(func=cmd_query)

    listing = add_parser("list", help="list collections")
    listing.add_argument("--path", default=default_path)
    listing.set_defaults(func=cmd_list)

    doctor = add_parser("doctor", help="check that each collection's index agrees with its records")
    doctor.add_argument("--path", default=default_path)
    doctor.add_argument("--repair", action="store_true", help="rebuild every index found faulty")
    doctor.add_argument("--sample", type=int, default=1000, help="records self-queried per collection (default %(default)s)")
    doctor.add_argument("--full", action="store_true", help="self-query every record and check every stored vector's checksum")
    doctor.set_defaults(func=cmd_doctor)

    run = add_parser("run", help="serve a persist directory over HTTP (Chroma's v2 REST API)")
    run.add_argument("--path", default=None, help=f"persist directory (default {default_path})")
    run.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=None, help="port (default 8000)")
    run.add_argument("--config", default=None, help="server.yaml: auth, limits, otel, allow_reset, ui, ... (flags win)")
    run.add_argument(
        "--allow-unauthenticated", action="store_true",
        help="serve an address beyond loopback without auth (refused otherwise)",
    )
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every error is one line on stderr, ``error: ...``; ``--debug`` shows the traceback.

    Exit status: 0 done, 1 a job failed (or found problems), 2 a usage error (a bad argument, name or path).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad argument (already printed as one line)
        return int(exit_.code or 0)
    debug = args.debug or os.environ.get("RETRIEVAL_DEBUG", "") not in ("", "0")
    try:
        check_arguments(args)
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return _status(exc)


def _status(exc: Exception) -> int:
    """2 for what the user can fix by changing the command; 1 for a job that failed."""
    if isinstance(exc, CliError):
        return exc.status
    from retrieval.errors import RetrievalError

    # Our bad-input errors subclass ValueError (a missing collection also LookupError), as do the
    # embedders' and loaders' (an unknown model name, an unreadable image).
    if isinstance(exc, (ValueError, LookupError)) and (
        isinstance(exc, RetrievalError) or type(exc).__module__.split(".")[0] in ("embedders", "loaders")
    ):
        return 2
    return 1


def _one_line(exc: Exception) -> str:
    message = " ".join(str(exc).split())
    if isinstance(exc, CliError) or type(exc).__module__.split(".")[0] in ("retrieval", "embedders", "loaders"):
        return message  # ours: written to be read
    # Anything else is unexpected: say what it was and how to see more.
    return f"{type(exc).__name__}: {message} (run again with --debug for the traceback)"


if __name__ == "__main__":
    raise SystemExit(main())
