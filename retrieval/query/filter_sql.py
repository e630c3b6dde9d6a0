"""The SQLite side of filtering: the metadata index table and the where -> SQL compiler.

Metadata is indexed one row per scalar value or list element::

    (key, tag, value, label)     tag: 1 str, 2 number, 3 bool; +8 when the row is a list element

The type class lives in ``tag`` and the value in one untyped column, so SQLite keeps TEXT, INTEGER
and REAL as given: ints and floats share tag 2 and compare numerically with each other, bools are
stored as 0/1 under their own tag and never meet numbers, and strings compare byte-wise. The table
is ``WITHOUT ROWID`` with ``(key, tag, value, label)`` as its primary key, so one range scan of the
clustered key answers ``key = ? AND tag = ? AND value <op> ?`` with the labels in hand (no second
lookup); a secondary index on ``label`` serves deletes.

A filter compiles to a boolean expression over ``records r``: metadata conditions become
``r.label [NOT] IN (SELECT label FROM metadata_index WHERE ...)``, which SQLite evaluates once per
statement, and negated operators are ``NOT IN`` of the positive one (the same complement
:func:`~retrieval.query.evaluate.matches` uses). Values only ever travel as parameters.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidArgumentError
from .filters import (
    CONTAINS,
    DOCUMENT_KEY,
    EQ,
    GT,
    GTE,
    ID_KEY,
    IN,
    LT,
    LTE,
    NEGATED,
    REGEX,
    And,
    Comparison,
    DocumentContains,
    DocumentRegex,
    Or,
    Where,
    WhereDocument,
    compile_regex,
    type_class,
)

__all__ = [
    "METADATA_INDEX_DDL", "METADATA_INDEX_DELETE", "METADATA_INDEX_INSERT", "collection_filter", "compile_filter",
    "metadata_index_rows", "register_sql_functions",
]

TAGS = {"str": 1, "number": 2, "bool": 3}
LIST_ELEMENT = 8

# Run with ``executescript`` (it holds several statements).
METADATA_INDEX_DDL = """
CREATE TABLE IF NOT EXISTS metadata_index (
    key   TEXT    NOT NULL,
    tag   INTEGER NOT NULL,  -- 1 str, 2 number, 3 bool; +8 for an element of a list value
    value         NOT NULL,  -- no declared type: TEXT / INTEGER / REAL stored as given
    label INTEGER NOT NULL,  -- records.label
    PRIMARY KEY (key, tag, value, label)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metadata_index_label ON metadata_index (label);
"""

# OR IGNORE: SQLite may call two list elements equal that Python kept apart; either row does.
METADATA_INDEX_INSERT = "INSERT OR IGNORE INTO metadata_index (key, tag, value, label) VALUES (?, ?, ?, ?)"
METADATA_INDEX_DELETE = "DELETE FROM metadata_index WHERE label = ?"

_SQL_OPS = {EQ: "=", GT: ">", GTE: ">=", LT: "<", LTE: "<="}
# Above this many strings an IN list travels as one JSON parameter, clear of SQLite's variable limit.
JSON_LIST_THRESHOLD = 256
_INT64 = (-(2**63), 2**63 - 1)


def _index_value(key: str, value: Any) -> tuple[int, Any] | None:
    """(tag, sql value) of one scalar, or None for a value no filter can match (NaN)."""
    cls = type_class(value)
    if cls is None:
        raise InvalidArgumentError(
            f"metadata key {key!r} has value {value!r} ({type(value).__name__}); values must be str, "
            "int, float, bool or a list of those"
        )
    if cls == "bool":
        return TAGS[cls], int(value)
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise InvalidArgumentError(f"metadata key {key!r} has int {value!r} outside the 64-bit range")
    if isinstance(value, float) and math.isnan(value):
        return None  # NaN equals nothing and orders with nothing: no row behaves identically
    return TAGS[cls], value


def metadata_index_rows(label: int, metadata: Mapping[str, Any] | None) -> list[tuple]:
    """Rows for :data:`METADATA_INDEX_INSERT` describing one record's metadata.

    ``None`` values are skipped (a deleted key); list values give one row per distinct element.

    Example::

        >>> metadata_index_rows(7, {"tag": "t3", "ok": True, "xs": [1, 2, 1.0]})
        [('tag', 1, 't3', 7), ('ok', 3, 1, 7), ('xs', 10, 1, 7), ('xs', 10, 2, 7)]
    """
    rows: list[tuple] = []
    for key, value in (metadata or {}).items():
        if not isinstance(key, str):
            raise InvalidArgumentError(f"metadata keys must be strings; got {type(key).__name__} {key!r}")
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            seen: set = set()
            for element in value:
                if isinstance(element, (list, tuple, Mapping)):
                    raise InvalidArgumentError(f"metadata key {key!r}: nested lists are not supported")
                tagged = _index_value(key, element)
                # (tag, value) keeps True apart from 1 while 1 and 1.0 collapse, as SQLite sees them.
                if tagged is not None and tagged not in seen:
                    seen.add(tagged)
                    rows.append((key, tagged[0] + LIST_ELEMENT, tagged[1], label))
        else:
            tagged = _index_value(key, value)
            if tagged is not None:
                rows.append((key, tagged[0], tagged[1], label))
    return rows


def register_sql_functions(conn: sqlite3.Connection) -> None:
    """Register ``regexp(pattern, text)`` (RE2 search, cached compiles; NULL text gives NULL).

    It also makes SQLite's ``text REGEXP pattern`` operator work on this connection.
    """
    conn.create_function("regexp", 2, _sql_regexp, deterministic=True)


def _sql_regexp(pattern: str | None, text: str | None) -> int | None:
    if pattern is None or text is None:
        return None
    return 1 if compile_regex(pattern).search(text) is not None else 0


def compile_filter(where: Where | None, where_document: WhereDocument | None) -> tuple[str, list]:
    """Compile parsed filters to a SQL boolean expression over ``records r`` and its parameters.

    Run as ``SELECT r.label FROM records r WHERE r.collection_id = ? AND (<expr>)`` on a connection
    passed through :func:`register_sql_functions`.

    Example::

        >>> from retrieval.query.filters import parse_where
        >>> compile_filter(parse_where({"#id": {"$ne": "a"}}), None)
        ('r.id <> ?', ['a'])
    """
    sql, params, _ = _compile_conjuncts(where, where_document)
    return sql, params


def collection_filter(
    collection_id: str,
    where: Where | None,
    where_document: WhereDocument | None,
    *,
    by_ids: bool = False,
    walk_labels: bool = False,
) -> tuple[str, list]:
    """A ``WHERE`` clause over ``records r`` for one collection's records matching the filters
    (``by_ids``: the caller adds ``AND r.id IN (...)``, and the id index drives the query).

    Otherwise, when some top-level condition is a positive metadata lookup, the query is driven from
    the metadata index: the unary ``+`` keeps SQLite (which has no statistics) from walking every
    record of the collection through its ``(collection_id, id)`` index and testing each one instead.
    A 10% window at 100k records: 4 ms instead of 15.

    ``walk_labels``: the caller reads the first few records in label order (``ORDER BY r.label
    LIMIT``) of a collection that holds most of the database; the table itself is then walked in
    label (rowid) order and stops after them, instead of sorting the whole collection first.
    """
    sql, params, indexed = _compile_conjuncts(where, where_document)
    scope = "+r.collection_id" if (indexed or walk_labels) and not by_ids else "r.collection_id"
    return f"{scope} = ? AND {sql}", [collection_id, *params]


def _compile_conjuncts(where: Where | None, where_document: WhereDocument | None) -> tuple[str, list, bool]:
    """The filters as ``c1 AND c2 ...`` (top-level ``$and``s flattened), their parameters, and
    whether some ``ci`` is a positive metadata-index lookup."""
    params: list = []
    parts: list[str] = []
    indexed = False
    for node in (where, where_document):
        for conjunct in _top_level(node):
            if isinstance(conjunct, list):  # bounds of one key, merged into a single range scan
                parts.append(_metadata_range(conjunct, params))
                indexed = True
            else:
                parts.append(_compile(conjunct, params))
                indexed = indexed or (isinstance(conjunct, Comparison) and _positive_lookup(conjunct))
    return (" AND ".join(parts) if parts else "1"), params, indexed


def _top_level(node: Any) -> list:
    """The conjuncts of a filter: nested ``$and``s flattened, range bounds grouped per key."""
    if node is None:
        return []
    if not isinstance(node, And):
        return [node]
    ranges, rest = _ranges_by_key(node.children)
    return list(ranges.values()) + [c for child in rest for c in _top_level(child)]


def _positive_lookup(node: Comparison) -> bool:
    return node.key not in (DOCUMENT_KEY, ID_KEY) and node.op not in NEGATED


def _compile(node: Any, params: list) -> str:
    if isinstance(node, And):
        ranges, rest = _ranges_by_key(node.children)
        parts = [_metadata_range(bounds, params) for bounds in ranges.values()]
        return "(" + " AND ".join(parts + [_compile(c, params) for c in rest]) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(_compile(c, params) for c in node.children) + ")"
    if isinstance(node, DocumentContains):
        return _document(CONTAINS, node.text, node.negate, params)
    if isinstance(node, DocumentRegex):
        return _document(REGEX, node.pattern, node.negate, params)
    if not isinstance(node, Comparison):
        raise TypeError(f"expected a parsed filter node; got {node!r} (parse dicts with parse_where first)")
    negate = node.op in NEGATED
    op = NEGATED.get(node.op, node.op)
    if node.key == DOCUMENT_KEY:
        return _document(op, node.value, negate, params)
    if node.key == ID_KEY:
        if op == EQ:
            params.append(node.value)
            return "r.id <> ?" if negate else "r.id = ?"
        return f"r.id {'NOT IN' if negate else 'IN'} {_value_list(node.value, params)}"
    return _metadata(node.key, op, node.value, negate, params)


def _document(op: str, operand: str, negate: bool, params: list) -> str:
    params.append(operand)
    # instr, not LIKE: a literal, case-sensitive test in which % _ \ mean themselves. A NULL
    # document gives NULL, which coalesce turns into "no hit".
    if op == CONTAINS:
        return f"coalesce(instr(r.document, ?), 0) {'=' if negate else '>'} 0"
    return f"coalesce(regexp(?, r.document), 0) = {0 if negate else 1}"


def _metadata(key: str, op: str, operand: Any, negate: bool, params: list) -> str:
    first = operand[0] if isinstance(operand, tuple) else operand
    tag = TAGS[type_class(first)] + (LIST_ELEMENT if op == CONTAINS else 0)
    params.extend((key, tag))
    if op == IN:
        test = f"m.value IN {_value_list(operand, params)}"
    else:
        params.append(_sql_value(operand))
        test = f"m.value {_SQL_OPS.get(op, '=')} ?"  # $contains is equality with an element row
    return (
        f"r.label {'NOT IN' if negate else 'IN'} "
        f"(SELECT m.label FROM metadata_index m WHERE m.key = ? AND m.tag = ? AND {test})"
    )


_RANGE_OPS = (GT, GTE, LT, LTE)


def _ranges_by_key(children) -> tuple[dict, list]:
    """Split an $and's children into range bounds on metadata keys that have two or more of them (a
    window such as ``lo <= i < hi``: one index range scan instead of two half-collection sets to
    intersect) and the rest."""
    bounds: dict[tuple[str, int], list] = {}
    for child in children:
        if isinstance(child, Comparison) and child.op in _RANGE_OPS and child.key not in (DOCUMENT_KEY, ID_KEY):
            bounds.setdefault((child.key, TAGS[type_class(child.value)]), []).append(child)
    merged = {key: found for key, found in bounds.items() if len(found) > 1}
    taken = {id(c) for found in merged.values() for c in found}
    return merged, [c for c in children if id(c) not in taken]


def _metadata_range(bounds: list, params: list) -> str:
    """One range scan for two or more bounds on the same key and type class."""
    params.extend((bounds[0].key, TAGS[type_class(bounds[0].value)]))
    tests = []
    for bound in bounds:
        params.append(_sql_value(bound.value))
        tests.append(f"m.value {_SQL_OPS[bound.op]} ?")
    return f"r.label IN (SELECT m.label FROM metadata_index m WHERE m.key = ? AND m.tag = ? AND {' AND '.join(tests)})"


def _sql_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _value_list(values: tuple, params: list) -> str:
    if len(values) > JSON_LIST_THRESHOLD and all(isinstance(v, str) and "\x00" not in v for v in values):
        # SQLite's JSON reader truncates strings at \u0000, so those stay on the parameter path.
        params.append(json.dumps(values, ensure_ascii=False))
        return "(SELECT j.value FROM json_each(?) j)"
    params.extend(_sql_value(v) for v in values)
    return "(" + ", ".join(["?"] * len(values)) + ")"
