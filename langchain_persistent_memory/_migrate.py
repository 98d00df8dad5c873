"""Copy a memory store between backends (`lpm migrate SRC DST`).

Everything is copied as stored, without embedding anything again: memories
with their ids, vectors, metadata and keyword context, use counts, the
embedding cache, the audit trail and chat messages (with their sequence
numbers, so each copy is idempotent).

Resumable: memories are copied in batches of one transaction each, in id
order; a memory the destination already holds unchanged is skipped, so
running the same migration again after an interruption finishes it. The
destination must be empty or a migration from the same source (its
settings record the source's `store_id`); it ends as a copy of the source:
rows the source no longer has are deleted, so a run after the source changed
brings the copy up to date.

Verified: at the end every table is read from both stores and compared by
row count and by an order-free checksum (the sum of each row's SHA-256),
so a row missing, extra or different on either side is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from langchain_persistent_memory._postgres import PostgresStore
from langchain_persistent_memory.errors import PersistentMemoryError
from langchain_persistent_memory.vectorstores import _Batch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from langchain_persistent_memory.memory import PersistentMemory

_MOD = 2**256
_STORE_ID = "SELECT value FROM settings WHERE key = 'store_id'"
# Tables other than the memories: (name, key columns, other columns).
_TABLES = (
    ("embedding_cache", ("model", "text_hash"), ("vector",)),
    (
        "memory_audit",
        ("seq",),
        ("memory_id", "user_id", "op", "text", "metadata", "at"),
    ),
    (
        "chat_messages",
        ("seq",),
        ("user_id", "session_id", "message", "created_at", "pending", "attempts"),
    ),
    (
        "store_items",
        ("namespace", "key"),
        (
            "value",
            "created_at",
            "updated_at",
            "expires_at",
            "ttl_minutes",
            "memory_id",
            "user_id",
        ),
    ),
)


@dataclass
class MigrationReport:
    """What `migrate` copied and what it found on both sides."""

    copied: int = 0
    skipped: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)


def migrate(
    source: PersistentMemory,
    target: PersistentMemory,
    *,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy `source` into `target`, then verify the two hold the same.

    Raises:
        PersistentMemoryError: If the target holds data from elsewhere, or the
            verification finds a difference (the message names the table).
    """
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 10_000:  # noqa: PLR2004
        msg = f"batch_size must be an int in [1, 10000], got {batch_size!r}."
        raise ValueError(msg)
    _claim(source, target)
    report = MigrationReport()
    with source._db.read() as con:  # noqa: SLF001
        total = int(con.execute("SELECT count(*) FROM documents").fetchone()[0])
    store = target._store  # noqa: SLF001
    # Into PostgreSQL: load first, build the HNSW index once at the end.
    loading = (
        store._bulk_load()  # noqa: SLF001
        if isinstance(store, PostgresStore)
        else contextlib.nullcontext()
    )
    with loading:
        kept = _copy_memories(source, target, batch_size, (total, progress), report)
        _drop_memories(target, kept, batch_size)
    _copy_tables(source, target, batch_size)
    with target._db.write() as con:  # noqa: SLF001
        target._text.after_copy(con)  # noqa: SLF001
    _verify(source, target, report)
    return report


def _claim(source: PersistentMemory, target: PersistentMemory) -> None:
    """Mark `target` as a migration from `source`; refuse foreign data."""
    with source._db.read() as con:  # noqa: SLF001
        row = con.execute(
            "SELECT value FROM settings WHERE key = 'store_id'"
        ).fetchone()
    origin = str(row[0])
    with target._db.write() as con:  # noqa: SLF001
        mark = con.execute(
            "SELECT value FROM settings WHERE key = 'migrated_from'"
        ).fetchone()
        own = con.execute(
            "SELECT value FROM settings WHERE key = 'store_id'"
        ).fetchone()
        if own is not None and own[0] == origin:
            msg = "The source and the destination are the same store."
            raise PersistentMemoryError(msg)
        held = any(
            con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608
            for table in ("documents", "memory_audit", "chat_messages", "store_items")
        )
        if held and (mark is None or mark[0] != origin):
            msg = (
                "The destination already holds memories that did not come from "
                "this source; nothing was copied. Migrate into an empty store "
                "(a new directory or database)."
            )
            raise PersistentMemoryError(msg)
        con.execute(
            "INSERT INTO settings (key, value) VALUES ('migrated_from', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (origin,),
        )


