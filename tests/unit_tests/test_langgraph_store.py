"""PersistentMemoryStore: LangGraph's `BaseStore` on a `PersistentMemory`.

Most tests run the same operations on LangGraph's reference `InMemoryStore`
and on ours, on both backends, and compare what they return (allowing only
the differences the module docstring documents). The rest cover what the
reference has not: TTL, sharing the items with `PersistentMemory`, errors,
the async twins, persistence and `migrate`.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore

from langchain_persistent_memory import PersistentMemory
from langchain_persistent_memory._migrate import migrate
from langchain_persistent_memory.langgraph import PersistentMemoryStore

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from tests.unit_tests.conftest import Place

D = 32
TOL = 1e-5
TAGS = ["red", "green", "blue", "gold"]
WORDS = [
    "tea",
    "oslo",
    "python",
    "cat",
    "turing",
    "billing",
    "postgres",
    "dentist",
    "harbour",
    "violin",
    "glacier",
    "sourdough",
]
ORDER = ["$gt", "$gte", "$lt", "$lte"]


# ---------------------------------------------------------------- helpers


@dataclass
class Pair:
    """The same index on both stores, over one embedding object."""

    memory: PersistentMemory
    ours: PersistentMemoryStore
    ref: InMemoryStore

    def put(self, namespace: tuple[str, ...], key: str, value: Any, **kw: Any) -> None:
        self.ours.put(namespace, key, value, **kw)
        self.ref.put(namespace, key, value, **kw)

    def delete(self, namespace: tuple[str, ...], key: str) -> None:
        self.ours.delete(namespace, key)
        self.ref.delete(namespace, key)


def make_pair(memory: PersistentMemory, fields: list[str] | None) -> Pair:
    embedding = memory._embedding
    ours_index: dict[str, Any] = {} if fields is None else {"fields": fields}
    ref_index: dict[str, Any] = {"embed": embedding, "dims": D}
    if fields is not None:
        ref_index["fields"] = fields
    return Pair(
        memory,
        PersistentMemoryStore(memory, index=ours_index),  # type: ignore[arg-type]
        InMemoryStore(index=ref_index),  # type: ignore[arg-type]
    )


@pytest.fixture
def memory(place: Place) -> Iterator[PersistentMemory]:
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=D)) as mem:
        yield mem


@pytest.fixture
def pair(memory: PersistentMemory) -> Pair:
    return make_pair(memory, ["text"])


@pytest.fixture
def store(memory: PersistentMemory) -> PersistentMemoryStore:
    """A store indexing `content`, as agents and `PersistentMemory.add` use."""
    return PersistentMemoryStore(memory, index={"fields": ["content"]})


def rows(items: Sequence[Item | None]) -> list[Any]:
    return [None if i is None else (tuple(i.namespace), i.key, i.value) for i in items]


def keys(items: Sequence[Item]) -> list[tuple[tuple[str, ...], str]]:
    return [(tuple(i.namespace), i.key) for i in items]


def prune(ref: InMemoryStore) -> InMemoryStore:
    """Drop the reference's empty namespaces (its `get` and `delete` leave them)."""
    for namespace in [ns for ns, found in ref._data.items() if not found]:
        del ref._data[namespace]
    return ref


def newest_first(items: Sequence[Item]) -> list[Item]:
    """The documented order of a search without a query."""
    return sorted(items, key=lambda i: (-i.updated_at.timestamp(), i.namespace, i.key))


def assert_same_ranking(ours: Sequence[Any], ref: Sequence[Any], what: object) -> None:
    assert rows(ours) == rows(ref), what
    for mine, theirs in zip(ours, ref, strict=True):
        if theirs.score is None:
            assert mine.score is None, what
        else:
            assert mine.score is not None, what
            assert abs(mine.score - theirs.score) < TOL, what


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def everything(store: PersistentMemoryStore) -> list[Any]:
    """All live items with their times, and the number of memories."""
    items = store.search((), limit=10_000, refresh_ttl=False)
    listed = sorted(
        (tuple(i.namespace), i.key, i.value, i.created_at, i.updated_at) for i in items
    )
    return [listed, store.memory.stats().memories]


def contexts_of(memory: PersistentMemory, memory_id: str) -> str | None:
    """The keyword context stored with a memory (the memory's own tables)."""
    with memory._db.read() as con:
        (label,) = con.execute(
            "SELECT label FROM documents WHERE id = ?", (memory_id,)
        ).fetchone()
        found: str | None = memory._text.contexts(con, [label]).get(label)
    return found or None


def texts_of(memory: PersistentMemory, query: str, user: str) -> list[str]:
    return [d.page_content for d in memory.search(query, user_id=user, k=50)]


# ----------------------------------------------- comparison: InMemoryStore


def test_put_get_delete_match_in_memory_store(pair: Pair) -> None:
    values = {
        (("docs",), "a"): {"text": "alpha document", "n": 1, "nested": {"x": [1, 2]}},
        (("docs", "sub"), "b"): {"text": "beta document", "tags": ["x", "y"]},
        (("ünï", "çødé"), "ключ"): {"text": "gamma 🚀 document", "f": 2.5},
        (("memories", "alice"), "tea"): {"text": "Alice drinks tea", "kind": "x"},
        (("docs",), 'quote"key\\'): {"text": "delta", "empty": {}, "none": None},
    }
    for (ns, key), value in values.items():
        pair.put(ns, key, value)
    for ns, key in [*values, (("docs",), "missing"), (("nope",), "a")]:
        ours, ref = pair.ours.get(ns, key), pair.ref.get(ns, key)
        assert rows([ours]) == rows([ref]), (ns, key)
    assert pair.ours.get(("docs",), "a") is not None
    # A new put replaces the value; ours keeps created_at (the reference resets it).
    first = pair.ours.get(("docs",), "a")
    assert first is not None
    time.sleep(0.01)
    pair.put(("docs",), "a", {"text": "alpha again", "n": 2})
    again = pair.ours.get(("docs",), "a")
    assert rows([again]) == rows([pair.ref.get(("docs",), "a")])
    assert again is not None
    assert again.value == {"text": "alpha again", "n": 2}
    assert again.created_at == first.created_at
    assert again.updated_at > first.updated_at
    # Deleting: gone on both; deleting what is not there is a no-op on both.
    pair.delete(("docs", "sub"), "b")
    pair.delete(("docs",), "never-there")
    assert pair.ours.get(("docs", "sub"), "b") is None
    assert pair.ref.get(("docs", "sub"), "b") is None
    ours_all = pair.ours.search((), limit=100)
    ref_all = pair.ref.search((), limit=100)
    assert sorted(rows(ours_all)) == sorted(rows(ref_all))
    assert len(ours_all) == 4


def test_search_with_query_matches_scores_and_order(pair: Pair) -> None:
    rng = random.Random(3)
    spaces = [("docs",), ("docs", "a"), ("docs", "b"), ("notes",), ("memories", "u")]
    for i in range(24):
        text = f"item {i}: " + " ".join(rng.sample(WORDS, 3))
        pair.put(rng.choice(spaces), f"k{i}", {"text": text, "n": i % 5})
    for query in ["tea in oslo", "python billing", "violin", "harbour glacier cat"]:
        for prefix in [(), ("docs",), ("docs", "a"), ("notes",), ("memories",)]:
            for limit in (3, 10, 50):
                ours = pair.ours.search(prefix, query=query, limit=limit)
                ref = pair.ref.search(prefix, query=query, limit=limit)
                assert_same_ranking(ours, ref, (query, prefix, limit))
                if prefix == () and limit == 50:
                    assert len(ours) == 24
                    assert all(r.score is not None for r in ours)
            flt = {"n": {"$gte": 2}}
            ours = pair.ours.search(("docs",), query=query, filter=flt, limit=50)
            ref = pair.ref.search(("docs",), query=query, filter=flt, limit=50)
            assert_same_ranking(ours, ref, (query, flt))
            assert all(r.value["n"] >= 2 for r in ours)


def test_whole_value_index_matches(memory: PersistentMemory) -> None:
    pair = make_pair(memory, None)  # fields default to ["$"] on both
    for i in range(8):
        pair.put(("docs",), f"k{i}", {"title": f"title {i}", "body": WORDS[i], "n": i})
    for query in ["title 3", "python", "glacier"]:
        ours = pair.ours.search(("docs",), query=query)
        ref = pair.ref.search(("docs",), query=query)
        assert_same_ranking(ours, ref, query)
        assert len(ours) == 8


def test_search_without_query_is_newest_first(pair: Pair) -> None:
    for i in range(8):
        pair.put(("docs", f"n{i % 3}"), f"k{i}", {"text": f"document {i}", "i": i})
    pair.put(("docs", "n1"), "k1", {"text": "document 1 updated", "i": 1})
    ours = pair.ours.search(("docs",), limit=100)
    ref = pair.ref.search(("docs",), limit=100)
    assert rows(ours) == rows(newest_first(ref))
    assert ours[0].key == "k1"  # the re-put moved it first
    assert [i.key for i in ours[1:]] == [f"k{i}" for i in (7, 6, 5, 4, 3, 2, 0)]
    assert all(r.score is None for r in ours)
    # Ties on updated_at (one batch writes at one time) go by namespace, key.
    pair.ours.batch(
        [PutOp(("tie",), key, {"text": f"tied {key}"}) for key in ["b", "c", "a"]]
        + [PutOp(("tie", "0"), "z", {"text": "tied z"})]
    )
    tied = pair.ours.search(("tie",))
    assert len({i.updated_at for i in tied}) == 1
    assert keys(tied) == [
        (("tie",), "a"),
        (("tie",), "b"),
        (("tie",), "c"),
        (("tie", "0"), "z"),
    ]


