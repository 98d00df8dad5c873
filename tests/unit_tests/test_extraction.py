"""Optional LLM extraction of typed facts, and supersede."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableLambda

from langchain_persistent_memory import PersistentMemory
from langchain_persistent_memory.extraction import Fact, Facts

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatResult

    from tests.unit_tests.conftest import Place

KNOWN = re.compile(r"^- \[(\w+)\] (.*)$", re.MULTILINE)


class ScriptedExtractor(BaseChatModel):
    """A deterministic chat model: structured output comes from a script."""

    script: Any
    prompts: list[str] = []  # noqa: RUF012

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        raise NotImplementedError

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Runnable[Any, Any]:
        assert schema is Facts

        def answer(messages: list[BaseMessage]) -> Any:
            prompt = str(messages[-1].content)
            self.prompts.append(prompt)
            known = dict(KNOWN.findall(prompt.split("New turns:", maxsplit=1)[0]))
            new = prompt.split("New turns:")[1]
            return self.script(known, new)

        return RunnableLambda(answer)


def where_they_live(known: dict[str, str], new: str) -> Facts:
    match = re.search(r"(?:live in|moved to) (\w+)", new)
    if not match:
        return Facts(facts=[])
    outdated = [i for i, text in known.items() if text.startswith("User lives in")]
    return Facts(
        facts=[
            Fact(
                kind="fact",
                text=f"User lives in {match.group(1)}.",
                importance=0.8,
                supersedes=outdated,
            )
        ]
    )


def memory_with(place: Place, script: Callable[..., Any]) -> PersistentMemory:
    return PersistentMemory(
        place("m"),
        DeterministicFakeEmbedding(size=32),
        extractor=ScriptedExtractor(script=script),
    )


def test_facts_are_stored_instead_of_the_turn(place: Place) -> None:
    with memory_with(place, where_they_live) as memory:
        result = memory.add(
            "Oh by the way, I live in Paris now!", user_id="u", source_ids=["m1"]
        )
        assert len(result.ids) == 1
        stored = memory.get(result.ids[0], user_id="u")
        assert stored is not None
        assert stored.page_content == "User lives in Paris."
        assert stored.metadata["kind"] == "fact"
        assert stored.metadata["importance"] == 0.8
        assert stored.metadata["source_ids"] == ["m1"]
        assert [d.page_content for d in memory.list(user_id="u")] == [
            "User lives in Paris."
        ]


def test_newer_fact_supersedes_older(place: Place) -> None:
    with memory_with(place, where_they_live) as memory:
        paris = memory.add("I live in Paris", user_id="u").ids[0]
        lisbon = memory.add("Big news: I moved to Lisbon last week", user_id="u").ids[0]
        # The model was shown the Paris memory with its id.
        extractor = memory._extractor
        assert isinstance(extractor, ScriptedExtractor)
        assert f"[{paris}] User lives in Paris." in extractor.prompts[-1]
        assert memory.get(paris, user_id="u") is None
        hits = memory.search("where does the user live", user_id="u", k=5)
        assert [d.id for d in hits] == [lisbon]
        trail = memory.history(paris, user_id="u")
        assert [step["op"] for step in trail] == ["add", "supersede"]
        assert trail[-1]["metadata"] == {"superseded_by": lisbon}
        assert trail[0]["text"] == "User lives in Paris."


def test_model_cannot_supersede_what_it_was_not_shown(place: Place) -> None:
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=32)) as plain:
        victim = plain.add("Another user's memory", user_id="other").ids[0]

    def greedy(known: dict[str, str], new: str) -> Facts:
        del new
        return Facts(
            facts=[
                Fact(kind="fact", text="User likes chess.", supersedes=[*known, victim])
            ]
        )

    with memory_with(place, greedy) as memory:
        memory.add("I like chess", user_id="u")
        assert memory.get(victim, user_id="other") is not None
        assert memory.stats().memories == 2


def test_no_facts_stores_nothing(place: Place) -> None:
    with memory_with(place, where_they_live) as memory:
        result = memory.add("What a lovely afternoon walk that was", user_id="u")
        assert result.ids == []
        assert result.skipped == [
            ("What a lovely afternoon walk that was", "no facts extracted")
        ]
        assert memory.stats().memories == 0


def test_small_talk_never_reaches_the_model(place: Place) -> None:
    with memory_with(place, where_they_live) as memory:
        memory.add("Thanks, bye!", user_id="u")
        extractor = memory._extractor
        assert isinstance(extractor, ScriptedExtractor)
        assert extractor.prompts == []


def test_model_failure_or_wrong_schema_stores_nothing(place: Place) -> None:
    def broken(known: dict[str, str], new: str) -> Facts:
        del known, new
        msg = "model is down"
        raise RuntimeError(msg)

    with (
        memory_with(place, broken) as memory,
        pytest.raises(RuntimeError, match="model is down"),
    ):
        memory.add("I live in Oslo", user_id="u")
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=32)) as memory:
        assert memory.stats().memories == 0

    with (
        memory_with(place, lambda _known, _new: "not facts") as memory,
        pytest.raises(TypeError, match="Facts schema"),
    ):
        memory.add("I live in Oslo", user_id="u")


async def test_async_add_extracts_and_supersedes(place: Place) -> None:
    with memory_with(place, where_they_live) as memory:
        rome = (await memory.aadd("I live in Rome", user_id="u")).ids[0]
        oslo = (await memory.aadd("We moved to Oslo in March", user_id="u")).ids[0]
        assert memory.get(rome, user_id="u") is None
        hits = await memory.asearch("where does the user live", user_id="u", k=3)
        assert [d.page_content for d in hits] == ["User lives in Oslo."]
        assert hits[0].id == oslo


def test_duplicate_fact_still_supersedes(place: Place) -> None:
    def tea_not_coffee(known: dict[str, str], new: str) -> Facts:
        if "not coffee" in new:
            coffee = [i for i, text in known.items() if "coffee" in text]
            return Facts(
                facts=[
                    Fact(kind="preference", text="User likes tea.", supersedes=coffee)
                ]
            )
        drink = "tea" if "tea" in new else "coffee"
        verb = "likes" if drink == "tea" else "prefers"
        return Facts(facts=[Fact(kind="preference", text=f"User {verb} {drink}.")])

    with memory_with(place, tea_not_coffee) as memory:
        tea = memory.add("I like tea", user_id="u").ids[0]
        coffee = memory.add("I prefer coffee", user_id="u").ids[0]
        result = memory.add("Actually I like tea, not coffee", user_id="u")
        assert result.ids == []  # the fact is a duplicate of the tea memory...
        assert memory.get(coffee, user_id="u") is None  # ...and still supersedes
        assert memory.history(coffee, user_id="u")[-1]["metadata"] == {
            "superseded_by": tea
        }


def test_extraction_does_not_count_as_use(place: Place) -> None:
    with memory_with(place, where_they_live) as memory:
        memory.add("I live in Paris", user_id="u")
        for _ in range(5):
            memory.add("Nothing new today, just a walk", user_id="u")
        hit = memory.search("where does the user live", user_id="u", k=1)[0]
        assert hit.metadata["scores"]["use"] == 1.0
