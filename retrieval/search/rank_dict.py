"""Parsing the dict form of rank expressions (chromadb's ``$knn``, ``$sum``... operators).

Every error is an :class:`InvalidArgumentError` naming the path of the bad part, e.g.
``rank.$sum[1].$knn.limit must be a positive integer; got 0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retrieval.errors import InvalidArgumentError
from retrieval.search.rank import Abs, Div, Exp, Knn, Log, Max, Min, Mul, Rank, Sub, Sum, Val

__all__ = ["OPERATORS", "parse_rank"]

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