FILTER_ITEMS = [
    {"n": 0, "f": 0.5, "tag": "red", "meta": {"color": "red", "size": 1}, "tags": []},
    {"n": 1, "f": 1.5, "tag": "blue", "meta": {"color": "blue", "size": 2}},
    {"n": 2, "f": 2.0, "tag": "red", "meta": {"color": "blue", "size": 3}},
    {"n": 3, "f": 3.5, "tag": "gold", "meta": {"color": "red", "size": 2}},
    {"n": 4, "f": 4.0, "tag": "green", "meta": {"color": "gold", "size": 1}},
    {"n": 5, "f": 5.5, "tag": "red", "meta": {"color": "red", "size": 3}},
    {"n": 6, "f": 6.0, "tag": "blue", "meta": {"color": "green", "size": 0}},
    {"n": 7, "f": 7.5, "tag": "gold", "meta": {"color": "red", "size": 1}},
]
TAG_LISTS = [["a", "b"], ["a"], [], ["b", "a"], ["a", "b"], ["b"], ["a"], ["c"]]


def put_filter_items(pair: Pair) -> None:
    for i, (value, tags) in enumerate(zip(FILTER_ITEMS, TAG_LISTS, strict=True)):
        full = {**value, "tags": tags, "text": f"filter item {i} " + WORDS[i]}
        pair.put(("f", "a" if i % 2 else "b"), f"k{i}", full)


HAND_FILTERS: list[dict[str, Any]] = [
    {"tag": "red"},
    {"tag": {"$eq": "red"}},
    {"tag": {"$ne": "red"}},
    {"n": {"$gt": 3}},
    {"n": {"$gte": 3}},
    {"n": {"$lt": 3}},
    {"n": {"$lte": 3}},
    {"n": {"$gt": 1, "$lte": 5}},
    {"n": 3.0},
    {"f": {"$gt": 2}},
    {"f": {"$lte": 3.5}},
    {"f": 2},
    {"meta": {"color": "blue"}},
    {"meta": {"color": "red", "size": 2}},
    {"meta": {"size": {"$gte": 2}}},
    {"tags": ["a", "b"]},
    {"tags": []},
    {"tags": {"$eq": ["a"]}},
    {"tags": {"$ne": ["a"]}},
    {"tag": "red", "n": {"$lte": 4}},
    {"tag": "gold", "meta": {"color": "red"}, "f": {"$gt": 5}},
    {"missing": {"$ne": "x"}},
    {"missing": "x"},
    {"tag": "purple"},
]


def test_filters_match_in_memory_store(pair: Pair) -> None:
    put_filter_items(pair)
    for flt in HAND_FILTERS:
        ours = pair.ours.search(("f",), filter=flt, limit=100)
        ref = pair.ref.search(("f",), filter=flt, limit=100)
        assert rows(ours) == rows(newest_first(ref)), flt
        ours = pair.ours.search(("f",), query="item tea", filter=flt, limit=100)
        ref = pair.ref.search(("f",), query="item tea", filter=flt, limit=100)
        assert_same_ranking(ours, ref, flt)
    # The filters were not all trivially empty or full.
    sizes = {
        len(pair.ours.search(("f",), filter=flt, limit=100)) for flt in HAND_FILTERS
    }
    assert 0 in sizes
    assert len(sizes) >= 5


def test_eq_and_ne_with_an_object_match_in_memory_store(pair: Pair) -> None:
    """`{"$eq": {...}}` is equality of the whole object in the reference."""
    put_filter_items(pair)
    for flt in [
        {"meta": {"$eq": {"color": "red"}}},
        {"meta": {"$eq": {"color": "red", "size": 2}}},
        {"meta": {"$ne": {"color": "red"}}},
    ]:
        ours = pair.ours.search(("f",), filter=flt, limit=100)
        ref = pair.ref.search(("f",), filter=flt, limit=100)
        assert rows(ours) == rows(newest_first(ref)), flt


def filter_entries() -> st.SearchStrategy[tuple[str, Any]]:
    number = st.integers(-1, 9) | st.floats(-1, 9, allow_nan=False)
    ops = st.dictionaries(st.sampled_from([*ORDER, "$eq", "$ne"]), number, min_size=1)
    tag_list = st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)
    return st.one_of(
        st.tuples(st.just("tag"), st.sampled_from(TAGS)),
        st.tuples(
            st.just("tag"),
            st.dictionaries(
                st.sampled_from(["$eq", "$ne"]), st.sampled_from(TAGS), min_size=1
            ),
        ),
        st.tuples(st.sampled_from(["n", "f"]), ops | number),
        st.tuples(
            st.just("meta"),
            st.fixed_dictionaries(
                {}, optional={"color": st.sampled_from(TAGS), "size": ops | number}
            ),
        ),
        st.tuples(
            st.just("tags"), tag_list | st.builds(lambda t: {"$eq": t}, tag_list)
        ),
        st.tuples(st.just("tags"), st.builds(lambda t: {"$ne": t}, tag_list)),
        st.tuples(st.just("missing"), st.builds(lambda t: {"$ne": t}, st.text())),
    )


def test_generated_filters_match_in_memory_store(pair: Pair) -> None:
    put_filter_items(pair)
    matched: set[int] = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.lists(filter_entries(), min_size=1, max_size=3))
    def check(entries: list[tuple[str, Any]]) -> None:
        flt = dict(entries)
        ours = pair.ours.search(("f",), filter=flt, limit=100)
        ref = pair.ref.search(("f",), filter=flt, limit=100)
        assert rows(ours) == rows(newest_first(ref)), flt
        matched.add(len(ours))

    check()
    assert len(matched) > 2


def test_ours_order_operators_compare_like_with_like(pair: Pair) -> None:
    """Documented: `$gt`-style compare number/number or str/str, else no match."""
    put_filter_items(pair)
    by_text = pair.ours.search(("f",), filter={"tag": {"$gt": "gold"}}, limit=100)
    assert sorted(i.value["tag"] for i in by_text) == ["green", "red", "red", "red"]
    assert pair.ours.search(("f",), filter={"n": {"$gt": "0"}}) == []
    assert pair.ours.search(("f",), filter={"tag": {"$lt": 5}}) == []
    assert pair.ours.search(("f",), filter={"missing": {"$gt": 0}}) == []
    assert pair.ours.search(("f",), filter={"meta": {"$gte": 0}}) == []


def test_pagination_concatenates_to_the_full_list(pair: Pair) -> None:
    rng = random.Random(11)
    for i in range(13):
        ns = ("p", rng.choice(["x", "y"]))
        pair.put(ns, f"k{i:02}", {"text": f"page item {i} " + rng.choice(WORDS)})
    for query in [None, "page tea", "sourdough"]:
        full_ours = pair.ours.search(("p",), query=query, limit=100)
        full_ref = pair.ref.search(("p",), query=query, limit=100)
        if query is None:
            full_ref = newest_first(full_ref)
        assert len(full_ours) == 13
        assert_same_ranking(full_ours, full_ref, query)
        for size in (1, 2, 4, 5):
            pages: list[Any] = []
            for offset in range(0, 16, size):
                page = pair.ours.search(("p",), query=query, limit=size, offset=offset)
                assert len(page) <= size
                if query is not None:
                    ref_page = pair.ref.search(
                        ("p",), query=query, limit=size, offset=offset
                    )
                    assert_same_ranking(page, ref_page, (query, size, offset))
                pages += page
            assert_same_ranking(pages, full_ours, (query, size))
        assert pair.ours.search(("p",), query=query, offset=13) == []
        assert pair.ours.search(("p",), query=query, limit=0) == []


NAMESPACES = [
    ("a",),
    ("a", "b"),
    ("a", "b", "c"),
    ("a", "b", "c", "d"),
    ("a", "x", "c"),
    ("ab",),
    ("ab", "b"),
    ('a"', "b"),
    ("a\\",),
    ("é",),
    ("é", "🚀"),
    ("b", "a"),
    ("memories", "alice"),
    ("memories", "bob", "c"),
]


def test_prefix_search_across_depths_matches(pair: Pair) -> None:
    for i, ns in enumerate(NAMESPACES):
        pair.put(ns, "k", {"text": f"namespace {i} " + WORDS[i % len(WORDS)]})
        pair.put(ns, "j", {"text": f"second {i} " + WORDS[(i + 5) % len(WORDS)]})
    prefixes: list[tuple[str, ...]] = [()]
    prefixes += sorted({ns[:d] for ns in NAMESPACES for d in range(1, len(ns) + 1)})
    prefixes += [("a", "c"), ("zz",), ("a", "b", "c", "d", "e"), ("memories",)]
    for prefix in prefixes:
        ours = pair.ours.search(prefix, limit=100)
        ref = pair.ref.search(prefix, limit=100)
        assert rows(ours) == rows(newest_first(ref)), prefix
        assert all(tuple(i.namespace[: len(prefix)]) == prefix for i in ours)
        ours = pair.ours.search(prefix, query="namespace cat", limit=100)
        ref = pair.ref.search(prefix, query="namespace cat", limit=100)
        assert_same_ranking(ours, ref, prefix)
    assert len(pair.ours.search(("a",), limit=100)) == 10
    assert len(pair.ours.search(("ab",), limit=100)) == 4


