"""The PostgreSQL backend: what only it has, and its parity with the embedded one.

The shared behaviour (isolation, ranking, dedup, history, chains...) is the
parametrized suite of test_memory, test_history, test_retriever and
test_runnables; this module covers processes sharing one database, the
HNSW path, filter parity with SQLite, bad URLs and foreign databases.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_persistent_memory import (
    CorruptStoreError,
    EmbeddingMismatchError,
    PersistentMemory,
    PersistentMemoryError,
    StoreBusyError,
    _postgres,
)
from tests.unit_tests.conftest import TableEmbeddings, random_unit_vectors, run_python

if TYPE_CHECKING:
    from pathlib import Path

    from tests.postgres_server import PostgresServer

WRITER = """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_persistent_memory import PersistentChatMessageHistory
    from langchain_persistent_memory import PersistentMemory
    from langchain_core.messages import HumanMessage
    url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    memory = PersistentMemory(
        url, DeterministicFakeEmbedding(size=16), pool_size=4, dedup_threshold=None
    )

    def work(thread):
        kept, dropped = [], []
        user = f"{name}-{thread}"
        for i in range(count):
            ids = memory.add(f"{user} remembers fact {i}", user_id=user).ids
            if i % 9 == 0:
                assert memory.delete(ids[0], user_id=user)
                dropped.append(ids[0])
            else:
                kept.append(ids[0])
            if i % 5 == 0:
                memory.search(f"fact {i}", user_id=user, k=3)
        history = PersistentChatMessageHistory(memory, "s", user_id=user)
        history.add_messages([HumanMessage(f"{user} moved to Bergen")])
        return kept, dropped

    with ThreadPoolExecutor(4) as pool:
        for kept, dropped in pool.map(work, range(4)):
            print("KEPT", *kept)
            print("DROPPED", *dropped)
    memory.close()
