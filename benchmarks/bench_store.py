"""Benchmark `PersistentMemoryStore` against LangGraph's own stores.

    # the default run: N = 1,000 and 10,000 (about 2 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_store.py --out bench_store.json

    # other sizes, or without SqliteStore
    .venv/bin/python benchmarks/bench_store.py --sizes 1000 --no-sqlite

The stores, all behind LangGraph's `BaseStore` API, built in the same run on
the same data, with the same embedding object:

* ours: `PersistentMemoryStore(PersistentMemory(dir, embedding),
  index={"fields": ["content"]})`: SQLite (WAL, synchronous=FULL) + FAISS.
* InMemoryStore: LangGraph's RAM-only store, the reference
  (`index={"embed": embedding, "dims": D, "fields": ["content"]}`).
* SqliteStore: `langgraph.store.sqlite.SqliteStore` from
  `langgraph-checkpoint-sqlite`, on a file, on the connection its
  `from_conn_string(file, index=...)` makes, then `setup()`; vector search
  by the `sqlite-vec` extension (brute force in SQL). SQLite's defaults
  (rollback journal, synchronous=FULL). Its 3.x index config reads the
  fields to embed from `text_fields`, not `fields` (which it ignores,
  embedding the whole value as JSON: langchain-ai/langgraph#8808), so it is
  given both. A Python whose `sqlite3` cannot load extensions (pyenv builds
  without `--enable-loadable-sqlite-extensions`) gives it no vector search;
  it then runs on `pysqlite3` (`pip install pysqlite3-binary`, its own
  SQLite), and is skipped, saying so, if that is missing too, or if
  `langgraph-checkpoint-sqlite` / `sqlite-vec` are not installed.

Packages beyond the `langgraph` extra: `langgraph-checkpoint-sqlite`,
`sqlite-vec` and, where Python's sqlite3 cannot load extensions,
`pysqlite3-binary`. No network at run time.

Data, for each N of `--sizes`: N items spread round-robin over `--users`
namespaces `("memories", "u<k>")`, plus one big user `("memories", "big")`
with N/2 items; then `--single-puts` more items for the regular users.
Each value is `{"content": "memory <i>: ...", "kind", "importance",
"topic"}` (20 topics). Vectors (dim 384) are a mixture of 50 random unit
centres plus noise, normalised; the embedding is a table look-up of the
number in the text ("memory <i>" / "query <j>"), so no model runs and all
stores get bit-identical vectors. Its own cost is timed and printed.

Measured (the stores take turns, in blocks, so a drift in machine load hits
them alike; latencies are medians and p99 over the calls):

1. put throughput: `store.batch([PutOp(...)] * 100)` over the whole data
   (items/s over the total time), and `--single-puts` `store.put` calls;
2. `store.get` of random existing items: p50/p99;
3. `store.search(("memories", user), query=..., limit=10)` for random
   regular users, and for the big user: p50/p99; the top-10 keys are
   compared with InMemoryStore's (they must agree: same vectors, cosine);
4. `store.search(ns, filter={"topic": ...}, limit=10)` without a query, for
   regular users and the big user: p50;
5. `store.list_namespaces(prefix=("memories",), limit=1000)`: p50;
6. the durable stores closed, then opened again in a fresh process that
   does one search in a regular user's namespace: time to open + first
   search (median of `--reopen` processes; interpreter start and imports
   are excluded, and reported as the process's wall time), then one search
   of the big user. The OS page cache is warm.

Ratios are ours / baseline of the figure shown: for a latency < 1 means
ours is faster, for a throughput > 1 means ours is faster (the "better"
column says which way each row points).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.embeddings import Embeddings
from langgraph.store.base import PutOp
from langgraph.store.memory import InMemoryStore

from langchain_persistent_memory import PersistentMemory
from langchain_persistent_memory.langgraph import PersistentMemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

OURS, MEMORY, SQLITE = "ours", "InMemoryStore", "SqliteStore"
FIELDS = ["content"]
TOPICS = 20
KINDS = ("fact", "preference", "episode")
LIMIT = 10
BIG = "big"
_NUMBER = re.compile(r"^(memory|query) (\d+)")


def log(message: str) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')} load {load}] {message}", file=sys.stderr)
    sys.stderr.flush()


# --------------------------------------------------------------------- data


class LookupEmbeddings(Embeddings):
    """'memory <i> ...' embeds to row i of `vectors`, 'query <j> ...' to row j
    of `queries`: a table look-up, the same for every store."""

    model = "bench-store-lookup"  # recorded by ours as the embedding model

    def __init__(self, vectors: np.ndarray | None, queries: np.ndarray) -> None:
        self.vectors = vectors
        self.queries = queries

    def _vector(self, text: str) -> np.ndarray:
        match = _NUMBER.match(text)
        if match is None:
            msg = f"not a benchmark text: {text[:60]!r}"
            raise ValueError(msg)
        table = self.queries if match.group(1) == "query" else self.vectors
        if table is None:
            msg = "this process has no document vectors"
            raise ValueError(msg)
        return table[int(match.group(2))]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        # SqliteStore embeds its search queries with embed_documents, too.
        return [self._vector(text).tolist() for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text).tolist()


@dataclass
class Data:
    """The items of one size, their vectors, and the queries."""

    n: int
    users: int
    single: int
    namespaces: list[tuple[str, ...]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    values: list[dict[str, Any]] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    queries: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def base(self) -> int:
        """Items written by the batched puts: N regular + N/2 of the big user."""
        return self.n + self.n // 2


def clustered(rng: np.random.Generator, rows: int, dim: int, clusters: int):
    """Unit vectors around `clusters` random centres (like sentence embeddings)."""
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = centres[rng.integers(clusters, size=rows)]
    out += rng.standard_normal((rows, dim), dtype=np.float32) * (0.9 / np.sqrt(dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def make_data(args: argparse.Namespace, n: int) -> Data:
    rng = np.random.default_rng(args.seed)
    data = Data(n=n, users=args.users, single=args.single_puts)
    total = data.base + data.single
    for i in range(total):
        if i < n:
            user, key = f"u{i % args.users}", f"m{i:06d}"
        elif i < data.base:
            user, key = BIG, f"b{i - n:06d}"
        else:
            j = i - data.base
            user, key = f"u{j % args.users}", f"s{j:06d}"
        topic = f"t{int(rng.integers(TOPICS))}"
        data.namespaces.append(("memories", user))
        data.keys.append(key)
        data.values.append(
            {
                "content": f"memory {i}: {user} said something about {topic}",
                "kind": KINDS[i % len(KINDS)],
                "importance": round(float(rng.random()), 3),
                "topic": topic,
            }
        )
    n_queries = args.queries + args.big_queries + 2 * args.warmup + args.reopen + 1
    data.vectors = clustered(rng, total, args.dim, args.clusters)
    data.queries = clustered(rng, n_queries, args.dim, args.clusters)
    return data


# ------------------------------------------------------------------ helpers


def sqlite_store_class() -> Any:
    """LangGraph's SqliteStore, or None if langgraph-checkpoint-sqlite is missing."""
    try:
        from langgraph.store.sqlite import SqliteStore  # noqa: PLC0415
    except ImportError:
        return None
    return SqliteStore


