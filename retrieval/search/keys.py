"""Field keys and the filter algebra of the Search API.

``K("year") >= 2020`` builds a :class:`Comparison`; ``&`` and ``|`` combine comparisons into
:class:`And` / :class:`Or`. A filter's ``to_dict()`` is Chroma's where dict, which the engine
parses with its own where parser: this module never evaluates a filter.

Special keys start with ``#``: ``K.ID`` (``"#id"``), ``K.DOCUMENT``, ``K.EMBEDDING``,
``K.METADATA``, ``K.SCORE``, ``K.URI`` and ``K.DATA`` (the loaded data of a multimodal
record). Any other name is a metadata field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from retrieval.errors import InvalidArgumentError

__all__ = ["And", "Comparison", "K", "Key", "Or", "SPECIAL_KEYS", "Where", "key_name"]

SPECIAL_KEYS = frozenset({"#id", "#document", "#embedding", "#metadata", "#score", "#uri", "#data"})

_SCALAR_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_LIST_OPS = ("$in", "$nin")
_TEXT_OPS = ("$contains", "$not_contains", "$regex", "$not_regex")
_OPERATORS = _SCALAR_OPS + _LIST_OPS + _TEXT_OPS
# Which operators each special key can be filtered with; metadata fields take all of them.
_SPECIAL_FILTER_OPS = {
    "#id": ("$eq", "$ne", "$in", "$nin"),
    "#document": _TEXT_OPS,
}


def key_name(key: Key | str, what: str = "key") -> str:
    """The string name of a key given as a :class:`Key` or a string."""
    if isinstance(key, Key):
        return key.name
    if isinstance(key, str) and key:
        return key
    raise InvalidArgumentError(f"{what} must be a non-empty string or K(...); got {key!r}")


class Key:
    """A field reference that builds filters with Python operators.

    Example:
        >>> (K("status") == "active").to_dict()
        {'status': {'$eq': 'active'}}
        >>> ((K("year") >= 2020) & K.ID.is_in(["a", "b"])).to_dict()
        {'$and': [{'year': {'$gte': 2020}}, {'#id': {'$in': ['a', 'b']}}]}
    """

    ID: ClassVar[Key]
    DOCUMENT: ClassVar[Key]
    EMBEDDING: ClassVar[Key]
    METADATA: ClassVar[Key]
    SCORE: ClassVar[Key]
    URI: ClassVar[Key]
    DATA: ClassVar[Key]

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a key name must be a non-empty string; got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"K({self.name!r})"

    def __hash__(self) -> int:
        return hash(("Key", self.name))

    # Comparing with a value builds a filter. Comparing two keys is a plain bool, so keys
    # work in sets and dicts (a field-to-field filter does not exist anyway).
    def __eq__(self, value: Any) -> Comparison:  # type: ignore[override]
        if isinstance(value, Key):
            return self.name == value.name  # type: ignore[return-value]
        return Comparison(self.name, "$eq", value)

    def __ne__(self, value: Any) -> Comparison:  # type: ignore[override]
        if isinstance(value, Key):
            return self.name != value.name  # type: ignore[return-value]
        return Comparison(self.name, "$ne", value)

    def __gt__(self, value: Any) -> Comparison:
        return Comparison(self.name, "$gt", value)

    def __ge__(self, value: Any) -> Comparison:
        return Comparison(self.name, "$gte", value)

    def __lt__(self, value: Any) -> Comparison:
        return Comparison(self.name, "$lt", value)

    def __le__(self, value: Any) -> Comparison:
        return Comparison(self.name, "$lte", value)

    def is_in(self, values: Iterable[Any]) -> Comparison:
        return Comparison(self.name, "$in", values)

    def not_in(self, values: Iterable[Any]) -> Comparison:
        return Comparison(self.name, "$nin", values)

    def contains(self, value: Any) -> Comparison:
        return Comparison(self.name, "$contains", value)

    def not_contains(self, value: Any) -> Comparison:
        return Comparison(self.name, "$not_contains", value)

    def regex(self, pattern: str) -> Comparison:
        return Comparison(self.name, "$regex", pattern)

    def not_regex(self, pattern: str) -> Comparison:
        return Comparison(self.name, "$not_regex", pattern)


Key.ID = Key("#id")
Key.DOCUMENT = Key("#document")
Key.EMBEDDING = Key("#embedding")
Key.METADATA = Key("#metadata")
Key.SCORE = Key("#score")
Key.URI = Key("#uri")
Key.DATA = Key("#data")
K = Key


class Where:
    """Base of filter expressions; combine with ``&`` (and) and ``|`` (or)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __and__(self, other: Where) -> And:
        if not isinstance(other, Where):
            return NotImplemented
        return And((*_flatten(self, And), *_flatten(other, And)))

    def __or__(self, other: Where) -> Or:
        if not isinstance(other, Where):
            return NotImplemented
        return Or((*_flatten(self, Or), *_flatten(other, Or)))

    def __bool__(self) -> bool:
        # `1 < K("x") < 5` and `K("a") == 1 and K("b") == 2` would silently keep only one
        # condition; refuse them instead.
        raise TypeError(
            "a filter has no truth value; combine filters with & and | (not `and`/`or` or "
            "chained comparisons such as `1 < K('x') < 5`)"
        )

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Where:
        """Parse a Chroma where dict (``{"f": v}`` is shorthand for ``{"f": {"$eq": v}}``).

        Example:
            >>> Where.from_dict({"$or": [{"a": 1}, {"b": {"$in": [2, 3]}}]}).to_dict()
            {'$or': [{'a': {'$eq': 1}}, {'b': {'$in': [2, 3]}}]}
        """
        return _parse(data, "where")


