"""Stress: many processes, threads and asyncio tasks on one store at once.

Real processes, real SQLite and real FAISS; only the embedding model and the
chat model are offline stand-ins. The figures are in
`benchmarks/bench_concurrency.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.messages import AIMessage, HumanMessage

from langchain_persistent_memory import (
    PersistentChatMessageHistory,
    PersistentMemory,
    with_persistent_memory,
)
from langchain_persistent_memory.testing import EchoChatModel

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from langchain_persistent_memory import RunnableWithPersistentMemory


def config(user: str, session: str) -> dict[str, Any]:
    return {"configurable": {"user_id": user, "session_id": session}}


def package_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{record.levelname}: {record.getMessage()}"
        for record in caplog.records
        if record.name.startswith("langchain_persistent_memory")
        and record.levelno >= logging.WARNING
    ]


# ----------------------------------------------------- 4 processes x 500 writes

PROCESSES = 4
WRITES = 500
USERS = ("user-0", "user-1", "user-2")

# One writer process. It opens the store (all four open it at once, the first
# creates it), waits at a barrier so that the four write loops overlap, then
# adds WRITES memories over three users shared by every process, searching
# every few writes. A check finds each other process's newest memory by
# listing, then searches its exact text: the top hit must be it, with a dense
# score of 1, so this process's FAISS index has caught up with the other
# process's commit. Half-way through its writes a process waits (bounded)
# until it has seen all the others: each of them writes before it can wait,
# so nobody waits on a waiter, and every process sees the others mid-run.
# At the end it waits for all PROCESSES * WRITES memories. It prints one
# JSON report; any exception (a StoreBusyError included) exits non-zero.
WRITER = """
    import json, statistics, sys, time
    from pathlib import Path
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_persistent_memory import PersistentMemory

    path, name, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    processes, writes = int(sys.argv[4]), int(sys.argv[5])
    users = ("user-0", "user-1", "user-2")
    others = {f"p{i}" for i in range(processes)} - {name}
    memory = PersistentMemory(
        path,
        DeterministicFakeEmbedding(size=32),
        write_gate=None,
        dedup_threshold=None,
        checkpoint_every=100,  # every process checkpoints, several times
    )
    (gate / name).touch()
    deadline = time.monotonic() + 60
    while len(list(gate.iterdir())) < processes:
        if time.monotonic() > deadline:
            sys.exit("barrier: the other processes never started")
        time.sleep(0.002)

    seen = {}  # other process -> own write count when first found by search

    def check(done):
        for user in users:
            if set(seen) == others:
                return
            newest = {}
            for doc in memory.list(user_id=user, limit=10_000):  # newest first
                newest.setdefault(doc.metadata["proc"], doc)
            for other in sorted(others - set(seen)):
                if other in newest:
                    wanted = newest[other]
                    top = memory.search(wanted.page_content, user_id=user, k=3)[0]
                    assert top.id == wanted.id, (top, wanted)
                    assert top.metadata["scores"]["dense"] > 0.999, top.metadata
                    seen[other] = done

    latencies, searches = [], 0
    started = time.time()
    for i in range(writes):
        user = users[i % len(users)]
        text = f"{name} note {i}: the {name} writer stored item {i} for {user}"
        before = time.perf_counter()
        result = memory.add(text, user_id=user, metadata={"proc": name, "n": i})
        latencies.append(time.perf_counter() - before)
        assert len(result.ids) == 1 and not result.skipped, result
        if i % 5 == 4:  # read your own write, then look for the others'
            top = memory.search(text, user_id=user, k=3)[0]
            assert top.id == result.ids[0], (top, text)
            searches += 1
            check(i + 1)
        if i + 1 == writes // 2:
            while set(seen) != others:
                if time.monotonic() > deadline + 60:
                    sys.exit(f"half-way: never saw {sorted(others - set(seen))}")
                time.sleep(0.01)
                check(i + 1)
    finished = time.time()
    while True:  # everyone's writes, as this (long-open) process sees them
        total = sum(len(memory.list(user_id=u, limit=10_000)) for u in users)
        if total >= processes * writes or time.monotonic() > deadline + 120:
            break
        time.sleep(0.01)
    memory.search("note", user_id="user-0", k=1)  # catch the index up
    print(json.dumps({
        "name": name,
        "seen": seen,
        "searches": searches,
        "started": started,
        "finished": finished,
        "total_seen_at_end": total,
        "index_size_at_end": len(memory.store._index),
        "median_add": statistics.median(latencies),
        "max_add": max(latencies),
    }))
    memory.close()
