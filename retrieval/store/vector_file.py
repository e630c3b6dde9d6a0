"""A collection's vector file: append-only, checksummed slots of full-precision vectors, memory-mapped.

Layout: a 64-byte header (magic, dimension, slot size), then fixed-size slots, each
``label (int64) | crc32 (uint32) | norm (float32) | vector (float32 x dim)``. A slot is written once
and never changed; an updated record gets a new slot, a deleted one leaves its slot behind (the
graph checkpoint may still route through it). The CRC covers the label and the vector bytes; the
norm lets a cosine graph's unit copy of a vector give back the vector (see ``verify``).

The file holds no commit point of its own: SQLite does (``collections.vector_slots`` and each
record's ``slot``, committed only after the slots they name are fsynced). So on open the file is
cut back to the committed count: slots past it were appended by a move whose transaction never
committed (a crash, a torn write) and nothing refers to them. A file shorter than the committed
count has lost acknowledged vectors: that is damage, reported, never silently ignored.
"""

from __future__ import annotations

import mmap
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from retrieval.store.vectors import top_k

MAGIC = b"RVECF001"
HEADER_BYTES = 64
# Reads of at least this many slots spread over at most twice as many are read as one run.
_DENSE_MIN = 256
# A scan scores the whole span of its slots when they fill at least 1/_SCAN_SPAN of it: scoring a
# mapped row costs less than a third of gathering it.
_SCAN_SPAN = 3
# Slots a whole-file scan scores at a time on each scan thread (~65 MB at 512-d): bounds its
# scratch memory and RSS.
_SCAN_STRETCH = 1 << 15
_FAULT_AROUND = 1 << 16  # Linux's fault_around_bytes default
# A scan of many slots is memory-bound and numpy lets go of the GIL while it scores: split it over
# this many threads. Measured on the 2-core machine, 1M x 512 (2 GB): one thread 0.22 s, two 0.12 s.
_SCAN_THREADS = max(1, min(4, os.cpu_count() or 1))
# Fewer slots than this per thread are not worth handing to another thread (~16 MB at 512-d).
_SCAN_PART_MIN = 1 << 13
_scan_pool: ThreadPoolExecutor | None = None
_scan_pool_lock = threading.Lock()


class VectorFileError(Exception):
    """The vector file is missing, foreign or shorter than the database says: acknowledged vectors are lost."""


def slot_dtype(dim: int) -> np.dtype:
    return np.dtype([("label", "<i8"), ("crc", "<u4"), ("norm", "<f4"), ("vector", "<f4", (dim,))])


