"""Security: no pickle, crafted files stay data, owner-only files, named corruption."""

from __future__ import annotations

import ast
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import HumanMessage

from langchain_persistent_memory import (
    CorruptStoreError,
    PersistentChatMessageHistory,
    PersistentFAISS,
    PersistentMemory,
)
from tests.unit_tests.conftest import run_python

PACKAGE = Path(__file__).resolve().parents[2] / "langchain_persistent_memory"
# Modules and calls that turn bytes into code or objects chosen by the bytes.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib"}
UNSAFE_MODULES |= {"shelve", "marshal", "jsonpickle", "torch", "yaml"}
UNSAFE_CALLS = {"eval", "exec", "__import__", "compile"}


def test_the_package_never_unpickles_or_evaluates() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    found: list[str] = []
    for file in files:
        source = file.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in UNSAFE_CALLS:
                    found.append(f"{file.name}:{node.lineno} calls {node.func.id}")
                continue
            elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                found.append(f"{file.name}:{node.value.lineno} allow_pickle")
                continue
            else:
                continue
            found.extend(
                f"{file.name}:{node.lineno} imports {name}"
                for name in names
                if name.split(".")[0] in UNSAFE_MODULES
            )
        if "load_extension" in source:
            found.append(f"{file.name} loads SQLite extensions")
    assert found == []


# A protocol-0 pickle that runs `os.system("touch MARKER")` when unpickled,
# written out by hand so that no test imports pickle either.
def _exploit(marker: Path) -> bytes:
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()


CRAFTED = """
    import json, sys
    from pathlib import Path

    # Any of these would mean bytes from the store became code or objects.
    # (marshal.loads is not here: importing a module's .pyc fires it.)
    FORBIDDEN = ("pickle.find_class", "os.system", "os.exec",
                 "os.posix_spawn", "subprocess.Popen", "ctypes.dlopen",
                 "sqlite3.enable_load_extension", "sqlite3.load_extension")
    events = []

    def audit(event, args):
        if event.startswith(FORBIDDEN):
            events.append(event)
            raise RuntimeError(f"forbidden: {event}")

    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_persistent_memory import (
        PersistentChatMessageHistory, PersistentMemory, PersistentMemoryError)
    sys.addaudithook(audit)
    path = Path(sys.argv[1])
    outcome = {}
    try:
        memory = PersistentMemory(path, DeterministicFakeEmbedding(size=16),
                                  write_gate=None)
        outcome["search"] = [d.page_content for d in memory.search("x", user_id="u")]
        memory.add("a new memory", user_id="u")
        memory.export(path.parent / "out.jsonl")
        history = PersistentChatMessageHistory(memory, "s", user_id="u")
        outcome["history"] = [m.content for m in history.messages]
        memory.close()
    except (PersistentMemoryError, ValueError) as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"events": events, **outcome}))
"""


def _crafted_store(path: Path, marker: Path) -> None:
    embedding = DeterministicFakeEmbedding(size=16)
    with PersistentMemory(path, embedding, write_gate=None) as memory:
        memory.add("the user likes tea", user_id="u")
        history = PersistentChatMessageHistory(memory, "s", user_id="u")
        history.add_messages([HumanMessage("hello")])
    payload = _exploit(marker)
    con = sqlite3.connect(path / "memory.db")
    with con:
        # Pickles wherever the store keeps text, JSON or bytes.
        con.execute("UPDATE documents SET metadata = ?", (payload,))
        con.execute(
            "INSERT INTO settings (key, value) VALUES ('pickled', ?)", (payload,)
        )
        con.execute("UPDATE chat_messages SET message = ?", (payload,))
    con.close()
    (path / "index.faiss").write_bytes(payload)


