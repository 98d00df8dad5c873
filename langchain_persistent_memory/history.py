"""`PersistentChatMessageHistory`: a durable chat log that feeds long-term memory.

Messages live in the `chat_messages` table of the memory's own `memory.db`,
keyed by `(user_id, session_id)`, as LangChain's `message_to_dict` JSON, so
they come back exactly as they went in. The log is also the outbox of
long-term memory: a message is committed with a `pending` mark first, then
offered to `PersistentMemory` (write gate, optional extraction, dedup), and
the mark is cleared in the transaction that stores the memory. A failed
embedding call leaves the mark, and the next write of the session retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    BaseMessage,
    message_to_dict,
    messages_from_dict,
    trim_messages,
)
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.runnables.config import run_in_executor
from typing_extensions import Self

from langchain_persistent_memory._db import storable
from langchain_persistent_memory.memory import PersistentMemory, _check_id, _items
from langchain_persistent_memory.vectorstores import _marks

if TYPE_CHECKING:
    import os

    from langchain_core.embeddings import Embeddings

    from langchain_persistent_memory._db import Connection
    from langchain_persistent_memory.memory import _Item

logger = logging.getLogger(__name__)

_RETRY_LIMIT = 256  # pending messages offered to memory per write
_CONTEXT = 2  # messages on each side kept as a memory's keyword context
_ATTEMPTS = 3  # failures of one message, while others succeed, before giving up


class _RacedError(Exception):
    """Another writer took (or deleted) pending rows first: roll back, re-read."""


def check_window_options(
    max_messages: object, max_tokens: object, remember: object
) -> None:
    """Check a history's window and `remember` options (shared with the wrapper)."""
    for name, value in (("max_messages", max_messages), ("max_tokens", max_tokens)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            msg = f"{name} must be an int >= 1 or None, got {value!r}."
            raise ValueError(msg)
    if (
        isinstance(remember, str)
        or not isinstance(remember, Sequence)
        or not all(isinstance(r, str) for r in remember)
    ):
        msg = "remember must be a list of message types, e.g. ['human', 'ai']."
        raise TypeError(msg)


class PersistentChatMessageHistory(BaseChatMessageHistory):
    """The chat log of one session of one user, in a `PersistentMemory` store.

    Args:
        memory: A `PersistentMemory`, or the directory or `postgresql://` URL
            of one (opened with `embedding` and `memory_options`, and closed
            by `close()`).
        session_id: The conversation (any non-empty string).
        user_id: Who owns it. Two users' sessions never mix, even when
            their session ids are the same.
        embedding: Only with a directory: the memory's embedding model.
        max_messages: `messages` returns at most this many of the newest
            messages (None: no limit).
        max_tokens: `messages` returns the newest messages whose text fits
            this many tokens (counted approximately; None: no limit).
        remember: The message types (`"human"`, `"ai"`, ...) also offered to
            long-term memory. Default: the user's own messages only; the
            assistant's answers stay in the log. `()` keeps the log only.
        **memory_options: Only with a directory: options of `PersistentMemory`.

    Both windows cut at a human message, so the history the model sees never
    starts with an answer or a tool result whose question was cut off.

    Example:
        ```python
        history = PersistentChatMessageHistory(memory, "s1", user_id="alice")
        history.add_messages([HumanMessage("I moved to Berlin.")])
        history.messages  # -> [HumanMessage("I moved to Berlin.")]
        memory.search("Where does the user live?", user_id="alice")
        ```
    """

    def __init__(
        self,
        memory: PersistentMemory | str | os.PathLike[str],
        session_id: str,
        *,
        user_id: str,
        embedding: Embeddings | None = None,
        max_messages: int | None = None,
        max_tokens: int | None = None,
        remember: Sequence[str] = ("human",),
        **memory_options: Any,
    ) -> None:
        """Open the session's history (nothing is written until a message is)."""
        self.session_id = _check_id(session_id, "session_id")
        self.user_id = _check_id(user_id, "user_id")
        check_window_options(max_messages, max_tokens, remember)
        self.max_messages = max_messages
        self.max_tokens = max_tokens
        self.remember = tuple(remember)
        if isinstance(memory, PersistentMemory):
            if embedding is not None or memory_options:
                msg = (
                    "embedding= and memory options apply only when the history "
                    "opens a store from a directory; this PersistentMemory is "
                    "already open with its own."
                )
                raise TypeError(msg)
            self.memory = memory
            self._owned = False
        elif isinstance(memory, (str, Path)) or hasattr(memory, "__fspath__"):
            self.memory = PersistentMemory(memory, embedding, **memory_options)
            self._owned = True
        else:
            msg = (
                "memory must be a PersistentMemory, a store directory or a "
                "postgresql:// URL, "
                f"got {type(memory).__name__}."
            )
            raise TypeError(msg)

    def close(self) -> None:
        """Close the store if this history opened it. Idempotent."""
        if self._owned:
            self.memory.close()

    def __enter__(self) -> Self:
        """Return the history itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store if this history opened it."""
        self.close()

    # ------------------------------------------------------------------ read

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages, oldest first, cut to the window if one is set."""
        return [message for _, message in self._window()]

    async def aget_messages(self) -> list[BaseMessage]:
        """Async `messages` (read in a worker thread)."""
        return await run_in_executor(None, lambda: self.messages)

    def sessions(self) -> list[dict[str, Any]]:
        """This user's sessions, most recently active first.

        Each is `{"session_id", "messages", "started_at", "updated_at"}`
        (times in epoch seconds).
        """
        with self.memory._db.read() as con:  # noqa: SLF001
            rows = con.execute(
                "SELECT session_id, count(*), min(created_at), max(created_at)"
                " FROM chat_messages WHERE user_id = ?"
                " GROUP BY session_id ORDER BY max(seq) DESC",
                (self.user_id,),
            ).fetchall()
        return [
            {
                "session_id": session,
                "messages": count,
                "started_at": started,
                "updated_at": updated,
            }
            for session, count, started, updated in rows
        ]

    async def asessions(self) -> list[dict[str, Any]]:
        """Async `sessions`."""
        return await run_in_executor(None, self.sessions)

    def _window(self) -> list[tuple[int, BaseMessage]]:
        """`(seq, message)` pairs of the window, oldest first."""
        pairs = self._newest()
        if not pairs or (self.max_messages is None and self.max_tokens is None):
            return pairs
        kept = [message for _, message in pairs]
        windows = (
            (self.max_messages, len),
            (self.max_tokens, count_tokens_approximately),
        )
        for limit, counter in windows:
            if limit is not None:
                kept = trim_messages(
                    kept,
                    max_tokens=limit,
                    token_counter=counter,
                    strategy="last",
                    start_on="human",
                )
        return pairs[len(pairs) - len(kept) :]

    def _parse(self, seq: int, data: str) -> BaseMessage:
        return self.memory._db.parse(  # noqa: SLF001
            data,
            f"chat message {seq} of session {self.session_id!r}",
            lambda value: messages_from_dict([value])[0],
        )

    def _newest(self) -> list[tuple[int, BaseMessage]]:
        """The session's `(seq, message)` pairs, oldest first.

        With a window, only the newest: read newest first until both limits
        are exceeded.
        """
        windowed = self.max_messages is not None or self.max_tokens is not None
        pairs: list[tuple[int, BaseMessage]] = []
        tokens = 0
        with self.memory._db.read() as con:  # noqa: SLF001
            for seq, data in con.execute(
                "SELECT seq, message FROM chat_messages"
                " WHERE user_id = ? AND session_id = ? ORDER BY seq DESC",
                (self.user_id, self.session_id),
            ):
                message = self._parse(seq, data)
                pairs.append((seq, message))
                if self.max_tokens is not None:
                    tokens += count_tokens_approximately([message])
                enough_messages = (
                    self.max_messages is None or len(pairs) > self.max_messages
                )
                enough_tokens = self.max_tokens is None or tokens > self.max_tokens
                if windowed and enough_messages and enough_tokens:
                    break
        pairs.reverse()
        return pairs

    # ----------------------------------------------------------------- write

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages to the log (one transaction), then remember them.

        The log is committed first. Messages of the `remember` types then go
        through the memory's write gate (and extraction, if configured) into
        long-term memory. If that step fails (say the embedding API is
        down) the failure is logged, the log keeps the messages marked
        pending, and the next write to this session retries them: the call
        itself succeeds once the log has them. A message that keeps failing
        while others succeed (too long for the model, say) is given up
        after three attempts, with an error logged; it stays in the log.

        Raises:
            TypeError: If an item is not a chat message or cannot be stored
                as JSON (nothing is written then).
        """
        rows = self._rows(messages)
        if rows:
            self._add_rows(rows)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async `add_messages` (in a worker thread: the event loop never waits)."""
        rows = self._rows(messages)
        if rows:
            await run_in_executor(None, self._add_rows, rows)

    def _add_rows(self, rows: Sequence[tuple[str, int]]) -> None:
        self._append(rows)
        try:
            self._remember()
        except Exception as error:  # noqa: BLE001 - logged; the log keeps them
            self._log_pending(error)

    def clear(self) -> None:
        """Delete this session's messages. Long-term memories made from them stay."""
        with self.memory._db.write() as con:  # noqa: SLF001
            con.execute(
                "DELETE FROM chat_messages WHERE user_id = ? AND session_id = ?",
                (self.user_id, self.session_id),
            )

    async def aclear(self) -> None:
        """Async `clear`."""
        await run_in_executor(None, self.clear)

    def _rows(self, messages: object) -> list[tuple[str, int]]:
        """`(JSON, pending)` per message, all checked before anything is written."""
        if isinstance(messages, BaseMessage) or not isinstance(messages, Sequence):
            msg = (
                "add_messages takes a list of chat messages, "
                f"got {type(messages).__name__}."
            )
            raise TypeError(msg)
        rows = []
        for position, message in enumerate(messages):
            if not isinstance(message, BaseMessage):
                got = type(message).__name__
                msg = f"messages[{position}] must be a chat message, got {got}."
                raise TypeError(msg)
            try:
                data = json.dumps(message_to_dict(message), ensure_ascii=False)
            except (TypeError, ValueError) as error:
                msg = (
                    f"messages[{position}] cannot be stored as JSON ({error}); "
                    "keep its content and metadata to JSON types."
                )
                raise TypeError(msg) from error
            storable(data, f"messages[{position}]")
            rows.append((data, int(message.type in self.remember)))
        return rows

    def _append(self, rows: Sequence[tuple[str, int]]) -> None:
        now = time.time()
        with self.memory._db.write() as con:  # noqa: SLF001
            con.executemany(
                "INSERT INTO chat_messages"
                " (user_id, session_id, message, created_at, pending)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (self.user_id, self.session_id, data, now, pending)
                    for data, pending in rows
                ],
            )

    def _log_pending(self, error: Exception) -> None:
        logger.warning(
            "Could not add messages of user %r, session %r to long-term memory "
            "(%s: %s). They are kept in the chat log and retried on the "
            "session's next write.",
            self.user_id,
            self.session_id,
            type(error).__name__,
            error,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )

    def _remember(self) -> None:
        """Offer the session's pending messages to long-term memory.

        One batch first. If it fails with more than one message, they are
        tried one at a time, newest first: if the newest fails too, the
        service is down and all stay pending; otherwise a message that fails
        while others succeed counts an attempt and is given up (logged as
        an error) after three, so one bad message cannot block the rest.
        """
        for _ in range(3):
            items, seqs = self._pending()
            if not seqs:
                return
            try:
                self._offer(items, seqs)
            except _RacedError:
                continue  # another writer took some of them: read again
            except Exception:
                if len(items) < 2:  # noqa: PLR2004 - nothing to tell apart
                    raise
                self._one_by_one(items, seqs)
            return

    def _offer(self, items: Sequence[_Item], seqs: list[int]) -> None:
        def mark(con: Connection) -> None:
            # Only rows still pending: a concurrent writer or `forget` may
            # have taken them since they were read; then nothing commits.
            cursor = con.execute(
                "UPDATE chat_messages SET pending = 0"  # noqa: S608
                f" WHERE pending = 1 AND seq IN ({_marks(seqs)})",
                seqs,
            )
            if cursor.rowcount != len(seqs):
                raise _RacedError

        self.memory._add_items(items, also=mark)  # noqa: SLF001

    def _one_by_one(self, items: Sequence[_Item], seqs: list[int]) -> None:
        with_text = {item.attrs["chat_seq"] for item in items}
        succeeded = False
        for item in reversed(items):
            seq = item.attrs["chat_seq"]
            try:
                self._offer([item], [seq])
                succeeded = True
            except _RacedError:
                continue
            except Exception as error:
                if not succeeded:
                    raise
                self._failed(seq, error)
        textless = [seq for seq in seqs if seq not in with_text]
        if textless:
            with contextlib.suppress(_RacedError):
                self._offer([], textless)

    def _failed(self, seq: int, error: Exception) -> None:
        with self.memory._db.write() as con:  # noqa: SLF001
            con.execute(
                "UPDATE chat_messages SET attempts = attempts + 1,"
                " pending = CASE WHEN attempts + 1 < ? THEN 1 ELSE 0 END"
                " WHERE seq = ? AND pending = 1",
                (_ATTEMPTS, seq),
            )
            row = con.execute(
                "SELECT pending, attempts FROM chat_messages WHERE seq = ?", (seq,)
            ).fetchone()
        if row is not None and not row[0]:
            logger.error(
                "Gave up adding message %d of user %r, session %r to long-term "
                "memory after %d failed attempts (%s: %s); it stays in the chat log.",
                seq,
                self.user_id,
                self.session_id,
                row[1],
                type(error).__name__,
                error,
            )

    def _pending(self) -> tuple[list[_Item], list[int]]:
        """Memory items for the session's pending messages, and their seqs.

        Each item's keyword context is the messages next to it (two on
        each side); its `chat_seq` ties it to its row of the log.
        """
        scope = "FROM chat_messages WHERE user_id = ? AND session_id = ? AND"
        key = (self.user_id, self.session_id)
        with self.memory._db.read() as con:  # noqa: SLF001

            def select(where: str, *params: object) -> list[tuple[int, str, float]]:
                return con.execute(
                    f"SELECT seq, message, created_at {scope} {where}",
                    (*key, *params),
                ).fetchall()

            pending = con.execute(
                f"SELECT seq {scope} pending = 1 ORDER BY seq LIMIT ?",
                (*key, _RETRY_LIMIT),
            ).fetchall()
            if not pending:
                return [], []
            first, last = pending[0][0], pending[-1][0]
            before = select("seq < ? ORDER BY seq DESC LIMIT ?", first, _CONTEXT)
            rest = select("seq BETWEEN ? AND ? ORDER BY seq", first, last)
            rest += select("seq > ? ORDER BY seq LIMIT ?", last, _CONTEXT)
        wanted = {row[0] for row in pending}
        rows = [*reversed(before), *rest]
        messages = [self._parse(seq, data) for seq, data, _ in rows]
        texts = [_text(message) for message in messages]
        items: list[_Item] = []
        for position, (seq, _, created_at) in enumerate(rows):
            message, text = messages[position], texts[position]
            if seq not in wanted or not text.strip():
                continue
            around = [
                t
                for t in texts[max(0, position - _CONTEXT) : position]
                + texts[position + 1 : position + 1 + _CONTEXT]
                if t.strip()
            ]
            item = _items(
                text,
                user_id=self.user_id,
                session_id=self.session_id,
                kind="message",
                metadata={"role": message.type},
                source_ids=[message.id] if message.id else None,
                context="\n".join(around),
                created_at=created_at,
            )[0]
            item.attrs["chat_seq"] = seq
            items.append(item)
        return items, sorted(wanted)


def _text(message: BaseMessage) -> str:
    text = message.text
    return text if isinstance(text, str) else str(text)
