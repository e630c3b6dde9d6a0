"""Clients: ``EphemeralClient``, ``PersistentClient``, ``Client(Settings(...))`` and ``AdminClient``.

A client is a thin handle over one backend (``retrieval.backend.Backend``): the storage engine in
this process, or a server over HTTP (``retrieval.HttpClient``). It validates arguments, rebuilds each
collection's stored embedding function and data loader once, and hands out ``Collection`` handles.
"""

from __future__ import annotations

import os
from typing import Any

from retrieval import embedding as emb
from retrieval import validation as v
from retrieval.backend import Backend
from retrieval.collection import Collection, Deferred
from retrieval.component_errors import maps_component_errors
from retrieval.config import (
    CollectionConfig,
    ComponentSpec,
    HnswConfig,
    SparseConfig,
    parse_configuration,
    split_legacy_metadata,
)
from retrieval.errors import InvalidArgumentError, NotAllowedError, NotFoundError
from retrieval.schema import apply_schema
from retrieval.settings import Settings
from retrieval.store.namespaces import DEFAULT_DATABASE, DEFAULT_TENANT
from retrieval.types import CollectionRecord

UNSET = emb.UNSET


def _embedded_backend(settings: Settings) -> Backend:
    from retrieval.http.connect import backend_from_settings

    remote = backend_from_settings(settings)  # Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI", ...)
    if remote is not None:
        return remote
    from retrieval.store.backend import open_embedded_backend

    directory = settings.persist_directory if settings.is_persistent else None
    return open_embedded_backend(directory, synchronous=settings.sqlite_synchronous, allow_reset=settings.allow_reset)