def sqlite_driver() -> Any:
    """A DB-API sqlite module that can load extensions (sqlite-vec), or None.

    Python's own `sqlite3` when it was built with extension loading; else
    `pysqlite3` (the `pysqlite3-binary` wheel bundles its own SQLite).
    """
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        from pysqlite3 import dbapi2  # noqa: PLC0415
    except ImportError:
        return None
    return dbapi2


def open_sqlite_store(
    stack: contextlib.ExitStack, path: str, embedding: Embeddings, dim: int
) -> Any:
    """`SqliteStore.from_conn_string(path, index=...)` + `setup()`, on `driver`."""
    driver = sqlite_driver()
    # The same connection as from_conn_string makes, from a driver that has
    # load_extension (sqlite-vec is a loadable extension).
    conn = driver.connect(path, check_same_thread=False, isolation_level=None)
    stack.callback(conn.close)
    store = sqlite_store_class()(conn, index=sqlite_index(embedding, dim))
    store.setup()
    return store


def sqlite_index(embedding: Embeddings, dim: int) -> dict[str, Any]:
    # `text_fields` is what SqliteStore 3.x reads; `fields` is LangGraph's name.
    return {"embed": embedding, "dims": dim, "fields": FIELDS, "text_fields": FIELDS}


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary(times: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": pct(times, 50) * 1000,
        "p99_ms": pct(times, 99) * 1000,
        "mean_ms": statistics.fmean(times) * 1000,
        "n": len(times),
    }


