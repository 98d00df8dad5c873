"""Recall and latency of `index="ivf"` against exact search, on the same store.

    python benchmarks/bench_ivf.py              # N = 100,000, dim 384
    python benchmarks/bench_ivf.py --n 1000000  # about 1.5 GB of vectors

Two kinds of data: uniform random unit vectors (no structure: the worst case
for an inverted file) and a mixture of 2,000 clusters (structure closer to
real text embeddings). Recall@10 is the share of the exact top 10 that the
approximate search returns, averaged over the queries.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from langchain_core.embeddings import Embeddings

from langchain_persistent_memory import PersistentFAISS


class RowEmbeddings(Embeddings):
    """Text "r<i>" embeds to row i of a matrix; nothing is computed."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.rows[int(t[1:])].tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.rows[int(text[1:])].tolist()


def make_data(kind: str, n: int, dim: int, queries: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    total = n + queries
    if kind == "uniform":
        data = rng.standard_normal((total, dim), dtype=np.float32)
    else:
        centers = rng.standard_normal((2000, dim), dtype=np.float32)
        data = centers[rng.integers(0, len(centers), total)]
        data += 0.6 * rng.standard_normal((total, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


def timed_search(
    store: PersistentFAISS, vectors: np.ndarray, k: int
) -> tuple[list, float]:
    results, times = [], []
    for vector in vectors:
        start = time.perf_counter()
        docs = store.similarity_search_by_vector(vector.tolist(), k=k)
        times.append(time.perf_counter() - start)
        results.append([d.id for d in docs])
    return results, statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"# index='ivf' vs exact: N={args.n:,}, dim={args.dim}, "
        f"{args.queries} queries, k=10, {faiss.omp_get_max_threads()} threads, "
        f"faiss {faiss.__version__}"
    )
    print(f"# command: python benchmarks/bench_ivf.py --n {args.n} --dim {args.dim}")
    print()
    print(
        "| data | index | nprobe | recall@10 | search p50 (ms) | speed-up"
        " | first search (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in ("uniform", "clustered"):
        rows = make_data(kind, args.n, args.dim, args.queries, args.seed)
        queries = rows[args.n :]
        embedding = RowEmbeddings(rows)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "store"
            with PersistentFAISS(path, embedding) as store:
                for start in range(0, args.n, 20_000):
                    texts = [f"r{i}" for i in range(start, min(args.n, start + 20_000))]
                    store.add_texts(texts, ids=texts)
            with PersistentFAISS(path, embedding) as exact:
                truth, exact_ms = timed_search(exact, queries, 10)
            print(f"| {kind} | flat (exact) | - | 1.000 | {exact_ms:.2f} | 1.0x | - |")
            for nprobe in args.nprobe:
                with PersistentFAISS(
                    path, embedding, index="ivf", nprobe=nprobe
                ) as ivf:
                    start = time.perf_counter()
                    ivf.similarity_search_by_vector(queries[0].tolist(), k=10)
                    first = time.perf_counter() - start
                    got, ivf_ms = timed_search(ivf, queries, 10)
                recall = statistics.mean(
                    len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)
                )
                print(
                    f"| {kind} | ivf | {nprobe} | {recall:.3f} | {ivf_ms:.2f} | "
                    f"{exact_ms / ivf_ms:.1f}x | {first:.1f} |"
                )


if __name__ == "__main__":
    main()
