"""Collection configuration: HNSW parameters plus the persisted embedding function and loader.

The configuration is stored as versioned JSON next to each collection (DESIGN section 3)::

    {"version": 1,
     "hnsw": {"space": "cosine", "ef_construction": 100, ...},
     "embedding_function": {"name": "open_clip", "type": "known", "config": {...}},
     "data_loader": {"name": "image", "config": {...}}}

It is parsed once, at the edge, into :class:`HnswConfig` / :class:`CollectionConfig`; everything
inward works with those objects, never with raw dicts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from retrieval.errors import InvalidArgumentError

CONFIG_VERSION = 1
SPACES = ("l2", "cosine", "ip")

# chromadb's legacy metadata keys -> our field names.
LEGACY_HNSW_KEYS = {
    "hnsw:space": "space",
    "hnsw:construction_ef": "ef_construction",
    "hnsw:search_ef": "ef_search",
    "hnsw:M": "max_neighbors",
    "hnsw:num_threads": "num_threads",
    "hnsw:batch_size": "batch_size",
    "hnsw:sync_threshold": "sync_threshold",
    "hnsw:resize_factor": "resize_factor",
}

# What `modify(configuration=...)` may change after creation: search-time and housekeeping
# knobs. `space`, `ef_construction` and `max_neighbors` shape the graph itself.
MUTABLE_HNSW_FIELDS = frozenset({"ef_search", "num_threads", "batch_size", "sync_threshold", "resize_factor"})


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class HnswConfig:
    """HNSW index parameters, with chromadb's names and defaults.

    Example:
        >>> HnswConfig.from_dict({"space": "cosine", "ef_search": 50}).space
        'cosine'
    """

    space: str = "l2"
    ef_construction: int = 100
    ef_search: int = 100
    max_neighbors: int = 16
    num_threads: int = field(default_factory=_default_threads)
    batch_size: int = 100
    sync_threshold: int = 1000
    resize_factor: float = 1.2

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise InvalidArgumentError(f"hnsw space {self.space!r} is not supported; use one of {list(SPACES)}")
        for name in ("ef_construction", "ef_search", "max_neighbors", "num_threads", "batch_size", "sync_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"hnsw {name} must be a positive integer; got {value!r}")
        for name in ("batch_size", "sync_threshold"):  # chromadb's lower bound
            if getattr(self, name) < 2:
                raise InvalidArgumentError(f"hnsw {name} must be at least 2; got {getattr(self, name)!r}")
        factor = self.resize_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1.0:
            raise InvalidArgumentError(f"hnsw resize_factor must be a number greater than 1; got {factor!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, base: HnswConfig | None = None) -> HnswConfig:
        """Build from a dict of known fields, on top of ``base`` (defaults when None)."""
        base = base or cls()
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidArgumentError(f"unknown hnsw configuration keys {unknown}; known keys are {sorted(known)}")
        return dataclasses.replace(base, **values)

    def to_dict(self, *, include_host: bool = True) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not include_host:
            # The thread count is a property of the host, not of the collection.
            out.pop("num_threads")
        return out

    def modified(self, changes: Mapping[str, Any]) -> HnswConfig:
        """Apply ``modify(configuration={"hnsw": changes})``; immutable fields are refused."""
        frozen = sorted(set(changes) - MUTABLE_HNSW_FIELDS)
        if frozen:
            raise InvalidArgumentError(
                f"hnsw {frozen} cannot change after creation (they shape the index); "
                f"mutable fields are {sorted(MUTABLE_HNSW_FIELDS)}. Create a new collection instead."
            )
        return HnswConfig.from_dict(changes, base=self)


@dataclass(frozen=True)
class ComponentSpec:
    """A registry name plus its JSON config: how an embedding function or loader is persisted.

    Stored in chromadb's shape, ``{"name": ..., "type": "known", "config": {...}}``, so chromadb's
    clients read it. A function that could not be persisted (no ``name()``, not registered) is
    stored as chromadb stores it, ``{"type": "legacy"}`` (:data:`LEGACY`): the collection then
    needs the function passed again when it is reopened.

    Example:
        >>> ComponentSpec("hash", {"dim": 8}).to_dict()
        {'name': 'hash', 'type': 'known', 'config': {'dim': 8}}
        >>> ComponentSpec.from_dict({"type": "legacy"}, "embedding_function").legacy
        True
    """

    name: str
    config: dict[str, Any]
    legacy: bool = False

    def to_dict(self) -> dict[str, Any]:
        if self.legacy:
            return {"type": "legacy"}
        return {"name": self.name, "type": "known", "config": self.config}

    @classmethod
    def from_dict(cls, value: Any, what: str) -> ComponentSpec | None:
        if value is None:
            return None
        if isinstance(value, Mapping) and value.get("type") == "legacy":
            return LEGACY
        if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
            raise InvalidArgumentError(f"stored {what} must be {{'name': str, 'config': dict}}; got {value!r}")
        if value.get("type", "known") != "known":
            raise InvalidArgumentError(f"stored {what} type {value.get('type')!r} is not 'known' or 'legacy'")
        config = value.get("config") or {}
        if not isinstance(config, Mapping):
            raise InvalidArgumentError(f"stored {what} config must be a dict; got {config!r}")
        return cls(value["name"], dict(config))


#: chromadb's marker for an embedding function that was used but could not be persisted.
LEGACY = ComponentSpec("legacy", {}, legacy=True)


@dataclass(frozen=True)
class SparseConfig:
    """A sparse vector index (e.g. BM25) filled from each record's document.

    ``key`` is the name the Search API's ``Knn(key=...)`` uses (chromadb: a metadata key).
    """

    key: str
    embedding_function: ComponentSpec
    source_key: str = "#document"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "source_key": self.source_key, "embedding_function": self.embedding_function.to_dict()}

    @classmethod
    def from_dict(cls, value: Any) -> SparseConfig | None:
        if value is None:
            return None
        spec = ComponentSpec.from_dict(value.get("embedding_function"), "sparse embedding_function")
        return cls(key=value["key"], embedding_function=spec, source_key=value.get("source_key", "#document"))


@dataclass(frozen=True)
class CollectionConfig:
    """Everything persisted about how a collection indexes and embeds."""

    hnsw: HnswConfig = field(default_factory=HnswConfig)
    embedding_function: ComponentSpec | None = None
    data_loader: ComponentSpec | None = None
    sparse: SparseConfig | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": CONFIG_VERSION,
                "hnsw": self.hnsw.to_dict(include_host=False),
                "embedding_function": self.embedding_function.to_dict() if self.embedding_function else None,
                "data_loader": self.data_loader.to_dict() if self.data_loader else None,
                "sparse": self.sparse.to_dict() if self.sparse else None,
            },
            sort_keys=True,
        )

    def persists_as(self, other: CollectionConfig) -> bool:
        """Whether ``other`` is stored as this one is: equal but for what is not persisted (the
        host's thread count) and for what JSON does not keep (a tuple in a component's config)."""
        return self == other or self.to_json() == other.to_json()

    @classmethod
    def from_json(cls, text: str) -> CollectionConfig:
        raw = json.loads(text)
        version = raw.get("version", CONFIG_VERSION)
        if version > CONFIG_VERSION:
            raise InvalidArgumentError(
                f"collection configuration version {version} is newer than this retrieval understands "
                f"({CONFIG_VERSION}); upgrade retrieval"
            )
        return cls(
            hnsw=HnswConfig.from_dict(raw.get("hnsw")),
            embedding_function=ComponentSpec.from_dict(raw.get("embedding_function"), "embedding_function"),
            data_loader=ComponentSpec.from_dict(raw.get("data_loader"), "data_loader"),
            sparse=SparseConfig.from_dict(raw.get("sparse")),
        )

    def to_public_dict(self) -> dict[str, Any]:
        """The shape ``collection.configuration`` returns (chromadb-like)."""
        return {
            "hnsw": self.hnsw.to_dict(),
            "embedding_function": self.embedding_function.to_dict() if self.embedding_function else None,
            "data_loader": self.data_loader.to_dict() if self.data_loader else None,
            "sparse": self.sparse.to_dict() if self.sparse else None,
        }


def split_legacy_metadata(metadata: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Separate chromadb's ``hnsw:*`` metadata keys from user metadata.

    Returns the user metadata (None when nothing is left) and the HNSW fields the legacy keys name.
    """
    if metadata is None:
        return None, {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"collection metadata must be a dict of str keys to str, int, float or bool values; got {metadata!r}"
        )
    user, hnsw = {}, {}
    for key, value in metadata.items():
        if key in LEGACY_HNSW_KEYS:
            hnsw[LEGACY_HNSW_KEYS[key]] = value
        elif isinstance(key, str) and key.startswith("hnsw:"):
            raise InvalidArgumentError(
                f"unknown legacy HNSW metadata key {key!r}; known keys are {sorted(LEGACY_HNSW_KEYS)}"
            )
        else:
            user[key] = value
    return (user or None), hnsw


