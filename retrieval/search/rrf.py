"""Reciprocal rank fusion, written in the arithmetic of :mod:`retrieval.search.rank`.

``Rrf(ranks, k, weights, normalize)`` scores ``-sum_i w_i / (k + rank_i)``: negated because
lower scores are better. Like chromadb it has no operator of its own on the wire: ``to_dict``
emits the arithmetic it stands for, so any engine that evaluates rank dicts evaluates it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.errors import InvalidArgumentError
from retrieval.search.rank import KnnValues, Number, Rank, _number, _wrap_checked

__all__ = ["Rrf"]


@dataclass(frozen=True)
class Rrf(Rank):
    """Reciprocal rank fusion: ``-sum_i w_i / (k + rank_i)`` (negated: lower is better).

    Args:
        ranks: Rank expressions to fuse, usually ``Knn(..., return_rank=True)``.
        k: Smoothing constant, > 0.
        weights: One non-negative weight per rank (default all 1.0).
        normalize: Divide the weights by their sum (which must then be > 0).

    Example:
        >>> from retrieval.search.rank import Knn
        >>> dense = Knn(query=[0.1, 0.2], return_rank=True, default=100)
        >>> sparse = Knn(query="E-4012", key="bm25", return_rank=True, default=100)
        >>> Rrf([dense, sparse], weights=[3, 1], normalize=True).weights_used
        (0.75, 0.25)
    """

    ranks: Sequence[Rank]
    k: Number = 60
    weights: Sequence[Number] | None = None
    normalize: bool = False
    _expr: Rank = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.ranks, (list, tuple)) or not self.ranks:
            raise InvalidArgumentError(f"Rrf needs a non-empty list of ranks; got {self.ranks!r}")
        ranks = tuple(_wrap_checked(r, f"Rrf ranks[{i}]") for i, r in enumerate(self.ranks))
        k = _number(self.k, "Rrf k")
        if k <= 0:
            raise InvalidArgumentError(f"Rrf k must be positive; got {self.k!r}")
        if not isinstance(self.normalize, bool):
            raise InvalidArgumentError(f"Rrf normalize must be a bool; got {self.normalize!r}")
        weights: tuple[Number, ...] | None = None
        if self.weights is not None:
            if isinstance(self.weights, (str, bytes)) or not isinstance(self.weights, Sequence):
                raise InvalidArgumentError(f"Rrf weights must be a list of numbers; got {self.weights!r}")
            weights = tuple(_number(w, f"Rrf weights[{i}]") for i, w in enumerate(self.weights))
            if len(weights) != len(ranks):
                raise InvalidArgumentError(
                    f"Rrf got {len(weights)} weights for {len(ranks)} ranks; give one weight per rank"
                )
            negative = [w for w in weights if w < 0]
            if negative:
                raise InvalidArgumentError(f"Rrf weights must be non-negative; got {list(weights)}")
        object.__setattr__(self, "ranks", ranks)
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "weights", weights)
        used = self.weights_used
        terms: list[Rank] = [w / (k + r) for w, r in zip(used, ranks)]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        object.__setattr__(self, "_expr", -total)

    @property
    def weights_used(self) -> tuple[float, ...]:
        """The weights after defaulting and normalisation."""
        weights = self.weights if self.weights is not None else (1.0,) * len(self.ranks)
        if self.normalize:
            total = math.fsum(weights)
            if total <= 0:
                raise InvalidArgumentError("Rrf weights must sum to more than 0 when normalize=True")
            return tuple(w / total for w in weights)
        return tuple(float(w) for w in weights)

    def children(self) -> tuple[Rank, ...]:
        return (self._expr,)

    def evaluate(self, values: KnnValues, n: int) -> np.ndarray:
        return self._expr.evaluate(values, n)

    def to_dict(self) -> dict[str, Any]:
        return self._expr.to_dict()
