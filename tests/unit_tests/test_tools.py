"""create_memory_tools: agent tools whose user comes from the run's config only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from langchain.agents import create_agent
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ValidationError

from langchain_persistent_memory import (
    LocalEmbeddings,
    PersistentMemory,
    create_memory_tools,
)
from langchain_persistent_memory.testing import ScriptedToolChatModel
from tests.unit_tests.conftest import Place, run_python

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from langchain_core.tools import BaseTool

ALICE = {"configurable": {"user_id": "alice"}}
BOB = {"configurable": {"user_id": "bob"}}


@pytest.fixture
def memory(place: Place) -> Iterator[PersistentMemory]:
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=16)) as mem:
        yield mem


def call(tool: BaseTool, args: dict[str, Any], config: Any) -> ToolMessage:
    """Invoke a tool the way an agent does: with a model's tool call."""
    message = tool.invoke(
        {"type": "tool_call", "id": "call-1", "name": tool.name, "args": args},
        config=config,
    )
    assert isinstance(message, ToolMessage)
    return message


async def acall(tool: BaseTool, args: dict[str, Any], config: Any) -> ToolMessage:
    message = await tool.ainvoke(
        {"type": "tool_call", "id": "call-1", "name": tool.name, "args": args},
        config=config,
    )
    assert isinstance(message, ToolMessage)
    return message


def schema(tool: BaseTool) -> dict[str, Any]:
    """The JSON schema of the arguments a model is shown."""
    model = tool.tool_call_schema
    assert not isinstance(model, dict)
    return model.model_json_schema()


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def test_schemas_have_no_user_and_describe_every_argument(
    memory: PersistentMemory,
) -> None:
    save, search = create_memory_tools(memory)
    assert (save.name, search.name) == ("save_memory", "search_memory")
    expected = {
        "save_memory": ({"content", "kind", "importance"}, ["content"]),
        "search_memory": ({"query", "k"}, ["query"]),
    }
    for tool in (save, search):
        fields, required = expected[tool.name]
        shown = schema(tool)
        assert set(shown["properties"]) == fields
        assert shown["required"] == required
        assert set(tool.args) == fields
        parameters = convert_to_openai_tool(tool)["function"]["parameters"]
        assert set(parameters["properties"]) == fields
        for name, spec in shown["properties"].items():
            assert "user" not in name
            assert "config" not in name
            assert len(spec["description"]) > 20, name
        assert "there is no user argument" in tool.description
        assert tool.response_format == "content_and_artifact"
    kind = schema(save)["properties"]["kind"]
    assert kind["enum"] == ["fact", "preference", "decision", "event"]
    assert kind["default"] == "fact"
    k = schema(search)["properties"]["k"]
    assert "default 5, at most 20" in k["description"]


def test_save_then_search_is_scoped_to_the_configs_user(
    memory: PersistentMemory,
) -> None:
    save, search = create_memory_tools(memory)
    saved = call(save, {"content": "User drives a red Volvo."}, ALICE)
    assert saved.status == "success"
    [memory_id] = saved.artifact["ids"]
    assert saved.content == f"Saved memory {memory_id} (fact): User drives a red Volvo."
    stored = memory.get(memory_id, user_id="alice")
    assert stored is not None
    assert stored.metadata["kind"] == "fact"
    assert stored.metadata["importance"] == 0.5
    call(save, {"content": "User cycles to work.", "kind": "event"}, BOB)

    found = call(search, {"query": "Which car does the user drive?"}, ALICE)
    assert f"[fact] User drives a red Volvo. (id: {memory_id})" in found.content
    assert "cycles" not in found.content
    assert [d.id for d in found.artifact] == [memory_id]
    assert found.artifact[0].metadata["user_id"] == "alice"

    theirs = call(search, {"query": "Which car does the user drive?"}, BOB)
    assert "Volvo" not in theirs.content
    assert "[event] User cycles to work." in theirs.content
    assert {d.metadata["user_id"] for d in theirs.artifact} == {"bob"}

    nobody = call(search, {"query": "car"}, {"configurable": {"user_id": "carol"}})
    assert nobody.content == "No memories found for this query."
    assert nobody.artifact == []