def interleaved(
    calls: dict[str, Callable[[int], Any]], count: int, block: int = 20
) -> dict[str, tuple[list[float], list[Any]]]:
    """Time each store's call on inputs 0..count-1: per store, times and results.

    The inputs run in blocks; each store runs a whole block in turn and the
    order rotates per block, so slow drifts in load spread over the stores.
    """
    names = list(calls)
    out: dict[str, tuple[list[float], list[Any]]] = {
        name: ([0.0] * count, [None] * count) for name in names
    }
    for number, begin in enumerate(range(0, count, block)):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            times, results = out[name]
            call = calls[name]
            for i in range(begin, min(begin + block, count)):
                start = time.perf_counter()
                results[i] = call(i)
                times[i] = time.perf_counter() - start
    return out


def dir_size(path: Path) -> int:
    if path.is_file():
        return sum(
            p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file()
        )
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------ fresh process


def worker(spec_path: str, out_path: str) -> None:
    """In a fresh process: open one durable store and do one search."""
    spec = json.loads(Path(spec_path).read_text())
    embedding = LookupEmbeddings(None, np.load(spec["queries"]))
    namespace = tuple(spec["namespace"])
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if spec["store"] == OURS:
            memory = stack.enter_context(PersistentMemory(spec["path"], embedding))
            store: Any = PersistentMemoryStore(memory, index={"fields": FIELDS})
        else:
            store = open_sqlite_store(stack, spec["path"], embedding, spec["dim"])
        opened = time.perf_counter()
        found = store.search(namespace, query=spec["query"], limit=LIMIT)
        searched = time.perf_counter()
        big = tuple(spec["big"])
        again = store.search(big, query=spec["query2"], limit=LIMIT)
        second = time.perf_counter() - searched
    result = {
        "open_s": opened - start,
        "first_search_s": searched - opened,
        "open_and_first_s": searched - start,
        "second_search_s": second,
        "found": [item.key for item in found],
        "found2": len(again),
    }
    Path(out_path).write_text(json.dumps(result))


def reopen(spec: dict[str, Any], work: Path, repeat: int) -> dict[str, Any]:
    """Run `worker` on `spec` in `repeat` fresh processes; medians."""
    spec_path, out_path = work / "spec.json", work / "worker-out.json"
    spec_path.write_text(json.dumps(spec))
    runs = []
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
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
        run["process_s"] = time.perf_counter() - began
        runs.append(run)
    keys = ("open_s", "first_search_s", "open_and_first_s", "second_search_s")
    result: dict[str, Any] = {
        key: statistics.median(run[key] for run in runs) for key in (*keys, "process_s")
    }
    result["found"] = runs[0]["found"]
    result["runs"] = runs
    return result


# --------------------------------------------------------------- one size


@dataclass
class Stores:
    names: list[str]
    stores: dict[str, Any]
    paths: dict[str, Path]
    stack: contextlib.ExitStack


def open_stores(
    args: argparse.Namespace, folder: Path, embedding: Embeddings, sqlite_cls: Any
) -> Stores:
    stack = contextlib.ExitStack()
    paths = {OURS: folder / "ours"}
    memory = stack.enter_context(PersistentMemory(paths[OURS], embedding))
    stores: dict[str, Any] = {
        OURS: PersistentMemoryStore(memory, index={"fields": FIELDS}),
        MEMORY: InMemoryStore(
            index={"embed": embedding, "dims": args.dim, "fields": FIELDS}
        ),
    }
    if sqlite_cls is not None:
        paths[SQLITE] = folder / "langgraph.sqlite"
        stores[SQLITE] = open_sqlite_store(
            stack, str(paths[SQLITE]), embedding, args.dim
        )
    return Stores(list(stores), stores, paths, stack)


