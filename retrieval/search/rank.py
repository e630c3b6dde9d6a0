"""Rank expressions: ``Knn``, ``Val``, arithmetic and functions (``Rrf`` is in :mod:`retrieval.search.rrf`).

Scores are distances: lower is better. Numbers auto-wrap as :class:`Val`, so
``Knn(query=v) * 0.5 + 1`` is ``Sum((Mul((Knn(v), Val(0.5))), Val(1)))``. The dict form uses
chromadb's operators and round-trips: ``Rank.from_dict(d).to_dict() == d`` for any dict in
canonical form (which is what ``to_dict`` emits)::

    {"$knn": {"query": [0.1, 0.2], "key": "#embedding", "limit": 16}}   # + "default", "return_rank"
    {"$val": 0.5}
    {"$sum": [a, b, ...]}   {"$mul": [a, b, ...]}   {"$max": [...]}   {"$min": [...]}
    {"$sub": {"left": a, "right": b}}   {"$div": {"left": a, "right": b}}
    {"$abs": a}   {"$exp": a}   {"$log": a}

``Rrf`` has no operator of its own: like chromadb it serialises to the arithmetic it stands
for, ``-(w_1 / (k + r_1) + ... + w_n / (k + r_n))``.

Evaluation is vectorised over the candidate documents (IEEE semantics: ``x / 0`` is
infinite, ``log`` of a negative number is NaN; NaN scores sort last).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Union

import numpy as np

from retrieval.errors import InvalidArgumentError
from retrieval.search.keys import Key, key_name
from retrieval.search.query import normalize_query, query_to_wire, same_query

__all__ = ["Abs", "Div", "Exp", "Knn", "Log", "Max", "Min", "Mul", "Rank", "Sub", "Sum", "Val"]

Number = Union[int, float]
# Knn -> its values over the candidates (distance, rank position, or default).
KnnValues = Callable[["Knn"], np.ndarray]


def _wrap(value: Any) -> Rank:
    if isinstance(value, Rank):
        return value
    if isinstance(value, Real) and not isinstance(value, bool):
        return Val(value)
    raise TypeError(f"cannot combine a rank expression with {type(value).__name__}")


def _number(value: Any, where: str) -> Number:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidArgumentError(f"{where} must be a number; got {value!r}")
    out: Number = value if isinstance(value, int) else float(value)
    if not math.isfinite(out):
        raise InvalidArgumentError(f"{where} must be finite; got {value!r}")
    return out


class Rank:
    """Base of rank expressions: arithmetic operators and functions build new expressions."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def children(self) -> tuple[Rank, ...]:
        return ()

    def knns(self) -> Iterator[Knn]:
        """Every ``Knn`` in the expression, depth first, left to right."""
        for child in self.children():
            yield from child.knns()

    def evaluate(self, values: KnnValues, n: int) -> np.ndarray:
        """The scores of ``n`` candidates, given each Knn's values over them."""
        raise NotImplementedError

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Rank:
        """Parse the dict form; errors name the offending path (``rank.$sum[1].$knn.limit``).

        Example:
            >>> Rank.from_dict({"$sum": [{"$val": 1}, {"$val": 2}]})
            Sum(ranks=(Val(value=1), Val(value=2)))
        """
        return parse_rank(data, "rank")

    def __add__(self, other: Any) -> Sum:
        o = _wrap(other)
        return Sum((*_flat(self, Sum), *_flat(o, Sum)))

    def __radd__(self, other: Any) -> Sum:
        return _wrap(other) + self

    def __sub__(self, other: Any) -> Sub:
        return Sub(self, _wrap(other))

    def __rsub__(self, other: Any) -> Sub:
        return Sub(_wrap(other), self)

    def __mul__(self, other: Any) -> Mul:
        o = _wrap(other)
        return Mul((*_flat(self, Mul), *_flat(o, Mul)))

    def __rmul__(self, other: Any) -> Mul:
        return _wrap(other) * self

    def __truediv__(self, other: Any) -> Div:
        return Div(self, _wrap(other))

    def __rtruediv__(self, other: Any) -> Div:
        return Div(_wrap(other), self)

    def __neg__(self) -> Mul:
        return Mul((Val(-1), self))

    def __abs__(self) -> Abs:
        return Abs(self)

    def abs(self) -> Abs:
        return Abs(self)

    def exp(self) -> Exp:
        return Exp(self)

    def log(self) -> Log:
        return Log(self)

    def max(self, other: Any) -> Max:
        o = _wrap(other)
        return Max((*_flat(self, Max), *_flat(o, Max)))

    def min(self, other: Any) -> Min:
        o = _wrap(other)
        return Min((*_flat(self, Min), *_flat(o, Min)))


def _flat(rank: Rank, kind: type) -> tuple[Rank, ...]:
    return rank.ranks if type(rank) is kind else (rank,)  # type: ignore[attr-defined]


