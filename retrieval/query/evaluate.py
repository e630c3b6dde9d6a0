"""The reference semantics of filters, in Python: does one record pass a parsed filter?

The SQL compiler (``retrieval.query.filter_sql``) is the fast path; this evaluator is the oracle the
property and stateful tests compare it with, and the definition a reader can check.
"""

from __future__ import annotations

from typing import Any, Mapping

from retrieval.query.filters import (
    CONTAINS,
    DOCUMENT_KEY,
    EQ,
    GT,
    GTE,
    ID_KEY,
    IN,
    LT,
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


def _same(a: Any, b: Any) -> bool:
    return type_class(a) == type_class(b) and a == b


def _metadata_hit(op: str, actual: Any, operand: Any) -> bool:
    """The positive operator (never a negated one) against one metadata value (None if missing)."""
    if op == CONTAINS:
        return isinstance(actual, (list, tuple)) and any(_same(e, operand) for e in actual)
    if type_class(actual) is None:  # missing, a list, or something unindexable
        return False
    if op == EQ:
        return _same(actual, operand)
    if op == IN:
        return any(_same(actual, x) for x in operand)
    if type_class(actual) != "number":
        return False
    if op == GT:
        return actual > operand
    if op == GTE:
        return actual >= operand
    if op == LT:
        return actual < operand
    return actual <= operand  # LTE


def _document_hit(op: str, document: str | None, operand: str) -> bool:
    if document is None:
        return False
    if op == CONTAINS:
        return operand in document
    return compile_regex(operand).search(document) is not None


def _eval(node: Any, id: str, metadata: Mapping, document: str | None) -> bool:
    if isinstance(node, And):
        return all(_eval(c, id, metadata, document) for c in node.children)
    if isinstance(node, Or):
        return any(_eval(c, id, metadata, document) for c in node.children)
    if isinstance(node, DocumentContains):
        return _document_hit(CONTAINS, document, node.text) != node.negate
    if isinstance(node, DocumentRegex):
        return _document_hit(REGEX, document, node.pattern) != node.negate
    if not isinstance(node, Comparison):
        raise TypeError(f"expected a parsed filter node; got {node!r} (parse dicts with parse_where first)")
    op = NEGATED.get(node.op, node.op)
    if node.key == ID_KEY:
        hit = id == node.value if op == EQ else id in node.value
    elif node.key == DOCUMENT_KEY:
        hit = _document_hit(op, document, node.value)
    else:
        hit = _metadata_hit(op, metadata.get(node.key), node.value)
    return hit != (node.op in NEGATED)


def matches(
    where: Where | None,
    where_document: WhereDocument | None,
    *,
    id: str,
    metadata: Mapping[str, Any] | None,
    document: str | None,
) -> bool:
    """Whether one record passes both filters (None passes everything): the reference semantics.

    Example::

        >>> from retrieval.query.filters import parse_where, parse_where_document
        >>> matches(parse_where({"tags": {"$contains": "x"}}), parse_where_document({"$contains": "b"}),
        ...         id="1", metadata={"tags": ["x", "y"]}, document="abc")
        True
    """
    metadata = metadata or {}
    return all(
        _eval(node, id, metadata, document) for node in (where, where_document) if node is not None
    )
