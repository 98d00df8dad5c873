"""The PostgreSQL + pgvector backend of `PersistentMemory` (the `postgres` extra).

`PersistentMemory("postgresql://user@host/db")` keeps its memories in that
database instead of a directory. The tables mirror the embedded store's:
`documents` (with a pgvector `embedding` column and an HNSW cosine index),
`metadata_index` (one JSONB value per top-level metadata key, so the same
filters compile to the same SQL), `memory_text` (a `tsvector` with a GIN
index for keyword search), the audit trail, use counts, the embedding cache,
chat messages and settings.

`PersistentMemory` writes the same SQL to both backends; `PostgresDatabase`
hands it connections from a `psycopg_pool` pool whose placeholders are
translated (`?` to `%s`). Every write is one transaction holding the store's
advisory lock, so writes are serialised as on SQLite, from any number of
processes and machines; reads are snapshots (`REPEATABLE READ`) and run in
parallel.

Vector search is exact over the candidates when a filter leaves few (a
user's memories, say), and goes through the HNSW index with pgvector's
iterative scan otherwise, falling back to exact if the index returns fewer
than `k` matches: a filtered search returns `min(k, matches)` results.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from langchain_persistent_memory._db import SCHEMA_VERSION, Connection
from langchain_persistent_memory._filters import compile_filter, typed_value
from langchain_persistent_memory.errors import (
    CorruptStoreError,
    EmbeddingMismatchError,
    PersistentMemoryError,
    StoreBusyError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    import numpy.typing as npt
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    from langchain_persistent_memory.vectorstores import _Batch

logger = logging.getLogger(__name__)
T = TypeVar("T")

_INSTALL = 'pip install "langchain-persistent-memory[postgres]"'
# The key of the advisory lock every write transaction holds ("lpm" + 1).
_WRITE_LOCK = 0x6C706D01
# Above this many candidates a filtered search goes through the HNSW index.
_EXACT_LIMIT = 20_000
# pgvector's HNSW indexes `vector` columns of at most this many dimensions.
_HNSW_MAX_DIM = 2000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS settings (key text PRIMARY KEY, value text NOT NULL)",
    (
        "CREATE TABLE IF NOT EXISTS documents ("
        " label bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " id text NOT NULL UNIQUE,"
        " text text NOT NULL,"
        " metadata text NOT NULL,"
        " embedding vector NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS metadata_index"
        " (key text NOT NULL, type text NOT NULL, value jsonb, label bigint NOT NULL)"
    ),
    (
        "CREATE INDEX IF NOT EXISTS metadata_index_kv"
        " ON metadata_index (key, type, value, label)"
    ),
    "CREATE INDEX IF NOT EXISTS metadata_index_label ON metadata_index (label, key)",
)

# The memory tables (`PersistentMemory`'s part), as on SQLite.
_MEMORY_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS memory_text ("
        " label bigint PRIMARY KEY, user_id text NOT NULL,"
        " context text NOT NULL, terms tsvector NOT NULL)"
    ),
    "CREATE INDEX IF NOT EXISTS memory_text_terms ON memory_text USING gin (terms)",
    "CREATE INDEX IF NOT EXISTS memory_text_user ON memory_text (user_id)",
    (
        "CREATE TABLE IF NOT EXISTS memory_audit ("
        " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " memory_id text NOT NULL, user_id text NOT NULL, op text NOT NULL,"
        " text text, metadata text, at double precision NOT NULL)"
    ),
    "CREATE INDEX IF NOT EXISTS memory_audit_id ON memory_audit (memory_id)",
    "CREATE INDEX IF NOT EXISTS memory_audit_user ON memory_audit (user_id)",
    (
        "CREATE TABLE IF NOT EXISTS memory_use ("
        " label bigint PRIMARY KEY, last_used double precision NOT NULL,"
        " use_count bigint NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS embedding_cache ("
        " model text NOT NULL, text_hash bytea NOT NULL, vector bytea NOT NULL,"
        " PRIMARY KEY (model, text_hash))"
    ),
    (
        "CREATE TABLE IF NOT EXISTS chat_messages ("
        " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " user_id text NOT NULL, session_id text NOT NULL,"
        " message text NOT NULL, created_at double precision NOT NULL,"
        " pending integer NOT NULL DEFAULT 0, attempts integer NOT NULL DEFAULT 0)"
    ),
    (
        "CREATE INDEX IF NOT EXISTS chat_messages_session"
        " ON chat_messages (user_id, session_id, seq)"
    ),
    (
        "CREATE INDEX IF NOT EXISTS chat_messages_pending"
        " ON chat_messages (user_id, session_id, seq) WHERE pending = 1"
    ),
)


def is_postgres_url(location: object) -> bool:
    """Whether `location` names a PostgreSQL database rather than a directory."""
    return isinstance(location, str) and location.startswith(
        ("postgresql://", "postgres://")
    )


def redacted(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + host))


def _psycopg() -> Any:
    try:
        import psycopg  # noqa: PLC0415 - optional extra
        import psycopg_pool  # noqa: F401, PLC0415 - optional extra
    except ImportError as error:
        msg = f"A PostgreSQL store needs psycopg 3 and psycopg-pool: {_INSTALL}."
        raise PersistentMemoryError(msg) from error
    return psycopg


@functools.lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (our SQL has no literal ? or %)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection that runs the SQL `PersistentMemory` writes for SQLite."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self.raw.cursor()
        cursor.execute(_translate(sql), params)
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(_translate(sql), list(rows))
        return cursor


class PostgresDatabase:
    """A connection pool to one database, with the transactions of `Database`."""

    def __init__(self, url: str, *, pool_size: int, busy_timeout: float) -> None:
        """Open a pool to `url`; fail now, clearly, if the server cannot be reached."""
        self._psycopg = _psycopg()
        self.url = url
        self.name = redacted(url)
        self.busy_timeout = busy_timeout
        self._pool_size = pool_size
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._pool = self._open_pool()

    def _open_pool(self) -> Any:
        from psycopg_pool import ConnectionPool  # noqa: PLC0415 - optional extra

        pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"autocommit": True},
            timeout=max(self.busy_timeout, 1.0),
            open=False,
            name="langchain-persistent-memory",
        )
        try:
            pool.open(wait=True, timeout=max(self.busy_timeout, 1.0))
        except Exception as exc:
            pool.close()
            msg = (
                f"Could not connect to PostgreSQL at {self.name} ({exc}). Check "
                "that the server runs and accepts this URL (user, host, port, "
                "database, password)."
            )
            raise PersistentMemoryError(msg) from exc
        return pool

    def _current_pool(self) -> Any:
        if self._closed:
            msg = f"The store at {self.name} is closed; open a new one."
            raise ValueError(msg)
        if os.getpid() != self._pid:
            # A forked child must not share its parent's sockets: new pool.
            with self._lock:
                if os.getpid() != self._pid:
                    self._pid = os.getpid()
                    self._local = threading.local()
                    self._pool = self._open_pool()
        return self._pool

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_Connection]:
        active: _Connection | None = getattr(self._local, "con", None)
        if active is not None:
            if write and not self._local.writing:
                msg = "A write cannot start inside a read transaction."
                raise RuntimeError(msg)
            if not write:
                yield active
                return
            with active.raw.transaction():  # a savepoint
                yield active
            return
        errors = self._psycopg.errors
        try:
            with (
                self._current_pool().connection() as raw,
                raw.transaction(),
            ):
                con = _Connection(raw)
                if write:
                    timeout = int(self.busy_timeout * 1000)
                    con.execute(f"SET LOCAL lock_timeout = {timeout}")
                    con.execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCK,))
                else:
                    con.execute(
                        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                    )
                self._local.con, self._local.writing = con, write
                try:
                    yield con
                finally:
                    self._local.con = None
        except errors.LockNotAvailable as exc:
            msg = (
                f"The store at {self.name} stayed locked by another writer for "
                f"more than busy_timeout={self.busy_timeout} s. Nothing was "
                "written; retry, or raise busy_timeout."
            )
            raise StoreBusyError(msg) from exc
        except self._psycopg.OperationalError as exc:
            msg = f"PostgreSQL at {self.name} failed: {exc}"
            raise PersistentMemoryError(msg) from exc

    def write(self) -> contextlib.AbstractContextManager[_Connection]:
        """One write transaction holding the store's lock; commit or roll back."""
        return self._transaction(write=True)

    def read(self) -> contextlib.AbstractContextManager[_Connection]:
        """One read-only snapshot: every query inside sees the same data."""
        return self._transaction(write=False)

    def parse(self, data: str | bytes, what: str, parse: Callable[[Any], T]) -> T:
        """Parse a stored JSON value with `parse`; damage is a `CorruptStoreError`."""
        try:
            return parse(json.loads(data))
        except (ValueError, TypeError, KeyError) as exc:
            msg = (
                f"The store at {self.name} is damaged: {what} is not what this "
                f"package wrote ({type(exc).__name__}: {exc}). Nothing was "
                "changed; restore the database from a backup, or delete that row."
            )
            raise CorruptStoreError(msg) from exc

    def close(self) -> None:
        """Close the pool. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self._pid:
            self._pool.close()


class _NoCheckpoint:
    """PostgreSQL keeps its own indexes: there is no checkpoint to schedule."""

    @staticmethod
    def note(changes: int) -> None:
        del changes


class PostgresStore:
    """Documents, vectors and metadata of a memory in PostgreSQL.

    It answers the same private calls as `PersistentFAISS` does for
    `PersistentMemory`: `_write_rows`, `_delete_rows`, `_search`,
    `_documents`, `_vectors`, `_check_vectors`, `_bind` and `_index_rows`.
    """

    def __init__(
        self,
        url: str,
        embedding: Embeddings,
        *,
        embedding_model: str | None = None,
        pool_size: int = 10,
        busy_timeout: float = 30.0,
        ef_search: int = 100,
    ) -> None:
        """Connect to `url` and create or check the schema.

        Args:
            url: `postgresql://user[:password]@host[:port]/database`. The
                database must exist; the `vector` extension is created if the
                user may (else ask an administrator: `CREATE EXTENSION vector`).
            embedding: The embeddings the store is used with.
            embedding_model: Name recorded for the model (as `PersistentFAISS`).
            pool_size: Most connections this process opens.
            busy_timeout: Seconds a write waits for another writer's lock
                before raising `StoreBusyError`; also the connect timeout.
            ef_search: HNSW search breadth for searches that use the index;
                more is slower and closer to exact.
        """
        from langchain_persistent_memory.vectorstores import (  # noqa: PLC0415
            _embedding_identity,
        )

        for name, value in (("pool_size", pool_size), ("ef_search", ef_search)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"{name} must be an int >= 1, got {value!r}."
                raise ValueError(msg)
        if not busy_timeout >= 0:
            msg = f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}."
            raise ValueError(msg)
        self.url = url
        self._embedding = embedding
        self._model = embedding_model or _embedding_identity(embedding)
        self._ef_search = ef_search
        self._dim: int | None = None
        self._checkpointer = _NoCheckpoint()
        self._jsonb = _psycopg().types.json.Jsonb
        self._db = PostgresDatabase(url, pool_size=pool_size, busy_timeout=busy_timeout)
        try:
            self._create()
        except BaseException:
            self._db.close()
            raise

    def _create(self) -> None:
        errors = self._db._psycopg.errors  # noqa: SLF001
        try:
            with self._db.write() as con:
                con.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except errors.InsufficientPrivilege as exc:
            msg = (
                f"The pgvector extension is not installed in {self._db.name} and "
                "this user may not create it. Ask an administrator to run "
                "CREATE EXTENSION vector in that database."
            )
            raise PersistentMemoryError(msg) from exc
        except errors.FeatureNotSupported as exc:
            msg = f"PostgreSQL at {self._db.name} has no pgvector extension: {exc}"
            raise PersistentMemoryError(msg) from exc
        with self._db.write() as con:
            tables = {
                row[0]
                for row in con.execute(
                    "SELECT tablename FROM pg_tables"
                    " WHERE schemaname = current_schema()"
                )
            }
            if "documents" in tables and "settings" not in tables:
                msg = (
                    f"{self._db.name} has a documents table but no settings: it "
                    "is not a store of langchain-persistent-memory. Nothing was "
                    "changed; use another database or schema."
                )
                raise CorruptStoreError(msg)
            for statement in (*_SCHEMA, *_MEMORY_SCHEMA):
                con.execute(statement)
            con.executemany(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO NOTHING",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("distance", "cosine"),
                    ("embedding_model", self._model),
                ],
            )
            settings = dict(con.execute("SELECT key, value FROM settings").fetchall())
        if int(settings["schema_version"]) > SCHEMA_VERSION:
            msg = (
                f"The store at {self._db.name} has schema version "
                f"{settings['schema_version']}, newer than this package reads "
                f"({SCHEMA_VERSION}). Upgrade langchain-persistent-memory."
            )
            raise PersistentMemoryError(msg)
        if settings["embedding_model"] != self._model:
            msg = (
                f"The store at {self._db.name} was made with the embedding model "
                f"{settings['embedding_model']!r}, but is opened with "
                f"{self._model!r}; their vectors are not comparable. Open it with "
                "the same embedding, use a new database, or pass embedding_model="
                f"{settings['embedding_model']!r} if the two really are the same model."
            )
            raise EmbeddingMismatchError(msg)
        if "dimension" in settings:
            self._dim = int(settings["dimension"])

    def close(self) -> None:
        """Close the connection pool."""
        self._db.close()

    # ------------------------------------------------------------- writing

    def _bind(self, value: Any) -> Any:
        """A metadata value as `metadata_index.value` binds it (JSONB)."""
        return self._jsonb(value)

    def _index_rows(
        self, label: int, metadata: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        rows = []
        for key, value in metadata.items():
            kind, comparable = typed_value(value)
            rows.append((key, kind, self._jsonb(comparable), label))
        return rows

    def _write_rows(
        self, con: Connection, batch: _Batch, array: npt.NDArray[np.float32]
    ) -> list[int]:
        """Upsert rows inside the caller's write transaction; return their labels."""
        self._ensure_dimension(con, array.shape[1])
        labels: list[int] = []
        for doc_id, text, meta, meta_json, vector in zip(
            batch.ids,
            batch.texts,
            batch.metadatas,
            batch.metadata_json,
            array,
            strict=True,
        ):
            label = con.execute(
                "INSERT INTO documents (id, text, metadata, embedding)"
                " VALUES (?, ?, ?, ?::vector) ON CONFLICT (id) DO UPDATE SET"
                " text = excluded.text, metadata = excluded.metadata,"
                " embedding = excluded.embedding RETURNING label",
                (doc_id, text, meta_json, _vector_text(vector)),
            ).fetchone()[0]
            con.execute("DELETE FROM metadata_index WHERE label = ?", (label,))
            con.executemany(
                "INSERT INTO metadata_index (key, type, value, label)"
                " VALUES (?, ?, ?, ?)",
                self._index_rows(label, meta),
            )
            labels.append(label)
        return labels

    def _ensure_dimension(self, con: Connection, dim: int) -> None:
        """Fix the vector column's dimension (and build its index) on first write."""
        if self._dim is None:
            row = con.execute(
                "SELECT value FROM settings WHERE key = 'dimension'"
            ).fetchone()
            if row is None:
                con.execute(
                    "INSERT INTO settings (key, value) VALUES ('dimension', ?)",
                    (str(dim),),
                )
                con.execute(
                    f"ALTER TABLE documents ALTER COLUMN embedding TYPE vector({dim})"
                )
                if dim <= _HNSW_MAX_DIM:
                    con.execute(
                        "CREATE INDEX IF NOT EXISTS documents_embedding ON documents"
                        " USING hnsw (embedding vector_cosine_ops)"
                    )
                else:
                    logger.warning(
                        "pgvector's HNSW index takes at most %d dimensions; "
                        "searches of this %d-dimensional store are exact.",
                        _HNSW_MAX_DIM,
                        dim,
                    )
                row = (str(dim),)
            self._dim = int(row[0])
        self._check_dimension(dim)

    def _check_dimension(self, dim: int) -> None:
        if self._dim is not None and dim != self._dim:
            msg = (
                f"The store at {self._db.name} holds {self._dim}-dimensional "
                f"vectors, but the embedding {self._model!r} gave "
                f"{dim}-dimensional ones. Open the store with the embedding it "
                "was made with, or use a new database."
            )
            raise EmbeddingMismatchError(msg)

    def _check_vectors(
        self, vectors: Sequence[Sequence[float]], count: int, source: str
    ) -> npt.NDArray[np.float32]:
        from langchain_persistent_memory.vectorstores import (  # noqa: PLC0415
            checked_vectors,
        )

        where = f"{type(self._embedding).__name__}.{source}"
        array = checked_vectors(vectors, count, where, nonzero=True)
        self._check_dimension(array.shape[1])
        return array

    def _delete_rows(self, con: Connection, ids: list[str]) -> list[int]:
        """Delete rows by id inside the caller's write transaction; return labels."""
        labels = [
            row[0]
            for row in con.execute(
                "SELECT label FROM documents WHERE id = ANY(?)", (ids,)
            )
        ]
        if labels:
            con.execute("DELETE FROM documents WHERE label = ANY(?)", (labels,))
            con.execute("DELETE FROM metadata_index WHERE label = ANY(?)", (labels,))
        return labels

    # ------------------------------------------------------------- reading

    def _search(
        self,
        embedding: Sequence[float],
        k: int,
        filter: Mapping[str, Any] | None,  # noqa: A002 - LangChain's name
    ) -> tuple[list[tuple[int, float]], None]:
        """`[(label, cosine similarity)]` of the best `k` rows matching `filter`."""
        query = self._check_vectors([embedding], 1, "embed_query")[0]
        text = _vector_text(query)
        with self._db.read() as con:
            if self._dim is None:
                row = con.execute(
                    "SELECT value FROM settings WHERE key = 'dimension'"
                ).fetchone()
                if row is None:
                    return [], None  # nothing was ever stored
                self._dim = int(row[0])
                self._check_dimension(len(query))
            candidates: list[int] | None = None
            if filter:
                sql, params = compile_filter(filter, self._bind)
                candidates = [row[0] for row in con.execute(sql, params)]
                if not candidates:
                    return [], None
            if candidates is not None and len(candidates) <= _EXACT_LIMIT:
                return self._exact(con, text, k, candidates), None
            ef = min(max(self._ef_search, k), 1000)
            con.execute(f"SET LOCAL hnsw.ef_search = {ef}")
            con.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            where = "" if filter is None else f"WHERE label IN ({sql})"
            rows = con.execute(
                "SELECT label, 1 - (embedding <=> ?::vector) AS score"  # noqa: S608
                f" FROM documents {where} ORDER BY embedding <=> ?::vector LIMIT ?",
                (text, *([] if filter is None else params), text, k),
            ).fetchall()
            if candidates is not None and len(rows) < min(k, len(candidates)):
                return self._exact(con, text, k, candidates), None
        hits = [(int(label), float(score)) for label, score in rows]
        hits.sort(key=lambda hit: -hit[1])  # relaxed order: sort what came back
        return hits, None

    @staticmethod
    def _exact(
        con: _Connection, text: str, k: int, candidates: list[int]
    ) -> list[tuple[int, float]]:
        """Score every candidate (the CTE keeps the planner off the index)."""
        rows = con.execute(
            "WITH c AS MATERIALIZED (SELECT label, embedding FROM documents"
            " WHERE label = ANY(?)) SELECT label, 1 - (embedding <=> ?::vector)"
            " AS score FROM c ORDER BY embedding <=> ?::vector, label LIMIT ?",
            (candidates, text, text, k),
        ).fetchall()
        return [(int(label), float(score)) for label, score in rows]

    def _documents(self, labels: Sequence[int]) -> dict[int, Document]:
        from langchain_core.documents import Document  # noqa: PLC0415

        found: dict[int, Document] = {}
        with self._db.read() as con:
            for label, doc_id, text, meta in con.execute(
                "SELECT label, id, text, metadata FROM documents WHERE label = ANY(?)",
                (list(labels),),
            ):
                found[label] = Document(
                    id=doc_id, page_content=text, metadata=self._meta(doc_id, meta)
                )
        return found

    def _vectors(self, labels: Sequence[int]) -> dict[int, npt.NDArray[np.float32]]:
        """Unit vectors of the labels present (as the FAISS index holds them)."""
        found: dict[int, npt.NDArray[np.float32]] = {}
        with self._db.read() as con:
            for label, values in con.execute(
                "SELECT label, embedding::real[] FROM documents WHERE label = ANY(?)",
                (list(labels),),
            ):
                vector = np.asarray(values, dtype=np.float32)
                found[label] = vector / np.linalg.norm(vector)
        return found

    def _meta(self, doc_id: str, data: str) -> dict[str, Any]:
        from langchain_persistent_memory.vectorstores import _as_dict  # noqa: PLC0415

        return self._db.parse(data, f"the metadata of {doc_id!r}", _as_dict)