def _copy_memories(
    source: PersistentMemory,
    target: PersistentMemory,
    batch_size: int,
    progress: tuple[int, Callable[[int, int], None] | None],
    report: MigrationReport,
) -> set[str]:
    """Copy what the target lacks or holds otherwise; return the source's ids."""
    total, report_progress = progress
    done = 0
    ids: set[str] = set()
    for rows, contexts in _memory_pages(source, batch_size):
        ids.update(row[1] for row in rows)
        present, there = _memories(target, ids=[row[1] for row in rows])
        held = {row[1]: _memory_digest(row[1:], there.get(row[0])) for row in present}
        wanted = [
            row
            for row in rows
            if held.get(row[1]) != _memory_digest(row[1:], contexts.get(row[0]))
        ]
        report.skipped += len(rows) - len(wanted)
        if wanted:
            _write(target, wanted, contexts)
            report.copied += len(wanted)
        done += len(rows)
        if report_progress is not None:
            report_progress(done, max(total, done))
    return ids


def _drop_memories(target: PersistentMemory, kept: set[str], batch_size: int) -> None:
    """Remove memories the source no longer has (a run after it changed)."""
    gone = [
        (row[0], row[1])
        for rows, _ in _memory_pages(target, batch_size)
        for row in rows
        if row[1] not in kept
    ]
    for start in range(0, len(gone), batch_size):
        part = gone[start : start + batch_size]
        with target._db.write() as con:  # noqa: SLF001
            target._remove(con, [doc_id for _, doc_id in part], [lb for lb, _ in part])  # noqa: SLF001


_Row = tuple[int, str, str, str, np.ndarray]


def _memories(
    memory: PersistentMemory,
    *,
    after: str | None = None,
    ids: list[str] | None = None,
    limit: int = 10_000,
) -> tuple[list[_Row], dict[int, str]]:
    """Memory rows (see `_dump`) and their keyword contexts, in one snapshot."""
    with memory._db.read() as con:  # noqa: SLF001
        rows = memory._store._dump(con, after=after, ids=ids, limit=limit)  # noqa: SLF001
        contexts = memory._text.contexts(con, [row[0] for row in rows])  # noqa: SLF001
    return rows, contexts


def _memory_pages(
    memory: PersistentMemory, batch_size: int
) -> Iterator[tuple[list[_Row], dict[int, str]]]:
    """All memories in id order, a page at a time."""
    after: str | None = None
    while True:
        rows, contexts = _memories(memory, after=after, limit=batch_size)
        if not rows:
            return
        yield rows, contexts
        after = rows[-1][1]


def _write(
    target: PersistentMemory,
    rows: list[_Row],
    contexts: dict[int, str],
) -> None:
    metas = [
        target._db.parse(meta, f"the metadata of {doc_id!r}", dict)  # noqa: SLF001
        for _, doc_id, _, meta, _ in rows
    ]
    batch = _Batch(
        [row[2] for row in rows],
        metas,
        [row[3] for row in rows],
        [row[1] for row in rows],
    )
    vectors = np.stack([row[4] for row in rows])
    with target._db.write() as con:  # noqa: SLF001
        labels = target._store._write_rows(con, batch, vectors)  # noqa: SLF001
        target._text.put(  # noqa: SLF001
            con,
            [
                (label, row[2], contexts.get(row[0]), meta["user_id"])
                for label, row, meta in zip(labels, rows, metas, strict=True)
            ],
        )
    target._store._checkpointer.note(len(rows))  # noqa: SLF001


def _copy_tables(
    source: PersistentMemory, target: PersistentMemory, batch_size: int
) -> None:
    """Use counts (by memory id), the cache, the audit trail, the chat log.

    Rows are upserted by key, and target rows whose key the source lacks
    are deleted, so that the target ends as a copy of the source.
    """
    for spec in (_USE, *_TABLES):
        table, keys, columns = spec
        if table == "use":
            upsert = (
                "INSERT INTO memory_use (label, last_used, use_count)"
                " SELECT label, ?, ? FROM documents WHERE id = ?"
                " ON CONFLICT (label) DO UPDATE SET last_used = excluded.last_used,"
                " use_count = excluded.use_count"
            )
            delete = (
                "DELETE FROM memory_use WHERE label IN"
                " (SELECT label FROM documents WHERE id = ?)"
            )
        else:
            names = ", ".join((*keys, *columns))
            marks = ", ".join("?" * (len(keys) + len(columns)))
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
            upsert = (
                f"INSERT INTO {table} ({names}) VALUES ({marks})"  # noqa: S608
                f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
            )
            where = " AND ".join(f"{k} = ?" for k in keys)
            delete = f"DELETE FROM {table} WHERE {where}"  # noqa: S608
        width = len(keys)
        present: set[tuple[Any, ...]] = set()
        for rows in _pages(source, spec, batch_size):
            present.update(row[:width] for row in rows)
            # Use counts: the id, first in the row, goes last in the statement.
            values = [(*r[1:], r[0]) for r in rows] if table == "use" else rows
            with target._db.write() as con:  # noqa: SLF001
                con.executemany(upsert, values)
        extra = [
            row[:width]
            for rows in _pages(target, spec, batch_size)
            for row in rows
            if row[:width] not in present
        ]
        for start in range(0, len(extra), batch_size):
            with target._db.write() as con:  # noqa: SLF001
                con.executemany(delete, extra[start : start + batch_size])


