"""chromadb's ``chromadb.execution.expression`` import path: the Search API's builders."""

from __future__ import annotations

from retrieval.execution.expression.operator import *  # noqa: F403 - the same names, by design
from retrieval.execution.expression.operator import __all__ as _operator_names
from retrieval.execution.expression.operator import Where
from retrieval.execution.expression.plan import Search

SearchWhere = Where

__all__ = ["Search", "SearchWhere", *_operator_names]
