"""cookbook/04_langgraph_agent.ipynb runs offline and recalls in another process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).parents[2] / "cookbook" / "04_langgraph_agent.ipynb"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_notebook_is_saved_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None
    intro = notebook.cells[0].source
    assert "scripted" in intro
    assert "not a language model" in intro
    assert 'model = ChatOpenAI(model="gpt-4o-mini")' in intro


@pytest.mark.slow
def test_agent_notebook_saves_then_a_new_process_recalls() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [
        "".join(output.get("text", "") for output in cell.get("outputs", []))
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    setup, schemas, monday, nosy, tuesday, as_store, langmem, later = outputs
    assert "[scripted model, not an LLM]" in setup
    assert "offline" in setup
    assert "save_memory(content, kind, importance)" in schemas
    assert "search_memory(query, k)" in schemas
    signatures = [line for line in schemas.splitlines() if not line.startswith(" ")]
    assert len(signatures) == 2
    assert all("user" not in line for line in signatures)

    saved = {
        text: memory_id
        for memory_id, text in re.findall(r"Saved memory (\w+) \(\w+\): (.+)", monday)
    }
    assert len(saved) == 3
    short = saved["I prefer short technical explanations."]
    dentists = saved["I am building a SaaS AI tool for dentists."]
    bobs = saved["I prefer long stories."]
    assert "Not saved: skipped by the write gate (small talk)" in monday
    assert f"Already remembered, not saved again (duplicate of {short}" in monday

    assert "[tool search_memory] Error invoking tool" in nosy
    assert "user_id: Extra inputs are not permitted" in nosy
    assert "long stories" not in nosy.split("with error", 1)[1]

    # The new process: the model searched, the tool found Ada's memories only.
    assert "[model calls search_memory] {'query': " in tuesday
    found = tuesday.split("[tool search_memory] ", 1)[1]
    assert found.startswith("Found 2 memories, best first:")
    assert f"1. [preference] I prefer short technical explanations. (id: {short})" in (
        found
    )
    assert f"2. [fact] I am building a SaaS AI tool for dentists. (id: {dentists})" in (
        found
    )
    assert bobs not in tuesday
    assert "long stories" not in tuesday
    assert "thanks" not in tuesday

    # The same memory as a LangGraph store: Monday's memories are Ada's items.
    assert "namespaces: [('memories', 'ada'), ('memories', 'bob')]" in as_store
    lines = as_store.splitlines()[1:]
    assert [line.split()[1] for line in lines] == [short, dentists]
    assert all(0 < float(line.split()[0]) <= 1 for line in lines)

    # LangMem's manage_memory tool saved through the store; memory.search
    # finds it for Ada, and Bob's memory does not hold it.
    saved_by_langmem = re.search(r"created memory ([0-9a-f-]{36})", langmem)
    assert saved_by_langmem is not None
    assert "memory.search found: I deploy everything on PostgreSQL." in langmem
    assert "in Bob's memory too: False" in langmem

    # A new process: LangMem's search tool finds it first, then Monday's.
    found = json.loads(later.split("[tool search_memory] ", 1)[1])
    assert next(item["key"] for item in found) == saved_by_langmem.group(1)
    assert {item["key"] for item in found} == {
        saved_by_langmem.group(1),
        short,
        dentists,
    }
    assert all(item["namespace"] == ["memories", "ada"] for item in found)
    assert bobs not in later
