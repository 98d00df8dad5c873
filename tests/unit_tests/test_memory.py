"""PersistentMemory: isolation, hybrid search, dedup, gate, cache, audit."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING
from unittest import mock

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately

from langchain_persistent_memory.memory import PersistentMemory, default_write_gate
from tests.unit_tests.conftest import Place, run_python

if TYPE_CHECKING:
    from pathlib import Path


class CountingEmbeddings(DeterministicFakeEmbedding):
    calls: list[list[str]] = []  # noqa: RUF012 - reset per test

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return super().embed_documents(texts)


@pytest.fixture
def memory(place: Place) -> PersistentMemory:
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=32)) as mem:
        yield mem  # type: ignore[misc]


def test_search_never_crosses_users(memory: PersistentMemory) -> None:
    rng = random.Random(5)
    words = ["tea", "oslo", "python", "cat", "turing", "billing", "postgres", "dentist"]
    owner: dict[str, str] = {}
    for i in range(300):
        user = f"user{rng.randrange(4)}"
        text = f"{user} note {i}: " + " ".join(rng.sample(words, 3))
        for memory_id in memory.add(text, user_id=user).ids:
            owner[memory_id] = user
    for _ in range(60):
        user = f"user{rng.randrange(5)}"  # user4 has no memories at all
        query = " ".join(rng.sample(words, 2))
        hits = memory.search(query, user_id=user, k=20)
        assert all(owner[d.id] == user for d in hits)
        assert all(d.metadata["user_id"] == user for d in hits)
        if user == "user4":
            assert hits == []
        else:
            assert len(hits) == 20
    some_id = next(i for i, u in owner.items() if u == "user1")
    assert memory.get(some_id, user_id="user2") is None
    assert memory.delete(some_id, user_id="user2") is False
    with pytest.raises(KeyError):
        memory.update(some_id, "hijacked", user_id="user2")
    assert memory.get(some_id, user_id="user1") is not None


def test_keyword_side_finds_what_fake_vectors_cannot(memory: PersistentMemory) -> None:
    for i in range(80):
        memory.add(f"Filler memory number {i} about nothing much", user_id="u")
    target = memory.add(
        "The wifi password at the cabin is blueberry42", user_id="u"
    ).ids[0]
    memory.add("My cabin wifi is blueberry42 too", user_id="other")
    hits = memory.search("what is the cabin wifi password?", user_id="u", k=3)
    assert hits[0].id == target
    assert hits[0].metadata["scores"]["keyword"] is not None
    assert hits[0].metadata["scores"]["keyword"] > 0


def test_exact_and_near_duplicates_refresh(place: Place) -> None:
    base = np.ones(8, dtype=np.float32)
    near = base.copy()
    near[0] += 0.05  # cosine ~0.9999
    far = np.arange(8, dtype=np.float32)
    table = {
        "I like tea": base,
        "I like tea!": near,
        "i  LIKE tea": base,
        "I hate tea": far,
    }

    class Table(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [table[t].tolist() for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return table.get(text, base).tolist()

    with PersistentMemory(place("m"), Table()) as memory:
        first = memory.add("I like tea", user_id="u").ids[0]
        created = memory.get(first, user_id="u")
        assert created is not None
        again = memory.add("i  LIKE tea", user_id="u")
        assert again.ids == []
        assert "duplicate of" in again.skipped[0][1]
        close = memory.add("I like tea!", user_id="u")
        assert close.ids == []
        assert "near-duplicate" in close.skipped[0][1]
        assert memory.add("I hate tea", user_id="u").ids  # different enough
        assert memory.add("I like tea", user_id="someone else").ids  # other user
        assert memory.add(
            "I like tea", user_id="u", kind="preference"
        ).ids  # other kind
        assert len(memory.list(user_id="u")) == 3
        refreshed = memory.get(first, user_id="u")
        assert refreshed is not None
        assert refreshed.metadata["updated_at"] > created.metadata["updated_at"]
        assert [h["op"] for h in memory.history(first, user_id="u")] == [
            "add",
            "refresh",
            "refresh",
        ]


def test_gate_skips_small_talk_before_embedding(place: Place) -> None:
    embedder = CountingEmbeddings(size=16)
    embedder.calls.clear()
    with PersistentMemory(place("m"), embedder) as memory:
        result = memory.add(
            [
                HumanMessage("hi!"),
                HumanMessage("Thanks so much :)"),
                HumanMessage("I adopted a greyhound called Pixel"),
                AIMessage("ok"),
                HumanMessage("👍"),
            ],
            user_id="u",
        )
        assert [reason for _, reason in result.skipped] == [
            "small talk",
            "small talk",
            "small talk",
            "no words",
        ]
        assert len(result.ids) == 1
        assert embedder.calls == [["I adopted a greyhound called Pixel"]]
        stored = memory.get(result.ids[0], user_id="u")
        assert stored is not None
        assert stored.metadata["kind"] == "message"
        assert stored.metadata["role"] == "human"


@pytest.mark.parametrize(
    ("text", "skip"),
    [
        ("Hey!", True),
        ("Good morning :)", True),
        ("ok, thanks!", True),
        ("haha yeah", True),
        ("Hey! I got the job at the hospital!", False),
        ("No, I never went to Paris", False),
        ("Thanks for the book about Rome", False),
        ("Bye Nate!", True),
        ("Thanks, Melanie!", True),
        ("I like Tokyo", False),
        ("I love Python", False),
        ("Let's go to Japan", False),
        ("Going to see Taylor Swift tonight!", False),
        ("Thanks! I'm going to Berlin tomorrow", False),
        ("Porto!", False),
    ],
)
def test_default_write_gate(text: str, skip: bool) -> None:
    assert (default_write_gate(text) is not None) == skip


def test_embedding_cache_is_shared_across_users_and_reopens(place: Place) -> None:
    embedder = CountingEmbeddings(size=16)
    embedder.calls.clear()
    with PersistentMemory(place("m"), embedder) as memory:
        memory.add("Shared fact about the office in Bergen", user_id="a")
        memory.add("Shared fact about the office in Bergen", user_id="b")
        stats = memory.stats()
        assert stats.cache_hits == 1
        assert stats.embedded_texts == 1
    with PersistentMemory(place("m"), embedder) as memory:
        memory.add("Shared fact about the office in Bergen", user_id="c")
        assert memory.stats().cache_hits == 1
    assert embedder.calls == [["Shared fact about the office in Bergen"]]


def test_token_budget_kinds_and_time_window(memory: PersistentMemory) -> None:
    with mock.patch(
        "langchain_persistent_memory.memory.time.time", return_value=1_000.0
    ):
        old = memory.add(
            "Old decision: we use Postgres", user_id="u", kind="decision"
        ).ids[0]
    new = memory.add(
        "New preference: short answers please", user_id="u", kind="preference"
    ).ids[0]
    memory.add("A fact about the garden and its many roses", user_id="u")
    only = memory.search(
        "postgres answers garden", user_id="u", k=5, kinds=["decision"]
    )
    assert [d.id for d in only] == [old]
    recent = memory.search("postgres answers garden", user_id="u", k=5, since=2_000.0)
    assert old not in {d.id for d in recent}
    assert new in {d.id for d in recent}
    window = memory.search("postgres", user_id="u", k=5, until=2_000.0)
    assert [d.id for d in window] == [old]
    everything = memory.search("postgres answers garden", user_id="u", k=5)
    assert len(everything) == 3
    first_cost = count_tokens_approximately(
        [everything[0].page_content], extra_tokens_per_message=0
    )
    second_cost = count_tokens_approximately(
        [everything[1].page_content], extra_tokens_per_message=0
    )
    assert first_cost > 0
    budgeted = memory.search(
        "postgres answers garden", user_id="u", k=5, token_budget=first_cost
    )
    assert [d.id for d in budgeted] == [everything[0].id]
    both = memory.search(
        "postgres answers garden",
        user_id="u",
        k=5,
        token_budget=first_cost + second_cost,
    )
    assert [d.id for d in both] == [d.id for d in everything[:2]]
    assert (
        memory.search("postgres answers garden", user_id="u", k=5, token_budget=0) == []
    )


def test_time_decay_prefers_recent(place: Place) -> None:
    embedding = DeterministicFakeEmbedding(size=32)
    with PersistentMemory(place("m"), embedding, half_life_days=30) as memory:
        with mock.patch(
            "langchain_persistent_memory.memory.time.time", return_value=1_000_000.0
        ):
            old = memory.add("User lives in Paris", user_id="u").ids[0]
        new = memory.add("User lives in Lisbon", user_id="u").ids[0]
        hits = memory.search("where does the user live", user_id="u", k=2)
        scores = {d.id: d.metadata["scores"]["decay"] for d in hits}
        assert scores[new] > 0.99
        assert scores[old] < 0.01
        assert hits[0].id == new


def test_forget_removes_everything_of_one_user(memory: PersistentMemory) -> None:
    a = memory.add("Alice's secret is the rosebush", user_id="alice").ids[0]
    memory.update(a, "Alice's secret moved to the shed", user_id="alice")
    b = memory.add("Bob's secret is the rosebush", user_id="bob").ids[0]
    assert memory.forget("alice") == 1
    assert memory.search("secret rosebush shed", user_id="alice", k=5) == []
    assert memory.history(a, user_id="alice") == []
    assert memory.list(user_id="alice") == []
    assert [d.id for d in memory.search("secret rosebush", user_id="bob", k=5)] == [b]
    assert memory.forget("alice") == 0


def test_memories_survive_reopen_in_a_new_process(place: Place) -> None:
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=32)) as memory:
        memory.add(
            "Carol's favourite editor is Helix", user_id="carol", kind="preference"
        )
        memory.add("Dan's favourite editor is Emacs", user_id="dan", kind="preference")
    out = run_python(
        """
        import sys
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_persistent_memory.memory import PersistentMemory
        with PersistentMemory(sys.argv[1], DeterministicFakeEmbedding(size=32)) as m:
            for d in m.search("favourite editor", user_id="carol", k=5):
                print(d.page_content, d.metadata["kind"])
        """,
        str(place("m")),
    )
    assert out.splitlines() == ["Carol's favourite editor is Helix preference"]


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda m: m.add("", user_id="u"), ValueError, "empty"),
        (lambda m: m.add("x y z", user_id=""), TypeError, "user_id"),
        (lambda m: m.add("x y z", user_id="u" * 300), ValueError, "limit"),
        (
            lambda m: m.add("x y z", user_id="u", metadata={"user_id": "v"}),
            ValueError,
            "reserved",
        ),
        (lambda m: m.add("x y z", user_id="u", importance=2), ValueError, "importance"),
        (lambda m: m.add("x y z", user_id="u", kind=""), TypeError, "kind"),
        (lambda m: m.add(["not a message"], user_id="u"), TypeError, "chat message"),
        (
            lambda m: m.add("x y z", user_id="u", source_ids="abc"),
            TypeError,
            "source_ids",
        ),
        (lambda m: m.search("", user_id="u"), ValueError, "query"),
        (lambda m: m.search("q", user_id="u", k=0), ValueError, "k must"),
        (lambda m: m.search("q", user_id="u", kinds="fact"), TypeError, "kinds"),
    ],
)
def test_bad_input(
    memory: PersistentMemory, call: object, error: type, words: str
) -> None:
    memory.add("kept memory text", user_id="u")
    with pytest.raises(error, match=words):
        call(memory)  # type: ignore[operator]
    assert [d.page_content for d in memory.list(user_id="u")] == ["kept memory text"]


def test_context_is_searched_but_not_returned(memory: PersistentMemory) -> None:
    for i in range(30):
        memory.add(f"Unrelated filler memory {i}", user_id="u")
    found = memory.add(
        "Yes, I finally did it last weekend!",
        user_id="u",
        context="Did you run the Berlin marathon?",
    ).ids[0]
    hits = memory.search("Who ran the Berlin marathon?", user_id="u", k=3)
    assert hits[0].id == found
    assert hits[0].page_content == "Yes, I finally did it last weekend!"
    assert "Berlin" not in str(hits[0].metadata)
    # An update keeps the context.
    memory.update(found, "Yes, I ran it in 3h40 last weekend!", user_id="u")
    assert memory.search("Berlin marathon", user_id="u", k=1)[0].id == found


def test_messages_get_their_neighbours_as_context(memory: PersistentMemory) -> None:
    result = memory.add(
        [
            HumanMessage("Guess where I went in June"),
            AIMessage("Tell me!"),
            HumanMessage("Reykjavik, to see the midnight sun"),
            AIMessage("That sounds amazing"),
        ],
        user_id="u",
    )
    by_text = {memory.get(i, user_id="u").page_content: i for i in result.ids}  # type: ignore[union-attr]
    hits = memory.search("where did I go in June", user_id="u", k=4)
    assert by_text["Reykjavik, to see the midnight sun"] in [d.id for d in hits]
    scores = {d.id: d.metadata["scores"]["keyword"] for d in hits}
    assert scores[by_text["Reykjavik, to see the midnight sun"]] is not None


def test_created_at_and_add_many(memory: PersistentMemory) -> None:
    seen: list[tuple[int, int]] = []
    result = memory.add_many(
        [
            {
                "content": f"Diary entry {i} about the lighthouse",
                "user_id": f"u{i % 2}",
                "created_at": 1_600_000_000.0 + i,
            }
            for i in range(25)
        ]
        + [{"content": "ok thanks", "user_id": "u0"}],
        batch_size=10,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert len(result.ids) == 25
    assert result.skipped == [("ok thanks", "small talk")]
    assert seen == [(10, 26), (20, 26), (26, 26)]
    listed = memory.list(user_id="u1")
    assert len(listed) == 12
    assert listed[0].metadata["created_at"] == 1_600_000_000.0 + 23
    assert {
        d.metadata["user_id"] for d in memory.search("lighthouse", user_id="u0", k=20)
    } == {"u0"}
    with pytest.raises(TypeError, match="created_at"):
        memory.add("x y z", user_id="u", created_at="yesterday")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"items\[0\]"):
        memory.add_many(["just a string"])  # type: ignore[list-item]


@pytest.mark.parametrize("fusion", ["score", "rrf"])
def test_both_fusions_rank_a_keyword_match_first(place: Place, fusion: str) -> None:
    with PersistentMemory(
        place("m"),
        DeterministicFakeEmbedding(size=32),
        fusion=fusion,  # type: ignore[arg-type]
    ) as memory:
        for i in range(40):
            memory.add(f"Filler note {i} about nothing", user_id="u")
        target = memory.add(
            "The spare key is under the blue flowerpot", user_id="u"
        ).ids[0]
        hits = memory.search("where is the spare key?", user_id="u", k=5)
        assert hits[0].id == target
        assert 0 < hits[0].metadata["scores"]["fused"] <= 1
    with pytest.raises(ValueError, match="fusion"):
        PersistentMemory(place("n"), DeterministicFakeEmbedding(size=8), fusion="max")  # type: ignore[arg-type]


def test_export_import_round_trip(place: Place, tmp_path: Path) -> None:
    embedding = DeterministicFakeEmbedding(size=32)
    with PersistentMemory(place("a"), embedding) as source:
        with mock.patch(
            "langchain_persistent_memory.memory.time.time", return_value=1_650_000_000.0
        ):
            kept = source.add(
                "Ana keeps bees on her roof",
                user_id="ana",
                kind="fact",
                importance=0.9,
                source_ids=["m1"],
                metadata={"topic": "hobbies"},
                context="We talked about honey",
            ).ids[0]
        source.add("Ben prefers tea to coffee", user_id="ben", kind="preference")
        assert source.export(tmp_path / "all.jsonl") == 2
        assert source.export(tmp_path / "ana.jsonl", user_id="ana") == 1
        expected = source.get(kept, user_id="ana")
    lines = (tmp_path / "ana.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    assert "Ben" not in lines[0]
    with PersistentMemory(place("b"), embedding) as target:
        assert target.import_(tmp_path / "all.jsonl") == 2
        again = target.get(kept, user_id="ana")
        assert again is not None
        assert expected is not None
        assert again.page_content == expected.page_content
        assert again.metadata == expected.metadata
        # The context came along: it still finds the memory by "honey".
        assert target.search("honey", user_id="ana", k=1)[0].id == kept
        assert [h["op"] for h in target.history(kept, user_id="ana")] == ["import"]
        assert target.import_(tmp_path / "all.jsonl") == 2  # idempotent: replaced
        assert target.stats().memories == 2


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("not json", "line 2 is not JSON"),
        ('["a list"]', "line 2 is not a memory record"),
        ('{"id": "x", "text": "", "metadata": {}}', "'text'"),
        (
            '{"id": "x", "text": "t", "metadata": {"user_id": "u", "kind": "fact", "created_at": "yesterday", "updated_at": 1}}',
            "epoch seconds",
        ),
        (
            '{"id": "x", "text": "t", "metadata": {"kind": "fact", "created_at": 1, "updated_at": 1}}',
            "user_id",
        ),
    ],
)
def test_bad_import_changes_nothing(
    memory: PersistentMemory, tmp_path: Path, line: str, words: str
) -> None:
    memory.add("Already here and staying", user_id="u")
    good = '{"id": "g", "text": "good line", "metadata": {"user_id": "u", "kind": "fact", "created_at": 1, "updated_at": 1}}'
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=words):
        memory.import_(path)
    assert [d.page_content for d in memory.list(user_id="u")] == [
        "Already here and staying"
    ]


def test_prune_by_age_and_by_count(memory: PersistentMemory) -> None:
    day = 86400.0
    now = 2_000_000_000.0
    for age_days, importance, text in [
        (100, 0.9, "Very old but important memory"),
        (5, 0.1, "Recent but unimportant memory"),
        (5, 0.9, "Recent and important memory"),
        (1, 0.5, "Yesterday's ordinary memory"),
    ]:
        with mock.patch(
            "langchain_persistent_memory.memory.time.time",
            return_value=now - age_days * day,
        ):
            memory.add(text, user_id="u", importance=importance)
    memory.add("Other user's old memory", user_id="v", created_at=now - 300 * day)
    with mock.patch("langchain_persistent_memory.memory.time.time", return_value=now):
        assert memory.prune(user_id="u", older_than_days=30) == 1
        texts = {d.page_content for d in memory.list(user_id="u")}
        assert "Very old but important memory" not in texts
        assert memory.prune(user_id="u", max_per_user=2) == 1
    texts = {d.page_content for d in memory.list(user_id="u")}
    assert texts == {"Recent and important memory", "Yesterday's ordinary memory"}
    assert [d.page_content for d in memory.list(user_id="v")] == [
        "Other user's old memory"
    ]
    with pytest.raises(ValueError, match="older_than_days"):
        memory.prune(older_than_days=0)


def test_import_cannot_overwrite_another_users_memory(
    memory: PersistentMemory, tmp_path: Path
) -> None:
    theirs = memory.add("Bob's private note about his bank", user_id="bob").ids[0]
    path = tmp_path / "evil.jsonl"
    record = {
        "id": theirs,
        "text": "Overwritten by mallory",
        "metadata": {
            "user_id": "mallory",
            "kind": "fact",
            "created_at": 1,
            "updated_at": 1,
        },
    }
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="another user"):
        memory.import_(path)
    kept = memory.get(theirs, user_id="bob")
    assert kept is not None
    assert kept.page_content == "Bob's private note about his bank"
    assert memory.list(user_id="mallory") == []


async def test_async_twins_await_the_embedding(place: Place) -> None:
    calls: list[str] = []

    class Recording(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.append("embed_documents")
            return super().embed_documents(texts)

        def embed_query(self, text: str) -> list[float]:
            calls.append("embed_query")
            return super().embed_query(text)

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.append("aembed_documents")
            return super().embed_documents(texts)

        async def aembed_query(self, text: str) -> list[float]:
            calls.append("aembed_query")
            return super().embed_query(text)

    with PersistentMemory(
        place("m"), Recording(size=16), dedup_threshold=None
    ) as memory:
        added = await memory.aadd("Priya collects vintage fountain pens", user_id="p")
        assert len(added.ids) == 1
        again = await memory.aadd("Priya collects vintage fountain pens", user_id="q")
        assert len(again.ids) == 1  # other user; the vector came from the cache
        hits = await memory.asearch("fountain pens", user_id="p", k=3)
        assert [d.id for d in hits] == added.ids
        with pytest.raises(ValueError, match="k must"):
            await memory.asearch("pens", user_id="p", k=0)
    assert calls == ["aembed_documents", "aembed_query"]


def test_empty_user_id_never_means_everyone(
    memory: PersistentMemory, tmp_path: Path
) -> None:
    memory.add("Alice's note about the garden", user_id="alice")
    memory.add("Bob's PIN hint: his first cat", user_id="bob")
    with pytest.raises(TypeError, match="user_id"):
        memory.export(tmp_path / "x.jsonl", user_id="")
    with pytest.raises(TypeError, match="user_id"):
        memory.prune(user_id="", max_per_user=0)
    assert not (tmp_path / "x.jsonl").exists()
    assert memory.stats().memories == 2


def test_forget_scrubs_the_embedding_cache(place: Place) -> None:
    embedder = CountingEmbeddings(size=16)
    embedder.calls.clear()
    with PersistentMemory(place("m"), embedder) as memory:
        memory.add("Alice's secret: she is moving to Reykjavik", user_id="alice")
        memory.forget("alice")
        hits_before = memory.stats().cache_hits
        memory.add("Alice's secret: she is moving to Reykjavik", user_id="mallory")
        assert memory.stats().cache_hits == hits_before  # no oracle
    assert len(embedder.calls) == 2


def test_refresh_keeps_the_new_copys_importance_and_sources(
    memory: PersistentMemory,
) -> None:
    first = memory.add(
        "Dan is allergic to peanuts", user_id="d", importance=0.2, source_ids=["s1"]
    ).ids[0]
    again = memory.add(
        "dan is allergic to peanuts", user_id="d", importance=0.9, source_ids=["s2"]
    )
    assert again.ids == []
    stored = memory.get(first, user_id="d")
    assert stored is not None
    assert stored.metadata["importance"] == 0.9
    assert stored.metadata["source_ids"] == ["s1", "s2"]
    assert [d.id for d in memory.search("peanuts", user_id="d", k=3)] == [first]


def test_search_survives_a_row_removed_underneath(tmp_path: Path) -> None:
    # Embedded store only: PostgreSQL has no vector store to go around.
    memory = PersistentMemory(tmp_path / "m", DeterministicFakeEmbedding(size=32))
    ids = [
        memory.add(f"Note {i} about the harbour", user_id="h").ids[0] for i in range(5)
    ]
    memory.store.delete([ids[0]])  # bypasses the memory layer on purpose
    hits = memory.search("harbour", user_id="h", k=5)
    memory.close()
    assert ids[0] not in {d.id for d in hits}
    assert len(hits) == 4


def test_since_until_accept_datetimes_and_kind_follows_content(
    memory: PersistentMemory,
) -> None:
    import datetime as dt

    memory.add(
        "An event in 2020 about the harbour", user_id="u", created_at=1_600_000_000.0
    )
    later = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
    assert memory.search("harbour event", user_id="u", k=5, since=later) == []
    assert len(memory.search("harbour event", user_id="u", k=5, until=later)) == 1
    with pytest.raises(TypeError, match="since"):
        memory.search("harbour", user_id="u", since="2021-01-01")
    explicit = memory.add(
        [HumanMessage("I collect stamps from Chile")], user_id="u", kind="fact"
    )
    stored = memory.get(explicit.ids[0], user_id="u")
    assert stored is not None
    assert stored.metadata["kind"] == "fact"


def test_diversity_spreads_results(place: Place) -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(16).astype(np.float32)
    other = rng.standard_normal(16).astype(np.float32)
    table = {
        "I drink green tea every morning": base,
        "I drink green tea every evening": base
        + 0.01 * rng.standard_normal(16).astype(np.float32),
        "I drink green tea at lunch": base
        + 0.01 * rng.standard_normal(16).astype(np.float32),
        "I drink black coffee at work": other,
        "what do I drink": base + 0.3 * other,
    }

    class Table(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [table[t].tolist() for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return table[text].tolist()

    with PersistentMemory(place("m"), Table(), dedup_threshold=None) as memory:
        for text in list(table)[:4]:
            memory.add(text, user_id="u")
        plain = memory.search("what do I drink", user_id="u", k=2)
        assert all("tea" in d.page_content for d in plain)
        varied = memory.search("what do I drink", user_id="u", k=2, diversity=0.7)
        assert varied[0].id == plain[0].id
        assert "coffee" in varied[1].page_content
        with pytest.raises(ValueError, match="diversity"):
            memory.search("what do I drink", user_id="u", diversity=1.5)


async def test_every_method_has_an_async_twin(place: Place, tmp_path: Path) -> None:
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=16)) as memory:
        added = await memory.aadd_many(
            [
                {"content": f"Async note {i} about rivers", "user_id": "a"}
                for i in range(3)
            ]
        )
        first = added.ids[0]
        assert (await memory.aget(first, user_id="a")) is not None
        assert len(await memory.alist(user_id="a")) == 3
        updated = await memory.aupdate(first, "Async note about lakes", user_id="a")
        assert updated.page_content == "Async note about lakes"
        assert [h["op"] for h in await memory.ahistory(first, user_id="a")] == [
            "add",
            "update",
        ]
        assert await memory.adelete(first, user_id="a") is True
        assert (await memory.astats()).memories == 2
        assert await memory.aexport(tmp_path / "a.jsonl", user_id="a") == 2
        assert await memory.aprune(user_id="a", max_per_user=1) == 1
        assert await memory.aforget("a") == 1
        assert await memory.aimport_(tmp_path / "a.jsonl") == 2
    public = {name for name in dir(PersistentMemory) if not name.startswith("_")}
    sync_methods = {
        "add",
        "add_many",
        "search",
        "get",
        "list",
        "update",
        "delete",
        "forget",
        "history",
        "prune",
        "stats",
        "export",
        "import_",
    }
    assert {f"a{name}" for name in sync_methods} <= public


def test_dedup_threshold_auto_reads_the_embedding(place: Place) -> None:
    class Declaring(DeterministicFakeEmbedding):
        near_duplicate_threshold: float = 0.5

    with PersistentMemory(place("a"), Declaring(size=8)) as memory:
        assert memory._dedup == 0.5
    with PersistentMemory(place("b"), DeterministicFakeEmbedding(size=8)) as memory:
        assert memory._dedup == 0.95
    with PersistentMemory(place("c"), Declaring(size=8), dedup_threshold=0.9) as memory:
        assert memory._dedup == 0.9
