"""with_persistent_memory: retrieve, inject ahead of the message, call, write."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from pydantic import Field

from langchain_persistent_memory import (
    PersistentChatMessageHistory,
    PersistentMemory,
    PersistentMemoryError,
    create_memory_prompt,
    format_memories,
    with_persistent_memory,
)
from langchain_persistent_memory.testing import EchoChatModel
from tests.unit_tests.test_history import FlakyEmbeddings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.outputs import ChatResult

    from tests.unit_tests.conftest import Place


@pytest.fixture
def store_path(place: Place) -> Path | str:
    """This module's store, on each backend (overrides conftest's directory)."""
    return place("store")


class RecordingModel(EchoChatModel):
    """The echo model that also keeps every prompt it was given."""

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.received.append(list(messages))
        return super()._generate(messages, stop, run_manager, **kwargs)

    def _stream(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.received.append(list(messages))
        return super()._stream(messages, *args, **kwargs)


def config(user: str, session: str) -> dict[str, Any]:
    return {"configurable": {"user_id": user, "session_id": session}}


@pytest.fixture
def memory(store_path: Path | str) -> Iterator[PersistentMemory]:
    with PersistentMemory(store_path, DeterministicFakeEmbedding(size=16)) as memory:
        yield memory


def system_text(memories: list[str]) -> str:
    return (
        create_memory_prompt()
        .format_messages(
            memories=format_memories([_doc(t) for t in memories]), input=[]
        )[0]
        .text
    )


def _doc(text: str) -> Any:
    from langchain_core.documents import Document

    return Document(text)


def test_memories_come_ahead_of_history_and_the_current_message(
    memory: PersistentMemory,
) -> None:
    model = RecordingModel()
    chat = with_persistent_memory(model, memory, max_history_messages=2)
    chat.invoke("I prefer short technical explanations.", config=config("alice", "s1"))
    chat.invoke("I am building a SaaS AI tool.", config=config("alice", "s1"))
    answer = chat.invoke("How should you explain things?", config=config("alice", "s1"))
    assert isinstance(answer, AIMessage)
    received = model.received[-1]
    # [system + memories] [recent history: the last turn] [current message]
    assert [m.type for m in received] == ["system", "human", "ai", "human"]
    log = PersistentChatMessageHistory(memory, "s1", user_id="alice").messages
    assert received[1:3] == log[2:4]
    assert received[1] == HumanMessage("I am building a SaaS AI tool.")
    assert received[-1] == HumanMessage("How should you explain things?")
    # The first turn is out of the history window, so it comes from memory;
    # the second is in the window, so it is not repeated as a memory.
    assert received[0] == SystemMessage(
        system_text(["I prefer short technical explanations."])
    )
    assert log[4:] == [received[-1], answer]


def test_a_new_session_recalls_what_an_old_one_stored(memory: PersistentMemory) -> None:
    model = RecordingModel()
    chat = with_persistent_memory(model, memory)
    chat.invoke("I prefer short technical explanations.", config=config("alice", "s1"))
    chat.invoke("I am building a SaaS AI tool.", config=config("alice", "s1"))
    chat.invoke("What do you know about me?", config=config("alice", "s2"))
    received = model.received[-1]
    assert [m.type for m in received] == ["system", "human"]
    assert "- I prefer short technical explanations." in received[0].text
    assert "- I am building a SaaS AI tool." in received[0].text


def test_two_users_never_see_each_others_memories_or_history(
    memory: PersistentMemory,
) -> None:
    model = RecordingModel()
    chat = with_persistent_memory(model, memory)
    chat.invoke(
        "My bank PIN hint is the cat's name, Turing.", config=config("alice", "s")
    )
    chat.invoke("I like sailing.", config=config("bob", "s"))  # same session id
    chat.invoke("What is my PIN hint? Turing?", config=config("bob", "s"))
    for prompt in model.received[1:]:
        text = "\n".join(m.text for m in prompt)
        assert "PIN hint is" not in text
    bob_history = PersistentChatMessageHistory(memory, "s", user_id="bob").messages
    assert all("PIN hint is" not in m.text for m in bob_history)
    assert all(d.metadata["user_id"] == "bob" for d in memory.list(user_id="bob"))


def test_stream_yields_chunks_and_writes_the_whole_answer(
    memory: PersistentMemory,
) -> None:
    chat = with_persistent_memory(EchoChatModel(), memory)
    chunks = list(chat.stream("I collect vinyl records.", config=config("a", "s")))
    assert len(chunks) > 1
    whole = "".join(chunk.content for chunk in chunks)
    log = PersistentChatMessageHistory(memory, "s", user_id="a").messages
    assert log[0] == HumanMessage("I collect vinyl records.")
    assert isinstance(log[1], AIMessage)
    assert log[1].content == whole


def test_a_stream_stopped_early_writes_nothing(memory: PersistentMemory) -> None:
    chat = with_persistent_memory(EchoChatModel(), memory)
    stream = chat.stream("I collect stamps.", config=config("a", "s"))
    next(stream)
    stream.close()
    assert PersistentChatMessageHistory(memory, "s", user_id="a").messages == []


async def test_async_invoke_and_stream(memory: PersistentMemory) -> None:
    model = RecordingModel()
    chat = with_persistent_memory(model, memory)
    await chat.ainvoke("My daughter is called Mia.", config=config("a", "s1"))
    chunks = [c async for c in chat.astream("Who is Mia?", config=config("a", "s2"))]
    assert len(chunks) > 1
    assert "- My daughter is called Mia." in model.received[-1][0].text
    log = await PersistentChatMessageHistory(memory, "s2", user_id="a").aget_messages()
    assert [m.type for m in log] == ["human", "ai"]
    assert log[1].content == "".join(c.content for c in chunks)


def test_batch_keeps_each_inputs_user(memory: PersistentMemory) -> None:
    model = RecordingModel()
    chat = with_persistent_memory(model, memory)
    chat.batch(
        ["I am Alice and I love jazz.", "I am Bob and I love metal."],
        config=[config("alice", "s"), config("bob", "s")],
    )
    assert [d.page_content for d in memory.list(user_id="alice")] == [
        "I am Alice and I love jazz."
    ]
    assert [d.page_content for d in memory.list(user_id="bob")] == [
        "I am Bob and I love metal."
    ]


def test_background_writes_wait_for_flush(memory: PersistentMemory) -> None:
    chat = with_persistent_memory(EchoChatModel(), memory, background=True)
    for i in range(5):
        chat.invoke(f"Fact number {i}: I own {i} bikes.", config=config("a", "s"))
    chat.flush(timeout=30)
    log = PersistentChatMessageHistory(memory, "s", user_id="a").messages
    assert [m.content for m in log[::2]] == [
        f"Fact number {i}: I own {i} bikes." for i in range(5)
    ]
    assert len(memory.list(user_id="a")) == 5


async def test_background_async_and_aflush(memory: PersistentMemory) -> None:
    chat = with_persistent_memory(EchoChatModel(), memory, background=True)
    await chat.ainvoke("I speak Finnish.", config=config("a", "s"))
    await chat.aflush()
    assert [d.page_content for d in await memory.alist(user_id="a")] == [
        "I speak Finnish."
    ]


def test_a_failed_deferred_write_is_logged_raised_by_flush_and_keeps_the_answer(
    memory: PersistentMemory, caplog: pytest.LogCaptureFixture
) -> None:
    chat = with_persistent_memory(EchoChatModel(), memory, background=True)
    unstorable = HumanMessage("hello there", additional_kwargs={"handle": object()})
    with caplog.at_level(logging.ERROR):
        answer = chat.invoke(unstorable, config=config("a", "s"))
        assert answer.content.startswith("[echo model, not an LLM]")
        with pytest.raises(PersistentMemoryError, match="1 memory write") as caught:
            chat.flush(timeout=30)
    assert isinstance(caught.value.__cause__, TypeError)
    assert "cannot be stored as JSON" in caplog.text
    chat.flush()  # reported once


def test_embedding_outage_during_the_write_keeps_the_answer_and_retries(
    store_path: Path | str,
) -> None:
    flaky = FlakyEmbeddings()
    with PersistentMemory(store_path, flaky) as memory:
        model = RecordingModel()
        chat = with_persistent_memory(model, memory)
        flaky.down = True
        answer = chat.invoke("I am vegetarian.", config=config("a", "s1"))
        assert answer.content.startswith("[echo model")
        assert memory.list(user_id="a") == []
        flaky.down = False
        chat.invoke("I live in Oslo.", config=config("a", "s1"))
        assert sorted(d.page_content for d in memory.list(user_id="a")) == [
            "I am vegetarian.",
            "I live in Oslo.",
        ]
        chat.flush()  # the outage was logged and recovered, not a lost write


def test_custom_prompt_with_string_variables_and_extra_inputs(
    memory: PersistentMemory,
) -> None:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You help {name}. Known facts:\n{memories}"),
            ("human", "{input}"),
        ]
    )
    model = RecordingModel()
    chat = with_persistent_memory(model | StrOutputParser(), memory, prompt=prompt)
    first = chat.invoke(
        {"input": "I drive a red Volvo.", "name": "Ada"}, config=config("a", "s")
    )
    assert isinstance(first, str)
    chat.invoke(
        {"input": "What car do I drive?", "name": "Ada"}, config=config("a", "t")
    )
    assert model.received[-1] == [
        SystemMessage("You help Ada. Known facts:\n- I drive a red Volvo."),
        HumanMessage("What car do I drive?"),
    ]
    log = PersistentChatMessageHistory(memory, "s", user_id="a").messages
    assert log == [HumanMessage("I drive a red Volvo."), AIMessage(first)]


def test_clear_errors(memory: PersistentMemory) -> None:
    chat = with_persistent_memory(EchoChatModel(), memory)
    with pytest.raises(ValueError, match="needs a session_id"):
        chat.invoke("hi", config={"configurable": {"user_id": "a"}})
    with pytest.raises(ValueError, match="needs a user_id"):
        chat.invoke("hi")
    with pytest.raises(ValueError, match="has no 'input' key"):
        chat.invoke({"question": "hi"}, config=config("a", "s"))
    with pytest.raises(TypeError, match="must be a str, a chat message, or a dict"):
        chat.invoke(42, config=config("a", "s"))
    with pytest.raises(ValueError, match="may not set"):
        chat.invoke({"input": "hi", "memories": "x"}, config=config("a", "s"))
    no_memories = ChatPromptTemplate.from_messages([("human", "{input}")])
    with pytest.raises(ValueError, match="no memories variable"):
        with_persistent_memory(EchoChatModel(), memory, prompt=no_memories)
    with pytest.raises(TypeError, match="memory must be a PersistentMemory"):
        with_persistent_memory(EchoChatModel(), "./dir")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_messages"):
        with_persistent_memory(EchoChatModel(), memory, max_history_messages=0)
    assert PersistentChatMessageHistory(memory, "s", user_id="a").messages == []


def test_answers_that_are_not_messages_are_reported(
    memory: PersistentMemory, caplog: pytest.LogCaptureFixture
) -> None:
    chat = with_persistent_memory(
        EchoChatModel() | RunnableLambda(lambda m: {"text": m.content}), memory
    )
    with caplog.at_level(logging.ERROR):
        chat.invoke("I like chess.", config=config("a", "s"))
    assert "output_key" in caplog.text
    with pytest.raises(PersistentMemoryError):
        chat.flush()
    keyed = with_persistent_memory(
        EchoChatModel() | RunnableLambda(lambda m: {"text": m.content}),
        memory,
        output_key="text",
    )
    keyed.invoke("I like go.", config=config("a", "t"))
    keyed.flush()
    assert [
        m.type for m in PersistentChatMessageHistory(memory, "t", user_id="a").messages
    ] == [
        "human",
        "ai",
    ]


def test_without_a_key_the_chat_model_default_says_how_to_choose(
    store_path: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with (
        PersistentMemory(store_path, DeterministicFakeEmbedding(size=8)) as memory,
        pytest.raises(PersistentMemoryError, match="OPENAI_API_KEY"),
    ):
        with_persistent_memory(None, memory)


def test_format_memories() -> None:
    assert format_memories([]) == "(nothing relevant remembered)"
    assert format_memories([], empty="") == ""
    assert format_memories([_doc("a\n b"), _doc("c")]) == "- a b\n- c"
