"""Search latency of `PersistentMemory` at scale (hybrid, per user).

    python benchmarks/bench_memory.py                 # 100,000 memories, 1,000 users
    python benchmarks/bench_memory.py --n 20000 --users 200

Vectors are precomputed (dim 384), so the times exclude embedding the
query, as the target says: p50 <= 5 ms for k = 10 with hybrid search on.
Texts are random sentences over a 5,000-word vocabulary, so the keyword side
has real work to do.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from langchain_persistent_memory import PersistentMemory

TARGET_P50_MS = 5.0


class TableEmbeddings(Embeddings):
    """Returns a precomputed vector per text; no model runs."""

    def __init__(self, dim: int, seed: int) -> None:
        self.dim = dim
        self.rng = np.random.default_rng(seed)
        self.table: dict[str, list[float]] = {}

    def _vector(self, text: str) -> list[float]:
        if text not in self.table:
            vector = self.rng.standard_normal(self.dim).astype(np.float32)
            self.table[text] = (vector / np.linalg.norm(vector)).tolist()
        return self.table[text]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    vocabulary = [f"w{i}" for i in range(5_000)]
    embedding = TableEmbeddings(args.dim, args.seed)

    def sentence(length: int) -> str:
        return " ".join(rng.choice(vocabulary, size=length))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        # Dedup off while loading: every memory here is distinct by design.
        options = {"dedup_threshold": None, "write_gate": None}
        start = time.perf_counter()
        with PersistentMemory(path, embedding, **options) as memory:  # type: ignore[arg-type]
            memory.add_many(
                {"content": sentence(12), "user_id": f"user{i % args.users}"}
                for i in range(args.n)
            )
        build = time.perf_counter() - start
        queries = [
            (f"user{rng.integers(args.users)}", sentence(6))
            for _ in range(args.queries)
        ]
        for _, text in queries:
            embedding.embed_query(text)  # precompute: embedding is not timed
        with PersistentMemory(path, embedding, **options) as memory:  # type: ignore[arg-type]
            memory.search(queries[0][1], user_id=queries[0][0], k=10)  # warm up
            times, counts, leaks = [], [], 0
            for user, text in queries:
                began = time.perf_counter()
                hits = memory.search(text, user_id=user, k=10)
                times.append(time.perf_counter() - began)
                counts.append(len(hits))
                leaks += sum(hit.metadata["user_id"] != user for hit in hits)
    p50 = statistics.median(times) * 1000
    p99 = float(np.percentile(times, 99)) * 1000
    verdict = "met" if p50 <= TARGET_P50_MS else "NOT met"
    print(f"# PersistentMemory.search: {args.n:,} memories, {args.users:,} users")
    print(f"# dim {args.dim}, k=10, hybrid; query embedding not timed")
    print(f"# python benchmarks/bench_memory.py --n {args.n} --users {args.users}")
    print(f"build (add_many): {build:.1f} s ({args.n / build:,.0f} memories/s)")
    print(f"search p50: {p50:.2f} ms, p99: {p99:.2f} ms")
    print(f"target p50 <= {TARGET_P50_MS} ms: {verdict}")
    print(f"results per search: mean {statistics.mean(counts):.1f} of 10")
    if leaks:
        print(f"ISOLATION FAILURE: {leaks} results of another user")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
