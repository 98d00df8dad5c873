import langchain_persistent_memory

EXPECTED_ALL = [
    "AddResult",
    "CorruptStoreError",
    "EmbeddingMismatchError",
    "LocalEmbeddings",
    "MemoryStats",
    "PersistentChatMessageHistory",
    "PersistentFAISS",
    "PersistentMemory",
    "PersistentMemoryError",
    "PersistentMemoryRetriever",
    "RunnableWithPersistentMemory",
    "StoreBusyError",
    "create_memory_prompt",
    "create_memory_tools",
    "default_write_gate",
    "format_memories",
    "with_persistent_memory",
]


def test_all_imports() -> None:
    assert sorted(langchain_persistent_memory.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert getattr(langchain_persistent_memory, name) is not None


def test_package_is_typed() -> None:
    from pathlib import Path

    package = Path(langchain_persistent_memory.__file__).parent
    assert (package / "py.typed").exists()


def test_the_package_does_not_import_langgraph() -> None:
    import subprocess
    import sys

    code = (
        "import sys, langchain_persistent_memory\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'langgraph'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_langgraph_store_module() -> None:
    from langgraph.store.base import BaseStore

    from langchain_persistent_memory import langgraph

    assert langgraph.__all__ == ["PersistentMemoryStore"]
    assert issubclass(langgraph.PersistentMemoryStore, BaseStore)
    assert langgraph.PersistentMemoryStore.supports_ttl is True


def test_without_langgraph_the_store_says_what_to_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['langgraph'] = None\n"
        "sys.modules['langgraph.store'] = None\n"
        "sys.modules['langgraph.store.base'] = None\n"
        "import langchain_persistent_memory\n"
        "from langchain_persistent_memory.langgraph import PersistentMemoryStore\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "ImportError: PersistentMemoryStore needs LangGraph" in out.stderr
    assert "pip install 'langchain-persistent-memory[langgraph]'" in out.stderr
