"""Embedding a Search's text and image Knn queries before it crosses the Backend seam.

A backend evaluates Searches whose Knn queries are vectors only (a server never builds a model
named by a request). The collection handle therefore embeds every ``str`` or image query with the
right function: the collection's embedding function for ``#embedding``, the key's sparse function
for a sparse key. The rewrite works on the wire form (``to_dict``/``from_dict``), which already
knows every rank operator, so no operator needs to know about embedding.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from retrieval.search.plan import Search
from retrieval.search.query import normalize_query, query_to_wire

# (key, query: str or RGB uint8 image array) -> the embedded query (dense array or SparseVector)
Embed = Callable[[str, Any], Any]


def embed_knn_queries(searches: Sequence[Search], embed: Embed) -> list[Search]:
    """The searches with every text or image Knn query replaced by its embedding."""
    return [_embed_one(search, embed) for search in searches]


def _embed_one(search: Search, embed: Embed) -> Search:
    wire = search.to_dict()
    if not _rewrite(wire.get("rank"), embed):
        return search
    return Search.from_dict(wire)


def _rewrite(node: Any, embed: Embed) -> bool:
    """Replace text/image queries in every ``$knn`` below ``node``; True when anything changed."""
    changed = False
    if isinstance(node, dict):
        body = node.get("$knn")
        if isinstance(body, dict):
            query = normalize_query(body["query"])
            if isinstance(query, str) or (hasattr(query, "ndim") and query.ndim == 3):
                body["query"] = query_to_wire(embed(body.get("key", "#embedding"), query))
                return True
            return False
        for value in node.values():
            changed |= _rewrite(value, embed)
    elif isinstance(node, list):
        for value in node:
            changed |= _rewrite(value, embed)
    return changed