def test_a_crafted_store_cannot_run_code_when_opened(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    path = tmp_path / "store"
    _crafted_store(path, marker)
    out = run_python(CRAFTED, str(path))
    assert '"events": []' in out
    assert not marker.exists()
    # The damage is reported as an error of this package, not executed.
    assert "CorruptStoreError" in out
    assert "memory.db is damaged: the metadata of" in out


def test_a_crafted_index_file_is_not_parsed_as_code(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    path = tmp_path / "store"
    with PersistentMemory(
        path, DeterministicFakeEmbedding(size=16), write_gate=None
    ) as memory:
        memory.add("the user likes tea", user_id="u")
    (path / "index.faiss").write_bytes(_exploit(marker) * 50)
    out = run_python(CRAFTED, str(path))
    assert '"events": []' in out
    assert '"search": ["the user likes tea"]' in out  # rebuilt from memory.db
    assert not marker.exists()


def test_a_trigger_planted_in_the_database_cannot_call_unsafe_functions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    with PersistentFAISS(path, DeterministicFakeEmbedding(size=16)) as store:
        store.add_texts(["first"], ids=["a"])
    con = sqlite3.connect(path / "memory.db")
    with con:
        # A schema object that would run a side-effecting function on every
        # write. With trusted_schema off, SQLite refuses to run it.
        con.execute(
            "CREATE TRIGGER planted AFTER INSERT ON documents"
            " BEGIN SELECT load_extension('/nonexistent/evil'); END"
        )
    con.close()
    with PersistentFAISS(path, DeterministicFakeEmbedding(size=16)) as store:
        with pytest.raises(sqlite3.OperationalError, match="unsafe use"):
            store.add_texts(["second"], ids=["b"])
        assert [d.id for d in store.similarity_search("x", k=5)] == ["a"]


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in [root, *root.rglob("*")]
    }


def test_every_file_is_owner_only_even_with_an_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "nested" / "store"
        memory = PersistentMemory(
            path, DeterministicFakeEmbedding(size=16), write_gate=None
        )
        memory.add("the user likes tea", user_id="u")
        history = PersistentChatMessageHistory(memory, "s", user_id="u")
        history.add_messages([HumanMessage("I live in Oslo")])
        memory.store.checkpoint()
        export = tmp_path / "export.jsonl"
        memory.export(export)
        modes = _modes(path)  # while open: -wal and -shm exist
        memory.close()
    finally:
        os.umask(old)
    assert modes.pop(".") == 0o700
    assert set(modes) >= {"memory.db", "memory.db-wal", "memory.db-shm", "index.faiss"}
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(export.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(b"this is not a database at all" * 100, id="garbage"),
        pytest.param(None, id="torn-header"),
    ],
)
def test_a_corrupt_database_is_named_and_nothing_is_deleted(
    tmp_path: Path, damage: bytes | None
) -> None:
    path = tmp_path / "store"
    embedding = DeterministicFakeEmbedding(size=16)
    with PersistentMemory(path, embedding, write_gate=None) as memory:
        memory.add("the user likes tea", user_id="u")
    db = path / "memory.db"
    if damage is None:
        data = bytearray(db.read_bytes())
        data[:100] = b"\xff" * 100  # the SQLite header
        damage = bytes(data)
    db.write_bytes(damage)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    for opener in (
        lambda: PersistentMemory(path, embedding),
        lambda: PersistentChatMessageHistory(
            str(path), "s", user_id="u", embedding=embedding
        ),
        lambda: PersistentFAISS(path, embedding),
    ):
        with pytest.raises(CorruptStoreError) as caught:
            opener()
        message = str(caught.value)
        assert str(db) in message
        assert "Nothing was changed or deleted" in message
        assert "backup" in message
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def test_a_vector_of_the_wrong_size_in_the_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "store"
    embedding = DeterministicFakeEmbedding(size=16)
    with PersistentFAISS(path, embedding) as store:
        store.add_texts(["one", "two", "three"], ids=["a", "b", "c"])
    (path / "index.faiss").unlink()  # so that opening replays every row
    con = sqlite3.connect(path / "memory.db")
    with con:
        # Two damaged rows whose lengths still add up to whole vectors.
        con.execute("UPDATE documents SET embedding = zeroblob(60) WHERE id = 'a'")
        con.execute("UPDATE documents SET embedding = zeroblob(68) WHERE id = 'b'")
    con.close()
    with pytest.raises(CorruptStoreError, match=r"60-byte vector.*16-dimensional"):
        PersistentFAISS(path, embedding)
