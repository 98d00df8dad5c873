"""`lpm`, run as users run it: the installed command, in a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_persistent_memory import PersistentChatMessageHistory, PersistentMemory
from tests.unit_tests.openai_server import FakeOpenAIServer
from tests.unit_tests.test_evaluation import TINY

ROOT = Path(__file__).parents[2]
LPM = Path(sys.executable).with_name("lpm")
FAKE = "tests.unit_tests.test_cli:fake"


def fake() -> DeterministicFakeEmbedding:
    """The embedding the tests' stores are made with (`--embedding` names it)."""
    return DeterministicFakeEmbedding(size=16)


def lpm(
    *args: str | Path,
    stdin: str = "",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `lpm` with `args`; stdin is a pipe, never a terminal."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # so --embedding can name this module
        "COLUMNS": "200",
        **(env or {}),
    }
    environment.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [str(LPM), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=environment,
        cwd=cwd,
    )


def ok_json(*args: str | Path, stdin: str = "") -> Any:
    result = lpm(*args, "--json", stdin=stdin)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lpm: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store of two users made by the library, as an app would."""
    path = tmp_path / "store"
    with PersistentMemory(path, fake()) as memory:
        memory.add("I moved to Lisbon in May.", user_id="alice", kind="fact")
        memory.add("I prefer short answers.", user_id="alice", kind="preference")
        memory.add("My cat is called Turing.", user_id="bob", kind="fact")
    return path


def test_add_search_list_show_history(tmp_path: Path) -> None:
    path = tmp_path / "new"
    added = ok_json(
        "add",
        "I adopted a greyhound called Pixel.",
        "thanks!",
        "--user",
        "alice",
        "--kind",
        "fact",
        "--store",
        path,
        "--embedding",
        FAKE,
    )
    assert len(added["ids"]) == 1
    assert added["skipped"] == [{"text": "thanks!", "reason": "small talk"}]
    (memory_id,) = added["ids"]

    found = ok_json(
        "search",
        "greyhound Pixel",
        "--user",
        "alice",
        "--store",
        path,
        "--embedding",
        FAKE,
    )
    assert [hit["id"] for hit in found] == [memory_id]
    assert found[0]["metadata"]["kind"] == "fact"
    assert "score" in found[0]["metadata"]
    assert (
        ok_json(
            "search", "greyhound", "--user", "bob", "--store", path, "--embedding", FAKE
        )
        == []
    )

    listed = ok_json("list", "--user", "alice", "--store", path)
    assert [(m["id"], m["text"]) for m in listed] == [
        (memory_id, "I adopted a greyhound called Pixel.")
    ]
    shown = ok_json("show", memory_id, "--user", "alice", "--store", path)
    assert shown["text"] == "I adopted a greyhound called Pixel."
    assert shown["metadata"]["user_id"] == "alice"
    trail = ok_json("history", memory_id, "--user", "alice", "--store", path)
    assert [entry["op"] for entry in trail] == ["add"]

    # The same, for people: a table with the text and the id.
    table = lpm("list", "--user", "alice", "--store", path)
    assert table.returncode == 0
    assert "I adopted a greyhound called Pixel." in table.stdout
    assert memory_id in table.stdout


def test_stdin_adds_one_memory_a_line(tmp_path: Path) -> None:
    path = tmp_path / "s"
    added = ok_json(
        "add", "-", "--user", "u", "--store", path, "--embedding", FAKE,
        stdin="I play the cello.\n\nI live in Oslo.\n",
    )  # fmt: skip
    assert len(added["ids"]) == 2
    texts = {m["text"] for m in ok_json("list", "--user", "u", "--store", path)}
    assert texts == {"I play the cello.", "I live in Oslo."}


def test_reading_commands_load_no_model(store: Path) -> None:
    """A store of any model can be listed and checked without that model."""
    listed = ok_json("list", "--user", "alice", "--store", store)
    assert {m["text"] for m in listed} == {
        "I moved to Lisbon in May.",
        "I prefer short answers.",
    }
    assert (
        ok_json("list", "--user", "alice", "--kind", "fact", "--store", store)[0][
            "text"
        ]
        == "I moved to Lisbon in May."
    )
    stats = ok_json("stats", "--store", store)
    assert stats["memories"] == 3
    assert stats["users"] == 2
    assert stats["by_kind"] == {"fact": 2, "preference": 1}
    assert stats["embedding_model"] == "DeterministicFakeEmbedding"
    assert stats["dimension"] == 16


def test_errors_are_one_line_with_documented_codes(store: Path, tmp_path: Path) -> None:
    missing = lpm("list", "--user", "alice", "--store", tmp_path / "nowhere")
    assert "No store at" in one_error_line(missing, 3)
    assert not (tmp_path / "nowhere").exists()  # reading never creates a store

    unknown = lpm("show", "nope", "--user", "alice", "--store", store)
    assert "alice has no memory 'nope'" in one_error_line(unknown, 3)

    bob_id = ok_json("list", "--user", "bob", "--store", store)[0]["id"]
    other = lpm("show", bob_id, "--user", "alice", "--store", store)
    one_error_line(other, 3)  # another user's memory is not found, not shown

    usage = lpm("list", "--store", store)
    line = one_error_line(usage, 2)
    assert "--user" in line

    wrong_model = lpm(
        "search", "x", "--user", "alice", "--store", store, "--embedding", "local"
    )
    assert "DeterministicFakeEmbedding" in one_error_line(wrong_model, 1)

    no_model = lpm("search", "x", "--user", "alice", "--store", store)
    assert "pass --embedding module:callable" in one_error_line(no_model, 1)

    bad_spec = lpm(
        "add", "x", "--user", "a", "--store", store, "--embedding", "nonsense"
    )
    assert "'local', 'openai'" in one_error_line(bad_spec, 1)

    bad_value = lpm(
        "add", "A fact.", "--user", "a", "--importance", "7", "--store", store,
        "--embedding", FAKE,
    )  # fmt: skip
    assert "importance" in one_error_line(bad_value, 2)
    assert ok_json("stats", "--store", store)["memories"] == 3  # nothing was lost


def test_forget_asks_for_yes_and_touches_no_one_else(store: Path) -> None:
    refused = lpm("forget", "--user", "alice", "--store", store)
    assert "--yes" in one_error_line(refused, 2)
    assert len(ok_json("list", "--user", "alice", "--store", store)) == 2

    done = ok_json("forget", "--user", "alice", "--yes", "--store", store)
    assert done == {"user_id": "alice", "memories_removed": 2}
    assert ok_json("list", "--user", "alice", "--store", store) == []
    assert [m["text"] for m in ok_json("list", "--user", "bob", "--store", store)] == [
        "My cat is called Turing."
    ]


def test_export_then_import_into_a_new_store(store: Path, tmp_path: Path) -> None:
    file = tmp_path / "alice.jsonl"
    assert ok_json("export", file, "--user", "alice", "--store", store)["memories"] == 2
    assert len(file.read_text().splitlines()) == 2
    copy = tmp_path / "copy"
    imported = ok_json("import", file, "--store", copy, "--embedding", FAKE)
    assert imported["memories"] == 2
    original = ok_json("list", "--user", "alice", "--store", store)
    copied = ok_json("list", "--user", "alice", "--store", copy)
    assert [(m["id"], m["text"]) for m in copied] == [
        (m["id"], m["text"]) for m in original
    ]
    assert ok_json("list", "--user", "bob", "--store", copy) == []

    broken = tmp_path / "broken.jsonl"
    broken.write_text(file.read_text() + "{not json\n")
    failed = lpm("import", broken, "--store", copy, "--embedding", FAKE)
    assert "3" in one_error_line(failed, 1)  # the bad line is named
    assert len(ok_json("list", "--user", "alice", "--store", copy)) == 2


def test_doctor_passes_a_healthy_store_and_names_damage(store: Path) -> None:
    healthy = ok_json("doctor", "--store", store)
    assert healthy["status"] == "ok", healthy
    checks = {c["check"]: c for c in healthy["checks"]}
    assert checks["index vs database"]["detail"].startswith("3 vectors")

    # A damaged checkpoint: a warning (it is derived, and rebuilt), not a failure.
    index = store / "index.faiss"
    data = bytearray(index.read_bytes())
    data[100] ^= 0xFF
    index.write_bytes(bytes(data))
    damaged = lpm("doctor", "--store", store, "--json")
    assert damaged.returncode == 0
    report = json.loads(damaged.stdout)
    assert report["status"] == "warn"
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["index.faiss"]["status"] == "warn"
    assert "checksum" in checks["index.faiss"]["detail"]
    assert checks["index vs database"]["status"] == "ok"

    # A keyword row whose document is gone: harmless to search, a warning.
    con = sqlite3.connect(store / "memory.db")
    with con:
        con.execute(
            "INSERT INTO memory_fts (rowid, text, context, scope) VALUES (999, 'x', '', 'u')"
        )
    con.close()
    orphan = json.loads(lpm("doctor", "--store", store, "--json").stdout)
    checks = {c["check"]: c for c in orphan["checks"]}
    assert checks["keyword index"]["status"] == "warn"
    assert "1 rows name no document" in checks["keyword index"]["detail"]


def test_doctor_on_garbage_fails_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.mkdir()
    (path / "memory.db").write_bytes(b"this is not a database " * 200)
    before = (path / "memory.db").read_bytes()
    result = lpm("doctor", "--store", path, "--json")
    assert result.returncode == 4
    report = json.loads(result.stdout)
    assert report["status"] == "fail"
    assert report["checks"][0]["check"] == "memory.db"
    assert (path / "memory.db").read_bytes() == before


def test_reindex_rebuilds_the_checkpoint(store: Path) -> None:
    (store / "index.faiss").unlink()
    result = lpm("reindex", "--store", store)
    assert result.returncode == 0, result.stderr
    assert "Rebuilt index.faiss from memory.db: 3 vectors" in result.stdout
    assert "Rebuilding index.faiss" in result.stderr  # the progress bar
    assert (store / "index.faiss").exists()
    report = ok_json("doctor", "--store", store)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["index.faiss"]["detail"] == "3 vectors, up to date"
    assert ok_json("reindex", "--store", store)["vectors"] == 3


def test_compact_gives_space_back(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with PersistentMemory(path, fake(), dedup_threshold=None) as memory:
        memory.add_many(
            {"content": f"memory number {i} " + "padding " * 40, "user_id": f"u{i % 2}"}
            for i in range(600)
        )
        memory.forget("u0")
    result = ok_json("compact", "--store", path)
    assert result["bytes_after"] < result["bytes_before"]
    assert ok_json("stats", "--store", path)["memories"] == 300
    assert ok_json("doctor", "--store", path)["status"] == "ok"


def test_chat_dry_run_shows_the_prompt_and_stores_nothing(store: Path) -> None:
    turns = ok_json(
        "chat", "--user", "alice", "--dry-run", "--store", store, "--embedding", FAKE,
        stdin="Where do I live?\n/exit\nnever read\n",
    )  # fmt: skip
    assert len(turns) == 1
    system, human = turns[0]["prompt"]
    assert system["type"] == "system"
    assert "- I moved to Lisbon in May." in system["content"]
    assert "Turing" not in system["content"]  # bob's memory stays bob's
    assert human == {"type": "human", "content": "Where do I live?"}
    with PersistentMemory(store, fake()) as memory:
        history = PersistentChatMessageHistory(memory, "lpm-chat", user_id="alice")
        assert history.messages == []
        assert memory.stats().memories == 3

    text = lpm(
        "chat", "--user", "alice", "--dry-run", "--store", store, "--embedding", FAKE,
        stdin="Where do I live?\n",
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "[system]" in text.stdout
    assert "[human] Where do I live?" in text.stdout


def test_chat_talks_to_an_openai_compatible_server_and_remembers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chat"
    with FakeOpenAIServer() as server:
        first = ok_json(
            "chat", "--user", "ana", "--session", "monday", "--store", path,
            "--embedding", FAKE, "--base-url", server.base_url,
            stdin="I am allergic to peanuts.\n",
        )  # fmt: skip
        assert first[0]["answer"].startswith("echo: ")
        second = ok_json(
            "chat", "--user", "ana", "--session", "tuesday", "--store", path,
            "--embedding", FAKE, "--base-url", server.base_url,
            stdin="What am I allergic to?\n",
        )  # fmt: skip
        assert len(second) == 1
        last = server.chat_requests()[-1]
    assert last["model"] == "gpt-4o-mini"
    system, user = last["messages"]
    assert "- I am allergic to peanuts." in system["content"]
    assert user == {"role": "user", "content": "What am I allergic to?"}


def test_chat_without_a_key_or_server_says_how(tmp_path: Path) -> None:
    result = lpm("chat", "--user", "u", "--store", tmp_path / "c", "--embedding", FAKE)
    line = one_error_line(result, 1)
    assert "OPENAI_API_KEY" in line
    assert "--base-url" in line


def test_eval_locomo(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "conv-tiny.json").write_text(json.dumps(TINY), encoding="utf-8")
    report = ok_json("eval", "locomo", "--data", data)
    assert report["embedding"] == "fake"
    assert report["questions"] == 2
    assert report["overall"]["hit@5"] == 1.0
    missing = lpm("eval", "locomo", "--data", tmp_path / "nothing")
    assert missing.returncode == 2


def test_bench_prints_its_figures() -> None:
    figures = ok_json(
        "bench", "--memories", "600", "--users", "6", "--queries", "20", "--dim", "32"
    )
    assert figures["memories"] == 600
    assert figures["add_per_second"] > 0
    assert 0 < figures["search_p50_ms"] <= figures["search_p99_ms"]


def test_help_lists_every_command() -> None:
    result = lpm("--help")
    assert result.returncode == 0
    for command in (
        "add", "search", "list", "show", "history", "forget", "export", "import",
        "stats", "doctor", "reindex", "compact", "chat", "eval", "bench",
    ):  # fmt: skip
        assert command in result.stdout
    assert "Exit codes" in result.stdout


def dump(path: Path) -> list[str]:
    con = sqlite3.connect(path / "memory.db")
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_looking_changes_nothing(store: Path) -> None:
    """Reading commands, searches and dry runs leave every table as it was."""
    alice = ok_json("list", "--user", "alice", "--store", store)[0]["id"]
    before = dump(store)
    for args in (
        ("list", "--user", "alice"),
        ("show", alice, "--user", "alice"),
        ("history", alice, "--user", "alice"),
        ("stats",),
        ("doctor",),
        ("search", "Lisbon", "--user", "alice", "--embedding", FAKE),
    ):
        ok_json(*args, "--store", store)
    ok_json(
        "chat", "--user", "alice", "--dry-run", "--store", store, "--embedding", FAKE,
        stdin="Where do I live?\n",
    )  # fmt: skip
    assert dump(store) == before


def test_what_is_not_a_memory_store_is_refused_unchanged(tmp_path: Path) -> None:
    from langchain_persistent_memory import PersistentFAISS
    from langchain_persistent_memory._db import Database

    half = tmp_path / "half"  # schema written, settings not yet
    half.mkdir()
    Database(half / "memory.db", busy_timeout=5, synchronous="full").close()
    before = dump(half)
    assert "not an initialised store" in one_error_line(
        lpm("list", "--user", "u", "--store", half), 3
    )
    assert dump(half) == before

    bare = tmp_path / "bare"
    with PersistentFAISS(bare, fake()) as vectors:
        vectors.add_texts(["just a vector store"])
    before = dump(bare)
    for args in (("list", "--user", "u"), ("stats",), ("doctor",), ("compact",)):
        line = one_error_line(lpm(*args, "--store", bare), 1)
        assert "bare PersistentFAISS" in line
    assert dump(bare) == before


def test_bad_values_are_refused_before_anything_is_created(tmp_path: Path) -> None:
    new = tmp_path / "new"
    bad = lpm("add", "A fact.", "--user", "u", "--importance", "2", "--store", new)
    assert "[0, 1]" in one_error_line(bad, 2)
    assert one_error_line(
        lpm("list", "--user", "u", "--limit", "-1", "--store", new), 2
    )
    dry = lpm("chat", "--user", "u", "--dry-run", "--store", new, stdin="hi\n")
    one_error_line(dry, 3)
    assert not new.exists()


def test_export_does_not_overwrite_without_force(store: Path, tmp_path: Path) -> None:
    file = tmp_path / "out.jsonl"
    file.write_text("keep me\n")
    refused = lpm("export", file, "--store", store)
    assert "--force" in one_error_line(refused, 2)
    assert file.read_text() == "keep me\n"
    assert ok_json("export", file, "--force", "--store", store)["memories"] == 3


def test_an_embedding_module_in_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "my_embedding.py").write_text(
        "from langchain_core.embeddings import DeterministicFakeEmbedding\n"
        "def make():\n    return DeterministicFakeEmbedding(size=16)\n"
    )
    result = lpm(
        "add", "I play the cello.", "--user", "u", "--store", tmp_path / "s",
        "--embedding", "my_embedding:make", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["ids"]) == 1
