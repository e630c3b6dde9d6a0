"""Normalising and serialising a ``Knn`` query: text, dense vector, sparse vector or image.

Forms accepted (and what they become):

- ``str``: kept; the engine embeds it (the collection's embedding function for
  ``#embedding``, the key's sparse embedder for a sparse key).
- a list of numbers, a 1-d numpy array, or a single row ``[[...]]`` / ``(1, d)`` array
  (chromadb's "one embedding" form): a dense vector.
- :class:`~embedders.sparse.SparseVector`, or its dict ``{"#type": "sparse_vector",
  "indices": [...], "values": [...]}`` (the ``#type`` tag is optional on input).
- a PIL image or an ``HxW`` / ``HxWxC`` numpy array: converted once to RGB uint8 ``HxWx3``.

On the wire a dense vector is a list of floats, a sparse vector chromadb's tagged dict, and
an image ``{"#type": "image", "dtype": "uint8", "shape": [H, W, 3], "data": <base64>}``
(compact, and never ambiguous with a vector).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np

from embedders.errors import UnsupportedInputError
from embedders.images import is_image, to_rgb_uint8
from embedders.sparse import SPARSE_VECTOR_TYPE, TYPE_KEY, SparseVector
from retrieval.errors import InvalidArgumentError

__all__ = ["IMAGE_TYPE", "normalize_query", "query_to_wire", "same_query"]

IMAGE_TYPE = "image"


def normalize_query(query: Any, where: str = "Knn query") -> Any:
    """Return the canonical in-memory form of a Knn query, or raise InvalidArgumentError."""
    if isinstance(query, str):
        return query
    if isinstance(query, SparseVector):
        return query
    if isinstance(query, Mapping):
        return _from_wire_dict(query, where)
    if isinstance(query, np.ndarray):
        if query.ndim == 1 or (query.ndim == 2 and query.shape[0] == 1):
            return _dense(query.reshape(-1), where, array=True)
        if query.ndim in (2, 3):
            return _image(query, where)
        raise InvalidArgumentError(
            f"{where}: cannot use an array of shape {query.shape}; pass one vector (1-d) or one "
            "image (HxW or HxWxC)"
        )
    if is_image(query):  # a PIL image
        return _image(query, where)
    if isinstance(query, (list, tuple)):
        if len(query) == 1 and isinstance(query[0], (list, tuple, np.ndarray)):
            query = query[0]  # chromadb's single-embedding form [[...]]
        return _dense(query, where, array=False)
    raise InvalidArgumentError(
        f"{where} must be a str, a list of floats, a numpy vector, a SparseVector or an image; "
        f"got {type(query).__name__}"
    )


def query_to_wire(query: Any) -> Any:
    """The JSON-safe form of a normalised query."""
    if isinstance(query, str):
        return query
    if isinstance(query, SparseVector):
        return query.to_dict()
    if isinstance(query, np.ndarray):
        if query.ndim == 1:
            return query.tolist()
        return {
            TYPE_KEY: IMAGE_TYPE,
            "dtype": "uint8",
            "shape": list(query.shape),
            "data": base64.b64encode(query.tobytes()).decode("ascii"),
        }
    return list(query)


def same_query(a: Any, b: Any) -> bool:
    """Equality of two normalised queries (arrays compare by shape and values)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    return type(a) is type(b) and a == b


def _dense(values: Any, where: str, *, array: bool) -> Any:
    if len(values) == 0:
        raise InvalidArgumentError(f"{where}: a dense vector cannot be empty")
    if array:
        if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.number):
            raise InvalidArgumentError(f"{where}: a vector must hold numbers; got dtype {values.dtype}")
        out = values.astype(np.float64 if values.dtype == np.float64 else np.float32)
        if not np.isfinite(out).all():
            raise InvalidArgumentError(f"{where}: the vector holds NaN or infinite values")
        return out
    out_list: list[float] = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, Real):
            raise InvalidArgumentError(f"{where}: item {i} of the vector is {v!r}; expected a number")
        f = float(v)
        if not math.isfinite(f):
            raise InvalidArgumentError(f"{where}: item {i} of the vector is {v!r}; expected a finite number")
        out_list.append(f)
    return out_list


def _image(image: Any, where: str) -> np.ndarray:
    try:
        return to_rgb_uint8(image)
    except UnsupportedInputError as exc:
        hint = " (a 2-d or 3-d array is read as an image; pass a dense vector as a 1-d array)"
        raise InvalidArgumentError(f"{where}: {exc}{hint}") from exc


def _from_wire_dict(data: Mapping[str, Any], where: str) -> Any:
    tag = data.get(TYPE_KEY)
    if tag == IMAGE_TYPE:
        return _image_from_wire(data, where)
    if tag in (None, SPARSE_VECTOR_TYPE) and "indices" in data and "values" in data:
        try:
            return SparseVector.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError(f"{where}: {exc}") from exc
    raise InvalidArgumentError(
        f"{where}: a dict query must be a sparse vector {{'indices': [...], 'values': [...]}} or an "
        f"image {{'#type': 'image', ...}}; got keys {sorted(map(str, data))}"
    )


def _image_from_wire(data: Mapping[str, Any], where: str) -> np.ndarray:
    expected = {TYPE_KEY, "dtype", "shape", "data"}
    if set(data) != expected:
        raise InvalidArgumentError(
            f"{where}: an image query needs exactly the keys {sorted(expected)}; got {sorted(map(str, data))}"
        )
    shape = data["shape"]
    if data["dtype"] != "uint8":
        raise InvalidArgumentError(f"{where}: image dtype must be 'uint8'; got {data['dtype']!r}")
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or shape[2] != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise InvalidArgumentError(f"{where}: image shape must be [H, W, 3] with positive sizes; got {shape!r}")
    try:
        raw = base64.b64decode(data["data"], validate=True)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"{where}: image data is not valid base64") from exc
    if len(raw) != shape[0] * shape[1] * 3:
        raise InvalidArgumentError(
            f"{where}: image data holds {len(raw)} bytes; shape {shape} needs {shape[0] * shape[1] * 3}"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()
