"""Kill writers with SIGKILL at random moments; check the store after each kill.

Each cycle forks a writer that opens the store and adds, overwrites and
deletes documents and writes checkpoints (explicitly, and in the background
every few changes) in a loop, until the parent kills it with SIGKILL after a
random delay. Before each write the writer appends `B <op as JSON>` to a side
file; after the call returns (the transaction has committed) it appends `A`.
Then a fresh forked process opens the store and checks that:

- every acknowledged write is present with the right text, metadata and
  vector, and every acknowledged delete is absent;
- the one write in flight at the kill is applied completely or not at all
  (a batch is never half-present);
- the FAISS index holds exactly the database's rows with the same vectors;
- a search by each document's own vector finds it first, filtered and
  full-size searches return exactly the expected ids;
- the checkpoint the kill left behind is never unusable (no rebuild).

The checker's verdict decides which of the two allowed states the model of
the store continues from. The parent never opens the store itself, so it
holds no thread, lock or connection when it forks.

Run it by hand for longer (`tests/unit_tests/test_crash.py` runs a short
mode in CI):

    .venv/bin/python -m tests.crash_torture --kills 2000
    .venv/bin/python -m tests.crash_torture --seconds 600 --seed 7

It prints one JSON line of figures and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_persistent_memory import PersistentFAISS
from langchain_persistent_memory._index import checkpoint_stamp

DIM = 32
ID_POOL = 150  # ids are reused, so writes overwrite and delete existing rows
TAGS = ("red", "green", "blue")

State = dict[str, tuple[str, dict[str, Any]]]


def embedding() -> DeterministicFakeEmbedding:
    # Seeded from a SHA-256 of the text: the same vector in every process.
    return DeterministicFakeEmbedding(size=DIM)


# ------------------------------------------------------------------- writer


def _writer(path: Path, side: Path, cycle: int, seed: int) -> None:
    """Write in a loop until killed. Runs in a forked child; never returns."""
    rng = random.Random(f"{seed}-{cycle}")
    # Its warnings (say, opening without a checkpoint yet) are expected here.
    logging.getLogger("langchain_persistent_memory").addHandler(logging.NullHandler())
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    store = PersistentFAISS(
        path,
        embedding(),
        checkpoint_every=rng.choice((5, 20, 80)),
        checkpoint_interval=0.05,
    )
    n = 0
    while True:
        n += 1
        roll = rng.random()
        if roll < 0.6:  # add or overwrite a batch
            ids = rng.sample(range(ID_POOL), rng.randint(1, 6))
            op: dict[str, Any] = {
                "op": "add",
                "docs": {
                    f"doc-{i}": [
                        f"doc {i} written in cycle {cycle} step {n}",
                        {"owner": f"doc-{i}", "tag": rng.choice(TAGS), "n": n},
                    ]
                    for i in ids
                },
            }
        elif roll < 0.85:
            ids = rng.sample(range(ID_POOL), rng.randint(1, 4))
            op = {"op": "delete", "ids": [f"doc-{i}" for i in ids]}
        else:
            op = {"op": "checkpoint"}
        os.write(fd, f"B {json.dumps(op)}\n".encode())
        if op["op"] == "add":
            docs = op["docs"]
            store.add_texts(
                [text for text, _ in docs.values()],
                [meta for _, meta in docs.values()],
                ids=list(docs),
            )
        elif op["op"] == "delete":
            store.delete(op["ids"])
        else:
            store.checkpoint()
        os.write(fd, b"A\n")
        if n % 7 == 0:
            store.similarity_search(f"doc {rng.randrange(ID_POOL)}", k=3)


def read_side_file(side: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The acknowledged ops, and the op in flight at the kill (if any)."""
    acked: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    if not side.exists():
        return acked, pending
    for line in side.read_bytes().decode().splitlines():
        if line.startswith("B "):
            assert pending is None, "two ops began without an acknowledgement"
            pending = json.loads(line[2:])
        elif line == "A":
            assert pending is not None, "an acknowledgement without an op"
            acked.append(pending)
            pending = None
    return acked, pending


def apply(state: State, op: dict[str, Any]) -> State:
    new = dict(state)
    if op["op"] == "add":
        new.update(
            {doc_id: (text, meta) for doc_id, (text, meta) in op["docs"].items()}
        )
    elif op["op"] == "delete":
        for doc_id in op["ids"]:
            new.pop(doc_id, None)
    return new


# ------------------------------------------------------------------ checker


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