# Use counts are keyed by the memory's id: labels differ between stores.
_USE = ("use", ("id",), ("last_used", "use_count"))


def _select(spec: tuple[str, tuple[str, ...], tuple[str, ...]]) -> tuple[str, str]:
    """The SELECT of a table's rows, and its keyset condition, in key order."""
    table, keys, columns = spec
    if table == "use":
        select = (
            "SELECT d.id, u.last_used, u.use_count FROM memory_use AS u"
            " JOIN documents AS d ON d.label = u.label"
        )
        return select, "d.id"
    return f"SELECT {', '.join((*keys, *columns))} FROM {table}", ", ".join(keys)  # noqa: S608


def _pages(
    memory: PersistentMemory,
    spec: tuple[str, tuple[str, ...], tuple[str, ...]],
    batch_size: int,
) -> Iterator[list[tuple[Any, ...]]]:
    """A table's rows in key order, a page (one snapshot each) at a time."""
    select, key = _select(spec)
    width = len(spec[1])
    last: tuple[Any, ...] | None = None
    while True:
        where = ""
        if last is not None:
            bound = ", ".join("?" * width)
            where = f" WHERE ({key}) > ({bound})" if width > 1 else f" WHERE {key} > ?"
        with memory._db.read() as con:  # noqa: SLF001
            rows = [
                tuple(row)
                for row in con.execute(
                    f"{select}{where} ORDER BY {key} LIMIT ?",
                    (*(last or ()), batch_size),
                ).fetchall()
            ]
        if not rows:
            return
        yield rows
        last = rows[-1][:width]


def _memory_digest(row: tuple[Any, ...], context: str | None) -> bytes:
    """One memory's checksum: id, text, context, metadata and vector bytes."""
    doc_id, text, meta, vector = row
    canonical = json.dumps(json.loads(meta), sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256()
    for part in (doc_id, text, context or "", canonical):
        data = part.encode()
        digest.update(struct.pack(">Q", len(data)) + data)
    digest.update(np.asarray(vector, dtype="<f4").tobytes())
    return digest.digest()


def _row_digest(row: tuple[Any, ...]) -> bytes:
    digest = hashlib.sha256()
    for value in row:
        data = (
            bytes(value)
            if isinstance(value, (bytes, memoryview))
            else json.dumps(value).encode()
        )
        digest.update(struct.pack(">Q", len(data)) + data)
    return digest.digest()


def _summary(memory: PersistentMemory, batch_size: int = 2000) -> dict[str, Any]:
    """Row count and order-free checksum of each table of a store."""
    found: dict[str, Any] = {}
    count, total = 0, 0
    for rows, contexts in _memory_pages(memory, batch_size):
        for row in rows:
            digest = _memory_digest(row[1:], contexts.get(row[0]))
            total = (total + int.from_bytes(digest, "big")) % _MOD
        count += len(rows)
    found["memories"] = (count, total)
    for spec in (_USE, *_TABLES):
        count, total = 0, 0
        for rows in _pages(memory, spec, batch_size):
            for row in rows:
                total = (total + int.from_bytes(_row_digest(row), "big")) % _MOD
            count += len(rows)
        found[spec[0]] = (count, total)
    return found


def _verify(
    source: PersistentMemory, target: PersistentMemory, report: MigrationReport
) -> None:
    theirs, ours = _summary(source), _summary(target)
    for table, (count, total) in theirs.items():
        report.counts[table] = count
        report.checksums[table] = f"{total:064x}"[:16]
        if ours[table] != (count, total):
            msg = (
                f"Verification failed for {table}: the source has {count} rows, "
                f"the destination {ours[table][0]}"
                + (", with different contents" if ours[table][0] == count else "")
                + ". Run the migration again to finish it (the source may have "
                "changed meanwhile)."
            )
            raise PersistentMemoryError(msg)
