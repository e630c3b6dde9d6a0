"""chromadb's ``chromadb.execution.expression.plan`` import path: :class:`Search`."""

from __future__ import annotations

from retrieval.search import Search

__all__ = ["Search"]
