"""A graph checkpoint's files on disk: the manifest, and how each file is written and checked.

Index files are caches of SQLite, never the truth. A checkpoint is written as: temp file, fsync,
``os.replace``, fsync of the directory; then a JSON manifest the same way (``write_atomic``). The
manifest records which oplog sequence the index reflects and a CRC32 of the index file, so a torn,
truncated or bit-flipped file is detected before hnswlib reads it (hnswlib loads some damaged files
silently). hnsw.py writes and reads the checkpoint through these functions; the durability tests kill
the process inside them (tests/durability_model.py).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

INDEX_FILENAME = "index.hnsw"
MANIFEST_FILENAME = "manifest.json"
MANIFEST_FORMAT = 1
# hnswlib's own (unstripped) file, written or read next to the checkpoint and removed right after.
FULL_INDEX_TMP = INDEX_FILENAME + ".full.tmp"
_CRC_CHUNK = 1 << 24


@dataclass(frozen=True)
class Manifest:
    format: int
    applied_seq: int
    dim: int
    space: str
    max_neighbors: int
    ef_construction: int
    element_count: int
    deleted_labels: list
    crc32: int
    index_bytes: int
    stragglers: list = field(default_factory=list)  # labels the graph does not find (hnsw.py, stragglers)
    changed_since_sweep: int = 0
    swept_size: int = 0
    max_label: int | None = None  # the largest label the graph was given (None: written before it was kept)
    vectors_in_file: bool = False  # the index file is stripped of the vectors the vector file holds (graph_file.py)


class CorruptIndexError(Exception):
    """A checkpoint that cannot be trusted; the caller rebuilds from SQLite."""


def read_manifest(directory: Path) -> Manifest:
    try:
        raw = json.loads((directory / MANIFEST_FILENAME).read_bytes())
        manifest = Manifest(**raw)
    except FileNotFoundError:
        raise CorruptIndexError("manifest is missing") from None
    except (ValueError, TypeError) as e:
        raise CorruptIndexError(f"manifest is unreadable: {e}") from e
    if manifest.format != MANIFEST_FORMAT:
        raise CorruptIndexError(f"manifest format {manifest.format} is not {MANIFEST_FORMAT}")
    return manifest


def write_manifest(directory: Path, manifest: Manifest) -> None:
    write_atomic(directory / MANIFEST_FILENAME, json.dumps(asdict(manifest), sort_keys=True).encode())


def remove_checkpoint(directory: Path) -> None:
    for name in (MANIFEST_FILENAME, INDEX_FILENAME, INDEX_FILENAME + ".tmp", MANIFEST_FILENAME + ".tmp", FULL_INDEX_TMP):
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass


def checksum(path: Path) -> tuple[int, int]:
    """The file's CRC32 and size in bytes."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return crc, size


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    _fsync(path)


def fsync_dir(directory: Path) -> None:
    """A name of its own: the durability tests count the directory fsyncs (after each rename)."""
    _fsync(directory)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "FULL_INDEX_TMP", "INDEX_FILENAME", "MANIFEST_FILENAME", "MANIFEST_FORMAT", "CorruptIndexError", "Manifest",
    "checksum", "fsync_dir", "fsync_file", "read_manifest", "remove_checkpoint", "write_atomic", "write_manifest",
]
