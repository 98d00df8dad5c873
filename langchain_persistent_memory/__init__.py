"""Long-term memory for LangChain apps, on a durable FAISS + SQLite store.

`PersistentFAISS` is a LangChain `VectorStore` that lives in a directory:
SQLite holds the truth, a FAISS index checkpoint makes opening fast, and every
write is acknowledged only once it is committed. `PersistentMemory` builds
per-user long-term memory on it: hybrid (vector + keyword) search, a write
gate for small talk, deduplication, an audit trail and `forget`.
`PersistentChatMessageHistory` keeps chat sessions in the same store, and
`with_persistent_memory` wraps a chat model or chain so that each call gets
the user's memories in its prompt and leaves the turn in memory.
"""

from __future__ import annotations

from langchain_persistent_memory.embeddings import LocalEmbeddings
from langchain_persistent_memory.errors import (
    CorruptStoreError,
    EmbeddingMismatchError,
    PersistentMemoryError,
    StoreBusyError,
)
from langchain_persistent_memory.history import PersistentChatMessageHistory
from langchain_persistent_memory.memory import (
    AddResult,
    MemoryStats,
    PersistentMemory,
    default_write_gate,
)
from langchain_persistent_memory.retrievers import PersistentMemoryRetriever
from langchain_persistent_memory.runnables import (
    RunnableWithPersistentMemory,
    create_memory_prompt,
    format_memories,
    with_persistent_memory,
)
from langchain_persistent_memory.tools import create_memory_tools
from langchain_persistent_memory.vectorstores import PersistentFAISS

__all__ = [
    "AddResult",
    "CorruptStoreError",
    "EmbeddingMismatchError",
    "LocalEmbeddings",
    "MemoryStats",
    "PersistentChatMessageHistory",
    "PersistentFAISS",
    "PersistentMemory",
    "PersistentMemoryError",
    "PersistentMemoryRetriever",
    "RunnableWithPersistentMemory",
    "StoreBusyError",
    "create_memory_prompt",
    "create_memory_tools",
    "default_write_gate",
    "format_memories",
    "with_persistent_memory",
]
