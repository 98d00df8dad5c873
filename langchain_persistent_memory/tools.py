"""`create_memory_tools`: LangChain tools that let an agent save and search memory.

The model chooses *what* to save or look up; the application alone chooses
*whose* memory it is. The user comes from the run's
`config={"configurable": {"user_id": ...}}`, the same key that
`with_persistent_memory` and `PersistentMemoryRetriever` read. The tools'
argument schemas have no user field and reject unknown arguments, so a
model cannot name another user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

# Imported at run time: langchain-core resolves the tool functions' type hints
# to find the `RunnableConfig` parameter it injects, and finds none if any
# hint (the return type too) cannot be resolved.
from langchain_core.documents import Document  # noqa: TC002
from langchain_core.runnables import RunnableConfig  # noqa: TC002
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from langchain_persistent_memory._db import storable
from langchain_persistent_memory.memory import AddResult, PersistentMemory, _check_id

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["DEFAULT_SAVE_KINDS", "create_memory_tools"]

DEFAULT_SAVE_KINDS: tuple[str, ...] = ("fact", "preference", "decision", "event")
"""The kinds the save tool offers when `create_memory_tools(kinds=None)`."""

_SAVE_DESCRIPTION = (
    "Save one thing worth remembering about the user to long-term memory, so "
    "that it can be recalled in later conversations. Use it for lasting facts, "
    "preferences, decisions and events the user shares: one memory per call, "
    "written as a short sentence that stands on its own (e.g. 'User prefers "
    "short technical explanations.'). Greetings, thanks and other small talk "
    "are not saved, and something already remembered is not saved twice. "
    "Memories are saved for the current user, whom the application sets: "
    "there is no user argument."
)
_SEARCH_DESCRIPTION = (
    "Search the current user's long-term memory and return the memories most "
    "relevant to a query, best first, each with its id and kind. Use it when "
    "earlier conversations may matter for the answer: the user's preferences, "
    "facts about them, past decisions and events. Only the current user's "
    "memories are searched; the application sets the user: there is no user "
    "argument."
)


class _Arguments(BaseModel):
    """Base of the tools' argument schemas: unknown arguments are errors."""

    model_config = ConfigDict(extra="forbid")


def _text(value: str, name: str) -> str:
    if not value.strip():
        msg = f"{name} must contain some text, not only whitespace."
        raise ValueError(msg)
    return storable(value, name)


class _SaveArguments(_Arguments):
    @field_validator("content", check_fields=False)
    @classmethod
    def _content(cls, value: str) -> str:
        return _text(value, "content")


class _SearchArguments(_Arguments):
    @field_validator("query", check_fields=False)
    @classmethod
    def _query(cls, value: str) -> str:
        return _text(value, "query")


def create_memory_tools(
    memory: PersistentMemory,
    *,
    k: int = 5,
    kinds: Sequence[str] | None = None,
    max_k: int = 20,
    token_budget: int | None = None,
) -> list[BaseTool]:
    """Create the two memory tools for an agent: `save_memory` and `search_memory`.

    `save_memory(content, kind="fact", importance=None)` stores one memory
    through `memory.add` (write gate, deduplication and extraction as
    configured on the memory) and answers with what was stored, or why
    nothing was: small talk skipped by the write gate, or a duplicate that
    refreshed an existing memory. `search_memory(query, k=None)` answers
    with the matching memories as text, one per line with its kind and id,
    and returns the `Document`s as the tool message's artifact.

    Both tools read the user from the run's
    `config["configurable"]["user_id"]`, or, in a LangGraph run, from its
    runtime context (`agent.invoke(..., context=Context(user_id=...))` with
    `create_agent(..., context_schema=Context)`; a dataclass, a pydantic
    model or a dict); a run without one, or with two different ones, raises
    `ValueError`. `save_memory` also records the `session_id` when there is
    one. Their argument schemas have no user field and
    reject unknown arguments, so the model cannot choose the user. `invoke`
    uses `memory.add` / `memory.search`, `ainvoke` uses `memory.aadd` /
    `memory.asearch`.

    Example:
        ```python
        from langchain.agents import create_agent

        agent = create_agent(model, tools=create_memory_tools(memory))
        agent.invoke(
            {"messages": [("human", "Remember that I prefer tea.")]},
            config={"configurable": {"user_id": "alice"}},
        )
        ```

    Args:
        memory: The memory the tools read and write.
        k: How many memories a search returns when the model does not say.
        kinds: The kinds of memory the tools work with. Given, the save
            tool's `kind` must be one of them (the first is its default)
            and searches return only memories of these kinds. None: the
            save tool offers `fact` (default), `preference`, `decision` and
            `event`, and searches cover every kind, including the messages
            that `with_persistent_memory` remembers.
        max_k: The most memories the model may ask one search for.
        token_budget: If set, a search stops adding memories when their
            texts would exceed this many tokens.

    Returns:
        `[save_memory, search_memory]`, both `StructuredTool`s with
        `response_format="content_and_artifact"`.

    Raises:
        TypeError: If `memory` is not a `PersistentMemory` or `kinds` is
            not a list of strings.
        ValueError: If `k`, `max_k` or `token_budget` is out of range, or
            `kinds` is empty or repeats a kind.
    """
    if not isinstance(cast("object", memory), PersistentMemory):
        msg = f"memory must be a PersistentMemory, got {type(memory).__name__}."
        raise TypeError(msg)
    for name, value in (("k", k), ("max_k", max_k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            msg = f"{name} must be an int >= 1, got {value!r}."
            raise ValueError(msg)
    if k > max_k:
        msg = f"k ({k}) must not exceed max_k ({max_k})."
        raise ValueError(msg)
    if token_budget is not None and (
        not isinstance(token_budget, int)
        or isinstance(token_budget, bool)
        or token_budget < 0
    ):
        msg = f"token_budget must be an int >= 0 or None, got {token_budget!r}."
        raise ValueError(msg)
    save_kinds = DEFAULT_SAVE_KINDS if kinds is None else _check_kinds(kinds)
    search_kinds = None if kinds is None else list(save_kinds)
    return [
        _save_tool(memory, save_kinds),
        _search_tool(memory, k, max_k, search_kinds, token_budget),
    ]


def _check_kinds(kinds: object) -> tuple[str, ...]:
    if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)):
        msg = f"kinds must be a list of strings such as ['fact'], got {kinds!r}."
        raise TypeError(msg)
    if not kinds:
        msg = "kinds must name at least one kind, or be None for the defaults."
        raise ValueError(msg)
    for kind in kinds:
        if not isinstance(kind, str) or not kind.strip():
            msg = f"each kind must be a non-empty str, got {kind!r}."
            raise TypeError(msg)
    if len(set(kinds)) != len(kinds):
        msg = f"kinds repeats a kind: {list(kinds)!r}."
        raise ValueError(msg)
    return tuple(kinds)