"""


def expected_text(name: str, i: int) -> str:
    user = USERS[i % len(USERS)]
    return f"{name} note {i}: the {name} writer stored item {i} for {user}"


@pytest.mark.slow
def test_four_processes_write_and_search_one_store_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, gate = tmp_path / "store", tmp_path / "gate"
    gate.mkdir()
    names = [f"p{i}" for i in range(PROCESSES)]
    # Started at once, without the store existing: the processes also race
    # to create it. Default busy_timeout: lock waits must never surface.
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(WRITER),
                str(store),
                name,
                str(gate),
                str(PROCESSES),
                str(WRITES),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    reports = {}
    try:
        for name, writer in zip(names, writers, strict=True):
            out, err = writer.communicate(timeout=240)
            assert writer.returncode == 0, f"{name} failed:\n{err}"
            assert err == "", f"{name} wrote to stderr:\n{err}"
            reports[name] = json.loads(out)
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()

    for name, report in reports.items():
        others = set(names) - {name}
        # Each process found every other process's writes by search while
        # it was still writing (at most half-way through its own writes).
        assert set(report["seen"]) == others, report
        assert max(report["seen"].values()) <= WRITES // 2, report
        assert report["searches"] == WRITES // 5
        # At the end its long-open store sees all the writes, FAISS included.
        assert report["total_seen_at_end"] == PROCESSES * WRITES, report
        assert report["index_size_at_end"] == PROCESSES * WRITES, report
    # Every write loop was running while every other one was: the lock was
    # contended, and no caller saw it (exit 0, empty stderr above).
    assert max(r["started"] for r in reports.values()) < min(
        r["finished"] for r in reports.values()
    )

    expected = {
        (name, i): expected_text(name, i) for name in names for i in range(WRITES)
    }
    with (
        caplog.at_level(logging.WARNING),
        PersistentMemory(
            store, DeterministicFakeEmbedding(size=32), write_gate=None
        ) as memory,
    ):
        found: dict[tuple[str, int], str] = {}
        ids = set()
        for user in USERS:
            for doc in memory.list(user_id=user, limit=10_000):
                key = (doc.metadata["proc"], doc.metadata["n"])
                assert key not in found, f"{key} stored twice"
                assert doc.metadata["user_id"] == user
                found[key] = doc.page_content
                ids.add(doc.id)
        assert found == expected  # all 2,000 present, exact text, no extra
        assert len(ids) == PROCESSES * WRITES
        assert memory.stats().memories == PROCESSES * WRITES
        for name in names:
            for i in (0, WRITES // 2, WRITES - 1):
                user = USERS[i % len(USERS)]
                top = memory.search(expected[name, i], user_id=user, k=1)[0]
                assert (top.metadata["proc"], top.metadata["n"]) == (name, i)
                assert top.metadata["scores"]["dense"] > 0.999
        assert len(memory.store._index) == PROCESSES * WRITES
    assert package_warnings(caplog) == []  # no index rebuild on open, say


# ------------------------------- 16 threads + 16 asyncio tasks, one runnable

CALLERS = 16  # threads, and as many asyncio tasks
TURNS = 8  # own-session turns per caller
LOBBY_AT = 4  # before this own turn, one turn in the user's shared session
CHAT_USERS = 4

# (user, session) -> [(human text, answer text)], in each caller's order
Turns = dict[tuple[str, str], list[tuple[str, str]]]


def caller_plan(kind: str, caller: int) -> list[tuple[str, str, str]]:
    """`(user, session, text)` per turn: own session, one turn in the lobby."""
    user = f"user-{caller % CHAT_USERS}"
    own = [
        (
            user,
            f"{kind}-{caller}",
            f"{kind} {caller} turn {turn}: I keep {caller} ferns on shelf {turn}.",
        )
        for turn in range(TURNS)
    ]
    lobby = (user, "lobby", f"{kind} {caller} in the lobby: I keep {caller} cacti.")
    return [*own[:LOBBY_AT], lobby, *own[LOBBY_AT:]]


async def run_threads_and_tasks(chat: RunnableWithPersistentMemory) -> Turns:
    """CALLERS threads (`invoke`) and CALLERS tasks (`ainvoke`), all at once."""
    turns: Turns = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    go = threading.Event()

    def note(user: str, session: str, human: str, answer: object) -> None:
        assert isinstance(answer, AIMessage), answer
        with lock:
            turns.setdefault((user, session), []).append((human, answer.text))

    def thread_caller(caller: int) -> None:
        try:
            go.wait()
            for user, session, text in caller_plan("thread", caller):
                note(user, session, text, chat.invoke(text, config(user, session)))
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    async def task_caller(caller: int) -> None:
        for user, session, text in caller_plan("task", caller):
            answer = await chat.ainvoke(text, config(user, session))
            note(user, session, text, answer)

    threads = [
        threading.Thread(target=thread_caller, args=(c,)) for c in range(CALLERS)
    ]
    for thread in threads:
        thread.start()
    go.set()
    try:
        await asyncio.gather(*(task_caller(c) for c in range(CALLERS)))
    finally:
        for thread in threads:
            await asyncio.to_thread(thread.join)
    assert errors == []
    return turns


def assert_every_turn_kept(memory: PersistentMemory, turns: Turns) -> None:
    assert sum(map(len, turns.values())) == 2 * CALLERS * (TURNS + 1)
    remembered: dict[str, list[str]] = {}
    for (user, session), pairs in turns.items():
        remembered.setdefault(user, []).extend(human for human, _ in pairs)
        log = PersistentChatMessageHistory(memory, session, user_id=user).messages
        assert len(log) == 2 * len(pairs)
        assert all(isinstance(m, HumanMessage) for m in log[::2])
        assert all(isinstance(m, AIMessage) for m in log[1::2])
        written = [(q.text, a.text) for q, a in zip(log[::2], log[1::2], strict=True)]
        if session == "lobby":
            # Used by 8 callers at once: every turn, each question right
            # before its own answer (a turn is one transaction).
            assert sorted(written) == sorted(pairs)
        else:
            # One caller at a time: every turn, in the caller's order.
            assert written == pairs
    for user, humans in remembered.items():
        stored = memory.list(user_id=user, limit=10_000)
        assert sorted(d.page_content for d in stored) == sorted(humans)
        assert {d.metadata["kind"] for d in stored} == {"message"}
    with memory._db.read() as con:  # the outbox is drained
        query = "SELECT count(*) FROM chat_messages WHERE pending = 1"
        assert con.execute(query).fetchone()[0] == 0


@pytest.mark.parametrize("background", [False, True], ids=["sync", "background"])
async def test_threads_and_tasks_through_one_runnable_lose_nothing(
    store_path: Path, background: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Opened in a worker thread: the loop's thread must not hold a SQLite
    # connection of its own (see the event-loop test below).
    memory = await asyncio.to_thread(
        lambda: PersistentMemory(
            store_path,
            DeterministicFakeEmbedding(size=32),
            write_gate=None,
            dedup_threshold=None,
        )
    )
    try:
        chat = with_persistent_memory(EchoChatModel(), memory, background=background)
        with caplog.at_level(logging.WARNING):
            turns = await run_threads_and_tasks(chat)
            await chat.aflush()  # raises if any write, deferred or not, failed
            chat.flush(timeout=60)
        # The tasks ran no SQL on the loop's thread: it would have opened a
        # connection there (the database keeps one per thread).
        assert getattr(memory._db._local, "con", None) is None
        assert_every_turn_kept(memory, turns)
        assert package_warnings(caplog) == []
    finally:
        memory.close()


# ------------------------------------------------ the event loop never waits

DELAY = 0.2  # every sync embedding call sleeps this long
LOCK_HOLD = 0.25  # another connection holds the write lock this long, often
INVOKERS, STREAMERS = 6, 4  # concurrent asyncio callers, 2 turns each


class SlowEmbeddings(Embeddings):
    """Deterministic vectors after a sleep, like a remote embedding API.

    Only the sync methods: LangChain's default `aembed_*` run them in a
    worker thread, so one called on the event loop would stall it `delay`.
    """

    def __init__(self, delay: float = DELAY) -> None:
        self.delay = delay
        self.inner = DeterministicFakeEmbedding(size=32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        time.sleep(self.delay)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        time.sleep(self.delay)
        return self.inner.embed_query(text)


class Heartbeat:
    """Sleeps `period` in a loop on the event loop; records how late it wakes."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.lateness: list[float] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            self.lateness.append(time.perf_counter() - before - self.period)

    async def around(self, work: Awaitable[Any]) -> Any:
        beat = asyncio.create_task(self.run())
        await asyncio.sleep(0)
        try:
            return await work
        finally:
            self._stop.set()
            await beat