@dataclass(frozen=True, eq=False)
class Knn(Rank):
    """Nearest-neighbour scores for one query against one embedding key.

    Args:
        query: Text, a dense vector (list or 1-d array), a ``SparseVector``, or an image
            (PIL or ``HxW[xC]`` array); see :mod:`retrieval.search.query`.
        key: ``"#embedding"`` (dense) or the name of a sparse embedding key.
        limit: How many nearest candidates this Knn contributes (not the result size).
        default: Score of documents outside this Knn's top ``limit``; ``None`` excludes them.
        return_rank: Score by 0-based rank position instead of distance (for ``Rrf``).

    Example:
        >>> Knn(query=[0.1, 0.2], limit=8, return_rank=True).to_dict()
        {'$knn': {'query': [0.1, 0.2], 'key': '#embedding', 'limit': 8, 'return_rank': True}}
    """

    query: Any
    key: Union[str, Key] = "#embedding"
    limit: int = 16
    default: Number | None = None
    return_rank: bool = False

    def __post_init__(self) -> None:
        key = key_name(self.key, "Knn key")
        if key.startswith("#") and key != "#embedding":
            raise InvalidArgumentError(
                f"Knn key must be '#embedding' or a sparse embedding key; got {key!r}"
            )
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit <= 0:
            raise InvalidArgumentError(f"Knn limit must be a positive integer; got {self.limit!r}")
        if not isinstance(self.return_rank, bool):
            raise InvalidArgumentError(f"Knn return_rank must be a bool; got {self.return_rank!r}")
        default = None if self.default is None else _number(self.default, "Knn default")
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "query", normalize_query(self.query))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Knn):
            return NotImplemented
        return (
            (self.key, self.limit, self.default, self.return_rank)
            == (other.key, other.limit, other.default, other.return_rank)
            and same_query(self.query, other.query)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        q = self.query
        shown = f"<array {q.shape}>" if isinstance(q, np.ndarray) else repr(q)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return (
            f"Knn(query={shown}, key={self.key!r}, limit={self.limit}, default={self.default!r}, "
            f"return_rank={self.return_rank})"
        )

    def knns(self) -> Iterator[Knn]:
        yield self

    def evaluate(self, values: KnnValues, n: int) -> np.ndarray:
        return values(self)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query_to_wire(self.query), "key": self.key, "limit": self.limit}
        if self.default is not None:
            body["default"] = self.default
        if self.return_rank:
            body["return_rank"] = True
        return {"$knn": body}


@dataclass(frozen=True)
class Val(Rank):
    """A constant score."""

    value: Number

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _number(self.value, "Val value"))

    def evaluate(self, values: KnnValues, n: int) -> np.ndarray:
        return np.full(n, float(self.value))

    def to_dict(self) -> dict[str, Any]:
        return {"$val": self.value}


def _check_ranks(ranks: Any, op: str) -> tuple[Rank, ...]:
    if not isinstance(ranks, (list, tuple)) or len(ranks) < 2:
        raise InvalidArgumentError(f"{op} needs a list of at least 2 rank expressions; got {ranks!r}")
    out = tuple(_wrap_checked(r, f"{op}[{i}]") for i, r in enumerate(ranks))
    return out


def _wrap_checked(value: Any, where: str) -> Rank:
    try:
        return _wrap(value)
    except TypeError:
        raise InvalidArgumentError(f"{where} must be a rank expression or a number; got {value!r}") from None


class _NAry(Rank):
    ranks: tuple[Rank, ...]
    OP = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranks", _check_ranks(self.ranks, self.OP))

    def children(self) -> tuple[Rank, ...]:
        return self.ranks

    def to_dict(self) -> dict[str, Any]:
        return {self.OP: [r.to_dict() for r in self.ranks]}

    def evaluate(self, values: KnnValues, n: int) -> np.ndarray:
        parts = [r.evaluate(values, n) for r in self.ranks]
        with np.errstate(all="ignore"):
            return self._reduce(np.vstack(parts))

    def _reduce(self, stacked: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Sum(_NAry):
    ranks: tuple[Rank, ...]
    OP = "$sum"

    def _reduce(self, stacked: np.ndarray) -> np.ndarray:
        return stacked.sum(axis=0)


@dataclass(frozen=True)
class Mul(_NAry):
    ranks: tuple[Rank, ...]
    OP = "$mul"

    def _reduce(self, stacked: np.ndarray) -> np.ndarray:
        return stacked.prod(axis=0)


@dataclass(frozen=True)
class Max(_NAry):
    ranks: tuple[Rank, ...]
    OP = "$max"

    def _reduce(self, stacked: np.ndarray) -> np.ndarray:
        return stacked.max(axis=0)


@dataclass(frozen=True)
class Min(_NAry):
    ranks: tuple[Rank, ...]
    OP = "$min"

    def _reduce(self, stacked: np.ndarray) -> np.ndarray:
        return stacked.min(axis=0)


class _Binary(Rank):
    left: Rank
    right: Rank
    OP = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "left", _wrap_checked(self.left, f"{self.OP}.left"))
        object.__setattr__(self, "right", _wrap_checked(self.right, f"{self.OP}.right"))

    def children(self) -> tuple[Rank, ...]:
        return (self.left, self.right)

    def to_dict(self) -> dict[str, Any]:
        return {self.OP: {"left": self.left.to_dict(), "right": self.right.to_dict()}}