class _Handle:
    """What every client shares: a backend, the settings, and closing."""

    def __init__(self, settings: Settings | None, backend: Backend | None):
        self.settings = settings or Settings()
        self._backend = backend if backend is not None else _embedded_backend(self.settings)
        self._closed = False

    def heartbeat(self) -> int:
        """Nanoseconds since the epoch: proof of life, as in chromadb."""
        return self._backend.heartbeat()

    def get_version(self) -> str:
        return self._backend.get_version()

    def close(self) -> None:
        """Checkpoint indexes and release the persist path (other processes may then open it)."""
        if self._closed:
            return
        self._closed = True
        self._backend.close()

    def clear_system_cache(self) -> None:
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AdminClient(_Handle):
    """Tenants and databases (chromadb's ``AdminClient``).

    Args:
        settings: as for ``Client``; the same persist path or server.
        backend: a backend to use instead of the one ``settings`` describe (``HttpClient`` passes one).

    Example:
        >>> import retrieval
        >>> admin = retrieval.AdminClient()
        >>> admin.create_tenant("acme"); admin.create_database("docs", tenant="acme")
        >>> [d["name"] for d in admin.list_databases(tenant="acme")]
        ['docs']
    """

    def __init__(self, settings: Settings | None = None, *, backend: Backend | None = None):
        super().__init__(settings, backend)

    def create_tenant(self, name: str) -> None:
        self._backend.create_tenant(name)

    def get_tenant(self, name: str) -> dict[str, str]:
        return {"name": self._backend.get_tenant(name)}

    def create_database(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        self._backend.create_database(name, tenant)

    def get_database(self, name: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        return self._backend.get_database(name, tenant)

    def list_databases(self, limit: int | None = None, offset: int | None = None, tenant: str = DEFAULT_TENANT) -> list[dict[str, Any]]:
        limit, offset = v.validate_limit_offset(limit, offset)
        return self._backend.list_databases(tenant, limit, offset)

    def delete_database(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        self._backend.delete_database(name, tenant)


class Client(_Handle):
    """A chromadb-compatible client.

    Args:
        settings: ``Settings(is_persistent=True, persist_directory=...)`` for disk storage;
            in-memory otherwise. ``allow_reset=True`` enables ``reset()``.
        tenant, database: the namespace of this client's collections (they must exist; create
            them with ``AdminClient``). Defaults as in chromadb.
        backend: a backend to use instead of the one ``settings`` describe (``HttpClient`` passes one).

    Example:
        >>> import retrieval
        >>> client = retrieval.EphemeralClient()
        >>> client.heartbeat() > 0
        True
    """

    def __init__(
        self,
        settings: Settings | None = None,
        tenant: str = DEFAULT_TENANT,
        database: str = DEFAULT_DATABASE,
        *,
        backend: Backend | None = None,
    ):
        super().__init__(settings, backend)
        self._ef_cache: dict[tuple, Any] = {}
        try:
            self.set_tenant(tenant, database)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ system

    def get_max_batch_size(self) -> int:
        return self._backend.get_max_batch_size()

    @property
    def max_batch_size(self) -> int:
        return self.get_max_batch_size()

    def verify(self, repair: bool = False, sample: int | None = 1000) -> list:
        """Check that each collection's vector index agrees with the records (embedded clients).

        Finds records the index lacks or wrongly marks deleted, phantom labels, stale vectors,
        and sampled records that a query with their own vector does not return.

        Args:
            repair: rebuild the index of every collection where a problem is found.
            sample: records per collection to self-query (None: every record).

        Returns:
            One ``VerifyReport`` per collection (``.ok``, ``.problems``, ``.to_dict()``).

        Example:
            >>> all(report.ok for report in client.verify(repair=True))  # doctest: +SKIP
        """
        verify = getattr(self._backend, "verify", None)
        if verify is None:
            raise NotAllowedError("verify() checks a local store; run `retrieval doctor --path DIR` where the server's data lives")
        return verify(repair=repair, sample=sample)

    def reset(self) -> bool:
        """Delete every collection. Only allowed with ``Settings(allow_reset=True)``."""
        self._backend.reset()
        self._ef_cache.clear()
        return True

    def set_tenant(self, tenant: str, database: str = DEFAULT_DATABASE) -> None:
        """Switch this client to another tenant (and database); both must exist."""
        self._require_namespace(tenant, database)
        self.tenant, self.database = tenant, database

    def set_database(self, database: str) -> None:
        self._require_namespace(self.tenant, database)
        self.database = database

    def _require_namespace(self, tenant: str, database: str) -> None:
        try:
            self._backend.get_tenant(tenant)
            self._backend.get_database(database, tenant)
        except NotFoundError as e:
            raise NotFoundError(
                f"could not connect to tenant {tenant!r} / database {database!r}: {e}"
            ) from e

    # ------------------------------------------------------------- collections

    @maps_component_errors
    def create_collection(
        self,
        name: str,
        configuration: dict | None = None,
        metadata: dict | None = None,
        embedding_function: Any = UNSET,
        data_loader: Any = None,
        get_or_create: bool = False,
        *,
        schema: Any = None,
        persist_embedding_function: bool = True,
        persist_data_loader: bool = True,
    ) -> Collection:
        """Create a collection (``get_or_create=True`` returns an existing one instead of failing).

        ``embedding_function`` defaults to all-MiniLM-L6-v2 as in chromadb; pass ``None`` to always
        give embeddings yourself. ``schema`` is chromadb's ``Schema`` (``retrieval.schema``): its vector
        index (space, HNSW settings, embedding function) and sparse index become this configuration.
        """
        v.validate_collection_name(name)
        if schema is not None:
            configuration, embedding_function = apply_schema(schema, configuration, embedding_function)
        embedding_function = emb.from_configuration(configuration, embedding_function)
        user_metadata, legacy_hnsw = split_legacy_metadata(metadata)
        if user_metadata is not None:
            user_metadata = v.validate_metadata(user_metadata, 0, allow_none=False)
        hnsw_fields = {**legacy_hnsw, **parse_configuration(configuration)}
        if embedding_function is UNSET:
            embedding_function = emb.default_embedding_function()
        if "space" not in hnsw_fields and embedding_function is not None:
            space = getattr(embedding_function, "default_space", None)
            if callable(space):
                hnsw_fields["space"] = space()
        hnsw = HnswConfig.from_dict(hnsw_fields)
        config = CollectionConfig(
            hnsw=hnsw,
            embedding_function=emb.describe(embedding_function, "embedding_function", persist=persist_embedding_function),
            data_loader=emb.describe(data_loader, "data_loader", persist=persist_data_loader),
            sparse=_sparse_config((configuration or {}).get("sparse")),
        )
        # Build the sparse function before anything is written: an unknown name or a bad config
        # must raise here, not leave behind a collection that breaks list_collections (issue 8).
        sparse = None
        if config.sparse is not None:
            sparse = (config.sparse.key, emb.build(config.sparse.embedding_function, "embedding_function", None, name))
        record = self._backend.create_collection(
            self.tenant, self.database, name, config, user_metadata, get_or_create
        )
        if get_or_create and not record.config.persists_as(config):
            # An existing collection: its stored functions win, and a conflicting one is an error.
            return self._open(record, embedding_function, data_loader, None)
        return Collection(self._backend, record, embedding_function, data_loader, sparse)

    @maps_component_errors
    def get_collection(
        self,
        name: str,
        embedding_function: Any = UNSET,
        data_loader: Any = UNSET,
        *,
        embedding_function_options: dict | None = None,
        data_loader_options: dict | None = None,
    ) -> Collection:
        """Open a collection; its stored embedding function and data loader are rebuilt when not given.

        ``embedding_function_options`` are host choices never persisted, e.g. ``{"device": "cuda"}``.
        """
        record = self._backend.get_collection(self.tenant, self.database, name)
        return self._open(record, embedding_function, data_loader, embedding_function_options, data_loader_options)

    def get_or_create_collection(
        self,
        name: str,
        configuration: dict | None = None,
        metadata: dict | None = None,
        embedding_function: Any = UNSET,
        data_loader: Any = None,
        **kwargs: Any,
    ) -> Collection:
        return self.create_collection(
            name, configuration, metadata, embedding_function, data_loader, get_or_create=True, **kwargs
        )

    def list_collections(self, limit: int | None = None, offset: int | None = None) -> list[Collection]:
        """Collections, oldest first.

        Each one's embedding function and loader are built on first use, so a collection whose
        function is not registered in this process does not break the listing of all.
        """
        limit, offset = v.validate_limit_offset(limit, offset)
        records = self._backend.list_collections(self.tenant, self.database, limit, offset)
        return [self._open(r, UNSET, UNSET, None, lazy=True) for r in records]

    def count_collections(self) -> int:
        return self._backend.count_collections(self.tenant, self.database)

    def delete_collection(self, name: str) -> None:
        record = self._backend.get_collection(self.tenant, self.database, name)
        self._backend.delete_collection(self.tenant, self.database, name)
        self._ef_cache = {k: ef for k, ef in self._ef_cache.items() if k[0] != record.id}

    # --------------------------------------------------------------- internals

    def _open(
        self, record: CollectionRecord, embedding_function, data_loader, ef_options, loader_options=None, *, lazy: bool = False
    ) -> Collection:
        config = record.config
        parts = (
            lambda: self._component(record, "embedding_function", embedding_function, config.embedding_function, ef_options),
            lambda: self._component(record, "data_loader", data_loader, config.data_loader, loader_options),
            lambda: self._sparse(record, config),
        )
        if lazy:
            return Collection(self._backend, record, *(Deferred(build) for build in parts))
        return Collection(self._backend, record, *(build() for build in parts))

    def _sparse(self, record: CollectionRecord, config: CollectionConfig) -> tuple[str, Any] | None:
        if config.sparse is None:
            return None
        ef = self._component(record, "embedding_function", UNSET, config.sparse.embedding_function, None)
        return config.sparse.key, ef

    def _component(self, record: CollectionRecord, kind: str, given: Any, stored, options: dict | None) -> Any:
        """The embedding function or loader for an opened collection: given, or rebuilt once and cached."""
        if given is not UNSET and given is not None:
            if stored is not None:
                emb.check_same(given, stored, kind, record.name)
            return given
        if stored is None:
            return None
        key = (record.id, kind, stored.name, repr(sorted(stored.config.items())), repr(sorted((options or {}).items())))
        if key not in self._ef_cache:
            self._ef_cache[key] = emb.build(stored, kind, options, record.name)
        return self._ef_cache[key]


def _sparse_config(value: Any) -> SparseConfig | None:
    """``configuration={"sparse": {"key": "sparse_embedding", "embedding_function": BM25EmbeddingFunction()}}``."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("key"), str) or not value["key"]:
        raise InvalidArgumentError(
            "configuration['sparse'] must be {'key': 'sparse_embedding', 'embedding_function': BM25EmbeddingFunction()}; "
            f"got {value!r}"
        )
    if value["key"].startswith("#"):
        raise InvalidArgumentError(f"sparse key {value['key']!r} must not start with '#' (reserved for built-in keys)")
    if value.get("source_key", "#document") != "#document":
        raise InvalidArgumentError("sparse vectors are computed from '#document' only; drop 'source_key'")
    ef = value.get("embedding_function")
    spec = ComponentSpec.from_dict(ef, "sparse embedding_function") if isinstance(ef, dict) else emb.describe(ef, "sparse_embedding_function")
    if spec is None:
        raise InvalidArgumentError("configuration['sparse'] needs an 'embedding_function' such as BM25EmbeddingFunction()")
    return SparseConfig(key=value["key"], embedding_function=spec)


def EphemeralClient(settings: Settings | None = None, tenant: str = DEFAULT_TENANT, database: str = DEFAULT_DATABASE) -> Client:
    """An in-memory client: fast, private to this client, gone when the process exits."""
    settings = (settings or Settings()).copy(is_persistent=False)
    return Client(settings, tenant, database)


def PersistentClient(
    path: str | os.PathLike = "./.chroma",
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> Client:
    """A client storing data under ``path``; close it (or exit) to release the path for other processes.

    Example:
        >>> import retrieval, tempfile
        >>> client = retrieval.PersistentClient(path=tempfile.mkdtemp())
        >>> client.count_collections()
        0
        >>> client.close()
    """
    settings = (settings or Settings()).copy(is_persistent=True, persist_directory=str(path))
    return Client(settings, tenant, database)
