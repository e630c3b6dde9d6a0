"""``Settings``: chromadb-compatible client settings.

chromadb's other settings (server, telemetry and auth knobs this embedded engine has no use for)
are accepted and kept, so ``Settings(...)`` written for chromadb constructs unchanged. Any other
keyword is an error naming the closest valid one: a typo such as ``allow_rest=True`` must not be
dropped silently (issue 8).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from retrieval.errors import InvalidArgumentError

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

# The fields of chromadb 1.5.9's ``chromadb.config.Settings`` that are not fields here: accepted
# and kept in ``extra`` so chromadb code constructs unchanged; anything else is refused.
CHROMADB_SETTINGS = frozenset({
    "environment", "chroma_api_impl", "chroma_server_nofile", "chroma_server_thread_pool_size",
    "tenant_id", "topic_namespace", "chroma_server_host", "chroma_server_headers",
    "chroma_server_http_port", "chroma_server_ssl_enabled", "chroma_server_ssl_verify",
    "chroma_server_api_default_path", "chroma_server_cors_allow_origins",
    "chroma_http_keepalive_secs", "chroma_http_max_connections",
    "chroma_http_max_keepalive_connections", "chroma_memory_limit_bytes",
    "chroma_segment_cache_policy", "chroma_auth_token_transport_header",
    "chroma_client_auth_provider", "chroma_client_auth_credentials",
    "chroma_server_auth_ignore_paths", "chroma_overwrite_singleton_tenant_database_access_from_auth",
    "chroma_server_authn_provider", "chroma_server_authn_credentials",
    "chroma_server_authn_credentials_file", "chroma_server_authz_provider",
    "chroma_server_authz_config", "chroma_server_authz_config_file",
    "chroma_product_telemetry_impl", "chroma_telemetry_impl", "chroma_otel_collection_endpoint",
    "chroma_otel_service_name", "chroma_otel_collection_headers", "chroma_otel_granularity",
    "migrations", "migrations_hash_algorithm", "chroma_segment_directory_impl",
    "chroma_segment_directory_routing_mode", "chroma_memberlist_provider_impl",
    "worker_memberlist_name", "chroma_coordinator_host", "chroma_server_grpc_port",
    "chroma_sysdb_impl", "chroma_producer_impl", "chroma_consumer_impl",
    "chroma_segment_manager_impl", "chroma_executor_impl", "chroma_query_replication_factor",
    "chroma_logservice_host", "chroma_logservice_port", "chroma_quota_provider_impl",
    "chroma_rate_limiting_provider_impl", "chroma_quota_enforcer_impl",
    "chroma_rate_limit_enforcer_impl", "chroma_async_rate_limit_enforcer_impl",
    "chroma_logservice_request_timeout_seconds", "chroma_sysdb_request_timeout_seconds",
    "chroma_query_request_timeout_seconds", "chroma_db_impl",
    "chroma_collection_assignment_policy_impl",
})
# chromadb refuses the pre-0.4 settings (``chroma_db_impl="duckdb+parquet"`` and friends, still in old
# tutorials) with its migration message; accepting them would silently persist nothing.
_LEGACY_VALUES = frozenset({
    "duckdb", "duckdb+parquet", "clickhouse", "local", "rest", "chromadb.db.duckdb.DuckDB",
    "chromadb.db.duckdb.PersistentDuckDB", "chromadb.db.clickhouse.Clickhouse", "chromadb.api.local.LocalAPI",
})
LEGACY_ERROR = """You are using a deprecated configuration of Chroma.

If you do not have data you wish to migrate, you only need to change how you construct
your Chroma client. Please see the "New Clients" section of https://docs.trychroma.com/deployment/migration.
________________________________________________________________________________________________

If you do have data you wish to migrate, we have a migration tool you can use in order to
migrate your data to the new Chroma architecture.
Please `pip install chroma-migrate` and run `chroma-migrate` to migrate your data and then
change how you construct your Chroma client.

See https://docs.trychroma.com/deployment/migration for more information or join our discord at https://discord.gg/MMeYNTmh3x for help!"""
_OWN_SETTINGS = ("is_persistent", "persist_directory", "allow_reset", "anonymized_telemetry", "sqlite_synchronous")


def _check_legacy(extra: dict[str, Any], persist_directory: str) -> None:
    legacy = {k: v for k, v in extra.items() if (k == "chroma_db_impl" and v is not None)
              or (isinstance(v, str) and v in _LEGACY_VALUES)}
    if legacy:
        setting = ", ".join(f"{k}={v!r}" for k, v in legacy.items())
        raise InvalidArgumentError(
            f"{LEGACY_ERROR}\n\n(retrieval: {setting} is chromadb's pre-0.4 configuration. For a persistent "
            f"store write retrieval.PersistentClient(path={persist_directory!r}); for a server, "
            "retrieval.HttpClient(host=..., port=...).)"
        )


def _check_extra(extra: dict[str, Any]) -> None:
    for key in extra:
        if key in CHROMADB_SETTINGS:
            continue
        valid = sorted(CHROMADB_SETTINGS.union(_OWN_SETTINGS))
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; retrieval's own settings are {list(_OWN_SETTINGS)}"
        raise InvalidArgumentError(f"unknown setting {key!r} (not a retrieval or chromadb setting){hint}")


@dataclass(init=False)
class Settings:
    """Client settings.

    Args:
        is_persistent: store data on disk under ``persist_directory``.
        persist_directory: where a persistent client keeps its data.
        allow_reset: allow ``client.reset()``, which deletes everything.
        anonymized_telemetry: accepted for compatibility; retrieval sends no telemetry.
        sqlite_synchronous: SQLite's ``synchronous`` pragma. ``FULL`` (default) makes every
            acknowledged write survive power loss; ``NORMAL`` survives process crashes only.
        **extra: any other chromadb ``Settings`` field (e.g. ``chroma_server_host``), kept in
            ``extra`` and readable as an attribute. An unknown name raises
            :class:`~retrieval.errors.InvalidArgumentError` naming the closest valid one.

    Example:
        >>> Settings(allow_reset=True).allow_reset
        True
        >>> Settings(chroma_server_host="localhost").chroma_server_host
        'localhost'
        >>> Settings(allow_rest=True)
        Traceback (most recent call last):
        ...
        retrieval.errors.InvalidArgumentError: unknown setting 'allow_rest' (not a retrieval or chromadb setting); did you mean 'allow_reset'?
    """

    is_persistent: bool = False
    persist_directory: str = "./.chroma"
    allow_reset: bool = False
    anonymized_telemetry: bool = False
    sqlite_synchronous: str = "FULL"
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        is_persistent: bool = False,
        persist_directory: str = "./.chroma",
        allow_reset: bool = False,
        anonymized_telemetry: bool = False,
        sqlite_synchronous: str = "FULL",
        **extra: Any,
    ):
        _check_extra(extra)
        _check_legacy(extra, str(persist_directory))
        if str(sqlite_synchronous).upper() not in _SYNCHRONOUS:
            raise InvalidArgumentError(
                f"sqlite_synchronous {sqlite_synchronous!r} is not one of {list(_SYNCHRONOUS)}"
            )
        self.is_persistent = bool(is_persistent)
        self.persist_directory = str(persist_directory)
        self.allow_reset = bool(allow_reset)
        self.anonymized_telemetry = bool(anonymized_telemetry)
        self.sqlite_synchronous = str(sqlite_synchronous).upper()
        self.extra = dict(extra)

    def copy(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        values.update(changes)
        return Settings(**values, **self.extra)

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)
