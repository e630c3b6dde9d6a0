"""The SQLite database: the only source of truth (DESIGN section 4).

One connection per database, behind one lock: SQLite serialises writers anyway, and a single
connection means no thread ever sees "database is locked". WAL mode with ``synchronous=FULL`` makes
every committed transaction durable before the call that wrote it returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

from retrieval.errors import InternalError, PersistPathLockedError
from retrieval.query.filter_sql import METADATA_INDEX_DDL, register_sql_functions
from retrieval.store.namespaces import NAMESPACES_DDL, seed_defaults
from retrieval.store.sparse_index import SPARSE_INDEX_DDL

SCHEMA_VERSION = 2
DB_FILENAME = "retrieval.sqlite3"
LOCK_FILENAME = "retrieval.lock"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    database TEXT NOT NULL,
    configuration TEXT NOT NULL,
    metadata TEXT,
    dimension INTEGER,
    created_at REAL NOT NULL,
    vector_slots INTEGER NOT NULL DEFAULT 0,   -- slots of the vector file committed (vector_store.py)
    UNIQUE (tenant, database, name)
);
CREATE TABLE IF NOT EXISTS records (
    label INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: it is also the hnswlib label
    collection_id TEXT NOT NULL,
    id TEXT NOT NULL,
    document TEXT,
    uri TEXT,
    metadata TEXT,                             -- JSON object or NULL
    slot INTEGER,                              -- the vector's slot in the collection's vector file, if moved there
    UNIQUE (collection_id, id)
);
-- Recent vectors (all of them in an in-memory database); persistent collections move them into
-- their vector file in the background (vector_store.py). Apart from the records, so a record row stays small.
CREATE TABLE IF NOT EXISTS vectors (
    label INTEGER PRIMARY KEY,                 -- records.label
    embedding BLOB NOT NULL                    -- float32, little-endian, as given
);
-- Vector-index changes not yet in a durable index checkpoint; replayed on open.
CREATE TABLE IF NOT EXISTS oplog (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id TEXT NOT NULL,
    label INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS oplog_by_collection ON oplog (collection_id, seq);
{METADATA_INDEX_DDL}
{SPARSE_INDEX_DDL}
{NAMESPACES_DDL}
"""


# Ids travel as bound parameters in chunks (not as one JSON array: SQLite's JSON functions stop
# at an embedded NUL, and ids may contain any character).
ID_CHUNK = 5_000


def id_chunks(ids: list[str]) -> Iterable[tuple[str, list[str]]]:
    """``(placeholders, chunk)`` pairs for ``id IN (...)`` over a long id list."""
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start : start + ID_CHUNK]
        yield ", ".join("?" * len(chunk)), chunk


class PathLock:
    """An exclusive advisory lock on a persist directory, held for the client's lifetime."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILENAME
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise PersistPathLockedError(
                f"persist path {str(directory)!r} is in use by another process; one process owns a path at a "
                "time. Run `retrieval run --path ...` and connect with HttpClient to share it, or use another path."
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Database:
    """A SQLite connection plus the lock that serialises its use.

    Args:
        directory: persist directory, or None for an in-memory (ephemeral) database.
        synchronous: SQLite's ``synchronous`` pragma. ``FULL`` (default) survives power loss;
            ``NORMAL`` is faster and survives process crashes but may lose the last commits
            on power loss.
    """

    def __init__(self, directory: Path | None, synchronous: str = "FULL"):
        self.directory = directory
        self.lock = threading.RLock()
        self._undo: list[Callable[[], None]] = []  # the open transaction's on_rollback steps
        self._path_lock = PathLock(directory) if directory is not None else None
        try:
            target = str(directory / DB_FILENAME) if directory is not None else ":memory:"
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self.conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            # 16 KiB pages hold seven 512-d vectors each; at SQLite's default 4 KiB a 2 KiB vector
            # row fills a page alone and the file doubles. (Takes effect for new databases only.)
            self.conn.execute("PRAGMA page_size=16384")
            if directory is not None:
                self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self.conn.execute("PRAGMA cache_size=-16384")  # 16 MiB: the OS page cache holds the rest
            self.conn.execute("PRAGMA temp_store=MEMORY")
            register_sql_functions(self.conn)
            self._create_schema()
        except BaseException:
            self.close()
            raise

    def _create_schema(self) -> None:
        with self.lock:
            self.conn.executescript(_SCHEMA)
            row = self.conn.execute("SELECT value FROM schema_info WHERE key = 'version'").fetchone()
            if row is not None and int(row[0]) > SCHEMA_VERSION:
                raise InternalError(
                    f"database schema version {row[0]} is newer than this retrieval ({SCHEMA_VERSION}); upgrade"
                )
            if row is not None and int(row[0]) < 2:
                # Version 1 kept every vector in the vectors table; they move into the vector files
                # in the background like any recent vector.
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("ALTER TABLE records ADD COLUMN slot INTEGER")
                self.conn.execute("ALTER TABLE collections ADD COLUMN vector_slots INTEGER NOT NULL DEFAULT 0")
                self.conn.execute("UPDATE schema_info SET value = ? WHERE key = 'version'", (str(SCHEMA_VERSION),))
                self.conn.execute("COMMIT")
            elif row is None:
                self.conn.execute("INSERT INTO schema_info VALUES ('version', ?)", (str(SCHEMA_VERSION),))
            seed_defaults(self.conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolls back on any exception, the commit's own included,
        and then runs the undo steps registered with ``on_rollback`` (newest first)."""
        with self.lock:
            self._undo = []
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                for undo in reversed(self._undo):
                    undo()
                raise
            finally:
                self._undo = []

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Inside ``transaction()``: run ``undo`` if the transaction does not commit (a file appended
        to before the commit that makes the appended part count is cut back)."""
        self._undo.append(undo)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            yield self.conn

    def close(self) -> None:
        with self.lock:
            conn = getattr(self, "conn", None)
            if conn is not None:
                conn.close()
                self.conn = None  # type: ignore[assignment]
            if self._path_lock is not None:
                self._path_lock.release()
                self._path_lock = None
