"""``SparseVector``: parallel lists of term ids and weights (chromadb's sparse type).

Validated once, at construction: equal lengths, indices sorted strictly ascending (so unique)
in ``[0, 2**32)``, values finite. The wire form is chromadb's tagged dict::

    {"#type": "sparse_vector", "indices": [3, 17], "values": [0.5, 1.25]}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

__all__ = ["MAX_INDEX", "SPARSE_VECTOR_TYPE", "SparseVector", "TYPE_KEY"]

TYPE_KEY = "#type"
SPARSE_VECTOR_TYPE = "sparse_vector"
MAX_INDEX = 2**32 - 1  # indices are unsigned 32-bit, as in chromadb


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector: ``indices[i]`` holds weight ``values[i]``.

    Args:
        indices: Term ids, non-negative, strictly ascending, each below ``2**32``.
        values: One finite weight per index.

    Raises:
        ValueError: The message names the first offending position.

    Example:
        >>> v = SparseVector(indices=[2, 7], values=[0.5, 1.0])
        >>> v.to_dict()
        {'#type': 'sparse_vector', 'indices': [2, 7], 'values': [0.5, 1.0]}
        >>> SparseVector.from_dict(v.to_dict()) == v
        True
        >>> SparseVector(indices=[7, 2], values=[1.0, 1.0])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: SparseVector indices must be strictly ascending; indices[1]=2 follows 7 ...
    """

    indices: list[int]
    values: list[float]

    def __post_init__(self) -> None:
        indices = _int_list(self.indices)
        values = _float_list(self.values)
        if len(indices) != len(values):
            raise ValueError(
                f"SparseVector needs as many values as indices; got {len(indices)} indices and {len(values)} values"
            )
        previous = -1
        for i, idx in enumerate(indices):
            if idx < 0 or idx > MAX_INDEX:
                raise ValueError(f"SparseVector indices[{i}]={idx} is outside [0, 2**32)")
            if idx <= previous:
                raise ValueError(
                    f"SparseVector indices must be strictly ascending; indices[{i}]={idx} follows {previous} "
                    "(sort them and merge duplicates)"
                )
            previous = idx
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)

    def __hash__(self) -> int:
        return hash((tuple(self.indices), tuple(self.values)))

    def __len__(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[str, Any]:
        """chromadb's wire form (tagged with ``"#type": "sparse_vector"``)."""
        return {TYPE_KEY: SPARSE_VECTOR_TYPE, "indices": list(self.indices), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SparseVector:
        """Parse the wire form; the ``#type`` tag is optional, chromadb's ``tokens`` are ignored."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a sparse vector dict must be a dict; got {type(data).__name__}")
        tag = data.get(TYPE_KEY, SPARSE_VECTOR_TYPE)
        if tag != SPARSE_VECTOR_TYPE:
            raise ValueError(f"expected {TYPE_KEY}={SPARSE_VECTOR_TYPE!r}; got {tag!r}")
        unknown = set(data) - {TYPE_KEY, "indices", "values", "tokens"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(map(str, unknown))} in a sparse vector dict")
        if "indices" not in data or "values" not in data:
            raise ValueError("a sparse vector dict needs 'indices' and 'values'")
        return cls(indices=data["indices"], values=data["values"])

    def dot(self, other: SparseVector) -> float:
        """Inner product with another sparse vector."""
        mine = dict(zip(self.indices, self.values))
        return math.fsum(mine[i] * v for i, v in zip(other.indices, other.values) if i in mine)


def _items(seq: Any, what: str) -> list[Any]:
    if isinstance(seq, (str, bytes, Mapping)) or not isinstance(seq, Iterable):
        raise TypeError(f"SparseVector {what} must be a list; got {type(seq).__name__}")
    return list(seq)


def _int_list(seq: Any) -> list[int]:
    out = []
    for i, v in enumerate(_items(seq, "indices")):
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError(f"SparseVector indices[{i}] must be an int; got {v!r}")
        out.append(int(v))
    return out


def _float_list(seq: Any) -> list[float]:
    out = []
    for i, v in enumerate(_items(seq, "values")):
        if isinstance(v, bool) or not isinstance(v, Real):
            raise TypeError(f"SparseVector values[{i}] must be a number; got {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"SparseVector values[{i}]={v!r} is not finite")
        out.append(f)
    return out