Rows = dict[str, tuple[str, dict[str, Any], bytes, int]]


def check(path: Path, before: State, after: State, rng: random.Random) -> dict:
    """Open the store as a fresh process would and compare it with the model.

    `before` is the state with every acknowledged op; `after` adds the op in
    flight (the same state if there was none). Returns a verdict.
    """
    problems: list[str] = []
    warnings = _Warnings()
    logging.getLogger("langchain_persistent_memory").addHandler(warnings)
    con = sqlite3.connect(path / "memory.db")
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
        # A writer killed before its store's first transaction committed
        # leaves an empty file: a valid store with nothing in it.
        rows: Rows = (
            {
                doc_id: (text, json.loads(meta), blob, label)
                for doc_id, text, meta, blob, label in con.execute(
                    "SELECT id, text, metadata, embedding, label FROM documents"
                )
            }
            if "documents" in tables
            else {}
        )
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        head = (
            con.execute("SELECT seq FROM counter").fetchone()[0]
            if "counter" in tables
            else 0
        )
    finally:
        con.close()
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    observed = {doc_id: (text, meta) for doc_id, (text, meta, _, _) in rows.items()}
    in_flight = {i for i in set(before) | set(after) if before.get(i) != after.get(i)}
    # Acknowledged state that is missing or wrong, outside the write in flight.
    lost = sorted(
        i
        for i in set(before) | set(observed)
        if i not in in_flight and observed.get(i) != before.get(i)
    )
    if observed not in (before, after):
        problems.append(
            f"store matches neither allowed state: acknowledged state lost or "
            f"wrong for {lost[:5]} ({len(lost)} ids); the write in flight "
            f"touched {sorted(in_flight)[:6]}"
        )
    had_checkpoint = (path / "index.faiss").exists()
    stamp = checkpoint_stamp(path / "index.faiss")
    if had_checkpoint and stamp is None:
        problems.append("index.faiss exists but has no valid trailer")
    if stamp is not None and stamp > head:
        problems.append(f"checkpoint stamped {stamp} is ahead of the database {head}")
    # Opened and left without closing: closing would write a fresh checkpoint,
    # and the next writer should also meet the stale ones kills leave behind.
    store = PersistentFAISS(
        path, embedding(), checkpoint_every=10**9, checkpoint_interval=1e9
    )
    problems += _check_vectors(store, rows)
    problems += _check_searches(store, rows, rng)
    if had_checkpoint:
        # A kill must never leave a checkpoint that cannot be used. (With
        # none at all, replaying the whole database is the normal path.)
        rebuilt = [m for m in warnings.messages if "Rebuilding" in m]
        problems.extend(f"unexpected rebuild: {m}" for m in rebuilt)
    return {
        "problems": problems,
        "applied": observed == after and observed != before,
        "lost": len(lost),
        "rows": len(rows),
        "stale_checkpoint": stamp is not None and stamp < head,
    }


def _check_vectors(store: PersistentFAISS, rows: Rows) -> list[str]:
    """Each stored vector is its text's; the index holds exactly those vectors."""
    emb = embedding()
    problems = [
        f"{doc_id}: stored vector is not the vector of its text"
        for doc_id, (text, _, blob, _) in rows.items()
        if not np.array_equal(
            np.frombuffer(blob, dtype=np.float32),
            np.asarray(emb.embed_query(text), np.float32),
        )
    ]
    index = store._index  # the check is about the index itself
    if index is None:
        return [*problems, "no index in memory"] if rows else problems
    labels = {label for _, _, _, label in rows.values()}
    in_index = {int(label) for label in index.labels()}
    if in_index != labels:
        problems.append(
            f"index labels differ from the database: "
            f"{len(in_index - labels)} extra, {len(labels - in_index)} missing"
        )
        return problems
    for _, _, blob, label in rows.values():
        vector = np.frombuffer(blob, dtype=np.float32)
        got = index.vectors_of(np.array([label], dtype=np.int64))[0]
        if not np.allclose(got, vector / np.linalg.norm(vector), atol=1e-6):
            problems.append(f"label {label}: index vector differs")
    return problems