def checksums(labels: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """CRC32 of each slot's label and vector bytes."""
    labels = np.ascontiguousarray(labels, dtype="<i8")
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    return np.fromiter(
        (zlib.crc32(vectors[i].data, zlib.crc32(labels[i : i + 1].data)) for i in range(len(labels))),
        dtype=np.uint32,
        count=len(labels),
    )


class VectorFile:
    """The slots of one collection. Appends are serialised by the caller (the database's write lock);
    reads may run from any thread, since a slot once committed never changes."""

    def __init__(self, path: Path, dim: int, committed: int):
        self.path = path
        self.dim = dim
        self.dtype = slot_dtype(dim)
        self._lock = threading.Lock()  # guards the mapping while an append grows it
        self._mmap: mmap.mmap | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        exists = path.exists()
        if not exists and committed:
            raise VectorFileError(f"vector file {str(path)!r} is missing but the database has {committed} vectors in it")
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not exists or os.fstat(self._fd).st_size == 0:
                self._write_header()
            else:
                self._check_header()
            on_disk = (os.fstat(self._fd).st_size - HEADER_BYTES) // self.dtype.itemsize
            if on_disk < committed:
                raise VectorFileError(
                    f"vector file {str(path)!r} holds {on_disk} vectors but the database committed {committed}"
                )
            # Slots past the committed count (and a torn partial slot) were never acknowledged.
            os.ftruncate(self._fd, HEADER_BYTES + committed * self.dtype.itemsize)
        except BaseException:
            os.close(self._fd)
            raise
        self.count = committed
        self._slots = self._map()

    # ------------------------------------------------------------------ writing

    def append(self, labels: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Write the vectors into new slots and fsync them; returns their slot numbers.

        The caller commits the slots (and the new count) to SQLite afterwards, or calls
        ``truncate(old_count)`` if that transaction fails."""
        vectors = np.asarray(vectors, dtype="<f4")
        rows = np.empty(len(labels), dtype=self.dtype)
        rows["label"] = labels
        rows["vector"] = vectors
        rows["norm"] = np.linalg.norm(vectors, axis=1)
        rows["crc"] = checksums(rows["label"], rows["vector"])
        first = self.count
        os.pwrite(self._fd, rows.tobytes(), HEADER_BYTES + first * self.dtype.itemsize)
        os.fdatasync(self._fd)
        with self._lock:
            self.count = first + len(rows)
            self._slots = self._map()
        return np.arange(first, first + len(rows), dtype=np.int64)

    def truncate(self, count: int) -> None:
        """Forget the slots from ``count`` on (an append whose commit failed)."""
        with self._lock:
            os.ftruncate(self._fd, HEADER_BYTES + count * self.dtype.itemsize)
            self.count = count
            self._slots = self._map()

    # ------------------------------------------------------------------ reading

    def read(self, slots: np.ndarray) -> np.ndarray:
        """The vectors in ``slots`` (a copy, float32, in the order given).

        A dense run of slots (a graph load, a bulk-loaded range) is read sequentially with ``pread``:
        no page faults one page at a time, and nothing left mapped in the process. Scattered slots
        are gathered from the mapping."""
        slots = np.asarray(slots, dtype=np.int64)
        if not len(slots):
            return np.zeros((0, self.dim), dtype=np.float32)
        low, high = int(slots.min()), int(slots.max()) + 1
        if len(slots) >= _DENSE_MIN and high - low <= 2 * len(slots):
            size = (high - low) * self.dtype.itemsize
            span = np.frombuffer(os.pread(self._fd, size, HEADER_BYTES + low * self.dtype.itemsize), dtype=self.dtype)
            if len(span) != high - low:
                raise VectorFileError(f"vector file {str(self.path)!r} ends inside slot {low + len(span)}")
            return np.asarray(span["vector"][slots - low], dtype=np.float32)  # fancy indexing copied once already
        with self._lock:
            mapped, mapping = self._slots, self._mmap
        try:
            return np.asarray(mapped["vector"][slots], dtype=np.float32)
        finally:
            self._release(mapping)

    def scan(self, slots: np.ndarray, score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """``score(vectors, norms)`` of the vectors in ``slots``, in the order given, read in place.

        Dense slots (at most ``_SCAN_SPAN`` times as many slots as asked for) are scored as one view
        of the mapping, and the asked-for columns are taken from the result: no copy of any vector.
        Scattered slots are gathered first. Either way the touched pages are released again after,
        so a run of filtered queries does not grow the process by the file."""
        slots = np.asarray(slots, dtype=np.int64)
        with self._lock:
            mapped, mapping = self._slots, self._mmap
        if not len(slots):
            return score(mapped["vector"][:0], mapped["norm"][:0])
        low, high = int(slots.min()), int(slots.max()) + 1
        try:
            if high - low <= _SCAN_SPAN * len(slots):

                def score_part(part: tuple[int, int]) -> np.ndarray:
                    span = mapped[part[0] : part[1]]
                    return score(span["vector"], span["norm"])

                scores = np.concatenate(_in_parallel(score_part, _parts(low, high)), axis=-1)
                return scores[..., slots - low]
            rows = mapped[slots]
            return score(rows["vector"], rows["norm"])
        finally:
            self._release(mapping)

    def nearest_slots(
        self, score: Callable[[np.ndarray, np.ndarray], np.ndarray], want: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``want`` best slots per query of the whole file by ``score(vectors, norms)`` (smaller
        is better), scored in place a stretch at a time on the scan threads: ``(slots, labels,
        scores)``, each of shape (queries, want), ascending. Includes slots no record names any
        more: the caller checks."""
        with self._lock:
            mapped, mapping = self._slots, self._mmap
        if not len(mapped):
            raise ValueError("nearest_slots of an empty vector file")

        def best_in(part: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            best_slots, best = None, None
            for start in range(part[0], part[1], _SCAN_STRETCH):
                stretch = mapped[start : min(start + _SCAN_STRETCH, part[1])]
                picked, values = top_k(score(stretch["vector"], stretch["norm"]), want)
                best_slots, best = _merge_best(best_slots, best, picked + start, values, want)
                # A stretch at a time (the whole mapping each time costs 2x the scan): the scan never
                # holds the file in the process.
                self._release(mapping, start, start + len(stretch))
            return best_slots, best

        try:
            best_slots, best = None, None
            for slots, values in _in_parallel(best_in, _parts(0, len(mapped))):
                best_slots, best = _merge_best(best_slots, best, slots, values, want)
            return best_slots, np.asarray(mapped["label"][best_slots]), best
        finally:
            self._release(mapping)

    def entries(self, slots: np.ndarray) -> np.ndarray:
        """Whole slots (label, crc, norm, vector) as stored, for checks and repairs."""
        with self._lock:
            mapped = self._slots
        return np.array(mapped[np.asarray(slots, dtype=np.int64)])

    def damaged(self, slots: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Which of ``slots`` fail their checksum or name another label than expected."""
        rows = self.entries(slots)
        return (rows["crc"] != checksums(rows["label"], rows["vector"])) | (rows["label"] != np.asarray(labels))

    @property
    def nbytes(self) -> int:
        return HEADER_BYTES + self.count * self.dtype.itemsize

    def release_pages(self) -> None:
        """Drop the mapping's pages from this process (they stay in the OS cache): a full scan
        such as a graph load would otherwise count the whole file in the process's RSS."""
        with self._lock:
            self._release(self._mmap)

    def _release(self, mapping: mmap.mmap | None, low: int | None = None, high: int | None = None) -> None:
        """Drop ``mapping``'s pages from this process (not from the OS cache): all of them, or those of
        slots ``[low, high)`` and the kernel's fault-around reach beyond them (it maps pages around
        each one faulted in)."""
        if mapping is None:
            return
        if low is None:
            mapping.madvise(mmap.MADV_DONTNEED)
            return
        start = max(0, (HEADER_BYTES + low * self.dtype.itemsize - _FAULT_AROUND) // mmap.PAGESIZE * mmap.PAGESIZE)
        end = min(len(mapping), HEADER_BYTES + high * self.dtype.itemsize + _FAULT_AROUND)
        mapping.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        with self._lock:
            self._slots = np.zeros(0, dtype=self.dtype)
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # ------------------------------------------------------------------ internals

    def _map(self) -> np.ndarray:
        """A fresh read-only mapping of the committed slots (readers keep the one they took alive)."""
        if self.count == 0:
            self._mmap = None
            return np.zeros(0, dtype=self.dtype)
        self._mmap = mmap.mmap(self._fd, self.nbytes, access=mmap.ACCESS_READ)
        return np.frombuffer(self._mmap, dtype=self.dtype, count=self.count, offset=HEADER_BYTES)

    def _write_header(self) -> None:
        header = MAGIC + np.array([self.dim, self.dtype.itemsize], dtype="<u4").tobytes()
        os.pwrite(self._fd, header.ljust(HEADER_BYTES, b"\0"), 0)
        os.fsync(self._fd)

    def _check_header(self) -> None:
        header = os.pread(self._fd, HEADER_BYTES, 0)
        dim, slot_bytes = np.frombuffer(header[8:16], dtype="<u4") if len(header) >= 16 else (0, 0)
        if header[:8] != MAGIC or (dim, slot_bytes) != (self.dim, self.dtype.itemsize):
            raise VectorFileError(
                f"{str(self.path)!r} is not a vector file of dimension {self.dim} (damaged header)"
            )


__all__ = ["VectorFile", "VectorFileError", "checksums", "slot_dtype"]


def _merge_best(slots_a, best_a, slots_b, best_b, want: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``want`` best of two per-query candidate lists (the first may be None: nothing yet)."""
    if best_a is None:
        return slots_b, best_b
    picked, values = top_k(np.concatenate([best_a, best_b], axis=1), want)
    return np.take_along_axis(np.concatenate([slots_a, slots_b], axis=1), picked, axis=1), values


def _parts(low: int, high: int) -> list[tuple[int, int]]:
    """``[low, high)`` cut into at most _SCAN_THREADS contiguous parts of at least _SCAN_PART_MIN slots."""
    count = max(1, min(_SCAN_THREADS, (high - low) // _SCAN_PART_MIN))
    bounds = np.linspace(low, high, count + 1).astype(np.int64).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def _in_parallel(work: Callable, parts: list) -> list:
    """``work`` of each part, in order: on the scan threads when there is more than one part."""
    if len(parts) == 1:
        return [work(parts[0])]
    global _scan_pool
    with _scan_pool_lock:
        if _scan_pool is None:
            _scan_pool = ThreadPoolExecutor(_SCAN_THREADS, thread_name_prefix="retrieval-scan")
    return list(_scan_pool.map(work, parts))
