"""Validation and normalisation of user input, done once at the edge.

Every function here either returns a clean value or raises :class:`InvalidArgumentError` with the
bad value and the fix. Nothing here touches storage, so a rejected call writes nothing.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from retrieval.errors import DuplicateIDError, InvalidArgumentError

# The most records one call may carry. SQLite handles far more, but a bounded batch keeps a
# single transaction's memory and the time the writer lock is held predictable.
MAX_BATCH_SIZE = 100_000

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")
_SCALAR_TYPES = (str, int, float, bool)


def validate_collection_name(name: Any) -> str:
    """Chroma's collection name rules."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"collection name must be a string; got {name!r}")
    problem = None
    if not 3 <= len(name) <= 512:
        problem = f"is {len(name)} characters long; use 3-512"
    elif not _NAME_RE.match(name):
        problem = "may use only [a-zA-Z0-9._-] and must start and end with a letter or digit"
    elif ".." in name:
        problem = "must not contain '..'"
    else:
        try:
            ipaddress.ip_address(name)
            problem = "must not be an IP address"
        except ValueError:
            pass
    if problem:
        raise InvalidArgumentError(f"invalid collection name {name!r}: it {problem}")
    return name


def one_or_many(value: Any, what: str) -> list | None:
    """chromadb accepts a single id/document/metadata/uri where it accepts a list."""
    if value is None:
        return None
    if isinstance(value, (str, Mapping)):
        return [value]
    if isinstance(value, np.ndarray):
        return list(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise InvalidArgumentError(f"{what} must be a list; got {type(value).__name__} {value!r}")


def validate_ids(ids: Any, *, allow_empty: bool = False) -> list[str]:
    ids = one_or_many(ids, "ids")
    if ids is None:
        raise InvalidArgumentError("ids are required; pass a list of strings")
    if not ids and not allow_empty:
        raise InvalidArgumentError("ids must be a non-empty list of strings; got []")
    if len(ids) > MAX_BATCH_SIZE:
        raise InvalidArgumentError(
            f"{len(ids)} records in one call exceed the max batch size of {MAX_BATCH_SIZE}; "
            "split the call into smaller batches (client.get_max_batch_size())"
        )
    for position, id_ in enumerate(ids):
        if not isinstance(id_, str):
            raise InvalidArgumentError(f"ids must be strings; got {id_!r} ({type(id_).__name__}) at position {position}")
        if not id_:
            raise InvalidArgumentError(f"ids must be non-empty strings; got '' at position {position}")
    if len(set(ids)) != len(ids):
        dupes = [i for i, c in Counter(ids).items() if c > 1]
        shown = ", ".join(repr(d) for d in dupes[:10]) + (" ..." if len(dupes) > 10 else "")
        raise DuplicateIDError(f"ids must be unique within one call; duplicated: {shown}")
    return ids


def validate_embeddings(embeddings: Any, count: int | None = None, what: str = "embeddings") -> np.ndarray:
    """Return an (n, d) float32 array; reject ragged, empty, non-numeric and non-finite input."""
    try:
        if isinstance(embeddings, np.ndarray):
            array = embeddings
        else:
            items = list(embeddings)
            if items and all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in items):
                items = [items]  # a single vector
            with np.errstate(over="ignore"):  # a value past float32's range becomes inf: refused below
                array = np.asarray([np.asarray(v, dtype=np.float32) for v in items]) if items else np.zeros((0, 0))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(
            f"{what} must be a list of equal-length numeric vectors or a 2-d array; {e}"
        ) from e
    if array.dtype == object or array.dtype.kind not in "fiu":
        raise InvalidArgumentError(
            f"{what} must be numeric vectors of one length (dtype {array.dtype} given); check for ragged rows"
        )
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty list of non-empty vectors; got shape {array.shape}")
    with np.errstate(over="ignore"):
        array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        position = int(np.flatnonzero(~finite)[0])
        raise InvalidArgumentError(
            f"{what}[{position}] contains NaN or infinity, or a value beyond float32's range (about 3.4e38); "
            "every value must be a finite float32"
        )
    if count is not None and array.shape[0] != count:
        raise InvalidArgumentError(f"got {array.shape[0]} {what} for {count} ids; give one per id")
    return array


def check_dimension(array: np.ndarray, dimension: int | None, collection: str, what: str = "embeddings") -> None:
    from retrieval.errors import DimensionMismatchError

    if dimension is not None and array.shape[1] != dimension:
        raise DimensionMismatchError(
            f"collection {collection!r} stores {dimension}-d vectors; got {array.shape[1]}-d {what} "
            "(did the embedding function change?)"
        )


# SQLite stores signed 64-bit integers. A larger int must be refused here, before the write
# transaction: found inside it (after graph insertion began) the rollback costs the index cache.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"metadata value {value!r} at {where} is not finite; use a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidArgumentError(
            f"metadata value {value!r} at {where} is outside the 64-bit integer range "
            f"[{_INT64_MIN}, {_INT64_MAX}]; store it as a float or a string"
        )


