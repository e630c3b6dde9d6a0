"""A graph checkpoint that does not store the vectors a second time.

hnswlib's index file keeps every element's vector inside its level-0 row, next to the element's
links and label. The vector file (vector_file.py) already holds each vector at full precision, so
a checkpoint keeps hnswlib's file with the vectors cut out and, per element, the vector-file slot
to take it from again. Elements whose vector the file does not hold as the graph has it (a record
deleted since, or a vector still in SQLite) keep theirs in the checkpoint. Layout:

    magic | hnswlib header | level-0 rows without vectors | slot per element (int64, -1: kept)
          | count of kept vectors (uint64) | kept vectors, in element order | hnswlib's upper levels

Both directions stream a chunk of elements at a time: neither the process nor the disk ever holds
a second copy of the vectors (beyond one chunk and the temporary full file hnswlib loads from).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

MAGIC = b"RGRAPH01"
# hnswlib's saveIndex header (hnswalg.h): offsetLevel0, max_elements, cur_element_count,
# size_data_per_element, label_offset, offsetData, maxlevel, enterpoint_node, maxM, maxM0, M, mult,
# ef_construction.
_HEADER = struct.Struct("<QQQQQQiIQQQdQ")
_CHUNK = 16_384
_COPY = 1 << 22


class GraphFileError(Exception):
    """The file is not a graph checkpoint this code can read."""


def strip_vectors(full: Path, out: Path, dim: int, slots_of: Callable[[np.ndarray], np.ndarray]) -> None:
    """Write hnswlib's index file ``full`` to ``out`` without the vectors ``slots_of(labels)`` can find."""
    vector_bytes = dim * 4
    with open(full, "rb") as src, open(out, "wb") as dst:
        header = src.read(_HEADER.size)
        fields = _HEADER.unpack(header)
        count, row_bytes, label_at, vector_at = fields[2], fields[3], fields[4], fields[5]
        if vector_at + vector_bytes > row_bytes:
            raise GraphFileError(f"{full}: rows of {row_bytes} bytes cannot hold {dim}-d vectors")
        dst.write(MAGIC + header)
        slots = np.empty(count, dtype="<i8")
        kept: list[np.ndarray] = []
        for start in range(0, count, _CHUNK):
            rows = _read_rows(src, min(_CHUNK, count - start), row_bytes)
            labels = rows[:, label_at : label_at + 8].copy().view("<u8").ravel().astype(np.int64)
            chunk_slots = np.asarray(slots_of(labels), dtype=np.int64)
            slots[start : start + len(rows)] = chunk_slots
            kept.append(rows[chunk_slots < 0, vector_at : vector_at + vector_bytes].copy())
            dst.write(np.delete(rows, np.s_[vector_at : vector_at + vector_bytes], axis=1).tobytes())
        dst.write(slots.tobytes())
        kept_rows = np.concatenate(kept) if kept else np.zeros((0, vector_bytes), np.uint8)
        dst.write(struct.pack("<Q", len(kept_rows)))
        dst.write(kept_rows.tobytes())
        _copy_rest(src, dst)


def restore_vectors(stripped: Path, out: Path, dim: int, read_slots: Callable[[np.ndarray], np.ndarray], space: str) -> None:
    """Write hnswlib's index file ``out`` from a stripped checkpoint, taking vectors from ``read_slots``.

    hnswlib keeps cosine vectors at unit length, so vectors read back are normalised as it does."""
    vector_bytes = dim * 4
    with open(stripped, "rb") as src, open(out, "wb") as dst:
        if src.read(len(MAGIC)) != MAGIC:
            raise GraphFileError(f"{stripped} is not a stripped graph checkpoint")
        header = src.read(_HEADER.size)
        fields = _HEADER.unpack(header)
        count, row_bytes, vector_at = fields[2], fields[3], fields[5]
        short_bytes = row_bytes - vector_bytes
        rows_at = len(MAGIC) + _HEADER.size
        slots_at = rows_at + count * short_bytes
        src.seek(slots_at)
        slots = np.frombuffer(_read_exact(src, count * 8), dtype="<i8")
        kept_count = struct.unpack("<Q", _read_exact(src, 8))[0]
        kept_at = src.tell()
        rest_at = kept_at + kept_count * vector_bytes
        dst.write(header)
        used_kept = 0
        for start in range(0, count, _CHUNK):
            n = min(_CHUNK, count - start)
            src.seek(rows_at + start * short_bytes)
            short = _read_rows(src, n, short_bytes)
            chunk_slots = slots[start : start + n]
            vectors = np.empty((n, dim), dtype="<f4")
            from_file = chunk_slots >= 0
            if from_file.any():
                vectors[from_file] = as_stored(read_slots(chunk_slots[from_file]), space)
            inline = int((~from_file).sum())
            if inline:
                src.seek(kept_at + used_kept * vector_bytes)
                vectors[~from_file] = np.frombuffer(_read_exact(src, inline * vector_bytes), dtype="<f4").reshape(inline, dim)
                used_kept += inline
            full = np.empty((n, row_bytes), dtype=np.uint8)
            full[:, :vector_at] = short[:, :vector_at]
            full[:, vector_at : vector_at + vector_bytes] = vectors.view(np.uint8)
            full[:, vector_at + vector_bytes :] = short[:, vector_at:]
            dst.write(full.tobytes())
        if used_kept != kept_count:
            raise GraphFileError(f"{stripped}: {kept_count} kept vectors, {used_kept} used")
        src.seek(rest_at)
        _copy_rest(src, dst)


def as_stored(vectors: np.ndarray, space: str) -> np.ndarray:
    """A vector as a restored graph holds it: unit length in cosine space."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if space != "cosine":
        return vectors
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors)) + np.float32(1e-30)
    return vectors * (np.float32(1.0) / norms)[:, None]


def _read_rows(src: BinaryIO, n: int, row_bytes: int) -> np.ndarray:
    return np.frombuffer(_read_exact(src, n * row_bytes), dtype=np.uint8).reshape(n, row_bytes)


def _read_exact(src: BinaryIO, size: int) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise GraphFileError(f"graph file ends early ({len(data)} of {size} bytes)")
    return data


def _copy_rest(src: BinaryIO, dst: BinaryIO) -> None:
    while chunk := src.read(_COPY):
        dst.write(chunk)


__all__ = ["GraphFileError", "as_stored", "restore_vectors", "strip_vectors"]
