"""chromadb 1.5.9's ``Schema`` and index config classes, mapped onto what retrieval supports.

chromadb code builds a schema by chaining ``create_index`` / ``delete_index`` and passes it to
``create_collection(schema=...)``. Here a schema is a front for the collection configuration:

* ``VectorIndexConfig(space=..., embedding_function=..., hnsw=HnswIndexConfig(...))`` sets the
  vector index's space, the embedding function and the HNSW settings;
* ``SparseVectorIndexConfig(embedding_function=ChromaBm25EmbeddingFunction(), ...)`` on a key
  creates the sparse (BM25) index that ``Knn(key=...)`` searches (one sparse key per collection);
* ``FtsIndexConfig()`` on ``#document`` and the inverted-index configs are what retrieval always
  does (full-text search on documents, filtering on every metadata key), so creating them is
  accepted as a no-op.

Everything else (SPANN, turning full-text search or metadata filtering off, a vector source other
than documents, CMEK) raises :class:`~retrieval.errors.InvalidArgumentError` saying what is not
supported, when the schema is built: a schema that cannot be honoured must not create a collection
that silently behaves otherwise. Classes are plain Python (no pydantic) so importing them is cheap.

Example:
    >>> from retrieval.schema import HnswIndexConfig, Schema, VectorIndexConfig
    >>> schema = Schema().create_index(VectorIndexConfig(space="cosine", hnsw=HnswIndexConfig(ef_search=50)))
    >>> schema.to_configuration()
    {'hnsw': {'space': 'cosine', 'ef_search': 50}}
"""

from __future__ import annotations

from typing import Any, ClassVar

from retrieval.errors import InvalidArgumentError

__all__ = [
    "BoolInvertedIndexConfig",
    "apply_schema",
    "DOCUMENT_KEY",
    "EMBEDDING_KEY",
    "FloatInvertedIndexConfig",
    "FtsIndexConfig",
    "HnswIndexConfig",
    "IntInvertedIndexConfig",
    "Schema",
    "SpannIndexConfig",
    "SparseVectorIndexConfig",
    "StringInvertedIndexConfig",
    "VectorIndexConfig",
]

DOCUMENT_KEY = "#document"
EMBEDDING_KEY = "#embedding"


class _Default:
    """Marks ``VectorIndexConfig.embedding_function`` left at chromadb's default function."""

    def __repr__(self) -> str:
        return "DefaultEmbeddingFunction()"


_DEFAULT_EF: Any = _Default()


class _IndexConfig:
    """Keyword-only fields named in ``FIELDS``; an unknown field is refused by name, as chromadb does."""

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **fields: Any) -> None:
        unknown = [k for k in fields if k not in self.FIELDS]
        if unknown:
            valid = f"valid fields: {list(self.FIELDS)}" if self.FIELDS else "it takes no fields"
            raise InvalidArgumentError(f"{unknown[0]!r} is not a valid field for {type(self).__name__} ({valid})")
        for name in self.FIELDS:
            setattr(self, name, fields.get(name))

    def set_fields(self) -> dict[str, Any]:
        """The fields given a value (chromadb's ``model_dump(exclude_none=True)``)."""
        return {k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.set_fields().items())
        return f"{type(self).__name__}({args})"


class FtsIndexConfig(_IndexConfig):
    """Full-text search on ``#document``: always on in retrieval."""


class StringInvertedIndexConfig(_IndexConfig):
    """Filtering on a string metadata key: always on in retrieval."""


class IntInvertedIndexConfig(_IndexConfig):
    """Filtering on an int metadata key: always on in retrieval."""


class FloatInvertedIndexConfig(_IndexConfig):
    """Filtering on a float metadata key: always on in retrieval."""


class BoolInvertedIndexConfig(_IndexConfig):
    """Filtering on a bool metadata key: always on in retrieval."""


class HnswIndexConfig(_IndexConfig):
    """HNSW settings, chromadb's names (those of ``configuration={"hnsw": {...}}``)."""

    FIELDS = ("ef_construction", "max_neighbors", "ef_search", "num_threads", "batch_size", "sync_threshold",
              "resize_factor")


