"""Chroma's filter language as typed trees: parsing, validation and a pure-Python evaluator.

``where`` filters metadata (plus the special keys ``#id`` and ``#document``); ``where_document``
filters the document text. Both are parsed once, at the edge, into frozen dataclasses; everything
inward (the SQL compiler in :mod:`retrieval.query.filter_sql`, the engine, the Search API) works on
these trees, never on raw dicts. Every node validates itself on construction, so a tree built
directly (``Comparison("page", "$gt", 10)``) is as safe as a parsed one. The Search API's
``K("page") > 10`` builds these same nodes (:mod:`retrieval.search.keys`), and ``&`` / ``|``
combine them: one filter algebra with one set of rules.

As in chromadb 1.5.9, ``where={}`` and ``where_document={}`` are errors (pass None for no filter),
and ``$and`` / ``$or`` need at least two clauses.

Semantics, shared by the SQL compiler and :func:`retrieval.query.evaluate.matches` (the Python oracle):

- Values have three type classes: str, number (int and float compare numerically, ``1 == 1.0``)
  and bool (``True`` never equals ``1``). A comparison never matches a value of another class.
- ``$ne``, ``$nin`` and ``$not_contains`` are exact complements of ``$eq``, ``$in`` and
  ``$contains``: they also match records without the key, with a value of another class, or with
  a list value where a scalar was compared.
- ``$contains`` / ``$not_contains`` on a metadata key test membership in a list value; scalar
  operators never match a list value.
- Document ``$contains`` is a literal, case-sensitive substring test; ``$regex`` is an RE2 search
  (linear time). A record without a document matches neither, and matches both negations.

Example::

    >>> w = parse_where({"$and": [{"page": {"$gte": 5}}, {"tag": "t3"}]})
    >>> parse_where(w.to_dict()) == w
    True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2

from ..errors import InvalidArgumentError

__all__ = [
    "And", "Comparison", "DocumentContains", "DocumentRegex", "Filter", "Or", "Where", "WhereDocument",
    "compile_regex", "parse_where", "parse_where_document", "type_class",
]

Scalar = str | int | float | bool

ID_KEY = "#id"
DOCUMENT_KEY = "#document"
EQ, NE, GT, GTE, LT, LTE, IN, NIN = "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"
CONTAINS, NOT_CONTAINS, REGEX, NOT_REGEX = "$contains", "$not_contains", "$regex", "$not_regex"
AND, OR = "$and", "$or"

METADATA_OPS = (EQ, NE, GT, GTE, LT, LTE, IN, NIN, CONTAINS, NOT_CONTAINS)
ID_OPS = (EQ, NE, IN, NIN)
DOCUMENT_OPS = (CONTAINS, NOT_CONTAINS, REGEX, NOT_REGEX)
RANGE_OPS = (GT, GTE, LT, LTE)
# Each negated operator is the exact complement of its positive one.
NEGATED = {NE: EQ, NIN: IN, NOT_CONTAINS: CONTAINS, NOT_REGEX: REGEX}

_INT64 = (-(2**63), 2**63 - 1)  # what SQLite can store
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # we raise a readable error instead of logging to stderr


def _ops(ops: tuple[str, ...]) -> str:
    return ", ".join(ops)


def type_class(value: Any) -> str | None:
    """The comparison class of a scalar: ``"bool"``, ``"number"``, ``"str"``, or None otherwise."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (int, float)):
        return "number"
    return None


