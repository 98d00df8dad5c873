"""Metadata filters: applied before ranking, checked against a Python reference."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from langchain_persistent_memory import PersistentFAISS
from tests.unit_tests.conftest import TableEmbeddings, random_unit_vectors

if TYPE_CHECKING:
    from pathlib import Path

    from langchain_core.embeddings import Embeddings

MISSING = object()


def matches(meta: dict[str, Any], flt: dict[str, Any]) -> bool:
    """Reference semantics, written independently of the SQL compiler."""
    for key, cond in flt.items():
        if key == "$and":
            ok = all(matches(meta, sub) for sub in cond)
        elif key == "$or":
            ok = any(matches(meta, sub) for sub in cond)
        elif isinstance(cond, dict):
            ok = all(_op(meta.get(key, MISSING), op, val) for op, val in cond.items())
        else:
            ok = _op(meta.get(key, MISSING), "$eq", cond)
        if not ok:
            return False
    return True


def _same(a: Any, b: Any) -> bool:
    if a is MISSING or isinstance(a, (list, dict)) or a is None:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    return a == b


def _op(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return _same(value, arg)
    if op == "$ne":
        return not _same(value, arg)
    if op == "$in":
        return any(_same(value, a) for a in arg)
    if op == "$nin":
        return not any(_same(value, a) for a in arg)
    if op == "$exists":
        return (value is not MISSING) == arg
    comparable = value is not MISSING and not isinstance(value, (bool, list, dict))
    comparable = comparable and value is not None
    if not comparable or isinstance(value, str) != isinstance(arg, str):
        return False
    return {
        "$gt": value > arg,
        "$gte": value >= arg,
        "$lt": value < arg,
        "$lte": value <= arg,
    }[op]


def random_metadata(rng: random.Random) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if rng.random() < 0.9:
        meta["user"] = rng.choice(["ann", "bob", "cy", "dee"])
    if rng.random() < 0.8:
        meta["n"] = rng.choice([0, 1, 2, 3, 2.5, -1, 10**12])
    if rng.random() < 0.5:
        meta["flag"] = rng.choice([True, False])
    if rng.random() < 0.3:
        meta["date"] = rng.choice(["2023-01-05", "2024-03-01", "2024-12-31"])
    if rng.random() < 0.2:
        meta["tags"] = ["x", "y"]
    if rng.random() < 0.1:
        meta["n"] = rng.choice(["1", True, None])  # same key, other types
    return meta


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth < 2 and rng.random() < 0.3:
        how = rng.choice(["$and", "$or"])
        return {how: [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    key = rng.choice(["user", "n", "flag", "date", "tags", "absent"])
    values = {
        "user": ["ann", "bob", "zed"],
        "n": [0, 1, 2, 2.5, -1, 10**12, 1.0],
        "flag": [True, False],
        "date": ["2024-01-01", "2023-01-05"],
        "tags": ["x"],
        "absent": [1, "a"],
    }[key]
    op = rng.choice(
        ["$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte", None]
    )
    if op is None:
        return {key: rng.choice(values)}
    if op in ("$in", "$nin"):
        return {key: {op: rng.sample(values, rng.randint(0, len(values)))}}
    if op == "$exists":
        return {key: {op: rng.choice([True, False])}}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        value = rng.choice([v for v in values if not isinstance(v, bool)] or [1])
        second = rng.choice(["$lt", "$gte"])
        if rng.random() < 0.3 and not isinstance(value, str):
            return {key: {op: value, second: value + 1}}
        return {key: {op: value}}
    return {key: {op: rng.choice(values)}}


def test_filters_match_reference(tmp_path: Path) -> None:
    rng = random.Random(7)
    count = 400
    texts = [f"doc {i}" for i in range(count)]
    metadatas = [random_metadata(rng) for _ in texts]
    vectors = random_unit_vectors(count + 1, 8)
    table = dict(zip([*texts, "query"], vectors, strict=True))
    with PersistentFAISS(tmp_path / "s", TableEmbeddings(table)) as store:
        ids = store.add_texts(texts, metadatas)
        by_id = dict(zip(ids, metadatas, strict=True))
        tried = 0
        for _ in range(300):
            flt = random_filter(rng)
            expected = {i for i, m in by_id.items() if matches(m, flt)}
            got = store.similarity_search("query", k=count, filter=flt)
            assert {d.id for d in got} == expected, flt
            assert all(matches(d.metadata, flt) for d in got)
            # k smaller than the matches: exactly k, and they are the best k.
            if len(expected) > 3:
                best = store.similarity_search_with_score("query", k=3, filter=flt)
                assert len(best) == 3
                ranked = sorted(
                    expected,
                    key=lambda i: -float(table[texts[ids.index(i)]] @ table["query"]),
                )
                assert [d.id for d, _ in best] == ranked[:3]
                tried += 1
        assert tried > 50


def test_rare_user_among_100k_gets_all_their_rows(tmp_path: Path) -> None:
    count, dim = 100_000, 32
    vectors = random_unit_vectors(count + 1, dim, seed=3)
    texts = [f"t{i}" for i in range(count)]
    table = dict(zip([*texts, "query"], vectors, strict=True))
    rare = {17, 50_000, 99_998}
    metadatas = [
        {"user_id": "rare" if i in rare else f"u{i % 1000}"} for i in range(count)
    ]
    with PersistentFAISS(tmp_path / "s", TableEmbeddings(table)) as store:
        for start in range(0, count, 10_000):
            store.add_texts(
                texts[start : start + 10_000],
                metadatas[start : start + 10_000],
                ids=texts[start : start + 10_000],
            )
        got = store.similarity_search("query", k=10, filter={"user_id": "rare"})
        assert sorted(d.id for d in got) == sorted(f"t{i}" for i in rare)
        assert all(d.metadata == {"user_id": "rare"} for d in got)
        common = store.similarity_search("query", k=10, filter={"user_id": "u5"})
        assert len(common) == 10
        assert {d.metadata["user_id"] for d in common} == {"u5"}
        # The unfiltered search is exact: same top-10 as brute force in numpy.
        top = np.argsort(-(vectors[:count] @ vectors[count]))[:10]
        assert [d.id for d in store.similarity_search("query", k=10)] == [
            f"t{i}" for i in top
        ]


def test_filter_values_are_data_not_sql(
    store_path: Path, embedding: Embeddings
) -> None:
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(
            ["a", "b"], [{"user": "x'; DROP TABLE documents; --"}, {"user": "y"}]
        )
        hostile = "x' OR 1=1 --"
        assert store.similarity_search("a", k=5, filter={"user": hostile}) == []
        got = store.similarity_search(
            "a", k=5, filter={"user": "x'; DROP TABLE documents; --"}
        )
        assert [d.page_content for d in got] == ["a"]
        assert store.similarity_search("a", k=5, filter={"us'er": "y"}) == []
        assert len(store.similarity_search("a", k=5)) == 2


@pytest.mark.parametrize(
    ("flt", "error", "words"),
    [
        ({"user": {"$regex": "a"}}, ValueError, "Unknown filter operator"),
        ({"$not": {"user": "a"}}, ValueError, "Unknown filter operator"),
        ({"user": ["a", "b"]}, TypeError, "compares str, int, float or bool"),
        ({"user": {"$in": "ab"}}, TypeError, "take a list"),
        ({"n": {"$gt": True}}, TypeError, "not booleans"),
        ({"n": {"$gt": float("nan")}}, TypeError, "compares"),
        ({"$and": []}, ValueError, "non-empty list"),
        ({"user": {}}, ValueError, "no operator"),
        (lambda _meta: True, TypeError, "filter must be a dict"),
    ],
)
def test_bad_filters_are_clear_errors(
    store_path: Path, embedding: Embeddings, flt: Any, error: type, words: str
) -> None:
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(["a"], [{"user": "a", "n": 1}])
        with pytest.raises(error, match=words):
            store.similarity_search("a", k=1, filter=flt)


def test_retriever_passes_filter_and_k(store_path: Path, embedding: Embeddings) -> None:
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(
            [f"note {i}" for i in range(30)],
            [{"user_id": f"u{i % 3}"} for i in range(30)],
        )
        retriever = store.as_retriever(
            search_kwargs={"k": 4, "filter": {"user_id": "u1"}}
        )
        docs = retriever.invoke("note 4")
        assert len(docs) == 4
        assert {d.metadata["user_id"] for d in docs} == {"u1"}
        assert docs[0].page_content == "note 4"
        mmr = store.as_retriever(
            search_type="mmr", search_kwargs={"k": 3, "filter": {"user_id": "u2"}}
        ).invoke("note 5")
        assert len(mmr) == 3
        assert {d.metadata["user_id"] for d in mmr} == {"u2"}
        threshold = store.as_retriever(
            search_type="similarity_score_threshold",
            search_kwargs={"score_threshold": 0.99, "k": 5},
        ).invoke("note 7")
        assert [d.page_content for d in threshold] == ["note 7"]