class SpannIndexConfig(_IndexConfig):
    """chromadb's distributed SPANN index: constructible, refused when used (retrieval runs HNSW)."""

    FIELDS = ("search_nprobe", "search_rng_factor", "search_rng_epsilon", "nreplica_count", "write_nprobe",
              "write_rng_factor", "write_rng_epsilon", "split_threshold", "num_samples_kmeans", "initial_lambda",
              "reassign_neighbor_count", "merge_threshold", "num_centers_to_merge_to", "ef_construction",
              "ef_search", "max_neighbors", "center_drift_threshold", "quantize")


class VectorIndexConfig(_IndexConfig):
    """The dense vector index: ``space``, ``embedding_function``, ``hnsw`` (``spann`` is refused).

    ``embedding_function`` defaults to chromadb's default function, as in chromadb; pass ``None``
    to give embeddings yourself.
    """

    FIELDS = ("space", "embedding_function", "source_key", "hnsw", "spann")

    def __init__(self, **fields: Any) -> None:
        fields.setdefault("embedding_function", _DEFAULT_EF)
        super().__init__(**fields)
        self.source_key = _key_name(self.source_key, "source_key")
        if self.hnsw is not None and not isinstance(self.hnsw, HnswIndexConfig):
            raise InvalidArgumentError(f"VectorIndexConfig hnsw must be an HnswIndexConfig; got {self.hnsw!r}")


class SparseVectorIndexConfig(_IndexConfig):
    """A sparse vector index on a key, filled by ``embedding_function`` from ``source_key``."""

    FIELDS = ("embedding_function", "source_key", "bm25", "algorithm")

    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)
        self.source_key = _key_name(self.source_key, "source_key")


_INVERTED = (StringInvertedIndexConfig, IntInvertedIndexConfig, FloatInvertedIndexConfig, BoolInvertedIndexConfig)