def _runtime_context() -> dict[str, Any]:
    """`user_id` and `session_id` of a LangGraph run's context, if any."""
    try:
        from langgraph.runtime import get_runtime  # noqa: PLC0415 - optional

        context: object = get_runtime().context
    except (ImportError, RuntimeError, KeyError, AttributeError):
        return {}  # no LangGraph, or not inside a graph run
    names = ("user_id", "session_id")
    if isinstance(context, dict):
        return {name: context[name] for name in names if context.get(name) is not None}
    return {
        name: getattr(context, name)
        for name in names
        if getattr(context, name, None) is not None
    }


def _scope(config: RunnableConfig, tool: str) -> tuple[str, str | None]:
    """The run's user (required) and session (optional): config or context."""
    configurable = config.get("configurable") or {}
    context = _runtime_context()
    for name in ("user_id", "session_id"):
        given = configurable.get(name)
        if given is not None and name in context and context[name] != given:
            msg = (
                f"The run names two {name}s: {given!r} in its config and "
                f"{context[name]!r} in its context; give one."
            )
            raise ValueError(msg)
    user_id = configurable.get("user_id", context.get("user_id"))
    if user_id is None:
        msg = (
            f"The {tool} tool needs the user's id in the run's config, and "
            "none was given. Invoke the agent or tool with "
            "config={'configurable': {'user_id': ...}}, e.g. "
            "agent.invoke(inputs, config={'configurable': {'user_id': 'alice'}}), "
            "or with context=... holding a user_id in a LangGraph agent. "
            "The memory tools never take the user from the model's arguments."
        )
        raise ValueError(msg)
    session_id = configurable.get("session_id", context.get("session_id"))
    return (
        _check_id(user_id, "user_id"),
        None if session_id is None else _check_id(session_id, "session_id"),
    )


# ------------------------------------------------------------------- save


