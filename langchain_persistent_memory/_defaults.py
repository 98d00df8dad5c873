"""The seed's models, used when none is passed: OpenAI, or a clear error.

`text-embedding-3-small` and `gpt-4o-mini`, through `langchain-openai` (the
`openai` extra), when `OPENAI_API_KEY` is set. `OPENAI_BASE_URL` points them
at any OpenAI-compatible server. Without a key there is no silent fallback:
the error says how to pass a model or use the offline embedder.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from langchain_persistent_memory.errors import PersistentMemoryError

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

EMBEDDING_MODEL = "text-embedding-3-small"
CHAT_MODEL = "gpt-4o-mini"

_INSTALL = 'pip install "langchain-persistent-memory[openai]"'


def _require_openai(what: str, offline: str) -> None:
    if not os.environ.get("OPENAI_API_KEY"):
        msg = (
            f"No {what} was given and OPENAI_API_KEY is not set. Either set "
            f"OPENAI_API_KEY (and OPENAI_BASE_URL for an OpenAI-compatible "
            f"server) to use OpenAI's defaults, or pass one: {offline}"
        )
        raise PersistentMemoryError(msg)


def default_embeddings() -> Embeddings:
    """`OpenAIEmbeddings(model="text-embedding-3-small")`, or a clear error."""
    _require_openai(
        "embedding",
        "embedding=LocalEmbeddings() runs offline "
        '(pip install "langchain-persistent-memory[local]"), '
        "or any LangChain Embeddings.",
    )
    try:
        from langchain_openai import OpenAIEmbeddings  # noqa: PLC0415 - optional
    except ImportError as error:
        msg = f"OpenAI embeddings need langchain-openai: {_INSTALL}."
        raise PersistentMemoryError(msg) from error
    # No client-side tokenisation: it would fetch tiktoken's tables from the
    # network at first use, and OpenAI-compatible servers take plain text.
    return OpenAIEmbeddings(model=EMBEDDING_MODEL, check_embedding_ctx_length=False)


def default_chat_model() -> BaseChatModel:
    """`ChatOpenAI(model="gpt-4o-mini")`, or a clear error."""
    _require_openai(
        "chat model",
        "any LangChain chat model as the first argument, e.g. "
        "with_persistent_memory(ChatOllama(...), memory).",
    )
    try:
        from langchain_openai import ChatOpenAI  # noqa: PLC0415 - optional
    except ImportError as error:
        msg = f"The OpenAI chat model needs langchain-openai: {_INSTALL}."
        raise PersistentMemoryError(msg) from error
    return ChatOpenAI(model=CHAT_MODEL)