class Schema:
    """chromadb's collection schema, holding what retrieval can honour.

    Example:
        >>> from retrieval.schema import FtsIndexConfig, Schema
        >>> Schema().create_index(FtsIndexConfig(), key="#document").to_configuration()
        {}
        >>> Schema().delete_index(FtsIndexConfig(), key="#document")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        retrieval.errors.InvalidArgumentError: full-text search on '#document' cannot be turned off in retrieval ...
    """

    def __init__(self) -> None:
        self.vector_index: VectorIndexConfig | None = None
        self.sparse_indexes: dict[str, SparseVectorIndexConfig] = {}
        self.cmek = None

    def create_index(self, config: Any = None, key: Any = None) -> Schema:
        """Create (enable) an index; returns the schema for chaining.

        Args:
            config: An index config (``VectorIndexConfig()``, ``SparseVectorIndexConfig(...)`` ...).
            key: The metadata key it applies to (a str or ``K(...)``); None for the global vector index.
        """
        key = _key_name(key, "key")
        _check_key(config, key, "create")
        if isinstance(config, VectorIndexConfig):
            if config.spann is not None:
                raise InvalidArgumentError(
                    "VectorIndexConfig(spann=...) is chromadb's distributed index; retrieval runs HNSW "
                    "(pass hnsw=HnswIndexConfig(...) instead)"
                )
            if config.source_key not in (None, DOCUMENT_KEY):
                raise InvalidArgumentError(
                    f"a vector index sourced from {config.source_key!r} is not supported; retrieval embeds "
                    f"{DOCUMENT_KEY!r} (or the uris' data). Drop source_key"
                )
            self.vector_index = config
        elif isinstance(config, SparseVectorIndexConfig):
            self._add_sparse(config, key)
        elif isinstance(config, (FtsIndexConfig, *_INVERTED)):
            pass  # always on in retrieval: full-text search on documents, filtering on every metadata key
        elif isinstance(config, SpannIndexConfig):
            raise InvalidArgumentError("SpannIndexConfig is chromadb's distributed index; retrieval runs HNSW")
        else:
            raise InvalidArgumentError(f"unknown index config {config!r}; use one of the retrieval.schema classes")
        return self

    def delete_index(self, config: Any = None, key: Any = None) -> Schema:
        """Disable an index; retrieval cannot turn any of its indexes off, so this refuses clearly."""
        key = _key_name(key, "key")
        _check_key(config, key, "delete")
        if isinstance(config, FtsIndexConfig):
            raise InvalidArgumentError(
                f"full-text search on {DOCUMENT_KEY!r} cannot be turned off in retrieval (where_document "
                "filters rely on it); drop this delete_index call"
            )
        if isinstance(config, _INVERTED) or config is None:
            what = f"metadata filtering on {key!r} cannot be turned off" if key is not None else (
                "metadata filtering cannot be turned off globally")
            raise InvalidArgumentError(f"{what} in retrieval (every metadata key is filterable); drop this delete_index call")
        raise InvalidArgumentError(f"deleting a {type(config).__name__} is not supported (chromadb refuses it too)")

    def set_cmek(self, cmek: Any) -> Schema:
        """chromadb Cloud's customer-managed encryption keys: refused (retrieval is local)."""
        if cmek is not None:
            raise InvalidArgumentError("customer-managed encryption keys (CMEK) are a chromadb Cloud feature; "
                                       "retrieval stores data locally (encrypt the disk instead)")
        return self

    def _add_sparse(self, config: SparseVectorIndexConfig, key: str) -> None:
        if config.source_key not in (None, DOCUMENT_KEY):
            raise InvalidArgumentError(
                f"sparse index {key!r} sourced from {config.source_key!r} is not supported; retrieval computes "
                f"sparse vectors from {DOCUMENT_KEY!r}. Drop source_key"
            )
        if config.embedding_function is None:
            raise InvalidArgumentError(
                f"sparse index {key!r} needs an embedding_function (e.g. ChromaBm25EmbeddingFunction()); "
                "retrieval does not take sparse vectors from metadata"
            )
        if config.algorithm is not None:
            raise InvalidArgumentError(f"sparse index algorithm {config.algorithm!r} is not supported; drop it")
        if self.sparse_indexes and key not in self.sparse_indexes:
            raise InvalidArgumentError(
                f"retrieval supports one sparse index per collection; {sorted(self.sparse_indexes)[0]!r} exists, "
                f"so {key!r} cannot be added"
            )
        self.sparse_indexes[key] = config

    def to_configuration(self) -> dict[str, Any]:
        """The ``configuration=`` dict this schema stands for (without the embedding function)."""
        out: dict[str, Any] = {}
        vector = self.vector_index
        if vector is not None:
            hnsw = dict(vector.hnsw.set_fields()) if vector.hnsw is not None else {}
            if vector.space is not None:
                hnsw = {"space": vector.space, **hnsw}
            if hnsw:
                out["hnsw"] = hnsw
        for key, sparse in self.sparse_indexes.items():
            out["sparse"] = {"key": key, "embedding_function": sparse.embedding_function}
        return out

    def embedding_function(self, default: Any) -> Any:
        """The vector index's embedding function; ``default`` when the schema left chromadb's default."""
        if self.vector_index is None or self.vector_index.embedding_function is _DEFAULT_EF:
            return default
        return self.vector_index.embedding_function

    def __repr__(self) -> str:
        return f"Schema(vector_index={self.vector_index!r}, sparse_indexes={self.sparse_indexes!r})"

    # ----------------------------------------------------------------------- JSON, as chromadb
    def serialize_to_json(self) -> dict[str, Any]:
        """chromadb's JSON of this schema (``{"defaults": ..., "keys": ...}``, as its client sends it).

        Example:
            >>> doc = Schema().serialize_to_json()
            >>> doc["keys"]["#embedding"]["float_list"]["vector_index"]["config"]["space"]
            'l2'
        """
        vector = self.vector_index or VectorIndexConfig()
        config: dict[str, Any] = {}
        if vector.space is not None:
            config["space"] = vector.space
        if vector.hnsw is not None:
            config["hnsw"] = vector.hnsw.set_fields()
        ef = vector.embedding_function
        config["embedding_function"] = _function_json(ef)
        if "space" not in config and config["embedding_function"].get("type") == "known":
            config["space"] = "l2" if ef is _DEFAULT_EF else ef.default_space()
        keys: dict[str, Any] = {
            DOCUMENT_KEY: {"string": {"fts_index": _index(True), "string_inverted_index": _index(False)}},
            EMBEDDING_KEY: {"float_list": {"vector_index": _index(True, {**config, "source_key": DOCUMENT_KEY})}},
        }
        for key, sparse in self.sparse_indexes.items():
            fields = {k: v for k, v in sparse.set_fields().items() if k != "embedding_function"}
            fields["embedding_function"] = _function_json(sparse.embedding_function)
            keys[key] = {"sparse_vector": {"sparse_vector_index": _index(True, fields)}}
        return {"defaults": _defaults(config), "keys": keys}

    @classmethod
    def deserialize_from_json(cls, json_data: dict[str, Any]) -> Schema:
        """A schema from chromadb's JSON (its client's or its server's), as chromadb reads it:
        stored embedding functions are rebuilt by registry name (``{"type": "legacy"}`` -> None; one
        that cannot be rebuilt -> None with a warning); the indexes retrieval always keeps are implied.

        Example:
            >>> Schema.deserialize_from_json(Schema().create_index(VectorIndexConfig(
            ...     space="ip", embedding_function=None)).serialize_to_json()).vector_index.space
            'ip'
        """
        if not isinstance(json_data, dict):
            raise InvalidArgumentError(f"a serialized Schema is a dict like {{'defaults': ..., 'keys': ...}}; got {json_data!r}")
        schema = cls()
        keys = json_data.get("keys") or {}
        vector = (keys.get(EMBEDDING_KEY) or json_data.get("defaults") or {}).get("float_list", {}).get("vector_index")
        if vector is not None:
            config = dict(vector.get("config") or {})
            hnsw = config.get("hnsw")
            schema.vector_index = VectorIndexConfig(
                space=config.get("space"),
                embedding_function=_function_from_json(config.get("embedding_function", {"type": "legacy"})),
                hnsw=HnswIndexConfig(**{k: v for k, v in hnsw.items() if k in HnswIndexConfig.FIELDS}) if hnsw else None,
            )
        for key, value_types in keys.items():
            index = (value_types or {}).get("sparse_vector", {}).get("sparse_vector_index")
            if key.startswith("#") or not index or not index.get("enabled"):
                continue
            config = dict(index.get("config") or {})
            function = _function_from_json(config.get("embedding_function", {"type": "unknown"}))
            if function is not None:
                schema._add_sparse(SparseVectorIndexConfig(
                    embedding_function=function, source_key=config.get("source_key"), bm25=config.get("bm25"),
                ), key)
        return schema

    @classmethod
    def from_configuration(
        cls, configuration_json: dict[str, Any], embedding_function: Any = None, sparse: tuple[str, Any] | None = None
    ) -> Schema:
        """The schema of a collection with this (public) configuration, embedding function and
        sparse index (``(key, sparse embedding function)``): what ``collection.schema`` returns.

        Example:
            >>> Schema.from_configuration({"hnsw": {"space": "ip", "ef_search": 20}}).vector_index.hnsw
            HnswIndexConfig(ef_search=20)
        """
        hnsw = dict(configuration_json.get("hnsw") or {})
        space = hnsw.pop("space", None)
        schema = cls()
        schema.vector_index = VectorIndexConfig(space=space, embedding_function=embedding_function,
                                                hnsw=HnswIndexConfig(**{k: v for k, v in hnsw.items()
                                                                        if k in HnswIndexConfig.FIELDS}))
        if sparse is not None:
            schema._add_sparse(SparseVectorIndexConfig(embedding_function=sparse[1]), sparse[0])
        return schema


