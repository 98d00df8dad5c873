"""`PersistentMemory`: long-term memory for LLM apps, scoped by user.

Memories are documents of a `PersistentFAISS` store (same directory, same
`memory.db`) whose scope and attributes are reserved metadata keys, so every
read is restricted to one user by the storage query itself. Beside them in
the same database: an FTS5 keyword index (BM25), an audit trail of changes,
use counts, and an embedding cache. Every write is one SQLite transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.runnables.config import run_in_executor
from typing_extensions import Self

from langchain_persistent_memory._db import storable, store_schema
from langchain_persistent_memory._defaults import default_embeddings
from langchain_persistent_memory._filters import compile_filter
from langchain_persistent_memory._postgres import (
    PostgresStore,
    PostgresText,
    is_postgres_url,
)
from langchain_persistent_memory.errors import PersistentMemoryError
from langchain_persistent_memory.extraction import Fact, aextract, extract
from langchain_persistent_memory.vectorstores import (
    PersistentFAISS,
    _Batch,
    _chunks,
    _marks,
    _metadata_json,
)

if TYPE_CHECKING:
    import builtins

    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from langchain_persistent_memory._db import Connection

logger = logging.getLogger(__name__)

RESERVED_KEYS = frozenset(
    {
        "user_id",
        "agent_id",
        "session_id",
        "kind",
        "created_at",
        "updated_at",
        "importance",
        "source_ids",
        "content_hash",
        "superseded_by",
        "chat_seq",
    }
)
_DEDUP_DEFAULT = 0.95  # cosine at which two memories count as one
_RRF_K = 60  # reciprocal rank fusion constant (Cormack et al., 2009)
_MAX_ID = 256
_AUDIT = (
    "INSERT INTO memory_audit (memory_id, user_id, op, text, metadata, at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_CACHE_PUT = (
    "INSERT INTO embedding_cache (model, text_hash, vector) VALUES (?, ?, ?)"
    " ON CONFLICT (model, text_hash) DO UPDATE SET vector = excluded.vector"
)
_POSTGRES_OPTIONS = frozenset(
    {"embedding_model", "pool_size", "busy_timeout", "ef_search", "distance"}
)

# Words that carry no content for keyword search (questions and small talk).
_STOP_WORDS = frozenset(
    """a about above after again all am an and any are as at be because been
    before being below between both but by can could did do does doing down
    during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more
    most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why
    will with would you your yours yourself yourselves""".split()  # noqa: SIM905
)
_WORD = re.compile(r"\w+", re.UNICODE)

# Words that say nothing lasting on their own: greetings, thanks, farewells,
# acknowledgements and reactions.
_PHATIC = frozenset(
    """hi hello hey hiya yo howdy greetings morning afternoon evening night bye
    goodbye later see ya soon tomorrow tonight thanks thank thx ty welcome ok
    okay k sure yes yeah yep yup nope cool nice great awesome amazing wow oh ah
    aw aww awww haha hahaha lol hmm agreed agree totally absolutely definitely
    exactly indeed right alright well glad happy fun enjoy care take luck good
    day wait catch talk know let go going goes get em keep rock spirit sounds
    exciting same also thing lot really appreciate appreciated worries problem
    np got fine true cheers congrats congratulations sweet cute""".split()  # noqa: SIM905
)
# Words after which a capitalised word is someone addressed: "Bye Nate!".
_ADDRESS = frozenset(
    """hi hello hey hiya yo howdy greetings bye goodbye thanks thank thx ty
    congrats congratulations cheers ya later care""".split()  # noqa: SIM905
)
# Function words beyond the stop words: contraction pieces, vague pronouns
# and adverbs. Alone they say nothing; beside a content word they change
# nothing, since any content word keeps a turn.
_FILLER = frozenset(
    """s t m ll re ve d much many one ones anything everything something
    nothing everyone someone anyone else even always ever still maybe perhaps
    truly seriously especially together around way us gonna wanna gotta u ur
    im""".split()  # noqa: SIM905
)
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)(\w+)")

_SQLITE_SCHEMA = (
    (
        "CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts"
        " USING fts5(text, context, scope, tokenize = 'porter unicode61')"
    ),
    *store_schema("REAL"),
    (
        "CREATE TABLE IF NOT EXISTS memory_audit ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " memory_id TEXT NOT NULL, user_id TEXT NOT NULL, op TEXT NOT NULL,"
        " text TEXT, metadata TEXT, at REAL NOT NULL)"
    ),
    "CREATE INDEX IF NOT EXISTS memory_audit_id ON memory_audit (memory_id)",
    "CREATE INDEX IF NOT EXISTS memory_audit_user ON memory_audit (user_id)",
    (
        "CREATE TABLE IF NOT EXISTS memory_use ("
        " label INTEGER PRIMARY KEY, last_used REAL NOT NULL,"
        " use_count INTEGER NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS embedding_cache ("
        " model TEXT NOT NULL, text_hash BLOB NOT NULL, vector BLOB NOT NULL,"
        " PRIMARY KEY (model, text_hash)) WITHOUT ROWID"
    ),
    # The chat log of `PersistentChatMessageHistory`. `pending` marks messages
    # still to be offered to long-term memory: the log is the outbox, so a
    # failed embedding call is retried later instead of losing the message.
    (
        "CREATE TABLE IF NOT EXISTS chat_messages ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " user_id TEXT NOT NULL, session_id TEXT NOT NULL,"
        " message TEXT NOT NULL, created_at REAL NOT NULL,"
        " pending INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0)"
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


class _SQLiteText:
    """The memory tables of the embedded store, and FTS5 keyword search."""

    schema = _SQLITE_SCHEMA

    @staticmethod
    def put(con: Any, rows: Sequence[tuple[int, str, str | None, str]]) -> None:
        """Index `(label, text, context, user_id)` rows for keyword search.

        The context is found by keyword search but never returned.
        """
        _SQLiteText.drop(con, [row[0] for row in rows])
        con.executemany(
            "INSERT INTO memory_fts (rowid, text, context, scope) VALUES (?, ?, ?, ?)",
            [
                (label, text, context or "", _scope_token(user_id))
                for label, text, context, user_id in rows
            ],
        )

    @staticmethod
    def drop(con: Any, labels: Sequence[int]) -> None:
        """Remove memories from keyword search."""
        for part in _chunks(list(labels)):
            con.execute(
                f"DELETE FROM memory_fts WHERE rowid IN ({_marks(part)})",  # noqa: S608
                part,
            )

    @staticmethod
    def after_copy(con: Any) -> None:
        """Nothing to do: AUTOINCREMENT follows explicitly inserted `seq`s."""
        del con

    @staticmethod
    def contexts(con: Any, labels: Sequence[int]) -> dict[int, str]:
        """The keyword-only context of each memory that has one."""
        found: dict[int, str] = {}
        for part in _chunks(list(labels)):
            found.update(
                con.execute(
                    "SELECT rowid, context FROM memory_fts"  # noqa: S608
                    f" WHERE rowid IN ({_marks(part)}) AND context != ''",
                    part,
                ).fetchall()
            )
        return found

    @staticmethod
    def keyword(
        con: Any, terms: Sequence[str], user_id: str
    ) -> Iterable[tuple[int, float]]:
        """`(label, score)` of the user's memories matching any term, best first.

        The per-user token in `MATCH` keeps the search to the user's rows;
        the score is BM25 over the text and the context.
        """
        quoted = " OR ".join(f'"{term}"' for term in terms)
        match = f'scope:"{_scope_token(user_id)}" AND ({quoted})'
        for label, rank in con.execute(
            "SELECT rowid, bm25(memory_fts, 1.0, 1.0, 0.0) AS rank FROM memory_fts"
            " WHERE memory_fts MATCH ? ORDER BY rank",
            (match,),
        ):
            yield label, -rank


def default_write_gate(text: str) -> str | None:
    """Return why `text` is not worth remembering, or None to keep it.

    A turn is small talk when every word in it is a function word, a word
    of greeting, thanks, farewell or reaction, or the name of someone
    addressed (a capitalised word right after a greeting, thanks or
    farewell, or after a comma): "Thanks! Take care!", "Bye Nate!", "Wow,
    how's it going?". "Going to Berlin tomorrow" keeps "Berlin". Any other
    word keeps it, so the gate errs on the side of remembering. Turns without a word
    (emoji, punctuation) are skipped too. Dependency-free and
    deterministic; measured on labelled LoCoMo turns in
    `tests/unit_tests/test_write_gate.py`.
    """
    words = list(_WORD.finditer(text))
    if not words:
        return "no words"
    starts = {match.start(1) for match in _SENTENCE_START.finditer(text)}
    previous = ""
    for match in words:
        word, folded = match.group(), match.group().casefold()
        addressed = (
            word[0].isupper()
            and match.start() not in starts
            and (previous in _ADDRESS or text[: match.start()].rstrip().endswith(","))
        )
        previous = folded
        filler = folded in _PHATIC or folded in _STOP_WORDS or folded in _FILLER
        if filler or addressed:
            continue
        return None
    return "small talk"


@dataclass
class AddResult:
    """What `PersistentMemory.add` did with each piece of content."""

    ids: list[str] = field(default_factory=list)
    """Ids of the new memories stored, in input order."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """`(text, reason)` for each piece of content not stored as a new memory:
    the write gate's reason, or a duplicate that refreshed an existing memory
    (the reason names its id)."""


@dataclass
class MemoryStats:
    """Counts from `PersistentMemory.stats()`."""

    memories: int
    users: int
    by_kind: dict[str, int]
    embedding_calls: int
    embedded_texts: int
    cache_hits: int


class PersistentMemory:
    """Long-term memory for LLM apps: add, search, forget, per user.

    Args:
        path: Directory of the store (created if missing), or the URL of a
            PostgreSQL database with pgvector (`postgresql://user@host/db`,
            the `postgres` extra): the same memory, shared by every process
            and machine that opens the URL.
        embedding: The LangChain `Embeddings` used for memories and queries.
            When None: the model the store was made with if it exists
            (`LocalEmbeddings` or an OpenAI model); else OpenAI
            `text-embedding-3-small` if `OPENAI_API_KEY` is set (the `openai`
            extra); else `LocalEmbeddings()` if the `local` extra is
            installed; else `PersistentMemoryError` saying how to choose.
        write_gate: Called with each text before anything is embedded;
            returns a reason to skip it or None. `None` stores everything.
        half_life_days: Time decay: a memory's score halves every this many
            days since it was last written or used. None (default) is off.
        dedup_threshold: A new memory whose cosine similarity to one of the
            same user's memories of the same kind reaches this refreshes that
            memory instead of adding a copy. `"auto"` (default) takes the
            embedding's `near_duplicate_threshold` attribute if it has one
            (`LocalEmbeddings`: 0.98), else 0.95. None turns it off.
        token_counter: Counts the tokens of a memory's text for
            `token_budget`; defaults to langchain-core's offline
            `count_tokens_approximately`.
        fusion: How dense and keyword candidates combine. `"score"`
            (default): each side's scores are scaled to [0, 1] over the
            candidates and averaged with `keyword_weight`. `"rrf"`:
            reciprocal rank fusion. On LoCoMo turns the score average
            recalled more (see the README).
        keyword_weight: The keyword side's share in `"score"` fusion.
        extractor: A chat model with structured output. When set, `add`
            stores the typed facts it extracts from the content instead of
            the content itself, and facts that make older memories outdated
            supersede them (they leave search; the audit trail keeps them).
        reinforcement: How much being returned before lifts a memory: its
            score is multiplied by `1 + reinforcement * ln(1 + uses)`. 0
            turns it off (and stops recording uses).
        **store_options: For a directory, passed to `PersistentFAISS`
            (`checkpoint_every`, `busy_timeout`, `synchronous`, `index`, ...).
            For PostgreSQL: `pool_size` (connections per process, default
            10), `busy_timeout`, `ef_search` (HNSW search breadth, default
            100) and `embedding_model`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedding: Embeddings | None = None,
        *,
        write_gate: Callable[[str], str | None] | None = default_write_gate,
        half_life_days: float | None = None,
        dedup_threshold: float | Literal["auto"] | None = "auto",
        token_counter: Callable[[str], int] | None = None,
        fusion: Literal["score", "rrf"] = "score",
        keyword_weight: float = 0.5,
        reinforcement: float = 0.1,
        extractor: BaseChatModel | None = None,
        **store_options: Any,
    ) -> None:
        """Open (or create) the memory store in `path`."""
        if fusion not in ("score", "rrf"):
            msg = f"fusion must be 'score' or 'rrf', got {fusion!r}."
            raise ValueError(msg)
        if not 0 <= keyword_weight <= 1:
            msg = f"keyword_weight must be in [0, 1], got {keyword_weight!r}."
            raise ValueError(msg)
        if not reinforcement >= 0:
            msg = f"reinforcement must be >= 0, got {reinforcement!r}."
            raise ValueError(msg)
        self._fusion = fusion
        self._keyword_weight = keyword_weight
        self._reinforcement = reinforcement
        self._extractor = extractor
        if half_life_days is not None and not half_life_days > 0:
            msg = f"half_life_days must be > 0 or None, got {half_life_days!r}."
            raise ValueError(msg)
        embedding = _embedding_for(path, embedding)
        if dedup_threshold == "auto":
            dedup_threshold = float(
                getattr(embedding, "near_duplicate_threshold", _DEDUP_DEFAULT)
            )
        if dedup_threshold is not None and not 0 < dedup_threshold <= 1:
            msg = f"dedup_threshold must be in (0, 1] or None, got {dedup_threshold!r}."
            raise ValueError(msg)
        if store_options.get("distance", "cosine") != "cosine":
            msg = "PersistentMemory ranks by cosine similarity; omit distance=."
            raise ValueError(msg)
        self._store, self._text = _open_store(path, embedding, store_options)
        self._db = self._store._db  # noqa: SLF001 - same package, one database
        self._embedding = embedding
        self._gate = write_gate
        self._half_life = half_life_days
        self._dedup = dedup_threshold
        self._count_tokens = token_counter or _approximate_tokens
        self._model = self._store._model  # noqa: SLF001
        self._embedding_calls = 0
        self._embedded_texts = 0
        self._cache_hits = 0
        try:
            with self._db.write() as con:
                for statement in self._text.schema:
                    con.execute(statement)
        except BaseException:
            self._store.close()
            raise

    @property
    def store(self) -> PersistentFAISS:
        """The vector store underneath (for `as_retriever`-style interop).

        Raises:
            PersistentMemoryError: On PostgreSQL, which has no `PersistentFAISS`
                underneath; search through the memory or its retriever.
        """
        if isinstance(self._store, PostgresStore):
            msg = (
                "A PersistentMemory on PostgreSQL has no PersistentFAISS store "
                "underneath; use memory.search() or PersistentMemoryRetriever."
            )
            raise PersistentMemoryError(msg)
        return self._store

    def close(self) -> None:
        """Close the store (writes a final index checkpoint). Idempotent."""
        self._store.close()

    def __enter__(self) -> Self:
        """Return the memory itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the memory."""
        self.close()

    # ------------------------------------------------------------------ write

    def add(
        self,
        content: str | Sequence[BaseMessage],
        *,
        user_id: str,
        kind: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
        source_ids: Sequence[str] | None = None,
        context: str | None = None,
        created_at: float | None = None,
    ) -> AddResult:
        """Remember `content` for `user_id`.

        A string is one memory; a list of chat messages gives one memory per
        message worth keeping (`kind="message"` unless given, the role in
        `metadata["role"]`). The write gate runs first, then exact and near
        duplicates of the user's memories are refreshed instead of copied.

        Args:
            content: A string, or a list of chat messages.
            user_id: Whose memory this is.
            kind: `preference`, `fact`, `decision`, `event`, `message` or any
                other string; default `fact` for a string, `message` for
                chat messages.
            session_id: The conversation it came from, if any.
            agent_id: The agent it belongs to, if any.
            metadata: Extra JSON metadata (not the reserved keys).
            importance: In [0, 1]; 0.5 when not given.
            source_ids: Ids of what the memory was made from (messages, turns).
            context: Text found by keyword search along with the memory but
                neither returned nor embedded, e.g. the turns around a chat
                message. For a list of messages it defaults to the messages
                next to each one (two on each side).
            created_at: When it happened, in epoch seconds (default: now).

        Returns:
            The ids of the new memories, and the texts not stored as new
            ones with why (small talk, or a duplicate that refreshed the
            memory it names).

        Raises:
            TypeError: If content, ids or metadata have the wrong type.
            ValueError: If an argument is empty or out of range, or metadata
                uses a reserved key.
        """
        items = _items(
            content,
            user_id=user_id,
            kind=kind,
            session_id=session_id,
            agent_id=agent_id,
            metadata=metadata,
            importance=importance,
            source_ids=source_ids,
            context=context,
            created_at=created_at,
        )
        return self._add_items(items)

    def add_many(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = 256,
        progress: bool | Callable[[int, int], None] = False,
    ) -> AddResult:
        """Bulk `add`: each item is a dict of `add`'s arguments.

        Items are gated, embedded (one call per batch) and written one batch
        per transaction. `progress=True` draws a bar on stderr; a callable
        is called with `(items done, items in all)` after each batch.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            msg = f"batch_size must be an int >= 1, got {batch_size!r}."
            raise ValueError(msg)
        prepared: builtins.list[_Item] = []
        for position, item in enumerate(items):
            if not isinstance(item, Mapping) or "content" not in item:
                msg = (
                    f"items[{position}] must be a dict of add() arguments with content."
                )
                raise TypeError(msg)
            prepared.extend(
                _items(
                    item["content"], **{k: v for k, v in item.items() if k != "content"}
                )
            )
        report = _progress_bar if progress is True else (progress or None)
        result = AddResult()
        for start in range(0, len(prepared), batch_size):
            done = self._add_items(prepared[start : start + batch_size])
            result.ids.extend(done.ids)
            result.skipped.extend(done.skipped)
            if report is not None:
                report(min(start + batch_size, len(prepared)), len(prepared))
        return result

    def _add_items(
        self, items: Sequence[_Item], also: Callable[[Connection], None] | None = None
    ) -> AddResult:
        """Gate, extract, embed and write; `also` joins the write transaction."""
        result, keep = self._gate_items(items)
        if keep and self._extractor is not None:
            keep, none_found = self._extract(keep)
            result.skipped.extend((text, "no facts extracted") for text in none_found)
        if not keep:
            return self._write_items([], np.empty((0, 0)), result, also)
        vectors = self._embed([item.text for item in keep])
        return self._write_items(keep, vectors, result, also)

    def _gate_items(
        self, items: Sequence[_Item]
    ) -> tuple[AddResult, builtins.list[_Item]]:
        result = AddResult()
        keep: builtins.list[_Item] = []
        for item in items:
            reason = self._gate(item.text) if self._gate else None
            if reason:
                result.skipped.append((item.text, reason))
            else:
                keep.append(item)
        return result, keep

    def _write_items(
        self,
        keep: Sequence[_Item],
        vectors: np.ndarray,
        result: AddResult,
        also: Callable[[Connection], None] | None = None,
    ) -> AddResult:
        """Refresh twins, store the rest, supersede what the facts replace.

        `also`, if given, runs inside the same transaction (even when there
        is nothing to store), so its writes commit together with these.
        """
        if not keep and also is None:
            return result
        # Duplicates are judged on committed memories, before the write
        # transaction: a search must never read a transaction's own rows.
        plans = self._plan(keep, vectors)
        now = time.time()
        changed = 0
        with self._db.write() as con:
            if also is not None:
                also(con)
            # New memories are written together; pending ones are written
            # before a supersede, so every step sees the ones before it.
            pending: builtins.list[_Put] = []
            for item, vector, twin in zip(keep, vectors, plans, strict=True):
                if twin is not None and self._refresh(con, twin[0], now, item):
                    note = f"{twin[1]} of {twin[0]} (refreshed)" if twin[0] else twin[1]
                    result.skipped.append((item.text, note))
                    for old_id in item.supersedes if twin[0] else ():
                        if old_id != twin[0]:
                            self._put(con, pending, op="add")
                            changed += self._supersede(con, old_id, twin[0], item.scope)
                    continue
                memory_id = uuid.uuid4().hex
                when = now if item.created_at is None else item.created_at
                meta = {
                    **item.attrs,
                    **item.scope,
                    "created_at": when,
                    "updated_at": when,
                    "content_hash": _content_hash(item.text),
                }
                pending.append(_Put(memory_id, item.text, meta, vector, item.context))
                result.ids.append(memory_id)
                changed += 1
                if item.supersedes:
                    self._put(con, pending, op="add")
                for old_id in item.supersedes:
                    changed += self._supersede(con, old_id, memory_id, item.scope)
            self._put(con, pending, op="add")
        if changed:
            self._store._checkpointer.note(changed)  # noqa: SLF001
        return result

    def _extract(
        self, items: Sequence[_Item]
    ) -> tuple[builtins.list[_Item], builtins.list[str]]:
        """Replace items by the facts the extractor finds, per user and session.

        Returns the fact items and the texts of groups that gave no fact.
        """
        assert self._extractor is not None  # noqa: S101 - checked by the caller
        found = []
        for group in _groups(items):
            turns = [item.text for item in group]
            plan = self._plan_search(
                _known_query(turns), user_id=group[0].scope["user_id"], k=10
            )
            known = self._ranked(
                plan, self._embedding.embed_query(plan.query), record_use=False
            )
            found.append((group, extract(self._extractor, turns, known)))
        return _fact_items(found)

    async def _aextract(
        self, items: Sequence[_Item]
    ) -> tuple[builtins.list[_Item], builtins.list[str]]:
        """Async `_extract`: awaits the model (`ainvoke`)."""
        assert self._extractor is not None  # noqa: S101 - checked by the caller
        found = []
        for group in _groups(items):
            turns = [item.text for item in group]
            plan = self._plan_search(
                _known_query(turns), user_id=group[0].scope["user_id"], k=10
            )
            vector = await self._embedding.aembed_query(plan.query)
            known = await run_in_executor(
                None, functools.partial(self._ranked, plan, vector, record_use=False)
            )
            found.append((group, await aextract(self._extractor, turns, known)))
        return _fact_items(found)

    def _supersede(
        self, con: Connection, old_id: str, new_id: str, scope: Mapping[str, str]
    ) -> int:
        """Take `old_id` out of search; its history records what replaced it."""
        labels = self._owned_labels(con, [old_id], scope["user_id"])
        if not labels:
            return 0  # already gone, or not this user's
        self._remove(con, [old_id], labels)
        self._audit(
            con,
            old_id,
            scope["user_id"],
            "supersede",
            meta={"superseded_by": new_id},
        )
        return 1

    def _plan(
        self, items: Sequence[_Item], vectors: np.ndarray
    ) -> builtins.list[tuple[str, str] | None]:
        """For each item, `(id, "duplicate" | "near-duplicate")` of a twin, or None.

        Twins are the same user's live memories of the same kind with the
        same normalised text, or (with `dedup_threshold`) a cosine similarity
        at least that high; earlier items of the same batch count too.
        """
        plans: builtins.list[tuple[str, str] | None] = []
        accepted: dict[tuple[str, str], builtins.list[tuple[str, np.ndarray]]] = {}
        digests = [_content_hash(item.text) for item in items]
        with self._db.read() as con:  # one snapshot for the batch
            exact = self._exact_twins(con, digests)
            for item, vector, digest in zip(items, vectors, digests, strict=True):
                key = (item.scope["user_id"], item.attrs["kind"])
                unit = vector / np.linalg.norm(vector)
                if any(
                    h == digest
                    or (self._dedup is not None and float(u @ unit) >= self._dedup)
                    for h, u in accepted.get(key, [])
                ):
                    plans.append(("", "duplicate within the same call"))
                    continue
                same = exact.get((*key, digest))
                twin = (same, "duplicate") if same else self._twin(key, vector)
                plans.append(twin)
                if twin is None:
                    accepted.setdefault(key, []).append((digest, unit))
        return plans

    def _exact_twins(
        self, con: Connection, digests: Sequence[str]
    ) -> dict[tuple[Any, ...], str]:
        """`(user, kind, content hash) -> id` of live memories with these hashes.

        The hashes drive the lookup (one query for the batch); driving by
        user would read all of the user's memories for every text added.
        """
        labels = [
            label
            for part in _chunks([*dict.fromkeys(digests)])
            for label in self._labels(con, {"content_hash": {"$in": part}})
        ]
        found: dict[tuple[Any, ...], str] = {}
        for doc in self._rows(sorted(labels)):
            meta = doc.metadata
            twin = (meta.get("user_id"), meta.get("kind"), meta.get("content_hash"))
            found.setdefault(twin, doc.id or "")
        return found

    def _twin(self, key: tuple[str, str], vector: np.ndarray) -> tuple[str, str] | None:
        """A near duplicate of the user's memories of this kind, if any."""
        if self._dedup is None:
            return None
        live = {"user_id": key[0], "kind": key[1]}
        hits, _ = self._store._search(vector.tolist(), 1, live)  # noqa: SLF001
        if hits and hits[0][1] >= self._dedup:
            documents = self._store._documents([hits[0][0]])  # noqa: SLF001
            if hits[0][0] in documents:
                return documents[hits[0][0]].id or "", "near-duplicate"
        return None

    def _put(self, con: Connection, puts: builtins.list[_Put], *, op: str) -> None:
        """Write memories (new or replacing the same ids), then empty `puts`.

        Documents, keyword text and audit rows each go in one batch.
        """
        if not puts:
            return
        batch = _Batch(
            [put.text for put in puts],
            [put.meta for put in puts],
            [_metadata_json(put.meta, 0) for put in puts],
            [put.memory_id for put in puts],
        )
        vectors = np.stack([put.vector for put in puts])
        labels = self._store._write_rows(con, batch, vectors)  # noqa: SLF001
        self._text.put(
            con,
            [
                (label, put.text, put.context, put.meta["user_id"])
                for label, put in zip(labels, puts, strict=True)
            ],
        )
        at = time.time()
        con.executemany(
            _AUDIT,
            [
                (
                    put.memory_id,
                    put.meta["user_id"],
                    op,
                    put.text,
                    json.dumps(put.meta, ensure_ascii=False),
                    at,
                )
                for put in puts
            ],
        )
        puts.clear()

    def _refresh(
        self, con: Connection, memory_id: str, now: float, item: _Item
    ) -> bool:
        """Mark a memory as written again now, merging what the new copy adds.

        The higher importance and the union of source ids are kept. Returns
        False if the memory is gone (a twin within the same call: True).
        """
        if not memory_id:
            return True  # a twin within the same batch: nothing stored yet
        row = con.execute(
            "SELECT label, metadata FROM documents WHERE id = ?", (memory_id,)
        ).fetchone()
        if row is None:
            return False
        label = row[0]
        meta = {**self._store._meta(memory_id, row[1]), "updated_at": now}  # noqa: SLF001
        meta["importance"] = max(meta.get("importance", 0.5), item.attrs["importance"])
        sources = [*meta.get("source_ids", []), *item.attrs.get("source_ids", [])]
        if sources:
            meta["source_ids"] = [*dict.fromkeys(sources)]
        con.execute(
            "UPDATE documents SET metadata = ? WHERE label = ?",
            (_metadata_json(meta, 0), label),
        )
        con.execute("DELETE FROM metadata_index WHERE label = ?", (label,))
        con.executemany(
            "INSERT INTO metadata_index (key, type, value, label) VALUES (?, ?, ?, ?)",
            self._store._index_rows(label, meta),  # noqa: SLF001
        )
        self._audit(con, memory_id, meta["user_id"], "refresh")
        return True

    def _audit(
        self,
        con: Connection,
        memory_id: str,
        user_id: str,
        op: str,
        *,
        text: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        con.execute(
            _AUDIT,
            (
                memory_id,
                user_id,
                op,
                text,
                None if meta is None else json.dumps(meta, ensure_ascii=False),
                time.time(),
            ),
        )

    def update(
        self,
        memory_id: str,
        content: str,
        *,
        user_id: str,
        importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Document:
        """Replace the text (and optionally importance or metadata) of a memory.

        Raises:
            KeyError: If `user_id` has no memory `memory_id`.
        """
        texts, _ = _contents(content)
        if len(texts) != 1:
            msg = "update() takes one string as the new content."
            raise TypeError(msg)
        # Everything is checked before paying for an embedding.
        if metadata is not None:
            _check_user_metadata(metadata)
        if importance is not None:
            importance = _check_importance(importance)
        with self._db.read() as con:
            self._owned(con, memory_id, user_id)
        vector = self._embed(texts)[0]
        with self._db.write() as con:
            label, old = self._owned_label(con, memory_id, user_id)
            meta = dict(old.metadata)
            if metadata is not None:
                for key in [k for k in meta if k not in RESERVED_KEYS]:
                    del meta[key]
                meta.update(metadata)
            if importance is not None:
                meta["importance"] = importance
            meta["updated_at"] = time.time()
            meta["content_hash"] = _content_hash(texts[0])
            kept = self._text.contexts(con, [label]).get(label)
            put = _Put(memory_id, texts[0], meta, vector, kept)
            self._put(con, [put], op="update")
            _update_store_item(con, memory_id, texts[0], importance, meta["updated_at"])
        self._store._checkpointer.note(1)  # noqa: SLF001
        return Document(id=memory_id, page_content=texts[0], metadata=meta)

    def delete(self, memory_id: str, *, user_id: str) -> bool:
        """Delete one memory of `user_id`; False if there was none."""
        with self._db.write() as con:
            mine = self._owned_labels(con, [memory_id], _check_id(user_id, "user_id"))
            if not mine:
                return False
            self._remove(con, [memory_id], mine)
            self._audit(con, memory_id, user_id, "delete")
        self._store._checkpointer.note(1)  # noqa: SLF001
        return True

    def forget(self, user_id: str) -> int:
        """Remove everything of `user_id`: memories, audit trail, chat sessions.

        LangGraph store items of the user's namespace go too; items of
        deeper namespaces (`("memories", user, "notes")`) belong to those
        namespaces: delete them through the store.

        Returns:
            How many memories were removed.
        """
        user_id = _check_id(user_id, "user_id")
        with self._db.write() as con:
            labels = self._labels(con, {"user_id": user_id})
            ids = [
                row[0]
                for part in _chunks(labels)
                for row in con.execute(
                    f"SELECT id FROM documents WHERE label IN ({_marks(part)})",  # noqa: S608
                    part,
                )
            ]
            if ids:
                self._remove(con, ids, labels)
            con.execute("DELETE FROM memory_audit WHERE user_id = ?", (user_id,))
            con.execute("DELETE FROM chat_messages WHERE user_id = ?", (user_id,))
            con.execute("DELETE FROM store_items WHERE user_id = ?", (user_id,))
        if ids:
            self._store._checkpointer.note(len(ids))  # noqa: SLF001
        return len(ids)

    def _remove(
        self, con: Connection, ids: builtins.list[str], labels: builtins.list[int]
    ) -> None:
        # Cached vectors of removed texts go too: the cache must not tell
        # anyone later what a forgotten user had stored.
        texts = [
            row[0]
            for part in _chunks(labels)
            for row in con.execute(
                f"SELECT text FROM documents WHERE label IN ({_marks(part)})",  # noqa: S608
                part,
            )
        ]
        digests = [hashlib.sha256(text.encode()).digest() for text in texts]
        for part in _chunks(digests):
            con.execute(
                f"DELETE FROM embedding_cache WHERE text_hash IN ({_marks(part)})",  # noqa: S608
                part,
            )
        self._store._delete_rows(con, ids)  # noqa: SLF001
        self._text.drop(con, labels)
        # A LangGraph store item whose memory this was goes with it.
        for part in _chunks(ids):
            con.execute(
                f"DELETE FROM store_items WHERE memory_id IN ({_marks(part)})",  # noqa: S608
                part,
            )
        for part in _chunks(labels):
            con.execute(
                f"DELETE FROM memory_use WHERE label IN ({_marks(part)})",  # noqa: S608
                part,
            )

    def prune(
        self,
        *,
        user_id: str | None = None,
        older_than_days: float | None = None,
        max_per_user: int | None = None,
    ) -> int:
        """Remove memories that outlived their use; return how many went.

        Args:
            user_id: Only this user's memories (default: every user's).
            older_than_days: Remove memories neither written nor returned by
                a search for this many days.
            max_per_user: Keep at most this many memories per user, removing
                the lowest value first: importance x time decay (the store's
                `half_life_days`, 30 days if off) x use.

        The memories of `PersistentMemoryStore` items are left alone (and
        not counted): they go by the item's TTL, or when it is deleted.
        """
        if older_than_days is not None and not older_than_days > 0:
            msg = f"older_than_days must be > 0, got {older_than_days!r}."
            raise ValueError(msg)
        if max_per_user is not None and (
            not isinstance(max_per_user, int) or max_per_user < 0
        ):
            msg = f"max_per_user must be an int >= 0, got {max_per_user!r}."
            raise ValueError(msg)
        now = time.time()
        half_life = (self._half_life or 30.0) * 86400
        with self._db.write() as con:
            flt = (
                {"user_id": _check_id(user_id, "user_id")}
                if user_id is not None
                else {"user_id": {"$exists": True}}
            )
            labels = self._labels(con, flt)
            documents = self._store._documents(labels)  # noqa: SLF001
            # LangGraph store items leave by their TTL or a delete, not here.
            for label in _store_items_of(con, documents):
                del documents[label]
            use = self._use(con, labels)
            doomed = _doomed(
                documents,
                use,
                now,
                half_life,
                reinforcement=self._reinforcement,
                older_than_days=older_than_days,
                max_per_user=max_per_user,
            )
            if doomed:
                ids = [documents[label].id or "" for label in doomed]
                self._remove(con, ids, [*doomed])
                for label, why in doomed.items():
                    doc = documents[label]
                    self._audit(
                        con, doc.id or "", doc.metadata["user_id"], f"prune: {why}"
                    )
        if doomed:
            self._store._checkpointer.note(len(doomed))  # noqa: SLF001
        return len(doomed)

    def export(
        self, path: str | os.PathLike[str], *, user_id: str | None = None
    ) -> int:
        """Write memories to a JSON Lines file; return how many.

        One line per memory: `{"id", "text", "context", "metadata"}`, where
        the metadata holds the user, kind, times, importance and source ids.
        The file is written to a temporary name and renamed when complete.
        """
        target = Path(path)
        with self._db.read() as con:
            flt = (
                {"user_id": _check_id(user_id, "user_id")}
                if user_id is not None
                else {"user_id": {"$exists": True}}
            )
            labels = self._labels(con, flt)
            documents = self._rows(labels)
            contexts = self._text.contexts(con, labels)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        # Owner-only like the store itself: the file holds users' memories.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(descriptor, "w", encoding="utf-8") as handle:  # noqa: PTH123 - a descriptor
                for label, doc in zip(labels, documents, strict=True):
                    record = {
                        "id": doc.id,
                        "text": doc.page_content,
                        "context": contexts.get(label) or None,
                        "metadata": {
                            k: v for k, v in doc.metadata.items() if k != "chat_seq"
                        },
                    }
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return len(documents)

    def import_(self, path: str | os.PathLike[str]) -> int:
        """Load memories written by `export`; return how many.

        Ids, users, kinds, times and importance are kept; a memory whose id
        exists is replaced. Every line is checked before anything is
        written, and everything is written in one transaction, so a bad
        file changes nothing. The write gate and dedup do not apply.

        Raises:
            ValueError: If a line is not a memory record (its number is named).
        """
        records = []
        with Path(path).open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    records.append(_import_record(line, number))
        with self._db.read() as con:  # before paying for embeddings
            self._check_import_owners(con, records)
        texts = [record[1] for record in records]
        vectors = self._embed(texts) if texts else np.empty((0, 0), dtype=np.float32)
        with self._db.write() as con:
            self._check_import_owners(con, records)  # again: others may write
            puts = [
                _Put(memory_id, text, meta, vector, context)
                for (memory_id, text, context, meta), vector in zip(
                    records, vectors, strict=True
                )
            ]
            for put in puts:  # before _put, which empties the list
                importance = put.meta.get("importance")
                _update_store_item(
                    con, put.memory_id, put.text, importance, time.time()
                )
            self._put(con, puts, op="import")
        if records:
            self._store._checkpointer.note(len(records))  # noqa: SLF001
        return len(records)

    def _check_import_owners(
        self,
        con: Connection,
        records: Sequence[tuple[str, str, str | None, dict[str, Any]]],
    ) -> None:
        """Refuse records whose id is a memory of another user."""
        owner = {record[0]: record[3]["user_id"] for record in records}
        ids = [*owner]
        for part in _chunks(ids):
            rows = con.execute(
                f"SELECT id, metadata FROM documents WHERE id IN ({_marks(part)})",  # noqa: S608
                part,
            )
            for memory_id, meta in rows:
                current = self._store._meta(memory_id, meta).get("user_id")  # noqa: SLF001
                if current != owner[memory_id]:
                    number = ids.index(memory_id) + 1
                    msg = (
                        f"Record {number} ({memory_id!r}) would replace a memory of "
                        "another user; nothing was imported. Give it a new id."
                    )
                    raise ValueError(msg)

    # ------------------------------------------------------------------- read

    def get(self, memory_id: str, *, user_id: str) -> Document | None:
        """The memory `memory_id` of `user_id`, or None."""
        with self._db.read() as con:
            try:
                return self._owned(con, memory_id, user_id)
            except KeyError:
                return None

    def list(
        self,
        *,
        user_id: str,
        kinds: Sequence[str] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Document]:
        """The memories of `user_id`, newest first (superseded ones excluded)."""
        for name, value in (("limit", limit), ("offset", offset)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                msg = f"{name} must be an int >= 0, got {value!r}."
                raise ValueError(msg)
        with self._db.read() as con:
            labels = self._labels(
                con, self._scope_filter(user_id, kinds, None, None, None)
            )
            documents = self._rows(labels)
        documents.sort(key=lambda d: (-d.metadata["created_at"], d.id or ""))
        return documents[offset : offset + limit]

    def history(self, memory_id: str, *, user_id: str) -> builtins.list[dict[str, Any]]:
        """The audit trail of one memory, oldest first."""
        with self._db.read() as con:
            rows = con.execute(
                "SELECT op, text, metadata, at FROM memory_audit"
                " WHERE memory_id = ? AND user_id = ? ORDER BY seq",
                (_check_memory_id(memory_id), _check_id(user_id, "user_id")),
            ).fetchall()
        return [
            {
                "op": op,
                "text": text,
                "metadata": None
                if meta is None
                else self._store._meta(memory_id, meta),  # noqa: SLF001
                "at": at,
            }
            for op, text, meta, at in rows
        ]

    def stats(self) -> MemoryStats:
        """Counts of memories, users and kinds; embedding calls and cache hits."""
        with self._db.read() as con:
            kinds = dict(
                con.execute(
                    "SELECT value, count(*) FROM metadata_index"
                    " WHERE key = 'kind' GROUP BY value"
                ).fetchall()
            )
            users = con.execute(
                "SELECT count(DISTINCT value) FROM metadata_index WHERE key = 'user_id'"
            ).fetchone()[0]
        return MemoryStats(
            memories=sum(kinds.values()),
            users=users,
            by_kind=kinds,
            embedding_calls=self._embedding_calls,
            embedded_texts=self._embedded_texts,
            cache_hits=self._cache_hits,
        )

    def search(
        self,
        query: str,
        *,
        user_id: str,
        k: int = 5,
        kinds: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - LangChain's name
        since: float | dt.datetime | None = None,
        until: float | dt.datetime | None = None,
        token_budget: int | None = None,
        diversity: float = 0.0,
    ) -> builtins.list[Document]:
        """The memories of `user_id` most relevant to `query`, best first.

        Dense (FAISS) and keyword (FTS5 BM25) candidates, both restricted to
        the user by the storage query, are fused (see `fusion`), then
        weighted by time decay, importance and use. With `token_budget`,
        memories are taken in rank order while their texts fit.

        With `diversity` in (0, 1], results are re-ordered by maximal
        marginal relevance: each next memory trades its score against its
        similarity to those already chosen (0 is off; 1 is diversity only).

        Each document's metadata has `score` and `scores` (`dense`,
        `keyword`, `fused`, `decay`, `importance`, `use`), saying why it ranked.
        """
        return self._search(
            query,
            user_id=user_id,
            k=k,
            kinds=kinds,
            filter=filter,
            since=since,
            until=until,
            token_budget=token_budget,
            diversity=diversity,
        )

    def _search(
        self,
        query: str,
        *,
        record_use: bool = True,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - LangChain's name
        **options: Any,
    ) -> builtins.list[Document]:
        """`search`; `record_use=False` looks without counting as use (lpm)."""
        plan = self._plan_search(query, flt=filter, **options)
        return self._ranked(
            plan, self._embedding.embed_query(query), record_use=record_use
        )

    def _plan_search(
        self,
        query: str,
        *,
        user_id: str,
        k: int,
        kinds: Sequence[str] | None = None,
        flt: Mapping[str, Any] | None = None,
        since: float | dt.datetime | None = None,
        until: float | dt.datetime | None = None,
        token_budget: int | None = None,
        diversity: float = 0.0,
    ) -> _SearchPlan:
        """Check a search's arguments (before any embedding call)."""
        if not isinstance(query, str) or not query.strip():
            msg = "query must be a non-empty string."
            raise ValueError(msg)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            msg = f"k must be an int >= 1, got {k!r}."
            raise ValueError(msg)
        if token_budget is not None and token_budget < 0:
            msg = f"token_budget must be >= 0, got {token_budget!r}."
            raise ValueError(msg)
        if isinstance(diversity, bool) or not 0.0 <= diversity <= 1.0:
            msg = f"diversity must be a number in [0, 1], got {diversity!r}."
            raise ValueError(msg)
        scope = self._scope_filter(user_id, kinds, flt, since, until)
        return _SearchPlan(query, user_id, k, scope, token_budget, float(diversity))

    def _ranked(
        self, plan: _SearchPlan, vector: Sequence[float], *, record_use: bool = True
    ) -> builtins.list[Document]:
        """Rank the user's memories for a planned search and its query vector."""
        query, user_id, k, scope = plan.query, plan.user_id, plan.k, plan.scope
        token_budget = plan.token_budget
        pool = max(4 * k, 50)
        with self._db.read() as con:
            dense, _ = self._store._search(vector, pool, scope)  # noqa: SLF001
            narrowed = scope if len(scope["$and"]) > 1 else None
            keyword = self._keyword(con, query, user_id, narrowed, pool)
            if self._fusion == "rrf":
                fused = _fuse([lb for lb, _ in dense], [lb for lb, _ in keyword])
            else:
                fused = _average(dense, keyword, self._keyword_weight)
            found = self._store._documents(list(fused))  # noqa: SLF001
            use = self._use(con, list(fused))
        dense_scores = dict(dense)
        keyword_scores = dict(keyword)
        now = time.time()
        ranked: builtins.list[tuple[float, Document]] = []
        for label in fused:
            doc = found.get(label)
            if doc is None:
                continue  # removed under us (e.g. through the store directly)
            last_used, use_count = use.get(label, (None, 0))
            touched = max(doc.metadata["updated_at"], last_used or 0.0)
            decay = (
                0.5 ** (max(0.0, now - touched) / 86400 / self._half_life)
                if self._half_life
                else 1.0
            )
            importance = 0.5 + doc.metadata.get("importance", 0.5)
            reinforcement = 1.0 + self._reinforcement * math.log1p(use_count)
            score = fused[label] * decay * importance * reinforcement
            doc.metadata["scores"] = {
                "dense": dense_scores.get(label),
                "keyword": keyword_scores.get(label),
                "fused": fused[label],
                "decay": decay,
                "importance": importance,
                "use": reinforcement,
            }
            doc.metadata["score"] = score
            ranked.append((score, doc))
        ranked.sort(key=lambda pair: -pair[0])
        if plan.diversity and len(ranked) > 1:
            vectors = self._store._vectors(list(found))  # noqa: SLF001
            by_id = {
                doc.id: vectors[label]
                for label, doc in found.items()
                if label in vectors
            }
            ranked = _diversify(ranked, by_id, plan.diversity, k)
        chosen: builtins.list[Document] = []
        spent = 0
        for _, doc in ranked[:k]:
            if token_budget is not None:
                cost = self._count_tokens(doc.page_content)
                if spent + cost > token_budget:
                    break
                spent += cost
            chosen.append(doc)
        if record_use:
            self._note_use(chosen)
        return chosen

    async def asearch(
        self,
        query: str,
        *,
        user_id: str,
        k: int = 5,
        kinds: Sequence[str] | None = None,
        filter: Mapping[str, Any] | None = None,  # noqa: A002 - LangChain's name
        since: float | dt.datetime | None = None,
        until: float | dt.datetime | None = None,
        token_budget: int | None = None,
        diversity: float = 0.0,
    ) -> builtins.list[Document]:
        """Async `search`: embeds with `aembed_query`, reads the disk in a thread."""
        plan = self._plan_search(
            query,
            user_id=user_id,
            k=k,
            kinds=kinds,
            flt=filter,
            since=since,
            until=until,
            token_budget=token_budget,
            diversity=diversity,
        )
        vector = await self._embedding.aembed_query(query)
        return await run_in_executor(None, self._ranked, plan, vector)

    async def aadd(
        self,
        content: str | Sequence[BaseMessage],
        *,
        user_id: str,
        kind: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
        source_ids: Sequence[str] | None = None,
        context: str | None = None,
        created_at: float | None = None,
    ) -> AddResult:
        """Async `add`: awaits the extractor and the embedding.

        The model calls use `ainvoke` and `aembed_documents`; the disk work
        runs in a worker thread.
        """
        items = _items(
            content,
            user_id=user_id,
            kind=kind,
            session_id=session_id,
            agent_id=agent_id,
            metadata=metadata,
            importance=importance,
            source_ids=source_ids,
            context=context,
            created_at=created_at,
        )
        result, keep = self._gate_items(items)
        if keep and self._extractor is not None:
            keep, none_found = await self._aextract(keep)
            result.skipped.extend((text, "no facts extracted") for text in none_found)
        if not keep:
            return result
        hashes, cached, missing = await run_in_executor(
            None, self._cache_lookup, [item.text for item in keep]
        )
        fresh = (
            await self._embedding.aembed_documents([keep[i].text for i in missing])
            if missing
            else []
        )
        vectors = await run_in_executor(
            None,
            self._cache_fill,
            [item.text for item in keep],
            hashes,
            cached,
            missing,
            fresh,
        )
        return await run_in_executor(None, self._write_items, keep, vectors, result)

    # Async twins of the disk-bound methods: the work runs in a worker
    # thread, so the event loop is never blocked.

    async def aadd_many(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = 256,
        progress: bool | Callable[[int, int], None] = False,
    ) -> AddResult:
        """Async `add_many` (in a worker thread)."""
        call = functools.partial(
            self.add_many, items, batch_size=batch_size, progress=progress
        )
        return await run_in_executor(None, call)

    async def aget(self, memory_id: str, *, user_id: str) -> Document | None:
        """Async `get`."""
        return await run_in_executor(
            None, functools.partial(self.get, memory_id, user_id=user_id)
        )

    async def alist(
        self,
        *,
        user_id: str,
        kinds: Sequence[str] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Document]:
        """Async `list`."""
        call = functools.partial(
            self.list, user_id=user_id, kinds=kinds, limit=limit, offset=offset
        )
        return await run_in_executor(None, call)

    async def aupdate(
        self,
        memory_id: str,
        content: str,
        *,
        user_id: str,
        importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Document:
        """Async `update` (embedding and disk work in a worker thread)."""
        call = functools.partial(
            self.update,
            memory_id,
            content,
            user_id=user_id,
            importance=importance,
            metadata=metadata,
        )
        return await run_in_executor(None, call)

    async def adelete(self, memory_id: str, *, user_id: str) -> bool:
        """Async `delete`."""
        return await run_in_executor(
            None, functools.partial(self.delete, memory_id, user_id=user_id)
        )

    async def aforget(self, user_id: str) -> int:
        """Async `forget`."""
        return await run_in_executor(None, self.forget, user_id)

    async def ahistory(
        self, memory_id: str, *, user_id: str
    ) -> builtins.list[dict[str, Any]]:
        """Async `history`."""
        return await run_in_executor(
            None, functools.partial(self.history, memory_id, user_id=user_id)
        )

    async def aprune(
        self,
        *,
        user_id: str | None = None,
        older_than_days: float | None = None,
        max_per_user: int | None = None,
    ) -> int:
        """Async `prune`."""
        call = functools.partial(
            self.prune,
            user_id=user_id,
            older_than_days=older_than_days,
            max_per_user=max_per_user,
        )
        return await run_in_executor(None, call)

    async def astats(self) -> MemoryStats:
        """Async `stats`."""
        return await run_in_executor(None, self.stats)

    async def aexport(
        self, path: str | os.PathLike[str], *, user_id: str | None = None
    ) -> int:
        """Async `export`."""
        return await run_in_executor(
            None, functools.partial(self.export, path, user_id=user_id)
        )

    async def aimport_(self, path: str | os.PathLike[str]) -> int:
        """Async `import_`."""
        return await run_in_executor(None, self.import_, path)

    def _keyword(
        self,
        con: Connection,
        query: str,
        user_id: str,
        narrowed: Mapping[str, Any] | None,
        limit: int,
    ) -> builtins.list[tuple[int, float]]:
        """Keyword candidates of one user, best first.

        The keyword index is searched for the user's rows only. `narrowed`
        (kinds, times, metadata) is answered by the metadata index and
        checked while reading the ranked rows.
        """
        terms = _query_terms(query)
        if not terms:
            return []
        allowed = None
        if narrowed is not None:
            allowed = set(self._labels(con, narrowed))
        found: builtins.list[tuple[int, float]] = []
        for label, score in self._text.keyword(con, terms, user_id):
            if allowed is None or label in allowed:
                found.append((label, score))
                if len(found) == limit:
                    break
        return found

    def _note_use(self, documents: Sequence[Document]) -> None:
        if not documents or not self._reinforcement:
            return
        now = time.time()
        try:
            # Use counts commute: on PostgreSQL they need not queue behind
            # the store's writers (ids sorted: one lock order for all).
            with self._db.write(lock=False) as con:
                con.executemany(
                    "INSERT INTO memory_use (label, last_used, use_count)"
                    " SELECT label, ?, 1 FROM documents WHERE id = ?"
                    " ON CONFLICT (label) DO UPDATE SET"
                    " last_used = excluded.last_used,"
                    " use_count = memory_use.use_count + 1",
                    [
                        (now, doc_id)
                        for doc_id in sorted({d.id or "" for d in documents})
                    ],
                )
        except Exception:
            logger.debug("Could not record memory use", exc_info=True)

    # ---------------------------------------------------------------- helpers

    def _scope_filter(
        self,
        user_id: str,
        kinds: Sequence[str] | None,
        extra: Mapping[str, Any] | None,
        since: float | dt.datetime | None,
        until: float | dt.datetime | None,
    ) -> dict[str, Any]:
        parts: builtins.list[dict[str, Any]] = [
            {"user_id": _check_id(user_id, "user_id")},
        ]
        if kinds is not None:
            if isinstance(kinds, str):
                msg = "kinds must be a list of kinds, e.g. kinds=['preference']."
                raise TypeError(msg)
            parts.append({"kind": {"$in": list(kinds)}})
        if since is not None:
            parts.append({"created_at": {"$gte": _epoch(since, "since")}})
        if until is not None:
            parts.append({"created_at": {"$lt": _epoch(until, "until")}})
        if extra:
            parts.append(dict(extra))
        return {"$and": parts}

    def _labels(self, con: Connection, flt: Mapping[str, Any]) -> builtins.list[int]:
        sql, params = compile_filter(flt, self._store._bind)  # noqa: SLF001
        return [row[0] for row in con.execute(sql, params)]

    def _rows(self, labels: Sequence[int]) -> builtins.list[Document]:
        found = self._store._documents(labels)  # noqa: SLF001
        return [found[label] for label in labels if label in found]

    def _owned_labels(
        self, con: Connection, ids: Sequence[str], user_id: str
    ) -> builtins.list[int]:
        """Labels of those of `ids` that are memories of `user_id` (one query)."""
        for memory_id in ids:
            _check_memory_id(memory_id)
        return [
            row[0]
            for part in _chunks(list(ids))
            for row in con.execute(
                "SELECT d.label FROM documents AS d JOIN metadata_index AS m"  # noqa: S608
                " ON m.label = d.label AND m.key = 'user_id' AND m.type = 'str'"
                f" AND m.value = ? WHERE d.id IN ({_marks(part)})",
                (self._store._bind(user_id), *part),  # noqa: SLF001
            )
        ]

    def _owned(self, con: Connection, memory_id: str, user_id: str) -> Document:
        return self._owned_label(con, memory_id, user_id)[1]

    def _owned_label(
        self, con: Connection, memory_id: str, user_id: str
    ) -> tuple[int, Document]:
        """The label and document of `user_id`'s memory, or `KeyError`."""
        labels = self._owned_labels(con, [memory_id], _check_id(user_id, "user_id"))
        if not labels:
            msg = f"User {user_id!r} has no memory {memory_id!r}."
            raise KeyError(msg)
        return labels[0], self._rows(labels)[0]

    def _use(
        self, con: Connection, labels: Sequence[int]
    ) -> dict[int, tuple[float, int]]:
        use: dict[int, tuple[float, int]] = {}
        for part in _chunks(list(labels)):
            for label, last_used, count in con.execute(
                "SELECT label, last_used, use_count FROM memory_use"  # noqa: S608
                f" WHERE label IN ({_marks(part)})",
                part,
            ):
                use[label] = (last_used, count)
        return use

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts through the store's cache; one batched call for misses."""
        hashes, cached, missing = self._cache_lookup(texts)
        fresh = (
            self._embedding.embed_documents([texts[i] for i in missing])
            if missing
            else []
        )
        return self._cache_fill(texts, hashes, cached, missing, fresh)

    def _cache_lookup(
        self, texts: Sequence[str]
    ) -> tuple[builtins.list[bytes], dict[bytes, bytes], builtins.list[int]]:
        """Hashes of the texts, cached vectors, and positions not in the cache."""
        hashes = [hashlib.sha256(text.encode()).digest() for text in texts]
        cached: dict[bytes, bytes] = {}
        with self._db.read() as con:
            for part in _chunks([*dict.fromkeys(hashes)]):
                cached.update(
                    con.execute(
                        "SELECT text_hash, vector FROM embedding_cache WHERE model = ?"  # noqa: S608
                        f" AND text_hash IN ({_marks(part)})",
                        (self._model, *part),
                    ).fetchall()
                )
        missing = [i for i, digest in enumerate(hashes) if digest not in cached]
        return hashes, cached, missing

    def _cache_fill(
        self,
        texts: Sequence[str],
        hashes: Sequence[bytes],
        cached: dict[bytes, bytes],
        missing: Sequence[int],
        fresh: Sequence[Sequence[float]],
        *,
        con: Connection | None = None,
    ) -> np.ndarray:
        """Check and store the fresh vectors; return all vectors in order.

        They are stored in `con`'s transaction if given, else in their own.
        """
        self._cache_hits += len(texts) - len(missing)
        if missing:
            checked = self._store._check_vectors(  # noqa: SLF001
                fresh, len(missing), "embed_documents"
            )
            self._embedding_calls += 1
            self._embedded_texts += len(missing)
            rows = [
                (self._model, hashes[i], row.tobytes())
                for i, row in zip(missing, checked, strict=True)
            ]
            if con is not None:
                con.executemany(_CACHE_PUT, rows)
            else:
                with self._db.write() as own:
                    own.executemany(_CACHE_PUT, rows)
            for i, row in zip(missing, checked, strict=True):
                cached[hashes[i]] = row.tobytes()
        return np.stack(
            [np.frombuffer(cached[digest], dtype=np.float32) for digest in hashes]
        )


# ------------------------------------------------------------------ helpers


def _store_items_of(con: Connection, documents: Mapping[int, Document]) -> list[int]:
    """Labels of those documents that are the memories of LangGraph store items."""
    by_id = {doc.id: label for label, doc in documents.items()}
    return [
        by_id[row[0]]
        for part in _chunks([*by_id])
        for row in con.execute(
            f"SELECT memory_id FROM store_items WHERE memory_id IN ({_marks(part)})",  # noqa: S608
            part,
        )
    ]


def _update_store_item(
    con: Connection,
    memory_id: str,
    text: str,
    importance: float | None,
    at: float,
) -> None:
    """The LangGraph store item of an updated memory takes its text as `content`."""
    row = con.execute(
        "SELECT namespace, key, value FROM store_items WHERE memory_id = ?",
        (memory_id,),
    ).fetchone()
    if row is None:
        return
    value = json.loads(row[2])
    value["content"] = text
    if importance is not None:
        value["importance"] = importance
    con.execute(
        "UPDATE store_items SET value = ?, updated_at = ?"
        " WHERE namespace = ? AND key = ?",
        (json.dumps(value, ensure_ascii=False), at, row[0], row[1]),
    )


def _open_store(
    location: str | os.PathLike[str], embedding: Embeddings, options: dict[str, Any]
) -> tuple[PersistentFAISS | PostgresStore, type[_SQLiteText | PostgresText]]:
    """The store at a directory, or at a `postgresql://` URL, and its text tables."""
    if is_postgres_url(location):
        wrong = sorted(set(options) - _POSTGRES_OPTIONS)
        if wrong:
            msg = (
                f"{', '.join(wrong)}: not an option of a PostgreSQL store (they "
                "apply to a directory store). PostgreSQL takes "
                f"{', '.join(sorted(_POSTGRES_OPTIONS))}."
            )
            raise TypeError(msg)
        return PostgresStore(str(location), embedding, **options), PostgresText
    return PersistentFAISS(location, embedding, **options), _SQLiteText


def _embedding_for(
    location: str | os.PathLike[str], embedding: Embeddings | None
) -> Embeddings:
    """`embedding`, or the default for the store at `location` (`_defaults`)."""
    if embedding is not None:
        return embedding
    if isinstance(location, str) and is_postgres_url(location):
        return default_embeddings(location)
    return default_embeddings(Path(location))


def _epoch(value: object, name: str) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    msg = f"{name} must be epoch seconds or a datetime, got {value!r}."
    raise TypeError(msg)


def _approximate_tokens(text: str) -> int:
    return count_tokens_approximately([text], extra_tokens_per_message=0)


def _check_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        msg = f"{name} must be a non-empty str, got {value!r}."
        raise TypeError(msg)
    if len(value) > _MAX_ID:
        msg = f"{name} is {len(value)} characters long; the limit is {_MAX_ID}."
        raise ValueError(msg)
    return storable(value, name)


def _check_memory_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        msg = f"memory_id must be a non-empty str, got {value!r}."
        raise TypeError(msg)
    return storable(value, "memory_id")


def _scope(
    user_id: str, session_id: str | None, agent_id: str | None
) -> dict[str, str]:
    scope = {"user_id": _check_id(user_id, "user_id")}
    if session_id is not None:
        scope["session_id"] = _check_id(session_id, "session_id")
    if agent_id is not None:
        scope["agent_id"] = _check_id(agent_id, "agent_id")
    return scope


def _scope_token(user_id: str) -> str:
    """One FTS5 token per user, so `MATCH` itself keeps to one user's rows."""
    return "u" + hashlib.blake2b(user_id.encode(), digest_size=16).hexdigest()


def _content_hash(text: str) -> str:
    normalised = " ".join(text.split()).casefold()
    return hashlib.sha256(normalised.encode()).hexdigest()


def _check_importance(importance: object) -> float:
    if (
        isinstance(importance, bool)
        or not isinstance(importance, (int, float))
        or not 0 <= importance <= 1
    ):
        msg = f"importance must be a number in [0, 1], got {importance!r}."
        raise ValueError(msg)
    return float(importance)


def _check_user_metadata(metadata: object) -> None:
    if not isinstance(metadata, Mapping):
        msg = f"metadata must be a dict, got {type(metadata).__name__}."
        raise TypeError(msg)
    clash = sorted(RESERVED_KEYS & set(metadata))
    if clash:
        msg = (
            f"metadata keys {clash} are reserved for the memory's own fields; "
            "pass them as arguments (kind=, importance=, ...) or rename them."
        )
        raise ValueError(msg)
    _metadata_json(metadata, 0, "metadata")


def _attributes(
    kind: object,
    metadata: Mapping[str, Any] | None,
    importance: float | None,
    source_ids: Sequence[str] | None,
) -> dict[str, Any]:
    if not isinstance(kind, str) or not kind.strip():
        msg = f"kind must be a non-empty str such as 'fact', got {kind!r}."
        raise TypeError(msg)
    attrs: dict[str, Any] = {"kind": storable(kind, "kind")}
    if metadata is not None:
        _check_user_metadata(metadata)
        attrs.update(metadata)
    attrs["importance"] = 0.5 if importance is None else _check_importance(importance)
    if source_ids is not None:
        if isinstance(source_ids, str) or not all(
            isinstance(s, str) for s in source_ids
        ):
            msg = "source_ids must be a list of strings."
            raise TypeError(msg)
        attrs["source_ids"] = [
            storable(s, f"source_ids[{i}]") for i, s in enumerate(source_ids)
        ]
    return attrs


@dataclass
class _Item:
    """One memory to add, validated."""

    text: str
    scope: dict[str, str]
    attrs: dict[str, Any]
    context: str | None
    created_at: float | None
    supersedes: list[str] = field(default_factory=list)


def _items(
    content: object,
    *,
    user_id: str,
    kind: str | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    importance: float | None = None,
    source_ids: Sequence[str] | None = None,
    context: object = None,
    created_at: object = None,
) -> list[_Item]:
    scope = _scope(user_id, session_id, agent_id)
    texts, extra = _contents(content)
    if kind is None:
        kind = "fact" if isinstance(content, str) else "message"
    base = _attributes(kind, metadata, importance, source_ids)
    if context is not None:
        if not isinstance(context, str):
            msg = f"context must be a str, got {type(context).__name__}."
            raise TypeError(msg)
        storable(context, "context")
    if created_at is not None and (
        isinstance(created_at, bool)
        or not isinstance(created_at, (int, float))
        or not math.isfinite(created_at)
    ):
        msg = f"created_at must be epoch seconds (a number), got {created_at!r}."
        raise TypeError(msg)
    contexts = [context] * len(texts)
    if context is None and len(texts) > 1:
        contexts = [
            "\n".join(texts[max(0, i - 2) : i] + texts[i + 1 : i + 3])
            for i in range(len(texts))
        ]
    return [
        _Item(text, scope, {**base, **more}, around, created_at)
        for text, more, around in zip(texts, extra, contexts, strict=True)
    ]


def _progress_bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
    sys.stderr.flush()


def _contents(content: object) -> tuple[list[str], list[dict[str, Any]]]:
    if isinstance(content, str):
        if not content.strip():
            msg = "content is empty or whitespace; there is nothing to remember."
            raise ValueError(msg)
        return [storable(content, "content")], [{}]
    if isinstance(content, (bytes, bytearray)):
        msg = (
            f"content must be a string or a list of chat messages, got bytes "
            f"({type(content).__name__}); decode it first, e.g. content.decode()."
        )
        raise TypeError(msg)
    if not isinstance(content, Sequence):
        msg = (
            "content must be a string or a list of chat messages, "
            f"got {type(content).__name__}."
        )
        raise TypeError(msg)
    texts: list[str] = []
    extra: list[dict[str, Any]] = []
    for position, message in enumerate(content):
        if not isinstance(message, BaseMessage):
            got = type(message).__name__
            msg = f"content[{position}] must be a chat message, got {got}."
            raise TypeError(msg)
        text = message.text if isinstance(message.text, str) else str(message.text)
        if text.strip():
            texts.append(storable(text, f"content[{position}]"))
            extra.append({"role": message.type})
    return texts, extra


@dataclass
class _Put:
    """A memory to write: its id, text, metadata, vector and keyword context."""

    memory_id: str
    text: str
    meta: dict[str, Any]
    vector: np.ndarray
    context: str | None


@dataclass
class _SearchPlan:
    """A search's checked arguments."""

    query: str
    user_id: str
    k: int
    scope: dict[str, Any]
    token_budget: int | None
    diversity: float = 0.0


def _groups(items: Sequence[_Item]) -> list[list[_Item]]:
    """Items grouped by scope (user, session, agent), in order."""
    groups: dict[tuple[tuple[str, str], ...], list[_Item]] = {}
    for item in items:
        groups.setdefault(tuple(sorted(item.scope.items())), []).append(item)
    return list(groups.values())


def _known_query(turns: Sequence[str]) -> str:
    return "\n".join(turns)[-2000:]


def _fact_items(
    found: Sequence[tuple[list[_Item], list[Fact]]],
) -> tuple[list[_Item], list[str]]:
    facts: list[_Item] = []
    empty: list[str] = []
    for group, extracted in found:
        if not extracted:
            empty.extend(item.text for item in group)
        sources = sorted(
            {s for item in group for s in item.attrs.get("source_ids", [])}
        )
        for fact in extracted:
            attrs = {
                "kind": fact.kind.strip(),
                "importance": fact.importance,
                **({"source_ids": sources} if sources else {}),
            }
            facts.append(
                _Item(
                    fact.text.strip(),
                    group[0].scope,
                    attrs,
                    None,
                    group[-1].created_at,
                    fact.supersedes,
                )
            )
    return facts, empty


def _diversify(
    ranked: list[tuple[float, Document]],
    vectors: Mapping[str | None, np.ndarray],
    diversity: float,
    k: int,
) -> list[tuple[float, Document]]:
    """Greedy maximal marginal relevance over ranked memories (first k)."""
    top = ranked[0][0] or 1.0
    chosen: list[tuple[float, Document]] = []
    rest = list(ranked)

    def gain(pair: tuple[float, Document]) -> float:
        mine = vectors.get(pair[1].id)
        closest = 0.0
        if mine is not None:
            closest = max(
                (
                    float(mine @ vectors[doc.id])
                    for _, doc in chosen
                    if doc.id in vectors
                ),
                default=0.0,
            )
        return (1 - diversity) * pair[0] / top - diversity * closest

    while rest and len(chosen) < k:
        best = max(rest, key=gain)
        chosen.append(best)
        rest.remove(best)
    return chosen + rest


def _doomed(
    documents: Mapping[int, Document],
    use: Mapping[int, tuple[float, int]],
    now: float,
    half_life: float,
    *,
    reinforcement: float,
    older_than_days: float | None,
    max_per_user: int | None,
) -> dict[int, str]:
    """Labels to prune, with why: expired, or lowest value over the limit."""
    doomed: dict[int, str] = {}
    by_user: dict[str, list[tuple[float, int]]] = {}
    for label, doc in documents.items():
        last_used, uses = use.get(label, (0.0, 0))
        age = max(0.0, now - max(doc.metadata["updated_at"], last_used))
        if older_than_days is not None and age > older_than_days * 86400:
            doomed[label] = "expired"
            continue
        value = (
            doc.metadata.get("importance", 0.5)
            * 0.5 ** (age / half_life)
            * (1.0 + reinforcement * math.log1p(uses))
        )
        by_user.setdefault(doc.metadata["user_id"], []).append((value, label))
    if max_per_user is not None:
        for ranked in by_user.values():
            ranked.sort(reverse=True)
            for _, label in ranked[max_per_user:]:
                doomed[label] = "over the limit"
    return doomed


def _import_record(
    line: str, number: int
) -> tuple[str, str, str | None, dict[str, Any]]:
    where = f"line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        msg = f"{where} is not JSON ({exc})."
        raise ValueError(msg) from exc
    if not isinstance(record, dict):
        msg = f"{where} is not a memory record (a JSON object)."
        raise ValueError(msg)  # noqa: TRY004 - bad file content
    memory_id, text, context, meta = _import_fields(record, where)
    # Scores are a search's; chat_seq points into the exporting store's log.
    meta = {k: v for k, v in meta.items() if k not in ("score", "scores", "chat_seq")}
    for key in ("created_at", "updated_at"):
        if isinstance(meta.get(key), bool) or not isinstance(
            meta.get(key), (int, float)
        ):
            msg = f"{where}: metadata '{key}' must be epoch seconds."
            raise ValueError(msg)  # noqa: TRY004 - bad file content
    try:
        _check_id(meta.get("user_id"), "user_id")
        _attributes(
            meta.get("kind"),
            None,
            meta.get("importance", 0.5),
            meta.get("source_ids"),
        )
        _metadata_json(meta, 0)
    except (TypeError, ValueError) as exc:
        msg = f"{where}: {exc}"
        raise ValueError(msg) from exc
    meta.setdefault("importance", 0.5)
    meta["content_hash"] = _content_hash(text)
    return memory_id, text, context, meta


def _import_fields(
    record: dict[str, Any], where: str
) -> tuple[str, str, str | None, dict[str, Any]]:
    """The id, text, context and metadata of one exported record, checked."""
    memory_id, text = record.get("id"), record.get("text")
    meta, context = record.get("metadata"), record.get("context")
    if not isinstance(memory_id, str) or not memory_id:
        msg = f"{where}: 'id' must be a non-empty string."
        raise ValueError(msg)
    if not isinstance(text, str) or not text.strip():
        msg = f"{where}: 'text' must be a non-empty string."
        raise ValueError(msg)
    if context is not None and not isinstance(context, str):
        msg = f"{where}: 'context' must be a string or null."
        raise ValueError(msg)
    if not isinstance(meta, dict):
        msg = f"{where}: 'metadata' must be an object."
        raise ValueError(msg)  # noqa: TRY004 - bad file content
    for name, value in (("id", memory_id), ("text", text), ("context", context)):
        if value is not None:
            storable(value, f"{where}: {name!r}")
    return memory_id, text, context, meta


def _query_terms(query: str) -> list[str]:
    words = dict.fromkeys(
        word.casefold()
        for word in _WORD.findall(query)
        if word.casefold() not in _STOP_WORDS
    )
    return list(words)


def _average(
    dense: Sequence[tuple[int, float]],
    keyword: Sequence[tuple[int, float]],
    keyword_weight: float,
) -> dict[int, float]:
    """Weighted mean of min-max scaled scores; a side that missed counts 0."""
    sides = ((1.0 - keyword_weight, _scale(dense)), (keyword_weight, _scale(keyword)))
    labels = dict.fromkeys([lb for lb, _ in dense] + [lb for lb, _ in keyword])
    fused = {
        label: sum(weight * side.get(label, 0.0) for weight, side in sides)
        for label in labels
    }
    return dict(sorted(fused.items(), key=lambda pair: -pair[1]))


def _scale(scores: Sequence[tuple[int, float]]) -> dict[int, float]:
    if not scores:
        return {}
    values = [score for _, score in scores]
    low, high = min(values), max(values)
    span = high - low
    return {label: (score - low) / span if span > 0 else 1.0 for label, score in scores}


def _fuse(*rankings: Sequence[int]) -> dict[int, float]:
    """Reciprocal rank fusion, normalised so a first place in every list is 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, label in enumerate(ranking):
            scores[label] = scores.get(label, 0.0) + 1.0 / (_RRF_K + rank + 1)
    top = len(rankings) / (_RRF_K + 1)
    return dict(
        sorted(
            ((label, score / top) for label, score in scores.items()),
            key=lambda p: -p[1],
        )
    )