class LockHolder(threading.Thread):
    """Takes the store's write lock from another connection, again and again."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.holds: list[float] = []  # when each hold began (monotonic)
        self.stop = threading.Event()

    def run(self) -> None:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            while not self.stop.is_set():
                con.execute("BEGIN IMMEDIATE")
                self.holds.append(time.monotonic())
                self.stop.wait(LOCK_HOLD)
                con.execute("ROLLBACK")
                # SQLite's lock is not fair: leave writers a real gap.
                self.stop.wait(2 * LOCK_HOLD)
        finally:
            con.close()


def open_slow_memory(path: Path) -> PersistentMemory:
    embedding = SlowEmbeddings(delay=0)  # fast while the store is filled
    memory = PersistentMemory(path, embedding, write_gate=None)
    memory.add_many(
        {"content": f"Earlier fact {i}: shelf {i} holds ferns.", "user_id": f"u{i % 3}"}
        for i in range(30)
    )
    embedding.delay = DELAY
    return memory


async def ask_and_stream(chat: RunnableWithPersistentMemory) -> dict[str, list[str]]:
    """INVOKERS callers of `ainvoke`, STREAMERS of `astream`, all at once.

    Returns each session's human messages, in order.
    """

    async def invoker(caller: int) -> tuple[str, list[str]]:
        session, sent = f"inv-{caller}", []
        for turn in range(2):
            text = f"Invoker {caller} turn {turn}: my tulips are {turn} weeks old."
            answer = await chat.ainvoke(text, config(f"u{caller % 3}", session))
            assert text in answer.text
            sent.append(text)
        return session, sent

    async def streamer(caller: int) -> tuple[str, list[str]]:
        session, sent = f"str-{caller}", []
        for turn in range(2):
            text = f"Streamer {caller} turn {turn}: my roses are {turn} weeks old."
            cfg = config(f"u{caller % 3}", session)
            chunks = [c.text async for c in chat.astream(text, cfg)]
            assert len(chunks) > 1
            assert text in "".join(chunks)
            sent.append(text)
        return session, sent

    done = await asyncio.gather(
        *(invoker(c) for c in range(INVOKERS)),
        *(streamer(c) for c in range(STREAMERS)),
    )
    await chat.aflush()
    return dict(done)


async def in_thread(call: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(call)


@pytest.mark.parametrize("background", [False, True], ids=["sync", "background"])
async def test_ainvoke_and_astream_never_block_the_event_loop(
    store_path: Path, background: bool
) -> None:
    # Opened in a worker thread: the loop's thread must never hold a
    # connection of its own, so any SQL run on the loop would leave one.
    memory = await in_thread(lambda: open_slow_memory(store_path))
    chat = with_persistent_memory(EchoChatModel(), memory, background=background)
    holder = LockHolder(store_path / "memory.db")
    heartbeat = Heartbeat()
    holder.start()
    try:
        started = time.monotonic()
        sent = await heartbeat.around(ask_and_stream(chat))
        elapsed = time.monotonic() - started
    finally:
        holder.stop.set()
        await in_thread(holder.join)
    loop_connection = getattr(memory._db._local, "con", None)
    try:
        # The work took time (sleeping embeddings, a contended write lock)...
        assert elapsed > 2 * DELAY
        assert any(started <= t <= started + elapsed for t in holder.holds)
        assert len(heartbeat.lateness) > 20
        # ...yet the loop kept ticking: no sync embedding call or lock wait
        # ran on it (either would make it DELAY or up to LOCK_HOLD late).
        worst = max(heartbeat.lateness)
        assert worst < DELAY / 2, f"event loop blocked for {worst * 1000:.0f} ms"
        # No SQL at all ran on the loop's thread (the database opens one
        # connection per thread, on the thread's first use).
        assert loop_connection is None, "SQLite was used on the event loop thread"
        # And the work was done: every turn in its session, in order, and
        # every message remembered.
        stored = set()
        for session, texts in sent.items():
            user = f"u{int(session.split('-')[1]) % 3}"
            history = PersistentChatMessageHistory(memory, session, user_id=user)
            log = await in_thread(lambda history=history: history.messages)
            assert [m.text for m in log[::2]] == texts
            assert all(isinstance(m, AIMessage) for m in log[1::2])
            listed = await in_thread(lambda user=user: memory.list(user_id=user))
            stored |= {d.page_content for d in listed}
        assert {t for texts in sent.values() for t in texts} <= stored
    finally:
        await in_thread(memory.close)


async def test_the_heartbeat_notices_a_blocked_event_loop() -> None:
    # The measurement above can fail: one sync embedding call on the loop.
    async def blocking() -> None:
        await asyncio.sleep(0.02)
        SlowEmbeddings().embed_query("on the loop")
        await asyncio.sleep(0.02)

    heartbeat = Heartbeat()
    await heartbeat.around(blocking())
    assert max(heartbeat.lateness) >= DELAY * 0.9
