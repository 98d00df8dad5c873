"""Concurrency: processes writing one store; threads and tasks through one chain.

    .venv/bin/python benchmarks/bench_concurrency.py [--processes 4] [--writes 500]
        [--callers 16] [--turns 10] [--repeats 3]

Part 1: `--processes` processes, started together behind a barrier, each add
`--writes` memories (three users shared by all, write gate and dedup off,
default `busy_timeout`) to one store directory, with a search every 5
writes. Timed from the barrier to the last process done (interpreter start
excluded): writes/s, per-`add` latency (the lock waits are in it), and
errors (exceptions surfaced to callers, non-zero exits, stderr output). The
median run of `--repeats` by total time.

Part 2: `--callers` threads calling `invoke` and as many asyncio tasks
calling `ainvoke`, all at once on one `with_persistent_memory(EchoChatModel(),
memory)`, `--turns` turns each, over 4 users, each caller in its own session;
then the same with the tasks alone. Calls/s (median of `--repeats`), and the
event loop's heartbeat: a task sleeping 5 ms in a loop, how late it wakes
(median, p99, max over all repeats; an idle loop is the reference). The
threads compete with the loop for the GIL, and a garbage collection stops
every thread, so the longest GC pause is printed beside the lateness: a max
near it is the collector, not work run on the loop. Embeddings:
DeterministicFakeEmbedding (384-d), and LocalEmbeddings when installed
(fewer turns; its engine takes one call at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from langchain_persistent_memory import (
    LocalEmbeddings,
    PersistentMemory,
    with_persistent_memory,
)
from langchain_persistent_memory.testing import EchoChatModel

WRITER = """
    import json, sys, time
    from pathlib import Path
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_persistent_memory import PersistentMemory

    path, name, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    processes, writes = int(sys.argv[4]), int(sys.argv[5])
    users = ("user-0", "user-1", "user-2")
    memory = PersistentMemory(
        path, DeterministicFakeEmbedding(size=32), write_gate=None,
        dedup_threshold=None,
    )
    (gate / name).touch()
    while len(list(gate.iterdir())) < processes:
        time.sleep(0.001)
    latencies, errors = [], []
    started = time.time()
    for i in range(writes):
        user = users[i % len(users)]
        text = f"{name} note {i}: the {name} writer stored item {i} for {user}"
        before = time.perf_counter()
        try:
            memory.add(text, user_id=user)
            if i % 5 == 4:
                memory.search(text, user_id=user, k=5)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
        latencies.append(time.perf_counter() - before)
    finished = time.time()
    memory.close()
    print(json.dumps({"started": started, "finished": finished,
                      "latencies": latencies, "errors": errors}))
"""


class GcPauses:
    """A `gc.callbacks` hook: how long each collection stopped the process."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0

    def __call__(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)


GC = GcPauses()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def percentile(samples: list[float], p: int) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100)[p - 1]


def spread(samples: list[float]) -> str:
    return (
        f"median {ms(statistics.median(samples))} | p99 {ms(percentile(samples, 99))}"
        f" | max {ms(max(samples))} ms"
    )


# ------------------------------------------------------------------ part 1


def processes_run(processes: int, writes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        gate = Path(tmp) / "gate"
        gate.mkdir()
        names = [f"p{i}" for i in range(processes)]
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    textwrap.dedent(WRITER),
                    str(Path(tmp) / "store"),
                    name,
                    str(gate),
                    str(processes),
                    str(writes),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
        ]
        reports, failures = [], []
        for writer in writers:
            out, err = writer.communicate(timeout=600)
            if writer.returncode != 0 or err:
                failures.append(err.strip().splitlines()[-1:] or ["exit code"])
            if writer.returncode == 0:
                reports.append(json.loads(out))
        with PersistentMemory(
            Path(tmp) / "store", DeterministicFakeEmbedding(size=32), write_gate=None
        ) as memory:
            stored = memory.stats().memories
    started = min(r["started"] for r in reports)
    finished = max(r["finished"] for r in reports)
    return {
        "seconds": finished - started,
        "latencies": [x for r in reports for x in r["latencies"]],
        "errors": sum(len(r["errors"]) for r in reports) + len(failures),
        "stored": stored,
    }


def part_one(processes: int, writes: int, repeats: int) -> None:
    total = processes * writes
    runs, alone = [], []
    for _ in range(repeats):  # interleaved, so drift hits both alike
        runs.append(processes_run(processes, writes))
        alone.append(processes_run(1, total))
    run = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    one = sorted(alone, key=lambda r: r["seconds"])[len(alone) // 2]
    print(
        f"{processes} processes x {writes} writes (+ a search every 5), one store,"
        f" median of {repeats}:"
    )
    print(
        f"  total {run['seconds']:.2f} s | {total / run['seconds']:.0f} writes/s |"
        f" stored {run['stored']}/{total} |"
        f" errors {sum(r['errors'] for r in runs)} (all runs)"
    )
    print(f"  add (+search) latency: {spread(run['latencies'])}")
    print("  total per run: " + ", ".join(f"{r['seconds']:.2f} s" for r in runs))
    print(
        f"  reference, 1 process x {total} writes: total {one['seconds']:.2f} s |"
        f" {total / one['seconds']:.0f} writes/s | latency {spread(one['latencies'])}"
        f" | errors {sum(r['errors'] for r in alone)}"
    )
    print(
        f"  {processes} processes / 1 process: time x"
        f"{run['seconds'] / one['seconds']:.2f}, p99 latency x"
        f"{percentile(run['latencies'], 99) / percentile(one['latencies'], 99):.1f}"
    )


# ------------------------------------------------------------------ part 2


async def heartbeat(stop: asyncio.Event, lateness: list[float]) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.005)
        lateness.append(time.perf_counter() - before - 0.005)


