"""PersistentChatMessageHistory: exact round trips, windows, sessions, memory."""

from __future__ import annotations

import json
import logging
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_persistent_memory import (
    PersistentChatMessageHistory,
    PersistentMemory,
)
from langchain_persistent_memory.testing import EchoChatModel
from tests.unit_tests.conftest import Place, run_python

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def store_path(place: Place) -> Path | str:
    """This module's store, on each backend (overrides conftest's directory)."""
    return place("store")


class FlakyEmbeddings(Embeddings):
    """Deterministic vectors, or an error while `down` is set."""

    def __init__(self) -> None:
        self.inner = DeterministicFakeEmbedding(size=16)
        self.down = False

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.down:
            msg = "embedding service unavailable"
            raise ConnectionError(msg)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


@pytest.fixture
def memory(store_path: Path | str, embedding: Embeddings) -> Iterator[PersistentMemory]:
    with PersistentMemory(store_path, embedding) as memory:
        yield memory


def rich_messages() -> list[BaseMessage]:
    return [
        SystemMessage("Be brief.", id="m0"),
        HumanMessage(
            "I moved to Lisbon in May.",
            id="m1",
            name="alice",
            additional_kwargs={"client": {"tz": "Europe/Lisbon"}},
        ),
        AIMessage(
            "",
            id="m2",
            tool_calls=[
                {
                    "name": "save",
                    "args": {"city": "Lisbon"},
                    "id": "c1",
                    "type": "tool_call",
                }
            ],
            usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            response_metadata={"model_name": "x", "finish_reason": "tool_calls"},
        ),
        ToolMessage("saved", tool_call_id="c1", id="m3", artifact={"rows": [1, 2]}),
        AIMessage([{"type": "text", "text": "Noted: Lisbon 🇵🇹"}], id="m4", name="bot"),
        HumanMessage("Ünïcödé, NUL \x00 and quotes ' \" ; --", id="m5"),
    ]


def test_messages_round_trip_exactly_across_processes(
    memory: PersistentMemory, store_path: Path | str
) -> None:
    history = PersistentChatMessageHistory(memory, "s1", user_id="alice")
    sent = rich_messages()
    history.add_messages(sent)
    assert history.messages == sent
    memory.close()
    out = run_python(
        """
        import json, sys
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_core.messages import messages_to_dict
        from langchain_persistent_memory import PersistentChatMessageHistory
        with PersistentChatMessageHistory(
            sys.argv[1], "s1", user_id="alice",
            embedding=DeterministicFakeEmbedding(size=16),
        ) as history:
            print(json.dumps(messages_to_dict(history.messages)))
        """,
        str(store_path),
    )
    from langchain_core.messages import messages_from_dict

    assert messages_from_dict(json.loads(out)) == sent


def test_sessions_are_per_user_even_with_the_same_session_id(
    memory: PersistentMemory,
) -> None:
    alice = PersistentChatMessageHistory(memory, "shared", user_id="alice")
    bob = PersistentChatMessageHistory(memory, "shared", user_id="bob")
    alice.add_messages([HumanMessage("alice's secret plan")])
    bob.add_messages([HumanMessage("bob's note")])
    assert [m.content for m in alice.messages] == ["alice's secret plan"]
    assert [m.content for m in bob.messages] == ["bob's note"]
    bob.clear()
    assert bob.messages == []
    assert [m.content for m in alice.messages] == ["alice's secret plan"]
    found = memory.search("alice's secret plan", user_id="bob")
    assert [d.page_content for d in found] == ["bob's note"]


def test_sessions_lists_one_users_sessions_most_recent_first(
    memory: PersistentMemory,
) -> None:
    for session, count in (("old", 2), ("new", 3)):
        PersistentChatMessageHistory(memory, session, user_id="alice").add_messages(
            [HumanMessage(f"{session} message {i}") for i in range(count)]
        )
    PersistentChatMessageHistory(memory, "other", user_id="bob").add_messages(
        [HumanMessage("not alice's")]
    )
    sessions = PersistentChatMessageHistory(memory, "x", user_id="alice").sessions()
    assert [(s["session_id"], s["messages"]) for s in sessions] == [
        ("new", 3),
        ("old", 2),
    ]
    assert all(s["started_at"] <= s["updated_at"] for s in sessions)