"""


def test_four_processes_writing_through_pools_lose_nothing(postgres_url: str) -> None:
    count = 30
    PersistentMemory(postgres_url, DeterministicFakeEmbedding(size=16)).close()
    with ThreadPoolExecutor(4) as pool:
        outputs = list(
            pool.map(
                lambda name: run_python(WRITER, postgres_url, name, str(count)),
                ["p0", "p1", "p2", "p3"],
            )
        )
    acknowledged: set[str] = set()
    deleted: set[str] = set()
    for output in outputs:
        for line in output.splitlines():
            word, *ids = line.split()
            (acknowledged if word == "KEPT" else deleted).update(ids)
    assert len(acknowledged) == 4 * 4 * (count - len(range(0, count, 9)))
    with PersistentMemory(postgres_url, DeterministicFakeEmbedding(size=16)) as memory:
        found: set[str] = set()
        for process in range(4):
            for thread in range(4):
                user = f"p{process}-{thread}"
                mine = memory.list(user_id=user, limit=1000, kinds=["fact"])
                assert all(doc.metadata["user_id"] == user for doc in mine)
                found.update(doc.id or "" for doc in mine)
                messages = memory.list(user_id=user, kinds=["message"])
                assert [m.page_content for m in messages] == [f"{user} moved to Bergen"]
        assert found == acknowledged
        assert not found & deleted
        with memory._db.read() as con:
            audit = dict(
                con.execute(
                    "SELECT op, count(*) FROM memory_audit GROUP BY op"
                ).fetchall()
            )
        assert audit == {
            "add": len(acknowledged) + len(deleted) + 16,
            "delete": len(deleted),
        }


def test_filtered_search_through_the_hnsw_index_returns_full_k(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Above this many candidates a search goes through the HNSW index.
    monkeypatch.setattr(_postgres, "_EXACT_LIMIT", 20)
    texts = [f"memory {i}" for i in range(400)]
    vectors = random_unit_vectors(401, 24, seed=3)
    table = TableEmbeddings(
        {**dict(zip(texts, vectors, strict=False)), "query": vectors[400]}
    )

    def kind(i: int) -> str:
        return "event" if i % 4 == 1 and i % 40 < 20 else "fact"

    def exact(wanted: str | None) -> list[str]:
        mine = [i for i in range(400) if i % 4 and wanted in (None, kind(i))]
        mine.sort(key=lambda i: -float(vectors[i] @ vectors[400]))
        return [f"memory {i}" for i in mine[:10]]

    with PersistentMemory(
        postgres_url, table, write_gate=None, dedup_threshold=None, keyword_weight=0.0
    ) as memory:
        memory.add_many(
            {"content": text, "user_id": "big" if i % 4 else "rare", "kind": kind(i)}
            for i, text in enumerate(texts)
        )
        hits = memory.search("query", user_id="big", k=10)
        assert [d.page_content for d in hits] == exact(None)
        # 50 of the 300 are events: more than the exact limit, so the index
        # answers, and must still give 10, the best 10.
        events = memory.search("query", user_id="big", k=10, kinds=["event"])
        assert [d.page_content for d in events] == exact("event")
        assert len(memory.search("query", user_id="rare", k=10)) == 10


def _random_filter(rng: random.Random) -> dict[str, Any]:
    key = rng.choice(["n", "f", "s", "b", "missing"])
    values = {
        "n": lambda: rng.randrange(-3, 4),
        "f": lambda: rng.choice([-1.5, 0.0, 0.5, 2.0, 3]),
        "s": lambda: rng.choice(["apple", "banana", "cherry", "date", "a", ""]),
        "b": lambda: rng.choice([True, False]),
        "missing": lambda: rng.randrange(3),
    }[key]
    op = rng.choice(
        ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"]
    )
    if key == "b" and op in ("$gt", "$gte", "$lt", "$lte"):
        op = "$eq"
    if op in ("$in", "$nin"):
        condition: Any = [values() for _ in range(rng.randrange(0, 4))]
    elif op == "$exists":
        condition = rng.choice([True, False])
    else:
        condition = values()
    leaf = {key: {op: condition}}
    if rng.random() < 0.3:
        return {rng.choice(["$and", "$or"]): [leaf, _random_filter(rng)]}
    return leaf


def test_filters_mean_the_same_on_both_backends(
    tmp_path: Path, postgres_url: str
) -> None:
    rng = random.Random(11)
    embedding = DeterministicFakeEmbedding(size=16)
    options: dict[str, Any] = {
        "write_gate": None,
        "dedup_threshold": None,
        "keyword_weight": 0.0,
    }
    records = []
    for i in range(120):
        meta: dict[str, Any] = {}
        if rng.random() < 0.8:
            meta["n"] = rng.randrange(-3, 4)
        if rng.random() < 0.8:
            meta["f"] = rng.choice([-1.5, 0.0, 0.5, 2.0, 3.0, 3])
        if rng.random() < 0.8:
            meta["s"] = rng.choice(["apple", "banana", "cherry", "date", "a", ""])
        if rng.random() < 0.8:
            meta["b"] = rng.choice([True, False])
        records.append({"content": f"note {i}", "user_id": "u", "metadata": meta})
    with (
        PersistentMemory(tmp_path / "m", embedding, **options) as embedded,
        PersistentMemory(postgres_url, embedding, **options) as server,
    ):
        embedded.add_many(records)
        server.add_many(records)
        checked = 0
        for _ in range(150):
            flt = _random_filter(rng)
            on_disk = embedded.search("note", user_id="u", k=200, filter=flt)
            on_server = server.search("note", user_id="u", k=200, filter=flt)
            assert [d.page_content for d in on_server] == [
                d.page_content for d in on_disk
            ], flt
            checked += bool(on_disk)
        assert checked > 50  # most filters matched something


def test_unreachable_server_or_database_is_a_clear_error(
    postgres_server: PostgresServer,
) -> None:
    for url in (
        "postgresql://app:secret@127.0.0.1:9/memory",  # nothing listens on 9
        "postgresql://127.0.0.1:9/memory?user=app&password=secret",
    ):
        with pytest.raises(PersistentMemoryError, match="Could not connect") as caught:
            PersistentMemory(url, DeterministicFakeEmbedding(size=8), busy_timeout=1)
        assert "secret" not in str(caught.value)
        assert "postgresql://app@127.0.0.1:9/memory" in str(caught.value)
    started = time.monotonic()
    with pytest.raises(PersistentMemoryError, match="does not exist"):
        PersistentMemory(
            postgres_server.url_for("no_such_database"),
            DeterministicFakeEmbedding(size=8),
        )
    assert time.monotonic() - started < 5  # told at once, not after busy_timeout


def test_directory_options_are_refused_by_name(postgres_url: str) -> None:
    with pytest.raises(TypeError, match="checkpoint_every: not an option"):
        PersistentMemory(
            postgres_url, DeterministicFakeEmbedding(size=8), checkpoint_every=5
        )


def test_another_model_or_dimension_is_refused(postgres_url: str) -> None:
    with PersistentMemory(postgres_url, DeterministicFakeEmbedding(size=8)) as memory:
        memory.add("I like tea", user_id="u")
    with pytest.raises(EmbeddingMismatchError, match="embedding model"):
        PersistentMemory(
            postgres_url, DeterministicFakeEmbedding(size=8), embedding_model="other"
        )
    with (
        PersistentMemory(postgres_url, DeterministicFakeEmbedding(size=12)) as memory,
        pytest.raises(EmbeddingMismatchError, match="8-dimensional"),
    ):
        memory.add("I like coffee", user_id="u")
    with PersistentMemory(postgres_url, DeterministicFakeEmbedding(size=8)) as memory:
        assert [d.page_content for d in memory.list(user_id="u")] == ["I like tea"]


def test_a_database_of_something_else_is_left_alone(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("CREATE TABLE documents (title text)")
        con.execute("INSERT INTO documents VALUES ('the report')")
    with pytest.raises(CorruptStoreError, match="not a store"):
        PersistentMemory(postgres_url, DeterministicFakeEmbedding(size=8))
    with psycopg.connect(postgres_url, autocommit=True) as con:
        tables = {
            row[0]
            for row in con.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert tables == {"documents"}
        assert con.execute("SELECT title FROM documents").fetchall() == [
            ("the report",)
        ]


def test_vector_index_is_hnsw_cosine_and_used_without_a_filter(
    postgres_url: str,
) -> None:
    vectors = random_unit_vectors(50, 8, seed=1)
    table = TableEmbeddings({f"t{i}": v for i, v in enumerate(vectors)})
    with PersistentMemory(postgres_url, table, write_gate=None) as memory:
        memory.add_many({"content": f"t{i}", "user_id": "u"} for i in range(50))
        hits, _ = memory._store._search(vectors[7].tolist(), 3, None)
        assert memory._store._documents([hits[0][0]])[hits[0][0]].page_content == "t7"
        assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
        assert [score for _, score in hits] == sorted(
            (score for _, score in hits), reverse=True
        )
    with psycopg.connect(postgres_url, autocommit=True) as con:
        (definition,) = con.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'documents_embedding'"
        ).fetchone()
        assert "hnsw" in definition
        assert "vector_cosine_ops" in definition
        con.execute("SET enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in con.execute(
                "EXPLAIN SELECT label FROM documents"
                " ORDER BY embedding <=> %s::vector LIMIT 3",
                ("[" + ",".join(map(str, vectors[7].tolist())) + "]",),
            )
        )
        assert "documents_embedding" in plan


def test_vectors_read_back_as_written(postgres_url: str) -> None:
    vectors = random_unit_vectors(5, 16, seed=9) * np.float32(3.0)
    table = TableEmbeddings({f"t{i}": v for i, v in enumerate(vectors)})
    with PersistentMemory(postgres_url, table, write_gate=None) as memory:
        memory.add_many({"content": f"t{i}", "user_id": "u"} for i in range(5))
        with memory._db.read() as con:
            rows = memory._store._dump(con, after=None, ids=None, limit=10)
        stored = {text: vector for _, _, text, _, vector in rows}
        for i in range(5):
            assert stored[f"t{i}"].tobytes() == vectors[i].tobytes()


def test_a_writer_waiting_too_long_is_told_and_writes_nothing(
    postgres_url: str,
) -> None:
    with PersistentMemory(
        postgres_url, DeterministicFakeEmbedding(size=8), busy_timeout=0.5
    ) as memory:
        memory.add("I like tea", user_id="u")
        with psycopg.connect(postgres_url) as other:  # holds the write lock
            other.execute(
                _postgres._LOCK_SQL.replace("?", "%s"), (_postgres._WRITE_LOCK,)
            )
            started = time.monotonic()
            with pytest.raises(StoreBusyError, match=r"busy_timeout=0\.5"):
                memory.add("I like coffee", user_id="u")
            assert time.monotonic() - started < 10
            assert [d.page_content for d in memory.list(user_id="u")] == ["I like tea"]
        memory.add("I like coffee", user_id="u")  # the lock is free again
        assert len(memory.list(user_id="u")) == 2


KILLED_WRITER = """
    import sys
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_persistent_memory import PersistentMemory
    memory = PersistentMemory(
        sys.argv[1], DeterministicFakeEmbedding(size=16), dedup_threshold=None
    )
    for batch in range(10_000):
        result = memory.add_many(
            {"content": f"batch {batch} item {i} about boats", "user_id": f"u{i % 3}"}
            for i in range(50)
        )
        print("ACK", *result.ids, flush=True)
