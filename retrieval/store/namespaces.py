"""Tenants and databases: the namespaces collections live in (chromadb's multi-tenancy model).

A tenant holds databases, a database holds collections. ``default_tenant`` and its
``default_database`` always exist, so code that never names a namespace works unchanged.
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from typing import Any, Protocol

from retrieval.errors import InvalidArgumentError, NotFoundError, UniqueConstraintError

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"

NAMESPACES_DDL = """
CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS databases (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (tenant, name)
);
"""


def seed_defaults(conn) -> None:
    """Create the default tenant and database if missing (idempotent; run at every open)."""
    conn.execute("INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?, 0)", (DEFAULT_TENANT,))
    if conn.execute(
        "SELECT 1 FROM databases WHERE tenant = ? AND name = ?", (DEFAULT_TENANT, DEFAULT_DATABASE)
    ).fetchone() is None:
        conn.execute(
            "INSERT INTO databases (id, name, tenant, created_at) VALUES (?, ?, ?, 0)",
            (str(uuid.uuid4()), DEFAULT_DATABASE, DEFAULT_TENANT),
        )


# chromadb 1.5.9's rules (its Rust frontend validates both): a tenant name has 3-512 characters;
# a database name is also made of [a-zA-Z0-9._-] and starts and ends with a letter or digit.
_DATABASE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


def validate_namespace_name(name: Any, what: str) -> str:
    """Tenant and database names, as chromadb's server accepts them (they are URL path segments)."""
    if not isinstance(name, str) or not 3 <= len(name) <= 512 or "/" in name:
        raise InvalidArgumentError(
            f"{what} name must be a string of 3-512 characters without '/'; got {name!r}"
        )
    if what == "database" and not _DATABASE_NAME.match(name):
        raise InvalidArgumentError(
            f"database name {name!r} may use only [a-zA-Z0-9._-] and must start and end with a letter or digit"
        )
    return name


class Connections(Protocol):
    """What the verbs need of the database (db.py's ``Database``, which imports this module to
    create these tables at open)."""

    def reading(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...


class Namespaces:
    """The tenant and database verbs (deleting a database deletes collections: engine.py does it)."""

    def __init__(self, db: Connections):
        self.db = db

    def create_tenant(self, name: str) -> None:
        validate_namespace_name(name, "tenant")
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise UniqueConstraintError(f"tenant {name!r} already exists")
            conn.execute("INSERT INTO tenants (name, created_at) VALUES (?, ?)", (name, time.time()))

    def get_tenant(self, name: str) -> str:
        with self.db.reading() as conn:
            found = conn.execute("SELECT name FROM tenants WHERE name = ?", (name,)).fetchone()
        if found is None:
            raise NotFoundError(f"tenant {name!r} does not exist; create it with AdminClient().create_tenant({name!r})")
        return found[0]

    def create_database(self, name: str, tenant: str) -> None:
        validate_namespace_name(name, "database")
        with self.db.transaction() as conn:
            self._require_tenant(conn, tenant)
            if conn.execute("SELECT 1 FROM databases WHERE tenant = ? AND name = ?", (tenant, name)).fetchone():
                raise UniqueConstraintError(f"database {name!r} already exists in tenant {tenant!r}")
            conn.execute(
                "INSERT INTO databases (id, name, tenant, created_at) VALUES (?, ?, ?, ?)",
                (str(uuid.uuid4()), name, tenant, time.time()),
            )

    def get_database(self, name: str, tenant: str) -> dict[str, Any]:
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT id, name, tenant FROM databases WHERE tenant = ? AND name = ?", (tenant, name)
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"database {name!r} does not exist in tenant {tenant!r}; create it with "
                f"AdminClient().create_database({name!r}, tenant={tenant!r})"
            )
        return {"id": row[0], "name": row[1], "tenant": row[2]}

    def list_databases(self, tenant: str, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        with self.db.reading() as conn:
            self._require_tenant(conn, tenant)
            rows = conn.execute(
                "SELECT id, name, tenant FROM databases WHERE tenant = ? ORDER BY created_at, rowid LIMIT ? OFFSET ?",
                (tenant, -1 if limit is None else limit, offset),
            ).fetchall()
        return [{"id": r[0], "name": r[1], "tenant": r[2]} for r in rows]

    def forget_database(self, name: str, tenant: str) -> None:
        """Remove the database's row (its collections must be deleted first)."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM databases WHERE tenant = ? AND name = ?", (tenant, name))

    def require_database(self, tenant: str, database: str) -> None:
        """Raise NotFoundError unless the tenant and its database exist."""
        self.get_tenant(tenant)
        self.get_database(database, tenant)

    @staticmethod
    def _require_tenant(conn, tenant: str) -> None:
        if conn.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone() is None:
            raise NotFoundError(f"tenant {tenant!r} does not exist; create it with AdminClient().create_tenant({tenant!r})")
