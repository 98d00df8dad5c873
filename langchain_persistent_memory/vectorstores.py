"""`PersistentFAISS`: a durable, incremental FAISS vector store on a directory."""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from typing_extensions import Self, override

from langchain_persistent_memory._db import SCHEMA_VERSION, Database, storable
from langchain_persistent_memory._filters import (
    compile_filter,
    index_rows,
    typed_value,
)
from langchain_persistent_memory._index import (
    CheckpointError,
    FlatIndex,
    Metric,
    checkpoint_index,
    checkpoint_stamp,
    publish_checkpoint,
    read_checkpoint,
    remove_stale_temp_files,
    write_checkpoint,
)
from langchain_persistent_memory.errors import (
    CorruptStoreError,
    EmbeddingMismatchError,
    PersistentMemoryError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy.typing as npt
    from langchain_core.embeddings import Embeddings

    from langchain_persistent_memory._db import Connection

logger = logging.getLogger(__name__)

Distance = Literal["cosine", "l2", "ip"]

DB_FILE = "memory.db"
INDEX_FILE = "index.faiss"
_DISTANCES = ("cosine", "l2", "ip")
_CHUNK = 500  # ids per `IN (...)` list, well under SQLite's variable limit
_REPLAY_BATCH = 8192


@dataclass
class _Batch:
    """Validated input of one `add_texts` call."""

    texts: list[str]
    metadatas: list[dict[str, Any]]
    metadata_json: list[str]
    ids: list[str]


class PersistentFAISS(VectorStore):
    """A FAISS vector store that lives in a directory and survives restarts.

    SQLite (`memory.db`, WAL mode) holds the truth: ids, texts, metadata,
    embeddings and a change sequence. `index.faiss` is a checkpoint of the
    FAISS index, written in the background and stamped with the change it
    contains; on open it is loaded and the changes after its stamp are
    replayed from SQLite. A missing, stale or damaged checkpoint is rebuilt
    from SQLite. Nothing is ever pickled.

    A write returns only after its SQLite transaction has committed. Several
    processes may open the same directory: writes are serialised by SQLite,
    and each process sees the others' writes on its next search. Metadata
    filters run in SQLite *before* ranking, so a filtered search returns
    `min(k, matching documents)` results however rare the match.

    Setup:
        ```bash
        pip install langchain-persistent-memory
        ```

    Instantiate:
        ```python
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_persistent_memory import PersistentFAISS

        store = PersistentFAISS("./my_store", DeterministicFakeEmbedding(size=256))
        ```

    Add Documents:
        ```python
        from langchain_core.documents import Document

        store.add_documents(
            [
                Document(page_content="I like green tea", metadata={"user_id": "u1"}),
                Document(page_content="I live in Oslo", metadata={"user_id": "u2"}),
            ],
            ids=["a", "b"],
        )
        ```
        ```
        ['a', 'b']
        ```

    Delete:
        ```python
        store.delete(ids=["b"])
        ```

    Search:
        ```python
        store.similarity_search("I like green tea", k=1)
        ```
        ```
        [Document(id='a', metadata={'user_id': 'u1'}, page_content='I like green tea')]
        ```

    Search with filter:
        ```python
        store.similarity_search("tea", k=4, filter={"user_id": {"$in": ["u1", "u3"]}})
        ```
        Operators: `$eq $ne $in $nin $gt $gte $lt $lte $exists`, combined
        with `$and` / `$or`. Values compared must be str, int (64-bit),
        float or bool. A top-level metadata int beyond the 64-bit range is
        refused (it could only be compared inexactly); store it as a string.

    Search with score:
        ```python
        store.similarity_search_with_score("I like green tea", k=1)
        ```
        ```
        [(Document(id='a', metadata={'user_id': 'u1'}, page_content='I like green tea'),
          1.0)]
        ```
        The score is the cosine similarity (`distance="cosine"`), the
        Euclidean distance (`"l2"`) or the inner product (`"ip"`);
        `similarity_search_with_relevance_scores` maps it to [0, 1].

    Async:
        ```python
        await store.aadd_texts(["I drink coffee"], metadatas=[{"user_id": "u1"}])
        await store.asimilarity_search("coffee", k=1)
        ```

    Use as Retriever:
        ```python
        retriever = store.as_retriever(
            search_kwargs={"k": 2, "filter": {"user_id": "u1"}}
        )
        retriever.invoke("tea")
        ```

    Close the store (or use it as a context manager) to write a final
    checkpoint; a store that is not closed loses nothing, it only replays
    more on the next open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedding: Embeddings,
        *,
        distance: Distance = "cosine",
        index: Literal["flat", "ivf"] = "flat",
        nprobe: int = 32,
        embedding_model: str | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        busy_timeout: float = 30.0,
        synchronous: Literal["full", "normal"] = "full",
    ) -> None:
        """Open the store in `path`, creating the directory if it is missing.

        Args:
            path: Directory of the store (created with owner-only permissions).
            embedding: The LangChain `Embeddings` that embeds texts and queries.
            distance: `"cosine"` (default; vectors are normalised and compared
                by inner product), `"l2"` (Euclidean) or `"ip"` (raw inner
                product). Fixed when the store is created.
            index: `"flat"` (default) searches exactly. `"ivf"` answers
                unfiltered searches on stores of 20,000 vectors or more from
                an inverted-file index (`faiss.IndexIVFFlat`, built in memory
                on the first such search): approximate and several times
                faster on large stores. Filtered searches stay exact. Recall
                is measured by `benchmarks/bench_ivf.py` (see the README).
            nprobe: Lists an `"ivf"` search visits; more is slower and closer
                to exact.
            embedding_model: Name recorded for the embedding model. Defaults to
                the embedding's class name and its `model` / `model_name`
                attribute. Opening a store with another model is an error.
            checkpoint_every: Write `index.faiss` in the background after this
                many changes (or a tenth of the store's rows, if that is more).
            checkpoint_interval: ...or this many seconds after an unsaved change.
            busy_timeout: Seconds a write waits for another writer's lock
                before raising `StoreBusyError`.
            synchronous: `"full"` (default) fsyncs every commit, so an
                acknowledged write survives a power cut; `"normal"` survives a
                crash of the process but may lose the last commits on power loss.

        Raises:
            ValueError: If an option is out of range, or `path` is a file.
            EmbeddingMismatchError: If the store was made with another
                distance or embedding model.
            CorruptStoreError: If `memory.db` is damaged or not a store.
            StoreBusyError: If another writer holds the lock too long.
        """
        if distance not in _DISTANCES:
            msg = f"distance must be one of {_DISTANCES}, got {distance!r}."
            raise ValueError(msg)
        if index not in ("flat", "ivf"):
            msg = f"index must be 'flat' or 'ivf', got {index!r}."
            raise ValueError(msg)
        if not isinstance(nprobe, int) or isinstance(nprobe, bool) or nprobe < 1:
            msg = f"nprobe must be an int >= 1, got {nprobe!r}."
            raise ValueError(msg)
        if synchronous not in ("full", "normal"):
            msg = f"synchronous must be 'full' or 'normal', got {synchronous!r}."
            raise ValueError(msg)
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            msg = f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}."
            raise ValueError(msg)
        if not checkpoint_interval > 0:
            msg = (
                f"checkpoint_interval must be > 0 seconds, got {checkpoint_interval!r}."
            )
            raise ValueError(msg)
        if not busy_timeout >= 0:
            msg = f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}."
            raise ValueError(msg)
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            msg = f"path must be a directory for the store, but {self.path} is a file."
            raise ValueError(msg)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._embedding = embedding
        self._distance: Distance = distance
        self._metric: Metric = "l2" if distance == "l2" else "ip"
        self._nprobe = nprobe if index == "ivf" else None
        self._model = embedding_model or _embedding_identity(embedding)
        self._index_path = self.path / INDEX_FILE
        self._index_lock = threading.RLock()
        self._checkpoint_lock = threading.RLock()  # _reindex holds it over a checkpoint
        self._index: FlatIndex | None = None
        self._seq = 0  # the change sequence the in-memory index contains
        self._saved_seq: int | None = None  # stamp of a checkpoint known good
        self._dim: int | None = None
        self._store_id = b""
        self._closed = False
        self._checkpointer = _Checkpointer(self, checkpoint_every, checkpoint_interval)
        self._db = Database(
            self.path / DB_FILE, busy_timeout=busy_timeout, synchronous=synchronous
        )
        try:
            self._load_settings()
            self._open_index()
        except BaseException:
            self._db.close()
            raise
        _LIVE_STORES.add(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: new locks, no inherited thread or connection.

        Another thread of the parent may have held a lock at the fork; the
        child would wait for it forever.
        """
        self._index_lock = threading.RLock()
        self._checkpoint_lock = threading.RLock()  # _reindex holds it over a checkpoint
        self._checkpointer.reset_after_fork()
        self._db.reset_after_fork()

    # ------------------------------------------------------------------ setup

    def _load_settings(self) -> None:
        wanted = {
            "schema_version": str(SCHEMA_VERSION),
            "store_id": uuid.uuid4().hex,
            "distance": self._distance,
            "embedding_model": self._model,
            "tombstone_floor": "0",
        }
        with self._db.read() as con:
            settings = dict(con.execute("SELECT key, value FROM settings").fetchall())
        if any(key not in settings for key in wanted):
            with self._db.write() as con:
                con.executemany(
                    "INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)",
                    wanted.items(),
                )
                settings = dict(
                    con.execute("SELECT key, value FROM settings").fetchall()
                )
        if int(settings["schema_version"]) > SCHEMA_VERSION:
            msg = (
                f"The store at {self.path} has schema version "
                f"{settings['schema_version']}, newer than this package reads "
                f"({SCHEMA_VERSION}). Upgrade langchain-persistent-memory."
            )
            raise PersistentMemoryError(msg)
        if settings["distance"] != self._distance:
            msg = (
                f"The store at {self.path} was made with distance="
                f"{settings['distance']!r}, but is opened with distance="
                f"{self._distance!r}. Open it with distance={settings['distance']!r}."
            )
            raise EmbeddingMismatchError(msg)
        if settings["embedding_model"] != self._model:
            msg = (
                f"The store at {self.path} was made with the embedding model "
                f"{settings['embedding_model']!r}, but is opened with "
                f"{self._model!r}; their vectors are not comparable. Open it with "
                "the same embedding, use a new directory, or pass embedding_model="
                f"{settings['embedding_model']!r} if the two really are the same model."
            )
            raise EmbeddingMismatchError(msg)
        self._store_id = bytes.fromhex(settings["store_id"])
        if "dimension" in settings:
            self._dim = int(settings["dimension"])

    def _open_index(self) -> None:
        removed = remove_stale_temp_files(self._index_path)
        if removed:
            logger.info(
                "Removed %d unfinished checkpoint(s) in %s.", removed, self.path
            )
        if self._dim is None:
            return  # nothing was ever stored
        with self._index_lock:
            replayed = self._catch_up(verify=True)
        if replayed:
            self._checkpointer.note(replayed)

    # ------------------------------------------------------- index follows db

    def _catch_up(self, *, verify: bool = False) -> int:
        """Bring the in-memory index up to the database; return rows replayed.

        Called with `_index_lock` held, inside or outside a read transaction;
        all its reads share one snapshot, and the index ends exactly at that
        snapshot's change sequence. Without an index in memory (first use,
        fallen behind the pruned tombstones, or an earlier replay that
        failed), it loads the checkpoint and replays from its stamp, or
        replays everything. `verify` also checks the row count (on open).
        """
        with self._db.read() as con:
            head = con.execute("SELECT seq FROM counter").fetchone()[0]
            if self._index is not None and head == self._seq and not verify:
                return 0
            floor = int(
                con.execute(
                    "SELECT value FROM settings WHERE key = 'tombstone_floor'"
                ).fetchone()[0]
            )
            if self._index is not None and not floor <= self._seq <= head:
                self._index = None  # behind the pruned tombstones: reload
            if self._index is None:
                if self._dim is None:
                    self._dim = _read_dimension(con)
                if self._dim is None:
                    self._seq = head
                    return 0
                top = con.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'documents'"
                ).fetchone()
                self._index, self._seq = self._load_checkpoint(
                    floor, head, top[0] if top else 0, opening=verify
                )
            try:
                replayed = self._replay(con, self._seq)
                self._seq = head
                if verify:
                    count = con.execute("SELECT count(*) FROM documents").fetchone()
                    if count[0] != len(self._index):
                        logger.warning(
                            "Rebuilding the index of %s: it holds %d vectors but "
                            "%s holds %d documents.",
                            self.path,
                            len(self._index),
                            DB_FILE,
                            count[0],
                        )
                        self._index = self._new_index(self._index.dim)
                        self._saved_seq = None
                        replayed = self._replay(con, 0)
            except BaseException:
                # A half-replayed index must never be searched: drop it, and
                # the next call starts again from the checkpoint.
                self._index, self._seq, self._saved_seq = None, 0, None
                raise
        return replayed

    def _load_checkpoint(
        self, floor: int, head: int, max_label: int, *, opening: bool
    ) -> tuple[FlatIndex, int]:
        """The checkpoint as `(index, stamp)` if usable, else an empty index.

        An unusable checkpoint is logged as a warning; a missing one only
        when the store is being opened with rows (a new store has none yet).
        """
        assert self._dim is not None  # noqa: S101 - checked by the caller
        try:
            seq, index = read_checkpoint(
                self._index_path,
                store_id=self._store_id,
                dim=self._dim,
                metric=self._metric,
                max_label=max_label,
                nprobe=self._nprobe,
            )
            if not floor <= seq <= head:
                msg = (
                    f"it is stamped {seq}, outside what {DB_FILE} can replay "
                    f"({floor}..{head})"
                )
                raise CheckpointError(msg)  # noqa: TRY301 - one report below
        except CheckpointError as exc:
            if self._index_path.exists():
                logger.warning(
                    "Rebuilding the index of %s from %s: %s cannot be used: %s.",
                    self.path,
                    DB_FILE,
                    INDEX_FILE,
                    exc,
                )
            elif opening and head > 0:
                # Normal before a store's first checkpoint: not a warning.
                logger.info(
                    "Building the index of %s from %s: no %s yet.",
                    self.path,
                    DB_FILE,
                    INDEX_FILE,
                )
            self._saved_seq = None
            return self._new_index(self._dim), 0
        self._saved_seq = seq
        return index, seq

    def _new_index(self, dim: int) -> FlatIndex:
        return FlatIndex(dim, self._metric, self._nprobe)

    def _replay(
        self,
        con: Connection,
        since: int,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Apply the changes after `since` (all rows if 0) to the index.

        `progress` is called with the rows replayed so far after each batch.
        """
        index = self._index
        assert index is not None  # noqa: S101 - callers create it first
        if since > 0:
            removed = con.execute(
                "SELECT label FROM tombstones WHERE seq > ?", (since,)
            ).fetchall()
            index.remove(np.array([row[0] for row in removed], dtype=np.int64))
        cursor = con.execute(
            "SELECT label, embedding FROM documents WHERE seq > ?", (since,)
        )
        replayed = 0
        width = 4 * index.dim
        while rows := cursor.fetchmany(_REPLAY_BATCH):
            for label, blob in rows:
                if len(blob) != width:
                    msg = (
                        f"{self._db.path} is damaged: the document with label "
                        f"{label} has a {len(blob)}-byte vector, but the store "
                        f"holds {index.dim}-dimensional float32 vectors ({width} "
                        "bytes). Nothing was changed; restore the file from a "
                        "backup, or delete that row."
                    )
                    raise CorruptStoreError(msg)
            labels = np.array([row[0] for row in rows], dtype=np.int64)
            raw = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
            vectors = self._for_index(raw.reshape(len(rows), index.dim))
            if since > 0:
                index.remove(labels)
            index.add(labels, vectors)
            replayed += len(rows)
            if progress is not None:
                progress(replayed)
        return replayed

    def _for_index(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self._distance != "cosine":
            return vectors
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)

    # ------------------------------------------------------------- checkpoint

    def checkpoint(self) -> None:
        """Write `index.faiss` now (atomically), then prune replayed changes.

        Runs by itself in the background every `checkpoint_every` changes or
        `checkpoint_interval` seconds, and on `close()`.
        """
        with self._checkpoint_lock:
            with self._index_lock:
                self._catch_up()
                if self._index is None:
                    return
                seq = self._seq
                pending = self._checkpointer.taken(len(self._index))
                if self._saved_seq == seq:
                    return  # this process loaded or wrote exactly this checkpoint
                idmap = checkpoint_index(
                    self._index.labels(), self._index.vectors(), self._metric
                )
            if self._newer_on_disk(seq):
                return
            tmp: Path | None = None
            try:
                tmp = write_checkpoint(
                    self._index_path, idmap, store_id=self._store_id, seq=seq
                )
                # The check and the rename run under the database's write lock,
                # so no other process publishes in between: an older
                # checkpoint never replaces a newer one.
                with self._db.write() as con:
                    if self._newer_on_disk(seq):
                        return
                    publish_checkpoint(tmp, self._index_path)
                    tmp = None
                    con.execute("DELETE FROM tombstones WHERE seq <= ?", (seq,))
                    con.execute(
                        "UPDATE settings SET value = ? WHERE key = 'tombstone_floor'"
                        " AND CAST(value AS INTEGER) < ?",
                        (str(seq), seq),
                    )
                self._saved_seq = seq
            except BaseException:
                self._checkpointer.note(pending)  # still unsaved: retry later
                raise
            finally:
                del idmap
                if tmp is not None:
                    tmp.unlink(missing_ok=True)

    def _reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild the index from `memory.db` and checkpoint it; return its rows.

        For operators (`lpm reindex`): opening a store already rebuilds an
        index it cannot trust, so this is only needed to force one.
        `progress` is called with `(rows done, rows in all)`.
        """
        # The checkpoint lock first: a checkpoint of the old index finishing
        # meanwhile would mark the stamp as saved and skip writing this one.
        with self._checkpoint_lock:
            with self._index_lock, self._db.read() as con:
                head = con.execute("SELECT seq FROM counter").fetchone()[0]
                total = con.execute("SELECT count(*) FROM documents").fetchone()[0]
                self._dim = self._dim or _read_dimension(con)
                if self._dim is None:
                    return 0
                self._index, self._saved_seq = self._new_index(self._dim), None
                try:
                    rows = self._replay(
                        con,
                        0,
                        None if progress is None else lambda n: progress(n, total),
                    )
                except BaseException:
                    self._index, self._seq = None, 0
                    raise
                self._seq = head
            self._checkpointer.note(rows)
            self.checkpoint()
        return rows

    def _compact(self) -> bool:
        """Give the space of deleted rows back (`lpm compact`).

        Run it after a checkpoint, which prunes the tombstones first.

        VACUUM rewrites `memory.db` under SQLite's write lock; other writers
        wait up to their `busy_timeout` meanwhile. Returns False if a reader
        kept the rewritten pages in the WAL (the space comes back once the
        readers are gone and the WAL is checkpointed).
        """
        con = self._db.connection()
        try:
            con.execute("VACUUM")
            busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._db.translate(exc) from exc
        return not busy

    def _newer_on_disk(self, seq: int) -> bool:
        """Whether another process already saved a checkpoint newer than `seq`."""
        on_disk = checkpoint_stamp(self._index_path)
        return on_disk is not None and on_disk > seq

    def close(self) -> None:
        """Write a final checkpoint if needed and close the store. Idempotent.

        Call it once the other threads have stopped using the store: their
        connections are closed too.
        """
        if self._closed:
            return
        self._closed = True
        pending = self._checkpointer.stop()
        try:
            if pending:
                self.checkpoint()
        except Exception:
            logger.warning(
                "Final checkpoint of %s failed; the next open replays from %s.",
                self.path,
                DB_FILE,
                exc_info=True,
            )
        finally:
            self._db.close()

    def __enter__(self) -> Self:
        """Return the store itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    # ------------------------------------------------------------------ write

    @property
    @override
    def embeddings(self) -> Embeddings:
        return self._embedding

    @override
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts; an existing id is overwritten (upsert).

        Args:
            texts: Non-empty strings to store.
            metadatas: One JSON-serialisable dict per text.
            ids: One id per text; `None` entries (as `add_documents` passes for
                documents without an id) get a new UUID.
            **kwargs: Not used; an unknown keyword is an error.

        Returns:
            The ids of the stored texts, in order.

        Raises:
            TypeError: If a text is not a string or a metadata not a dict.
            ValueError: If a text is empty, lengths differ, ids repeat, or a
                metadata value is not JSON.
            EmbeddingMismatchError: If the vectors' dimension is not the store's.
        """
        _reject_unknown(kwargs, "add_texts")
        batch = _prepare_batch(texts, metadatas, ids)
        if not batch.texts:
            return []
        vectors = self._embedding.embed_documents(batch.texts)
        return self._write(batch, vectors)

    @override
    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async `add_texts`: embeds with `aembed_documents`, writes in a thread."""
        _reject_unknown(kwargs, "aadd_texts")
        batch = _prepare_batch(texts, metadatas, ids)
        if not batch.texts:
            return []
        vectors = await self._embedding.aembed_documents(batch.texts)
        return await run_in_executor(None, self._write, batch, vectors)

    def _write(self, batch: _Batch, vectors: Sequence[Sequence[float]]) -> list[str]:
        array = self._check_vectors(vectors, len(batch.texts), "embed_documents")
        with self._db.write() as con:
            self._write_rows(con, batch, array)
        self._checkpointer.note(len(batch.ids))
        return list(batch.ids)

    def _write_rows(
        self, con: Connection, batch: _Batch, array: npt.NDArray[np.float32]
    ) -> list[int]:
        """Upsert rows inside the caller's write transaction; return their labels.

        The caller commits, then calls `_checkpointer.note`.
        """
        self._ensure_dimension(con, array.shape[1])
        seq = con.execute("UPDATE counter SET seq = seq + 1 RETURNING seq").fetchone()[
            0
        ]
        labels: list[int] = []
        for doc_id, text, meta, meta_json, vector in zip(
            batch.ids,
            batch.texts,
            batch.metadatas,
            batch.metadata_json,
            array,
            strict=True,
        ):
            label = con.execute(
                "INSERT INTO documents (id, text, metadata, embedding, seq)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " text = excluded.text, metadata = excluded.metadata,"
                " embedding = excluded.embedding, seq = excluded.seq"
                " RETURNING label",
                (doc_id, text, meta_json, vector.tobytes(), seq),
            ).fetchone()[0]
            con.execute("DELETE FROM metadata_index WHERE label = ?", (label,))
            con.executemany(
                "INSERT INTO metadata_index (key, type, value, label)"
                " VALUES (?, ?, ?, ?)",
                index_rows(label, meta),
            )
            labels.append(label)
        return labels

    @staticmethod
    def _bind(value: Any) -> Any:
        """A metadata value as `metadata_index.value` binds it (as it is)."""
        return value

    @staticmethod
    def _index_rows(label: int, metadata: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of `metadata_index` for one document."""
        return index_rows(label, metadata)

    def _ensure_dimension(self, con: Connection, dim: int) -> None:
        stored = self._dim if self._dim is not None else _read_dimension(con)
        if stored is None:
            con.execute(
                "INSERT INTO settings (key, value) VALUES ('dimension', ?)", (str(dim),)
            )
            stored = dim
        self._dim = stored
        self._check_dimension(dim)

    def _check_dimension(self, dim: int) -> None:
        if self._dim is not None and dim != self._dim:
            msg = (
                f"The store at {self.path} holds {self._dim}-dimensional vectors, "
                f"but the embedding {self._model!r} gave {dim}-dimensional ones. "
                "Open the store with the embedding it was made with, or use a "
                "new directory."
            )
            raise EmbeddingMismatchError(msg)

    def _check_vectors(
        self, vectors: Sequence[Sequence[float]], count: int, source: str
    ) -> npt.NDArray[np.float32]:
        where = f"{type(self._embedding).__name__}.{source}"
        array = checked_vectors(
            vectors, count, where, nonzero=self._distance == "cosine"
        )
        self._check_dimension(array.shape[1])
        return array

    @override
    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id; unknown ids are ignored.

        Returns:
            True.

        Raises:
            ValueError: If `ids` is None (say which documents to delete).
        """
        _reject_unknown(kwargs, "delete")
        if ids is None:
            msg = "delete() needs the ids to delete, e.g. store.delete(ids=['a'])."
            raise ValueError(msg)
        wanted = list(dict.fromkeys(_check_ids(ids)))
        if not wanted:
            return True
        with self._db.write() as con:
            labels = self._delete_rows(con, wanted)
        if labels:
            self._checkpointer.note(len(labels))
        return True

    def _delete_rows(self, con: Connection, ids: list[str]) -> list[int]:
        """Delete rows by id inside the caller's write transaction; return labels."""
        labels = [
            row[0]
            for part in _chunks(ids)
            for row in con.execute(
                f"SELECT label FROM documents WHERE id IN ({_marks(part)})",  # noqa: S608
                part,
            )
        ]
        if not labels:
            return labels
        seq = con.execute("UPDATE counter SET seq = seq + 1 RETURNING seq").fetchone()[
            0
        ]
        for part in _chunks(labels):
            marks = _marks(part)
            con.execute(f"DELETE FROM documents WHERE label IN ({marks})", part)  # noqa: S608
            con.execute(f"DELETE FROM metadata_index WHERE label IN ({marks})", part)  # noqa: S608
        con.executemany(
            "INSERT INTO tombstones (seq, label) VALUES (?, ?)",
            [(seq, label) for label in labels],
        )
        return labels

    # ------------------------------------------------------------------- read

    @override
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Return the documents with these ids in the order asked; skip unknown ids."""
        wanted = _check_ids(ids)
        found: dict[str, Document] = {}
        with self._db.read() as con:
            for part in _chunks(list(dict.fromkeys(wanted))):
                sql = f"SELECT id, text, metadata FROM documents WHERE id IN ({_marks(part)})"  # noqa: E501, S608
                for doc_id, text, meta in con.execute(sql, part):
                    found[doc_id] = Document(
                        id=doc_id, page_content=text, metadata=self._meta(doc_id, meta)
                    )
        return [found[doc_id] for doc_id in wanted if doc_id in found]

    def _search(
        self,
        embedding: Sequence[float],
        k: int,
        filter: Mapping[str, Any] | None,  # noqa: A002 - LangChain's name
        *,
        with_vectors: bool = False,
    ) -> tuple[list[tuple[int, float]], npt.NDArray[np.float32]]:
        """Rank the store for a query vector; return `[(label, score)]` best first.

        The filter, the catch-up and (in the callers) the documents fetched
        all read one SQLite snapshot, so every result matches the filter.
        """
        k = _check_k(k)
        query = self._for_index(self._check_vectors([embedding], 1, "embed_query"))[0]
        compiled = compile_filter(filter) if filter else None
        nothing = np.empty((0, len(query)), dtype=np.float32)
        with self._index_lock, self._db.read() as con:
            self._catch_up()
            if self._index is None or k == 0:
                return [], nothing
            self._check_dimension(len(query))
            subset = None
            if compiled is not None:
                rows = con.execute(*compiled).fetchall()
                subset = np.array([row[0] for row in rows], dtype=np.int64)
            scores, labels = self._index.search(query, k, subset)
            vectors = self._index.vectors_of(labels) if with_vectors else nothing
        hits = [
            (int(label), float(score))
            for label, score in zip(labels, scores, strict=True)
        ]
        return hits, vectors

    def _vectors(self, labels: Sequence[int]) -> dict[int, npt.NDArray[np.float32]]:
        """Index vectors (normalised for cosine) of the labels present."""
        with self._index_lock:
            if self._index is None:
                return {}
            wanted = np.asarray(labels, dtype=np.int64)
            present = [
                int(label)
                for label in wanted
                if 0 <= label < len(self._index._pos) and self._index._pos[label] >= 0  # noqa: SLF001
            ]
            rows = self._index.vectors_of(np.asarray(present, dtype=np.int64))
        return dict(zip(present, rows, strict=True))

    def _documents(self, labels: Sequence[int]) -> dict[int, Document]:
        found: dict[int, Document] = {}
        with self._db.read() as con:
            for part in _chunks(list(labels)):
                sql = f"SELECT label, id, text, metadata FROM documents WHERE label IN ({_marks(part)})"  # noqa: E501, S608
                for label, doc_id, text, meta in con.execute(sql, part):
                    found[label] = Document(
                        id=doc_id, page_content=text, metadata=self._meta(doc_id, meta)
                    )
        return found

    @staticmethod
    def _dump(
        con: Connection, *, after: str | None, ids: Sequence[str] | None, limit: int
    ) -> list[tuple[int, str, str, str, npt.NDArray[np.float32]]]:
        """`(label, id, text, metadata JSON, vector)` rows in id order."""
        return dump_rows(
            con,
            "embedding",
            lambda blob: np.frombuffer(blob, dtype=np.float32),
            after=after,
            ids=ids,
            limit=limit,
        )

    def _meta(self, doc_id: str, data: str) -> dict[str, Any]:
        return self._db.parse(data, f"the metadata of {doc_id!r}", _as_dict)

    def similarity_search_with_score_by_vector(
        self,
        embedding: Sequence[float],
        k: int = 4,
        filter: Mapping[str, Any] | None = None,  # noqa: A002
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Return the `k` documents nearest to a vector, with their scores.

        Args:
            embedding: The query vector.
            k: How many documents to return.
            filter: Metadata filter applied before ranking (see the class doc).
            **kwargs: `fetch_k` is accepted and ignored (search is exact).

        Returns:
            `(document, score)` pairs, best first; see the class doc for scores.
        """
        _reject_unknown(kwargs, "similarity_search", allowed=("fetch_k",))
        with self._db.read():
            hits, _ = self._search(embedding, k, filter)
            documents = self._documents([label for label, _ in hits])
        return [
            (documents[label], score) for label, score in hits if label in documents
        ]

    @override
    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Return the `k` documents nearest to a vector."""
        return [
            doc
            for doc, _ in self.similarity_search_with_score_by_vector(
                embedding, k, filter, **kwargs
            )
        ]

    @override
    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Return the `k` documents most similar to `query`, with their scores."""
        embedding = self._embedding.embed_query(query)
        return self.similarity_search_with_score_by_vector(
            embedding, k, filter, **kwargs
        )

    @override
    def similarity_search(
        self,
        query: str,
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Return the `k` documents most similar to `query`."""
        return [
            doc
            for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)
        ]

    @override
    async def asimilarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Async `similarity_search_with_score` (embeds with `aembed_query`)."""
        embedding = await self._embedding.aembed_query(query)
        return await run_in_executor(
            None,
            self.similarity_search_with_score_by_vector,
            embedding,
            k,
            filter,
            **kwargs,
        )

    @override
    async def asimilarity_search(
        self,
        query: str,
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async `similarity_search` (embeds with `aembed_query`)."""
        pairs = await self.asimilarity_search_with_score(query, k, filter, **kwargs)
        return [doc for doc, _ in pairs]

    @override
    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Return `k` documents chosen for relevance and diversity (MMR).

        Args:
            embedding: The query vector.
            k: How many documents to return.
            fetch_k: How many nearest documents MMR chooses from.
            lambda_mult: 1 favours relevance only, 0 diversity only.
            filter: Metadata filter applied before ranking.
            **kwargs: Not used; an unknown keyword is an error.
        """
        _reject_unknown(kwargs, "max_marginal_relevance_search")
        with self._db.read():
            hits, vectors = self._search(
                embedding,
                max(_check_k(fetch_k), _check_k(k)),
                filter,
                with_vectors=True,
            )
            if not hits:
                return []
            query = self._for_index(np.asarray([embedding], dtype=np.float32))[0]
            chosen = maximal_marginal_relevance(
                query, list(vectors), lambda_mult=lambda_mult, k=k
            )
            labels = [hits[i][0] for i in chosen]
            documents = self._documents(labels)
        return [documents[label] for label in labels if label in documents]

    @override
    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Return `k` documents for `query`, chosen for relevance and diversity."""
        embedding = self._embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            embedding, k, fetch_k, lambda_mult, filter, **kwargs
        )

    @override
    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async MMR search (embeds with `aembed_query`)."""
        embedding = await self._embedding.aembed_query(query)
        return await run_in_executor(
            None,
            self.max_marginal_relevance_search_by_vector,
            embedding,
            k,
            fetch_k,
            lambda_mult,
            filter,
            **kwargs,
        )

    @override
    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self._distance == "cosine":
            return _cosine_relevance
        if self._distance == "l2":
            return _l2_relevance
        return _ip_relevance

    @classmethod
    @override
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> PersistentFAISS:
        """Open (or create) the store at `path` and add `texts` to it.

        Args:
            texts: Texts to add.
            embedding: The embedding model.
            metadatas: One dict per text.
            ids: One id per text.
            path: Directory of the store (required).
            **kwargs: Options of the constructor (`distance`, ...).

        Raises:
            TypeError: If `path` is missing.
        """
        if path is None:
            msg = "PersistentFAISS.from_texts needs path=..., the store's directory."
            raise TypeError(msg)
        store = cls(path, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=list(ids) if ids is not None else None)
        return store


# ------------------------------------------------------------------ helpers

_LIVE_STORES: weakref.WeakSet[PersistentFAISS] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_LIVE_STORES):
        store._reset_after_fork()  # noqa: SLF001 - the module's own class


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Checkpointer:
    """Calls `store.checkpoint()` from a daemon thread after N changes or T seconds.

    N is `checkpoint_every` or a tenth of the store's rows, whichever is
    larger: a checkpoint rewrites the whole index, so a bulk load pays O(1)
    per row for them, not O(rows). Holds only a weak reference to the store,
    so a store that is dropped without `close()` can still be collected.
    """

    def __init__(self, store: PersistentFAISS, every: int, interval: float) -> None:
        self._store = weakref.ref(store)
        self._every = every
        self._interval = interval
        self._cond = threading.Condition()
        self._pending = 0
        self._rows = 0  # store size at the last checkpoint
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def note(self, changes: int) -> None:
        with self._cond:
            self._pending += changes
            if self._stopped:
                return
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="lpm-checkpoint", daemon=True
                )
                self._thread.start()
            if self._due():
                self._cond.notify()

    def _due(self) -> bool:
        return self._pending >= max(self._every, self._rows // 10)

    def reset_after_fork(self) -> None:
        self._cond = threading.Condition()
        self._thread = None
        self._pid = os.getpid()

    def taken(self, rows: int) -> int:
        """A checkpoint of `rows` rows began; return the changes it covers."""
        with self._cond:
            pending, self._pending = self._pending, 0
            self._rows = rows
            return pending

    def stop(self) -> int:
        """Stop the thread; return the number of changes not yet checkpointed."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread
        if (
            thread is not None
            and thread is not threading.current_thread()
            and self._pid == os.getpid()
        ):
            thread.join()
        return self._pending

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopped or self._due(),
                    timeout=self._interval,
                )
                if self._stopped:
                    return
                idle = self._pending == 0
            store = self._store()
            if store is None:
                return  # the store was dropped without close()
            if idle:
                del store
                continue
            try:
                store.checkpoint()
            except Exception:
                logger.warning(
                    "Background checkpoint of %s failed; will retry.",
                    store.path,
                    exc_info=True,
                )
            del store


def _as_dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        msg = f"a JSON object was expected, found {type(value).__name__}"
        raise TypeError(msg)
    return value


def _embedding_identity(embedding: Embeddings) -> str:
    name = type(embedding).__name__
    for attribute in ("model", "model_name", "model_id"):
        value = getattr(embedding, attribute, None)
        if isinstance(value, str) and value:
            return f"{name}:{value}"
    return name


def _read_dimension(con: Connection) -> int | None:
    row = con.execute("SELECT value FROM settings WHERE key = 'dimension'").fetchone()
    return int(row[0]) if row else None


def _prepare_batch(
    texts: Iterable[object],
    metadatas: list[dict[str, Any]] | None,
    ids: Iterable[str | None] | None,
) -> _Batch:
    _check_list(texts, "texts")
    checked: list[str] = []
    for position, text in enumerate(texts):  # may be a one-shot iterator
        if not isinstance(text, str):
            msg = f"texts[{position}] must be a str, got {type(text).__name__}."
            raise TypeError(msg)
        checked.append(storable(text, f"texts[{position}]"))
        if not text.strip():
            msg = (
                f"texts[{position}] is empty or whitespace; there is nothing to embed."
            )
            raise ValueError(msg)
    if metadatas is not None:
        _check_list(metadatas, "metadatas")
    if ids is not None:
        _check_list(ids, "ids")
    metadatas = [{} for _ in checked] if metadatas is None else list(metadatas)
    if len(metadatas) != len(checked):
        msg = f"Expected {len(checked)} metadatas, got {len(metadatas)}."
        raise ValueError(msg)
    metadata_json = [_metadata_json(meta, i) for i, meta in enumerate(metadatas)]
    given = [None] * len(checked) if ids is None else list(ids)
    if len(given) != len(checked):
        msg = f"Expected {len(checked)} ids, got {len(given)}."
        raise ValueError(msg)
    final = [uuid.uuid4().hex if doc_id is None else doc_id for doc_id in given]
    _check_ids(final)
    if len(set(final)) != len(final):
        repeated = sorted({doc_id for doc_id in final if final.count(doc_id) > 1})
        msg = f"ids must be unique within one call; repeated: {repeated[:5]}."
        raise ValueError(msg)
    return _Batch(checked, [dict(m) for m in metadatas], metadata_json, final)


def dump_rows(
    con: Connection,
    column: str,
    decode: Callable[[Any], npt.NDArray[np.float32]],
    *,
    after: str | None,
    ids: Sequence[str] | None,
    limit: int,
) -> list[tuple[int, str, str, str, npt.NDArray[np.float32]]]:
    """`(label, id, text, metadata JSON, vector)` rows of `documents` in id order.

    Those with `ids`, else those with ids after `after` (all if None).
    `column` selects the vector, `decode` makes it a float32 array.
    """
    where: str = ""
    params: list[Any] = []
    if ids is not None:
        where, params = f"WHERE id IN ({_marks(ids)})", list(ids)
    elif after is not None:
        where, params = "WHERE id > ?", [after]
    rows = con.execute(
        f"SELECT label, id, text, metadata, {column} FROM documents"  # noqa: S608
        f" {where} ORDER BY id LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [
        (label, doc_id, text, meta, decode(vector))
        for label, doc_id, text, meta, vector in rows
    ]


def checked_vectors(
    vectors: Sequence[Sequence[float]], count: int, where: str, *, nonzero: bool
) -> npt.NDArray[np.float32]:
    """`count` finite vectors of one length as a float32 array, or a clear error.

    `where` names the call that gave them; `nonzero` (cosine) also refuses
    all-zero vectors.
    """
    if len(vectors) != count:
        msg = f"{where} returned {len(vectors)} vectors for {count} texts."
        raise ValueError(msg)
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        msg = (
            f"{where} returned vectors that are not lists of numbers of one "
            f"length ({exc})."
        )
        raise ValueError(msg) from exc
    if array.ndim != 2 or array.shape[1] == 0:  # noqa: PLR2004
        msg = f"{where} returned vectors of shape {array.shape}; expected (n, dim)."
        raise ValueError(msg)
    bad = ~np.isfinite(array).all(axis=1)
    if nonzero:
        bad |= ~array.any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        msg = (
            f"{where} returned a vector with NaN, infinite or (for cosine) "
            f"all-zero values at position {row}."
        )
        raise ValueError(msg)
    return np.ascontiguousarray(array)


def _check_list(value: object, name: str) -> None:
    """A list-like argument must not be a string, bytes or a single value."""
    if isinstance(value, (str, bytes, bytearray)):
        kind = "a single string" if isinstance(value, str) else "bytes"
        msg = f"{name} must be a list of strings, got {kind}; wrap it in [...]."
        raise TypeError(msg)
    if not isinstance(value, Iterable) or isinstance(value, Mapping):
        msg = f"{name} must be a list, got {type(value).__name__}."
        raise TypeError(msg)


def _metadata_json(metadata: Any, position: int, name: str = "metadatas") -> str:
    where = f"{name}[{position}]" if name == "metadatas" else name
    if not isinstance(metadata, Mapping):
        msg = f"{where} must be a dict, got {type(metadata).__name__}."
        raise TypeError(msg)
    _check_keys(metadata, where)
    for key, value in metadata.items():
        typed_value(value, f"{where}[{key!r}]")  # can it be indexed and compared?
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = (
            f"{where} is not JSON-serialisable ({exc}). Use str, "
            "int, float (finite), bool, None, lists and dicts; convert dates "
            "with .isoformat()."
        )
        raise ValueError(msg) from exc
    return storable(text, where)


def _check_keys(value: object, where: str) -> None:
    """Every dict key, at any depth, must be a str: JSON would rename others."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                msg = (
                    f"{where} has a non-string key {key!r}; use str keys "
                    "(JSON would turn it into a string)."
                )
                raise TypeError(msg)
            _check_keys(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            _check_keys(item, f"{where}[{position}]")


def _check_ids(ids: Iterable[object]) -> list[str]:
    _check_list(ids, "ids")
    checked: list[str] = []
    for position, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not doc_id:
            msg = f"ids[{position}] must be a non-empty str, got {doc_id!r}."
            raise TypeError(msg)
        checked.append(storable(doc_id, f"ids[{position}]"))
    return checked


def _check_k(k: object) -> int:
    try:
        value = operator.index(k)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if isinstance(k, bool) or value < 0:
        msg = f"k must be an int >= 0, got {k!r}."
        raise ValueError(msg)
    return value


def _reject_unknown(
    kwargs: Mapping[str, Any], method: str, allowed: tuple[str, ...] = ()
) -> None:
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        msg = f"PersistentFAISS.{method}() got unexpected keyword arguments {unknown}."
        raise TypeError(msg)


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(items: Sequence[Any]) -> str:
    return ", ".join("?" * len(items))


def _cosine_relevance(similarity: float) -> float:
    return min(1.0, max(0.0, (1.0 + similarity) / 2.0))


def _l2_relevance(distance: float) -> float:
    return 1.0 / (1.0 + distance)


def _ip_relevance(product: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, product))))