def _flatten(where: Where, kind: type) -> tuple[Where, ...]:
    return where.conditions if isinstance(where, kind) else (where,)  # type: ignore[attr-defined]


@dataclass(frozen=True, eq=True)
class And(Where):
    conditions: tuple[Where, ...]

    def __post_init__(self) -> None:
        _check_conditions(self.conditions, "$and")
        object.__setattr__(self, "conditions", tuple(self.conditions))

    def to_dict(self) -> dict[str, Any]:
        return {"$and": [c.to_dict() for c in self.conditions]}


@dataclass(frozen=True, eq=True)
class Or(Where):
    conditions: tuple[Where, ...]

    def __post_init__(self) -> None:
        _check_conditions(self.conditions, "$or")
        object.__setattr__(self, "conditions", tuple(self.conditions))

    def to_dict(self) -> dict[str, Any]:
        return {"$or": [c.to_dict() for c in self.conditions]}


def _check_conditions(conditions: Any, op: str) -> None:
    if not isinstance(conditions, (tuple, list)) or not conditions:
        raise InvalidArgumentError(f"{op} needs a non-empty list of filters; got {conditions!r}")
    for i, c in enumerate(conditions):
        if not isinstance(c, Where):
            raise InvalidArgumentError(f"{op}[{i}] must be a filter; got {type(c).__name__}")


@dataclass(frozen=True, eq=True)
class Comparison(Where):
    """``key op value``, e.g. ``Comparison("year", "$gte", 2020)``."""

    key: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        key = key_name(self.key, "a filter key")
        if self.op not in _OPERATORS:
            raise InvalidArgumentError(f"unknown filter operator {self.op!r}; expected one of {list(_OPERATORS)}")
        if key.startswith("#"):
            allowed = _SPECIAL_FILTER_OPS.get(key)
            if allowed is None:
                raise InvalidArgumentError(
                    f"cannot filter on {key!r}; filters take metadata fields, '#id' and '#document'"
                )
            if self.op not in allowed:
                raise InvalidArgumentError(f"{key!r} can be filtered with {list(allowed)} only; got {self.op!r}")
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "value", _check_value(key, self.op, self.value))

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if self.op in _LIST_OPS else self.value
        return {self.key: {self.op: value}}


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, bool, int, float)):
        return value
    raise InvalidArgumentError(f"{where} must be a str, int, float or bool; got {value!r}")


def _check_value(key: str, op: str, value: Any) -> Any:
    where = f"the value of {key!r} {op}"
    if op in _LIST_OPS:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise InvalidArgumentError(f"{where} must be a list; got {value!r}")
        return tuple(_scalar(v, f"each item of {where}") for v in value)
    if op in ("$regex", "$not_regex") or key == "#document":
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{where} must be a string; got {value!r}")
        return value
    return _scalar(value, where)


def _parse(data: Any, path: str) -> Where:
    if isinstance(data, Where):
        return data
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(f"{path} must be a dict; got {type(data).__name__}")
    if len(data) != 1:
        raise InvalidArgumentError(
            f"{path} must have exactly one key (a field, '$and' or '$or'); got {sorted(map(str, data))} "
            "(combine several conditions with '$and')"
        )
    (field, cond), = data.items()
    if field in ("$and", "$or"):
        if not isinstance(cond, list) or not cond:
            raise InvalidArgumentError(f"{path}.{field} must be a non-empty list; got {cond!r}")
        parts = [_parse(c, f"{path}.{field}[{i}]") for i, c in enumerate(cond)]
        if len(parts) == 1:
            return parts[0]
        return And(tuple(parts)) if field == "$and" else Or(tuple(parts))
    if not isinstance(field, str) or not field or field.startswith("$"):
        raise InvalidArgumentError(f"{path} has an unknown operator or bad field {field!r}")
    if isinstance(cond, Mapping):
        if len(cond) != 1:
            raise InvalidArgumentError(
                f"{path}.{field} must hold exactly one operator; got {sorted(map(str, cond))}"
            )
        (op, value), = cond.items()
        if op not in _OPERATORS:
            raise InvalidArgumentError(
                f"{path}.{field} has unknown operator {op!r}; expected one of {list(_OPERATORS)}"
            )
        return Comparison(field, op, value)
    return Comparison(field, "$eq", cond)