@dataclass(frozen=True)
class Sub(_Binary):
    left: Rank
    right: Rank
    OP = "$sub"

    def evaluate(self, values: KnnValues, n: int) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self.left.evaluate(values, n) - self.right.evaluate(values, n)


@dataclass(frozen=True)
class Div(_Binary):
    left: Rank
    right: Rank
    OP = "$div"

    def evaluate(self, values: KnnValues, n: int) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self.left.evaluate(values, n) / self.right.evaluate(values, n)


class _Unary(Rank):
    rank: Rank
    OP = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank", _wrap_checked(self.rank, self.OP))

    def children(self) -> tuple[Rank, ...]:
        return (self.rank,)

    def to_dict(self) -> dict[str, Any]:
        return {self.OP: self.rank.to_dict()}

    def evaluate(self, values: KnnValues, n: int) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self._apply(self.rank.evaluate(values, n))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Abs(_Unary):
    rank: Rank
    OP = "$abs"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x)


@dataclass(frozen=True)
class Exp(_Unary):
    rank: Rank
    OP = "$exp"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.exp(x)


@dataclass(frozen=True)
class Log(_Unary):
    rank: Rank
    OP = "$log"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.log(x)


# ------------------------------------------------------------------ the dict form
# Parsing chromadb's ``$knn``, ``$sum``... operators. Every error is an InvalidArgumentError naming
# the path of the bad part, e.g. ``rank.$sum[1].$knn.limit must be a positive integer; got 0``.

_NARY = {"$sum": Sum, "$mul": Mul, "$max": Max, "$min": Min}
_BINARY = {"$sub": Sub, "$div": Div}
_UNARY = {"$abs": Abs, "$exp": Exp, "$log": Log}
OPERATORS = ("$knn", "$val", *_NARY, *_BINARY, *_UNARY)
_KNN_FIELDS = ("query", "key", "limit", "default", "return_rank")


def parse_rank(data: Any, path: str) -> Rank:
    if isinstance(data, Rank):
        return data
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(f"{path} must be a dict with one operator; got {type(data).__name__}")
    if len(data) != 1:
        raise InvalidArgumentError(
            f"{path} must hold exactly one operator; got {sorted(map(str, data)) or 'none'} "
            f"(operators: {list(OPERATORS)})"
        )
    (op, body), = data.items()
    here = f"{path}.{op}"
    try:
        if op == "$knn":
            return _parse_knn(body, here)
        if op == "$val":
            return Val(body)
        if op in _NARY:
            if not isinstance(body, list) or len(body) < 2:
                raise InvalidArgumentError(f"{here} must be a list of at least 2 rank expressions; got {body!r}")
            return _NARY[op](tuple(parse_rank(r, f"{here}[{i}]") for i, r in enumerate(body)))
        if op in _BINARY:
            if not isinstance(body, Mapping) or set(body) != {"left", "right"}:
                raise InvalidArgumentError(f"{here} must be {{'left': rank, 'right': rank}}; got {body!r}")
            return _BINARY[op](parse_rank(body["left"], f"{here}.left"), parse_rank(body["right"], f"{here}.right"))
        if op in _UNARY:
            return _UNARY[op](parse_rank(body, here))
    except InvalidArgumentError as exc:
        message = str(exc)
        if message.startswith(path):
            raise
        raise InvalidArgumentError(f"{here}: {message}") from None
    raise InvalidArgumentError(f"{path} has unknown operator {op!r}; expected one of {list(OPERATORS)}")


def _parse_knn(body: Any, path: str) -> Knn:
    if not isinstance(body, Mapping):
        raise InvalidArgumentError(f"{path} must be a dict; got {type(body).__name__}")
    unknown = sorted(set(map(str, body)) - set(_KNN_FIELDS))
    if unknown:
        raise InvalidArgumentError(f"{path} has unknown fields {unknown}; expected some of {list(_KNN_FIELDS)}")
    if "query" not in body:
        raise InvalidArgumentError(f"{path} needs a 'query'")
    return Knn(
        query=body["query"],
        key=body.get("key", "#embedding"),
        limit=body.get("limit", 16),
        default=body.get("default"),
        return_rank=body.get("return_rank", False),
    )
