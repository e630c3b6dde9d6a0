"""The ``retrieval`` command line: index a folder of images, search it, inspect a database.

    retrieval index assets/gallery --path .chroma --collection gallery
    retrieval query "a red circle" --path .chroma --collection gallery -n 5
    retrieval list --path .chroma
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
ADD_CHUNK = 256


def _client(path: str):
    import retrieval

    return retrieval.PersistentClient(path=path)


def cmd_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from embedders import build_embedding_function
    from loaders import ImageLoader

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"error: {str(folder)!r} is not a folder of images", file=sys.stderr)
        return 2
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        print(f"error: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(folder)!r}", file=sys.stderr)
        return 2
    client = _client(args.path)
    try:
        ef = build_embedding_function("open_clip", {"model_name": args.model}, device=args.device)
        collection = client.get_or_create_collection(
            args.collection, embedding_function=ef, data_loader=ImageLoader(), configuration={"hnsw": {"space": "cosine"}}
        )
        uris = [str(p.resolve()) for p in files]
        ids = [str(p.relative_to(folder)) for p in files]
        with tqdm(total=len(uris), unit="img", disable=args.quiet, desc="indexing") as bar:
            for start in range(0, len(uris), ADD_CHUNK):
                chunk = slice(start, start + ADD_CHUNK)
                collection.upsert(ids=ids[chunk], uris=uris[chunk], metadatas=[{"file": i} for i in ids[chunk]])
                bar.update(len(ids[chunk]))
        print(f"indexed {len(uris)} images into collection {args.collection!r} at {args.path} ({collection.count()} total)")
    finally:
        client.close()
    return 0


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


def cmd_run(args: argparse.Namespace) -> int:
    print("error: the HTTP server is not available in this version; use the embedded client", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrieval", description=__doc__.split("\n")[0])
    default_path = os.environ.get("RETRIEVAL_PATH", "./.chroma")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="embed every image under a folder (by URI) into a collection")
    index.add_argument("folder")
    index.add_argument("--path", default=default_path, help="persist directory (default %(default)s)")
    index.add_argument("--collection", default="images")
    index.add_argument("--model", default="tiny-shapes", help="open_clip model name or local path")
    index.add_argument("--device", default="auto", help="auto, cpu or cuda")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=cmd_index)

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

    run = sub.add_parser("run", help="serve a persist directory over HTTP (not available yet)")
    run.add_argument("--path", default=default_path)
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
