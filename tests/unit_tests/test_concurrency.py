"""Several processes and threads on one store directory."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_persistent_memory import PersistentFAISS, StoreBusyError
from tests.unit_tests.conftest import run_python

if TYPE_CHECKING:
    from pathlib import Path

WRITER = """
    import sys
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_persistent_memory import PersistentFAISS
    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = PersistentFAISS(path, DeterministicFakeEmbedding(size=16), checkpoint_every=37)
    for i in range(count):
        store.add_texts([f"{name} says {i}"], [{"writer": name}], ids=[f"{name}-{i}"])
        if i % 10 == 0:
            store.similarity_search(f"{name} says {i}", k=3)
        if i % 25 == 0:
            store.delete([f"{name}-{i}"])
    store.close()
"""


def test_two_processes_writing_at_once_lose_nothing(store_path: Path) -> None:
    count = 200
    PersistentFAISS(store_path, DeterministicFakeEmbedding(size=16)).close()
    with ThreadPoolExecutor(2) as pool:
        list(
            pool.map(
                lambda name: run_python(WRITER, str(store_path), name, str(count)), "ab"
            )
        )
    with PersistentFAISS(store_path, DeterministicFakeEmbedding(size=16)) as store:
        for name in "ab":
            expected = {f"{name}-{i}" for i in range(count) if i % 25}
            found = store.similarity_search("x", k=10_000, filter={"writer": name})
            assert {d.id for d in found} == expected
            assert len(store.get_by_ids(sorted(expected))) == len(expected)
        assert store.similarity_search("b says 123", k=1)[0].id == "b-123"


def test_a_process_sees_another_process_writes_on_next_search(store_path: Path) -> None:
    embedding = DeterministicFakeEmbedding(size=16)
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(["mine"], ids=["mine"])
        assert [d.id for d in store.similarity_search("theirs", k=5)] == ["mine"]
        run_python(
            """
            import sys
            from langchain_core.embeddings import DeterministicFakeEmbedding
            from langchain_persistent_memory import PersistentFAISS
            with PersistentFAISS(sys.argv[1], DeterministicFakeEmbedding(size=16)) as s:
                s.add_texts(["theirs"], ids=["theirs"])
                s.add_texts(["mine, rewritten"], ids=["mine"])
            """,
            str(store_path),
        )
        hits = store.similarity_search("theirs", k=5)
        assert hits[0].id == "theirs"
        assert {d.page_content for d in hits} == {"theirs", "mine, rewritten"}
        assert len(hits) == 2


def test_threads_share_one_store(store_path: Path) -> None:
    embedding = DeterministicFakeEmbedding(size=16)
    errors: list[BaseException] = []
    with PersistentFAISS(store_path, embedding, checkpoint_every=25) as store:

        def work(worker: int) -> None:
            try:
                for i in range(40):
                    store.add_texts([f"w{worker} n{i}"], ids=[f"{worker}-{i}"])
                    hit = store.similarity_search(f"w{worker} n{i}", k=1)
                    assert hit[0].id == f"{worker}-{i}"
                    if i % 7 == 0:
                        store.delete([f"{worker}-{i}"])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        expected = {f"{w}-{i}" for w in range(8) for i in range(40) if i % 7}
        assert {d.id for d in store.similarity_search("x", k=1000)} == expected
    with PersistentFAISS(store_path, embedding) as store:
        assert {d.id for d in store.similarity_search("x", k=1000)} == expected


def test_write_lock_held_too_long_is_store_busy(store_path: Path) -> None:
    import sqlite3

    embedding = DeterministicFakeEmbedding(size=16)
    with PersistentFAISS(store_path, embedding, busy_timeout=0.2) as store:
        store.add_texts(["before"], ids=["before"])
        blocker = sqlite3.connect(store_path / "memory.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreBusyError, match=r"busy_timeout=0\.2"):
                store.add_texts(["blocked"], ids=["blocked"])
            # Reads are not blocked by a writer (WAL).
            assert [d.id for d in store.similarity_search("before", k=5)] == ["before"]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.add_texts(["after"], ids=["after"])
        assert {d.id for d in store.similarity_search("x", k=5)} == {"before", "after"}


async def test_async_twins_use_async_embedding(store_path: Path) -> None:
    calls: list[str] = []

    class AsyncOnly(DeterministicFakeEmbedding):
        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.append("docs")
            return self.embed_documents(texts)

        async def aembed_query(self, text: str) -> list[float]:
            calls.append("query")
            return self.embed_query(text)

    with PersistentFAISS(store_path, AsyncOnly(size=16)) as store:
        await store.aadd_texts(["alpha", "beta"], ids=["a", "b"])
        docs = await store.asimilarity_search("beta", k=1)
        mmr = await store.amax_marginal_relevance_search("alpha", k=2)
        assert [d.id for d in docs] == ["b"]
        assert mmr[0].id == "a"
        assert calls == ["docs", "query", "query"]


def test_filtered_results_always_match_the_filter_under_writes(
    store_path: Path,
) -> None:
    embedding = DeterministicFakeEmbedding(size=16)
    stop = threading.Event()
    with PersistentFAISS(store_path, embedding, checkpoint_every=10**6) as store:
        ids = [f"d{i}" for i in range(40)]
        store.add_texts(ids, [{"user": "alice"} for _ in ids], ids=ids)

        def flip() -> None:
            turn = 0
            while not stop.is_set():
                owner = "bob" if turn % 2 == 0 else "alice"
                store.add_texts(
                    ids[:20], [{"user": owner} for _ in ids[:20]], ids=ids[:20]
                )
                turn += 1

        writer = threading.Thread(target=flip)
        writer.start()
        wrong = []
        try:
            for _ in range(1500):
                hits = store.similarity_search("d3", k=10, filter={"user": "alice"})
                wrong.extend(d for d in hits if d.metadata != {"user": "alice"})
        finally:
            stop.set()
            writer.join()
        assert wrong == []


def test_forked_child_is_not_blocked_by_a_lock_held_at_fork(store_path: Path) -> None:
    import os

    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    embedding = DeterministicFakeEmbedding(size=16)
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(["parent"], ids=["parent"])
        # As if the background checkpoint thread were mid-checkpoint at fork.
        with store._checkpoint_lock, store._index_lock:
            pid = os.fork()
            if pid == 0:  # the child
                code = 1
                try:
                    store.add_texts(["child"], ids=["child"])
                    store.checkpoint()
                    hits = store.similarity_search("child", k=1)
                    code = 0 if hits[0].id == "child" else 2
                finally:
                    os._exit(code)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                pytest.fail("the forked child hung on a lock inherited from the parent")
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(status) == 0
        assert {d.id for d in store.similarity_search("x", k=5)} == {"parent", "child"}


def test_dropped_store_stops_its_checkpoint_thread(store_path: Path) -> None:
    import gc

    def live() -> set[threading.Thread]:
        return {
            t
            for t in threading.enumerate()
            if t.name == "lpm-checkpoint" and t.is_alive()
        }

    before = live()
    store = PersistentFAISS(
        store_path, DeterministicFakeEmbedding(size=16), checkpoint_interval=0.05
    )
    store.add_texts(["x"])
    deadline = time.monotonic() + 10
    while not live() - before:  # its thread has started
        assert time.monotonic() < deadline
        time.sleep(0.01)
    mine = live() - before
    time.sleep(0.2)  # let it checkpoint and go idle
    del store
    gc.collect()
    while any(t.is_alive() for t in mine):
        assert time.monotonic() < deadline, "checkpoint thread outlived its store"
        time.sleep(0.02)
