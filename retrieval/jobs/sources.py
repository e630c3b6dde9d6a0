"""What a batch job reads: a folder, a glob, a list of URIs (text, CSV, Parquet), or an fsspec URL.

Every source becomes a list of :class:`SourceItem` ``(id, uri)``. Ids are stable, so a rerun
recognises what it already stored:

* a folder (local or ``proto://`` URL, searched recursively for image files): the path
  relative to the folder, with ``/`` separators (``"2019/beach/img_001.jpg"``);
* a glob (``"photos/**/*.jpg"``, ``"s3://bucket/a/*.png"``): the path relative to the glob's
  fixed leading part (``photos/``);
* a list file: an ``id`` column when the CSV/Parquet has one, else the URI itself
  (a ``.txt`` list holds one URI per line; blank lines and ``#`` comments are skipped).

A local path becomes an absolute path URI; a remote one keeps its protocol.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from retrieval.errors import InvalidArgumentError

__all__ = ["IMAGE_SUFFIXES", "LIST_SUFFIXES", "SourceItem", "list_source"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
LIST_SUFFIXES = (".txt", ".csv", ".parquet")
#: Column names a CSV/Parquet list may use for the URI, in order of preference.
URI_COLUMNS = ("uri", "url", "path", "filepath", "image_path", "image")


@dataclass(frozen=True)
class SourceItem:
    """One image to process: its record id and the URI the loader reads."""

    id: str
    uri: str


def list_source(source: str) -> list[SourceItem]:
    """Expand a batch job's SOURCE argument into ``(id, uri)`` items, sorted by id for folders.

    Args:
        source: A folder, a glob, a ``.txt``/``.csv``/``.parquet`` list of URIs, or an fsspec
            URL of any of these.

    Returns:
        The items; duplicates (same id) keep their first occurrence.

    Raises:
        InvalidArgumentError: The source does not exist, holds no images, or a list has no
            URI column; the message names it and what is accepted.

    Example:
        >>> from embedders.assets import gallery_dir
        >>> list_source(str(gallery_dir()))[0].id
        'black_circle.png'
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    local = protocol in ("file", "local")

    def to_uri(p: str) -> str:
        return os.path.abspath(p) if local else fs.unstrip_protocol(p)

    if fs.isdir(path):
        files = [p for p in fs.find(path) if PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES]
        root = path.rstrip("/")
        items = [SourceItem(_relative(p, root), to_uri(p)) for p in sorted(files)]
        kind = "folder"
    elif any(ch in path for ch in "*?["):
        files = [p for p in fs.glob(path) if fs.isfile(p)]
        root = _glob_root(path)
        items = [SourceItem(_relative(p, root), to_uri(p)) for p in sorted(files)]
        kind = "glob"
    elif fs.isfile(path) and path.lower().endswith(LIST_SUFFIXES):
        items = _read_list(fs, path, local)
        kind = "list"
    else:
        raise InvalidArgumentError(
            f"{source!r} is not a folder of images, a glob, or an existing .txt/.csv/.parquet list of "
            "URIs (give a folder such as photos/, a glob such as 'photos/**/*.jpg', or a list file)"
        )
    unique = list({item.id: item for item in reversed(items)}.values())[::-1]
    if not unique:
        raise InvalidArgumentError(
            f"no images under {kind} {source!r} (image files end in {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return unique


def _relative(path: str, root: str) -> str:
    rel = path[len(root):].lstrip("/") if path.startswith(root) else path
    return rel.replace(os.sep, "/")


def _glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed)


def _read_list(fs, path: str, local: bool) -> list[SourceItem]:  # noqa: ANN001 - an fsspec filesystem
    lower = path.lower()
    if lower.endswith(".txt"):
        with fs.open(path, "rt", encoding="utf-8") as f:
            uris = [line.strip() for line in f]
        uris = [u for u in uris if u and not u.startswith("#")]
        return [SourceItem(u, _list_uri(u, path, local)) for u in uris]
    if lower.endswith(".csv"):
        import csv

        with fs.open(path, "rt", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        columns = list(rows[0].keys()) if rows else []
        table = {c: [r[c] for r in rows] for c in columns}
    else:
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            table = pq.read_table(f).to_pydict()
        columns = list(table)
    uri_col = next((c for c in URI_COLUMNS if c in columns), None)
    if uri_col is None:
        raise InvalidArgumentError(
            f"list {path!r} has columns {columns}; it needs a URI column named one of {list(URI_COLUMNS)} "
            "(and optionally an 'id' column)"
        )
    uris = [str(u) for u in table[uri_col]]
    ids = [str(i) for i in table["id"]] if "id" in columns else uris
    return [SourceItem(i, _list_uri(u, path, local)) for i, u in zip(ids, uris) if u]


def _list_uri(uri: str, list_path: str, local: bool) -> str:
    """A relative path in a local list file is relative to the list's folder."""
    if "://" in uri or not local or os.path.isabs(uri):
        return uri
    return str(Path(list_path).parent.joinpath(uri).resolve())
