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

A folder or glob listing also gives each item its :class:`~retrieval.jobs.fingerprint.Fingerprint`
(fsspec's detailed listing: one stat per file, no read); :func:`stat_items` stats the items
of a list. The other columns of a CSV/Parquet list become the item's ``columns``, stored as
record metadata (CSV cells that read as numbers become numbers; empty cells are left out).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from retrieval.errors import InvalidArgumentError
from retrieval.jobs.fingerprint import ID_KEY, RESERVED_PREFIX, Fingerprint

__all__ = ["IMAGE_SUFFIXES", "LIST_SUFFIXES", "NoImagesError", "SourceItem", "list_source", "stat_items"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
LIST_SUFFIXES = (".txt", ".csv", ".parquet")
#: Column names a CSV/Parquet list may use for the URI, in order of preference.
URI_COLUMNS = ("uri", "url", "path", "filepath", "image_path", "image")


class NoImagesError(InvalidArgumentError):
    """The source exists but holds no images (a watch may start on, or empty, such a folder)."""


@dataclass(frozen=True)
class SourceItem:
    """One image to process: its record id, the URI the loader reads, what the listing knows of it.

    ``fingerprint`` is ``None`` until known (a list's items before :func:`stat_items`, or a
    file that could not be stat'ed); ``columns`` are a list's extra columns.
    """

    id: str
    uri: str
    fingerprint: Fingerprint | None = None
    columns: Mapping[str, Any] = field(default_factory=dict)


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
    fs.invalidate_cache()  # a watch lists again and again: never answer from a stale listing
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    local = protocol in ("file", "local")

    def to_uri(p: str) -> str:
        return os.path.abspath(p) if local else fs.unstrip_protocol(p)

    def listed(found: Mapping[str, Mapping[str, Any]], root: str) -> list[SourceItem]:
        files = {p: info for p, info in found.items()
                 if info.get("type") != "directory" and PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES}
        return [SourceItem(_relative(p, root), to_uri(p), Fingerprint.from_info(files[p])) for p in sorted(files)]

    if local and os.path.isdir(path):
        items = _walk_local(path)
        kind = "folder"
    elif fs.isdir(path):
        items = listed(fs.find(path, detail=True), path.rstrip("/"))
        kind = "folder"
    elif any(ch in path for ch in "*?[") and fs.isdir(_glob_root(path) or "/"):
        # (A glob under a folder that is not there is an error, not "no images": a watch must not
        # read an unmounted drive as an emptied one.)
        items = listed(fs.glob(path, detail=True), _glob_root(path))
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
        raise NoImagesError(
            f"no images under {kind} {source!r} (image files end in {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return unique


def _walk_local(root: str) -> list[SourceItem]:
    """A local folder's images, each with the fingerprint of the one stat ``os.scandir`` makes.

    The same listing as fsspec's ``find(detail=True)`` (symlinked folders followed once), at a
    fraction of its per-file cost: a sync of an unchanged library is mostly this loop.
    """
    root = os.path.abspath(root)
    items: list[SourceItem] = []
    seen: set[str] = set()
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):  # removed while we list (a watch)
            continue
        for entry in entries:
            rel = prefix + entry.name
            try:
                if entry.is_dir():
                    stack.append((entry.path, rel + "/"))
                    continue
                if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
                    continue
                st = entry.stat()
                fingerprint: Fingerprint | None = Fingerprint(st.st_size, st.st_mtime)
            except OSError:  # a broken link, a file gone since scandir: loading it will say why
                fingerprint = None
            items.append(SourceItem(rel, entry.path, fingerprint))
    items.sort(key=lambda item: item.uri)
    return items


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
    uris = [str(u) if u is not None else "" for u in table[uri_col]]
    ids = [str(i) for i in table["id"]] if "id" in columns else uris
    extra = [c for c in columns if c not in ("id", uri_col)]
    for name in extra:
        if name == ID_KEY or name.startswith(RESERVED_PREFIX):
            raise InvalidArgumentError(
                f"list {path!r} has a column {name!r}; names '{ID_KEY}' and '{RESERVED_PREFIX}*' are reserved for "
                "the file's fingerprint (rename the column)"
            )
    typed = lower.endswith(".parquet")
    rows = [{c: _metadata_value(table[c][n], c, path, typed) for c in extra} for n in range(len(uris))]
    return [SourceItem(i, _list_uri(u, path, local), None, {k: v for k, v in row.items() if v is not None})
            for i, u, row in zip(ids, uris, rows) if u]


_INTEGER = re.compile(r"^-?(0|[1-9]\d{0,17})$")
_DECIMAL = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?$")


def _metadata_value(value: Any, column: str, path: str, typed: bool) -> Any:
    """A list cell as a metadata value: CSV text that reads as a number becomes one."""
    if value is None or value == "":
        return None
    if not typed:
        if _INTEGER.match(value):  # "02134" (a zip code) stays text: it would not read back the same
            return int(value)
        return float(value) if _DECIMAL.match(value) else value
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise InvalidArgumentError(
        f"list {path!r}: column {column!r} holds {type(value).__name__} values ({value!r}); metadata "
        "values are strings, numbers or booleans (cast the column, or drop it from the list)"
    )


def stat_items(items: Sequence[SourceItem], workers: int = 16) -> list[SourceItem]:
    """Give every item without a fingerprint one from ``fs.info`` (one stat or HEAD each, in parallel).

    An item whose file cannot be stat'ed keeps ``None``; loading it will report why.
    """
    from concurrent.futures import ThreadPoolExecutor

    import fsspec

    def stat(item: SourceItem) -> SourceItem:
        if item.fingerprint is not None:
            return item
        try:
            fs, path = fsspec.core.url_to_fs(item.uri)
            return replace(item, fingerprint=Fingerprint.from_info(fs.info(path)))
        except Exception:  # noqa: BLE001 - missing, unreachable, no such protocol: the load says which
            return item

    if all(item.fingerprint is not None for item in items):
        return list(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="stat") as pool:
        return list(pool.map(stat, items))


def _list_uri(uri: str, list_path: str, local: bool) -> str:
    """A relative path in a local list file is relative to the list's folder."""
    if "://" in uri or not local or os.path.isabs(uri):
        return uri
    return str(Path(list_path).parent.joinpath(uri).resolve())
