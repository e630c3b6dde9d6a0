"""The Search API (chromadb's ``collection.search``), evaluated locally.

Example:
    >>> from retrieval.search import K, Knn, Rrf, Search
    >>> s = Search().where(K("year") >= 2020).rank(Knn(query=[0.1, 0.2])).limit(5).select(K.DOCUMENT, K.SCORE)
    >>> Search.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

from retrieval.search.keys import K, Key
from retrieval.search.plan import GroupBy, Limit, MaxK, MinK, Search, Select
from retrieval.search.rank import Knn, Rank, Val
from retrieval.search.result import SearchResult
from retrieval.search.rrf import Rrf

__all__ = ["GroupBy", "K", "Key", "Knn", "Limit", "MaxK", "MinK", "Rank", "Rrf", "Search", "SearchResult", "Select", "Val"]