"""


def test_a_writer_killed_mid_batch_leaves_whole_batches(postgres_url: str) -> None:
    PersistentMemory(postgres_url, DeterministicFakeEmbedding(size=16)).close()
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), postgres_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    acknowledged: set[str] = set()
    for line in process.stdout:
        acknowledged.update(line.split()[1:])
        if len(acknowledged) >= 400:
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    acknowledged.update(word for line in process.stdout for word in line.split()[1:])
    with (
        PersistentMemory(postgres_url, DeterministicFakeEmbedding(size=16)) as memory,
        memory._db.read() as con,
    ):
        ids = {row[0] for row in con.execute("SELECT id FROM documents")}
        assert acknowledged <= ids
        assert len(ids) % 50 == 0  # a batch is all there or not at all
        orphans = con.execute(
            "SELECT count(*) FROM documents AS d WHERE NOT EXISTS"
            " (SELECT 1 FROM memory_text AS t WHERE t.label = d.label)"
            " OR NOT EXISTS (SELECT 1 FROM metadata_index AS m"
            " WHERE m.label = d.label AND m.key = 'user_id')"
        ).fetchone()[0]
        assert orphans == 0
        added = con.execute(
            "SELECT count(*) FROM memory_audit WHERE op = 'add'"
        ).fetchone()[0]
        assert added == len(ids)
        texts = con.execute("SELECT count(*) FROM memory_text").fetchone()[0]
        assert texts == len(ids)


def test_what_postgresql_cannot_store_is_a_clear_error(postgres_url: str) -> None:
    with PersistentMemory(
        postgres_url, DeterministicFakeEmbedding(size=8), write_gate=None
    ) as memory:
        memory.add("I like tea", user_id="u")
        for bad in (
            {"content": "tea\x00leaf"},
            {"content": "tea leaf", "context": "nul\x00here"},
            {"content": "tea leaf", "metadata": {"note": "a\x00b"}},
        ):
            with pytest.raises(ValueError, match="NUL character"):
                memory.add(user_id="u", **bad)
        assert [d.page_content for d in memory.list(user_id="u")] == ["I like tea"]
        huge = "harbour " * 170_000  # 1.36 MB: more than a tsvector holds
        memory.add(huge, user_id="u")
        (hit,) = [
            d
            for d in memory.search("harbour", user_id="u", k=2)
            if d.page_content == huge
        ]
        assert hit.metadata["scores"]["keyword"] > 0  # found by its words too


def test_numbers_beyond_double_precision_compare_as_on_sqlite(
    tmp_path: Path, postgres_url: str
) -> None:
    records = [
        {"content": "big float", "user_id": "u", "metadata": {"x": 2.0**60}},
        {"content": "big int", "user_id": "u", "metadata": {"x": 2**60 + 1}},
        {"content": "rounded", "user_id": "u", "metadata": {"x": 1152921504606847000}},
    ]
    filters = [
        {"x": {"$gt": 1.152921504606847e18}},
        {"x": {"$gte": 2.0**60}},
        {"x": 2**60},
        {"x": {"$lt": 2**60 + 1}},
    ]
    found = []
    for location in (tmp_path / "m", postgres_url):
        with PersistentMemory(
            location, DeterministicFakeEmbedding(size=8), write_gate=None
        ) as memory:
            memory.add_many(records)
            found.append(
                [
                    sorted(
                        d.page_content
                        for d in memory.search("big", user_id="u", k=5, filter=f)
                    )
                    for f in filters
                ]
            )
    assert found[0] == found[1]
    assert found[0][2] == ["big float"]  # 2**60 is exactly 2.0**60


def test_a_store_from_before_the_langgraph_store_opens_for_data_only_roles(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """store_items is added by a role that may create it; others are told how."""
    embedding = DeterministicFakeEmbedding(size=8)
    with PersistentMemory(postgres_url, embedding) as memory:
        memory.add("Alice keeps bees", user_id="alice")
    database = postgres_url.rsplit("/", 1)[1]
    role = f"app_{database[-12:]}"
    with postgres_server.connect(database) as con:
        con.execute("DROP TABLE store_items")  # as the earlier version left it
        con.execute(f"CREATE ROLE {role} LOGIN")
        con.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        con.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public"
            f" TO {role}"
        )
        con.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        con.execute(f"REVOKE CREATE ON SCHEMA public FROM {role}, PUBLIC")
    as_app = postgres_url.replace("postgres@", f"{role}@", 1)
    try:
        with pytest.raises(
            PersistentMemoryError, match="without the store_items"
        ) as err:
            PersistentMemory(as_app, embedding)
        assert "Open it once as a role that may CREATE TABLE" in str(err.value)
        # The owner opens it once: the table is added, and the role may go on.
        PersistentMemory(postgres_url, embedding).close()
        with postgres_server.connect(database) as con:
            con.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON store_items TO {role}"
            )
        with PersistentMemory(as_app, embedding) as memory:
            assert [d.page_content for d in memory.list(user_id="alice")] == [
                "Alice keeps bees"
            ]
            (doc,) = memory.list(user_id="alice")
            assert memory.delete(doc.id or "", user_id="alice")
    finally:
        with postgres_server.connect(database) as con:
            con.execute(f"REASSIGN OWNED BY {role} TO postgres")
            con.execute(f"DROP OWNED BY {role}")
        with postgres_server.connect() as con:
            con.execute(f"DROP ROLE {role}")
