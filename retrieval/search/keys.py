"""Field keys and the filter algebra of the Search API.

``K("year") >= 2020`` builds a :class:`~retrieval.query.filters.Comparison`, the same validated
node ``where={"year": {"$gte": 2020}}`` parses into; ``&`` and ``|`` combine nodes into
:class:`~retrieval.query.filters.And` / :class:`~retrieval.query.filters.Or`. A bad filter
(``K("x").is_in([])``, ``K("x") > "a"``, ``K.ID == 3``) fails here, where it is written, not
inside ``search()``; the tree travels inward as is and is never re-parsed. ``to_dict()`` is
Chroma's where dict (the wire form).

Special keys start with ``#``: ``K.ID`` (``"#id"``), ``K.DOCUMENT``, ``K.EMBEDDING``,
``K.METADATA``, ``K.SCORE``, ``K.URI`` and ``K.DATA`` (the loaded data of a multimodal
record). Any other name is a metadata field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from retrieval.errors import InvalidArgumentError
from retrieval.query.filters import And, Comparison, Filter, Or

__all__ = ["And", "Comparison", "K", "Key", "Or", "SPECIAL_KEYS", "Where", "key_name"]

SPECIAL_KEYS = frozenset({"#id", "#document", "#embedding", "#metadata", "#score", "#uri", "#data"})


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
        return Comparison(self.name, "$in", _as_list(values))

    def not_in(self, values: Iterable[Any]) -> Comparison:
        return Comparison(self.name, "$nin", _as_list(values))

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


def _as_list(values: Any) -> Any:
    """Sets, generators and arrays become lists; a str or dict is left for the node to refuse."""
    if isinstance(values, (str, bytes, Mapping, list, tuple)) or not isinstance(values, Iterable):
        return values
    return list(values)


# The Search API's name for a filter node (chromadb: ``Where``). ``K`` builds the very nodes that
# ``where=`` dicts parse into, so both obey one set of rules, checked when the filter is built.
Where = Filter
