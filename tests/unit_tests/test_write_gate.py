"""The default write gate on 105 LoCoMo dev turns labelled by hand.

Labels (tests/unit_tests/data/write_gate_locomo.jsonl): "skip" when a turn
states no fact, preference, plan, event or substantive question about either
speaker (greetings, thanks, farewells, reactions, generic encouragement);
"keep" otherwise. The set is the 60 shortest turns of the five development
conversations (where small talk is) and 45 random others (seed 2024).
"""

from __future__ import annotations

import json
from pathlib import Path

from langchain_persistent_memory import default_write_gate

DATA = Path(__file__).parent / "data" / "write_gate_locomo.jsonl"

# Dropping content is worse than storing small talk, so precision must be
# high; recall says how much small talk the gate saves embedding.
MIN_PRECISION = 0.95
MIN_RECALL = 0.60


def test_precision_and_recall_on_labelled_locomo_turns() -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 100
    skipped = {i for i, row in enumerate(rows) if default_write_gate(row["text"])}
    small_talk = {i for i, row in enumerate(rows) if row["label"] == "skip"}
    true_positives = len(skipped & small_talk)
    precision = true_positives / len(skipped)
    recall = true_positives / len(small_talk)
    wrongly_dropped = [rows[i]["text"] for i in sorted(skipped - small_talk)]
    print(  # noqa: T201 - shown with pytest -s
        f"write gate on {len(rows)} turns: precision {precision:.3f}, recall {recall:.3f}"
    )
    assert precision >= MIN_PRECISION, wrongly_dropped
    assert recall >= MIN_RECALL