def test_list_namespaces_matches(pair: Pair) -> None:
    for ns in NAMESPACES:
        pair.put(ns, "k", {"text": "x " + "/".join(ns)})
    prefixes = [None, ("a",), ("a", "b"), ("*",), ("a", "*", "c"), ("*", "b"), ("zz",)]
    suffixes = [None, ("c",), ("b", "c"), ("*",), ("*", "c"), ("a",), ("alice",)]
    for prefix in prefixes:
        for suffix in suffixes:
            for max_depth in (None, 1, 2, 3):
                for limit, offset in [(100, 0), (2, 0), (2, 1), (3, 4), (0, 0)]:
                    args: dict[str, Any] = {
                        "prefix": prefix,
                        "suffix": suffix,
                        "max_depth": max_depth,
                        "limit": limit,
                        "offset": offset,
                    }
                    ours = pair.ours.list_namespaces(**args)
                    assert ours == pair.ref.list_namespaces(**args), args
    assert pair.ours.list_namespaces(prefix=("a",)) == [
        ("a",),
        ("a", "b"),
        ("a", "b", "c"),
        ("a", "b", "c", "d"),
        ("a", "x", "c"),
    ]
    assert pair.ours.list_namespaces(max_depth=1)[:4] == [
        ("a",),
        ('a"',),
        ("a\\",),
        ("ab",),
    ]


def test_per_put_index_false_and_field_lists(pair: Pair) -> None:
    pair.put(("d",), "plain", {"text": "indexed by default fields", "other": "violin"})
    pair.put(
        ("d",), "other", {"text": "not this", "other": "a violin case"}, index=["other"]
    )
    pair.put(("d",), "both", {"text": "tea time", "x": {"y": "oslo"}}, index=["x.y"])
    pair.put(("d",), "none", {"text": "never embedded violin"}, index=False)
    for query in ["violin", "oslo", "tea"]:
        ours = pair.ours.search(("d",), query=query, limit=10)
        ref = pair.ref.search(("d",), query=query, limit=10)
        # The unindexed item comes last with no score on both.
        assert_same_ranking(ours, ref, query)
        assert ours[-1].key == "none"
        assert ours[-1].score is None
        assert sum(r.score is None for r in ours) == 1
    vector = pair.memory._embedding.embed_query
    scores = {r.key: r.score for r in pair.ours.search(("d",), query="oslo")}
    assert scores["both"] == pytest.approx(
        cosine(vector("oslo"), vector("oslo")), abs=TOL
    )
    assert scores["other"] == pytest.approx(
        cosine(vector("a violin case"), vector("oslo")), abs=TOL
    )


def test_reput_with_index_false_drops_the_vector(pair: Pair) -> None:
    """Documented: unlike the reference, the old vector does not linger."""
    store, memory = pair.ours, pair.memory
    store.put(("memories", "u"), "k", {"text": "Uma plays the violin every evening"})
    assert texts_of(memory, "violin evening", "u") == [
        "Uma plays the violin every evening"
    ]
    scored = store.search(("memories", "u"), query="violin")
    assert scored[0].score is not None
    store.put(("memories", "u"), "k", {"text": "Uma plays the violin"}, index=False)
    again = store.search(("memories", "u"), query="violin")
    assert rows(again) == [(("memories", "u"), "k", {"text": "Uma plays the violin"})]
    assert again[0].score is None
    assert texts_of(memory, "violin evening", "u") == []
    assert memory.stats().memories == 0


def test_several_indexed_texts_are_one_vector(pair: Pair) -> None:
    """Documented: texts joined by newlines, one vector (not max over texts)."""
    store, embed = pair.ours, pair.memory._embedding
    value = {"title": "Oslo harbour", "body": "sourdough bakery", "tags": ["a", "b"]}
    store.put(("d",), "k", value, index=["title", "body", "tags[*]"])
    for query in ["Oslo harbour", "bakery", "b"]:
        (hit,) = store.search(("d",), query=query)
        want = cosine(
            embed.embed_query("Oslo harbour\nsourdough bakery\na\nb"),
            embed.embed_query(query),
        )
        assert hit.score == pytest.approx(want, abs=TOL)
    # The memory's text is the joined text.
    (memory_text,) = [
        d.page_content
        for d in pair.memory.search("Oslo", user_id=store.user_id(("d",)))
    ]
    assert memory_text == "Oslo harbour\nsourdough bakery\na\nb"


def random_value(rng: random.Random, count: int) -> dict[str, Any]:
    return {
        "text": f"note {count}: " + " ".join(rng.sample(WORDS, 3)),
        "n": rng.randint(0, 9),
        "tag": rng.choice(TAGS),
        "meta": {"color": rng.choice(TAGS), "size": rng.randint(0, 3)},
        "tags": sorted(rng.sample(["a", "b", "c"], rng.randint(0, 2))),
    }


