"""The LoCoMo evaluation: loading, scoring, and a run on a tiny conversation."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_persistent_memory.evaluation.locomo import (
    evaluate,
    load,
    parse_date,
    score,
)

if TYPE_CHECKING:
    from pathlib import Path

TINY = {
    "qa": [
        {
            "question": "Which city did Ana move to?",
            "answer": "Porto",
            "evidence": ["D2:2"],
            "category": 4,
        },
        {
            "question": "What is Ben's dog called?",
            "answer": "Rusty",
            "evidence": ["D1:3", "D1:4"],
            "category": 1,
        },
        {
            "question": "What did Ana never say?",
            "adversarial_answer": "x",
            "evidence": ["D1:1"],
            "category": 5,
        },
        {"question": "No evidence here?", "answer": "?", "evidence": [], "category": 2},
    ],
    "conversation": {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "Hi Ben, how was your week?"},
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Busy with work, but fun."},
            {
                "speaker": "Ben",
                "dia_id": "D1:3",
                "text": "We adopted a dog from the shelter!",
            },
            {
                "speaker": "Ben",
                "dia_id": "D1:4",
                "text": "His name is Rusty.",
                "blip_caption": "a photo of a brown dog",
            },
        ],
        "session_2_date_time": "10:00 am on 1 June, 2023",
        "session_2": [
            {"speaker": "Ana", "dia_id": "D2:1", "text": "Big news from me."},
            {
                "speaker": "Ana",
                "dia_id": "D2:2",
                "text": "I moved to Porto last month, the city is lovely.",
            },
        ],
        "session_1_summary": "never ingested: Ana secretly loves Lisbon",
    },
}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "conv-tiny.json"
    path.write_text(json.dumps(TINY), encoding="utf-8")
    return path


def test_load_turns_context_dates_and_questions(tiny: Path) -> None:
    conversation = load(tiny)
    assert [t.dia_id for t in conversation.turns] == [
        "D1:1",
        "D1:2",
        "D1:3",
        "D1:4",
        "D2:1",
        "D2:2",
    ]
    rusty = conversation.turns[3]
    assert (
        rusty.text == "Ben: His name is Rusty. [shares a photo: a photo of a brown dog]"
    )
    assert rusty.context.splitlines() == [
        "Ben: Busy with work, but fun.",
        "Ben: We adopted a dog from the shelter!",
    ]
    assert (
        conversation.turns[4].context
        == "Ana: I moved to Porto last month, the city is lovely."
    )
    assert rusty.created_at == parse_date("1:56 pm on 8 May, 2023") == 1683554160.0
    assert [q.category for q in conversation.questions] == [4, 1]
    assert all("Lisbon" not in t.text + t.context for t in conversation.turns)


def test_score_by_hand() -> None:
    def tokens(text: str) -> int:
        return len(text)

    ranked = [(["a"], "x" * 10), (["b"], "x" * 10), (["c", "d"], "x" * 10)] + [
        (["z"], "x")
    ] * 20
    values = score(["b", "d", "q"], ranked, tokens)
    assert values["recall@5"] == pytest.approx(2 / 3)
    assert values["hit@5"] == 1.0
    assert values["recall@250t"] == pytest.approx(2 / 3)
    none = score(["q"], ranked, tokens)
    assert none["recall@20"] == 0.0
    assert none["hit@20"] == 0.0
    # Only what fits in the budget counts: 250 "tokens" hold the first three.
    short = score(["d"], [(["a"], "x" * 200), (["d"], "x" * 100)], tokens)
    assert short["recall@250t"] == 0.0
    assert short["recall@500t"] == 1.0


def test_evaluate_tiny_conversation(tiny: Path) -> None:
    report = evaluate(
        [tiny],
        DeterministicFakeEmbedding(size=16),
        memory_options={"keyword_weight": 1.0},
    )
    assert report["questions"] == 2
    assert report["memories"] == 6
    by_category = report["categories"]
    assert by_category["single-hop"]["recall@5"] == 1.0
    assert by_category["multi-hop"]["recall@5"] == 1.0
    assert report["overall"]["hit@5"] == 1.0


def test_cli_json(tiny: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "langchain_persistent_memory.evaluation",
            "locomo",
            "--data",
            str(tiny),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["questions"] == 2
    assert report["embedding"] == "fake"
    assert set(report["overall"]) >= {"recall@10", "hit@10", "recall@500t"}
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "langchain_persistent_memory.evaluation",
            "locomo",
            "--data",
            str(tiny.parent / "nothing"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert missing.returncode == 2
