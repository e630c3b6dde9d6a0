"""The ``retrieval`` command line: index a folder of images, search it, inspect a database.

    retrieval index assets/gallery --path .chroma --collection gallery
    retrieval query "a red circle" --path .chroma --collection gallery -n 5
    retrieval list --path .chroma
    retrieval doctor --path .chroma [--repair]
"""

from __future__ import annotations

import argparse
import os
import sys



def _client(path: str):
    import retrieval

    return retrieval.PersistentClient(path=path)


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
    client = _client(args.path)
    try:
        collection = client.get_collection(args.collection)
        if args.image:
            result = collection.query(query_uris=[args.image], n_results=args.n, include=["uris", "distances"])
        else:
            result = collection.query(query_texts=[args.text], n_results=args.n, include=["uris", "distances"])
        for rank, (id_, distance) in enumerate(zip(result["ids"][0], result["distances"][0]), start=1):
            print(f"{rank:>3}  {distance:.4f}  {id_}")
    finally:
        client.close()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    client = _client(args.path)
    try:
        for collection in client.list_collections():
            ef = (collection.configuration.get("embedding_function") or {}).get("name")
            print(f"{collection.name}\t{collection.count()} records\tembedding function: {ef}")
    finally:
        client.close()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check every collection's index against its records; exit 1 if a problem is left unrepaired."""
    from pathlib import Path

    from retrieval.store.db import DB_FILENAME

    if not (Path(args.path) / DB_FILENAME).is_file():
        print(f"error: {args.path!r} holds no retrieval database ({DB_FILENAME}); give the --path of a persistent client", file=sys.stderr)
        return 2
    client = _client(args.path)
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
    from retrieval.errors import RetrievalError
    from retrieval.server.config import ServerConfig
    from retrieval.server.main import serve

    flags = {"path": args.path, "host": args.host, "port": args.port}
    try:
        if args.config:
            config = ServerConfig.from_file(args.config, **flags)
        else:
            config = ServerConfig.from_dict({}, overrides=flags)
        serve(config, allow_unauthenticated=args.allow_unauthenticated)
    except RetrievalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrieval", description=__doc__.split("\n")[0])
    default_path = os.environ.get("RETRIEVAL_PATH", "./.chroma")
    sub = parser.add_subparsers(dest="command", required=True)

    from retrieval.jobs.commands import add_job_arguments  # argparse only; the job loads on use
    from retrieval.jobs.ray_commands import add_ray_arguments  # argparse only; ray loads with --ray

    index = sub.add_parser(
        "index", help="embed images (folder, glob, URI list, fsspec URL) into a collection; resumable"
    )
    index.add_argument("source", nargs="?", help="folder, glob, .txt/.csv/.parquet list of URIs, or fsspec URL")
    index.add_argument("--from-parquet", metavar="DIR", help="load embeddings written by `retrieval embed`")
    index.add_argument("--path", default=default_path, help="persist directory (default %(default)s)")
    index.add_argument("--host", default=None, help="index into a retrieval server instead of --path")
    index.add_argument("--port", type=int, default=8000)
    index.add_argument("--collection", default="images")
    add_job_arguments(index)
    add_ray_arguments(index, shards_folder=True)
    index.set_defaults(func=cmd_index)

    embed = sub.add_parser("embed", help="embed images into Parquet shards (id, uri, vector, model); resumable")
    embed.add_argument("source", help="folder, glob, .txt/.csv/.parquet list of URIs, or fsspec URL")
    embed.add_argument("--out", required=True, help="folder for the part-NNNNN.parquet shards")
    add_job_arguments(embed)
    add_ray_arguments(embed)
    embed.set_defaults(func=cmd_embed)

    query = sub.add_parser("query", help="search a collection by text (or --image PATH)")
    query.add_argument("text", nargs="?", default="")
    query.add_argument("--image", help="query with this image file instead of text")
    query.add_argument("--path", default=default_path)
    query.add_argument("--collection", default="images")
    query.add_argument("-n", type=int, default=5, help="number of results")
    query.set_defaults(func=cmd_query)

    listing = sub.add_parser("list", help="list collections")
    listing.add_argument("--path", default=default_path)
    listing.set_defaults(func=cmd_list)

    doctor = sub.add_parser("doctor", help="check that each collection's index agrees with its records")
    doctor.add_argument("--path", default=default_path)
    doctor.add_argument("--repair", action="store_true", help="rebuild every index found faulty")
    doctor.add_argument("--sample", type=int, default=1000, help="records self-queried per collection (default %(default)s)")
    doctor.add_argument("--full", action="store_true", help="self-query every record")
    doctor.set_defaults(func=cmd_doctor)

    run = sub.add_parser("run", help="serve a persist directory over HTTP (Chroma's v2 REST API)")
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
    args = build_parser().parse_args(argv)
    if args.command == "query" and not args.text and not args.image:
        print("error: give a text query or --image PATH", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