def _index(enabled: bool, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"enabled": enabled, "config": config or {}}


def _defaults(vector_config: dict[str, Any]) -> dict[str, Any]:
    """chromadb's per-type defaults: metadata filtering on every type, no full-text on metadata."""
    return {
        "string": {"fts_index": _index(False), "string_inverted_index": _index(True)},
        "float_list": {"vector_index": _index(False, dict(vector_config))},
        "sparse_vector": {"sparse_vector_index": _index(False, {"embedding_function": {"type": "unknown"}})},
        "int": {"int_inverted_index": _index(True)},
        "float": {"float_inverted_index": _index(True)},
        "bool": {"bool_inverted_index": _index(True)},
    }


def _function_json(function: Any) -> dict[str, Any]:
    """An embedding function as chromadb serializes it in a schema (``legacy`` when it cannot be)."""
    if function is _DEFAULT_EF:
        return {"name": "default", "type": "known", "config": {}}
    try:
        name = function.name() if function is not None else NotImplemented
        config = function.get_config() if isinstance(name, str) else NotImplemented
    except Exception:  # noqa: BLE001 - chromadb: a function that cannot describe itself is legacy
        return {"type": "legacy"}
    if not isinstance(name, str) or not isinstance(config, dict):
        return {"type": "legacy"}
    return {"name": name, "type": "known", "config": config}


