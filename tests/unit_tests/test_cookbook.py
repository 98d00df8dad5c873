"""The README's main command and the cookbook run offline, and show the memory."""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import nbclient
import nbformat
import pytest

COOKBOOK = Path(__file__).parents[2] / "cookbook"
SEED = [
    "User prefers short technical explanations.",
    "User is building a SaaS AI tool.",
]
PNG = b"\x89PNG\r\n\x1a\n"


class CellOutput(NamedTuple):
    """What one code cell of an executed notebook produced."""

    source: str
    text: str  # stdout, then the cell's result as text/plain
    images: list[bytes]  # decoded image/png outputs


def run_notebook(name: str) -> list[CellOutput]:
    """Execute a cookbook notebook (in cookbook/) and return its code cells' outputs."""
    notebook = nbformat.read(COOKBOOK / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(COOKBOOK)}},
    )
    client.execute()
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        text, images = [], []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                text.append(output["text"])
            data = output.get("data", {})
            if output.get("output_type") == "execute_result" and "text/plain" in data:
                text.append(data["text/plain"])
            if "image/png" in data:
                images.append(base64.b64decode(data["image/png"]))
        cells.append(CellOutput(cell.source, "".join(text), images))
    return cells


def cell_with(cells: list[CellOutput], snippet: str) -> CellOutput:
    """The one code cell whose source contains `snippet`."""
    found = [cell for cell in cells if snippet in cell.source]
    assert len(found) == 1, f"{len(found)} cells contain {snippet!r}"
    return found[0]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_demo_recalls_in_a_second_process_ahead_of_the_message() -> None:
    result = subprocess.run(
        [sys.executable, str(COOKBOOK / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    second = result.stdout.split("== Process 2", 1)[1]
    system = second.index("[system]")
    question = second.index("[human] How should you explain vector indexes to me?")
    for memory in (
        "- I prefer short technical explanations.",
        "- I am building a SaaS AI tool for dentists.",
    ):
        assert system < second.index(memory) < question
    assert "plenty of examples" not in second  # Bob's memory stays Bob's
    assert "Thanks!" not in second  # small talk was not remembered


def test_quickstart_notebook_runs_offline_and_recalls_in_another_process() -> None:
    outputs = [cell.text for cell in run_notebook("01_quickstart.ipynb")]
    assert "offline" in outputs[0]
    later = outputs[-1]
    received = later.split("The model receives:", 1)[1]
    question = received.index("[human] What should my tool's first feature be?")
    assert received.index("[system]") < question
    for text in SEED:
        assert received.index(f"- {text}") < question


@pytest.mark.parametrize(
    "name",
    [
        "01_quickstart.ipynb",
        "02_lcel_chain.ipynb",
        "03_multi_user.ipynb",
        "05_evaluation_locomo.ipynb",
    ],
)
def test_notebooks_are_saved_without_outputs(name: str) -> None:
    notebook = nbformat.read(COOKBOOK / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


# ------------------------------------------------------------------ 02


class Prompt(NamedTuple):
    """An EchoChatModel answer, parsed back into what the model was given."""

    system: str  # the first line of the system message
    memories: list[str]  # the "- " lines of the system message
    humans: list[str]  # the texts of the human messages, in order


def parse_echo(text: str) -> Prompt:
    lines = text[text.index("[system] ") :].splitlines()
    end = next(
        (i for i, line in enumerate(lines) if line.startswith(("[human] ", "[ai] "))),
        len(lines),
    )
    return Prompt(
        system=lines[0],
        memories=[line[2:] for line in lines[1:end] if line.startswith("- ")],
        humans=[line[8:] for line in lines[end:] if line.startswith("[human] ")],
    )


def parse_messages(text: str, title: str) -> list[str]:
    """The `  [type] text` lines that `show()` printed under `title (N messages):`."""
    block = text.split(f"{title} (", 1)[1]
    count = int(block.split(" messages):", 1)[0])
    lines = block.splitlines()[1 : 1 + count]
    assert all(line.startswith("  [") for line in lines)
    return [line.strip() for line in lines]


def test_lcel_chain_notebook_recalls_session_one_in_session_two() -> None:
    cells = run_notebook("02_lcel_chain.ipynb")

    # Monday: a message is in the prompt once, as history or as a memory.
    monday = cell_with(cells, "MONDAY = [").text
    turns = re.split(r"^=== monday, turn \d+: ", monday, flags=re.MULTILINE)[1:]
    said = [turn.splitlines()[0] for turn in turns]
    assert len(said) == 4
    prompts = [parse_echo(turn) for turn in turns]
    for text, prompt in zip(said, prompts, strict=True):
        assert prompt.humans[-1] == text  # the current message comes last
        assert prompt.system.endswith("for Ada.")  # the extra variable is filled
        assert not set(prompt.memories) & set(prompt.humans)
        assert "Thanks!" not in prompt.memories
    # By the last turn the first message has left the 4-message window and
    # comes back from long-term memory instead.
    assert said[0] not in prompts[-1].humans
    assert said[0] in prompts[-1].memories

    stored = cell_with(cells, "memory.list(user_id=USER)").text
    remembered = [line.split("] ", 1)[1] for line in stored.splitlines()[1:]]
    assert "Thanks!" not in remembered  # small talk stays in the log only
    assert set(remembered) == set(said) - {"Thanks!"}

    # Tuesday, streamed: a new session with no history, Monday's memories
    # in the system block ahead of the question.
    streamed = cell_with(cells, "chain.stream(").text
    chunks = int(re.search(r"\((\d+) chunks\)", streamed).group(1))
    assert chunks > 1
    question = "Which language should the new payment service use?"
    tuesday = parse_echo(streamed)
    assert tuesday.humans == [question]
    assert tuesday.system.endswith("for Ada.")
    assert said[0] in tuesday.memories
    assert set(tuesday.memories) <= set(remembered)
    system = streamed.index("[system] ")
    asked = streamed.index(f"[human] {question}")
    for memory in tuesday.memories:
        assert system < streamed.index(f"- {memory}") < asked

    # ainvoke: the streamed turn was written; it is now history, not memory.
    later = parse_echo(cell_with(cells, "await chain.ainvoke(").text)
    assert later.humans == [question, "How should we ship it to production?"]
    assert question not in later.memories
    assert said[0] in later.memories

    # The window is the longest tail of the log, of at most 3 messages,
    # that starts on a human message.
    log_cell = cell_with(cells, "max_messages=3)").text
    log = parse_messages(log_cell, "monday, the whole log")
    window = parse_messages(log_cell, "monday, max_messages=3")
    assert len(log) == 2 * len(said)
    assert [line.startswith("[human]") for line in log] == [True, False] * len(said)
    assert 0 < len(window) <= 3
    assert window == log[-len(window) :]
    assert window[0].startswith("[human]")
    assert all(not log[-n].startswith("[human]") for n in range(len(window) + 1, 4))

    sessions = re.findall(
        r"^session (\w+): (\d+) messages",
        cell_with(cells, "sessions()").text,
        re.MULTILINE,
    )
    assert sessions == [("tuesday", "4"), ("monday", str(len(log)))]


# ------------------------------------------------------------------ 03


class Row(NamedTuple):
    user: str
    kind: str
    importance: float
    age: int  # days
    text: str


def value(row: Row, half_life: float = 30.0) -> float:
    """What `prune(max_per_user=...)` ranks by (no use recorded in 03)."""
    return row.importance * 0.5 ** (row.age / half_life)


def listed(text: str, marker: str) -> dict[str, list[str]]:
    """`user: N left` blocks after `marker`, as {user: texts}."""
    block = text.split(marker, 1)[1]
    found: dict[str, list[str]] = {}
    for header, lines in re.findall(
        r"^(\w+): \d+ left\n((?:  .*\n?)*)", block, re.MULTILINE
    ):
        found[header] = [line.strip() for line in lines.splitlines()]
    return found


def check_searches(cells: list[CellOutput], rows: list[Row]) -> None:
    """Kinds, the score's parts, and isolation, against the table of inputs."""
    by_text = {row.text: row for row in rows}
    alice = {row.text for row in rows if row.user == "alice"}

    # kinds=[...]: exactly alice's memories of those kinds (k is above their count).
    searched = cell_with(cells, "kinds=kinds").text
    blocks = re.findall(
        r"^kinds=(\[.*?\]): (\d+) memories\n((?:  .*\n?)*)", searched, re.MULTILINE
    )
    assert len(blocks) == 2
    for wanted, count, lines in blocks:
        wanted_kinds = ast.literal_eval(wanted)
        results = [line.split(None, 1) for line in lines.splitlines()]
        assert int(count) == len(results)
        assert {kind for kind, _ in results} <= set(wanted_kinds)
        assert {text for _, text in results} == {
            row.text for row in rows if row.user == "alice" and row.kind in wanted_kinds
        }

    # Each score is relevance x decay x (0.5 + importance), best first.
    ranked = re.findall(
        r"^\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)d  (.+)$",
        cell_with(cells, "Which editor does Alice use?").text,
        re.MULTILINE,
    )
    assert {text for *_, text in ranked} == alice  # k=10 covers all of hers
    scores = [float(score) for score, *_ in ranked]
    assert scores == sorted(scores, reverse=True)
    for score, fused, decay, factor, _, text in ranked:
        row = by_text[text]
        assert float(factor) == pytest.approx(0.5 + row.importance, abs=0.005)
        assert float(decay) == pytest.approx(0.5 ** (row.age / 30), abs=2e-4)
        product = float(fused) * float(decay) * float(factor)
        assert float(score) == pytest.approx(product, abs=2e-3)
    oldest = max((row for row in rows if row.user == "alice"), key=lambda r: r.age)
    assert float(next(r[0] for r in ranked if r[5] == oldest.text)) < 1e-3
    # Of the two editor memories, the recent one ranks first, as the notebook says.
    editors = [by_text[text] for *_, text in ranked if "editor" in text]
    assert len(editors) == 2
    assert editors[0].age < editors[1].age

    # Isolation: bob asks with alice's words and gets his own memories only.
    isolation = cell_with(cells, "alices_words =").text
    seen = re.findall(r"^  (\w+): (.+)$", isolation, re.MULTILINE)
    assert seen
    assert {user for user, _ in seen} == {"bob"}
    assert not {text for _, text in seen} & alice
    assert len(seen) == sum(row.user == "bob" for row in rows)
    assert "with filter={'user_id': 'alice'}: 0 memories" in isolation
    assert "bob gets alice's memory by id: None" in isolation
    assert "bob deletes alice's memory by id: False" in isolation
    assert "alice still has it: True" in isolation


def check_pruning(cells: list[CellOutput], rows: list[Row]) -> dict[str, int]:
    """Both prunes removed what they should; return each user's survivors."""
    by_text = {row.text: row for row in rows}
    users = sorted({row.user for row in rows})

    # prune(older_than_days=60) removes exactly what is older, whatever its importance.
    expired = cell_with(cells, "prune(older_than_days=60)").text
    stale = [row for row in rows if row.age > 60]
    assert stale
    assert f"removed {len(stale)}\n" in expired
    fresh = [row for row in rows if row.age <= 60]
    left = listed(expired, "removed")
    for user in users:
        assert set(left.get(user, [])) == {r.text for r in fresh if r.user == user}

    # prune(max_per_user=3) keeps each user's 3 most valuable memories.
    capped = cell_with(cells, "prune(max_per_user=3)").text
    over = sum(max(0, sum(r.user == u for r in fresh) - 3) for u in users)
    assert over > 0
    assert f"removed {over}\n" in capped
    kept = listed(capped, "removed")
    for user in users:
        mine = [r for r in fresh if r.user == user]
        survivors = [by_text[text] for text in kept.get(user, [])]
        assert len(survivors) == min(3, len(mine))
        gone = [r for r in mine if r not in survivors]
        if gone:
            assert min(map(value, survivors)) > max(map(value, gone))
    return {user: len(kept.get(user, [])) for user in users}


def test_multi_user_notebook_isolates_users_and_prunes_what_it_should() -> None:
    cells = run_notebook("03_multi_user.ipynb")
    table = cell_with(cells, "MEMORIES = [").text
    rows = [
        Row(user, kind, float(importance), int(age), text)
        for user, kind, importance, age, text in re.findall(
            r"^(\w+)\s+(\w+)\s+([\d.]+)\s+(\d+)d  (.+)$", table, re.MULTILINE
        )
    ]
    assert len(rows) >= 10

    stats = cell_with(cells, "stats = memory.stats()").text
    assert f"memories: {len(rows)}\n" in stats
    assert f"users: {len({row.user for row in rows})}\n" in stats
    kinds = ast.literal_eval(re.search(r"by kind: (\{.*\})", stats).group(1))
    assert kinds == Counter(row.kind for row in rows)

    check_searches(cells, rows)
    survivors = check_pruning(cells, rows)

    # The audit trail: add, refresh (the same text again), update; a pruned
    # memory's trail ends with the prune.
    audit = cell_with(cells, "again = memory.add(").text
    assert "added again: [] " in audit  # no copy was made
    trails = [
        re.findall(r"^  (\S+(?: \S+)?)", block, re.MULTILINE)
        for block in audit.split("history of ")[1:]
    ]
    assert trails[0] == ["add", "refresh", "update"]
    assert trails[1][0] == "add"
    assert trails[1][-1] == "prune: expired"

    # Export, forget (leaves nothing of alice, bob untouched), import.
    exported = cell_with(cells, "memory.export(").text
    assert f"exported {survivors['alice']} memories of alice" in exported
    record = json.loads(exported.split("the first:\n", 1)[1])
    assert record["metadata"]["user_id"] == "alice"
    forgot = cell_with(cells, 'memory.forget("alice")').text
    assert f"forget('alice') removed {survivors['alice']}\n" in forgot
    assert "alice's memories left: 0\n" in forgot
    assert "alice's search results: 0\n" in forgot
    assert "alice's audit entries left: 0\n" in forgot
    assert f"bob's memories left: {survivors['bob']}\n" in forgot
    restored = cell_with(cells, "memory.import_(").text
    assert f"import_ loaded {survivors['alice']}\n" in restored
    before = ast.literal_eval(re.search(r"ids before forget: (\[.*\])", restored)[1])
    after = ast.literal_eval(re.search(r"ids after import: +(\[.*\])", restored)[1])
    assert len(before) == survivors["alice"]
    assert before == after
    assert record["id"] in before
    assert f"memories in the store: {sum(survivors.values())}\n" in restored


# ------------------------------------------------------------------ 05

# The data README's BM25 baseline on the same five conversations and the
# same 760 questions (one turn per memory): recall@10 0.614.
BM25_RECALL_AT_10 = 0.614
LOCOMO_QUESTIONS = 760


def _locomo_data() -> Path | None:
    """Where the notebook will find LoCoMo: LOCOMO_DATA, or beside the repo."""
    if os.environ.get("LOCOMO_DATA"):
        return Path(os.environ["LOCOMO_DATA"])
    for folder in COOKBOOK.resolve().parents:
        if (folder / "shared" / "data" / "locomo").is_dir():
            return folder / "shared" / "data" / "locomo"
    return None


def test_locomo_notebook_beats_the_baseline_and_draws_its_figures() -> None:
    data = _locomo_data()
    if data is None or not sorted(data.glob("conv-*.json")):
        pytest.skip(
            "LoCoMo's development conversations are not beside the repository "
            "(shared/data/locomo); set LOCOMO_DATA to run notebook 05."
        )
    cells = run_notebook("05_evaluation_locomo.ipynb")

    keyword_cell = cell_with(cells, "keyword = evaluate(").text
    assert f"all five: {LOCOMO_QUESTIONS} questions" in keyword_cell

    runs = {
        name: {key: float(value) for key, value in re.findall(r"(\S+)=([\d.]+)", rest)}
        for name, rest in re.findall(
            r"^(.+?): (recall@.*)$", cell_with(cells, "RUNS = {").text, re.MULTILINE
        )
    }
    assert len(runs) == 4
    baseline = runs["BM25 baseline, all five (data README)"]
    keyword = runs["keyword side only, all five"]
    keyword_one = runs["keyword side only, conv-30"]
    hybrid = runs["hybrid with e5, conv-30"]
    assert baseline["recall@10"] == BM25_RECALL_AT_10  # quoted right
    for values in (keyword, keyword_one, hybrid):
        assert set(values) == set(baseline)
        assert all(0 < v <= 1 for v in values.values())
    # Same conversations, same questions as the baseline: a direct comparison,
    # and the notebook says the keyword side beats it everywhere.
    assert keyword["recall@10"] > BM25_RECALL_AT_10
    assert all(keyword[key] > baseline[key] for key in baseline)
    # The hybrid run covers one conversation, for which no baseline is
    # published. Its bar: the keyword side alone on that same conversation,
    # which it must beat at k=5 and not lose to at 10 or 20 (as the notebook
    # says); and the five-conversation BM25 figure as a floor.
    assert hybrid["recall@10"] > BM25_RECALL_AT_10
    assert hybrid["recall@5"] > keyword_one["recall@5"]
    assert hybrid["recall@10"] >= keyword_one["recall@10"]
    assert hybrid["recall@20"] >= keyword_one["recall@20"]

    by_category = cell_with(cells, "SERIES = {").text
    per_category = [float(v) for v in re.findall(r"[\w-]+=([\d.]+)", by_category)]
    assert len(per_category) >= 8
    assert all(0 < v <= 1 for v in per_category)

    latency = re.findall(
        r"^(.+): (\d+) memories, median search ([\d.]+) ms$",
        cell_with(cells, "def latency_curve(").text,
        re.MULTILINE,
    )
    curves: dict[str, list[tuple[int, float]]] = {}
    for label, size, median in latency:
        curves.setdefault(label, []).append((int(size), float(median)))
    assert len(curves) == 2
    for points in curves.values():
        assert len(points) >= 3
        sizes = [size for size, _ in points]
        assert sizes == sorted(set(sizes))
        assert all(median > 0 for _, median in points)

    plots = [cell for cell in cells if "plt.show()" in cell.source]
    assert len(plots) == 3
    for cell in plots:
        assert cell.images, cell.source
        assert all(image.startswith(PNG) for image in cell.images)
