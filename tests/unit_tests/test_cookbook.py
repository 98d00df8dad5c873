"""The README's main command and the cookbook run offline, and show the memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

COOKBOOK = Path(__file__).parents[2] / "cookbook"
SEED = [
    "User prefers short technical explanations.",
    "User is building a SaaS AI tool.",
]


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
    notebook = nbformat.read(COOKBOOK / "01_quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(COOKBOOK)}},
    )
    client.execute()
    outputs = [
        "".join(output.get("text", "") for output in cell.get("outputs", []))
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    assert "offline" in outputs[0]
    later = outputs[-1]
    received = later.split("The model receives:", 1)[1]
    question = received.index("[human] What should my tool's first feature be?")
    assert received.index("[system]") < question
    for text in SEED:
        assert received.index(f"- {text}") < question