def _function_from_json(spec: Any) -> Any:
    if not isinstance(spec, dict) or spec.get("type") != "known" or not isinstance(spec.get("name"), str):
        return None
    import warnings

    import embedders

    try:
        return embedders.build_embedding_function(spec["name"], dict(spec.get("config") or {}))
    except Exception as e:  # noqa: BLE001 - as chromadb: warn, and leave the function unset
        warnings.warn(f"Could not reconstruct embedding function {spec['name']}: {e}. Setting to None.",
                      UserWarning, stacklevel=3)
        return None


def apply_schema(schema: Any, configuration: Any, embedding_function: Any) -> tuple[dict[str, Any], Any]:
    """Fold ``create_collection(schema=...)`` into its ``configuration`` and ``embedding_function``.

    Args:
        schema: A :class:`Schema`.
        configuration: The ``configuration=`` argument (None or a dict).
        embedding_function: The ``embedding_function=`` argument (``UNSET`` when not given).

    Returns:
        The merged configuration and the embedding function to use.

    Raises:
        InvalidArgumentError: Not a Schema, or the schema and the other arguments both set the same thing.
    """
    from retrieval.embedding import UNSET

    if not isinstance(schema, Schema):
        raise InvalidArgumentError(f"schema must be a retrieval.schema.Schema; got {type(schema).__name__}")
    merged = dict(configuration or {})
    for key, value in schema.to_configuration().items():
        if merged.get(key) is not None:
            raise InvalidArgumentError(
                f"both schema and configuration set {key!r}; set it in one of them (chromadb: use the schema)"
            )
        merged[key] = value
    from_schema = schema.embedding_function(default=UNSET)
    if from_schema is not UNSET:
        if embedding_function is not UNSET and embedding_function is not from_schema:
            raise InvalidArgumentError(
                "both schema (VectorIndexConfig.embedding_function) and embedding_function= name an embedding "
                "function; pass it in the schema only, as chromadb asks"
            )
        embedding_function = from_schema
    return merged, embedding_function


def _key_name(key: Any, what: str) -> str | None:
    """A str, or chromadb's ``Key``/our ``K`` (anything with a str ``name``)."""
    if key is None or isinstance(key, str):
        return key
    name = getattr(key, "name", None)
    if isinstance(name, str):
        return name
    raise InvalidArgumentError(f"{what} must be a str or K(...); got {key!r}")


def _check_key(config: Any, key: str | None, verb: str) -> None:
    """chromadb's rules on which key an index config may target."""
    if config is None and key is None:
        raise InvalidArgumentError(f"Schema.{verb}_index needs a config or a key (it cannot {verb} every index)")
    if key == EMBEDDING_KEY:
        raise InvalidArgumentError(
            f"{EMBEDDING_KEY!r} is managed by the collection; configure it with "
            "create_index(VectorIndexConfig(...)) and no key"
        )
    if key is not None and key.startswith("#") and key != DOCUMENT_KEY:
        raise InvalidArgumentError(f"key {key!r} cannot begin with '#' (reserved for system keys)")
    if key == DOCUMENT_KEY and not isinstance(config, FtsIndexConfig):
        raise InvalidArgumentError(f"only FtsIndexConfig applies to {DOCUMENT_KEY!r}; got {config!r}")
    if isinstance(config, VectorIndexConfig) and key is not None:
        raise InvalidArgumentError(
            "a vector index cannot be put on a key; use create_index(VectorIndexConfig(...)) without a key"
        )
    if isinstance(config, FtsIndexConfig) and key != DOCUMENT_KEY:
        raise InvalidArgumentError(f"FtsIndexConfig applies to {DOCUMENT_KEY!r} only; pass key='#document'")
    if isinstance(config, SparseVectorIndexConfig) and key is None:
        raise InvalidArgumentError(
            "a sparse vector index needs a key: create_index(SparseVectorIndexConfig(...), key='sparse_embedding')"
        )
    if config is None and key is not None:
        raise InvalidArgumentError(
            f"Schema.{verb}_index needs a specific index config for key {key!r} (it cannot {verb} every index type)"
        )