def turns(count: int) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for i in range(count):
        messages += [HumanMessage(f"question {i}"), AIMessage(f"answer {i}")]
    return messages


def test_message_window_keeps_the_newest_and_starts_on_a_human_message(
    memory: PersistentMemory,
) -> None:
    PersistentChatMessageHistory(memory, "s", user_id="u").add_messages(turns(10))
    windowed = PersistentChatMessageHistory(memory, "s", user_id="u", max_messages=5)
    # The newest 5 would start with "answer 7"; the window cuts to a question.
    assert [m.content for m in windowed.messages] == [
        "question 8",
        "answer 8",
        "question 9",
        "answer 9",
    ]
    whole = PersistentChatMessageHistory(memory, "s", user_id="u")
    assert len(whole.messages) == 20


def test_token_window_fits_the_budget(memory: PersistentMemory) -> None:
    from langchain_core.messages.utils import count_tokens_approximately

    long_turns = [
        message
        for i in range(30)
        for message in (HumanMessage(f"question {i} " * 20), AIMessage(f"answer {i}"))
    ]
    PersistentChatMessageHistory(memory, "s", user_id="u").add_messages(long_turns)
    history = PersistentChatMessageHistory(memory, "s", user_id="u", max_tokens=200)
    window = history.messages
    assert window
    assert count_tokens_approximately(window) <= 200
    assert window[-1] == long_turns[-1]
    assert window == long_turns[len(long_turns) - len(window) :]
    assert window[0].type == "human"
    one_more = long_turns[len(long_turns) - len(window) - 2 :]
    assert count_tokens_approximately(one_more) > 200


def test_human_messages_feed_long_term_memory_through_the_gate(
    memory: PersistentMemory,
) -> None:
    history = PersistentChatMessageHistory(memory, "s1", user_id="alice")
    history.add_messages(
        [
            HumanMessage("Thanks! Bye!"),
            HumanMessage("I prefer short technical explanations.", id="h1"),
            AIMessage("Understood, I will keep answers short and technical."),
        ]
    )
    found = memory.list(user_id="alice")
    assert [d.page_content for d in found] == ["I prefer short technical explanations."]
    meta = found[0].metadata
    assert meta["kind"] == "message"
    assert meta["role"] == "human"
    assert meta["session_id"] == "s1"
    assert meta["source_ids"] == ["h1"]
    assert len(history.messages) == 3  # the log keeps everything


def test_remember_can_include_answers_or_nothing(memory: PersistentMemory) -> None:
    both = PersistentChatMessageHistory(
        memory, "s", user_id="u1", remember=("human", "ai")
    )
    both.add_messages(
        [HumanMessage("My dog is Rex."), AIMessage("Rex is a lovely name.")]
    )
    assert sorted(d.metadata["role"] for d in memory.list(user_id="u1")) == [
        "ai",
        "human",
    ]
    none = PersistentChatMessageHistory(memory, "s", user_id="u2", remember=())
    none.add_messages([HumanMessage("My cat is Tom.")])
    assert memory.list(user_id="u2") == []
    assert len(none.messages) == 1


