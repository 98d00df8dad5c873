"""Optional LLM extraction: turn conversation turns into typed facts.

Any `BaseChatModel` that supports `with_structured_output` can serve. The
model sees the user's related memories (with their ids) and the new turns,
and returns facts to remember, each naming the older memories it makes
outdated. Only ids it was shown are accepted, so a model can never remove a
memory of another user, or one it did not see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from collections.abc import Sequence

    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

INSTRUCTIONS = """You maintain the long-term memory of an assistant about one user.
From the new conversation turns, extract the facts worth remembering in later
conversations: preferences, facts about the user and their life, decisions,
and events with their dates. Write each as one short self-contained sentence
about the user ("User prefers short technical explanations."). Skip small talk,
questions, and anything already stated by a known memory.
kind is one of: preference, fact, decision, event.
importance is 0 (trivia) to 1 (essential).
If a new fact makes a known memory outdated or contradicts it, list that
memory's id in supersedes. Return no facts if there is nothing worth keeping."""


class Fact(BaseModel):
    """One fact to remember about the user."""

    kind: str = Field(description="preference, fact, decision or event")
    text: str = Field(description="one self-contained sentence about the user")
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    supersedes: list[str] = Field(
        default_factory=list,
        description="ids of known memories this fact makes outdated",
    )


class Facts(BaseModel):
    """The facts found in the new turns."""

    facts: list[Fact] = Field(default_factory=list)


def extract(
    model: BaseChatModel, turns: Sequence[str], known: Sequence[Document]
) -> list[Fact]:
    """Ask `model` for the facts in `turns`, given the `known` memories.

    Facts with empty text are dropped; `supersedes` keeps only known ids.

    Raises:
        TypeError: If the model does not return the `Facts` schema.
    """
    answer = model.with_structured_output(Facts).invoke(_prompt(turns, known))
    return _facts(model, answer, known)


async def aextract(
    model: BaseChatModel, turns: Sequence[str], known: Sequence[Document]
) -> list[Fact]:
    """Async `extract` (the model is awaited with `ainvoke`)."""
    answer = await model.with_structured_output(Facts).ainvoke(_prompt(turns, known))
    return _facts(model, answer, known)


def _prompt(turns: Sequence[str], known: Sequence[Document]) -> list[BaseMessage]:
    known_lines = "\n".join(f"- [{doc.id}] {doc.page_content}" for doc in known)
    new_lines = "\n".join(f"- {turn}" for turn in turns)
    return [
        SystemMessage(INSTRUCTIONS),
        HumanMessage(
            f"Known memories:\n{known_lines or '(none)'}\n\nNew turns:\n{new_lines}"
        ),
    ]


def _facts(model: BaseChatModel, answer: Any, known: Sequence[Document]) -> list[Fact]:
    if isinstance(answer, dict):
        answer = Facts.model_validate(answer)
    if not isinstance(answer, Facts):
        msg = (
            f"The extractor {type(model).__name__} returned "
            f"{type(answer).__name__}, not the Facts schema."
        )
        raise TypeError(msg)
    allowed = {doc.id for doc in known}
    return [
        fact.model_copy(
            update={"supersedes": [i for i in fact.supersedes if i in allowed]}
        )
        for fact in answer.facts
        if fact.text.strip() and fact.kind.strip()
    ]
