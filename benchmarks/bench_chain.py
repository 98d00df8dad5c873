"""What with_persistent_memory adds to each call, against the bare model.

    .venv/bin/python benchmarks/bench_chain.py [--calls 300] [--memories 10000]

The model is EchoChatModel (no network, near-zero cost), so the difference is
our work per call: read the session window, embed the message and search the
user's memories, fill the prompt, write the turn (chat log + memory). The
store is pre-filled with `--memories` memories over 100 users. Embeddings:
DeterministicFakeEmbedding (384-d) to isolate our cost, and LocalEmbeddings
when installed (embedding dominates). Medians of `--calls` calls. With
`background=True` the time is until the answer returns. The three are
interleaved call by call; between calls the deferred write is waited for and
the loop pauses 20 ms (untimed), as a real model's latency would allow.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from langchain_persistent_memory import (
    LocalEmbeddings,
    PersistentMemory,
    with_persistent_memory,
)
from langchain_persistent_memory.testing import EchoChatModel


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def run(name: str, embedding: Embeddings, calls: int, memories: int) -> None:
    model = EchoChatModel()
    with tempfile.TemporaryDirectory() as tmp:
        memory = PersistentMemory(Path(tmp) / "m", embedding)
        memory.add_many(
            {
                "content": f"Memory {i}: user {i % 100} likes topic {i % 997}.",
                "user_id": f"user-{i % 100}",
                "importance": 0.5,
            }
            for i in range(memories)
        )
        config = {"configurable": {"user_id": "user-7", "session_id": "s"}}
        chat = with_persistent_memory(model, memory)
        deferred = with_persistent_memory(model, memory, background=True)
        times: dict[str, list[float]] = {"bare": [], "sync": [], "background": []}
        # Interleaved, so that drift on a shared machine hits all three alike.
        for i in range(calls):
            text = f"Tell me about topic {i}."
            times["bare"].append(timed(lambda text=text: model.invoke(text)))
            times["sync"].append(
                timed(lambda text=text: chat.invoke(text, config=config))
            )
            times["background"].append(
                timed(lambda text=text: deferred.invoke(text, config=config))
            )
            deferred.flush()  # untimed: the deferred write finishes...
            time.sleep(0.02)  # ...while a real model would still be thinking
        bare, wrapped, background = (
            statistics.median(times[key]) for key in ("bare", "sync", "background")
        )
        memory.close()
    print(
        f"{name:<28} bare model {bare:7.2f} ms | with memory {wrapped:7.2f} ms"
        f" (+{wrapped - bare:.2f}) | background write {background:7.2f} ms"
        f" (+{background - bare:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--memories", type=int, default=10_000)
    args = parser.parse_args()
    run(
        "DeterministicFakeEmbedding",
        DeterministicFakeEmbedding(size=384),
        args.calls,
        args.memories,
    )
    try:
        local = LocalEmbeddings()
    except Exception as error:  # noqa: BLE001 - optional extra
        print(f"LocalEmbeddings skipped: {error}")
        return
    run(
        "LocalEmbeddings (e5-small)",
        local,
        max(args.calls // 3, 20),
        min(args.memories, 2000),
    )


if __name__ == "__main__":
    main()
