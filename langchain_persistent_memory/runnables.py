"""`with_persistent_memory`: long-term memory around any chat model or chain.

Per call: read `user_id` and `session_id` from `config["configurable"]`,
retrieve the user's memories relevant to the current message, fill a prompt
whose system block carries them ahead of the recent history and the current
message, call the model, then write the turn to the session's chat log and
long-term memory (`PersistentChatMessageHistory`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    SystemMessage,
    get_buffer_string,
    message_chunk_to_message,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import patch_config
from typing_extensions import override

from langchain_persistent_memory._defaults import default_chat_model
from langchain_persistent_memory.errors import PersistentMemoryError
from langchain_persistent_memory.history import (
    PersistentChatMessageHistory,
    _text,
    check_window_options,
)
from langchain_persistent_memory.memory import PersistentMemory, _check_id
from langchain_persistent_memory.retrievers import PersistentMemoryRetriever

if TYPE_CHECKING:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForChainRun,
        CallbackManagerForChainRun,
    )
    from langchain_core.documents import Document
    from langchain_core.prompts import BasePromptTemplate

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM = "You are a helpful assistant."
_NO_MEMORIES = "(nothing relevant remembered)"
_EXCLUDE_LIMIT = 1000  # window messages whose memories are left out, newest


def format_memories(docs: Sequence[Document], *, empty: str = _NO_MEMORIES) -> str:
    """Memories as a bulleted list for a prompt (`empty` when there are none).

    Example:
        ```python
        format_memories(memory.search("How should I answer?", user_id="alice"))
        # '- User prefers short technical explanations.'
        ```
    """
    lines = [f"- {' '.join(doc.page_content.split())}" for doc in docs]
    return "\n".join(lines) if lines else empty


def create_memory_prompt(system: str = DEFAULT_SYSTEM) -> ChatPromptTemplate:
    """The prompt `with_persistent_memory` uses unless given another.

    A system message (`system`, then the memories), the recent history,
    then the current message:

        [system: {system} + "Relevant past information ..." + {memories}]
        [history...]
        [human: {input}]

    `system` is template text: write `{{` and `}}` for literal braces, or
    use variables that you pass in the input dict.
    """
    _require(system, str, "system", "a str")
    return ChatPromptTemplate.from_messages(
        [
            (
                "system",
                system + "\n\nRelevant past information about the user, "
                "from earlier conversations:\n{memories}",
            ),
            MessagesPlaceholder("history", optional=True),
            MessagesPlaceholder("input"),
        ]
    )


class RunnableWithPersistentMemory(Runnable[Any, Any]):
    """A runnable that retrieves, injects and writes long-term memory per call.

    Made by `with_persistent_memory`; see there for the options. Beyond the
    `Runnable` interface (`invoke`, `ainvoke`, `stream`, `astream`,
    `batch`, ...) it has `flush()` / `aflush()`, which wait for deferred
    writes and raise if any failed.
    """

    def __init__(
        self,
        runnable: Runnable[Any, Any],
        memory: PersistentMemory,
        *,
        prompt: BasePromptTemplate[Any] | None,
        k: int,
        token_budget: int | None,
        kinds: Sequence[str] | None,
        max_history_messages: int | None,
        max_history_tokens: int | None,
        remember: Sequence[str],
        input_key: str,
        output_key: str | None,
        background: bool,
    ) -> None:
        """Check the options; see `with_persistent_memory`."""
        _require(memory, PersistentMemory, "memory", "a PersistentMemory")
        _require(runnable, Runnable, "runnable", "a LangChain chat model or runnable")
        self.memory = memory
        self.runnable = runnable
        self.prompt = create_memory_prompt() if prompt is None else prompt
        self._variables, self._placeholders = _check_prompt(self.prompt)
        self._retriever = PersistentMemoryRetriever(
            memory=memory,
            k=k,
            kinds=list(kinds) if kinds else None,
            token_budget=token_budget,
        )
        # The history's own checks run now, not on the first call.
        check_window_options(max_history_messages, max_history_tokens, remember)
        self._history_options: dict[str, Any] = {
            "max_messages": max_history_messages,
            "max_tokens": max_history_tokens,
            "remember": tuple(remember),
        }
        self.input_key = input_key
        self.output_key = output_key
        self.background = background
        self._chain = self.prompt | runnable
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._futures: set[concurrent.futures.Future[None]] = set()
        self._errors: list[BaseException] = []

    # ------------------------------------------------------------ interface

    @override
    def invoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """Answer one message with the user's memories in the prompt."""
        return self._call_with_config(
            self._invoke, input, ensure_config(config), **kwargs
        )

    @override
    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """Async `invoke`."""
        return await self._acall_with_config(
            self._ainvoke, input, ensure_config(config), **kwargs
        )

    @override
    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Stream the answer; the turn is written once the stream completes."""
        yield from self._transform_stream_with_config(
            iter([input]), self._transform, ensure_config(config), **kwargs
        )

    @override
    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async `stream`."""

        async def one() -> AsyncIterator[Any]:
            yield input

        async for chunk in self._atransform_stream_with_config(
            one(), self._atransform, ensure_config(config), **kwargs
        ):
            yield chunk

    def flush(self, timeout: float | None = None) -> None:
        """Wait for deferred writes; raise if any write since the last flush failed.

        Raises:
            TimeoutError: If writes are still running after `timeout` seconds.
            PersistentMemoryError: If a write failed (the first error is
                its cause; every failure was also logged when it happened).
        """
        with self._lock:
            futures = list(self._futures)
        _, running = concurrent.futures.wait(futures, timeout=timeout)
        if running:
            msg = f"{len(running)} memory writes still running after {timeout} s."
            raise TimeoutError(msg)
        self._raise_errors()

    async def aflush(self) -> None:
        """Async `flush` (does not block the event loop)."""
        with self._lock:
            futures = list(self._futures)
        await asyncio.gather(
            *(asyncio.wrap_future(f) for f in futures), return_exceptions=True
        )
        self._raise_errors()

    def _preview(self, value: Any, config: RunnableConfig) -> list[BaseMessage]:
        """The messages a call would send to the model; nothing is written.

        For `lpm chat --dry-run`: the same window, retrieval and prompt as a
        call, without calling the model or writing the turn.
        """
        config = ensure_config(config)
        history, current, extra = self._start(value, config)
        window = history._window()  # noqa: SLF001 - same package
        query = _text(current)
        options = self._retriever._options(self._search_args(history, window))  # noqa: SLF001
        docs = (
            self.memory._search(query, record_use=False, **options)  # noqa: SLF001
            if query.strip()
            else []
        )
        prompt = self.prompt.invoke(self._values(current, extra, window, docs))
        return prompt.to_messages()

    # -------------------------------------------------------------- the call

    def _invoke(
        self,
        value: Any,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        history, current, values, child = self._prepare(value, run_manager, config)
        output = self._chain.invoke(values, child, **kwargs)
        self._finish(history, current, output)
        return output

    async def _ainvoke(
        self,
        value: Any,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        history, current, values, child = await self._aprepare(
            value, run_manager, config
        )
        output = await self._chain.ainvoke(values, child, **kwargs)
        await self._afinish(history, current, output)
        return output

    def _transform(
        self,
        inputs: Iterator[Any],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Any]:
        for value in inputs:
            history, current, values, child = self._prepare(value, run_manager, config)
            whole = _Accumulator()
            for chunk in self._chain.stream(values, child, **kwargs):
                whole.add(chunk)
                yield chunk
            self._finish(history, current, whole.value)

    async def _atransform(
        self,
        inputs: AsyncIterator[Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        async for value in inputs:
            history, current, values, child = await self._aprepare(
                value, run_manager, config
            )
            whole = _Accumulator()
            async for chunk in self._chain.astream(values, child, **kwargs):
                whole.add(chunk)
                yield chunk
            await self._afinish(history, current, whole.value)

    def _start(
        self, value: Any, config: RunnableConfig
    ) -> tuple[PersistentChatMessageHistory, BaseMessage, dict[str, Any]]:
        configurable = config.get("configurable", {})
        ids = {}
        for name in ("user_id", "session_id"):
            if configurable.get(name) is None:
                msg = (
                    f"with_persistent_memory needs a {name}: call with "
                    "config={'configurable': {'user_id': ..., 'session_id': ...}}."
                )
                raise ValueError(msg)
            ids[name] = _check_id(configurable[name], name)
        history = PersistentChatMessageHistory(
            self.memory,
            ids["session_id"],
            user_id=ids["user_id"],
            **self._history_options,
        )
        current, extra = self._split(value)
        return history, current, extra

    def _prepare(
        self,
        value: Any,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> tuple[
        PersistentChatMessageHistory, BaseMessage, dict[str, Any], RunnableConfig
    ]:
        history, current, extra = self._start(value, config)
        child = patch_config(config, callbacks=run_manager.get_child())
        window = history._window()  # noqa: SLF001 - same package
        docs = self._retrieve(history, current, window, child)
        return history, current, self._values(current, extra, window, docs), child

    async def _aprepare(
        self,
        value: Any,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> tuple[
        PersistentChatMessageHistory, BaseMessage, dict[str, Any], RunnableConfig
    ]:
        history, current, extra = self._start(value, config)
        child = patch_config(config, callbacks=run_manager.get_child())
        window = await asyncio.get_running_loop().run_in_executor(
            None,
            history._window,  # noqa: SLF001 - same package
        )
        docs = await self._aretrieve(history, current, window, child)
        return history, current, self._values(current, extra, window, docs), child

    def _search_args(
        self,
        history: PersistentChatMessageHistory,
        window: list[tuple[int, BaseMessage]],
    ) -> dict[str, Any]:
        # Memories made from messages already in the window would say the
        # same thing twice: leave them out.
        args: dict[str, Any] = {"user_id": history.user_id}
        if window:
            newest = [seq for seq, _ in window][-_EXCLUDE_LIMIT:]
            args["filter"] = {"chat_seq": {"$nin": newest}}
        return args

    def _retrieve(
        self,
        history: PersistentChatMessageHistory,
        current: BaseMessage,
        window: list[tuple[int, BaseMessage]],
        config: RunnableConfig,
    ) -> list[Document]:
        query = _text(current)
        if not query.strip():
            return []
        return self._retriever.invoke(
            query, config, **self._search_args(history, window)
        )

    async def _aretrieve(
        self,
        history: PersistentChatMessageHistory,
        current: BaseMessage,
        window: list[tuple[int, BaseMessage]],
        config: RunnableConfig,
    ) -> list[Document]:
        query = _text(current)
        if not query.strip():
            return []
        return await self._retriever.ainvoke(
            query, config, **self._search_args(history, window)
        )

    def _split(self, value: Any) -> tuple[BaseMessage, dict[str, Any]]:
        """The current message, and the other prompt variables of a dict input."""
        extra: dict[str, Any] = {}
        if isinstance(value, Mapping):
            given = value
            if self.input_key not in given:
                msg = (
                    f"The input dict has no {self.input_key!r} key (the current "
                    f"message); it has {sorted(given)}. Pass the message under "
                    f"{self.input_key!r} or set input_key=."
                )
                raise ValueError(msg)
            value = given[self.input_key]
            extra = {k: v for k, v in given.items() if k != self.input_key}
            clash = sorted({"memories", "history"} & set(extra))
            if clash:
                msg = (
                    f"The input dict may not set {clash}: they are filled from memory."
                )
                raise ValueError(msg)
        if isinstance(value, str):
            if not value.strip():
                msg = "The current message is empty."
                raise ValueError(msg)
            return HumanMessage(value), extra
        if isinstance(value, BaseMessage):
            return value, extra
        msg = (
            "The input must be a str, a chat message, or a dict with the message "
            f"under {self.input_key!r}; got {type(value).__name__}."
        )
        raise TypeError(msg)

    def _values(
        self,
        current: BaseMessage,
        extra: dict[str, Any],
        window: list[tuple[int, BaseMessage]],
        docs: list[Document],
    ) -> dict[str, Any]:
        recent = [message for _, message in window]
        memories = format_memories(docs)
        values = {
            **extra,
            "memories": [SystemMessage(memories)]
            if "memories" in self._placeholders
            else memories,
            "history": recent
            if "history" in self._placeholders
            else get_buffer_string(recent),
            "input": [current] if "input" in self._placeholders else _text(current),
        }
        return {
            key: value
            for key, value in values.items()
            if key in self._variables or key in extra
        }

    # ------------------------------------------------------------ the write

    def _turn(self, current: BaseMessage, output: Any) -> list[BaseMessage]:
        answer = output
        if self.output_key is not None and isinstance(output, Mapping):
            answer = output.get(self.output_key)
        if isinstance(answer, BaseMessageChunk):
            answer = message_chunk_to_message(answer)
        if isinstance(answer, str):
            answer = AIMessage(answer)
        if not isinstance(answer, BaseMessage):
            self._record(
                TypeError(
                    f"Cannot store an answer of type {type(answer).__name__}: the "
                    "runnable must return a message or a str (or a dict with "
                    "output_key= naming one). Only the user's message was stored."
                )
            )
            return [current]
        return [current, answer]

    def _finish(
        self, history: PersistentChatMessageHistory, current: BaseMessage, output: Any
    ) -> None:
        turn = self._turn(current, output)
        if self.background:
            self._submit(history, turn)
        else:
            self._write(history, turn)

    async def _afinish(
        self, history: PersistentChatMessageHistory, current: BaseMessage, output: Any
    ) -> None:
        turn = self._turn(current, output)
        if self.background:
            self._submit(history, turn)
            return
        try:
            await history.aadd_messages(turn)
        except Exception as error:  # noqa: BLE001 - the answer must still return
            self._record(error)

    def _write(
        self, history: PersistentChatMessageHistory, turn: list[BaseMessage]
    ) -> None:
        try:
            history.add_messages(turn)
        except Exception as error:  # noqa: BLE001 - the answer must still return
            self._record(error)

    def _submit(
        self, history: PersistentChatMessageHistory, turn: list[BaseMessage]
    ) -> None:
        with self._lock:
            if self._executor is None:
                # One worker: a session's turns are written in order.
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="persistent-memory-write"
                )
            future = self._executor.submit(self._write, history, turn)
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _record(self, error: BaseException) -> None:
        logger.error(
            "Writing a turn to persistent memory failed: %s: %s",
            type(error).__name__,
            error,
            exc_info=error,
        )
        with self._lock:
            self._errors.append(error)

    def _raise_errors(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            msg = (
                f"{len(errors)} memory write(s) failed; the first: "
                f"{type(errors[0]).__name__}: {errors[0]}"
            )
            raise PersistentMemoryError(msg) from errors[0]


def with_persistent_memory(
    runnable: Runnable[Any, Any] | None,
    memory: PersistentMemory,
    *,
    prompt: BasePromptTemplate[Any] | None = None,
    k: int = 5,
    token_budget: int | None = 1000,
    kinds: Sequence[str] | None = None,
    max_history_messages: int | None = 20,
    max_history_tokens: int | None = None,
    remember: Sequence[str] = ("human",),
    input_key: str = "input",
    output_key: str | None = None,
    background: bool = False,
) -> RunnableWithPersistentMemory:
    """Give a chat model or chain long-term memory.

    Each call reads `user_id` and `session_id` from
    `config["configurable"]`, retrieves the user's memories relevant to the
    current message, fills `prompt` (memories in the system block, ahead of
    the session's recent history and the current message), calls
    `runnable`, then writes the user's message and the answer to the
    session's chat log; the user's message also goes to long-term memory
    (write gate, optional extraction, dedup).

    Args:
        runnable: What answers: a chat model, or a chain that takes the
            filled prompt. None: `ChatOpenAI(model="gpt-4o-mini")` (needs
            `OPENAI_API_KEY`).
        memory: The `PersistentMemory` to read and write.
        prompt: A chat prompt with a `memories` variable (a `{memories}`
            string or a `MessagesPlaceholder`) and an `input` variable for
            the current message; `history` is optional. Each is filled as
            messages where the template has a placeholder, else as text.
            Default: `create_memory_prompt()`.
        k: How many memories to inject at most.
        token_budget: Stop adding memories when their texts would exceed
            this many tokens (None: no limit).
        kinds: Only these kinds of memory (default: all).
        max_history_messages: How many recent messages of the session go
            into the prompt (None: all).
        max_history_tokens: Cap the recent history by tokens as well.
        remember: Message types that go to long-term memory (the chat log
            keeps every message). Default `("human",)`: the user's words;
            add `"ai"` to remember the answers too.
        input_key: For dict inputs, the key of the current message; the
            other keys are passed to the prompt.
        output_key: For chains that return a dict, the key of the answer.
        background: Write after returning, in a background thread; call
            `flush()` / `aflush()` to wait. Failed writes are logged and
            raised by the next flush; they never lose the answer.

    Returns:
        A `Runnable` (`invoke`, `ainvoke`, `stream`, `astream`, `batch`,
        ...) with `flush()` / `aflush()`.

    Example:
        ```python
        memory = PersistentMemory("./memory", LocalEmbeddings())
        chat = with_persistent_memory(ChatOpenAI(model="gpt-4o-mini"), memory)
        chat.invoke(
            "Keep it short, I'm building a SaaS AI tool.",
            config={"configurable": {"user_id": "alice", "session_id": "s1"}},
        )
        ```
    """
    return RunnableWithPersistentMemory(
        default_chat_model() if runnable is None else runnable,
        memory,
        prompt=prompt,
        k=k,
        token_budget=token_budget,
        kinds=kinds,
        max_history_messages=max_history_messages,
        max_history_tokens=max_history_tokens,
        remember=remember,
        input_key=input_key,
        output_key=output_key,
        background=background,
    )


class _Accumulator:
    """Adds stream chunks up to the whole answer, as LangChain does."""

    def __init__(self) -> None:
        self.value: Any = None
        self._empty = True

    def add(self, chunk: Any) -> None:
        if self._empty:
            self.value, self._empty = chunk, False
            return
        try:
            self.value = self.value + chunk
        except TypeError:
            self.value = chunk


def _check_prompt(prompt: BasePromptTemplate[Any]) -> tuple[set[str], set[str]]:
    """Check the prompt; return its variables, and those that are placeholders."""
    if not isinstance(prompt, ChatPromptTemplate):
        msg = (
            "prompt must be a ChatPromptTemplate (see create_memory_prompt()), "
            f"got {type(prompt).__name__}."
        )
        raise TypeError(msg)
    variables = {*prompt.input_variables, *prompt.optional_variables}
    missing = [name for name in ("memories", "input") if name not in variables]
    if missing:
        msg = (
            f"The prompt has no {' or '.join(missing)} variable. It needs "
            "{memories} (or MessagesPlaceholder('memories')) for the memories and "
            "{input} (or MessagesPlaceholder('input')) for the current message; "
            "create_memory_prompt() makes one."
        )
        raise ValueError(msg)
    return variables, {
        message.variable_name
        for message in prompt.messages
        if isinstance(message, MessagesPlaceholder)
    }


def _require(value: object, cls: type, name: str, what: str) -> None:
    if not isinstance(value, cls):
        msg = f"{name} must be {what}, got {type(value).__name__}."
        raise TypeError(msg)
