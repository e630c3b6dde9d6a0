"""Clients: ``EphemeralClient``, ``PersistentClient`` and ``Client(Settings(...))``.

Clients in one process that name the same persist path share one engine (one SQLite connection,
one set of index caches, one path lock); the engine closes when the last client does.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from retrieval import embedding as emb
from retrieval import validation as v
from retrieval.collection import Collection
from retrieval.config import (
    CollectionConfig,
    ComponentSpec,
    HnswConfig,
    SparseConfig,
    parse_configuration,
    split_legacy_metadata,
)
from retrieval.errors import InvalidArgumentError, NotAllowedError
from retrieval.settings import Settings
from retrieval.store.engine import DEFAULT_DATABASE, DEFAULT_TENANT, Engine

logger = logging.getLogger("retrieval")

UNSET = emb.UNSET

_shared_lock = threading.Lock()
_shared: dict[str, tuple[Engine, int]] = {}  # realpath -> (engine, number of open clients)


@atexit.register
def _close_shared_engines() -> None:
    """Checkpoint indexes of clients never closed (chromadb code rarely closes), so the next open is fast.

    Nothing depends on it for safety: every acknowledged write is already in SQLite.
    """
    with _shared_lock:
        engines = [engine for engine, _ in _shared.values()]
        _shared.clear()
    for engine in engines:
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - best effort at exit; the oplog replays on next open
            logger.warning("could not checkpoint %s at exit", engine.db.directory, exc_info=True)


def _acquire_engine(path: Path, synchronous: str) -> Engine:
    key = os.path.realpath(path)
    with _shared_lock:
        engine, users = _shared.get(key, (None, 0))
        if engine is None or engine.closed:
            engine, users = Engine(Path(key), synchronous=synchronous), 0
        _shared[key] = (engine, users + 1)
        return engine


def _release_engine(engine: Engine) -> None:
    with _shared_lock:
        for key, (shared, users) in list(_shared.items()):
            if shared is engine:
                if users > 1:
                    _shared[key] = (shared, users - 1)
                    return
                del _shared[key]
        # Close while holding the lock: a thread opening this path meanwhile must wait until the
        # engine has released the path lock, or it would find the lock held by its own process and
        # fail with "in use by another process" (tests/test_concurrency.py).
        engine.close()


class Client:
    """A chromadb-compatible client over the embedded engine.

    Args:
        settings: ``Settings(is_persistent=True, persist_directory=...)`` for disk storage;
            in-memory otherwise. ``allow_reset=True`` enables ``reset()``.
        tenant, database: namespaces for collections (defaults as in chromadb).

    Example:
        >>> import retrieval
        >>> client = retrieval.EphemeralClient()
        >>> client.heartbeat() > 0
        True
    """

    def __init__(self, settings: Settings | None = None, tenant: str = DEFAULT_TENANT, database: str = DEFAULT_DATABASE):
        self.settings = settings or Settings()
        self.tenant = tenant
        self.database = database
        self._ef_cache: dict[tuple, Any] = {}
        if self.settings.is_persistent:
            self._engine = _acquire_engine(Path(self.settings.persist_directory), self.settings.sqlite_synchronous)
        else:
            self._engine = Engine(None)
        self._closed = False

    # ------------------------------------------------------------------ system

    def heartbeat(self) -> int:
        """Nanoseconds since the epoch: proof of life, as in chromadb."""
        return time.time_ns()

    def get_version(self) -> str:
        from retrieval import __version__

        return __version__

    def get_max_batch_size(self) -> int:
        return v.MAX_BATCH_SIZE

    @property
    def max_batch_size(self) -> int:
        return v.MAX_BATCH_SIZE

    def reset(self) -> bool:
        """Delete every collection. Only allowed with ``Settings(allow_reset=True)``."""
        if not self.settings.allow_reset:
            raise NotAllowedError(
                "reset() is disabled: it deletes every collection. Create the client with "
                "Settings(allow_reset=True) to allow it."
            )
        self._engine.reset()
        self._ef_cache.clear()
        return True

    def close(self) -> None:
        """Checkpoint indexes and release the persist path (other processes may then open it)."""
        if self._closed:
            return
        self._closed = True
        if self.settings.is_persistent:
            _release_engine(self._engine)
        else:
            self._engine.close()

    def clear_system_cache(self) -> None:
        self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- collections

    def create_collection(
        self,
        name: str,
        configuration: dict | None = None,
        metadata: dict | None = None,
        embedding_function: Any = UNSET,
        data_loader: Any = None,
        get_or_create: bool = False,
        *,
        persist_embedding_function: bool = True,
        persist_data_loader: bool = True,
    ) -> Collection:
        """Create a collection (``get_or_create=True`` returns an existing one instead of failing).

        ``embedding_function`` defaults to all-MiniLM-L6-v2 as in chromadb; pass ``None`` to always
        give embeddings yourself.
        """
        v.validate_collection_name(name)
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
        record, created = self._engine.create_collection(
            name, config, user_metadata, get_or_create=get_or_create, tenant=self.tenant, database=self.database
        )
        if not created:
            return self._open(record, embedding_function, data_loader, None)
        return Collection(self, record, embedding_function, data_loader, self._sparse(record, config))

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
        record = self._engine.get_collection(name, self.tenant, self.database)
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
        """Collections, oldest first."""
        limit, offset = v.validate_limit_offset(limit, offset)
        records = self._engine.list_collections(limit, offset, self.tenant, self.database)
        return [self._open(r, UNSET, UNSET, None) for r in records]

    def count_collections(self) -> int:
        return self._engine.count_collections(self.tenant, self.database)

    def delete_collection(self, name: str) -> None:
        record = self._engine.get_collection(name, self.tenant, self.database)
        self._engine.delete_collection(name, self.tenant, self.database)
        self._ef_cache = {k: ef for k, ef in self._ef_cache.items() if k[0] != record.id}

    # --------------------------------------------------------------- internals

    def _open(self, record, embedding_function, data_loader, ef_options, loader_options=None) -> Collection:
        config = CollectionConfig.from_json(record.configuration_json)
        ef = self._component(record, "embedding_function", embedding_function, config.embedding_function, ef_options)
        loader = self._component(record, "data_loader", data_loader, config.data_loader, loader_options)
        return Collection(self, record, ef, loader, self._sparse(record, config))

    def _sparse(self, record, config: CollectionConfig) -> tuple[str, Any] | None:
        if config.sparse is None:
            return None
        ef = self._component(record, "embedding_function", UNSET, config.sparse.embedding_function, None)
        return config.sparse.key, ef

    def _component(self, record, kind: str, given: Any, stored, options: dict | None) -> Any:
        """The embedding function or loader for an opened collection: given, or rebuilt once and cached."""
        if given is not UNSET and given is not None:
            if stored is not None:
                emb.check_same(given, stored, kind, record.name)
            return given
        if stored is None:
            return None
        key = (record.id, kind, stored.name, repr(sorted(stored.config.items())), repr(sorted((options or {}).items())))
        if key not in self._ef_cache:
            self._ef_cache[key] = emb.build(stored, kind, options)
        return self._ef_cache[key]

    def _modified_config(self, record, configuration: dict) -> CollectionConfig:
        config = CollectionConfig.from_json(record.configuration_json)
        if set(configuration) - {"hnsw"}:
            raise InvalidArgumentError(
                f"modify(configuration=...) can change only 'hnsw' settings; got keys {sorted(configuration)}"
            )
        hnsw = config.hnsw.modified(parse_configuration(configuration))
        return dataclasses.replace(config, hnsw=hnsw)


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
    spec = ComponentSpec.from_dict(ef, "sparse embedding_function") if isinstance(ef, dict) else emb.describe(ef, "embedding_function")
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
