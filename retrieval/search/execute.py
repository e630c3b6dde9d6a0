"""Evaluating a ``Search`` over an abstract engine.

The rules (chromadb's Search API):

1. ``rank=None``: the ids matching the filter in insertion order (``engine.scan``), unscored.
2. Otherwise every ``Knn`` of the expression runs once (``engine.knn``, with the search's
   filter). A document is a candidate if it is in at least one Knn's top ``limit`` and in
   every Knn whose ``default`` is ``None``. A Knn it is missing from contributes that Knn's
   ``default``; ``return_rank=True`` contributes the 0-based position instead of the distance.
3. The expression is evaluated per candidate; results sort by score ascending (NaN last,
   ties by id).
4. ``group_by`` partitions candidates by the metadata values of its keys (a missing key is
   ``None``, so such records form their own group), keeps ``MinK``/``MaxK`` ``k`` per group,
   and the survivors are sorted by score again.
5. ``limit``: skip ``offset``, keep ``limit``. 6. ``select``: fetch only the chosen fields.

Engine calls: ``knn`` once per distinct Knn node; ``fetch(ids, {"metadata"})`` once for the
candidates when grouping; ``fetch(page_ids, fields)`` once for the returned page when any
field besides ids and scores is selected; ``scan`` once when there is no rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from retrieval.errors import InvalidArgumentError
from retrieval.query.filters import Where
from retrieval.search.plan import GroupBy, MaxK, Search
from retrieval.search.rank import Knn, Rank
from retrieval.search.result import ResultSet, SearchResult

__all__ = ["SearchEngine", "execute", "execute_many"]

# Selected special key -> the engine field it needs.
_FIELD_OF_KEY = {
    "#document": "document",
    "#embedding": "embedding",
    "#metadata": "metadata",
    "#uri": "uri",
    "#data": "data",
}


class SearchEngine(Protocol):
    """What :func:`execute` needs from a collection."""

    def knn(self, query: Any, *, key: str, limit: int, where: Where | None) -> list[tuple[str, float]]:
        """The top-``limit`` (record id, distance) pairs, ascending distance, among records
        matching ``where`` (a parsed filter tree, validated when it was built). ``query`` arrives
        embedded: a dense vector, or a ``SparseVector`` for a sparse key (the collection handle
        embeds text and images before a Search crosses the Backend seam). Raises
        InvalidArgumentError on a dimension mismatch or an unknown key."""
        ...

    def scan(self, *, where: Where | None, limit: int | None, offset: int) -> list[str]:
        """Record ids matching ``where`` in insertion order (for rank=None)."""
        ...

    def fetch(self, ids: list[str], fields: set[str]) -> dict[str, dict]:
        """Per id, the requested fields among 'document', 'embedding', 'metadata', 'uri', 'data'."""
        ...


def execute_many(searches: Search | Sequence[Search], engine: SearchEngine) -> SearchResult:
    """Run a batch of searches; one inner list per search in the result.

    Example:
        >>> from retrieval.search.rank import Knn
        >>> class Two:
        ...     def knn(self, query, *, key, limit, where): return [("b", 0.1), ("a", 0.4)][:limit]
        ...     def scan(self, *, where, limit, offset): return ["a", "b"][offset:]
        ...     def fetch(self, ids, fields): return {i: {"document": i.upper()} for i in ids}
        >>> execute_many(Search(rank=Knn(query=[1.0]), select=["#document", "#score"]), Two()).rows()
        [[{'id': 'b', 'document': 'B', 'score': 0.1}, {'id': 'a', 'document': 'A', 'score': 0.4}]]
    """
    if isinstance(searches, Search):
        searches = [searches]
    for i, s in enumerate(searches):
        if not isinstance(s, Search):
            raise InvalidArgumentError(f"searches[{i}] must be a Search; got {type(s).__name__}")
    return SearchResult.from_sets([execute(s, engine) for s in searches])


def execute(search: Search, engine: SearchEngine) -> ResultSet:
    """Run one search against ``engine`` (rules in the module docstring)."""
    where = search.where_clause  # a parsed tree; engines take it as is, never re-parse a dict
    rank, group, page = search.rank_expr, search.group, search.page
    if rank is None:
        if group is not None:
            raise InvalidArgumentError("group_by needs a rank expression: add .rank(Knn(...))")
        ids = list(engine.scan(where=where, limit=page.limit, offset=page.offset))
        scores: list[float] | None = None
    else:
        ranked = _rank(rank, engine, where)
        if group is not None:
            ranked = _group(ranked, group, engine)
        end = None if page.limit is None else page.offset + page.limit
        ranked = ranked[page.offset : end]
        ids = [doc_id for doc_id, _ in ranked]
        scores = [score for _, score in ranked]
    return _project(ids, scores, search.selection.keys, engine)


def _rank(rank: Rank, engine: SearchEngine, where: Where | None) -> list[tuple[str, float]]:
    knns = list({id(k): k for k in rank.knns()}.values())
    if not knns:
        raise InvalidArgumentError("a rank expression must contain at least one Knn(...)")
    hits: dict[int, dict[str, tuple[int, float]]] = {}
    order: dict[str, None] = {}  # candidates in first-seen order
    for knn in knns:
        found: dict[str, tuple[int, float]] = {}
        for doc_id, distance in list(engine.knn(knn.query, key=knn.key, limit=knn.limit, where=where))[: knn.limit]:
            if doc_id not in found:
                found[doc_id] = (len(found), float(distance))
                order[doc_id] = None
        hits[id(knn)] = found
    required = [hits[id(k)] for k in knns if k.default is None]
    candidates = [d for d in order if all(d in found for found in required)]
    if not candidates:
        return []

    def values(knn: Knn) -> np.ndarray:
        found = hits[id(knn)]
        default = math.nan if knn.default is None else float(knn.default)
        pick = 0 if knn.return_rank else 1
        return np.array([found[d][pick] if d in found else default for d in candidates], dtype=np.float64)

    scores = np.asarray(rank.evaluate(values, len(candidates)), dtype=np.float64)
    return _sorted([(d, float(s)) for d, s in zip(candidates, scores)])


def _sorted(ranked: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    return sorted(ranked, key=lambda r: (math.isnan(r[1]), 0.0 if math.isnan(r[1]) else r[1], r[0]))


def _group(ranked: list[tuple[str, float]], group: GroupBy, engine: SearchEngine) -> list[tuple[str, float]]:
    # Group keys are always metadata fields, so the candidates' metadata is always needed.
    records = engine.fetch([d for d, _ in ranked], {"metadata"}) if ranked else {}
    groups: dict[tuple[Any, ...], list[tuple[str, float, dict]]] = {}
    for doc_id, score in ranked:
        metadata = (records.get(doc_id) or {}).get("metadata") or {}
        label = tuple(_group_value(metadata.get(k)) for k in group.keys)
        groups.setdefault(label, []).append((doc_id, score, metadata))
    agg = group.aggregate
    descending = isinstance(agg, MaxK)
    kept: list[tuple[str, float]] = []
    for members in groups.values():
        members.sort(key=lambda m: m[0])  # final tie-break: id
        for key in reversed(agg.keys):  # stable sorts, least significant key first
            def sort_key(m: tuple[str, float, dict], key: str = key) -> tuple[Any, ...]:
                value = m[1] if key == "#score" else m[2].get(key)
                return _order_value(value, descending)
            members.sort(key=sort_key, reverse=descending)
        kept.extend((d, s) for d, s, _ in members[: agg.k])
    return _sorted(kept)


def _group_value(value: Any) -> Any:
    """A hashable group label that keeps True, 1 and "1" apart."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_group_value(v) for v in value))
    return ("other", repr(value))