def test_kind_importance_k_and_session(memory: PersistentMemory) -> None:
    save, search = create_memory_tools(memory, k=2)
    config = {"configurable": {"user_id": "alice", "session_id": "monday"}}
    saved = call(
        save,
        {"content": "User prefers tea.", "kind": "preference", "importance": 0.9},
        config,
    )
    doc = memory.get(saved.artifact["ids"][0], user_id="alice")
    assert doc is not None
    assert doc.metadata["kind"] == "preference"
    assert doc.metadata["importance"] == 0.9
    assert doc.metadata["session_id"] == "monday"
    for i in range(4):
        memory.add(f"User owns plant number {i}", user_id="alice")
    assert len(call(search, {"query": "plant"}, ALICE).artifact) == 2  # the k given
    assert len(call(search, {"query": "plant", "k": 4}, ALICE).artifact) == 4
    for bad in ({"query": "plant", "k": 21}, {"query": "plant", "k": 0}):
        with pytest.raises(ValidationError):
            call(search, bad, ALICE)
    for bad_save in (
        {"content": "User is tall.", "kind": "gossip"},
        {"content": "User is tall.", "importance": 1.5},
        {"content": "   "},
        {"kind": "fact"},
    ):
        with pytest.raises(ValidationError):
            call(save, bad_save, ALICE)
    with pytest.raises(ValidationError, match="only whitespace"):
        call(search, {"query": " \n"}, ALICE)


def test_custom_kinds_restrict_saves_and_searches(memory: PersistentMemory) -> None:
    memory.add("User likes trains (a plain fact).", user_id="alice")
    save, search = create_memory_tools(memory, kinds=["note", "todo"])
    kind = schema(save)["properties"]["kind"]
    assert (kind["enum"], kind["default"]) == (["note", "todo"], "note")
    saved = call(save, {"content": "User likes trains, note this."}, ALICE)
    assert "(note)" in saved.content
    with pytest.raises(ValidationError):
        call(save, {"content": "User likes buses.", "kind": "fact"}, ALICE)
    found = call(search, {"query": "trains"}, ALICE)
    assert [d.metadata["kind"] for d in found.artifact] == ["note"]
    # Without kinds, searches cover every kind.
    everything = create_memory_tools(memory)[1]
    kinds = {
        d.metadata["kind"]
        for d in call(everything, {"query": "trains"}, ALICE).artifact
    }
    assert kinds == {"fact", "note"}


def test_factory_arguments_are_checked(memory: PersistentMemory) -> None:
    with pytest.raises(TypeError, match="PersistentMemory"):
        create_memory_tools(memory._store)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of strings"):
        create_memory_tools(memory, kinds="fact")
    with pytest.raises(ValueError, match="at least one kind"):
        create_memory_tools(memory, kinds=[])
    with pytest.raises(ValueError, match="repeats"):
        create_memory_tools(memory, kinds=["a", "a"])
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        create_memory_tools(memory, k=0)
    with pytest.raises(ValueError, match="must not exceed max_k"):
        create_memory_tools(memory, k=30)
    with pytest.raises(ValueError, match="token_budget"):
        create_memory_tools(memory, token_budget=-1)


def test_small_talk_and_duplicates_are_reported_as_skipped(
    memory: PersistentMemory,
) -> None:
    save, _ = create_memory_tools(memory)
    thanks = call(save, {"content": "Thanks, that's great!"}, ALICE)
    assert thanks.status == "success"  # a normal answer, not an error
    assert thanks.content == (
        "Not saved: skipped by the write gate (small talk): Thanks, that's great!"
    )
    assert thanks.artifact == {
        "ids": [],
        "skipped": [["Thanks, that's great!", "small talk"]],
    }
    first = call(save, {"content": "User lives in Oslo."}, ALICE)
    again = call(save, {"content": "user lives in  OSLO."}, ALICE)
    [memory_id] = first.artifact["ids"]
    assert again.content.startswith("Already remembered, not saved again (duplicate")
    assert memory_id in again.content
    assert again.artifact["ids"] == []
    assert len(memory.list(user_id="alice")) == 1


def test_the_model_cannot_choose_the_user(memory: PersistentMemory) -> None:
    memory.add("Bob's bank PIN hint is his cat's name.", user_id="bob")
    save, search = create_memory_tools(memory)
    hostile = [
        {"user_id": "bob"},
        {"config": {"configurable": {"user_id": "bob"}}},
        {"configurable": {"user_id": "bob"}},
    ]
    for extra in hostile:
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            call(search, {"query": "bank PIN cat", **extra}, ALICE)
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            call(save, {"content": "Alice was here.", **extra}, ALICE)
    assert memory.list(user_id="alice") == []

    # Through an agent: the error goes back to the model, bob's memory stays his.
    for extra in hostile:
        model = ScriptedToolChatModel(extra_args=extra)
        agent = create_agent(model, tools=[save, search])
        state = agent.invoke(
            {"messages": [("human", "What is the bank PIN hint?")]}, config=ALICE
        )
        [result] = tool_messages(state)
        assert result.status == "error"
        assert "Extra inputs are not permitted" in result.text
        assert all("cat's name" not in m.text for m in state["messages"])
        state = agent.invoke(
            {"messages": [("human", "Remember that Alice likes tea.")]}, config=ALICE
        )
        assert tool_messages(state)[0].status == "error"
    assert memory.list(user_id="alice") == []
    assert len(memory.list(user_id="bob")) == 1


