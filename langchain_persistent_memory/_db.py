"""SQLite plumbing: a connection per thread, one transaction helper, the schema.

The database file is the store's source of truth. Every write goes through
`Database.write()`, which takes SQLite's write lock up front (`BEGIN
IMMEDIATE`), commits, and rolls back on any exception. Reads that must agree
with each other go through `Database.read()`, which holds one WAL snapshot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from langchain_persistent_memory.errors import CorruptStoreError, StoreBusyError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from pathlib import Path

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1

# `label` is the 64-bit id FAISS knows a row by; `id` is the caller's string id.
# `seq` is the change number of the transaction that last wrote the row, so the
# rows an index is missing are exactly those with `seq` above its stamp.
_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS settings"
        " (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
    ),
    (
        "CREATE TABLE IF NOT EXISTS counter"
        " (id INTEGER PRIMARY KEY CHECK (id = 0), seq INTEGER NOT NULL)"
    ),
    "INSERT OR IGNORE INTO counter (id, seq) VALUES (0, 0)",
    (
        "CREATE TABLE IF NOT EXISTS documents ("
        " label INTEGER PRIMARY KEY AUTOINCREMENT,"
        " id TEXT NOT NULL UNIQUE,"
        " text TEXT NOT NULL,"
        " metadata TEXT NOT NULL,"
        " embedding BLOB NOT NULL,"
        " seq INTEGER NOT NULL)"
    ),
    "CREATE INDEX IF NOT EXISTS documents_seq ON documents (seq)",
    # Labels deleted by the transaction `seq`; pruned up to the checkpoint stamp.
    (
        "CREATE TABLE IF NOT EXISTS tombstones"
        " (seq INTEGER NOT NULL, label INTEGER NOT NULL)"
    ),
    "CREATE INDEX IF NOT EXISTS tombstones_seq ON tombstones (seq)",
    # One row per top-level metadata key, so filters are index look-ups.
    (
        "CREATE TABLE IF NOT EXISTS metadata_index"
        " (key TEXT NOT NULL, type TEXT NOT NULL, value, label INTEGER NOT NULL)"
    ),
    (
        "CREATE INDEX IF NOT EXISTS metadata_index_kv"
        " ON metadata_index (key, type, value, label)"
    ),
    "CREATE INDEX IF NOT EXISTS metadata_index_label ON metadata_index (label, key)",
)


# LangGraph store items (`PersistentMemoryStore`): the memory of an indexed
# item is `memory_id`; `user_id` is its owner, for `forget`.
_STORE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS store_items ("
    " namespace TEXT {bytewise} NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " created_at {real} NOT NULL, updated_at {real} NOT NULL,"
    " expires_at {real}, ttl_minutes {real}, memory_id TEXT,"
    " user_id TEXT NOT NULL, PRIMARY KEY (namespace, key));"
    "CREATE INDEX IF NOT EXISTS store_items_memory ON store_items (memory_id);"
    "CREATE INDEX IF NOT EXISTS store_items_user ON store_items (user_id);"
    "CREATE INDEX IF NOT EXISTS store_items_expiry ON store_items (expires_at)"
    " WHERE expires_at IS NOT NULL"
)


def store_schema(real: str, bytewise: str = "") -> tuple[str, ...]:
    """The statements that create `store_items`.

    `real` is the SQL type of reals; `bytewise` the collation that compares
    text byte by byte (SQLite's default; `COLLATE "C"` on PostgreSQL), so
    that a namespace prefix is a range of the primary key.
    """
    return tuple(_STORE_SCHEMA.format(real=real, bytewise=bytewise).split(";"))


class Connection(Protocol):
    """What the stores' SQL runs on: a `sqlite3.Connection`, or PostgreSQL's."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any:
        """Run one statement; return a cursor."""
        ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        """Run one statement for each row of parameters."""
        ...


_CORRUPT_HINTS = ("file is not a database", "malformed", "file is encrypted")
_BUSY_HINTS = ("database is locked", "database is busy")


def storable(value: str, name: str) -> str:
    """Return `value` if SQLite can store it (UTF-8); else a clear `ValueError`."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        msg = (
            f"{name} contains a lone surrogate ({value[exc.start]!r} at position "
            f"{exc.start}), which is not valid Unicode and cannot be stored. "
            "Remove it, or decode the source with errors='replace'."
        )
        raise ValueError(msg) from None
    return value


def no_nul(value: str, what: str) -> str:
    """`value`, or a clear error: PostgreSQL text cannot hold NUL characters."""
    if "\x00" in value:
        msg = (
            f"{what} contains a NUL character (\\x00), which PostgreSQL cannot "
            "store in text. Remove it; nothing was written."
        )
        raise ValueError(msg)
    return value


def parse_stored(
    data: str | bytes,
    what: str,
    parse: Callable[[Any], T],
    *,
    where: str,
    kind: str,
) -> T:
    """Parse a stored JSON value with `parse`; damage is a `CorruptStoreError`.

    `where` names the store and `kind` what to restore ("file", "database").
    """
    try:
        return parse(json.loads(data))
    except (ValueError, TypeError, KeyError) as exc:
        msg = (
            f"{where} is damaged: {what} is not what this package wrote "
            f"({type(exc).__name__}: {exc}). Nothing was changed; restore the "
            f"{kind} from a backup, or delete that row."
        )
        raise CorruptStoreError(msg) from exc


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the database at `path`, for looking at it.

    It can neither write nor run functions planted in the file's schema.

    Raises:
        sqlite3.Error: If the file cannot be opened.
    """
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    con.execute("PRAGMA trusted_schema = OFF")
    return con


class Database:
    """The store's SQLite file, opened once per thread and per process."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float,
        synchronous: Literal["full", "normal"],
    ) -> None:
        """Open (creating if needed) the database at `path` and its schema."""
        self.path = path
        self.busy_timeout = busy_timeout
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        if not path.exists():
            # Owner-only from the first byte; SQLite gives -wal/-shm the same mode.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self.write() as con:
            tables = {
                row[0]
                for row in con.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            if tables and "settings" not in tables:
                msg = (
                    f"{path} is a SQLite database but not a store of "
                    "langchain-persistent-memory (it has no settings table). "
                    "Nothing was changed; choose another directory."
                )
                raise CorruptStoreError(msg)
            for statement in _SCHEMA:
                con.execute(statement)

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's connections and locks."""
        self._pid = os.getpid()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections = []

    def connection(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it on first use."""
        if self._closed:
            msg = f"The store at {self.path.parent} is closed; open a new one."
            raise ValueError(msg)
        if os.getpid() != self._pid:
            # A forked child must never use its parent's SQLite connections;
            # leave them untouched (closing them could disturb the parent).
            self.reset_after_fork()
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = self._open()
            self._local.con = con
            with self._lock:
                self._connections.append(con)
        return con

    def _open(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            con.execute(f"PRAGMA synchronous = {self._synchronous}")
            # Triggers and views found in the file may not call functions
            # with side effects: a crafted memory.db stays data.
            con.execute("PRAGMA trusted_schema = OFF")
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        if mode != "wal":
            logger.warning("SQLite refused WAL mode for %s (mode %s)", self.path, mode)
        return con

    def translate(self, exc: sqlite3.Error) -> Exception:
        """Turn a SQLite error into this package's error for the same cause."""
        text = str(exc).lower()
        if any(hint in text for hint in _BUSY_HINTS):
            msg = (
                f"The store at {self.path.parent} stayed locked by another "
                f"writer for more than busy_timeout={self.busy_timeout} s. "
                "Nothing was written; retry, or raise busy_timeout."
            )
            return StoreBusyError(msg)
        if any(hint in text for hint in _CORRUPT_HINTS):
            msg = (
                f"{self.path} is damaged or is not a SQLite database ({exc}). "
                "Nothing was changed or deleted. Restore the file from a backup, "
                "or move the directory aside to start an empty store."
            )
            return CorruptStoreError(msg)
        return exc

    @contextlib.contextmanager
    def write(self, *, lock: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: lock up front, commit, roll back on any error.

        Nested use becomes a savepoint of the outer transaction. `lock` is
        for PostgreSQL's sake: SQLite always has one writer at a time.
        """
        del lock
        con = self.connection()
        if con.in_transaction:
            con.execute("SAVEPOINT nested")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK TO nested")
                con.execute("RELEASE nested")
                raise
            con.execute("RELEASE nested")
            return
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        try:
            yield con
            con.execute("COMMIT")
        except BaseException as exc:
            if _in_transaction(con):
                con.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                translated = self.translate(exc)
                if translated is not exc:
                    raise translated from exc
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same snapshot."""
        con = self.connection()
        if con.in_transaction:
            yield con
            return
        try:
            con.execute("BEGIN")
            yield con
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        finally:
            if _in_transaction(con):
                con.execute("COMMIT")

    def parse(self, data: str | bytes, what: str, parse: Callable[[Any], T]) -> T:
        """Parse a stored JSON value with `parse`; damage is a `CorruptStoreError`.

        `what` names the value for the message, e.g. "the metadata of 'a'".
        """
        return parse_stored(data, what, parse, where=str(self.path), kind="file")

    def close(self) -> None:
        """Close every connection this process opened. Safe to call twice."""
        self._closed = True
        if os.getpid() != self._pid:
            return
        with self._lock:
            connections, self._connections = self._connections, []
        for con in connections:
            with contextlib.suppress(sqlite3.Error):
                con.close()


def _in_transaction(con: sqlite3.Connection) -> bool:
    """Whether `con` is inside a transaction (a call, so mypy does not narrow it)."""
    return con.in_transaction
