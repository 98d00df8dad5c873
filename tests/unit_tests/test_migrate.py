"""`lpm migrate`: a store copied between a directory and PostgreSQL, as users run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage

from langchain_persistent_memory import PersistentChatMessageHistory, PersistentMemory
from langchain_persistent_memory._migrate import MigrationReport, _verify
from langchain_persistent_memory.errors import PersistentMemoryError
from tests.unit_tests.test_cli import LPM, ROOT, lpm

if TYPE_CHECKING:
    from pathlib import Path

MODEL = "fake-16"


def embedding() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=16)


def open_memory(location: Path | str) -> PersistentMemory:
    return PersistentMemory(location, embedding(), embedding_model=MODEL)


def fill(location: Path | str, count: int = 60) -> None:
    """Memories of three users with all that a store keeps beside them."""
    with open_memory(location) as memory:
        memory.add_many(
            {
                "content": f"note {i}: the harbour of town {i % 13} has {i} boats",
                "user_id": f"u{i % 3}",
                "kind": ("fact", "event", "preference")[i % 3],
                "importance": (i % 10) / 10,
                "metadata": {"n": i, "even": i % 2 == 0},
            }
            for i in range(count)
        )
        first = memory.list(user_id="u0")[0]
        memory.update(first.id or "", "note changed: the harbour moved", user_id="u0")
        history = PersistentChatMessageHistory(memory, "s1", user_id="u1")
        history.add_messages(
            [HumanMessage("I moved to Bergen in May."), AIMessage("Lovely city.")]
        )
        memory.search("harbour boats", user_id="u2", k=4)  # use counts


def snapshot(location: Path | str) -> dict[str, Any]:
    """What a user can read back: memories, searches, histories, chats."""
    with open_memory(location) as memory:
        found: dict[str, Any] = {}
        for user in ("u0", "u1", "u2"):
            documents = memory.list(user_id=user, limit=1000)
            found[user] = [(d.id, d.page_content, d.metadata) for d in documents]
            found[f"{user} history"] = [
                memory.history(d.id or "", user_id=user) for d in documents
            ]
            found[f"{user} search"] = sorted(
                (d.id or "")
                for d in memory._search(
                    "harbour town 7", user_id=user, k=100, record_use=False
                )
            )
        history = PersistentChatMessageHistory(memory, "s1", user_id="u1")
        found["chat"] = [(m.type, m.content) for m in history.messages]
    return found


def migrate(source: Path | str, target: Path | str, *extra: str) -> dict[str, Any]:
    result = lpm("migrate", source, target, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_directory_to_postgres_and_back_keeps_everything(
    tmp_path: Path, postgres_url: str
) -> None:
    fill(tmp_path / "a")
    before = snapshot(tmp_path / "a")
    there = migrate(tmp_path / "a", postgres_url, "--batch-size", "7")
    assert there["copied"] == 61  # 60 notes and one chat message
    assert there["rows"]["memories"] == 61
    assert there["rows"]["chat_messages"] == 2
    assert there["rows"]["use"] == 4
    assert snapshot(postgres_url) == before
    back = migrate(postgres_url, tmp_path / "b")
    assert back["checksums"] == there["checksums"]
    assert snapshot(tmp_path / "b") == before
    # The copies are stores in their own right: new writes follow the old.
    with open_memory(postgres_url) as memory:
        memory.add("A new note after the move", user_id="u1")
        trail = memory.history(memory.list(user_id="u1")[0].id or "", user_id="u1")
        assert [entry["op"] for entry in trail] == ["add"]
        PersistentChatMessageHistory(memory, "s1", user_id="u1").add_messages(
            [HumanMessage("And then to Oslo.")]
        )
        with memory._db.read() as con:
            seqs = [row[0] for row in con.execute("SELECT seq FROM chat_messages")]
        assert sorted(seqs) == [1, 2, 3]


def test_running_it_again_copies_nothing_and_repairs_a_difference(
    tmp_path: Path, postgres_url: str
) -> None:
    fill(tmp_path / "a", count=30)
    migrate(tmp_path / "a", postgres_url)
    again = migrate(tmp_path / "a", postgres_url)
    assert (again["copied"], again["already_there"]) == (0, 31)
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(
            "UPDATE documents SET text = 'tampered' WHERE id ="
            " (SELECT min(id) FROM documents)"
        )
    with (
        open_memory(tmp_path / "a") as source,
        open_memory(postgres_url) as target,
        pytest.raises(PersistentMemoryError, match="Verification failed for memories"),
    ):
        _verify(source, target, MigrationReport())
    repaired = migrate(tmp_path / "a", postgres_url)
    assert repaired["copied"] == 1
    assert snapshot(postgres_url) == snapshot(tmp_path / "a")


def test_an_interrupted_migration_resumes(tmp_path: Path, postgres_url: str) -> None:
    fill(tmp_path / "a", count=3000)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [str(LPM), "migrate", str(tmp_path / "a"), postgres_url, "--batch-size", "50"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    copied = 0
    deadline = time.monotonic() + 120
    with psycopg.connect(postgres_url, autocommit=True) as con:
        while copied < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
            exists = con.execute("SELECT to_regclass('documents')").fetchone()[0]
            if exists:
                copied = con.execute("SELECT count(*) FROM documents").fetchone()[0]
        process.send_signal(signal.SIGKILL)
        process.wait()
        at_kill = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    assert 500 <= at_kill < 3001
    report = migrate(tmp_path / "a", postgres_url)
    assert report["already_there"] >= at_kill
    assert report["copied"] + report["already_there"] == 3001
    assert report["rows"]["memories"] == 3001
    with open_memory(postgres_url) as memory:
        assert len(memory.list(user_id="u2", limit=5000)) == 1000
        with memory._db.read() as con:
            (index,) = con.execute(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'documents_embedding'"
            ).fetchone()
        assert index == 1  # built again after the load


def test_a_destination_holding_other_memories_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    fill(tmp_path / "a", count=6)
    with open_memory(postgres_url) as memory:
        memory.add("Someone else's memory", user_id="z")
    result = lpm("migrate", tmp_path / "a", postgres_url)
    assert result.returncode == 1
    assert "already holds memories that did not come from this source" in result.stderr
    with open_memory(postgres_url) as memory:
        assert memory.stats().memories == 1
    same = lpm("migrate", tmp_path / "a", tmp_path / "a")
    assert same.returncode == 1
    assert "the same store" in same.stderr
    missing = lpm("migrate", tmp_path / "nothing", postgres_url)
    assert missing.returncode == 3


def test_memory_commands_take_a_url(postgres_url: str) -> None:
    fake = "tests.unit_tests.test_cli:fake"
    added = lpm(
        "add", "I keep bees", "--user", "ann", "--store", postgres_url,
        "--embedding", fake, "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = lpm("list", "--user", "ann", "--store", postgres_url, "--json")
    assert [m["text"] for m in json.loads(listed.stdout)] == ["I keep bees"]
    found = lpm(
        "search", "bees", "--user", "ann", "--store", postgres_url,
        "--embedding", fake, "--json",
    )  # fmt: skip
    assert [m["text"] for m in json.loads(found.stdout)] == ["I keep bees"]
    stats = json.loads(lpm("stats", "--store", postgres_url, "--json").stdout)
    assert (stats["memories"], stats["users"], stats["dimension"]) == (1, 1, 16)
    shown = lpm("stats", "--store", postgres_url)
    assert "PostgreSQL (HNSW" in shown.stdout
    refused = lpm("reindex", "--store", postgres_url)
    assert refused.returncode == 2
    assert "works on a directory store" in refused.stderr


def test_running_it_after_the_source_changed_makes_a_copy_again(
    tmp_path: Path, postgres_url: str
) -> None:
    fill(tmp_path / "a", count=30)
    migrate(tmp_path / "a", postgres_url)
    with open_memory(tmp_path / "a") as source:
        source.forget("u0")  # memories, audit trail and chats of u0 go
        source.add("A new note about ferries", user_id="u2")
        PersistentChatMessageHistory(source, "s1", user_id="u1").add_messages(
            [HumanMessage("And then I moved to Oslo.")]
        )
    again = migrate(tmp_path / "a", postgres_url)
    assert again["rows"]["memories"] == 30 - 10 + 1 + 2
    assert snapshot(postgres_url) == snapshot(tmp_path / "a")
    with open_memory(postgres_url) as memory:
        assert memory.list(user_id="u0") == []
        assert memory.history("anything", user_id="u0") == []