async def test_missing_user_is_a_clear_error(memory: PersistentMemory) -> None:
    save, search = create_memory_tools(memory)
    configs: list[Any] = [None, {}, {"configurable": {}}, {"configurable": {"x": 1}}]
    for config in configs:
        for tool, args in (
            (save, {"content": "User is tall."}),
            (search, {"query": "q"}),
        ):
            with pytest.raises(ValueError, match=f"The {tool.name} tool needs") as err:
                call(tool, args, config)
            assert "config={'configurable': {'user_id': ...}}" in str(err.value)
            assert "never take the user from the model" in str(err.value)
            with pytest.raises(ValueError, match=f"The {tool.name} tool needs"):
                await acall(tool, args, config)
    with pytest.raises(TypeError, match="user_id must be a non-empty str"):
        call(search, {"query": "q"}, {"configurable": {"user_id": 7}})
    with pytest.raises(TypeError, match="user_id must be a non-empty str"):
        call(search, {"query": "q"}, {"configurable": {"user_id": ""}})
    # An agent run without a user fails loudly instead of sharing memory.
    agent = create_agent(ScriptedToolChatModel(), tools=[save, search])
    with pytest.raises(ValueError, match="needs the user's id"):
        agent.invoke({"messages": [("human", "What do I like?")]})
    assert memory.stats().memories == 0