def _save_tool(memory: PersistentMemory, kinds: tuple[str, ...]) -> StructuredTool:
    kind_type: Any = cast("Any", Literal)[kinds]
    schema = create_model(
        "SaveMemoryInput",
        __base__=_SaveArguments,
        __doc__="Arguments of save_memory.",
        content=(
            str,
            Field(
                description=(
                    "What to remember, as a short sentence that makes sense on "
                    "its own later, e.g. 'User is vegetarian.'"
                ),
            ),
        ),
        kind=(
            kind_type,
            Field(
                default=kinds[0],
                description=_kind_description(kinds),
            ),
        ),
        importance=(
            float | None,
            Field(
                default=None,
                ge=0.0,
                le=1.0,
                description=(
                    "How much it matters later, from 0 to 1 (0.5 when omitted); "
                    "higher for what the user asked to be remembered."
                ),
            ),
        ),
    )

    def save_memory(
        content: str,
        kind: str = kinds[0],
        importance: float | None = None,
        *,
        config: RunnableConfig,
    ) -> tuple[str, dict[str, Any]]:
        user_id, session_id = _scope(config, "save_memory")
        result = memory.add(
            content,
            user_id=user_id,
            kind=kind,
            session_id=session_id,
            importance=importance,
        )
        stored = [memory.get(memory_id, user_id=user_id) for memory_id in result.ids]
        return _save_report(result, stored)

    async def asave_memory(
        content: str,
        kind: str = kinds[0],
        importance: float | None = None,
        *,
        config: RunnableConfig,
    ) -> tuple[str, dict[str, Any]]:
        user_id, session_id = _scope(config, "save_memory")
        result = await memory.aadd(
            content,
            user_id=user_id,
            kind=kind,
            session_id=session_id,
            importance=importance,
        )
        stored = [
            await memory.aget(memory_id, user_id=user_id) for memory_id in result.ids
        ]
        return _save_report(result, stored)

    return StructuredTool.from_function(
        func=save_memory,
        coroutine=asave_memory,
        name="save_memory",
        description=_SAVE_DESCRIPTION,
        args_schema=schema,
        response_format="content_and_artifact",
    )


def _kind_description(kinds: tuple[str, ...]) -> str:
    meanings = {
        "fact": "something true about the user or their world",
        "preference": "how the user likes things done",
        "decision": "something the user decided",
        "event": "something that happened or is planned, with its date if known",
    }
    listed = "; ".join(
        f"{kind}: {meanings[kind]}" if kind in meanings else kind for kind in kinds
    )
    return f"What sort of memory it is ({listed}). Default: {kinds[0]}."


def _save_report(
    result: AddResult, stored: Sequence[Document | None]
) -> tuple[str, dict[str, Any]]:
    """What the save did, for the model, and the same as plain data."""
    lines = [
        f"Saved memory {doc.id} ({doc.metadata.get('kind')}): {doc.page_content}"
        for doc in stored
        if doc is not None
    ]
    for text, reason in result.skipped:
        if "duplicate" in reason:
            lines.append(f"Already remembered, not saved again ({reason}): {text}")
        elif reason == "no facts extracted":
            lines.append(f"Not saved: the extractor found nothing to keep in: {text}")
        else:
            lines.append(f"Not saved: skipped by the write gate ({reason}): {text}")
    if not lines:  # e.g. the memory was deleted between the write and the read
        lines.append("Nothing was saved.")
    artifact = {
        "ids": list(result.ids),
        "skipped": [[text, reason] for text, reason in result.skipped],
    }
    return "\n".join(lines), artifact


# ----------------------------------------------------------------- search


def _search_tool(
    memory: PersistentMemory,
    default_k: int,
    max_k: int,
    kinds: list[str] | None,
    token_budget: int | None,
) -> StructuredTool:
    schema = create_model(
        "SearchMemoryInput",
        __base__=_SearchArguments,
        __doc__="Arguments of search_memory.",
        query=(
            str,
            Field(
                description=(
                    "What to look for, in words likely to appear in the memory, "
                    "e.g. 'the user's diet' or 'how the user likes explanations'."
                ),
            ),
        ),
        k=(
            int | None,
            Field(
                default=None,
                ge=1,
                le=max_k,
                description=(
                    f"How many memories to return at most (default {default_k}, "
                    f"at most {max_k})."
                ),
            ),
        ),
    )

    def search_memory(
        query: str, k: int | None = None, *, config: RunnableConfig
    ) -> tuple[str, list[Document]]:
        user_id, _ = _scope(config, "search_memory")
        docs = memory.search(
            query,
            user_id=user_id,
            k=default_k if k is None else k,
            kinds=kinds,
            token_budget=token_budget,
        )
        return _search_report(docs), docs

    async def asearch_memory(
        query: str, k: int | None = None, *, config: RunnableConfig
    ) -> tuple[str, list[Document]]:
        user_id, _ = _scope(config, "search_memory")
        docs = await memory.asearch(
            query,
            user_id=user_id,
            k=default_k if k is None else k,
            kinds=kinds,
            token_budget=token_budget,
        )
        return _search_report(docs), docs

    return StructuredTool.from_function(
        func=search_memory,
        coroutine=asearch_memory,
        name="search_memory",
        description=_SEARCH_DESCRIPTION,
        args_schema=schema,
        response_format="content_and_artifact",
    )


def _search_report(docs: Sequence[Document]) -> str:
    if not docs:
        return "No memories found for this query."
    count = len(docs)
    lines = [f"Found {count} memor{'y' if count == 1 else 'ies'}, best first:"]
    lines.extend(
        f"{rank}. [{doc.metadata.get('kind')}] {doc.page_content} (id: {doc.id})"
        for rank, doc in enumerate(docs, 1)
    )
    return "\n".join(lines)
