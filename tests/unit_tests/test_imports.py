import langchain_persistent_memory

EXPECTED_ALL = [
    "AddResult",
    "CorruptStoreError",
    "EmbeddingMismatchError",
    "LocalEmbeddings",
    "MemoryStats",
    "PersistentFAISS",
    "PersistentMemory",
    "PersistentMemoryError",
    "PersistentMemoryRetriever",
    "StoreBusyError",
    "default_write_gate",
]


def test_all_imports() -> None:
    assert sorted(langchain_persistent_memory.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert getattr(langchain_persistent_memory, name) is not None


def test_package_is_typed() -> None:
    from pathlib import Path

    package = Path(langchain_persistent_memory.__file__).parent
    assert (package / "py.typed").exists()
