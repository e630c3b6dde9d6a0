"""chromadb's ``chromadb.execution.expression.operator`` import path, served by :mod:`retrieval.search`.

chromadb's comparison classes (``Eq(key, value)``, ``Gte(...)``, ``Regex(key, pattern)`` ...) are
functions here that build the same filter nodes ``K("key") == value`` builds, so both spellings
obey one set of rules.

Example:
    >>> from retrieval.execution.expression.operator import Eq, K, Knn, Limit
    >>> Eq("genre", "jazz") == (K("genre") == "jazz")
    True
    >>> Eq("genre", "jazz").to_dict()
    {'genre': {'$eq': 'jazz'}}
"""

from __future__ import annotations

from typing import Any, Iterable

from retrieval.search import GroupBy, K, Key, Knn, Limit, MaxK, MinK, Rank, Rrf, Select, Val
from retrieval.search.keys import And, Or, Where
from retrieval.search.plan import Aggregate
from retrieval.search.rank import Abs, Div, Exp, Log, Max, Min, Mul, Sub, Sum

__all__ = [
    "Abs", "Aggregate", "And", "Contains", "Div", "Eq", "Exp", "GroupBy", "Gt", "Gte", "In", "K", "Key", "Knn",
    "Limit", "Log", "Lt", "Lte", "Max", "MaxK", "Min", "MinK", "Mul", "Ne", "Nin", "NotContains", "NotRegex", "Or",
    "Rank", "Regex", "Rrf", "Select", "Sub", "Sum", "Val", "Where",
]


def Eq(key: Any, value: Any) -> Where:  # noqa: N802 - chromadb's class name
    """``key == value``."""
    return _key(key) == value


def Ne(key: Any, value: Any) -> Where:  # noqa: N802
    """``key != value``."""
    return _key(key) != value


def Gt(key: Any, value: Any) -> Where:  # noqa: N802
    """``key > value``."""
    return _key(key) > value


def Gte(key: Any, value: Any) -> Where:  # noqa: N802
    """``key >= value``."""
    return _key(key) >= value


def Lt(key: Any, value: Any) -> Where:  # noqa: N802
    """``key < value``."""
    return _key(key) < value


def Lte(key: Any, value: Any) -> Where:  # noqa: N802
    """``key <= value``."""
    return _key(key) <= value


def In(key: Any, values: Iterable[Any]) -> Where:  # noqa: N802
    """``key`` is one of ``values``."""
    return _key(key).is_in(values)


def Nin(key: Any, values: Iterable[Any]) -> Where:  # noqa: N802
    """``key`` is none of ``values``."""
    return _key(key).not_in(values)


def Contains(key: Any, value: Any) -> Where:  # noqa: N802
    """The document (``#document``) contains ``value``, or a metadata array holds it."""
    return _key(key).contains(value)


def NotContains(key: Any, value: Any) -> Where:  # noqa: N802
    """The negation of :func:`Contains`."""
    return _key(key).not_contains(value)


def Regex(key: Any, pattern: str) -> Where:  # noqa: N802
    """``key`` matches the regular expression ``pattern``."""
    return _key(key).regex(pattern)


def NotRegex(key: Any, pattern: str) -> Where:  # noqa: N802
    """``key`` does not match ``pattern``."""
    return _key(key).not_regex(pattern)


def _key(key: Any) -> Key:
    return key if isinstance(key, Key) else Key(key)