class PostgresText:
    """The memory tables on PostgreSQL, and `tsvector` keyword search."""

    schema: tuple[str, ...] = ()  # created with the store's own tables

    @staticmethod
    def put(con: Any, label: int, text: str, context: str | None, user_id: str) -> None:
        """Index a memory's text (and keyword-only context) for keyword search."""
        con.execute(
            "INSERT INTO memory_text (label, user_id, context, terms)"
            " VALUES (?, ?, ?, to_tsvector('english', ?)) ON CONFLICT (label)"
            " DO UPDATE SET user_id = excluded.user_id,"
            " context = excluded.context, terms = excluded.terms",
            (label, user_id, context or "", f"{text}\n{context or ''}"),
        )

    @staticmethod
    def drop(con: Any, labels: Sequence[int]) -> None:
        """Remove memories from keyword search."""
        con.execute("DELETE FROM memory_text WHERE label = ANY(?)", (list(labels),))

    @staticmethod
    def contexts(con: Any, labels: Sequence[int]) -> dict[int, str]:
        """The keyword-only context of each memory that has one."""
        return dict(
            con.execute(
                "SELECT label, context FROM memory_text"
                " WHERE label = ANY(?) AND context != ''",
                (list(labels),),
            ).fetchall()
        )

    @staticmethod
    def keyword(
        con: Any, terms: Sequence[str], user_id: str
    ) -> Iterable[tuple[int, float]]:
        """`(label, score)` of the user's memories matching any term, best first.

        Terms are stemmed as the texts were (`english`); the score is
        `ts_rank` normalised by document length.
        """
        query = " | ".join(terms)  # words of \\w characters: no operators
        rows = con.execute(
            "SELECT t.label, ts_rank(t.terms, q, 1) AS score"
            " FROM memory_text AS t, to_tsquery('english', ?) AS q"
            " WHERE t.user_id = ? AND t.terms @@ q ORDER BY score DESC, t.label",
            (query, user_id),
        )
        for label, score in rows:
            yield label, float(score)


def recorded_model(url: str) -> str | None:
    """The embedding model recorded in the store at `url`, if there is one.

    Quiet: an unreachable server or a database without a store gives None,
    and opening the store then reports what is wrong.
    """
    try:
        psycopg = _psycopg()
        with psycopg.connect(url, connect_timeout=10, autocommit=True) as con:
            row = con.execute(
                "SELECT value FROM settings WHERE key = 'embedding_model'"
            ).fetchone()
    except Exception:  # noqa: BLE001 - reported when the store is opened
        return None
    return str(row[0]) if row else None


def _vector_text(vector: npt.NDArray[np.float32]) -> str:
    """The text form pgvector reads: `[1.0,2.0,...]`."""
    return "[" + ",".join(map(repr, vector.tolist())) + "]"