def random_filter(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.5:
        return None
    makers = [
        lambda: ("tag", rng.choice(TAGS)),
        lambda: ("tag", {rng.choice(["$eq", "$ne"]): rng.choice(TAGS)}),
        lambda: ("n", {rng.choice([*ORDER, "$eq", "$ne"]): rng.randint(-1, 10)}),
        lambda: ("n", {"$gte": rng.randint(0, 4), "$lt": rng.randint(4, 10)}),
        lambda: ("meta", {"color": rng.choice(TAGS)}),
        lambda: ("meta", {"size": {rng.choice(ORDER): rng.randint(0, 3)}}),
        lambda: ("tags", sorted(rng.sample(["a", "b", "c"], rng.randint(0, 2)))),
        lambda: ("missing", {"$ne": "x"}),
    ]
    return dict(rng.choice(makers)() for _ in range(rng.randint(1, 2)))


RANDOM_SPACES = [
    ("docs",),
    ("docs", "a"),
    ("docs", "b"),
    ("docs", "a", "x"),
    ("memories", "alice"),
    ("memories", "bob"),
    ("other", "b"),
]
RANDOM_PREFIXES = [
    (),
    ("docs",),
    ("docs", "a"),
    ("docs", "a", "x"),
    ("memories",),
    ("memories", "alice"),
    ("other",),
    ("nope",),
]


def random_list_args(rng: random.Random) -> dict[str, Any]:
    return {
        "prefix": rng.choice(
            [None, ("docs",), ("*",), ("memories", "*"), ("docs", "*", "x")]
        ),
        "suffix": rng.choice([None, ("alice",), ("*",), ("a", "x"), ("b",)]),
        "max_depth": rng.choice([None, 1, 2]),
        "limit": rng.randint(1, 8),
        "offset": rng.randint(0, 3),
    }


def test_random_operations_match_in_memory_store(place: Place) -> None:
    embedding = DeterministicFakeEmbedding(size=D)
    checked: dict[str, int] = {"get": 0, "query": 0, "plain": 0, "list": 0}
    for seed in (1, 2):
        rng = random.Random(seed)
        with PersistentMemory(place(f"r{seed}"), embedding) as memory:
            pair = make_pair(memory, ["text"])
            for step in range(110):
                what = rng.random()
                ns = rng.choice(RANDOM_SPACES)
                key = f"k{rng.randrange(6)}"
                if what < 0.4:
                    pair.put(ns, key, random_value(rng, step))
                elif what < 0.5:
                    pair.delete(ns, key)
                elif what < 0.6:
                    assert rows([pair.ours.get(ns, key)]) == rows(
                        [pair.ref.get(ns, key)]
                    )
                    checked["get"] += 1
                elif what < 0.9:
                    prefix = rng.choice(RANDOM_PREFIXES)
                    query = rng.choice([None, " ".join(rng.sample(WORDS, 2))])
                    flt = random_filter(rng)
                    limit, offset = rng.randint(1, 6), rng.randint(0, 4)
                    ours = pair.ours.search(
                        prefix, query=query, filter=flt, limit=limit, offset=offset
                    )
                    where = (seed, step, prefix, query, flt, limit, offset)
                    if query is None:
                        full = pair.ref.search(prefix, filter=flt, limit=10_000)
                        ref = newest_first(full)[offset : offset + limit]
                        checked["plain"] += 1
                    else:
                        ref = pair.ref.search(
                            prefix, query=query, filter=flt, limit=limit, offset=offset
                        )
                        checked["query"] += 1
                    assert_same_ranking(ours, ref, where)
                else:
                    args = random_list_args(rng)
                    ours_ns = pair.ours.list_namespaces(**args)
                    assert ours_ns == prune(pair.ref).list_namespaces(**args), (
                        seed,
                        step,
                        args,
                    )
                    checked["list"] += 1
            final_ours = pair.ours.search((), limit=10_000)
            final_ref = newest_first(pair.ref.search((), limit=10_000))
            assert rows(final_ours) == rows(final_ref)
            assert len(final_ours) > 10
    assert min(checked.values()) > 5


# -------------------------------------------------------------------- TTL

SHORT = 0.01  # minutes: 0.6 s


def test_default_and_per_put_ttl_expire_before_any_sweep(
    memory: PersistentMemory,
) -> None:
    store = PersistentMemoryStore(
        memory, index={"fields": ["content"]}, ttl={"default_ttl": SHORT}
    )
    store.put(("memories", "tia"), "soon", {"content": "Tia's parcel arrives Monday"})
    store.put(("brief",), "soon", {"content": "a brief note about kites"})
    store.put(("memories", "tia"), "kept", {"content": "Tia speaks Basque"}, ttl=None)
    store.put(("memories", "tia"), "long", {"content": "Tia owns a kayak"}, ttl=60)
    assert store.get(("memories", "tia"), "soon") is not None
    assert ("brief",) in store.list_namespaces()
    assert len(store.search(("memories", "tia"))) == 3
    time.sleep(SHORT * 60 + 0.3)
    assert store.get(("memories", "tia"), "soon") is None
    assert store.get(("brief",), "soon") is None
    assert store.get(("memories", "tia"), "kept") is not None
    assert store.get(("memories", "tia"), "long") is not None
    found = store.search(("memories", "tia"), query="parcel Monday", limit=50)
    assert sorted(i.key for i in found) == ["kept", "long"]
    assert store.search(("brief",)) == []
    assert store.search((), filter={"content": "a brief note about kites"}) == []
    assert store.list_namespaces() == [("memories", "tia")]
    # Sweeping deletes the expired items and their memories.
    assert "Tia's parcel arrives Monday" in texts_of(memory, "parcel", "tia")
    assert store.sweep_ttl() == 2
    assert store.sweep_ttl() == 0
    assert "Tia's parcel arrives Monday" not in texts_of(memory, "parcel", "tia")
    assert texts_of(memory, "kites", store.user_id(("brief",))) == []
    assert sorted(texts_of(memory, "Tia", "tia")) == [
        "Tia owns a kayak",
        "Tia speaks Basque",
    ]
    assert memory.stats().memories == 2


def test_refresh_on_read_pushes_expiry_back(memory: PersistentMemory) -> None:
    ttl = 0.03  # 1.8 s
    store = PersistentMemoryStore(
        memory, index={"fields": ["content"]}, ttl={"default_ttl": ttl}
    )
    lazy = PersistentMemoryStore(
        memory,
        index={"fields": ["content"]},
        ttl={"default_ttl": ttl, "refresh_on_read": False},
    )
    names = [
        "get",
        "get_no",
        "search",
        "search_no",
        "untouched",
        "lazy_get",
        "lazy_yes",
    ]
    for name in names:
        store.put(("t",), name, {"content": f"item {name}", "name": name})
    time.sleep(ttl * 60 * 0.55)
    assert store.get(("t",), "get") is not None  # refresh_on_read defaults to True
    assert store.get(("t",), "get_no", refresh_ttl=False) is not None
    assert len(store.search(("t",), filter={"name": "search"})) == 1
    assert (
        len(
            store.search(
                ("t",), query="item", filter={"name": "search_no"}, refresh_ttl=False
            )
        )
        == 1
    )
    assert lazy.get(("t",), "lazy_get") is not None
    assert lazy.get(("t",), "lazy_yes", refresh_ttl=True) is not None
    time.sleep(ttl * 60 * 0.7)
    alive = sorted(i.key for i in store.search(("t",), limit=50, refresh_ttl=False))
    assert alive == ["get", "lazy_yes", "search"]


def test_ttl_sweeper_thread_sweeps_and_stops(memory: PersistentMemory) -> None:
    store = PersistentMemoryStore(memory, index={"fields": ["content"]})
    store.put(
        ("memories", "sam"),
        "k",
        {"content": "Sam's locker code is 4412"},
        ttl=SHORT / 2,
    )
    store.put(("memories", "sam"), "j", {"content": "Sam likes figs"})
    done = store.start_ttl_sweeper(SHORT / 2)
    assert store.start_ttl_sweeper(SHORT / 2) is done  # already running
    deadline = time.monotonic() + 10
    while "Sam's locker code is 4412" in texts_of(memory, "locker code", "sam"):
        assert time.monotonic() < deadline, "the sweeper never swept"
        time.sleep(0.05)
    assert store.sweep_ttl() == 0  # nothing left for a manual sweep
    assert texts_of(memory, "figs", "sam") == ["Sam likes figs"]
    assert store.stop_ttl_sweeper(timeout=5) is True
    assert done.result(timeout=5) is None
    assert store.stop_ttl_sweeper() is True


def test_ttl_config_starts_the_sweeper_and_close_stops_it(
    memory: PersistentMemory,
) -> None:
    def sweepers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "lpm-ttl-sweeper"}

    earlier = sweepers()
    store = PersistentMemoryStore(
        memory, ttl={"default_ttl": SHORT / 2, "sweep_interval_minutes": SHORT / 2}
    )
    assert len(sweepers() - earlier) == 1
    store.put(("memories", "ivy"), "k", {"content": "Ivy's flight lands at nine"})
    deadline = time.monotonic() + 10
    while texts_of(memory, "flight lands", "ivy"):
        assert time.monotonic() < deadline, "the configured sweeper never swept"
        time.sleep(0.05)
    store.close()
    assert not sweepers() - earlier
    assert memory.stats().memories == 0  # the memory itself stays open


def test_start_ttl_sweeper_refuses_a_zero_interval(memory: PersistentMemory) -> None:
    """0 minutes is not > 0: a clear error, not a silent 5-minute sweeper."""
    store = PersistentMemoryStore(memory)
    try:
        with pytest.raises(ValueError, match="sweep_interval_minutes"):
            store.start_ttl_sweeper(0)
    finally:
        store.stop_ttl_sweeper(timeout=5)
    with pytest.raises(ValueError, match="sweep_interval_minutes"):
        store.start_ttl_sweeper(-1)


# ------------------------------------------------ sharing with the memory


