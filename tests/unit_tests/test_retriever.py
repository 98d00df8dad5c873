"""PersistentMemoryRetriever: LangChain's standard suite, plus user scoping."""

from __future__ import annotations

import functools
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnableLambda
from langchain_tests.integration_tests import RetrieversIntegrationTests

from langchain_persistent_memory import PersistentMemory
from langchain_persistent_memory.retrievers import PersistentMemoryRetriever

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.unit_tests.conftest import Place


@functools.cache
def shared_memory() -> PersistentMemory:
    memory = PersistentMemory(tempfile.mkdtemp(), DeterministicFakeEmbedding(size=32))
    for i in range(12):
        memory.add(f"User likes hiking trail number {i} in the mountains", user_id="u1")
    memory.add("Someone else's memory about hiking", user_id="u2")
    return memory


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    if shared_memory.cache_info().currsize:
        memory = shared_memory()
        memory.close()
        shutil.rmtree(memory.store.path, ignore_errors=True)


class TestPersistentMemoryRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[PersistentMemoryRetriever]:
        return PersistentMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": shared_memory(), "user_id": "u1"}

    @property
    def retriever_query_example(self) -> str:
        return "Which hiking trail does the user like?"


def test_user_comes_from_call_config_or_field() -> None:
    memory = shared_memory()
    retriever = PersistentMemoryRetriever(memory=memory, k=5)
    with pytest.raises(ValueError, match="needs a user"):
        retriever.invoke("hiking")
    by_config = retriever.invoke("hiking", config={"configurable": {"user_id": "u2"}})
    assert [d.metadata["user_id"] for d in by_config] == ["u2"]
    by_kwarg = retriever.invoke("hiking", user_id="u1", k=2)
    assert len(by_kwarg) == 2
    assert {d.metadata["user_id"] for d in by_kwarg} == {"u1"}
    with pytest.raises(TypeError, match="user_id must be a str"):
        retriever.invoke("hiking", user_id=5)
    fielded = PersistentMemoryRetriever(memory=memory, user_id="u2")
    assert [d.metadata["user_id"] for d in fielded.invoke("hiking")] == ["u2"]
    # Inside a chain, the config reaches the retriever.
    chain = RunnableLambda(lambda q: q) | retriever
    in_chain = chain.invoke("hiking", config={"configurable": {"user_id": "u2"}})
    assert [d.metadata["user_id"] for d in in_chain] == ["u2"]


async def test_async_and_metadata() -> None:
    retriever = PersistentMemoryRetriever(memory=shared_memory(), user_id="u1", k=3)
    docs = await retriever.ainvoke("trail number 7")
    assert len(docs) == 3
    for doc in docs:
        assert doc.id
        assert doc.metadata["kind"] == "fact"
        assert doc.metadata["created_at"] > 0
        assert set(doc.metadata["scores"]) >= {"dense", "keyword", "fused"}
    with pytest.raises(TypeError, match="Unexpected arguments"):
        await retriever.ainvoke("trail", top_k=2)


def test_token_budget_field(place: Place) -> None:
    with PersistentMemory(place("m"), DeterministicFakeEmbedding(size=16)) as memory:
        for i in range(5):
            memory.add(f"memory {i} " + "word " * 40, user_id="u")
        retriever = PersistentMemoryRetriever(
            memory=memory, user_id="u", k=5, token_budget=60
        )
        assert len(retriever.invoke("memory")) == 1
