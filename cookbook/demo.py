"""The main job: a chat that remembers you across processes (offline by default).

Run with `make demo`. Process 1 chats with Alice and Bob; it stores what they
say in a store directory and exits. Process 2 is a fresh interpreter: Alice
asks a question in a new session, and her memories are injected into the
prompt ahead of her message.

Offline (the default) the embeddings come from `LocalEmbeddings` (a small
multilingual model inside a PyPI package) and the "model" is
`EchoChatModel`: NOT a language model, it answers with the messages it was
given, so you see exactly what a real model would receive. With an OpenAI
key the same code runs on `text-embedding-3-small` and `gpt-4o-mini`:

    OPENAI_API_KEY=sk-... .venv/bin/python cookbook/demo.py --openai
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_persistent_memory import (
    LocalEmbeddings,
    PersistentMemory,
    RunnableWithPersistentMemory,
    with_persistent_memory,
)
from langchain_persistent_memory.testing import EchoChatModel

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

FIRST_SESSION = [
    ("alice", "I prefer short technical explanations."),
    ("alice", "I am building a SaaS AI tool for dentists."),
    ("alice", "Thanks!"),  # small talk: kept in the chat log, not in memory
    ("bob", "I like long explanations with plenty of examples."),
]
QUESTION = ("alice", "How should you explain vector indexes to me?")


def open_chat(
    path: Path, *, openai: bool
) -> tuple[PersistentMemory, RunnableWithPersistentMemory]:
    if openai:
        memory = PersistentMemory(path)  # OpenAI text-embedding-3-small
        return memory, with_persistent_memory(None, memory)  # gpt-4o-mini
    memory = PersistentMemory(path, LocalEmbeddings())
    return memory, with_persistent_memory(EchoChatModel(), memory)


def first_process(path: Path, *, openai: bool) -> None:
    memory, chat = open_chat(path, openai=openai)
    with memory:
        for user, text in FIRST_SESSION:
            config: RunnableConfig = {
                "configurable": {"user_id": user, "session_id": "monday"}
            }
            chat.invoke(text, config=config)
            print(f"  {user} said: {text}")
        for user in ("alice", "bob"):
            stored = [d.page_content for d in memory.list(user_id=user)]
            print(f"  long-term memories of {user}: {stored}")


def second_process(path: Path, *, openai: bool) -> None:
    memory, chat = open_chat(path, openai=openai)
    user, text = QUESTION
    with memory:
        config: RunnableConfig = {
            "configurable": {"user_id": user, "session_id": "tuesday"}
        }
        print(f"  {user} asks, in a new session: {text}\n")
        for chunk in chat.stream(text, config=config):
            print(chunk.content, end="", flush=True)
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openai", action="store_true", help="use OpenAI models")
    parser.add_argument("--step", choices=["first", "second"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "first":
        first_process(args.path, openai=args.openai)
        return
    if args.step == "second":
        second_process(args.path, openai=args.openai)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory"
        flags = ["--openai"] if args.openai else []
        for step, title in (
            ("first", "Process 1: two users chat; the store keeps what matters"),
            ("second", "Process 2 (a fresh interpreter): the model's prompt"),
        ):
            print(f"\n== {title}")
            subprocess.run(
                [sys.executable, __file__, "--step", step, "--path", str(path), *flags],
                check=True,
            )
        print(f"\nThe store was one directory: {path.name}/memory.db + index.faiss")


if __name__ == "__main__":
    main()