def test_an_item_of_a_user_namespace_is_that_users_memory(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    value = {
        "content": "Alice drinks green tea every morning",
        "kind": "preference",
        "importance": 0.9,
    }
    store.put(("memories", "alice"), "tea", value)
    (hit,) = memory.search("green tea", user_id="alice")
    assert hit.page_content == "Alice drinks green tea every morning"
    assert hit.metadata["kind"] == "preference"
    assert hit.metadata["importance"] == pytest.approx(0.9)
    assert memory.search("green tea", user_id="bob") == []
    assert [d.page_content for d in memory.list(user_id="alice")] == [value["content"]]
    # The item itself reads back unchanged (it is not shown as a plain memory too).
    assert rows(store.search(("memories", "alice"))) == [
        (("memories", "alice"), "tea", value)
    ]
    store.delete(("memories", "alice"), "tea")
    assert memory.search("green tea", user_id="alice") == []
    assert memory.stats().memories == 0


def test_memory_add_is_an_item_keyed_by_its_id(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    (memory_id,) = memory.add(
        "Alice is allergic to peanuts and carries an epipen",
        user_id="alice",
        kind="fact",
        importance=0.8,
        metadata={"topic": "health"},
    ).ids
    want = {
        "content": "Alice is allergic to peanuts and carries an epipen",
        "kind": "fact",
        "importance": 0.8,
        "topic": "health",
    }
    item = store.get(("memories", "alice"), memory_id)
    assert item is not None
    assert item.key == memory_id
    assert item.value == want
    document = memory.get(memory_id, user_id="alice")
    assert document is not None
    assert item.created_at.timestamp() == pytest.approx(document.metadata["created_at"])
    assert store.get(("memories", "bob"), memory_id) is None
    assert rows(store.search(("memories", "alice"))) == [
        (("memories", "alice"), memory_id, want)
    ]
    assert keys(store.search(("memories",))) == [(("memories", "alice"), memory_id)]
    assert store.search(("memories", "bob")) == []
    assert store.search(("memories",), filter={"topic": "health"})[0].key == memory_id
    assert store.search(("memories",), filter={"topic": "sports"}) == []
    (scored,) = store.search(("memories", "alice"), query="peanuts")
    embed = memory._embedding
    assert scored.score == pytest.approx(
        cosine(embed.embed_query(want["content"]), embed.embed_query("peanuts")),
        abs=TOL,
    )
    assert store.list_namespaces() == [("memories", "alice")]
    assert store.list_namespaces(suffix=("alice",)) == [("memories", "alice")]


def test_putting_and_deleting_a_memorys_key_update_and_delete_it(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    (memory_id,) = memory.add(
        "Alice lives in Lisbon near the river", user_id="alice"
    ).ids
    before = store.get(("memories", "alice"), memory_id)
    assert before is not None
    time.sleep(0.01)
    new = {
        "content": "Alice moved to Porto last spring",
        "kind": "event",
        "importance": 0.7,
    }
    store.put(("memories", "alice"), memory_id, new)
    document = memory.get(memory_id, user_id="alice")
    assert document is not None
    assert document.page_content == "Alice moved to Porto last spring"
    assert document.metadata["kind"] == "event"
    assert document.metadata["importance"] == pytest.approx(0.7)
    assert [d.id for d in memory.list(user_id="alice")] == [memory_id]
    assert [d.id for d in memory.search("Porto", user_id="alice")] == [memory_id]
    after = store.get(("memories", "alice"), memory_id)
    assert after is not None
    assert after.value == new
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at
    assert len(store.search(("memories", "alice"))) == 1
    store.delete(("memories", "alice"), memory_id)
    assert memory.get(memory_id, user_id="alice") is None
    assert store.get(("memories", "alice"), memory_id) is None
    assert store.list_namespaces() == []
    # A plain memory deleted straight away through the store goes too.
    (other,) = memory.add("Alice collects old maps of Africa", user_id="alice").ids
    store.delete(("memories", "alice"), other)
    assert memory.get(other, user_id="alice") is None
    assert memory.stats().memories == 0


def test_users_cannot_reach_each_others_memories(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    (bobs,) = memory.add("Bob's bank PIN hint is his dog's name", user_id="bob").ids
    store.delete(("memories", "alice"), bobs)
    store.put(("memories", "alice"), bobs, {"content": "hijacked by alice"})
    document = memory.get(bobs, user_id="bob")
    assert document is not None
    assert document.page_content == "Bob's bank PIN hint is his dog's name"
    bob_item = store.get(("memories", "bob"), bobs)
    assert bob_item is not None
    assert bob_item.value["content"] == "Bob's bank PIN hint is his dog's name"
    alice_item = store.get(("memories", "alice"), bobs)
    assert alice_item is not None
    assert alice_item.value == {"content": "hijacked by alice"}
    assert texts_of(memory, "hijacked", "bob") == [document.page_content]
    assert texts_of(memory, "hijacked", "alice") == ["hijacked by alice"]


def test_other_namespaces_never_reach_a_users_search(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    text = "alice rides a red bicycle to work"
    for ns in [
        ("docs",),
        ("memories", "alice", "extra"),
        ("users", "alice"),
        ("memories",),
    ]:
        store.put(ns, "k", {"content": f"{text} ({'/'.join(ns)})"})
    store.put(("memories", "alice"), "k", {"content": text})
    assert texts_of(memory, "red bicycle", "alice") == [text]
    assert texts_of(memory, "red bicycle", "bob") == []
    # Such items are the memories of the user "\x1f" + the joined namespace.
    assert store.user_id(("docs",)) == "\x1fdocs"
    assert texts_of(memory, "red bicycle", "\x1fdocs") == [f"{text} (docs)"]
    assert texts_of(memory, "red bicycle", "\x1fmemories.alice.extra") == [
        f"{text} (memories/alice/extra)"
    ]
    assert len(store.search((), limit=100)) == 5


def test_forget_removes_the_users_store_items(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    store.put(("memories", "alice"), "a", {"content": "Alice plays chess on Sundays"})
    store.put(("memories", "alice"), "b", {"content": "Alice"}, index=False)
    memory.add("Alice once climbed Kilimanjaro", user_id="alice")
    store.put(("memories", "bob"), "a", {"content": "Bob plays go on Sundays"})
    (bobs,) = memory.add("Bob grows tomatoes on his balcony", user_id="bob").ids
    assert len(store.search(("memories", "alice"))) == 3
    assert memory.forget("alice") == 2
    assert store.search(("memories", "alice")) == []
    assert store.get(("memories", "alice"), "a") is None
    assert store.get(("memories", "alice"), "b") is None
    assert store.list_namespaces() == [("memories", "bob")]
    assert sorted(keys(store.search(("memories",)))) == sorted(
        [(("memories", "bob"), "a"), (("memories", "bob"), bobs)]
    )
    assert texts_of(memory, "Sundays", "alice") == []
    assert texts_of(memory, "Sundays", "bob")[0] == "Bob plays go on Sundays"


def test_a_plain_memorys_content_is_its_text(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """Metadata named `content` must not replace the memory's text in the item."""
    (memory_id,) = memory.add(
        "Dan watched the moon landing live in 1969",
        user_id="dan",
        metadata={"content": "a note about where it came from"},
    ).ids
    item = store.get(("memories", "dan"), memory_id)
    assert item is not None
    assert item.value["content"] == "Dan watched the moon landing live in 1969"


def test_listed_namespaces_can_be_read_back(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """An e-mail user id: LangGraph's own methods refuse its '.', batch reads it."""
    (memory_id,) = memory.add(
        "Frank keeps a sailing boat in Brest", user_id="frank@example.com"
    ).ids
    listed = store.list_namespaces()
    assert listed == [("memories", "frank@example.com")]
    (namespace,) = listed
    found, got = store.batch(
        [SearchOp(namespace, query="boat"), GetOp(namespace, memory_id)]
    )
    assert [i.key for i in found] == [memory_id]
    assert got is not None
    assert got.value["content"] == "Frank keeps a sailing boat in Brest"
    with pytest.raises(InvalidNamespaceError, match="periods"):
        store.get(namespace, memory_id)  # BaseStore.get checks the labels itself
    with pytest.raises(InvalidNamespaceError, match=r"contains '\.' or NUL"):
        store.batch([PutOp(namespace, "k", {"content": "x"})])


def test_custom_user_namespace(memory: PersistentMemory) -> None:
    store = PersistentMemoryStore(
        memory,
        index={"fields": ["content"]},
        user_namespace=("users", "{user_id}", "memories"),
    )
    assert store.namespace("carol") == ("users", "carol", "memories")
    assert store.user_id(("users", "carol", "memories")) == "carol"
    assert store.user_id(("memories", "carol")) == "\x1fmemories.carol"
    store.put(
        ("users", "carol", "memories"), "k", {"content": "Carol sails a catamaran"}
    )
    store.put(("memories", "carol"), "k", {"content": "not Carol's: another scheme"})
    assert texts_of(memory, "catamaran", "carol") == ["Carol sails a catamaran"]
    (added,) = memory.add(
        "Carol collects vintage postcards from Lisbon", user_id="carol"
    ).ids
    item = store.get(("users", "carol", "memories"), added)
    assert item is not None
    assert item.value["content"] == "Carol collects vintage postcards from Lisbon"
    assert sorted(i.key for i in store.search(("users", "carol"))) == sorted(
        ["k", added]
    )
    assert sorted(i.key for i in store.search(("users",))) == sorted(["k", added])
    assert store.list_namespaces(prefix=("users",)) == [("users", "carol", "memories")]
    store.delete(("users", "carol", "memories"), added)
    assert memory.get(added, user_id="carol") is None


def test_user_id_and_namespace_helpers(store: PersistentMemoryStore) -> None:
    assert store.user_id(("memories", "alice")) == "alice"
    assert store.namespace("alice") == ("memories", "alice")
    assert store.user_id(store.namespace("x y")) == "x y"
    assert store.user_id(("memories",)) == "\x1fmemories"
    assert store.user_id(("memories", "a", "b")) == "\x1fmemories.a.b"
    assert store.user_id(("notes", "alice")) == "\x1fnotes.alice"


# ----------------------------------------------------------------- errors


def test_bad_namespaces_are_refused_and_change_nothing(
    store: PersistentMemoryStore,
) -> None:
    store.put(("ok",), "k", {"content": "an existing item"})
    before = everything(store)
    bad: list[tuple[Any, str]] = [
        ((), "empty"),
        (("a.b",), r"\."),
        (("langgraph", "x"), "langgraph"),
        (("a", 1), "1"),
        (("a", ""), "empty|non-empty"),
        (["a"], "tuple"),
        (("a\x00",), "NUL"),
    ]
    for namespace, message in bad:
        with pytest.raises(InvalidNamespaceError, match=message):
            store.batch(
                [
                    PutOp(("ok",), "new", {"content": "x"}),
                    PutOp(namespace, "k", {"content": "x"}),
                ]
            )
        with pytest.raises(InvalidNamespaceError):
            store.put(namespace, "k", {"content": "x"})
        assert everything(store) == before, namespace
    for namespace in [(), ("a", 1), ["a"]]:
        with pytest.raises(InvalidNamespaceError):
            store.batch([GetOp(namespace, "k")])  # type: ignore[arg-type]


def test_bad_values_and_keys_are_refused_and_change_nothing(
    store: PersistentMemoryStore,
) -> None:
    store.put(("ok",), "k", {"content": "an existing item"})
    before = everything(store)
    bad_values: list[Any] = [
        ["not", "a", "dict"],
        "text",
        {"x": {1, 2}},
        {"x": float("nan")},
        {"x": float("inf")},
        {"x": object()},
        {"x": b"bytes"},
        {("tuple", "key"): 1},
        {"x": "lone \ud800 surrogate"},
    ]
    for value in bad_values:
        with pytest.raises((TypeError, ValueError), match=r"value|surrogate"):
            store.put(("ok",), "k", value)
        assert everything(store) == before, value
    for key in ["", 5, None]:
        with pytest.raises(TypeError, match="key"):
            store.batch([PutOp(("ok",), key, {"content": "x"})])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        store.put(("ok",), "k", {"content": "x"}, ttl=-1)
    with pytest.raises(ValueError, match="ttl"):
        store.put(("ok",), "k", {"content": "x"}, ttl=0)
    with pytest.raises(TypeError, match="index"):
        store.put(("ok",), "k", {"content": "x"}, index="content")  # type: ignore[arg-type]
    assert everything(store) == before


def test_a_value_with_non_string_keys_is_refused_or_kept(
    store: PersistentMemoryStore,
) -> None:
    """JSON keys are strings: `{1: "a", "1": "b"}` must not silently lose one."""
    for value in [{1: "a", "1": "b"}, {"nested": {2: "x"}}, {None: 1}]:
        try:
            store.put(("odd",), "k", value)
        except (TypeError, ValueError):
            assert store.get(("odd",), "k") is None
            continue
        item = store.get(("odd",), "k")
        assert item is not None
        assert item.value == value


def test_bad_searches_and_listings_are_refused(store: PersistentMemoryStore) -> None:
    store.put(("ok",), "k", {"content": "an existing item", "n": 1})
    for flt, message in [
        ({"n": {"$in": [1]}}, r"\$in"),
        ({"n": {"$regex": "x"}}, r"\$regex"),
        ({"n": {"$gt": 1, "x": 2}}, "mixes"),
        ({"meta": {"size": {"$exists": True}}}, r"\$exists"),
    ]:
        with pytest.raises(ValueError, match=message):
            store.search(("ok",), filter=flt)
    with pytest.raises(TypeError, match="filter"):
        store.search(("ok",), filter=[("n", 1)])  # type: ignore[arg-type]
    for limit in [-1, True, 1.5, "3"]:
        with pytest.raises(ValueError, match="limit"):
            store.search(("ok",), limit=limit)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="limit"):
            store.list_namespaces(limit=limit)  # type: ignore[arg-type]
    for offset in [-1, False, 2.0]:
        with pytest.raises(ValueError, match="offset"):
            store.search(("ok",), offset=offset)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="offset"):
            store.list_namespaces(offset=offset)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="query"):
        store.search(("ok",), query=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_depth"):
        store.list_namespaces(max_depth=0)
    with pytest.raises(ValueError, match="match_type"):
        store.batch(
            [ListNamespacesOp(match_conditions=(MatchCondition("middle", ("a",)),))]
        )  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown operation"):
        store.batch(["not an op"])  # type: ignore[list-item]


def test_a_batch_with_one_bad_op_writes_nothing(store: PersistentMemoryStore) -> None:
    store.put(("ok",), "k", {"content": "an existing item"})
    before = everything(store)
    good = [
        PutOp(("ok",), "a", {"content": "good one"}),
        PutOp(("memories", "zoe"), "b", {"content": "Zoe likes plums"}),
        PutOp(("ok",), "k", None),
    ]
    bad_ops: list[Any] = [
        PutOp(("ok",), "c", {"x": {1}}),
        PutOp(("a.b",), "c", {"content": "x"}),
        SearchOp(("ok",), filter={"x": {"$in": [1]}}),
        SearchOp(("ok",), limit=-1),
        ListNamespacesOp(max_depth=0),
        GetOp(("ok",), ""),
        PutOp(("ok",), "c", {"content": "x"}, ttl=-5),
    ]
    for bad in bad_ops:
        for ops in (
            [*good, bad],
            [good[0], GetOp(("ok",), "a"), good[1], bad, good[2]],
            [bad, *good],
        ):
            with pytest.raises((TypeError, ValueError)):
                store.batch(ops)
            assert everything(store) == before, (bad, ops)


def test_configuration_errors(memory: PersistentMemory) -> None:
    with pytest.raises(ValueError, match="embed"):
        PersistentMemoryStore(
            memory, index={"embed": DeterministicFakeEmbedding(size=D)}
        )
    with pytest.raises(ValueError, match="fieldz"):
        PersistentMemoryStore(memory, index={"fieldz": ["a"]})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ValueError, match="default"):
        PersistentMemoryStore(memory, ttl={"default": 1})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ValueError, match="default_ttl"):
        PersistentMemoryStore(memory, ttl={"default_ttl": -1})
    with pytest.raises(ValueError, match="dims"):
        PersistentMemoryStore(memory, index={"dims": 0})
    with pytest.raises(TypeError, match="index"):
        PersistentMemoryStore(memory, index=["content"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fields"):
        PersistentMemoryStore(memory, index={"fields": "content"})  # type: ignore[typeddict-item]
    with pytest.raises(TypeError, match="ttl"):
        PersistentMemoryStore(memory, ttl=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user_id"):
        PersistentMemoryStore(memory, user_namespace=("memories", "user"))
    with pytest.raises(ValueError, match="user_id"):
        PersistentMemoryStore(memory, user_namespace=("{user_id}", "{user_id}"))
    with pytest.raises(TypeError, match="user_namespace"):
        PersistentMemoryStore(memory, user_namespace=["memories", "{user_id}"])  # type: ignore[arg-type]
    with pytest.raises(InvalidNamespaceError, match="langgraph"):
        PersistentMemoryStore(memory, user_namespace=("langgraph", "{user_id}"))
    with pytest.raises(TypeError, match="write_gate"):
        PersistentMemoryStore(memory, write_gate=None)
    with pytest.raises(TypeError, match="PersistentMemory"):
        PersistentMemoryStore(5)  # type: ignore[arg-type]
    # The memory's own embedding object is accepted.
    same = PersistentMemoryStore(memory, index={"embed": memory._embedding, "dims": D})
    same.put(("ok",), "k", {"x": "fine"})
    assert same.get(("ok",), "k") is not None


def test_dims_mismatch_is_refused_and_changes_nothing(memory: PersistentMemory) -> None:
    before = everything(PersistentMemoryStore(memory))
    with pytest.raises(ValueError, match=r"index\['dims'\] is 16 .* vectors of 32"):
        PersistentMemoryStore(memory, index={"fields": ["content"], "dims": D // 2})
    memory.add("Dora grows tomatoes on her balcony", user_id="dora")
    # Once the store has vectors, their dimension is read, not probed.
    with pytest.raises(ValueError, match="dims"):
        PersistentMemoryStore(memory, index={"dims": D + 1})
    assert PersistentMemoryStore(memory, index={"dims": D}).index_config["dims"] == D
    assert before == [[], 0]
    assert everything(PersistentMemoryStore(memory))[1] == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [("bad", {"content": "a \x00 b in the text"}), ("bad\x00key", {"content": "fine"})],
    ids=["nul-in-indexed-text", "nul-in-key"],
)
def test_nul_characters_round_trip_or_change_nothing(
    store: PersistentMemoryStore, key: str, value: dict[str, Any]
) -> None:
    """NUL is refused on both backends (PostgreSQL cannot store it): no write."""
    ops = [
        PutOp(("n",), "good", {"content": "written first"}),
        GetOp(("n",), "good"),
        PutOp(("n",), key, value),
    ]
    with pytest.raises(ValueError, match=r"ops\[2\]: .*NUL character") as error:
        store.batch(ops)
    assert "PostgreSQL cannot store" in str(error.value)
    assert store.get(("n",), "good") is None, "half the batch was written"


# ------------------------------------------------------------------ async


async def test_async_twins_match_sync(memory: PersistentMemory) -> None:
    pair = make_pair(memory, ["text"])
    store = pair.ours
    for i in range(6):
        await store.aput(
            ("a", f"s{i % 2}"), f"k{i}", {"text": f"async item {i} " + WORDS[i], "n": i}
        )
        await pair.ref.aput(
            ("a", f"s{i % 2}"), f"k{i}", {"text": f"async item {i} " + WORDS[i], "n": i}
        )
    store.put(("a",), "sync", {"text": "sync item tea", "n": 9})
    await pair.ref.aput(("a",), "sync", {"text": "sync item tea", "n": 9})
    assert await store.aget(("a", "s0"), "k0") == store.get(("a", "s0"), "k0")
    assert await store.aget(("a",), "missing") is None
    for kwargs in [
        {"query": "item tea"},
        {"query": "python", "filter": {"n": {"$lt": 4}}, "limit": 3, "offset": 1},
        {},
        {"filter": {"n": {"$gte": 2}}, "limit": 2, "offset": 1},
    ]:
        mine = await store.asearch(("a",), **kwargs)
        assert mine == store.search(("a",), **kwargs)
        assert [i.score for i in mine] == [
            i.score for i in store.search(("a",), **kwargs)
        ]
        if "query" in kwargs:
            assert_same_ranking(mine, await pair.ref.asearch(("a",), **kwargs), kwargs)
    assert await store.alist_namespaces() == store.list_namespaces()
    assert await store.alist_namespaces(prefix=("a",), max_depth=1) == [("a",)]
    assert await store.alist_namespaces() == await pair.ref.alist_namespaces()
    ops = [
        GetOp(("a",), "sync"),
        SearchOp(("a",), query="async item", limit=3),
        ListNamespacesOp(max_depth=2),
    ]
    assert await store.abatch(ops) == store.batch(ops)
    await store.abatch([PutOp(("a",), "batched", {"text": "from abatch"})])
    assert rows([store.get(("a",), "batched")]) == [
        (("a",), "batched", {"text": "from abatch"})
    ]
    await store.adelete(("a", "s0"), "k0")
    assert store.get(("a", "s0"), "k0") is None
    results = await asyncio.gather(
        *(store.aget(("a", "s1"), f"k{i}") for i in (1, 3, 5))
    )
    assert [r.key for r in results if r is not None] == ["k1", "k3", "k5"]
    timed = PersistentMemoryStore(memory, ttl={"default_ttl": SHORT / 3})
    await timed.aput(("gone",), "k", {"x": "soon"})
    await asyncio.sleep(SHORT * 20 + 0.2)
    assert await timed.asweep_ttl() == 1


# ------------------------------------------------------------ persistence


def test_reopening_keeps_items_times_and_ttl(place: Place) -> None:
    embedding = DeterministicFakeEmbedding(size=D)
    with PersistentMemory(place("m"), embedding) as memory:
        store = PersistentMemoryStore(memory, index={"fields": ["content"]})
        store.put(("memories", "ana"), "k", {"content": "Ana bakes rye bread", "n": 1})
        store.put(("docs", "x"), "d", {"content": "a document about rye"})
        store.put(("docs", "x"), "short", {"content": "short lived"}, ttl=SHORT)
        store.put(("docs", "x"), "long", {"content": "long lived"}, ttl=60)
        (plain,) = memory.add("Ana keeps bees on her roof", user_id="ana").ids
        before = {(tuple(i.namespace), i.key): i for i in store.search((), limit=100)}
        scores = [(i.key, i.score) for i in store.search((), query="rye", limit=100)]
    assert len(before) == 5
    with PersistentMemory(place("m"), embedding) as memory:
        store = PersistentMemoryStore(memory, index={"fields": ["content"]})
        for (ns, key), item in before.items():
            assert store.get(ns, key, refresh_ttl=False) == item
        assert (
            store.get(("memories", "ana"), plain)
            == before[(("memories", "ana"), plain)]
        )
        again = [(i.key, i.score) for i in store.search((), query="rye", limit=100)]
        assert [k for k, _ in again] == [k for k, _ in scores]
        for (_, mine), (_, old) in zip(again, scores, strict=True):
            assert mine == pytest.approx(old, abs=TOL)
        assert texts_of(memory, "rye bread", "ana")[0] == "Ana bakes rye bread"
    with PersistentMemory(place("m"), embedding) as memory:
        store = PersistentMemoryStore(memory, index={"fields": ["content"]})
        deadline = time.monotonic() + 5
        while store.get(("docs", "x"), "short", refresh_ttl=False) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert store.get(("docs", "x"), "long") is not None
        assert store.sweep_ttl() == 1
        assert len(store.search((), limit=100)) == 4


def test_store_opens_a_path_and_closes_it(place: Place) -> None:
    embedding = DeterministicFakeEmbedding(size=D)
    location = place("p")
    with PersistentMemoryStore(
        location, index={"embed": embedding, "fields": ["content"]}, write_gate=None
    ) as store:
        assert isinstance(store.memory, PersistentMemory)
        store.put(("memories", "ole"), "k", {"content": "Ole fixes clocks"})
        assert [i.key for i in store.search(("memories",), query="clocks")] == ["k"]
        # write_gate=None went to the memory: small talk is stored too.
        assert store.memory.add("ok thanks", user_id="ole").ids
    with pytest.raises(ValueError, match="closed"):
        store.get(("memories", "ole"), "k")
    with pytest.raises(ValueError, match="closed"):
        store.memory.search("clocks", user_id="ole")
    with PersistentMemory(location, embedding) as memory:
        reopened = PersistentMemoryStore(memory, index={"fields": ["content"]})
        item = reopened.get(("memories", "ole"), "k")
        assert item is not None
        assert item.value == {"content": "Ole fixes clocks"}
        assert sorted(texts_of(memory, "clocks", "ole")) == [
            "Ole fixes clocks",
            "ok thanks",
        ]
        reopened.close()  # a memory it did not open stays open
        assert memory.stats().memories == 2


# ---------------------------------------------------------------- migrate


def test_migrate_copies_the_store_items(tmp_path: Path, postgres_url: str) -> None:
    embedding = DeterministicFakeEmbedding(size=D)
    index: Any = {"fields": ["content"]}
    with PersistentMemory(tmp_path / "src", embedding) as source:
        store = PersistentMemoryStore(source, index=index)
        store.put(("memories", "eva"), "k", {"content": "Eva runs marathons", "n": 3})
        store.put(("docs",), "d", {"content": "marathon training plan"}, ttl=60)
        store.put(("docs", "raw"), "r", {"content": "no vector"}, index=False)
        (plain,) = source.add("Eva eats oatmeal before a race", user_id="eva").ids
        want = sorted(
            (tuple(i.namespace), i.key, i.value, i.created_at, i.updated_at)
            for i in store.search((), limit=100)
        )
        want_scores = [(i.key, i.score) for i in store.search((), query="marathon")]
        want_ns = store.list_namespaces()
        with PersistentMemory(postgres_url, embedding) as target:
            report = migrate(source, target)
            assert report.counts["store_items"] == 3
            copy = PersistentMemoryStore(target, index=index)
            got = sorted(
                (tuple(i.namespace), i.key, i.value, i.created_at, i.updated_at)
                for i in copy.search((), limit=100)
            )
            assert got == want
            assert len(got) == 4
            scores = [(i.key, i.score) for i in copy.search((), query="marathon")]
            assert [k for k, _ in scores] == [k for k, _ in want_scores]
            for (_, mine), (_, old) in zip(scores, want_scores, strict=True):
                assert (mine is None) == (old is None)
                if mine is not None and old is not None:
                    assert mine == pytest.approx(old, abs=TOL)
            assert copy.list_namespaces() == want_ns
            assert copy.get(("memories", "eva"), plain) is not None
            assert sorted(texts_of(target, "marathons race", "eva")) == sorted(
                ["Eva runs marathons", "Eva eats oatmeal before a race"]
            )
            # The copy is a store in its own right: a delete removes the memory.
            copy.delete(("memories", "eva"), "k")
            assert texts_of(target, "marathons", "eva") == [
                "Eva eats oatmeal before a race"
            ]


def test_a_users_query_ranks_as_the_exact_scan(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """One user's unfiltered query goes through the memory's vector index.

    The filtered path scores every candidate exactly; a filter that every
    item passes must give the same page, for every offset, as the index.
    """
    rng = random.Random(7)
    user = ("memories", "vic")
    for i in range(60):
        words = " ".join(rng.sample(WORDS, 4))
        store.put(user, f"k{i}", {"content": f"item {i} {words}", "n": i})
    for i in range(8):
        memory.add(f"Vic told the chain fact {i}: {WORDS[i]}", user_id="vic")
    store.put(user, "plain-text", {"content": "unindexed", "n": -1}, index=False)
    store.put((*user, "deeper"), "d", {"content": "deeper item cat", "n": 99})
    store.put(user, "gone", {"content": "expired cat item", "n": 98}, ttl=0.001)
    store.put(("memories", "other"), "o", {"content": "other user's cat", "n": 0})
    time.sleep(0.1)
    everyone = {"n": {"$ne": "never"}}  # forces the exact, filtered path
    for query in ("cat", "item 3", "Vic told the chain"):
        full = store.search(user, query=query, limit=200, filter=everyone)
        assert {i.key for i in full} >= {"plain-text", "d"}
        assert "gone" not in {i.key for i in full}
        assert all(tuple(i.namespace[:2]) == user for i in full)
        assert len(full) == 60 + 8 + 2
        assert full[-1].key == "plain-text"
        assert full[-1].score is None
        for offset, limit in [(0, 10), (5, 7), (60, 20), (68, 5), (0, 200)]:
            page = store.search(user, query=query, offset=offset, limit=limit)
            assert_same_ranking(page, full[offset : offset + limit], (query, offset))


# ------------------------------------------------------- found in review


def test_a_user_id_like_a_namespaces_does_not_short_a_page(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """Items of ("alice",) are memories of store.user_id(("alice",)) only."""
    twin = store.user_id(("alice",))
    for i in range(10):
        store.put(("alice",), f"doc{i}", {"content": f"tea document {i}"})
        store.put(("memories", "@alice"), f"m{i}", {"content": f"tea memory {i}"})
    found = store.search(("memories", "@alice"), query="tea document", limit=5)
    assert [i.key for i in found] != []
    assert len(found) == 5
    assert {i.key[0] for i in found} == {"m"}
    assert all(t.startswith("tea memory") for t in texts_of(memory, "tea", "@alice"))
    memory.forget("@alice")
    assert len(store.search(("alice",), limit=100)) == 10
    # Even a user whose id is the namespace's own shares no page with it.
    for i in range(3):
        store.put(("memories", twin), f"t{i}", {"content": f"tea twin {i}"})
    page = store.search(("memories", twin), query="tea document", limit=3)
    assert sorted(i.key for i in page) == ["t0", "t1", "t2"]


def test_prune_leaves_store_items_to_their_ttl(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    store.put(("config",), "settings", {"content": "dark mode"})
    store.put(("memories", "alice"), "diet", {"content": "Alice is vegetarian"})
    (chat,) = memory.add("Alice mentioned the weather in Oslo", user_id="alice").ids
    assert memory.prune(max_per_user=0) == 1
    assert memory.get(chat, user_id="alice") is None
    assert store.get(("config",), "settings") is not None
    item = store.get(("memories", "alice"), "diet")
    assert item is not None
    assert texts_of(memory, "vegetarian", "alice") == ["Alice is vegetarian"]


def test_putting_to_a_chain_memory_keeps_its_session_metadata_and_context(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    (mid,) = memory.add(
        "Alice likes tea",
        user_id="alice",
        session_id="s1",
        metadata={"topic": "drinks"},
        context="a long talk about oolong",
    ).ids
    ns = ("memories", "alice")
    item = store.get(ns, mid)
    assert item is not None
    value = dict(item.value)
    value["content"] = "Alice likes green tea"
    store.put(ns, mid, value)
    doc = memory.get(mid, user_id="alice")
    assert doc is not None
    assert doc.page_content == "Alice likes green tea"
    assert doc.metadata["session_id"] == "s1"
    assert doc.metadata["topic"] == "drinks"
    hits = memory.search("tea", user_id="alice", filter={"session_id": "s1"})
    assert [d.id for d in hits] == [mid]
    # The keyword context (only it mentions oolong) is kept.
    assert contexts_of(memory, mid) == "a long talk about oolong"


def test_a_refresh_after_a_put_without_ttl_sets_no_expiry(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """A read that raced a put must not give the new item the old TTL.

    The race is played in order through the store's own steps: one thread
    has read the item (with its TTL), another puts it again without one,
    then the first refreshes what it read.
    """
    ns = ("memories", "alice")
    store.put(ns, "k", {"content": "temporary"}, ttl=1)
    with memory._db.read() as con:
        read = store._rows(con, time.time(), prefix=ns, keys=["k"])
    store.put(ns, "k", {"content": "keep forever"}, ttl=None)
    store._refresh(read)
    with memory._db.read() as con:
        row = con.execute(
            "SELECT expires_at, ttl_minutes FROM store_items WHERE key = 'k'"
        ).fetchone()
    assert tuple(row) == (None, None)


def test_both_spellings_of_a_uuid_key_are_one_item(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    import uuid

    ns = ("memories", "bob")
    (mid,) = memory.add("I like green tea", user_id="bob").ids
    dashed = str(uuid.UUID(mid))
    store.batch(
        [PutOp(ns, dashed, {"content": "I like black tea"}), PutOp(ns, mid, None)]
    )
    assert store.search(ns) == []
    assert memory.get(mid, user_id="bob") is None
    key = uuid.uuid4()
    store.batch(
        [
            PutOp(ns, str(key), {"content": "first spelling"}),
            PutOp(ns, key.hex, {"content": "second spelling"}),
        ]
    )
    items = store.search(ns)
    assert [i.value["content"] for i in items] == ["second spelling"]
    assert memory.stats().memories == 1
    for spelling in (str(key), key.hex):
        got = store.get(ns, spelling)
        assert got is not None
        assert got.value == {"content": "second spelling"}
    # Other spellings that uuid.UUID() reads are keys of their own, in a
    # batch as in puts one after the other.
    other = uuid.uuid4()
    store.batch(
        [
            PutOp(ns, str(other).upper(), {"content": "upper"}),
            PutOp(ns, other.hex, {"content": "hex"}),
            PutOp(ns, "{" + str(other) + "}", {"content": "braces"}),
        ]
    )
    assert store.get(ns, str(other).upper()).value == {"content": "upper"}  # type: ignore[union-attr]
    assert store.get(ns, str(other)).value == {"content": "hex"}  # type: ignore[union-attr]
    assert store.get(ns, "{" + str(other) + "}").value == {"content": "braces"}  # type: ignore[union-attr]


def test_import_keeps_an_items_value_with_its_memory(
    store: PersistentMemoryStore, memory: PersistentMemory, tmp_path: Any
) -> None:
    ns = ("memories", "alice")
    store.put(ns, "diet", {"content": "Alice is vegetarian"})
    (doc,) = memory.list(user_id="alice")
    assert doc.id is not None
    memory.export(tmp_path / "alice.jsonl", user_id="alice")
    memory.update(doc.id, "Alice is vegan", user_id="alice")
    item = store.get(ns, "diet")
    assert item is not None
    assert item.value["content"] == "Alice is vegan"
    memory.import_(tmp_path / "alice.jsonl")
    item = store.get(ns, "diet")
    assert item is not None
    assert item.value["content"] == "Alice is vegetarian"
    assert memory.get(doc.id, user_id="alice").page_content == "Alice is vegetarian"  # type: ignore[union-attr]


def test_a_dangling_item_does_not_hide_plain_memories(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    ns = ("memories", "alice")
    store.put(ns, "a", {"content": "item a"})
    (plain,) = memory.add("Alice lives in Oslo", user_id="alice").ids
    linked = next(d.id for d in memory.list(user_id="alice") if d.id != plain)
    assert linked is not None
    with memory._db.write() as con:  # below the memory: the item stays
        memory._store._delete_rows(con, [linked])
    assert plain in {i.key for i in store.search(ns)}
    assert store.list_namespaces() == [ns]


def test_more_plain_memories_than_one_in_list(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    """Over 500 ids (one IN list) reach the plain-memory look-up."""
    memory.add_many(
        {"content": f"Alice fact number {i} about the sea", "user_id": "alice"}
        for i in range(620)
    )
    found = store.search(("memories", "alice"), query="fact about the sea", limit=700)
    assert len(found) == 620
    assert all(i.score is not None for i in found)


def test_values_and_ttls_that_would_crash_inside_are_refused(
    store: PersistentMemoryStore,
) -> None:
    looped: dict[str, Any] = {"content": "x"}
    looped["self"] = looped
    with pytest.raises(TypeError, match="contains itself"):
        store.put(("a",), "k", looped)
    for ttl in (10**400, float("inf"), float("nan"), 1e307):
        with pytest.raises(ValueError, match="finite number of minutes"):
            store.batch(
                [
                    PutOp(("a",), "ok", {"content": "fine"}),
                    GetOp(("a",), "ok"),
                    PutOp(("a",), "k", {"content": "x"}, ttl=ttl),
                ]
            )
    store.put(("a",), "big", {"content": "x"}, ttl=10**9)
    assert store.get(("a",), "big") is not None
    assert store.get(("a",), "ok") is None


def test_filters_narrowed_in_sql_keep_the_json_rules(
    store: PersistentMemoryStore,
) -> None:
    """Plain equalities are narrowed in SQL; the result is still the filter's."""
    values: dict[str, Any] = {
        "int": 3,
        "float": 3.0,
        "text": "3",
        "true": True,
        "one": 1,
        "nested": {"x": 3},
        "list": [3],
        "huge": 2**70,
        "none": None,
    }
    for name, topic in values.items():
        store.put(
            ("f",), name, {"content": f"item {name}", "topic": topic, "we ird": 3}
        )
    store.put(("f",), "missing", {"content": "item without a topic"})

    def keys(flt: dict[str, Any]) -> set[str]:
        return {i.key for i in store.search(("f",), filter=flt, limit=100)}

    assert keys({"topic": 3}) == {"int", "float"}
    assert keys({"topic": 3.0}) == {"int", "float"}
    assert keys({"topic": {"$eq": 3}}) == {"int", "float"}
    assert keys({"topic": "3"}) == {"text"}
    assert keys({"topic": True}) == {"true"}
    assert keys({"topic": 1}) == {"one"}
    assert keys({"topic": 2**70}) == {"huge"}
    assert keys({"topic": {"x": 3}}) == {"nested"}
    assert keys({"topic": [3]}) == {"list"}
    assert keys({"topic": None}) == {"none"}
    assert keys({"we ird": 3}) == set(values)
    assert keys({"topic": 3, "we ird": 3}) == {"int", "float"}
    assert keys({"topic": {"$ne": 3}}) == set(values) - {"int", "float"} | {"missing"}
    assert [
        i.key for i in store.search(("f",), query="item", filter={"topic": 3})
    ] != []


def test_the_memory_follows_the_value_put_to_its_key(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    (mid,) = memory.add(
        "Alice likes tea", user_id="alice", metadata={"topic": "drinks"}
    ).ids
    ns = ("memories", "alice")
    item = store.get(ns, mid)
    assert item is not None
    store.put(ns, mid, {**item.value, "topic": "food", "importance": 0.9})
    assert [
        d.id for d in memory.search("tea", user_id="alice", filter={"topic": "food"})
    ] == [mid]
    assert memory.search("tea", user_id="alice", filter={"topic": "drinks"}) == []
    doc = memory.get(mid, user_id="alice")
    assert doc is not None
    assert doc.metadata["importance"] == 0.9
    # A value without the field: the memory drops it too.
    store.put(ns, mid, {"content": "Alice likes tea"})
    doc = memory.get(mid, user_id="alice")
    assert doc is not None
    assert "topic" not in doc.metadata
    # Reserved fields of the wrong type do not reach the memory.
    store.put(
        ns, mid, {"content": "Alice likes tea", "user_id": "bob", "created_at": "x"}
    )
    doc = memory.get(mid, user_id="alice")
    assert doc is not None
    assert doc.metadata["user_id"] == "alice"
    assert isinstance(doc.metadata["created_at"], float)


def test_a_put_after_expiry_starts_a_new_memory(
    store: PersistentMemoryStore, memory: PersistentMemory
) -> None:
    (mid,) = memory.add(
        "Alice likes tea", user_id="alice", session_id="s1", context="talk of oolong"
    ).ids
    ns = ("memories", "alice")
    store.put(ns, mid, {"content": "Alice likes tea", "session_id": "s1"}, ttl=0.002)
    time.sleep(0.2)
    assert store.get(ns, mid) is None
    store.put(ns, mid, {"content": "Alice's new cat is called Tom"})
    doc = memory.get(mid, user_id="alice")
    assert doc is not None
    assert "session_id" not in doc.metadata
    assert contexts_of(memory, mid) is None


def test_the_default_whole_value_index_refuses_looped_values(
    memory: PersistentMemory,
) -> None:
    store = PersistentMemoryStore(memory)  # fields ["$"]: the value as JSON
    looped: dict[str, Any] = {"content": "x"}
    looped["self"] = looped
    with pytest.raises(TypeError, match="contains itself"):
        store.put(("a",), "k", looped)
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(5000):
        inner["d"] = {}
        inner = inner["d"]
    with pytest.raises(TypeError, match="nested too deeply"):
        store.put(("a",), "deep", deep)
    assert store.search(("a",)) == []


def test_the_longest_ttl_still_refreshes(store: PersistentMemoryStore) -> None:
    store.put(("a",), "long", {"content": "x"}, ttl=1e10)
    assert store.get(("a",), "long") is not None
    with pytest.raises(ValueError, match="at most 1e"):
        store.put(("a",), "too long", {"content": "x"}, ttl=1e307)