def run_size(
    args: argparse.Namespace, n: int, folder: Path, sqlite_cls: Any
) -> dict[str, Any]:
    log(f"N={n:,}: making data")
    data = make_data(args, n)
    embedding = LookupEmbeddings(data.vectors, data.queries)
    rng = np.random.default_rng(args.seed + n)
    folder.mkdir()
    opened = open_stores(args, folder, embedding, sqlite_cls)
    stores, names = opened.stores, opened.names
    figures: dict[str, dict[str, Any]] = {name: {} for name in names}
    checks: dict[str, Any] = {}

    # The embedding's own cost, for scale: one batch of texts, one query.
    texts = [data.values[i]["content"] for i in range(args.batch)]
    started = time.perf_counter()
    for _ in range(20):
        embedding.embed_documents(texts)
    embed_batch = (time.perf_counter() - started) / 20
    started = time.perf_counter()
    for j in range(200):
        embedding.embed_query(f"query {j % len(data.queries)}")
    embed_query = (time.perf_counter() - started) / 200
    checks["embed_documents_batch_ms"] = embed_batch * 1000
    checks["embed_query_ms"] = embed_query * 1000

    # 1a. batched puts ---------------------------------------------------
    batches = [
        [
            PutOp(data.namespaces[i], data.keys[i], data.values[i])
            for i in range(lo, min(lo + args.batch, data.base))
        ]
        for lo in range(0, data.base, args.batch)
    ]
    log(f"N={n:,}: {data.base:,} items in {len(batches)} batches of {args.batch}")
    timed = interleaved(
        {name: (lambda i, s=stores[name]: s.batch(batches[i])) for name in names},
        len(batches),
        block=10,
    )
    for name in names:
        times = timed[name][0]
        figures[name]["batch_put_items_per_s"] = data.base / sum(times)
        figures[name]["batch_put"] = summary(times)

    # 2. get ---------------------------------------------------------------
    gc.collect()
    picks = rng.integers(data.base, size=args.gets)
    log(f"N={n:,}: {args.gets} gets")
    timed = interleaved(
        {
            name: (
                lambda i, s=stores[name]: s.get(
                    data.namespaces[picks[i]], data.keys[picks[i]]
                )
            )
            for name in names
        },
        args.gets,
    )
    for name in names:
        figures[name]["get"] = summary(timed[name][0])
        missing = sum(item is None for item in timed[name][1])
        if missing:
            msg = f"{name}: {missing} gets found nothing"
            raise RuntimeError(msg)

    # 3. semantic search ---------------------------------------------------
    plans = {
        "search_user": (
            [
                ("memories", f"u{u}")
                for u in rng.integers(args.users, size=args.queries)
            ],
            0,
        ),
        "search_big": (
            [("memories", BIG)] * args.big_queries,
            args.warmup + args.queries,
        ),
    }
    for metric, (namespaces, warm_first) in plans.items():
        gc.collect()
        log(f"N={n:,}: {metric} x{len(namespaces)}")
        warm = namespaces[: args.warmup]
        for name in names:  # warm-up, untimed
            for i, ns in enumerate(warm):
                stores[name].search(ns, query=f"query {warm_first + i}", limit=LIMIT)
        first = warm_first + args.warmup
        timed = interleaved(
            {
                name: (
                    lambda i, s=stores[name], nss=namespaces, f=first: [
                        item.key
                        for item in s.search(
                            nss[i], query=f"query {f + i}", limit=LIMIT
                        )
                    ]
                )
                for name in names
            },
            len(namespaces),
        )
        reference = timed[MEMORY][1]
        for name in names:
            figures[name][metric] = summary(timed[name][0])
            same = sum(a == b for a, b in zip(timed[name][1], reference, strict=True))
            checks[f"{metric}_same_top{LIMIT}_as_{MEMORY}_{name}"] = same / len(
                reference
            )
            short = sum(
                len(a) != len(b) for a, b in zip(timed[name][1], reference, strict=True)
            )
            if short:
                msg = f"{name}: {short} searches returned another count than {MEMORY}"
                raise RuntimeError(msg)

    # 4. filtered listing, no query --------------------------------------
    topics = [f"t{t}" for t in rng.integers(TOPICS, size=args.filters)]
    users = [("memories", f"u{u}") for u in rng.integers(args.users, size=args.filters)]
    for metric, namespaces in (
        ("filter_user", users),
        ("filter_big", [("memories", BIG)] * args.filters),
    ):
        gc.collect()
        log(f"N={n:,}: {metric} x{len(namespaces)}")
        timed = interleaved(
            {
                name: (
                    lambda i, s=stores[name], nss=namespaces: sorted(
                        item.key
                        for item in s.search(
                            nss[i], filter={"topic": topics[i]}, limit=LIMIT
                        )
                    )
                )
                for name in names
            },
            len(namespaces),
        )
        reference = timed[MEMORY][1]
        for name in names:
            figures[name][metric] = summary(timed[name][0])
            # Under `limit` matches every store returns them all (the same
            # set); over it, which 10 is each store's order (newest first or
            # insertion order), so only the count is compared.
            same = sum(
                a == b if len(b) < LIMIT else len(a) == len(b)
                for a, b in zip(timed[name][1], reference, strict=True)
            )
            checks[f"{metric}_agrees_with_{MEMORY}_{name}"] = same / len(reference)

    # 5. list_namespaces -------------------------------------------------
    gc.collect()
    log(f"N={n:,}: list_namespaces x{args.lists}")
    timed = interleaved(
        {
            name: (
                lambda _i, s=stores[name]: s.list_namespaces(
                    prefix=("memories",), limit=1000
                )
            )
            for name in names
        },
        args.lists,
    )
    for name in names:
        figures[name]["list_namespaces"] = summary(timed[name][0])
        checks[f"list_namespaces_count_{name}"] = len(timed[name][1][0])

    # 1b. single puts ------------------------------------------------------
    gc.collect()
    log(f"N={n:,}: {data.single} single puts")
    lo = data.base
    timed = interleaved(
        {
            name: (
                lambda i, s=stores[name]: s.put(
                    data.namespaces[lo + i], data.keys[lo + i], data.values[lo + i]
                )
            )
            for name in names
        },
        data.single,
    )
    for name in names:
        times = timed[name][0]
        figures[name]["single_put_items_per_s"] = len(times) / sum(times)
        figures[name]["single_put"] = summary(times)

    # 6. close, reopen in a fresh process, first search -------------------
    log(f"N={n:,}: closing the stores")
    close_started = time.perf_counter()
    opened.stack.close()
    checks["close_s"] = time.perf_counter() - close_started
    del stores, opened
    gc.collect()
    queries_file = folder / "queries.npy"
    np.save(queries_file, data.queries)
    first = args.queries + args.big_queries + 2 * args.warmup
    for name, path in (
        (OURS, folder / "ours"),
        (SQLITE, folder / "langgraph.sqlite"),
    ):
        if name not in names:
            continue
        figures[name]["disk_mib"] = dir_size(path) / 2**20
        files = path.iterdir() if path.is_dir() else path.parent.glob(path.name + "*")
        figures[name]["files_mib"] = {
            p.name: p.stat().st_size / 2**20 for p in files if p.is_file()
        }
        log(f"N={n:,}: {name}: reopen in a fresh process x{args.reopen}")
        spec = {
            "store": name,
            "path": str(path),
            "dim": args.dim,
            "queries": str(queries_file),
            "namespace": ["memories", "u0"],
            "big": ["memories", BIG],
            "query": f"query {first}",
            "query2": f"query {first + 1}",
        }
        figures[name]["reopen"] = reopen(spec, folder, args.reopen)
    if OURS in names and SQLITE in names:
        checks["reopen_same_top10"] = (
            figures[OURS]["reopen"]["found"] == figures[SQLITE]["reopen"]["found"]
        )
    return {
        "n": n,
        "items": data.base + data.single,
        "stores": figures,
        "checks": checks,
    }


