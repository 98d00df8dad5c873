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
