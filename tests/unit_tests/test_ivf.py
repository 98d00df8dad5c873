"""The approximate `index="ivf"` option follows every write like the exact index."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from langchain_persistent_memory import PersistentFAISS
from langchain_persistent_memory._index import IVF_MIN_ROWS
from tests.unit_tests.conftest import TableEmbeddings, random_unit_vectors

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

COUNT = IVF_MIN_ROWS + 2_000


@pytest.fixture(scope="module")
def table() -> dict[str, np.ndarray]:
    vectors = random_unit_vectors(COUNT + 60, 24, seed=11)
    names = [f"t{i}" for i in range(COUNT)] + [f"q{i}" for i in range(60)]
    return dict(zip(names, vectors, strict=True))


def ids_for(store: PersistentFAISS, query: str, k: int = 10, **kwargs: object) -> list:
    return [d.id for d in store.similarity_search(query, k=k, **kwargs)]


def test_exhaustive_ivf_equals_exact_through_writes(
    tmp_path: Path, table: dict[str, np.ndarray]
) -> None:
    embedding = TableEmbeddings(table)
    texts = [f"t{i}" for i in range(COUNT)]
    metadatas = [{"group": i % 50} for i in range(COUNT)]
    with PersistentFAISS(tmp_path / "s", embedding) as exact:
        exact.add_texts(texts, metadatas, ids=texts)
    # nprobe above the number of lists makes the IVF search visit every list.
    with (
        PersistentFAISS(tmp_path / "s", embedding, index="ivf", nprobe=10_000) as ivf,
        PersistentFAISS(tmp_path / "s", embedding) as exact,
    ):
        queries = [f"q{i}" for i in range(20)]
        assert [ids_for(ivf, q) for q in queries] == [
            ids_for(exact, q) for q in queries
        ]
        assert ivf._index is not None
        assert ivf._index._ivf is not None  # the IVF path really ran
        # Writes after the IVF index was built: delete the best hit of
        # each query, upsert another row onto a query's vector.
        for q in queries[:10]:
            ivf.delete([ids_for(ivf, q, k=1)[0]])
        table["moved"] = table["q15"]
        ivf.add_texts(["moved"], [{"group": 1}], ids=["t5"])
        got = [ids_for(ivf, q) for q in queries]
        assert got == [ids_for(exact, q) for q in queries]
        assert ids_for(ivf, "q15", k=1) == ["t5"]
        assert ids_for(ivf, "q3", k=5, filter={"group": 7}) == ids_for(
            exact, "q3", k=5, filter={"group": 7}
        )
    with PersistentFAISS(tmp_path / "s", embedding, index="ivf", nprobe=10_000) as ivf:
        assert ids_for(ivf, "q15", k=1) == ["t5"]
        assert len(ivf.similarity_search("q1", k=COUNT)) == COUNT - 10


def test_ivf_with_few_probes_returns_k_valid_results(
    tmp_path: Path, table: dict[str, np.ndarray]
) -> None:
    embedding = TableEmbeddings(table)
    texts = [f"t{i}" for i in range(COUNT)]
    with PersistentFAISS(tmp_path / "s", embedding, index="ivf", nprobe=4) as store:
        store.add_texts(texts, ids=texts)
        store.delete(texts[:100])
        for i in range(10):
            hits = store.similarity_search_with_score(f"q{i}", k=10)
            assert len(hits) == 10
            assert not {d.id for d, _ in hits} & set(texts[:100])
            scores = [s for _, s in hits]
            assert scores == sorted(scores, reverse=True)
            for doc, score in hits:
                assert score == pytest.approx(
                    float(table[doc.id] @ table[f"q{i}"]), abs=1e-5
                )


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"index": "hnsw"}, "index must be"), ({"nprobe": 0}, "nprobe")],
)
def test_bad_index_options(
    tmp_path: Path, table: dict[str, np.ndarray], kwargs: dict, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        PersistentFAISS(tmp_path / "s", TableEmbeddings(table), **kwargs)
