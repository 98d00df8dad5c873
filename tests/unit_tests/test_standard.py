"""LangChain's own standard suite for vector stores, subclassed and not overridden."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from langchain_persistent_memory import PersistentFAISS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class TestPersistentFAISSStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[PersistentFAISS]:  # type: ignore[override]
        store = PersistentFAISS(tmp_path / "store", self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


class TestPersistentFAISSStandardReopened(VectorStoreIntegrationTests):
    """The same suite on a store that was closed and reopened before use."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[PersistentFAISS]:  # type: ignore[override]
        first = PersistentFAISS(tmp_path / "store", self.get_embeddings())
        first.add_texts(["warm-up"], ids=["warm-up"])
        first.close()
        store = PersistentFAISS(tmp_path / "store", self.get_embeddings())
        store.delete(["warm-up"])
        try:
            yield store
        finally:
            store.close()