async def test_async_path_uses_aadd_and_asearch(
    memory: PersistentMemory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sync_used(*args: Any, **kwargs: Any) -> None:
        msg = f"the async path called a sync method with {args}, {kwargs}"
        raise AssertionError(msg)

    monkeypatch.setattr(memory, "add", sync_used)
    monkeypatch.setattr(memory, "search", sync_used)
    save, search = create_memory_tools(memory)
    saved = await acall(save, {"content": "User plays the cello."}, ALICE)
    assert saved.content.startswith("Saved memory ")
    skipped = await acall(save, {"content": "ok thanks!"}, ALICE)
    assert "skipped by the write gate" in skipped.content
    found = await acall(search, {"query": "cello"}, ALICE)
    assert "User plays the cello." in found.content
    assert "cello" not in (await acall(search, {"query": "cello"}, BOB)).content

    agent = create_agent(ScriptedToolChatModel(), tools=[save, search])
    await agent.ainvoke(
        {"messages": [("human", "Remember that I prefer aisle seats.")]}, config=BOB
    )
    state = await agent.ainvoke(
        {"messages": [("human", "Which seats do I prefer?")]}, config=BOB
    )
    [result] = tool_messages(state)
    assert "[preference] I prefer aisle seats." in result.text
    assert "cello" not in result.text


def test_scripted_model_only_calls_bound_tools(memory: PersistentMemory) -> None:
    model = ScriptedToolChatModel()
    assert "No tool applies" in model.invoke("hello there").text
    unbound = model.invoke("What do I like?")
    assert isinstance(unbound, AIMessage)
    assert unbound.tool_calls == []
    assert "not bound" in unbound.text
    bound = model.bind_tools(create_memory_tools(memory)).invoke("What do I like?")
    assert bound.tool_calls == [
        {
            "name": "search_memory",
            "args": {"query": "What do I like?"},
            "id": "call_1",
            "type": "tool_call",
        }
    ]
    # It only picks a kind the tool offers.
    custom = model.bind_tools(create_memory_tools(memory, kinds=["note"]))
    assert custom.invoke("Remember: I prefer tea").tool_calls[0]["args"] == {
        "content": "I prefer tea"
    }


AGENT_SCRIPT = """
import json, sys
from langchain.agents import create_agent
from langchain_persistent_memory import LocalEmbeddings, PersistentMemory
from langchain_persistent_memory import create_memory_tools
from langchain_persistent_memory.testing import ScriptedToolChatModel

memory = PersistentMemory(sys.argv[1], LocalEmbeddings())
agent = create_agent(ScriptedToolChatModel(), tools=create_memory_tools(memory))
config = {"configurable": {"user_id": sys.argv[2]}}
state = agent.invoke({"messages": [("human", sys.argv[3])]}, config=config)
memory.close()
print(json.dumps([
    {
        "type": m.type,
        "name": getattr(m, "name", None),
        "status": getattr(m, "status", None),
        "text": m.text,
        "tool_calls": getattr(m, "tool_calls", None),
        "artifact": [
            {"id": d.id, "text": d.page_content, "user_id": d.metadata["user_id"]}
            for d in m.artifact
        ] if m.type == "tool" and m.name == "search_memory" else None,
    }
    for m in state["messages"]
]))
"""


@pytest.mark.slow
def test_agent_saves_and_a_second_process_recalls(tmp_path: Path) -> None:
    path = tmp_path / "memory"
    with PersistentMemory(path, LocalEmbeddings()) as memory:
        agent = create_agent(ScriptedToolChatModel(), tools=create_memory_tools(memory))
        saved_ids = []
        for text in (
            "Remember that I prefer short technical explanations.",
            "Remember that my daughter is called Ada.",
        ):
            state = agent.invoke({"messages": [("human", text)]}, config=ALICE)
            [saved] = tool_messages(state)
            assert saved.name == "save_memory"
            assert saved.content.startswith("Saved memory ")
            saved_ids.extend(saved.artifact["ids"])
        state = agent.invoke(
            {"messages": [("human", "Remember that I prefer long stories.")]},
            config=BOB,
        )
        assert "(preference)" in tool_messages(state)[0].content
        thanks = agent.invoke(
            {"messages": [("human", "Remember: thanks!")]}, config=ALICE
        )
        assert "skipped by the write gate" in tool_messages(thanks)[0].content

    # A fresh interpreter, a fresh PersistentMemory on the same directory.
    out = run_python(
        AGENT_SCRIPT, str(path), "alice", "How should you explain things to me?"
    )
    messages = json.loads(out)
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"]
    call_msg, result, answer = messages[1], messages[2], messages[3]
    assert call_msg["tool_calls"][0]["name"] == "search_memory"
    assert set(call_msg["tool_calls"][0]["args"]) == {"query"}
    assert result["name"] == "search_memory"
    assert result["status"] == "success"
    found = result["artifact"]
    assert found[0]["text"] == "I prefer short technical explanations."
    assert found[0]["id"] == saved_ids[0]
    assert {d["user_id"] for d in found} == {"alice"}
    assert {d["id"] for d in found} <= set(saved_ids)
    lines = result["text"].splitlines()
    assert lines[1] == (
        f"1. [preference] I prefer short technical explanations. (id: {saved_ids[0]})"
    )
    assert "long stories" not in out  # bob's memory stays bob's
    assert "thanks" not in result["text"]
    assert result["text"] in answer["text"]

    theirs = json.loads(
        run_python(AGENT_SCRIPT, str(path), "bob", "How should you explain things?")
    )
    assert [d["text"] for d in theirs[2]["artifact"]] == ["I prefer long stories."]


@dataclass
class _Context:
    user_id: str
    session_id: str | None = None


@pytest.mark.parametrize("as_dict", [False, True], ids=["dataclass", "dict"])
async def test_the_user_can_come_from_the_agents_runtime_context(
    memory: PersistentMemory, *, as_dict: bool
) -> None:
    """`create_agent(..., context_schema=...)` with `invoke(..., context=...)`."""
    agent = create_agent(
        ScriptedToolChatModel(),
        tools=create_memory_tools(memory),
        context_schema=dict if as_dict else _Context,
    )

    def context(user: str) -> Any:
        made = _Context(user, session_id="s-ctx")
        return (
            {"user_id": made.user_id, "session_id": made.session_id}
            if as_dict
            else made
        )

    said = {"messages": [("human", "Remember that I prefer green tea.")]}
    agent.invoke(said, context=context("ada"))
    (saved,) = memory.list(user_id="ada")
    assert saved.page_content == "I prefer green tea."
    assert saved.metadata["session_id"] == "s-ctx"
    assert memory.list(user_id="bob") == []
    asked = {"messages": [("human", "What tea do I like?")]}
    state = await agent.ainvoke(asked, context=context("bob"))
    assert "green tea" not in state["messages"][-1].text
    state = await agent.ainvoke(asked, context=context("ada"))
    assert "I prefer green tea." in state["messages"][-1].text
    # Config and context naming two users is refused, never resolved.
    with pytest.raises(ValueError, match=r"names two user_ids: 'bob' .* 'ada'"):
        agent.invoke(
            said, context=context("ada"), config={"configurable": {"user_id": "bob"}}
        )
    assert len(memory.list(user_id="ada")) == 1
    assert memory.list(user_id="bob") == []


def test_a_context_field_left_none_is_no_second_user(memory: PersistentMemory) -> None:
    agent = create_agent(
        ScriptedToolChatModel(), tools=create_memory_tools(memory), context_schema=dict
    )
    said = {"messages": [("human", "Remember that I prefer oolong.")]}
    agent.invoke(
        said,
        context={"user_id": None, "session_id": None},
        config={"configurable": {"user_id": "ada"}},
    )
    (saved,) = memory.list(user_id="ada")
    assert saved.page_content == "I prefer oolong."
    assert "session_id" not in saved.metadata
