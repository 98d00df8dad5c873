"""LocalEmbeddings: the offline model, where meaning matters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from langchain_persistent_memory import PersistentMemory
from langchain_persistent_memory.embeddings import LocalEmbeddings

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def local() -> LocalEmbeddings:
    return LocalEmbeddings()


def test_vectors_are_unit_length_and_batched(local: LocalEmbeddings) -> None:
    texts = [f"sentence number {i} about the sea" for i in range(70)]  # > one batch
    vectors = np.asarray(local.embed_documents(texts))
    assert vectors.shape == (70, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    query = np.asarray(local.embed_query("the sea"))
    assert query.shape == (384,)
    assert local.embed_documents([]) == []


def test_meaning_without_shared_words(local: LocalEmbeddings) -> None:
    documents = [
        "I adopted a greyhound called Pixel last spring.",
        "My job is in accounting at a bank downtown.",
        "We grow tomatoes and basil on the balcony.",
    ]
    vectors = np.asarray(local.embed_documents(documents))
    scores = vectors @ np.asarray(local.embed_query("Which animal lives with them?"))
    assert int(np.argmax(scores)) == 0
    scores = vectors @ np.asarray(local.embed_query("Where do they work?"))
    assert int(np.argmax(scores)) == 1


def test_memory_finds_by_meaning(tmp_path: Path, local: LocalEmbeddings) -> None:
    with PersistentMemory(tmp_path / "m", local) as memory:
        pet = memory.add(
            "I adopted a greyhound called Pixel last spring.", user_id="u"
        ).ids[0]
        memory.add("My job is in accounting at a bank downtown.", user_id="u")
        memory.add("We grow tomatoes and basil on the balcony.", user_id="u")
        hits = memory.search("Which animal lives with them?", user_id="u", k=1)
        assert [d.id for d in hits] == [pet]
        assert hits[0].metadata["scores"]["keyword"] is None  # meaning alone found it


def test_near_duplicates_follow_the_models_scale(
    tmp_path: Path, local: LocalEmbeddings
) -> None:
    """E5 puts different sentences above 0.95; its own threshold keeps them apart."""
    a = "Wow, Caroline, that painting is awesome! Those colors are so vivid."
    b = "Wow, Caroline, your group sounds awesome! Supporting each other matters."
    similarity = float(
        np.asarray(local.embed_query(a)) @ np.asarray(local.embed_documents([b])[0])
    )
    with PersistentMemory(tmp_path / "m", local) as memory:
        first = memory.add(a, user_id="u")
        second = memory.add(b, user_id="u")
        assert len(first.ids) == 1
        assert len(second.ids) == 1, second.skipped
        paraphrase = memory.add(
            "Wow, Caroline, that painting is awesome! Those colours are so vivid.",
            user_id="u",
        )
        assert paraphrase.ids == []
        assert "near-duplicate" in paraphrase.skipped[0][1]
    assert similarity < LocalEmbeddings.near_duplicate_threshold