# ------------------------------------------------------------------ report

# (label, how to read the figure, which way is better)
ROWS: list[tuple[str, Callable[[dict[str, Any]], float | None], str, str]] = [
    (
        "batch put (100/op), items/s",
        lambda f: f["batch_put_items_per_s"],
        "rate",
        "higher",
    ),
    ("single put, items/s", lambda f: f["single_put_items_per_s"], "rate", "higher"),
    ("single put p50", lambda f: f["single_put"]["p50_ms"], "ms", "lower"),
    ("get p50", lambda f: f["get"]["p50_ms"], "ms", "lower"),
    ("get p99", lambda f: f["get"]["p99_ms"], "ms", "lower"),
    (
        "search user, query, k=10 p50",
        lambda f: f["search_user"]["p50_ms"],
        "ms",
        "lower",
    ),
    (
        "search user, query, k=10 p99",
        lambda f: f["search_user"]["p99_ms"],
        "ms",
        "lower",
    ),
    ("search big user, query p50", lambda f: f["search_big"]["p50_ms"], "ms", "lower"),
    ("search big user, query p99", lambda f: f["search_big"]["p99_ms"], "ms", "lower"),
    ("filter user, no query p50", lambda f: f["filter_user"]["p50_ms"], "ms", "lower"),
    (
        "filter big user, no query p50",
        lambda f: f["filter_big"]["p50_ms"],
        "ms",
        "lower",
    ),
    ("list_namespaces p50", lambda f: f["list_namespaces"]["p50_ms"], "ms", "lower"),
    (
        "reopen + first search (new proc)",
        lambda f: f["reopen"]["open_and_first_s"] * 1000 if "reopen" in f else None,
        "ms",
        "lower",
    ),
    ("on disk, MiB", lambda f: f.get("disk_mib"), "mib", "lower"),
]


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "rate":
        return f"{value:,.0f}"
    if unit == "mib":
        return f"{value:.1f}"
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"