def _order_value(value: Any, descending: bool) -> tuple[Any, ...]:
    """Sort key putting missing values (and NaN) last in either direction."""
    # Descending groups are sorted with reverse=True, so there "present" must compare higher.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0 if descending else 1, 0, 0)
    present = 1 if descending else 0
    if isinstance(value, bool):
        return (present, 0, value)
    if isinstance(value, (int, float)):
        return (present, 1, value)
    if isinstance(value, str):
        return (present, 2, value)
    return (present, 3, repr(value))


def _project(ids: list[str], scores: list[float] | None, keys: tuple[str, ...], engine: SearchEngine) -> ResultSet:
    fields = {_FIELD_OF_KEY[k] for k in keys if k in _FIELD_OF_KEY}
    metadata_keys = [k for k in keys if not k.startswith("#")]
    if metadata_keys:
        fields.add("metadata")
    records = engine.fetch(list(ids), fields) if fields and ids else {}

    def column(field: str) -> list[Any]:
        return [(records.get(i) or {}).get(field) for i in ids]

    metadatas = None
    if "#metadata" in keys:
        metadatas = column("metadata")
    elif metadata_keys:
        metadatas = [
            None if m is None else {k: m[k] for k in metadata_keys if k in m} for m in column("metadata")
        ]
    return ResultSet(
        ids=list(ids),
        documents=column("document") if "#document" in keys else None,
        embeddings=[_as_list(e) for e in column("embedding")] if "#embedding" in keys else None,
        metadatas=metadatas,
        scores=scores if "#score" in keys and scores is not None else None,
        uris=column("uri") if "#uri" in keys else None,
        data=column("data") if "#data" in keys else None,
        select=keys,
    )


def _as_list(embedding: Any) -> Any:
    return embedding.tolist() if isinstance(embedding, np.ndarray) else embedding