async def idle_loop(seconds: float) -> list[float]:
    lateness: list[float] = []
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(stop, lateness))
    await asyncio.sleep(seconds)
    stop.set()
    await beat
    return lateness


async def chat_round(
    embedding: Embeddings,
    callers: int,
    turns: int,
    *,
    threads: bool,
    background: bool,
) -> tuple[int, float, list[float], int]:
    """One round; return (calls, seconds, heartbeat lateness, errors)."""
    with tempfile.TemporaryDirectory() as tmp:
        memory = PersistentMemory(
            Path(tmp) / "m", embedding, write_gate=None, dedup_threshold=None
        )
        chat = with_persistent_memory(EchoChatModel(), memory, background=background)
        errors: list[BaseException] = []
        go = threading.Event()

        def turn(kind: str, caller: int, i: int) -> tuple[str, dict]:
            text = f"{kind} {caller} turn {i}: I keep {caller} ferns on shelf {i}."
            user, session = f"user-{caller % 4}", f"{kind}-{caller}"
            return text, {"configurable": {"user_id": user, "session_id": session}}

        def thread_caller(caller: int) -> None:
            go.wait()
            try:
                for i in range(turns):
                    chat.invoke(*turn("thread", caller, i))
            except Exception as error:  # noqa: BLE001 - counted (its turns too)
                errors.append(error)

        async def task_caller(caller: int) -> None:
            try:
                for i in range(turns):
                    await chat.ainvoke(*turn("task", caller, i))
            except Exception as error:  # noqa: BLE001 - counted (its turns too)
                errors.append(error)

        workers = [
            threading.Thread(target=thread_caller, args=(c,))
            for c in range(callers if threads else 0)
        ]
        lateness: list[float] = []
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop, lateness))
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        go.set()
        await asyncio.gather(*(task_caller(c) for c in range(callers)))
        for worker in workers:
            await asyncio.to_thread(worker.join)
        try:
            await chat.aflush()
        except Exception as error:  # noqa: BLE001 - counted
            errors.append(error)
        seconds = time.perf_counter() - started
        stop.set()
        await beat
        calls = (len(workers) + callers) * turns
        remembered = await asyncio.to_thread(
            lambda: sum(
                len(memory.list(user_id=f"user-{u}", limit=100_000)) for u in range(4)
            )
        )
        memory.close()
    lost = calls - remembered  # every human message must be remembered
    return calls, seconds, lateness, len(errors) + max(lost, 0)


def part_two(embedding: Embeddings, callers: int, turns: int, repeats: int) -> None:
    for threads in (True, False):
        for background in (False, True):
            rates, lateness, errors = [], [], 0
            GC.pauses.clear()
            for _ in range(repeats):
                calls, seconds, late, failed = asyncio.run(
                    chat_round(
                        embedding,
                        callers,
                        turns,
                        threads=threads,
                        background=background,
                    )
                )
                rates.append(calls / seconds)
                lateness.extend(late)
                errors += failed
            who = (
                f"{callers} threads + {callers} tasks"
                if threads
                else (f"{callers} tasks only")
            )
            mode = "background" if background else "sync write"
            print(
                f"  {who:<24} {mode:<10} {statistics.median(rates):6.0f} calls/s |"
                f" loop lateness {spread(lateness)}"
                f" (longest GC pause {ms(max(GC.pauses, default=0.0))} ms)"
                f" | errors {errors}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gc.callbacks.append(GC)
    part_one(args.processes, args.writes, args.repeats)
    print()
    idle = asyncio.run(idle_loop(1.0))
    print(
        f"with_persistent_memory(EchoChatModel()), {args.turns} turns per caller;"
        f" idle loop lateness {spread(idle)}"
    )
    print("DeterministicFakeEmbedding (384-d):")
    part_two(
        DeterministicFakeEmbedding(size=384),
        args.callers,
        args.turns,
        args.repeats,
    )
    try:
        local = LocalEmbeddings()
    except Exception as error:  # noqa: BLE001 - optional extra
        print(f"LocalEmbeddings skipped: {error}")
        return
    turns = max(args.turns // 3, 1)
    print(f"LocalEmbeddings (e5-small), {turns} turns per caller:")
    part_two(local, args.callers, turns, args.repeats)


if __name__ == "__main__":
    main()