def parse_configuration(configuration: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate the user's ``configuration=`` argument and return its HNSW fields.

    Accepts ``{"hnsw": {...}}`` (chromadb 1.x). Embedding-function entries are given as objects
    through ``embedding_function=``; a stored spec in ``configuration`` is accepted for symmetry.
    """
    if configuration is None:
        return {}
    if not isinstance(configuration, Mapping):
        raise InvalidArgumentError(f"configuration must be a dict like {{'hnsw': {{...}}}}; got {configuration!r}")
    allowed = {"hnsw", "embedding_function", "data_loader", "spann", "sparse"}
    unknown = sorted(set(configuration) - allowed)
    if unknown:
        raise InvalidArgumentError(f"unknown configuration keys {unknown}; use {{'hnsw': {{...}}}}")
    hnsw = configuration.get("hnsw") or {}
    if not isinstance(hnsw, Mapping):
        raise InvalidArgumentError(f"configuration['hnsw'] must be a dict; got {hnsw!r}")
    return dict(hnsw)


def modified_metadata(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The new metadata of ``modify(metadata=...)``, validated; ``hnsw:*`` keys are refused (their
    settings change through ``configuration``). Shared by the collection handle and the server."""
    from retrieval.validation import validate_metadata

    user, legacy = split_legacy_metadata(metadata)
    if legacy:
        raise InvalidArgumentError(
            f"hnsw settings {sorted(legacy)} cannot be changed through metadata; use "
            "modify(configuration={'hnsw': {...}}) for the mutable ones"
        )
    return validate_metadata(user, 0, allow_none=False) if user else None


def modified_config(config: CollectionConfig, configuration: Mapping[str, Any]) -> CollectionConfig:
    """``config`` with the mutable HNSW settings of ``modify(configuration=...)`` applied."""
    if not isinstance(configuration, Mapping) or set(configuration) - {"hnsw"}:
        raise InvalidArgumentError(
            f"modify(configuration=...) can change only 'hnsw' settings; got {configuration!r}"
        )
    hnsw = config.hnsw.modified(parse_configuration(configuration))
    return dataclasses.replace(config, hnsw=hnsw)


# chromadb code imports Settings from here: ``from chromadb.config import Settings``.
from retrieval.settings import Settings  # noqa: E402,F401
