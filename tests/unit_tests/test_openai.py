"""The seed's flow on the real langchain-openai clients, against a loopback server.

`FakeOpenAIServer` speaks the OpenAI HTTP API on 127.0.0.1 with deterministic
answers; everything between our code and the socket (langchain-openai, the
openai SDK, its HTTP client, SSE parsing, errors and timeouts) is the real
production path.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
from langchain_openai import OpenAIEmbeddings

from langchain_persistent_memory import (
    PersistentChatMessageHistory,
    PersistentMemory,
    create_memory_prompt,
    with_persistent_memory,
)
from tests.unit_tests.conftest import run_python

if TYPE_CHECKING:
    from pathlib import Path

    from tests.unit_tests.openai_server import FakeOpenAIServer

SEED = [
    "User prefers short technical explanations.",
    "User is building a SaaS AI tool.",
]
HEADER = create_memory_prompt().format_messages(memories="", input=[])[0].text


def config(user: str, session: str) -> dict[str, Any]:
    return {"configurable": {"user_id": user, "session_id": session}}


def memory_lines(system: str) -> set[str]:
    assert system.startswith(HEADER)
    return set(system[len(HEADER) :].splitlines())


def test_the_seed_defaults_run_on_openai(
    server: FakeOpenAIServer, store_path: Path
) -> None:
    with PersistentMemory(store_path) as memory:  # text-embedding-3-small
        chat = with_persistent_memory(None, memory)  # gpt-4o-mini
        for text in SEED:
            chat.invoke(text, config=config("alice", "s1"))
        answer = chat.invoke("How should you answer me?", config=config("alice", "s2"))
    assert answer.content == "echo: How should you answer me?"
    last = server.chat_requests()[-1]
    assert last["model"] == "gpt-4o-mini"
    system, user = last["messages"]
    assert system["role"] == "system"
    assert memory_lines(system["content"]) == {f"- {text}" for text in SEED}
    assert user == {"role": "user", "content": "How should you answer me?"}
    models = {
        r["body"]["model"] for r in server.requests if r["path"].endswith("embeddings")
    }
    assert models == {"text-embedding-3-small"}
    assert set(SEED) <= set(server.embedding_inputs())


def test_streaming_through_chat_openai_writes_the_full_answer(
    server: FakeOpenAIServer, store_path: Path
) -> None:
    with PersistentMemory(store_path) as memory:
        chat = with_persistent_memory(None, memory)
        chunks = list(chat.stream("I run a bakery in Leeds.", config=config("a", "s")))
        assert len([c for c in chunks if c.content]) > 1
        log = PersistentChatMessageHistory(memory, "s", user_id="a").messages
    assert server.chat_requests()[-1]["stream"] is True
    assert [m.type for m in log] == ["human", "ai"]
    assert log[1].content == "echo: I run a bakery in Leeds."


async def test_async_on_openai(server: FakeOpenAIServer, store_path: Path) -> None:
    with PersistentMemory(store_path) as memory:
        chat = with_persistent_memory(None, memory)
        await chat.ainvoke(SEED[0], config=config("alice", "s1"))
        chunks = [
            c async for c in chat.astream("And now?", config=config("alice", "s2"))
        ]
    assert "".join(c.content for c in chunks) == "echo: And now?"
    system = server.chat_requests()[-1]["messages"][0]["content"]
    assert memory_lines(system) == {f"- {SEED[0]}"}


def test_second_process_gets_the_first_ones_memories_ahead_of_its_message(
    server: FakeOpenAIServer, store_path: Path
) -> None:
    code = """
        import sys
        from langchain_persistent_memory import PersistentMemory, with_persistent_memory
        with PersistentMemory(sys.argv[1]) as memory:
            chat = with_persistent_memory(None, memory)
            config = {"configurable": {"user_id": "alice", "session_id": sys.argv[2]}}
            for text in sys.argv[3:]:
                print(chat.invoke(text, config=config).content)
        """
    first = run_python(code, str(store_path), "monday", *SEED)
    assert first.splitlines() == [f"echo: {text}" for text in SEED]
    seen = len(server.chat_requests())
    second = run_python(code, str(store_path), "tuesday", "What am I building?")
    assert second.strip() == "echo: What am I building?"
    requests = server.chat_requests()
    assert len(requests) == seen + 1
    system, user = requests[-1]["messages"]
    # A fresh process, a new session: no chat history, only long-term memory,
    # and the memory comes first.
    assert system["role"] == "system"
    assert memory_lines(system["content"]) == {f"- {text}" for text in SEED}
    assert user == {"role": "user", "content": "What am I building?"}


def failing_writes(server: FakeOpenAIServer, word: str) -> None:
    """Let the query embedding of a message through; fail its later writes."""
    seen: list[int] = []

    def fault(texts: list[str]) -> bool:
        if any(word in text for text in texts):
            seen.append(1)
            return len(seen) > 1
        return False

    server.embeddings_fault_filter = fault


@pytest.mark.parametrize("fault", ["http-500", "timeout"])
def test_api_error_during_the_write_keeps_the_answer_and_the_store(
    server: FakeOpenAIServer, store_path: Path, fault: str
) -> None:
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        check_embedding_ctx_length=False,
        max_retries=0,
        timeout=0.5,
    )
    with PersistentMemory(store_path, embeddings) as memory:
        chat = with_persistent_memory(None, memory)
        chat.invoke("I have two kids.", config=config("alice", "s"))
        failing_writes(server, "peanuts")
        if fault == "http-500":
            server.embeddings_status = 500
        else:
            server.embeddings_delay = 2.0
        answer = chat.invoke("I am allergic to peanuts.", config=config("alice", "s"))
        assert answer.content == "echo: I am allergic to peanuts."
        assert [d.page_content for d in memory.list(user_id="alice")] == [
            "I have two kids."
        ]
        server.embeddings_status, server.embeddings_delay = 200, 0.0
        chat.invoke("I live in Leeds.", config=config("alice", "s"))
        remembered = sorted(d.page_content for d in memory.list(user_id="alice"))
    assert remembered == [
        "I am allergic to peanuts.",
        "I have two kids.",
        "I live in Leeds.",
    ]
    con = sqlite3.connect(store_path / "memory.db")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    with PersistentMemory(store_path, embeddings) as reopened:
        found = reopened.search("peanut allergy", user_id="alice", k=1)
    assert [d.page_content for d in found] == ["I am allergic to peanuts."]
