"""Evidence recall of `PersistentMemory` on LoCoMo conversations.

LoCoMo (Maharana et al., ACL 2024) is a set of long conversations with
questions whose answers are backed by evidence turns (`dia_id`s). For each
conversation: ingest every turn of every session, in order and with its
session's date, into a fresh store as one user's memories; ask each
question of categories 1-4 that has evidence; and measure how many of its
evidence turns the top memories name:

- recall@k: the share of evidence `dia_id`s named by the top k memories;
- hit@k: 1 if any is;
- recall@T tokens: the same, taking memories in rank order while their
  texts fit in T tokens (langchain-core's `count_tokens_approximately`).

Scores are averaged over questions (micro), overall and per category.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages.utils import count_tokens_approximately

from langchain_persistent_memory.memory import PersistentMemory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from langchain_core.embeddings import Embeddings

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
KS = (5, 10, 20)
BUDGETS = (250, 500, 1000)
CONTEXT_TURNS = 2  # turns on each side searched along with a turn
_SESSION = re.compile(r"^session_(\d+)$")


@dataclass
class Turn:
    """One turn of a conversation, as one memory."""

    dia_id: str
    text: str
    context: str
    created_at: float


@dataclass
class Question:
    """A question with the `dia_id`s of its evidence."""

    text: str
    category: int
    evidence: list[str]


@dataclass
class Conversation:
    """A LoCoMo conversation: its turns and questions."""

    name: str
    turns: list[Turn]
    questions: list[Question]


@dataclass
class Scores:
    """Sums of per-question scores, to average at the end."""

    questions: int = 0
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, values: dict[str, float]) -> None:
        """Count one question's scores."""
        self.questions += 1
        for key, value in values.items():
            self.sums[key] += value

    def means(self) -> dict[str, float]:
        """The average of each score."""
        return {key: total / self.questions for key, total in self.sums.items()}


def parse_date(text: str) -> float:
    """`1:56 pm on 8 May, 2023` -> epoch seconds (UTC)."""
    parsed = dt.datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")  # noqa: DTZ007
    return parsed.replace(tzinfo=dt.timezone.utc).timestamp()


def load(path: Path) -> Conversation:
    """Read one LoCoMo file: turns (with context and dates) and questions."""
    data = json.loads(path.read_text(encoding="utf-8"))
    convo = data.get("conversation", data)
    sessions = sorted(
        (int(match.group(1)), key)
        for key in convo
        if (match := _SESSION.match(key)) and isinstance(convo[key], list)
    )
    turns: list[Turn] = []
    for number, key in sessions:
        when = parse_date(convo[f"session_{number}_date_time"])
        texts = [_turn_text(turn) for turn in convo[key]]
        for i, turn in enumerate(convo[key]):
            around = (
                texts[max(0, i - CONTEXT_TURNS) : i]
                + texts[i + 1 : i + 1 + CONTEXT_TURNS]
            )
            turns.append(Turn(turn["dia_id"], texts[i], "\n".join(around), when))
    questions = [
        Question(qa["question"], int(qa["category"]), [str(e) for e in qa["evidence"]])
        for qa in data.get("qa", [])
        if int(qa["category"]) in CATEGORIES and qa.get("evidence")
    ]
    return Conversation(path.stem, turns, questions)


def _turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares a photo: {turn['blip_caption']}]"
    return text


def score(
    evidence: Sequence[str],
    ranked: Sequence[tuple[list[str], str]],
    count_tokens: Callable[[str], int],
) -> dict[str, float]:
    """Scores of one question, given memories `(source ids, text)` best first."""
    wanted = set(evidence)
    values: dict[str, float] = {}
    for k in KS:
        named = {source for ids, _ in ranked[:k] for source in ids}
        values[f"recall@{k}"] = len(wanted & named) / len(wanted)
        values[f"hit@{k}"] = float(bool(wanted & named))
    for budget in BUDGETS:
        named, spent = set(), 0
        for ids, text in ranked:
            spent += count_tokens(text)
            if spent > budget:
                break
            named.update(ids)
        values[f"recall@{budget}t"] = len(wanted & named) / len(wanted)
    return values


def _tokens(text: str) -> int:
    return count_tokens_approximately([text], extra_tokens_per_message=0)


def evaluate(
    paths: Iterable[Path],
    embedding: Embeddings,
    *,
    memory_options: dict[str, Any] | None = None,
    pool: int = 60,
    store: str | None = None,
) -> dict[str, Any]:
    """Run the evaluation; return overall and per-category averages.

    `memory_options` are passed to every `PersistentMemory` (the same for
    every conversation). Use counts are off (`reinforcement=0`) so that a
    question's result does not depend on the questions asked before it.
    Each conversation gets a temporary directory, or, with `store` (a
    PostgreSQL URL), is one user of that store, forgotten afterwards.
    """
    options = {"reinforcement": 0.0, **(memory_options or {})}
    overall = Scores()
    per_category: defaultdict[int, Scores] = defaultdict(Scores)
    per_file: dict[str, dict[str, float]] = {}
    stored = 0
    for path in paths:
        conversation = load(path)
        file_scores = Scores()
        with (
            tempfile.TemporaryDirectory() as tmp,
            PersistentMemory(
                store or Path(tmp) / "store", embedding, **options
            ) as memory,
        ):
            result = memory.add_many(
                {
                    "content": turn.text,
                    "user_id": conversation.name,
                    "kind": "message",
                    "context": turn.context,
                    "created_at": turn.created_at,
                    "source_ids": [turn.dia_id],
                }
                for turn in conversation.turns
            )
            stored += len(result.ids)
            for question in conversation.questions:
                hits = memory.search(question.text, user_id=conversation.name, k=pool)
                ranked = [
                    (d.metadata.get("source_ids", []), d.page_content) for d in hits
                ]
                values = score(question.evidence, ranked, _tokens)
                overall.add(values)
                file_scores.add(values)
                per_category[question.category].add(values)
            if store is not None:
                memory.forget(conversation.name)
        per_file[conversation.name] = file_scores.means()
    return {
        "questions": overall.questions,
        "memories": stored,
        "overall": overall.means(),
        "categories": {
            CATEGORIES[c]: {"questions": s.questions, **s.means()}
            for c, s in sorted(per_category.items())
        },
        "files": per_file,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    columns = [f"recall@{k}" for k in KS] + [f"hit@{k}" for k in KS]
    columns += [f"recall@{b}t" for b in BUDGETS]
    lines = [
        "| | questions | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    rows = [("all", report["questions"], report["overall"])]
    rows += [(name, c["questions"], c) for name, c in report["categories"].items()]
    lines.extend(
        f"| {name} | {count} | "
        + " | ".join(f"{values[c]:.3f}" for c in columns)
        + " |"
        for name, count, values in rows
    )
    return "\n".join(lines)
