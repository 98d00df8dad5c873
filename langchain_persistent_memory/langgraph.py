r"""`PersistentMemoryStore`: LangGraph's long-term store on a `PersistentMemory`.

A LangGraph graph, or an agent made with
`langchain.agents.create_agent(..., store=...)`, reads and writes long-term
memory through a `langgraph.store.base.BaseStore`. This one keeps it in a
`PersistentMemory`, on a directory or on PostgreSQL, so it survives restarts
and is shared by every process that opens the same store:

    from langchain_persistent_memory import PersistentMemory
    from langchain_persistent_memory.langgraph import PersistentMemoryStore

    memory = PersistentMemory("./memory", embedding)
    store = PersistentMemoryStore(memory, index={"fields": ["content"]})
    store.put(("memories", "alice"), "tea", {"content": "Alice drinks green tea."})
    store.search(("memories", "alice"), query="what does Alice drink?")

How items and memories relate:

- Every item lives in the `store_items` table of the memory's database: its
  namespace, key, JSON value, times and TTL.
- An item with text to index (the `fields` of `index`, or the put's own
  `index=[...]`) is also one memory, whose text is the indexed texts joined
  by newlines: that memory is what semantic search scores, by cosine
  similarity, as in LangGraph's own stores. The memory belongs to the user
  of the item's namespace.
- The namespaces of `user_namespace` (default `("memories", "{user_id}")`)
  are the users' memories. `("memories", "alice")` maps to
  `user_id="alice"`: what an agent puts there, `memory.search(...,
  user_id="alice")` finds; and what a chain added with
  `memory.add(..., user_id="alice")` is an item of that namespace, whose key
  is the memory's id and whose value is `{"content": text, "kind": ...,
  "importance": ..., **metadata}`. Putting to that key makes it an item;
  deleting it deletes the memory.
- The items of other namespaces are indexed as the memories of the user
  `"\x1f" + ".".join(namespace)` (`store.user_id(namespace)`), an id no
  application chooses by chance.

Differences from LangGraph's `InMemoryStore`: searches without a query
list items newest first (as LangGraph's `PostgresStore` and `SqliteStore`
do); an item with several indexed texts is one vector, not one per text;
putting an item again with `index=False` drops its vector; `$gt`-style
operators compare numbers with numbers and strings with strings, and other
values never match (`InMemoryStore` raises on a missing field); `true` is
not `1`; expired items are never returned, even before a sweep (their
memories leave `memory.search` when they are swept).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import operator
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from langchain_core.runnables.config import run_in_executor

try:
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        IndexConfig,
        InvalidNamespaceError,
        Item,
        ListNamespacesOp,
        MatchCondition,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        TTLConfig,
    )
    from langgraph.store.base.embed import (
        ensure_embeddings,
        get_text_at_path,
        tokenize_path,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    msg = (
        "PersistentMemoryStore needs LangGraph: "
        "pip install 'langchain-persistent-memory[langgraph]'"
    )
    raise ImportError(msg) from exc

from langchain_persistent_memory._db import no_nul, storable
from langchain_persistent_memory._filters import typed_value
from langchain_persistent_memory._postgres import PostgresStore
from langchain_persistent_memory.memory import (
    RESERVED_KEYS,
    PersistentMemory,
    _content_hash,
    _Put,
)
from langchain_persistent_memory.vectorstores import (
    _check_keys,
    _chunks,
    _marks,
    _read_dimension,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import numpy as np
    from typing_extensions import Self

    from langchain_persistent_memory._db import Connection

__all__ = ["PersistentMemoryStore"]

logger = logging.getLogger(__name__)

_USER = "{user_id}"
_OTHER = "\x1f"  # starts the user id of a namespace that is no user's
_MAX_MINUTES = 1e10  # about 19,000 years: TTLs stay finite in SQL
_ORDER = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_OPERATORS = frozenset({"$eq", "$ne", *_ORDER})
# Memory metadata that a plain memory's value leaves out (the item has them).
_NOT_IN_VALUE = frozenset({"user_id", "created_at", "updated_at", "content_hash"})
_COLUMNS = (
    "namespace, key, value, created_at, updated_at, expires_at, ttl_minutes, memory_id"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_MISSING = object()


@dataclass
class _Entry:
    """One item as read: from `store_items`, or a plain memory of a user."""

    namespace: tuple[str, ...]
    key: str
    raw: str | dict[str, Any]  # the value, as stored until first read
    created_at: float
    updated_at: float
    ttl_minutes: float | None = None
    memory_id: str | None = None
    vector: np.ndarray | None = None

    @property
    def value(self) -> dict[str, Any]:
        """The item's value (decoded once, when first needed)."""
        if isinstance(self.raw, str):
            self.raw = cast("dict[str, Any]", json.loads(self.raw))
        return self.raw

    def item(self, score: float | None = None, *, search: bool = False) -> Item:
        created = datetime.fromtimestamp(self.created_at, tz=timezone.utc)
        updated = datetime.fromtimestamp(self.updated_at, tz=timezone.utc)
        if search:
            return SearchItem(
                self.namespace, self.key, self.value, created, updated, score
            )
        return Item(
            value=self.value,
            key=self.key,
            namespace=self.namespace,
            created_at=created,
            updated_at=updated,
        )


@dataclass
class _Prepared:
    """A checked put: its text to embed and its value as JSON (None: delete)."""

    op: PutOp
    text: str | None
    value_json: str | None


@dataclass
class _Plan:
    """What one transaction of puts writes once every put is looked at."""

    added: list[_Put] = field(default_factory=list)
    updated: list[_Put] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    changed: int = 0


