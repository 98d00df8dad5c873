"""Long-term memory for LangChain apps, on a durable FAISS + SQLite store.

`PersistentFAISS` is a LangChain `VectorStore` that lives in a directory:
SQLite holds the truth, a FAISS index checkpoint makes opening fast, and every
write is acknowledged only once it is committed.
"""

from __future__ import annotations

from langchain_persistent_memory.errors import (
    CorruptStoreError,
    EmbeddingMismatchError,
    PersistentMemoryError,
    StoreBusyError,
)
from langchain_persistent_memory.vectorstores import PersistentFAISS

__all__ = [
    "CorruptStoreError",
    "EmbeddingMismatchError",
    "PersistentFAISS",
    "PersistentMemoryError",
    "StoreBusyError",
]