def _check_searches(
    store: PersistentFAISS, rows: Rows, rng: random.Random
) -> list[str]:
    """Searches return exactly the documents they should."""
    problems = []
    emb = embedding()
    ids = sorted(rows)
    everything = store.similarity_search("anything", k=ID_POOL + 10)
    if sorted(doc.id or "" for doc in everything) != ids:
        problems.append("a search for k > size did not return every document")
    for doc_id in rng.sample(ids, min(5, len(ids))):
        text = rows[doc_id][0]
        top = store.similarity_search_by_vector(emb.embed_query(text), k=1)
        if [doc.id for doc in top] != [doc_id]:
            problems.append(f"searching {doc_id}'s own vector found {top}")
        found = store.similarity_search(text, k=3, filter={"owner": doc_id})
        if [doc.id for doc in found] != [doc_id]:
            problems.append(f"filter owner={doc_id} returned {found}")
    tag = rng.choice(TAGS)
    tagged = store.similarity_search("x", k=ID_POOL, filter={"tag": tag})
    want_tagged = sorted(i for i in ids if rows[i][1]["tag"] == tag)
    if sorted(doc.id or "" for doc in tagged) != want_tagged:
        problems.append(f"filter tag={tag} did not return exactly its documents")
    return problems


def _in_child(target: Any, *args: Any) -> int:
    """Fork; run `target(*args)` in the child, which then exits at once."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            target(*args)
        except BaseException:  # noqa: BLE001 - reported by the exit code
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def _checked(path: Path, before: State, after: State, seed: str) -> dict:
    verdict_file = path.parent / "verdict.json"
    verdict_file.unlink(missing_ok=True)

    def run() -> None:
        verdict = check(path, before, after, random.Random(seed))
        verdict_file.write_text(json.dumps(verdict))

    pid = _in_child(run)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not verdict_file.exists():
        return {"problems": [f"the checker crashed (status {status})"]}
    return json.loads(verdict_file.read_text())


# ------------------------------------------------------------------- driver


def torture(
    directory: Path, *, kills: int, seconds: float, seed: int, max_delay: float
) -> dict[str, Any]:
    rng = random.Random(seed)
    path = directory / "store"
    side = directory / "acked.log"
    state: State = {}
    figures = {
        "seed": seed,
        "kills": 0,
        "acknowledged_writes": 0,
        "acknowledged_writes_lost": 0,
        "in_flight_committed": 0,
        "in_flight_absent": 0,
        "kills_with_stale_checkpoint": 0,
        "problems": [],
    }
    # Prepare the parent as a pre-fork server would: what every child needs
    # is imported, and the parent's objects are frozen out of the garbage
    # collector. Otherwise a child's first full collection (tens of ms over
    # the parent's 100,000 objects) or a lazy import can outlast the random
    # delay, and most kills land before the first write.
    embedding().embed_documents(["warm up"])
    gc.collect()
    gc.freeze()
    started = time.monotonic()
    while figures["kills"] < kills or time.monotonic() - started < seconds:
        cycle = figures["kills"]
        side.unlink(missing_ok=True)
        pid = _in_child(_writer, path, side, cycle, seed)
        time.sleep(rng.uniform(0, max_delay))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            figures["problems"].append(
                f"cycle {cycle}: the writer ended by itself (status {status})"
            )
            break
        figures["kills"] += 1
        acked, pending = read_side_file(side)
        before = state
        for op in acked:
            before = apply(before, op)
        figures["acknowledged_writes"] += sum(op["op"] != "checkpoint" for op in acked)
        after = apply(before, pending) if pending is not None else before
        verdict = _checked(path, before, after, f"{seed}-{cycle}")
        figures["acknowledged_writes_lost"] += verdict.get("lost", 0)
        for problem in verdict["problems"]:
            figures["problems"].append(f"cycle {cycle}: {problem}")
        if verdict["problems"]:
            break  # the model no longer knows the store's state
        if pending is not None and pending["op"] != "checkpoint" and after != before:
            key = "in_flight_committed" if verdict["applied"] else "in_flight_absent"
            figures[key] += 1
        figures["kills_with_stale_checkpoint"] += verdict["stale_checkpoint"]
        state = after if verdict["applied"] else before
    figures["documents_at_end"] = len(state)
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="kills to survive")
    parser.add_argument(
        "--seconds", type=float, default=0, help="run at least this long"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument(
        "--max-delay",
        type=float,
        default=0.12,
        help="longest a writer runs before it is killed (seconds)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args(argv)
    seed = (
        args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        figures = torture(
            Path(tmp),
            kills=args.kills,
            seconds=args.seconds,
            seed=seed,
            max_delay=args.max_delay,
        )
    print(json.dumps(figures))  # noqa: T201 - the script's output
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