def validate_metadata(metadata: Any, position: int, *, allow_none: bool) -> dict | None:
    """A metadata dict: non-empty, string keys, scalar or homogeneous-list values.

    ``allow_none``: ``None`` values are allowed in update/upsert, where they delete the key.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(f"metadatas[{position}] must be a dict; got {metadata!r}")
    if not metadata:
        raise InvalidArgumentError(f"metadatas[{position}] is an empty dict; pass None for no metadata")
    clean = {}
    for key, value in metadata.items():
        where = f"metadatas[{position}][{key!r}]"
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"metadata keys must be non-empty strings; got {key!r} in metadatas[{position}]")
        if key.startswith("#") or key.startswith("chroma:"):
            raise InvalidArgumentError(f"metadata key {key!r} is reserved ('#' and 'chroma:' prefixes); rename it")
        if value is None:
            if not allow_none:
                raise InvalidArgumentError(
                    f"{where} is None; None deletes a key only in update/upsert, omit the key instead"
                )
        elif isinstance(value, _SCALAR_TYPES):
            _check_scalar(value, where)
        elif isinstance(value, (list, tuple)):
            if not value:
                raise InvalidArgumentError(f"{where} is an empty list; lists must have at least one item")
            kinds = {_kind(v) for v in value}
            if None in kinds or len(kinds) != 1:
                raise InvalidArgumentError(
                    f"{where} = {value!r}: list values must all be str, all int or all float, or all bool"
                )
            for v in value:
                _check_scalar(v, where)
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
            _check_scalar(value, where)
        else:
            raise InvalidArgumentError(
                f"{where} = {value!r} ({type(value).__name__}): values must be str, int, float, bool "
                "or a non-empty list of one of those; nested dicts are not supported"
            )
        clean[key] = value
    return clean


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def validate_metadatas(metadatas: Any, count: int, *, allow_none: bool) -> list[dict | None] | None:
    items = one_or_many(metadatas, "metadatas")
    if items is None:
        return None
    _check_length(items, count, "metadatas")
    return [validate_metadata(m, i, allow_none=allow_none) for i, m in enumerate(items)]


def validate_write_metadatas(metadatas: Any, count: int, mode: str) -> list[dict | None] | None:
    """A write's metadatas, as every backend and both halves of the wire take them.

    None values are accepted, as chromadb accepts them: in update/upsert a None deletes the key; in
    ``add`` it means the key is absent, so it is left out here (as chromadb's client leaves it out:
    chroma's server refuses a null in add), and a metadata left empty is None.
    """
    metadatas = validate_metadatas(metadatas, count, allow_none=True)
    if mode != "add" or metadatas is None:
        return metadatas
    return [None if m is None else ({k: x for k, x in m.items() if x is not None} or None) for m in metadatas]


def validate_strings(values: Any, count: int, what: str) -> list[str | None] | None:
    items = one_or_many(values, what)
    if items is None:
        return None
    _check_length(items, count, what)
    for position, value in enumerate(items):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"{what}[{position}] must be a string; got {type(value).__name__} {value!r}")
    return items


def _check_length(items: Sequence, count: int, what: str) -> None:
    if len(items) != count:
        raise InvalidArgumentError(f"got {len(items)} {what} for {count} ids; give exactly one per id")


def validate_include(include: Any, allowed: Iterable[str], default: Sequence[str]) -> list[str]:
    if include is None:
        return list(default)
    if isinstance(include, str) or not isinstance(include, (list, tuple)):
        raise InvalidArgumentError(f"include must be a list such as ['documents', 'metadatas']; got {include!r}")
    allowed = tuple(allowed)
    for item in include:
        if item not in allowed:
            hint = " ('ids' are always returned)" if item == "ids" else ""
            raise InvalidArgumentError(f"include item {item!r} is not supported{hint}; use any of {list(allowed)}")
    return list(dict.fromkeys(include))


def validate_n_results(n_results: Any) -> int:
    if isinstance(n_results, bool) or not isinstance(n_results, (int, np.integer)) or n_results < 1:
        raise InvalidArgumentError(f"n_results must be a positive integer; got {n_results!r}")
    return int(n_results)


SQLITE_MAX_INT = 2**63 - 1


def validate_delete(ids: list[str] | None, where: Any, where_document: Any, limit: Any) -> int | None:
    """chromadb 1.5.9's rules for one ``delete`` (its ``_validate_and_prepare_delete_request``).

    The handle and the server both run this, so a delete one refuses the other refuses too.
    ``ids`` is validated already; ``where``/``where_document`` are parsed filters (or None).
    Returns the limit, clamped to what SQLite can count.
    """
    if ids == []:
        # chromadb refuses it too: an empty id list is usually a bug upstream.
        raise InvalidArgumentError(
            "delete(ids=[]) names no record to delete; pass at least one id, or leave ids out and use where="
        )
    if ids is None and where is None and where_document is None:
        raise InvalidArgumentError(
            "delete needs ids, where or where_document; to remove everything use client.delete_collection(name)"
        )
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
        raise InvalidArgumentError(f"delete limit must be a non-negative integer; got {limit!r}")
    if where is None and where_document is None:
        raise InvalidArgumentError(
            "delete(limit=...) needs a where or where_document filter (as in chromadb); with ids alone, "
            "pass fewer ids instead"
        )
    return min(int(limit), SQLITE_MAX_INT)


def validate_limit_offset(limit: Any, offset: Any) -> tuple[int | None, int]:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0):
        raise InvalidArgumentError(f"limit must be a non-negative integer or None; got {limit!r}")
    if offset is None:
        offset = 0
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise InvalidArgumentError(f"offset must be a non-negative integer; got {offset!r}")
    # Beyond SQLite's 64-bit integers a limit means "all" and an offset "past the end": clamp, so
    # a huge number is an answer, not an OverflowError.
    return (None if limit is None else min(int(limit), SQLITE_MAX_INT)), min(int(offset), SQLITE_MAX_INT)
