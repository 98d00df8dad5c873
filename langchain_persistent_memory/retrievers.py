"""`PersistentMemoryRetriever`: a LangChain retriever over `PersistentMemory`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, ensure_config
from pydantic import ConfigDict
from typing_extensions import override

from langchain_persistent_memory.memory import PersistentMemory  # noqa: TC001 - pydantic needs it

if TYPE_CHECKING:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document


class PersistentMemoryRetriever(BaseRetriever):
    """Retrieves one user's memories from a `PersistentMemory`.

    The user comes from, in order: `invoke(query, user_id=...)`, the run's
    `config={"configurable": {"user_id": ...}}`, or the `user_id` field.
    There is no default: a retriever without a user is an error, never a
    search across users.

    Example:
        ```python
        retriever = PersistentMemoryRetriever(memory=memory, k=4)
        retriever.invoke(
            "What does the user prefer?",
            config={"configurable": {"user_id": "alice"}},
        )
        retriever.invoke("What does the user prefer?", k=2, user_id="alice")
        ```

    Each document's metadata holds the memory's `kind`, `user_id`,
    `created_at` / `updated_at` (epoch seconds), `importance`, `source_ids`
    when known, and `score` / `scores` (why it ranked).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: PersistentMemory
    """The memory to search."""
    k: int = 4
    """How many memories to return (at most)."""
    user_id: str | None = None
    """Default user when neither the call nor the config names one."""
    kinds: list[str] | None = None
    """Only these kinds of memory (all kinds when None)."""
    filter: dict[str, Any] | None = None
    """Metadata filter, in the shape `PersistentFAISS` takes."""
    token_budget: int | None = None
    """Stop adding memories when their texts would exceed this many tokens."""

    def _user(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> str:
        user_id = kwargs.pop("user_id", None)
        if user_id is None:
            user_id = ensure_config(config).get("configurable", {}).get("user_id")
        if user_id is None:
            user_id = self.user_id
        if user_id is None:
            msg = (
                "PersistentMemoryRetriever needs a user: pass user_id=..., "
                "config={'configurable': {'user_id': ...}}, or set the field."
            )
            raise ValueError(msg)
        if not isinstance(user_id, str):
            msg = f"user_id must be a str, got {type(user_id).__name__}."
            raise TypeError(msg)
        return user_id

    @override
    def invoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        user_id = self._user(config, kwargs)
        return super().invoke(input, config, user_id=user_id, **kwargs)

    @override
    async def ainvoke(
        self, input: str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[Document]:
        user_id = self._user(config, kwargs)
        return await super().ainvoke(input, config, user_id=user_id, **kwargs)

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = {
            "user_id": kwargs.pop("user_id"),
            "k": kwargs.pop("k", self.k),
            "kinds": kwargs.pop("kinds", self.kinds),
            "filter": kwargs.pop("filter", self.filter),
            "token_budget": kwargs.pop("token_budget", self.token_budget),
        }
        if kwargs:
            msg = f"Unexpected arguments for the memory search: {sorted(kwargs)}."
            raise TypeError(msg)
        return options

    @override
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self.memory.search(query, **self._options(kwargs))

    @override
    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        **kwargs: Any,
    ) -> list[Document]:
        return await self.memory.asearch(query, **self._options(kwargs))