def test_failed_memory_write_keeps_the_log_and_retries(
    store_path: Path | str, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyEmbeddings()
    with PersistentMemory(store_path, flaky) as memory:
        history = PersistentChatMessageHistory(memory, "s", user_id="alice")
        flaky.down = True
        with caplog.at_level(logging.WARNING):
            history.add_messages([HumanMessage("I am allergic to peanuts.")])
        assert "retried" in caplog.text
        assert "embedding service unavailable" in caplog.text
        assert [m.content for m in history.messages] == ["I am allergic to peanuts."]
        assert memory.list(user_id="alice") == []
        flaky.down = False
        history.add_messages([HumanMessage("I live in Porto.")])
        assert sorted(d.page_content for d in memory.list(user_id="alice")) == [
            "I am allergic to peanuts.",
            "I live in Porto.",
        ]
        # Remembered once: a further write does not add them again.
        history.add_messages([HumanMessage("My sister is called Ana.")])
        assert len(memory.list(user_id="alice")) == 3
        assert pending_messages(memory) == 0


async def test_async_methods(memory: PersistentMemory) -> None:
    history = PersistentChatMessageHistory(memory, "s", user_id="alice")
    await history.aadd_messages([HumanMessage("I play the cello."), AIMessage("Nice!")])
    assert [m.content for m in await history.aget_messages()] == [
        "I play the cello.",
        "Nice!",
    ]
    assert [d.page_content for d in await memory.alist(user_id="alice")] == [
        "I play the cello."
    ]
    assert [s["session_id"] for s in await history.asessions()] == ["s"]
    await history.aclear()
    assert await history.aget_messages() == []
    assert len(await memory.alist(user_id="alice")) == 1  # memories outlive the log


def test_bad_input_writes_nothing(memory: PersistentMemory) -> None:
    history = PersistentChatMessageHistory(memory, "s", user_id="alice")
    with pytest.raises(TypeError, match="list of chat messages"):
        history.add_messages(HumanMessage("one"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"messages\[1\] must be a chat message"):
        history.add_messages([HumanMessage("fine"), "not a message"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"messages\[0\] cannot be stored as JSON"):
        history.add_messages([HumanMessage("x", additional_kwargs={"o": object()})])
    assert history.messages == []
    with pytest.raises(TypeError, match="session_id must be a non-empty str"):
        PersistentChatMessageHistory(memory, "", user_id="alice")
    with pytest.raises(TypeError, match="user_id"):
        PersistentChatMessageHistory(memory, "s", user_id=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_messages must be an int >= 1"):
        PersistentChatMessageHistory(memory, "s", user_id="a", max_messages=0)
    with pytest.raises(TypeError, match="only when the history opens a store"):
        PersistentChatMessageHistory(
            memory, "s", user_id="a", embedding=DeterministicFakeEmbedding(size=16)
        )
    with pytest.raises(TypeError, match="remember must be a list"):
        PersistentChatMessageHistory(memory, "s", user_id="a", remember="human")


def test_forget_removes_the_users_chat_log(memory: PersistentMemory) -> None:
    alice = PersistentChatMessageHistory(memory, "s", user_id="alice")
    bob = PersistentChatMessageHistory(memory, "s", user_id="bob")
    alice.add_messages([HumanMessage("I work at Acme.")])
    bob.add_messages([HumanMessage("I work at Globex.")])
    assert memory.forget("alice") == 1
    assert alice.messages == []
    assert alice.sessions() == []
    assert [m.content for m in bob.messages] == ["I work at Globex."]


def test_opens_a_directory_itself(store_path: Path | str) -> None:
    embedding = DeterministicFakeEmbedding(size=16)
    with PersistentChatMessageHistory(
        store_path, "s", user_id="alice", embedding=embedding
    ) as history:
        history.add_user_message("I like green tea.")
        history.add_ai_message("Noted.")
    with PersistentMemory(store_path, embedding) as memory:
        assert [d.page_content for d in memory.list(user_id="alice")] == [
            "I like green tea."
        ]


def test_works_as_the_history_of_runnable_with_message_history(
    memory: PersistentMemory,
) -> None:
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    with warnings.catch_warnings():
        # Deprecated in langchain-core, still widely used: it must keep working.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*RunnableWithMessageHistory.*")
        chain = RunnableWithMessageHistory(
            prompt | EchoChatModel(),
            lambda session_id: PersistentChatMessageHistory(
                memory, session_id, user_id="alice"
            ),
            input_messages_key="question",
            history_messages_key="history",
        )
        config = {"configurable": {"session_id": "s1"}}
        chain.invoke({"question": "My favourite colour is teal."}, config=config)
        second = chain.invoke(
            {"question": "What is my favourite colour?"}, config=config
        )
    assert "[human] My favourite colour is teal." in second.content
    log = PersistentChatMessageHistory(memory, "s1", user_id="alice").messages
    assert [m.type for m in log] == ["human", "ai", "human", "ai"]
    assert [d.page_content for d in memory.list(user_id="alice")] == [
        "What is my favourite colour?",
        "My favourite colour is teal.",
    ]


def test_token_window_counts_message_text_not_stored_json(
    memory: PersistentMemory,
) -> None:
    from langchain_core.messages.utils import count_tokens_approximately

    history = PersistentChatMessageHistory(memory, "s", user_id="u")
    history.add_messages(turns(40))
    bulky = AIMessage("fine", response_metadata={"logprobs": ["x" * 50] * 200})
    history.add_messages([HumanMessage("how are you"), bulky])
    window = PersistentChatMessageHistory(memory, "s", user_id="u", max_tokens=200)
    everything = history.messages
    expected = everything[len(everything) - len(window.messages) :]
    assert window.messages == expected
    assert count_tokens_approximately(window.messages) <= 200
    # Greedy from the newest: one more turn would not have fitted.
    assert count_tokens_approximately(everything[-len(expected) - 2 :]) > 200
    assert len(window.messages) > 10


class PoisonEmbeddings(FlakyEmbeddings):
    """Rejects long texts, as an API rejects texts over its context length."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if any(len(text) > 200 for text in texts):
            msg = "400: maximum context length exceeded"
            raise ValueError(msg)
        return super().embed_documents(texts)


def test_one_bad_message_does_not_block_the_sessions_memory(
    store_path: Path | str, caplog: pytest.LogCaptureFixture
) -> None:
    with PersistentMemory(store_path, PoisonEmbeddings()) as memory:
        history = PersistentChatMessageHistory(memory, "s", user_id="u")
        history.add_messages([HumanMessage("My name is Ann.")])
        with caplog.at_level(logging.WARNING):
            history.add_messages([HumanMessage("log dump " * 50)])
            for i in range(4):
                history.add_messages([HumanMessage(f"I visited city {i}.")])
        remembered = {d.page_content for d in memory.list(user_id="u")}
        assert remembered == {"My name is Ann."} | {
            f"I visited city {i}." for i in range(4)
        }
        assert "Gave up adding message" in caplog.text
        assert len(history.messages) == 6  # the log keeps the bad one
        assert pending_messages(memory) == 0


class HookEmbeddings(FlakyEmbeddings):
    """Runs `hook` once, in the middle of the first `embed_documents` call."""

    def __init__(self) -> None:
        super().__init__()
        self.hook: Any = None

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return super().embed_documents(texts)


def test_forget_during_a_memory_write_wins(store_path: Path | str) -> None:
    embeddings = HookEmbeddings()
    with PersistentMemory(store_path, embeddings) as memory:
        history = PersistentChatMessageHistory(memory, "s", user_id="alice")
        embeddings.hook = lambda: memory.forget("alice")
        history.add_messages([HumanMessage("My password hint is my cat Tom.")])
        assert memory.list(user_id="alice") == []
        assert history.messages == []


def test_two_writers_on_one_session_remember_each_message_once(
    store_path: Path | str,
) -> None:
    embeddings = HookEmbeddings()
    with PersistentMemory(store_path, embeddings) as memory:
        first = PersistentChatMessageHistory(memory, "s", user_id="alice")
        second = PersistentChatMessageHistory(memory, "s", user_id="alice")
        # While the first writer embeds, the second takes the same pending rows.
        embeddings.hook = second._remember
        first.add_messages([HumanMessage("I moved to Berlin in May.")])
        ops = [
            h["op"]
            for d in memory.list(user_id="alice")
            for h in memory.history(d.id or "", user_id="alice")
        ]
        assert ops == ["add"]


def test_export_import_drops_the_chat_link(
    place: Place, memory: PersistentMemory, tmp_path: Path
) -> None:
    PersistentChatMessageHistory(memory, "s", user_id="alice").add_messages(
        [HumanMessage("I am allergic to peanuts.")]
    )
    assert "chat_seq" in memory.list(user_id="alice")[0].metadata
    memory.export(tmp_path / "out.jsonl")
    assert "chat_seq" not in (tmp_path / "out.jsonl").read_text()
    with PersistentMemory(place("other"), DeterministicFakeEmbedding(size=16)) as other:
        assert other.import_(tmp_path / "out.jsonl") == 1
        assert "chat_seq" not in other.list(user_id="alice")[0].metadata


def pending_messages(memory: PersistentMemory) -> int:
    """How many chat messages still wait to be offered to long-term memory."""
    with memory._db.read() as con:
        return int(
            con.execute(
                "SELECT count(*) FROM chat_messages WHERE pending = 1"
            ).fetchone()[0]
        )