@lru_cache(maxsize=512)
def compile_regex(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 (cached); an invalid or unsupported pattern is an error.

    Example::

        >>> compile_regex("^[a-z]+@").search("ab@c") is not None
        True
    """
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else e
        raise InvalidArgumentError(
            f"regex {pattern!r} is invalid or unsupported: {reason} (patterns use RE2 syntax: no "
            "backreferences or lookaround)"
        ) from None


def _check_str(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{what} {value!r} is not valid unicode (lone surrogate)") from None
    return str(value)


def _scalar(value: Any, what: str) -> Scalar:
    """Normalise one filter operand to a plain str, int, float or bool."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # numpy scalars (np.int64, np.bool_ ...) from array code
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return _check_str(value, what)
    if isinstance(value, numbers.Integral):
        value = int(value)
        if not _INT64[0] <= value <= _INT64[1]:
            raise InvalidArgumentError(f"{what} {value!r} is outside the 64-bit integer range")
        return value
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            raise InvalidArgumentError(f"{what} is NaN, which equals nothing; use a number")
        return value
    raise InvalidArgumentError(
        f"{what} must be a str, int, float or bool; got {type(value).__name__} {value!r}"
    )


def _typed(value: Any) -> Any:
    """A hashable form in which True, 1 and 1.0 differ only where the filter semantics do."""
    if isinstance(value, tuple):
        return tuple(_typed(v) for v in value)
    return (type_class(value), value)


class Filter:
    """Base of every filter node: combine nodes with ``&`` (and) and ``|`` (or).

    Example::

        >>> f = Comparison("year", GTE, 2020) & Comparison("tag", IN, ["a", "b"])
        >>> f.to_dict()
        {'$and': [{'year': {'$gte': 2020}}, {'tag': {'$in': ['a', 'b']}}]}
    """

    __slots__ = ()

    def to_dict(self) -> dict:
        raise NotImplementedError

    def __and__(self, other: Any) -> And:
        if not isinstance(other, Filter):
            return NotImplemented
        return And((*_flatten(self, And), *_flatten(other, And)))

    def __or__(self, other: Any) -> Or:
        if not isinstance(other, Filter):
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
    def from_dict(data: Mapping) -> Where:
        """Parse a where dict as chromadb's Search API does (``Where.from_dict``).

        Unlike ``where=`` in ``get``/``query``/``delete``, a ``$and`` / ``$or`` with one clause
        stands for that clause, as chromadb's Search API reads it.

        Example::

            >>> Filter.from_dict({"$and": [{"a": 1}]})
            Comparison(key='a', op='$eq', value=1)
        """
        if isinstance(data, Filter):
            return data
        if isinstance(data, Mapping) and not data:
            raise InvalidArgumentError("a where dict cannot be empty; pass None for no filter")
        return _parse_where(data, collapse_single=True)


def _flatten(node: Filter, kind: type) -> tuple:
    return node.children if isinstance(node, kind) else (node,)  # type: ignore[attr-defined]


@dataclass(frozen=True, eq=False)
class Comparison(Filter):
    """``{key: {op: value}}``: one metadata key, ``#id`` or ``#document`` against an operand.

    ``value`` is a scalar, or a tuple of scalars of one class for ``$in`` / ``$nin``.
    """

    key: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        key, op, value = self.key, self.op, self.value
        if not isinstance(key, str):
            raise InvalidArgumentError(f"where keys must be strings; got {type(key).__name__} {key!r}")
        _check_str(key, "where key")
        if key.startswith("$"):
            raise InvalidArgumentError(
                f"where key {key!r} is not a metadata key; logical operators are $and and $or, and "
                "comparison operators go under a key: {'key': {'$eq': value}}"
            )
        if key.startswith("#") and key not in (ID_KEY, DOCUMENT_KEY):
            raise InvalidArgumentError(
                f"where key {key!r} is not supported; the special keys are {ID_KEY!r} and {DOCUMENT_KEY!r}"
            )
        allowed = ID_OPS if key == ID_KEY else DOCUMENT_OPS if key == DOCUMENT_KEY else METADATA_OPS
        if op not in allowed:
            hint = " (e.g. {'#document': {'$contains': 'text'}})" if key == DOCUMENT_KEY else ""
            if op in (REGEX, NOT_REGEX) and key != DOCUMENT_KEY:
                hint = f" ({op} matches the document only: {{'#document': {{{op!r}: pattern}}}}, K.DOCUMENT.regex(...))"
            raise InvalidArgumentError(
                f"where operator {op!r} is not supported for key {key!r}; use one of {_ops(allowed)}{hint}"
            )
        what = f"operand of {op!r} on key {key!r}"
        if op in (IN, NIN):
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise InvalidArgumentError(
                    f"{what} must be a list of values, e.g. {{{key!r}: {{{op!r}: [1, 2]}}}}; got {value!r}"
                )
            if not value:
                raise InvalidArgumentError(f"{what} is an empty list; give at least one value")
            value = tuple(_scalar(v, f"item of {what}") for v in value)
            classes = {type_class(v) for v in value}
            if len(classes) > 1:
                raise InvalidArgumentError(
                    f"{what} mixes types ({', '.join(sorted(classes))}) in {list(value)!r}; use one type"
                )
        else:
            if isinstance(value, (list, tuple, Mapping)) or value is None:
                hint = ""
                if isinstance(value, (list, tuple)) and op in (EQ, NE):
                    hint = f"; to match any of several values use {{{key!r}: {{'$in': [...]}}}}"
                raise InvalidArgumentError(f"{what} must be a single str, int, float or bool; got {value!r}{hint}")
            value = _scalar(value, what)
            if op in RANGE_OPS and type_class(value) != "number":
                raise InvalidArgumentError(
                    f"{what} must be an int or float; got {type(value).__name__} {value!r} "
                    f"($gt, $gte, $lt and $lte compare numbers only)"
                )
        if key == ID_KEY and any(type_class(v) != "str" for v in _items(value)):
            raise InvalidArgumentError(f"{what} must be a string id (or a list of them); got {value!r}")
        if key == DOCUMENT_KEY:
            if not isinstance(value, str) or not value:
                raise InvalidArgumentError(f"{what} must be a non-empty string; got {value!r}")
            if op in (REGEX, NOT_REGEX):
                compile_regex(value)
        object.__setattr__(self, "value", value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Comparison):
            return NotImplemented
        return (self.key, self.op, _typed(self.value)) == (other.key, other.op, _typed(other.value))

    def __hash__(self) -> int:
        return hash((Comparison, self.key, self.op, _typed(self.value)))

    def to_dict(self) -> dict:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {self.key: {self.op: value}}


@dataclass(frozen=True)
class DocumentContains(Filter):
    """``{"$contains": text}`` (or ``$not_contains`` when ``negate``): a literal substring test."""

    text: str
    negate: bool = False

    def __post_init__(self) -> None:
        op = NOT_CONTAINS if self.negate else CONTAINS
        if not isinstance(self.text, str) or not self.text:
            raise InvalidArgumentError(f"where_document {op!r} needs a non-empty string; got {self.text!r}")
        object.__setattr__(self, "text", _check_str(self.text, f"where_document {op!r} operand"))
        object.__setattr__(self, "negate", bool(self.negate))

    def to_dict(self) -> dict:
        return {NOT_CONTAINS if self.negate else CONTAINS: self.text}


@dataclass(frozen=True)
class DocumentRegex(Filter):
    """``{"$regex": pattern}`` (or ``$not_regex`` when ``negate``): an RE2 search, compiled here."""

    pattern: str
    negate: bool = False

    def __post_init__(self) -> None:
        op = NOT_REGEX if self.negate else REGEX
        if not isinstance(self.pattern, str) or not self.pattern:
            raise InvalidArgumentError(f"where_document {op!r} needs a non-empty pattern; got {self.pattern!r}")
        object.__setattr__(self, "pattern", _check_str(self.pattern, f"where_document {op!r} pattern"))
        object.__setattr__(self, "negate", bool(self.negate))
        compile_regex(self.pattern)

    def to_dict(self) -> dict:
        return {NOT_REGEX if self.negate else REGEX: self.pattern}


def _children(children: Any, op: str) -> tuple:
    if isinstance(children, (str, bytes, Mapping)) or not isinstance(children, (list, tuple)):
        raise InvalidArgumentError(f"{op!r} takes a list of filters, e.g. {{{op!r}: [f1, f2]}}; got {children!r}")
    for child in children:
        if not isinstance(child, _NODE_TYPES):
            raise InvalidArgumentError(f"{op!r} children must be parsed filter nodes; got {child!r}")
    if len(children) < 2:
        # chromadb 1.5.9 refuses these too; a one-clause list is almost always a mistake.
        fix = "use that filter itself" if children else "pass None for no filter"
        raise InvalidArgumentError(
            f"{op!r} needs at least two filters; got {len(children)}: {fix}, without {op!r}"
        )
    return tuple(children)


@dataclass(frozen=True)
class And(Filter):
    """``{"$and": [...]}``: every child matches (two children or more)."""

    children: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", _children(self.children, AND))

    @property
    def conditions(self) -> tuple:
        """The children, under chromadb's Search API name."""
        return self.children

    def to_dict(self) -> dict:
        return {AND: [c.to_dict() for c in self.children]}


@dataclass(frozen=True)
class Or(Filter):
    """``{"$or": [...]}``: some child matches (two children or more)."""

    children: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", _children(self.children, OR))

    @property
    def conditions(self) -> tuple:
        """The children, under chromadb's Search API name."""
        return self.children

    def to_dict(self) -> dict:
        return {OR: [c.to_dict() for c in self.children]}


_NODE_TYPES = (Comparison, DocumentContains, DocumentRegex, And, Or)
Where = Comparison | And | Or
WhereDocument = DocumentContains | DocumentRegex | And | Or


def _items(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _one_item(d: Any, what: str, example: str, key: Any = None) -> tuple[Any, Any]:
    """The single (key, value) of a filter dict; ``key`` names the metadata key of an operator dict."""
    if not isinstance(d, Mapping):
        raise InvalidArgumentError(f"{what} must be a dict like {example}; got {type(d).__name__} {d!r}")
    if len(d) != 1:
        if not d:
            raise InvalidArgumentError(f"{what} is an empty dict; expected one entry like {example}")
        parts = ", ".join(repr({k: v} if key is None else {key: {k: v}}) for k, v in d.items())
        raise InvalidArgumentError(
            f"{what} {d!r} has {len(d)} entries but must have exactly one; combine them with "
            f"{{'$and': [{parts}]}}"
        )
    return next(iter(d.items()))


def parse_where(where: Mapping | Where | None) -> Where | None:
    """Parse a chromadb ``where`` dict into a typed tree (None means no filter).

    A tree already parsed (or built with ``K(...)``) is returned as is. ``{}`` is an error, as in
    chromadb 1.5.9: pass None for no filter.

    Example::

        >>> parse_where({"page": 10})
        Comparison(key='page', op='$eq', value=10)
    """
    if where is None:
        return None
    if isinstance(where, (Comparison, And, Or)):
        return where
    if isinstance(where, Mapping) and not where:
        raise InvalidArgumentError("where={} is an empty filter; pass where=None (or leave it out) to match every record")
    return _parse_where(where)


def _parse_where(d: Any, collapse_single: bool = False) -> Where:
    key, value = _one_item(d, "where", "{'key': value}")
    if key in (AND, OR):
        if isinstance(value, (list, tuple)):
            value = [_parse_where(child, collapse_single) for child in value]
            if collapse_single and len(value) == 1:
                return value[0]
        return (And if key == AND else Or)(value)
    if isinstance(key, str) and key.startswith("$"):
        raise InvalidArgumentError(
            f"where operator {key!r} is not supported at the top of a filter; use $and or $or, or a "
            f"metadata key: {{'key': {{{key!r}: ...}}}}"
        )
    if isinstance(value, Mapping):
        op, operand = _one_item(value, f"operator dict of key {key!r}", "{'$eq': value}", key)
        if not (isinstance(op, str) and op.startswith("$")):
            raise InvalidArgumentError(
                f"{op!r} under key {key!r} is not an operator; nested metadata is not supported; "
                f"use one of {_ops(METADATA_OPS)}"
            )
        return Comparison(key, op, operand)
    if isinstance(value, (list, tuple)):
        raise InvalidArgumentError(
            f"where value of key {key!r} is a list {value!r}; to match any of them use "
            f"{{{key!r}: {{'$in': {list(value)!r}}}}}, or '$contains' for a list-valued key"
        )
    return Comparison(key, EQ, value)


def parse_where_document(where_document: Mapping | WhereDocument | None) -> WhereDocument | None:
    """Parse a chromadb ``where_document`` dict into a typed tree (None means no filter).

    A tree already parsed is returned as is. ``{}`` is an error, as in chromadb 1.5.9.

    Example::

        >>> parse_where_document({"$not_contains": "draft"})
        DocumentContains(text='draft', negate=True)
    """
    if where_document is None:
        return None
    if isinstance(where_document, (DocumentContains, DocumentRegex, And, Or)):
        return where_document
    if isinstance(where_document, Mapping) and not where_document:
        raise InvalidArgumentError(
            "where_document={} is an empty filter; pass where_document=None (or leave it out) to match every record"
        )
    return _parse_where_document(where_document)


def _parse_where_document(d: Any) -> WhereDocument:
    op, value = _one_item(d, "where_document", "{'$contains': 'text'}")
    if op in (AND, OR):
        if isinstance(value, (list, tuple)):
            value = [_parse_where_document(child) for child in value]
        return (And if op == AND else Or)(value)
    if op in (CONTAINS, NOT_CONTAINS):
        return DocumentContains(value, negate=op == NOT_CONTAINS)
    if op in (REGEX, NOT_REGEX):
        return DocumentRegex(value, negate=op == NOT_REGEX)
    hint = ""
    if not (isinstance(op, str) and op.startswith("$")):
        hint = f"; where_document filters the document text; to filter metadata key {op!r} use where="
    raise InvalidArgumentError(
        f"where_document operator {op!r} is not supported; use one of {_ops(DOCUMENT_OPS + (AND, OR))}{hint}"
    )
