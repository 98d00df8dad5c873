"""Exceptions raised by langchain-persistent-memory.

Input mistakes (an empty text, a metadata value that is not JSON, a bad filter)
raise the built-in `ValueError` or `TypeError`, as LangChain stores do. The
classes here name the failures that come from the store itself.
"""

from __future__ import annotations

__all__ = [
    "CorruptStoreError",
    "EmbeddingMismatchError",
    "PersistentMemoryError",
    "StoreBusyError",
]


class PersistentMemoryError(Exception):
    """Base class of every error raised by this package's stores."""


class StoreBusyError(PersistentMemoryError, TimeoutError):
    """Another process held the store's write lock for longer than `busy_timeout`."""


class EmbeddingMismatchError(PersistentMemoryError, ValueError):
    """The embedding model, dimension or distance differs from the store's own."""


class CorruptStoreError(PersistentMemoryError):
    """The store's database file is damaged or is not a store of this package."""
