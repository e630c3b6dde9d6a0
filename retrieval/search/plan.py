"""``Search``: one search request (filter, rank, group, page, select), and its parts.

A ``Search`` is immutable; each builder method returns a new one. ``to_dict()`` is the wire
format (chromadb's)::

    {"filter": <where dict> | None,
     "rank": <rank dict> | None,
     "group_by": {} | {"keys": [...], "aggregate": {"$min_k" | "$max_k": {"keys": [...], "k": n}}},
     "limit": {"offset": 0, "limit": 10},          # "limit" absent = no limit
     "select": {"keys": ["#document", "#score", "year"]}}

Example:
    >>> from retrieval.search.keys import K
    >>> from retrieval.search.rank import Knn
    >>> s = (Search().where(K("year") >= 2020).rank(Knn(query=[0.1, 0.2]))
    ...      .limit(5).select(K.DOCUMENT, K.SCORE))
    >>> Search.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from retrieval.errors import InvalidArgumentError
from retrieval.search.keys import SPECIAL_KEYS, Key, Where, key_name
from retrieval.search.rank import Rank

__all__ = ["Aggregate", "GroupBy", "Limit", "MaxK", "MinK", "Search", "Select"]

KeyLike = Union[Key, str]


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise InvalidArgumentError(f"{what} must be {bound}; got {value!r}")
    return value


def _dict(data: Any, what: str, allowed: Iterable[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(f"{what} must be a dict; got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise InvalidArgumentError(f"{what} has unknown fields {unknown}; expected some of {sorted(allowed)}")
    return data


def _key_tuple(keys: Any, what: str) -> tuple[str, ...]:
    """One key or several, as an order-preserving tuple of unique names (a set is sorted)."""
    if isinstance(keys, (str, Key)):
        items: list[Any] = [keys]
    elif isinstance(keys, (set, frozenset)):
        items = sorted(keys, key=lambda k: key_name(k, what))
    elif isinstance(keys, Iterable) and not isinstance(keys, (bytes, Mapping)):
        items = list(keys)
    else:
        raise InvalidArgumentError(f"{what} must be a key or a list of keys; got {keys!r}")
    return tuple(dict.fromkeys(key_name(k, what) for k in items))


@dataclass(frozen=True)
class Limit:
    """Skip ``offset`` results, then keep at most ``limit`` (``None``: all)."""

    offset: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        _int(self.offset, "limit offset", 0)
        if self.limit is not None:
            _int(self.limit, "limit", 1)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offset": self.offset}
        if self.limit is not None:
            out["limit"] = self.limit
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Limit:
        data = _dict(data, "limit", ("offset", "limit"))
        return Limit(offset=data.get("offset", 0), limit=data.get("limit"))


@dataclass(frozen=True, init=False)
class Select:
    """Which fields come back: ``#document``, ``#embedding``, ``#metadata``, ``#score``,
    ``#uri``, ``#data``, or metadata field names (returned inside ``metadatas``). Ids always do.
    """

    keys: tuple[str, ...]

    def __init__(self, keys: Any = ()) -> None:
        names = _key_tuple(keys, "select key")
        for name in names:
            if name.startswith("#") and name not in SPECIAL_KEYS:
                raise InvalidArgumentError(
                    f"cannot select unknown key {name!r}; special keys are {sorted(SPECIAL_KEYS)}"
                )
        object.__setattr__(self, "keys", names)

    def to_dict(self) -> dict[str, Any]:
        return {"keys": list(self.keys)}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Select:
        data = _dict(data, "select", ("keys",))
        keys = data.get("keys", [])
        if not isinstance(keys, list):
            raise InvalidArgumentError(f"select.keys must be a list; got {keys!r}")
        return Select(keys)


class Aggregate:
    """Which records each group keeps: :class:`MinK` or :class:`MaxK`."""

    OP = ""
    keys: tuple[str, ...]
    k: int

    def _init(self, keys: Any, k: Any) -> None:
        names = _key_tuple(keys, f"{self.OP} key")
        if not names:
            raise InvalidArgumentError(f"{self.OP} needs at least one key (e.g. K.SCORE)")
        for name in names:
            if name.startswith("#") and name != "#score":
                raise InvalidArgumentError(f"{self.OP} orders by '#score' or metadata fields; got {name!r}")
        object.__setattr__(self, "keys", names)
        object.__setattr__(self, "k", _int(k, f"{self.OP} k", 1))

    def to_dict(self) -> dict[str, Any]:
        return {self.OP: {"keys": list(self.keys), "k": self.k}}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Aggregate:
        data = _dict(data, "group_by.aggregate", ("$min_k", "$max_k"))
        if len(data) != 1:
            raise InvalidArgumentError("group_by.aggregate must hold exactly one of '$min_k', '$max_k'")
        (op, body), = data.items()
        body = _dict(body, f"group_by.aggregate.{op}", ("keys", "k"))
        if "keys" not in body or "k" not in body:
            raise InvalidArgumentError(f"group_by.aggregate.{op} needs 'keys' and 'k'")
        if not isinstance(body["keys"], list):
            raise InvalidArgumentError(f"group_by.aggregate.{op}.keys must be a list; got {body['keys']!r}")
        return (MinK if op == "$min_k" else MaxK)(keys=body["keys"], k=body["k"])


@dataclass(frozen=True, init=False)
class MinK(Aggregate):
    """Keep the ``k`` records with the smallest ``keys`` (e.g. best scores) per group."""

    keys: tuple[str, ...]
    k: int
    OP = "$min_k"

    def __init__(self, keys: Any = "#score", k: int = 1) -> None:
        self._init(keys, k)


@dataclass(frozen=True, init=False)
class MaxK(Aggregate):
    """Keep the ``k`` records with the largest ``keys`` per group."""

    keys: tuple[str, ...]
    k: int
    OP = "$max_k"

    def __init__(self, keys: Any = "#score", k: int = 1) -> None:
        self._init(keys, k)


@dataclass(frozen=True, init=False)
class GroupBy:
    """Partition ranked results by metadata ``keys``; keep ``aggregate`` per group.

    Records missing a key group under ``None`` for it (as in chromadb).

    Example:
        >>> from retrieval.search.keys import K
        >>> GroupBy(K("category"), MinK(keys=K.SCORE, k=2)).to_dict()
        {'keys': ['category'], 'aggregate': {'$min_k': {'keys': ['#score'], 'k': 2}}}
    """

    keys: tuple[str, ...]
    aggregate: Aggregate

    def __init__(self, keys: Any, aggregate: Aggregate | Mapping[str, Any]) -> None:
        names = _key_tuple(keys, "group_by key")
        if not names:
            raise InvalidArgumentError("group_by needs at least one metadata key")
        bad = [n for n in names if n.startswith("#")]
        if bad:
            raise InvalidArgumentError(f"group_by keys must be metadata fields; got {bad}")
        if isinstance(aggregate, Mapping):
            aggregate = Aggregate.from_dict(aggregate)
        if not isinstance(aggregate, Aggregate):
            raise InvalidArgumentError(f"group_by aggregate must be MinK(...) or MaxK(...); got {aggregate!r}")
        object.__setattr__(self, "keys", names)
        object.__setattr__(self, "aggregate", aggregate)

    def to_dict(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "aggregate": self.aggregate.to_dict()}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> GroupBy | None:
        """``{}`` means no grouping (chromadb's default) and gives ``None``."""
        data = _dict(data, "group_by", ("keys", "aggregate"))
        if not data:
            return None
        if "keys" not in data or "aggregate" not in data:
            raise InvalidArgumentError("group_by needs both 'keys' and 'aggregate'")
        if not isinstance(data["keys"], list):
            raise InvalidArgumentError(f"group_by.keys must be a list; got {data['keys']!r}")
        return GroupBy(data["keys"], data["aggregate"])


_FIELDS = ("filter", "rank", "group_by", "limit", "select")


class Search:
    """One search: ``where`` filter, ``rank`` expression, ``group_by``, ``limit``, ``select``.

    Each argument takes the object or its dict form; ``limit`` also takes an int and
    ``select`` a list of keys. Without ``rank`` results come in insertion order, unscored.
    With no ``select`` only ids come back (as in chromadb). The builder methods share their
    names with the arguments (as in chromadb), so the parts are read back through
    ``where_clause``, ``rank_expr``, ``group``, ``page`` and ``selection``.
    """

    __slots__ = ("_where", "_rank", "_group_by", "_limit", "_select")

    def __init__(
        self,
        where: Where | Mapping[str, Any] | None = None,
        rank: Rank | Mapping[str, Any] | None = None,
        group_by: GroupBy | Mapping[str, Any] | None = None,
        limit: Limit | Mapping[str, Any] | int | None = None,
        select: Select | Mapping[str, Any] | Iterable[KeyLike] | None = None,
    ) -> None:
        object.__setattr__(self, "_where", _where(where))
        object.__setattr__(self, "_rank", _rank(rank))
        object.__setattr__(self, "_group_by", _group_by(group_by))
        object.__setattr__(self, "_limit", _limit(limit))
        object.__setattr__(self, "_select", _select(select))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Search is immutable; its builder methods return a new Search")

    @property
    def where_clause(self) -> Where | None:
        return self._where

    @property
    def rank_expr(self) -> Rank | None:
        return self._rank

    @property
    def group(self) -> GroupBy | None:
        return self._group_by

    @property
    def page(self) -> Limit:
        return self._limit

    @property
    def selection(self) -> Select:
        return self._select

    def _replace(self, **changes: Any) -> Search:
        parts: dict[str, Any] = {
            "where": self._where, "rank": self._rank, "group_by": self._group_by,
            "limit": self._limit, "select": self._select,
        }
        parts.update(changes)
        return Search(**parts)

    def where(self, where: Where | Mapping[str, Any] | None) -> Search:
        """A copy with this filter (replacing any previous one)."""
        return self._replace(where=where)

    def rank(self, rank: Rank | Mapping[str, Any] | None) -> Search:
        """A copy with this rank expression."""
        return self._replace(rank=rank)

    def group_by(self, group_by: GroupBy | Mapping[str, Any] | None) -> Search:
        """A copy with this grouping."""
        return self._replace(group_by=group_by)

    def limit(self, limit: int | None, offset: int = 0) -> Search:
        """A copy returning at most ``limit`` results after skipping ``offset``."""
        return self._replace(limit=Limit(offset=offset, limit=limit))

    def select(self, *keys: KeyLike) -> Search:
        """A copy selecting these keys (replacing any previous selection)."""
        return self._replace(select=Select(keys))

    def select_all(self) -> Search:
        """Select document, embedding, metadata, score and uri (not ``#data``, which loads files)."""
        return self._replace(select=Select(("#document", "#embedding", "#metadata", "#score", "#uri")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "filter": None if self._where is None else self._where.to_dict(),
            "rank": None if self._rank is None else self._rank.to_dict(),
            "group_by": {} if self._group_by is None else self._group_by.to_dict(),
            "limit": self._limit.to_dict(),
            "select": self._select.to_dict(),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Search:
        data = _dict(data, "search", _FIELDS)
        return Search(
            where=data.get("filter"),
            rank=data.get("rank"),
            group_by=data.get("group_by"),
            limit=data.get("limit"),
            select=data.get("select"),
        )

    def _parts(self) -> tuple[Any, ...]:
        return (self._where, self._rank, self._group_by, self._limit, self._select)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Search):
            return NotImplemented
        return self._parts() == other._parts()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Search(where={self._where!r}, rank={self._rank!r}, group_by={self._group_by!r}, "
            f"limit={self._limit!r}, select={self._select!r})"
        )


def _where(where: Any) -> Where | None:
    if where is None or isinstance(where, Where):
        return where
    if isinstance(where, Mapping):
        return Where.from_dict(where)  # {} is an error, as in chromadb: pass None for no filter
    raise InvalidArgumentError(
        f"where must be a filter (K(...) == ...), a where dict or None; got {type(where).__name__}"
    )


def _rank(rank: Any) -> Rank | None:
    if rank is None or isinstance(rank, Rank):
        return rank
    if isinstance(rank, Mapping):
        return Rank.from_dict(rank)
    raise InvalidArgumentError(
        f"rank must be a rank expression (Knn(...), Rrf(...), ...), a rank dict or None; got {type(rank).__name__}"
    )


def _group_by(group_by: Any) -> GroupBy | None:
    if group_by is None or isinstance(group_by, GroupBy):
        return group_by
    if isinstance(group_by, Mapping):
        return GroupBy.from_dict(group_by)
    raise InvalidArgumentError(f"group_by must be GroupBy(...), a dict or None; got {type(group_by).__name__}")


def _limit(limit: Any) -> Limit:
    if limit is None:
        return Limit()
    if isinstance(limit, Limit):
        return limit
    if isinstance(limit, int) and not isinstance(limit, bool):
        return Limit(limit=limit)
    if isinstance(limit, Mapping):
        return Limit.from_dict(limit)
    raise InvalidArgumentError(f"limit must be an int, Limit(...), a dict or None; got {limit!r}")


def _select(select: Any) -> Select:
    if select is None:
        return Select()
    if isinstance(select, Select):
        return select
    if isinstance(select, Mapping):
        return Select.from_dict(select)
    return Select(select)