def ratio(ours: float | None, base: float | None) -> float | None:
    if ours is None or base is None or base == 0:
        return None
    return ours / base


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"


def report(result: dict[str, Any]) -> list[dict[str, Any]]:
    figures = result["stores"]
    names = list(figures)
    baselines = [name for name in names if name != OURS]
    header = ["metric", *names, *(f"ours/{b}" for b in baselines), "better"]
    cells = [header]
    rows = []
    for label, get, unit, better in ROWS:
        values = {name: get(figures[name]) for name in names}
        ratios = {b: ratio(values[OURS], values[b]) for b in baselines}
        rows.append(
            {
                "metric": label,
                "unit": unit,
                "better": better,
                **values,
                "ratios": ratios,
            }
        )
        cells.append(
            [
                label,
                *(fmt(values[name], unit) for name in names),
                *(fmt_ratio(ratios[b]) for b in baselines),
                better,
            ]
        )
    widths = [max(len(line[col]) for line in cells) for col in range(len(header))]

    def line(values: list[str]) -> str:
        return (
            "| "
            + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))
            + " |"
        )

    print(f"## N = {result['n']:,} ({result['items']:,} items in the end)")
    print()
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for values in cells[1:]:
        print(line(values))
    print()
    checks = result["checks"]
    print(
        f"- embedding look-up cost: {checks['embed_documents_batch_ms']:.2f} ms per "
        f"batch of 100 texts, {checks['embed_query_ms'] * 1000:.0f} us per query"
    )
    parts = []
    for metric in ("search_user", "search_big", "filter_user", "filter_big"):
        found = [
            f"{name} {value:.0%}"
            for key, value in checks.items()
            if key.startswith(metric + "_")
            and (name := key.rsplit("_", 1)[-1]) != MEMORY
        ]
        parts.append(f"{metric}: {', '.join(found)}")
    print(f"- same results as {MEMORY} (share of calls): {'; '.join(parts)}")
    if "reopen_same_top10" in checks:
        print(
            "- the fresh-process first search gave the same top 10 in ours and "
            f"{SQLITE}: {'yes' if checks['reopen_same_top10'] else '**NO**'}"
        )
    counts = ", ".join(
        f"{k.rsplit('_', 1)[-1]} {v}"
        for k, v in checks.items()
        if k.startswith("list_namespaces")
    )
    print(f"- list_namespaces found: {counts}")
    for name in names:
        if "reopen" in figures[name]:
            r = figures[name]["reopen"]
            print(
                f"- reopen, {name}: open {r['open_s'] * 1000:.1f} ms + first search "
                f"{r['first_search_s'] * 1000:.1f} ms, then a big-user search "
                f"{r['second_search_s'] * 1000:.1f} ms; whole process "
                f"{r['process_s']:.2f} s with interpreter start and imports"
            )
    for name in names:
        files = figures[name].get("files_mib")
        if files:
            listed = ", ".join(f"{k} {v:.1f}" for k, v in sorted(files.items()))
            print(f"- on disk, {name} (MiB): {listed}")
    print(
        f"- close of all stores (ours writes a final checkpoint): {checks['close_s']:.2f} s"
    )
    print()
    return rows


