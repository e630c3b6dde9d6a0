"""The hnswlib index of one collection, and its checkpoint files.

Index files are caches of SQLite, never the truth. A checkpoint is written as: temp file, fsync,
``os.replace``, fsync of the directory; then a JSON manifest the same way. The manifest records
which oplog sequence the index reflects and a CRC32 of the index file, so a torn, truncated or
bit-flipped file is detected before hnswlib reads it (hnswlib loads some damaged files silently).
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import hnswlib
import numpy as np

from retrieval.config import HnswConfig

logger = logging.getLogger("retrieval")

INDEX_FILENAME = "index.hnsw"
MANIFEST_FILENAME = "manifest.json"
MANIFEST_FORMAT = 1
_INITIAL_CAPACITY = 1024
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


class CorruptIndexError(Exception):
    """A checkpoint that cannot be trusted; the caller rebuilds from SQLite."""


class HnswIndex:
    """hnswlib with chromadb's distance conventions and resize policy."""

    def __init__(self, dim: int, config: HnswConfig, capacity: int = _INITIAL_CAPACITY):
        self.dim = dim
        self.config = config
        self.index = hnswlib.Index(space=config.space, dim=dim)
        self.index.init_index(
            max_elements=max(capacity, _INITIAL_CAPACITY),
            ef_construction=config.ef_construction,
            M=config.max_neighbors,
        )
        self.index.set_ef(config.ef_search)
        self._ef = config.ef_search
        self.deleted: set[int] = set()

    # ------------------------------------------------------------------ writes

    def upsert(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Add new labels and replace the vectors of existing ones.

        Deleted slots are not reused (hnswlib's slot reuse forgets which label it evicted);
        the engine compacts the index instead when too many elements are deleted.
        """
        labels = np.asarray(labels, dtype=np.int64)
        revived = [int(label) for label in labels if int(label) in self.deleted]
        for label in revived:  # a label comes back only through replay; unmark so it is searchable again
            self.index.unmark_deleted(label)
            self.deleted.discard(label)
        needed = self.index.element_count + len(labels)
        if needed > self.index.max_elements:
            grown = max(needed, int(self.index.max_elements * self.config.resize_factor) + 1)
            self.index.resize_index(grown)
        self.index.add_items(
            np.asarray(vectors, dtype=np.float32),
            labels,
            num_threads=self.config.num_threads,
        )

    def remove(self, labels) -> None:
        for label in labels:
            label = int(label)
            if label in self.deleted:
                continue
            try:
                self.index.mark_deleted(label)
            except RuntimeError:  # not in the index: nothing to remove
                continue
            self.deleted.add(label)

    @property
    def element_count(self) -> int:
        return self.index.element_count

    @property
    def live_count(self) -> int:
        return self.index.element_count - len(self.deleted)

    # ----------------------------------------------------------------- queries

    def search(self, queries: np.ndarray, k: int, filter_fn=None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k; raises RuntimeError when hnswlib cannot find k results."""
        ef = max(self.config.ef_search, k)
        if ef != self._ef:
            self.index.set_ef(ef)
            self._ef = ef
        # hnswlib starts threads per call: worth it for batches, pure overhead for one query.
        threads = 1 if filter_fn is not None or len(queries) < 4 * self.config.num_threads else self.config.num_threads
        labels, dist = self.index.knn_query(queries, k=k, num_threads=threads, filter=filter_fn)
        return labels.astype(np.int64), dist

    def set_config(self, config: HnswConfig) -> None:
        self.config = config
        self.index.set_ef(config.ef_search)
        self._ef = config.ef_search
        self.index.set_num_threads(config.num_threads)

    # ------------------------------------------------------------- checkpoints

    def save(self, directory: Path, applied_seq: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        index_path = directory / INDEX_FILENAME
        tmp = directory / (INDEX_FILENAME + ".tmp")
        self.index.save_index(str(tmp))
        crc, size = _crc32(tmp)
        _fsync_file(tmp)
        os.replace(tmp, index_path)
        _fsync_dir(directory)
        manifest = Manifest(
            format=MANIFEST_FORMAT,
            applied_seq=applied_seq,
            dim=self.dim,
            space=self.config.space,
            max_neighbors=self.config.max_neighbors,
            ef_construction=self.config.ef_construction,
            element_count=self.index.element_count,
            deleted_labels=sorted(self.deleted),
            crc32=crc,
            index_bytes=size,
        )
        _write_atomic(directory / MANIFEST_FILENAME, json.dumps(asdict(manifest), sort_keys=True).encode())

    @classmethod
    def load(cls, directory: Path, dim: int, config: HnswConfig) -> tuple[HnswIndex, Manifest]:
        """Load a checkpoint, or raise CorruptIndexError saying why it cannot be trusted."""
        manifest = read_manifest(directory)
        expected = (dim, config.space, config.max_neighbors, config.ef_construction)
        found = (manifest.dim, manifest.space, manifest.max_neighbors, manifest.ef_construction)
        if found != expected:
            raise CorruptIndexError(f"index parameters {found} disagree with the collection's {expected}")
        index_path = directory / INDEX_FILENAME
        try:
            crc, size = _crc32(index_path)
        except FileNotFoundError:
            raise CorruptIndexError("index file is missing") from None
        if (crc, size) != (manifest.crc32, manifest.index_bytes):
            raise CorruptIndexError(f"index file checksum or size mismatch ({size} bytes, manifest says {manifest.index_bytes})")
        self = cls.__new__(cls)
        self.dim = dim
        self.config = config
        self.index = hnswlib.Index(space=config.space, dim=dim)
        try:
            self.index.load_index(str(index_path), max_elements=manifest.element_count)
        except Exception as e:  # hnswlib raises RuntimeError on malformed files
            raise CorruptIndexError(f"hnswlib could not load the index: {e}") from e
        if self.index.element_count != manifest.element_count or self.index.dim != dim:
            raise CorruptIndexError("index contents disagree with its manifest")
        self.index.set_ef(config.ef_search)
        self._ef = config.ef_search
        self.index.set_num_threads(config.num_threads)
        # hnswlib keeps deletion marks in the file but cannot list them; the manifest does.
        self.deleted = {int(label) for label in manifest.deleted_labels}
        return self, manifest

    def labels(self) -> np.ndarray:
        ids = np.asarray(self.index.get_ids_list(), dtype=np.int64)
        if not self.deleted:
            return ids
        return ids[~np.isin(ids, np.fromiter(self.deleted, dtype=np.int64))]


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


def remove_checkpoint(directory: Path) -> None:
    for name in (MANIFEST_FILENAME, INDEX_FILENAME, INDEX_FILENAME + ".tmp", MANIFEST_FILENAME + ".tmp"):
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass


def _crc32(path: Path) -> tuple[int, int]:
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(_CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return crc, size


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
