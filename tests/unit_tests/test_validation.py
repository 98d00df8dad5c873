"""Bad input: a clear error, and nothing already stored is lost or changed."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from langchain_persistent_memory import (
    CorruptStoreError,
    EmbeddingMismatchError,
    PersistentFAISS,
)

if TYPE_CHECKING:
    from pathlib import Path


def snapshot(path: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path / "memory.db")
    try:
        return con.execute(
            "SELECT id, text, metadata, embedding FROM documents"
        ).fetchall()
    finally:
        con.close()


class BrokenEmbeddings(Embeddings):
    def __init__(self, vectors: list[list[float]] | Exception) -> None:
        self.vectors = vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if isinstance(self.vectors, Exception):
            raise self.vectors
        return self.vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda s: s.add_texts([""]), ValueError, r"texts\[0\] is empty"),
        (lambda s: s.add_texts(["ok", "  \n"]), ValueError, r"texts\[1\] is empty"),
        (lambda s: s.add_texts([b"bytes"]), TypeError, r"texts\[0\] must be a str"),
        (lambda s: s.add_texts("a string"), TypeError, "single string"),
        (
            lambda s: s.add_texts(["a"], [{"d": dt.date(2024, 1, 1)}]),
            ValueError,
            "not JSON",
        ),
        (lambda s: s.add_texts(["a"], [{"x": float("nan")}]), ValueError, "not JSON"),
        (lambda s: s.add_texts(["a"], [{1: "x"}]), TypeError, "non-string key"),
        (lambda s: s.add_texts(["a"], ["meta"]), TypeError, "must be a dict"),
        (lambda s: s.add_texts(["a", "b"], [{}]), ValueError, "Expected 2 metadatas"),
        (lambda s: s.add_texts(["a", "b"], ids=["1"]), ValueError, "Expected 2 ids"),
        (lambda s: s.add_texts(["a", "b"], ids=["1", "1"]), ValueError, "unique"),
        (lambda s: s.add_texts(["a"], ids=[""]), TypeError, "non-empty str"),
        (lambda s: s.add_texts(["a"], idz=["1"]), TypeError, "unexpected keyword"),
        (lambda s: s.similarity_search("a", k=-1), ValueError, "k must be"),
        (
            lambda s: s.similarity_search("a", filters={"u": 1}),
            TypeError,
            "unexpected keyword",
        ),
        (lambda s: s.delete(), ValueError, "needs the ids"),
        (lambda s: s.delete("abc"), TypeError, "single string"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    store_path: Path, embedding: Embeddings, call: Any, error: type, words: str
) -> None:
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(["kept"], [{"u": 1}], ids=["keep"])
        before = snapshot(store_path)
        with pytest.raises(error, match=words):
            call(store)
        assert snapshot(store_path) == before
        assert [d.id for d in store.similarity_search("kept", k=5)] == ["keep"]


@pytest.mark.parametrize(
    ("vectors", "error", "words"),
    [
        ([[0.1, float("nan"), 0.3]], ValueError, "NaN"),
        ([[0.1, float("inf"), 0.3]], ValueError, "NaN, infinite"),
        ([[0.0, 0.0, 0.0]], ValueError, "all-zero"),
        ([[0.1, 0.2]], EmbeddingMismatchError, "3-dimensional"),
        ([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], ValueError, "returned 2 vectors for 1"),
        ([[0.1, 0.2, 0.3, 0.4]], EmbeddingMismatchError, "4-dimensional"),
        ([["a", "b", "c"]], ValueError, "not lists of numbers"),
        (RuntimeError("provider is down"), RuntimeError, "provider is down"),
    ],
)
def test_broken_embedder_changes_nothing(
    store_path: Path, vectors: Any, error: type, words: str
) -> None:
    embedder = BrokenEmbeddings([[0.1, 0.2, 0.3]])
    with PersistentFAISS(store_path, embedder) as store:
        store.add_texts(["kept"], ids=["keep"])
        before = snapshot(store_path)
        embedder.vectors = vectors
        with pytest.raises(error, match=words):
            store.add_texts(["new"])
        assert snapshot(store_path) == before
        embedder.vectors = [[0.1, 0.2, 0.3]]
        assert [d.id for d in store.similarity_search("kept", k=5)] == ["keep"]


def test_unicode_and_odd_ids_round_trip(
    store_path: Path, embedding: Embeddings
) -> None:
    texts = ["emoji 🧠✨", "nul \x00 inside", "rtl \u202eabc", "x" * 1_000_000]
    ids = ["quote'\"", "semi;--", "../etc/passwd", "%_%"]
    metas = [
        {"k": "'; DROP TABLE x; --"},
        {"nested": {"a": [1, 2, {"b": None}]}},
        {},
        {"n": 2**62, "nested": [2**70]},
    ]
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(texts, metas, ids=ids)
    with PersistentFAISS(store_path, embedding) as store:
        got = store.get_by_ids(ids)
        assert [d.page_content for d in got] == texts
        assert [d.metadata for d in got] == metas
        assert store.similarity_search(texts[1], k=1)[0].id == ids[1]
        assert [
            d.id
            for d in store.similarity_search("x", k=4, filter={"n": {"$gt": 2**61}})
        ] == ["%_%"]
        # Beyond 64 bits SQLite could only compare as floats: refused, exactly.
        with pytest.raises(ValueError, match=r"metadatas\[0\]\['n'\].*64-bit"):
            store.add_texts(["big"], [{"n": 2**63}])
        with pytest.raises(ValueError, match=r"filter value for 'n'.*64-bit"):
            store.similarity_search("x", filter={"n": {"$gt": -(2**63) - 1}})


def test_other_dimension_is_a_clear_error(store_path: Path) -> None:
    with PersistentFAISS(store_path, DeterministicFakeEmbedding(size=8)) as store:
        store.add_texts(["a"])
    with PersistentFAISS(
        store_path,
        DeterministicFakeEmbedding(size=12),
        embedding_model="DeterministicFakeEmbedding",
    ) as store:
        with pytest.raises(
            EmbeddingMismatchError, match=r"8-dimensional.*12-dimensional"
        ):
            store.similarity_search("a")
        with pytest.raises(EmbeddingMismatchError, match="8-dimensional"):
            store.add_texts(["b"])
    assert len(snapshot(store_path)) == 1


def test_other_model_or_distance_is_a_clear_error(
    store_path: Path, embedding: Embeddings
) -> None:
    class Named(DeterministicFakeEmbedding):
        model: str = "text-embedding-3-small"

    with PersistentFAISS(store_path, Named(size=16)) as store:
        store.add_texts(["a"])
    with pytest.raises(
        EmbeddingMismatchError,
        match=r"Named:text-embedding-3-small.*DeterministicFakeEmbedding",
    ):
        PersistentFAISS(store_path, embedding)
    with pytest.raises(
        EmbeddingMismatchError, match=r"distance='cosine'.*distance='l2'"
    ):
        PersistentFAISS(store_path, Named(size=16), distance="l2")
    with PersistentFAISS(store_path, Named(size=16)) as store:
        assert [d.page_content for d in store.similarity_search("a", k=1)] == ["a"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"distance": "dot"}, "distance must be one of"),
        ({"synchronous": "off"}, "synchronous must be"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"checkpoint_interval": 0}, "checkpoint_interval"),
        ({"busy_timeout": -1}, "busy_timeout"),
    ],
)
def test_bad_options(
    store_path: Path, embedding: Embeddings, kwargs: dict, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        PersistentFAISS(store_path, embedding, **kwargs)


def test_path_that_is_a_file(tmp_path: Path, embedding: Embeddings) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        PersistentFAISS(target, embedding)


def test_corrupt_database_is_named_and_kept(
    store_path: Path, embedding: Embeddings
) -> None:
    store_path.mkdir()
    garbage = b"this is not sqlite" * 100
    (store_path / "memory.db").write_bytes(garbage)
    with pytest.raises(CorruptStoreError, match=r"memory\.db.*Nothing was changed"):
        PersistentFAISS(store_path, embedding)
    assert (store_path / "memory.db").read_bytes() == garbage


def test_foreign_sqlite_database_is_refused(
    store_path: Path, embedding: Embeddings
) -> None:
    store_path.mkdir()
    con = sqlite3.connect(store_path / "memory.db")
    con.execute("CREATE TABLE mine (x)")
    con.commit()
    con.close()
    with pytest.raises(CorruptStoreError, match="not a store"):
        PersistentFAISS(store_path, embedding)


@pytest.mark.parametrize("distance", ["cosine", "l2", "ip"])
def test_relevance_scores_are_in_unit_interval(
    store_path: Path, embedding: Embeddings, distance: str
) -> None:
    with PersistentFAISS(store_path, embedding, distance=distance) as store:  # type: ignore[arg-type]
        store.add_texts([f"text {i}" for i in range(50)])
        pairs = store.similarity_search_with_relevance_scores("text 3", k=50)
        assert len(pairs) == 50
        scores = [score for _, score in pairs]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == sorted(scores, reverse=True)
        assert pairs[0][0].page_content == "text 3"


def test_query_of_wrong_length_when_dimension_learned_late(store_path: Path) -> None:
    embedder = BrokenEmbeddings([[0.1, 0.2, 0.3, 0.4]])
    with PersistentFAISS(store_path, embedder) as empty_reader:
        with PersistentFAISS(store_path, embedder) as writer:
            writer.add_texts(["four dims"])
        embedder.vectors = [[0.1, 0.2, 0.3]]
        with pytest.raises(
            EmbeddingMismatchError, match=r"4-dimensional.*3-dimensional"
        ):
            empty_reader.similarity_search("q")
        with pytest.raises(EmbeddingMismatchError):
            empty_reader.similarity_search("q", filter={"a": 1})


def test_k_accepts_numpy_integers(store_path: Path, embedding: Embeddings) -> None:
    import numpy as np

    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(["a", "b", "c"])
        assert len(store.similarity_search("a", k=np.int64(2))) == 2
        with pytest.raises(ValueError, match="k must be"):
            store.similarity_search("a", k=True)
        with pytest.raises(ValueError, match="k must be"):
            store.similarity_search("a", k=2.5)