# -------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000, 10_000], help="N per run"
    )
    parser.add_argument("--users", type=int, default=100, help="regular users")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension")
    parser.add_argument("--clusters", type=int, default=50, help="vector clusters")
    parser.add_argument("--batch", type=int, default=100, help="PutOps per batch()")
    parser.add_argument("--single-puts", type=int, default=200, help="store.put calls")
    parser.add_argument("--gets", type=int, default=500, help="store.get calls")
    parser.add_argument("--queries", type=int, default=200, help="user searches")
    parser.add_argument(
        "--big-queries", type=int, default=100, help="big-user searches"
    )
    parser.add_argument("--filters", type=int, default=200, help="filtered listings")
    parser.add_argument("--lists", type=int, default=100, help="list_namespaces calls")
    parser.add_argument("--warmup", type=int, default=10, help="untimed searches")
    parser.add_argument("--reopen", type=int, default=3, help="fresh-process opens")
    parser.add_argument("--seed", type=int, default=0, help="numpy RNG seed")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SqliteStore")
    parser.add_argument("--dir", default=None, help="make the temporary dir under DIR")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.sizes) < 2 or args.users < 1 or args.batch < 1:
        parser.error("--sizes must be >= 2, --users and --batch >= 1")
    if min(args.single_puts, args.gets, args.queries, args.big_queries) < 1:
        parser.error("the counts must be >= 1")
    if min(args.filters, args.lists, args.reopen) < 1:
        parser.error("the counts must be >= 1")
    return args


def command_line(args: argparse.Namespace) -> str:
    parts = [
        ".venv/bin/python benchmarks/bench_store.py",
        "--sizes " + " ".join(str(n) for n in args.sizes),
        f"--users {args.users} --dim {args.dim} --batch {args.batch}",
        f"--single-puts {args.single_puts} --gets {args.gets}",
        f"--queries {args.queries} --big-queries {args.big_queries}",
        f"--filters {args.filters} --lists {args.lists} --reopen {args.reopen}",
        f"--seed {args.seed}",
    ]
    if args.no_sqlite:
        parts.append("--no-sqlite")
    if args.out:
        parts.append(f"--out {args.out}")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, args.worker_out)
        return
    started = time.perf_counter()
    sqlite_cls = None if args.no_sqlite else sqlite_store_class()
    driver = None if sqlite_cls is None else sqlite_driver()
    if args.no_sqlite:
        sqlite_note = "skipped (--no-sqlite)"
    elif sqlite_cls is None:
        sqlite_note = (
            "NOT MEASURED: langgraph-checkpoint-sqlite (or sqlite-vec, for its "
            "vector search) is not installed: pip install "
            "langgraph-checkpoint-sqlite sqlite-vec"
        )
    elif driver is None:
        sqlite_cls = None
        sqlite_note = (
            "NOT MEASURED: this Python's sqlite3 cannot load extensions, so "
            "SqliteStore has no vector search (sqlite-vec); pip install "
            "pysqlite3-binary to measure it on pysqlite3's SQLite"
        )
    else:
        sqlite_note = (
            f"langgraph-checkpoint-sqlite {_version('langgraph-checkpoint-sqlite')}, "
            f"sqlite-vec {_version('sqlite-vec')}, on {driver.__name__} "
            f"(SQLite {driver.sqlite_version})"
        )
    print(f"# PersistentMemoryStore vs LangGraph's stores, dim={args.dim}, k={LIMIT}")
    print()
    print(
        f"- machine: {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"- versions: langgraph {_version('langgraph')}, "
        f"langchain-core {_version('langchain-core')}, numpy {np.__version__}, "
        f"langchain-persistent-memory {_version('langchain-persistent-memory')}"
    )
    print(f"- SqliteStore: {sqlite_note}")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"- load average at start: {load} (other processes skew timings)")
    print(f"- reproduce: `{command_line(args)}`")
    print(
        f"- data: N items over {args.users} users + a big user with N/2, "
        f"batches of {args.batch}; ratios are ours / baseline"
    )
    print()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as tmp:
        for n in args.sizes:
            result = run_size(args, n, Path(tmp) / f"n{n}", sqlite_cls)
            result["table"] = report(result)
            for figures in result["stores"].values():
                for run in figures.get("reopen", {}).get("runs", []):
                    run.pop("found", None)
            results.append(result)
    seconds = time.perf_counter() - started
    print(f"Total run time: {seconds:.0f} s")
    log(f"done in {seconds:.0f} s")
    if args.out:
        out = {
            "command": command_line(args),
            "machine": {
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
            },
            "versions": {
                package: _version(package)
                for package in (
                    "langgraph",
                    "langchain-core",
                    "langgraph-checkpoint-sqlite",
                    "sqlite-vec",
                    "langchain-persistent-memory",
                    "numpy",
                )
            },
            "sqlite_store": sqlite_note,
            "baselines": [MEMORY, *([SQLITE] if sqlite_cls else [])],
            "seconds": seconds,
            "sizes": results,
        }
        Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