class PersistentMemoryStore(BaseStore):
    """A LangGraph `BaseStore` whose items live in a `PersistentMemory`.

    Args:
        memory: The `PersistentMemory` to keep the items in, or the directory
            or `postgresql://` URL of one to open (closed by `close()`).
        index: Semantic search: `{"fields": [...], "embed": ..., "dims": ...}`
            as in LangGraph. `fields` are the JSON paths of the text to embed
            (default `["$"]`, the whole value as JSON); a put's
            `index=[...]` or `index=False` overrides them for that item.
            Embeddings are always the memory's: `embed`, if given, must be
            that `Embeddings` object (or, when opening a path, is the
            embedding to open it with), and `dims` must be its dimension.
        ttl: LangGraph's `TTLConfig`: `default_ttl` (minutes) for puts that
            give none, `refresh_on_read` (default True) for get and search,
            and `sweep_interval_minutes` to start a thread that deletes
            expired items (`start_ttl_sweeper`). Expired items are never
            returned, swept or not.
        user_namespace: The namespaces that are users' memories: a tuple with
            one `"{user_id}"` label, default `("memories", "{user_id}")`.
        **memory_options: Passed to `PersistentMemory` when `memory` is a
            path or URL.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If `index` or `user_namespace` is not valid, or `embed`
            is not the memory's embedding.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        memory: PersistentMemory | str | os.PathLike[str],
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        user_namespace: tuple[str, ...] = ("memories", _USER),
        **memory_options: Any,
    ) -> None:
        """Wrap `memory` (or open the memory at a path or URL)."""
        index = _check_index(index)
        self._user_position = _check_user_namespace(user_namespace)
        self._user_namespace = tuple(user_namespace)
        self.ttl_config: TTLConfig = _check_ttl(ttl)
        self.index_config = index
        self._fields = _tokenized(index.get("fields") or ["$"], "index['fields']")
        embed = index.get("embed")
        if isinstance(memory, PersistentMemory):
            if memory_options:
                msg = (
                    f"Options {sorted(memory_options)} only apply when opening a "
                    "path or URL; the PersistentMemory given is already open."
                )
                raise TypeError(msg)
            if embed is not None and embed is not memory._embedding:  # noqa: SLF001
                msg = (
                    "index['embed'] must be the memory's own embedding (or left "
                    "out): the store's vectors are the memory's vectors."
                )
                raise ValueError(msg)
            self._memory = memory
            self._owned = False
        elif isinstance(cast("object", memory), (str, os.PathLike)):
            embedding = None if embed is None else ensure_embeddings(embed)
            self._memory = PersistentMemory(memory, embedding, **memory_options)
            self._owned = True
        else:
            msg = (
                "memory must be a PersistentMemory, a directory or a "
                f"postgresql:// URL, got {type(memory).__name__}."
            )
            raise TypeError(msg)
        try:
            _check_dims(self._memory, index.get("dims"))
        except BaseException:
            if self._owned:
                self._memory.close()
            raise
        self._db = self._memory._db  # noqa: SLF001
        self._on_postgres = isinstance(self._memory._store, PostgresStore)  # noqa: SLF001
        self._sweeper: threading.Thread | None = None
        self._sweeper_stop = threading.Event()
        self._sweeper_done: concurrent.futures.Future[None] | None = None
        interval = self.ttl_config.get("sweep_interval_minutes")
        if interval:
            self.start_ttl_sweeper(interval)

    @property
    def memory(self) -> PersistentMemory:
        """The memory the items live in."""
        return self._memory

    def user_id(self, namespace: tuple[str, ...]) -> str:
        """The `user_id` under which the items of `namespace` are memories."""
        namespace = tuple(namespace)
        user = self._user_of_template(namespace)
        return user if user is not None else _OTHER + ".".join(namespace)

    def namespace(self, user_id: str) -> tuple[str, ...]:
        """The namespace of `user_id`'s memories (from `user_namespace`)."""
        template = list(self._user_namespace)
        template[self._user_position] = user_id
        return tuple(template)

    def close(self) -> None:
        """Stop the TTL sweeper; close the memory if the store opened it."""
        self.stop_ttl_sweeper()
        if self._owned:
            self._memory.close()

    def __enter__(self) -> Self:
        """Return the store itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    # ------------------------------------------------------------- batches

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the operations in order; consecutive puts are one transaction.

        Every operation is checked before any runs, so a bad one changes
        nothing.
        """
        ops = list(ops)
        prepared: dict[int, _Prepared] = {}
        for position, op in enumerate(ops):
            self._check_op(op, position)
            if isinstance(op, PutOp):
                where = f"ops[{position}]"
                value_json = (  # first: it refuses values that contain themselves
                    None
                    if op.value is None
                    else _value_json(op.value, f"{where} (key {op.key!r})")
                )
                prepared[position] = _Prepared(op, self._texts(op, where), value_json)
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], _Prepared] = {}
        for position, op in enumerate(ops):
            if isinstance(op, PutOp):
                same = (tuple(op.namespace), _same_key(op.key))
                puts.pop(same, None)  # the last put of a key wins
                puts[same] = prepared[position]
                continue
            if puts:
                self._write(list(puts.values()))
                puts.clear()
            if isinstance(op, GetOp):
                results[position] = self._get(op)
            elif isinstance(op, SearchOp):
                results[position] = self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[position] = self._list_namespaces(op)
        if puts:
            self._write(list(puts.values()))
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async `batch`: the same work in a worker thread."""
        return await run_in_executor(None, self.batch, list(ops))

    # ----------------------------------------------------------------- TTL

    def sweep_ttl(self) -> int:
        """Delete the expired items (and their memories) now; return how many."""
        now = time.time()
        with self._db.write() as con:
            rows = con.execute(
                "SELECT namespace, key, memory_id FROM store_items"
                " WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            ).fetchall()
            self._delete_memories(
                con, [(_decode(ns), memory_id) for ns, _, memory_id in rows]
            )
            con.executemany(
                "DELETE FROM store_items WHERE namespace = ? AND key = ?",
                [(ns, key) for ns, key, _ in rows],
            )
        self._changed(len(rows))
        return len(rows)

    async def asweep_ttl(self) -> int:
        """Async `sweep_ttl`."""
        return await run_in_executor(None, self.sweep_ttl)

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep expired items every interval, in a daemon thread.

        Args:
            sweep_interval_minutes: Minutes between sweeps; default the
                `ttl` config's `sweep_interval_minutes`, else 5.

        Returns:
            A future that completes when the sweeper stops.
        """
        if self._sweeper is not None and self._sweeper_done is not None:
            return self._sweeper_done
        minutes = sweep_interval_minutes
        if minutes is None:
            minutes = self.ttl_config.get("sweep_interval_minutes") or 5
        _check_minutes(minutes, "sweep_interval_minutes")
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._sweeper_stop.clear()

        def run() -> None:
            try:
                while not self._sweeper_stop.wait(minutes * 60):
                    self._sweep_logged()
            finally:
                done.set_result(None)

        self._sweeper = threading.Thread(
            target=run, name="lpm-ttl-sweeper", daemon=True
        )
        self._sweeper_done = done
        self._sweeper.start()
        return done

    def _sweep_logged(self) -> None:
        """One sweep of the sweeper thread: a failure is logged, not raised."""
        try:
            self.sweep_ttl()
        except Exception:
            logger.exception("PersistentMemoryStore: the TTL sweep failed")

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; True if it has stopped (or never ran)."""
        if self._sweeper is None:
            return True
        self._sweeper_stop.set()
        self._sweeper.join(timeout)
        stopped = not self._sweeper.is_alive()
        if stopped:
            self._sweeper = None
        return stopped

    # ---------------------------------------------------------------- checks

    @staticmethod
    def _check_op(op: object, position: int) -> None:
        where = f"ops[{position}]"
        if isinstance(op, PutOp):
            _check_put(op, where)
        elif isinstance(op, GetOp):
            _check_namespace(op.namespace, where)
            _check_key(op.key, where)
        elif isinstance(op, SearchOp):
            _check_search(op, where)
        elif isinstance(op, ListNamespacesOp):
            _check_list(op, where)
        else:
            msg = (
                f"{where}: unknown operation {type(op).__name__}; expected GetOp, "
                "PutOp, SearchOp or ListNamespacesOp."
            )
            raise TypeError(msg)

    # ---------------------------------------------------------------- writes

    def _texts(self, op: PutOp, where: str) -> str | None:
        """The text to embed for a put, or None when it has none to index."""
        if op.value is None or op.index is False:
            return None
        paths = self._fields if op.index is None else _tokenized(op.index, "index")
        texts = [
            _text(text, f"{where}: the text at {path!r} of {op.key!r}")
            for path, tokens in paths
            for text in get_text_at_path(op.value, tokens)
            if text.strip()
        ]
        return "\n".join(texts) if texts else None

    def _write(self, puts: Sequence[_Prepared]) -> None:
        """Apply puts in one transaction: items, memories and cached vectors."""
        texts = [put.text for put in puts]
        wanted = [text for text in texts if text is not None]
        memory = self._memory
        hashes, cached, missing = memory._cache_lookup(wanted)  # noqa: SLF001
        fresh = (
            memory._embedding.embed_documents([wanted[i] for i in missing])  # noqa: SLF001
            if missing
            else []
        )
        now = time.time()
        plan = _Plan()
        with self._db.write() as con:
            vectors = iter(
                memory._cache_fill(  # noqa: SLF001
                    wanted, hashes, cached, missing, fresh, con=con
                )
                if wanted
                else []
            )
            found = self._existing(con, [put.op for put in puts], now)
            for position, put in enumerate(puts):
                vector = None if put.text is None else next(vectors)
                self._plan_one(
                    con, put, vector, found.get(position), now=now, plan=plan
                )
            for audit, pending in (("add", plan.added), ("update", plan.updated)):
                memory._put(con, pending, op=audit)  # noqa: SLF001
            con.executemany(
                f"INSERT INTO store_items ({_COLUMNS}, user_id)"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at, expires_at = excluded.expires_at,"
                " ttl_minutes = excluded.ttl_minutes, memory_id = excluded.memory_id,"
                " user_id = excluded.user_id",
                plan.rows,
            )
        self._changed(plan.changed)

    def _plan_one(
        self,
        con: Connection,
        put: _Prepared,
        vector: np.ndarray | None,
        existing: tuple[str, str | None, float | None] | None,
        *,
        now: float,
        plan: _Plan,
    ) -> None:
        """Add one put to `plan`; deletions are done at once, in `con`."""
        op, text = put.op, put.text
        namespace = tuple(op.namespace)
        encoded = _encode(namespace)
        user = self.user_id(namespace)
        key, memory_id, created = op.key, None, now
        if existing is not None:
            key, memory_id = existing[0], existing[1]
            created = now if existing[2] is None else existing[2]
        if op.value is None or text is None or vector is None:
            if memory_id is not None:
                self._delete_memories(con, [(namespace, memory_id)])
                plan.changed += 1
            memory_id = None
            if op.value is None:
                con.execute(
                    "DELETE FROM store_items WHERE namespace = ? AND key = ?",
                    (encoded, key),
                )
                return
        else:
            pending = plan.added if memory_id is None else plan.updated
            live = existing is not None and existing[2] is not None
            context = self._context(con, memory_id) if live else None
            memory_id = memory_id or uuid.uuid4().hex
            meta = _memory_meta(op.value, user, created, now, text)
            pending.append(_Put(memory_id, text, meta, vector, context))
            plan.changed += 1
        ttl = None if op.ttl is None else float(op.ttl)
        plan.rows.append(
            (
                encoded,
                key,
                put.value_json,
                created,
                now,
                None if ttl is None else now + ttl * 60,
                ttl,
                memory_id,
                user,
            )
        )

    def _context(self, con: Connection, memory_id: str | None) -> str | None:
        """The keyword context of a memory being rewritten, which it keeps.

        A chain's memory may have one (the turns around a chat message); the
        value does not show it, so a put cannot give it back.
        """
        if memory_id is None:
            return None
        row = con.execute(
            "SELECT label FROM documents WHERE id = ?", (memory_id,)
        ).fetchone()
        if row is None:
            return None
        return self._memory._text.contexts(con, [row[0]]).get(row[0])  # noqa: SLF001

    def _existing(
        self, con: Connection, ops: Sequence[PutOp], now: float
    ) -> dict[int, tuple[str, str | None, float | None]]:
        """What each put (by position) replaces: `(key, memory id, created)`.

        The key is the stored form of the put's key; the memory id is that
        of the item, or of the user's plain memory the key names; created is
        None for an expired item (a put starts it anew). Looked up with a
        few queries for the whole batch.
        """
        groups: dict[str, list[tuple[int, list[str]]]] = {}
        for position, op in enumerate(ops):
            groups.setdefault(_encode(op.namespace), []).append(
                (position, _key_forms(op.key))
            )
        found: dict[int, tuple[str, str | None, float | None]] = {}
        for encoded, group in groups.items():
            keys = sorted({key for _, forms in group for key in forms})
            rows: dict[str, tuple[str | None, float | None]] = {}
            for part in _chunks(keys):
                for key, memory_id, created, expires in con.execute(
                    "SELECT key, memory_id, created_at, expires_at FROM store_items"  # noqa: S608
                    f" WHERE namespace = ? AND key IN ({_marks(part)})",
                    (encoded, *part),
                ):
                    live = expires is None or expires > now
                    rows[key] = (memory_id, created if live else None)
            missing = []
            for position, forms in group:
                hit = next((key for key in forms if key in rows), None)
                if hit is None:
                    missing.append((position, forms))
                else:
                    found[position] = (hit, *rows[hit])
            user = self._user_of_template(_decode(encoded))
            if user is None or not missing:
                continue
            plains = {
                entry.key: entry
                for entry in self._plain(
                    con,
                    user,
                    _present_ids(con, [key for _, forms in missing for key in forms]),
                    vectors=False,
                )
            }
            for position, forms in missing:
                hit = next((key for key in forms if key in plains), None)
                if hit is not None:  # a memory of the user's: its id is the key
                    found[position] = (hit, hit, plains[hit].created_at)
        return found

    def _delete_memories(
        self, con: Connection, owned: Sequence[tuple[tuple[str, ...], str | None]]
    ) -> None:
        """Delete the memories `(namespace, memory id)` inside the transaction."""
        ids = [memory_id for _, memory_id in owned if memory_id]
        if not ids:
            return
        users = {memory_id: self.user_id(ns) for ns, memory_id in owned if memory_id}
        labels = {
            doc_id: label
            for part in _chunks(ids)
            for label, doc_id in con.execute(
                f"SELECT label, id FROM documents WHERE id IN ({_marks(part)})",  # noqa: S608
                part,
            )
        }
        present = [memory_id for memory_id in ids if memory_id in labels]
        if not present:
            return
        memory = self._memory
        memory._remove(con, present, [labels[m] for m in present])  # noqa: SLF001
        for memory_id in present:
            memory._audit(con, memory_id, users[memory_id], "delete")  # noqa: SLF001

    def _changed(self, count: int) -> None:
        if count:
            self._memory._store._checkpointer.note(count)  # noqa: SLF001

    # ----------------------------------------------------------------- reads

    def _user_of_template(self, namespace: tuple[str, ...]) -> str | None:
        template = self._user_namespace
        if len(namespace) != len(template):
            return None
        for position, (want, label) in enumerate(zip(template, namespace, strict=True)):
            if position != self._user_position and want != label:
                return None
        return namespace[self._user_position]

    def _users_under(self, prefix: tuple[str, ...]) -> str | bool | None:
        """Users whose namespace starts with `prefix`: one, all (None) or none."""
        template = self._user_namespace
        if len(prefix) > len(template):
            return False
        for position, label in enumerate(prefix):
            if position != self._user_position and template[position] != label:
                return False
        if len(prefix) > self._user_position:
            return prefix[self._user_position]
        return None

    def _plain(
        self,
        con: Connection,
        user: str | None,
        ids: Sequence[str] | None = None,
        *,
        vectors: bool = True,
    ) -> list[_Entry]:
        """Memories not made by the store, as items: of `user` (None: all).

        With `vectors=False` their vectors are not read (a search without a
        query needs none).
        """
        if ids is not None and not ids:
            return []
        if ids is None and user is not None and not self._has_plain(con, user):
            return []
        sql = (
            "SELECT d.id, m.value FROM documents AS d JOIN metadata_index AS m"
            " ON m.label = d.label AND m.key = 'user_id' AND m.type = 'str'"
            " WHERE NOT EXISTS (SELECT 1 FROM store_items AS s"
            " WHERE s.memory_id = d.id)"
        )
        params: list[Any] = []
        if user is not None:
            sql += " AND m.value = ?"
            params.append(self._memory._store._bind(user))  # noqa: SLF001
        owners: dict[str, Any] = {}
        for part in [None] if ids is None else _chunks(list(ids)):
            where = "" if part is None else f" AND d.id IN ({_marks(part)})"
            owners.update(con.execute(sql + where, [*params, *(part or [])]))
        entries = []
        for part in _chunks(sorted(owners)):
            dumped = (
                self._memory._store._dump(  # noqa: SLF001
                    con, after=None, ids=part, limit=len(part)
                )
                if vectors
                else con.execute(
                    "SELECT label, id, text, metadata, NULL FROM documents"  # noqa: S608
                    f" WHERE id IN ({_marks(part)})",
                    part,
                ).fetchall()
            )
            for _, doc_id, text, meta_json, vector in dumped:
                meta = json.loads(meta_json)
                value = {k: v for k, v in meta.items() if k not in _NOT_IN_VALUE}
                value["content"] = text  # the memory's text, whatever its metadata
                entries.append(
                    _Entry(
                        namespace=self.namespace(str(owners[doc_id])),
                        key=doc_id,
                        raw=value,
                        created_at=float(meta.get("created_at", 0.0)),
                        updated_at=float(meta.get("updated_at", 0.0)),
                        vector=vector,
                    )
                )
        return entries

    def _has_plain(self, con: Connection, user: str) -> bool:
        """Whether `user` has memories that are not items."""
        return bool(self._plain_users(con, user))

    def _plain_users(self, con: Connection, user: str | None = None) -> list[str]:
        """Users (all, or only `user`) with memories that are not items.

        Two counts per user, memories against items with a memory: cheaper
        than looking for an item of every memory.
        """
        only, params = "", []
        if user is not None:
            only, params = " AND value = ?", [self._memory._store._bind(user)]  # noqa: SLF001
        memories = con.execute(
            "SELECT value, count(*) FROM metadata_index"  # noqa: S608
            f" WHERE key = 'user_id' AND type = 'str'{only} GROUP BY value",
            params,
        ).fetchall()
        items = dict(
            con.execute(
                "SELECT s.user_id, count(*) FROM store_items AS s"  # noqa: S608
                " JOIN documents AS d ON d.id = s.memory_id"
                f"{'' if user is None else ' WHERE s.user_id = ?'} GROUP BY s.user_id",
                [] if user is None else [user],
            ).fetchall()
        )
        return [
            str(name) for name, count in memories if count > items.get(str(name), 0)
        ]

    def _rows(
        self,
        con: Connection,
        now: float,
        *,
        prefix: tuple[str, ...] = (),
        keys: Sequence[str] | None = None,
        where: str = "",
        params: Sequence[Any] = (),
    ) -> list[_Entry]:
        """Live items of `store_items` under `prefix` (or at it, with `keys`).

        `where`, with its `params`, is one more condition.
        """
        sql = f"SELECT {_COLUMNS} FROM store_items WHERE {_LIVE}{where}"  # noqa: S608
        params = [now, *params]
        if keys is not None:
            sql += f" AND namespace = ? AND key IN ({_marks(keys)})"
            params += [_encode(prefix), *keys]
        elif prefix:
            # '["a","b"' starts the namespace and those under it, and no
            # other: JSON closes every label with '"'. The next string
            # after all of them ends in '#', the character after '"'.
            start = _encode(prefix)[:-1]
            sql += " AND namespace >= ? AND namespace < ?"
            params += [start, start[:-1] + "#"]
        names: dict[str, tuple[str, ...]] = {}
        return [
            _Entry(
                namespace=names.get(ns) or names.setdefault(ns, _decode(ns)),
                key=item_key,
                raw=value,
                created_at=created,
                updated_at=updated,
                ttl_minutes=ttl,
                memory_id=memory_id,
            )
            for ns, item_key, value, created, updated, _, ttl, memory_id in con.execute(
                sql, params
            )
        ]

    def _get(self, op: GetOp) -> Item | None:
        namespace = tuple(op.namespace)
        with self._db.read() as con:
            forms = _key_forms(op.key)
            found = self._rows(con, time.time(), prefix=namespace, keys=forms)
            found.sort(key=lambda e: forms.index(e.key))
            user = self._user_of_template(namespace)
            if not found and user is not None:
                found = self._plain(con, user, forms, vectors=False)
        if not found:
            return None
        if op.refresh_ttl:
            self._refresh(found)
        return found[0].item()

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        users = self._users_under(prefix)
        if op.query and not op.filter and isinstance(users, str):
            return self._search_user(op, prefix, users)
        with self._db.read() as con:
            where, params = _prefilter(op.filter, self._on_postgres)
            entries = self._rows(
                con, time.time(), prefix=prefix, where=where, params=params
            )
            if users is not False:
                entries += self._plain(
                    con, cast("str | None", users), vectors=bool(op.query)
                )
            if op.filter:
                entries = [e for e in entries if _matches(e.value, op.filter)]
            if op.query:
                self._load_vectors(con, entries)
        scores = (
            self._scores(self._memory._embedding.embed_query(op.query), entries)  # noqa: SLF001
            if op.query
            else {}
        )
        return self._page(op, entries, scores)

    def _page(
        self, op: SearchOp, entries: Sequence[_Entry], scores: Mapping[int, float]
    ) -> list[SearchItem]:
        """The page of `op`: best score first, unscored after, newest first."""
        found = sorted(entries, key=lambda e: (-e.updated_at, e.namespace, e.key))
        found.sort(key=lambda e: -scores.get(id(e), -math.inf))
        page = found[op.offset : op.offset + op.limit]
        if op.refresh_ttl:
            self._refresh(page)
        return [
            cast("SearchItem", e.item(scores.get(id(e)), search=True)) for e in page
        ]

    def _search_user(
        self, op: SearchOp, prefix: tuple[str, ...], user: str
    ) -> list[SearchItem]:
        """A query over one user's namespace, unfiltered: the index ranks it.

        The user's memories (items of the namespace, and plain ones) are
        ranked by the memory's own vector index, as `memory.search` ranks
        them; the few items under `prefix` that are not (deeper namespaces,
        items with no indexed text) are scored here or follow unscored.
        """
        assert op.query is not None  # noqa: S101 - checked by the caller
        memory = self._memory
        query = memory._embedding.embed_query(op.query)  # noqa: SLF001
        encoded = _encode(self.namespace(user))
        now = time.time()
        with self._db.read() as con:
            # The user's memories that are not live items of this namespace:
            # expired ones, and any of the same user id elsewhere.
            hidden = con.execute(
                "SELECT count(*) FROM store_items WHERE user_id = ?"
                " AND memory_id IS NOT NULL AND (namespace <> ? OR expires_at <= ?)",
                (user, encoded, now),
            ).fetchone()[0]
        wanted = op.offset + op.limit
        hits, _ = memory._store._search(  # noqa: SLF001
            query, wanted + hidden, {"user_id": user}
        )
        with self._db.read() as con:
            ids = _ids_of(con, [label for label, _ in hits])
            scored = {ids[label]: score for label, score in hits if label in ids}
            mine = [*scored]
            entries = [
                entry
                for part in _chunks(mine)
                for entry in self._rows(
                    con,
                    now,
                    where=f" AND namespace = ? AND memory_id IN ({_marks(part)})",
                    params=[encoded, *part],
                )
            ]
            linked = {e.memory_id for e in entries}
            entries += self._plain(con, user, [m for m in mine if m not in linked])
            others = self._rows(
                con,
                now,
                prefix=prefix,
                where=" AND (namespace <> ? OR memory_id IS NULL)",
                params=[encoded],
            )
            self._load_vectors(con, others)
        scores = {id(e): scored[e.memory_id or e.key] for e in entries}
        scores.update(self._scores(query, others))
        return self._page(op, [*entries, *others], scores)

    def _load_vectors(self, con: Connection, entries: Sequence[_Entry]) -> None:
        """Fill in the vectors of items that have a memory."""
        wanted = {e.memory_id: e for e in entries if e.memory_id and e.vector is None}
        ids = sorted(wanted)
        for part in _chunks(ids):
            dumped = self._memory._store._dump(  # noqa: SLF001
                con, after=None, ids=part, limit=len(part)
            )
            for _, doc_id, _, _, vector in dumped:
                wanted[doc_id].vector = vector

    @staticmethod
    def _scores(query: Sequence[float], entries: Sequence[_Entry]) -> dict[int, float]:
        """Cosine similarity of the query vector with each entry that has one."""
        import numpy as np  # noqa: PLC0415

        scored = [e for e in entries if e.vector is not None]
        if not scored:
            return {}
        query_vector = np.asarray(query, dtype=np.float32)
        matrix = np.stack([cast("np.ndarray", e.vector) for e in scored])
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query_vector)
        similarity = (matrix @ query_vector) / np.where(norms == 0, 1, norms)
        return {id(e): float(s) for e, s in zip(scored, similarity, strict=True)}

    def _refresh(self, entries: Sequence[_Entry]) -> None:
        """Push back the expiry of items with a TTL that were just read."""
        timed = [e for e in entries if e.ttl_minutes is not None]
        if not timed:
            return
        now = time.time()
        with self._db.write() as con:
            # The TTL as it is now: the item may have been put again since.
            con.executemany(
                "UPDATE store_items SET expires_at = ? + ttl_minutes * 60"
                " WHERE namespace = ? AND key = ? AND ttl_minutes IS NOT NULL"
                " AND expires_at > ?",
                [(now, _encode(e.namespace), e.key, now) for e in timed],
            )

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        with self._db.read() as con:
            found = {
                _decode(row[0])
                for row in con.execute(
                    f"SELECT DISTINCT namespace FROM store_items WHERE {_LIVE}",  # noqa: S608
                    (time.time(),),
                )
            }
            found.update(self.namespace(user) for user in self._plain_users(con))
        conditions = op.match_conditions or ()
        kept = [ns for ns in found if all(_matches_path(c, ns) for c in conditions)]
        if op.max_depth is not None:
            kept = list({ns[: op.max_depth] for ns in kept})
        return sorted(kept)[op.offset : op.offset + op.limit]


# ------------------------------------------------------------------ helpers


def _present_ids(con: Connection, ids: Sequence[str]) -> list[str]:
    """Those of `ids` that are memories (one indexed look-up per chunk)."""
    return [
        row[0]
        for part in _chunks(sorted(set(ids)))
        for row in con.execute(
            f"SELECT id FROM documents WHERE id IN ({_marks(part)})",  # noqa: S608
            part,
        )
    ]


def _ids_of(con: Connection, labels: Sequence[int]) -> dict[int, str]:
    """Memory ids by label."""
    return {
        label: doc_id
        for part in _chunks(list(labels))
        for label, doc_id in con.execute(
            f"SELECT label, id FROM documents WHERE label IN ({_marks(part)})",  # noqa: S608
            part,
        )
    }


def _encode(namespace: Sequence[str]) -> str:
    """A namespace as stored: a JSON array, so that prefixes are text prefixes."""
    return json.dumps(list(namespace), ensure_ascii=False, separators=(",", ":"))


def _decode(stored: str) -> tuple[str, ...]:
    return tuple(json.loads(stored))


def _same_key(key: str) -> str:
    """One spelling for the keys that `_key_forms` takes as one."""
    forms = _key_forms(key)
    return min(forms, key=len)  # the 32 hex digits, when there are two forms


def _key_forms(key: str) -> list[str]:
    """`key`, and its other spelling if it is a UUID: both name one item.

    Memory ids are 32 hex digits; tools that type ids as UUIDs (LangMem's)
    send them back as `str(UUID)`, with dashes.
    """
    try:
        parsed = uuid.UUID(key)
    except ValueError:
        return [key]
    if key == parsed.hex:
        return [key, str(parsed)]
    if key == str(parsed):
        return [key, parsed.hex]
    return [key]  # upper case, braces, urn:uuid:...: a key of its own


def _value_json(value: Mapping[str, Any], where: str) -> str:
    try:
        _check_keys(value, f"{where}: the value")
    except RecursionError:
        msg = f"{where}: the value contains itself, or is nested too deeply."
        raise TypeError(msg) from None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = f"{where}: the value must be JSON (dicts, lists, str, numbers): {exc}."
        raise TypeError(msg) from None
    return storable(text, f"{where}: the value")


def _indexable(value: object) -> bool:
    """Whether memory metadata can hold it (not an int beyond 64 bits)."""
    try:
        typed_value(value)
    except ValueError:
        return False
    return True


def _memory_meta(
    value: Mapping[str, Any], user: str, created: float, now: float, text: str
) -> dict[str, Any]:
    """The metadata of an item's memory, from its value.

    The inverse of how a plain memory shows as an item: the value's fields
    (but `content`, the text) are the memory's metadata, so a put of what
    `get` returned keeps a chain's session, sources and metadata, and a
    changed field changes the memory's. Kind and importance must be valid
    (else `fact` and 0.5); reserved fields of another type, and ints beyond
    64 bits, stay in the value only.
    """
    kind = value.get("kind")
    importance = value.get("importance")
    if isinstance(importance, bool) or not isinstance(importance, (int, float)):
        importance = 0.5
    meta = {
        k: v
        for k, v in value.items()
        if k not in RESERVED_KEYS and k != "content" and _indexable(v)
    }
    for name in ("session_id", "agent_id"):
        if isinstance(value.get(name), str) and value[name]:
            meta[name] = value[name]
    sources = value.get("source_ids")
    if isinstance(sources, list) and all(isinstance(x, str) for x in sources):
        meta["source_ids"] = sources
    return {
        **meta,
        "kind": kind if isinstance(kind, str) and kind.strip() else "fact",
        "importance": min(max(float(importance), 0.0), 1.0),
        "user_id": user,
        "created_at": created,
        "updated_at": now,
        "content_hash": _content_hash(text),
    }


def _check_namespace(
    namespace: object, where: str, *, writing: bool = False, prefix: bool = False
) -> None:
    if not isinstance(namespace, tuple):
        msg = f"{where}: a namespace must be a tuple of str, got {namespace!r}."
        raise InvalidNamespaceError(msg)
    if not namespace and not prefix:
        msg = f"{where}: the namespace is empty; give at least one label."
        raise InvalidNamespaceError(msg)
    for label in namespace:
        if not isinstance(label, str) or not label:
            msg = (
                f"{where}: namespace labels must be non-empty str, got {label!r} "
                f"in {namespace!r}."
            )
            raise InvalidNamespaceError(msg)
        if writing and ("." in label or "\x00" in label):
            msg = (
                f"{where}: namespace label {label!r} contains '.' or NUL, which "
                "LangGraph reserves; use another character."
            )
            raise InvalidNamespaceError(msg)
        storable(label, f"{where}: namespace label")
    if writing and namespace[0] == "langgraph":
        msg = f"{where}: the root label 'langgraph' is reserved by LangGraph."
        raise InvalidNamespaceError(msg)


def _check_dims(memory: PersistentMemory, dims: int | None) -> None:
    """`index["dims"]` must be the dimension of the memory's vectors."""
    if dims is None:
        return
    with memory._db.read() as con:  # noqa: SLF001
        known = _read_dimension(con)
    if known is None:  # an empty store: ask the embedding
        known = len(memory._embedding.embed_query("dimension"))  # noqa: SLF001
    if known != dims:
        msg = (
            f"index['dims'] is {dims} but the memory's embedding gives vectors "
            f"of {known}; fix dims or leave it out."
        )
        raise ValueError(msg)


def _text(text: str, where: str) -> str:
    """Text that both backends can store: valid Unicode, without NUL."""
    return storable(no_nul(text, where), where)


def _check_put(op: PutOp, where: str) -> None:
    _check_namespace(op.namespace, where, writing=True)
    _check_key(op.key, where)
    if op.value is not None and not isinstance(op.value, dict):
        msg = (
            f"{where}: the value of {op.key!r} must be a dict, got "
            f"{type(op.value).__name__}."
        )
        raise TypeError(msg)
    if op.index not in (None, False):
        _tokenized(op.index, f"{where}.index")
    _check_minutes(op.ttl, f"{where}: ttl")


def _check_search(op: SearchOp, where: str) -> None:
    _check_namespace(op.namespace_prefix, where, prefix=True)
    _check_count(op.limit, f"{where}: limit", 0)
    _check_count(op.offset, f"{where}: offset", 0)
    if op.filter is not None:
        _check_filter(op.filter, f"{where}.filter")
    query: object = op.query
    if query is not None and not isinstance(query, str):
        msg = f"{where}: query must be a str, got {type(query).__name__}."
        raise TypeError(msg)


def _check_list(op: ListNamespacesOp, where: str) -> None:
    for condition in op.match_conditions or ():
        if condition.match_type not in ("prefix", "suffix"):
            msg = (
                f"{where}: match_type must be 'prefix' or 'suffix', "
                f"got {condition.match_type!r}."
            )
            raise ValueError(msg)
        _check_namespace(tuple(condition.path), where, prefix=True)
    if op.max_depth is not None:
        _check_count(op.max_depth, f"{where}: max_depth", 1)
    _check_count(op.limit, f"{where}: limit", 0)
    _check_count(op.offset, f"{where}: offset", 0)


def _check_count(number: object, name: str, least: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or number < least:
        msg = f"{name} must be an int >= {least}, got {number!r}."
        raise ValueError(msg)


def _check_minutes(minutes: object, name: str) -> None:
    if minutes is None:
        return
    try:
        finite = (
            isinstance(minutes, (int, float))
            and not isinstance(minutes, bool)
            and math.isfinite(float(minutes))
        )
    except OverflowError:
        finite = False
    if not finite or not 0 < cast("float", minutes) <= _MAX_MINUTES:
        msg = (
            f"{name} must be a finite number of minutes > 0 (at most "
            f"{_MAX_MINUTES:.0e}), or None; got {minutes!r}."
        )
        raise ValueError(msg)


def _check_key(key: object, where: str) -> None:
    if not isinstance(key, str) or not key:
        msg = f"{where}: the key must be a non-empty str, got {key!r}."
        raise TypeError(msg)
    _text(key, f"{where}: the key {key!r}")


def _check_filter(flt: object, where: str) -> None:
    if not isinstance(flt, dict):
        msg = f"{where} must be a dict of value fields, got {type(flt).__name__}."
        raise TypeError(msg)
    for name, wanted in flt.items():
        if isinstance(wanted, dict):
            operators = [k for k in wanted if isinstance(k, str) and k.startswith("$")]
            unknown = sorted(set(operators) - _OPERATORS)
            if unknown:
                msg = (
                    f"{where}[{name!r}]: unknown operator {unknown[0]!r}; use "
                    f"one of {sorted(_OPERATORS)}."
                )
                raise ValueError(msg)
            if operators and len(operators) != len(wanted):
                msg = (
                    f"{where}[{name!r}] mixes operators and fields; give either "
                    "{'$gt': 1, ...} or a nested value to match."
                )
                raise ValueError(msg)
            if not operators:
                _check_filter(wanted, f"{where}[{name!r}]")


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _prefilter(flt: Mapping[str, Any] | None, postgres: bool) -> tuple[str, list[Any]]:
    """SQL that keeps at least the items a filter matches (its plain equalities).

    Only a superset: the filter itself still runs on what SQL returns. A
    top-level field equal to a string or a number narrows the rows in SQL;
    anything else (operators, nested values, booleans, odd keys) does not.
    """
    where, params = "", []
    for key, given in (flt or {}).items():
        want = (
            given["$eq"] if isinstance(given, dict) and set(given) == {"$eq"} else given
        )
        if not _PLAIN_KEY.fullmatch(key) or not _sql_scalar(want):
            continue
        if postgres:
            where += " AND value::jsonb -> ? = ?::jsonb"
            params += [key, json.dumps(want)]
        else:
            where += " AND json_extract(value, ?) = ?"
            params += [f"$.{key}", want]
    return where, params


def _sql_scalar(value: object) -> bool:
    """A string, or a number both SQLite and JSON hold exactly (no bool)."""
    if isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _matches(value: Mapping[str, Any], flt: Mapping[str, Any]) -> bool:
    return all(_match(value.get(k, _MISSING), want) for k, want in flt.items())


def _match(actual: Any, want: Any) -> bool:
    if isinstance(want, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in want):
            return all(_operator(actual, op, arg) for op, arg in want.items())
        return isinstance(actual, dict) and _matches(actual, want)
    if isinstance(want, (list, tuple)):
        return (
            isinstance(actual, list)
            and len(actual) == len(want)
            and all(_match(a, w) for a, w in zip(actual, want, strict=True))
        )
    return actual is not _MISSING and _same(actual, want)


def _equal(actual: Any, want: Any) -> bool:
    """JSON equality of whole values (objects have the same keys)."""
    if isinstance(want, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == want.keys()
            and all(_equal(actual[k], w) for k, w in want.items())
        )
    if isinstance(want, (list, tuple)):
        return (
            isinstance(actual, list)
            and len(actual) == len(want)
            and all(_equal(a, w) for a, w in zip(actual, want, strict=True))
        )
    return _same(actual, want)


def _same(actual: Any, want: Any) -> bool:
    """JSON equality: `True` is not `1`."""
    if isinstance(actual, bool) or isinstance(want, bool):
        return isinstance(actual, bool) and isinstance(want, bool) and actual == want
    return bool(actual == want)


def _operator(actual: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return actual is not _MISSING and _equal(actual, arg)
    if op == "$ne":
        return actual is _MISSING or not _equal(actual, arg)
    numbers = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in (actual, arg)
    )
    if not numbers and not (isinstance(actual, str) and isinstance(arg, str)):
        return False  # a missing field, or values of different kinds
    return bool(_ORDER[op](actual, arg))


def _matches_path(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(path) > len(namespace):
        return False
    part = (
        namespace[: len(path)]
        if condition.match_type == "prefix"
        else namespace[len(namespace) - len(path) :]
    )
    return all(want in ("*", label) for want, label in zip(path, part, strict=True))


def _tokenized(fields: object, where: str) -> list[tuple[str, Any]]:
    if isinstance(fields, str) or not isinstance(fields, (list, tuple)):
        msg = f"{where} must be a list of JSON paths like ['content'], got {fields!r}."
        raise TypeError(msg)
    paths = []
    for path in fields:
        if not isinstance(path, str) or not path:
            msg = f"{where} must hold non-empty str paths, got {path!r}."
            raise TypeError(msg)
        paths.append((path, path if path == "$" else tokenize_path(path)))
    return paths


def _check_index(index: object) -> IndexConfig:
    if index is None:
        return {}
    if not isinstance(index, dict):
        msg = f"index must be a dict like {{'fields': ['content']}}, got {index!r}."
        raise TypeError(msg)
    unknown = sorted(set(index) - {"dims", "embed", "fields"})
    if unknown:
        msg = f"index has unknown keys {unknown}; it takes dims, embed and fields."
        raise ValueError(msg)
    if index.get("dims") is not None:
        _check_count(index["dims"], "index['dims']", 1)
    return cast("IndexConfig", dict(index))


def _check_ttl(ttl: object) -> TTLConfig:
    if ttl is None:
        return {}
    if not isinstance(ttl, dict):
        msg = f"ttl must be a TTLConfig dict, got {type(ttl).__name__}."
        raise TypeError(msg)
    known = {"default_ttl", "refresh_on_read", "sweep_interval_minutes", "omit_expired"}
    unknown = sorted(set(ttl) - known)
    if unknown:
        msg = f"ttl has unknown keys {unknown}; it takes {sorted(known)}."
        raise ValueError(msg)
    for name in ("default_ttl", "sweep_interval_minutes"):
        _check_minutes(ttl.get(name), f"ttl[{name!r}]")
    return cast("TTLConfig", dict(ttl))


def _check_user_namespace(template: object) -> int:
    if not isinstance(template, tuple) or not all(
        isinstance(label, str) and label for label in template
    ):
        msg = (
            "user_namespace must be a tuple of str with one '{user_id}' label, "
            f"such as ('memories', '{{user_id}}'); got {template!r}."
        )
        raise TypeError(msg)
    if template.count(_USER) != 1:
        msg = (
            "user_namespace must have exactly one '{user_id}' label, such as "
            f"('memories', '{{user_id}}'); got {template!r}."
        )
        raise ValueError(msg)
    _check_namespace(
        tuple("user" if label == _USER else label for label in template),
        "user_namespace",
        writing=True,
    )
    return template.index(_USER)
