"""Crashes: writers killed with SIGKILL, and a disk that fills up mid-checkpoint."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_persistent_memory import PersistentFAISS
from tests import crash_torture
from tests.unit_tests.conftest import run_python

ROOT = Path(__file__).resolve().parents[2]
KILLS = 200


@pytest.mark.slow
def test_writers_killed_at_random_lose_no_acknowledged_write(tmp_path: Path) -> None:
    """The short mode of `python -m tests.crash_torture` (see its docstring)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.crash_torture",
            f"--kills={KILLS}",
            f"--dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    figures = json.loads(result.stdout.splitlines()[-1])
    print(result.stdout)  # noqa: T201 - the figures, with the seed to repeat them
    assert figures["problems"] == [], result.stderr
    assert result.returncode == 0
    assert figures["kills"] >= KILLS
    assert figures["acknowledged_writes_lost"] == 0
    # The run reached the states it is meant to test: writes acknowledged,
    # kills in the middle of a write (both before and after its commit), and
    # reopening from a checkpoint older than the database.
    assert figures["acknowledged_writes"] > KILLS
    assert figures["in_flight_absent"] > 0
    assert figures["in_flight_committed"] > 0
    assert figures["kills_with_stale_checkpoint"] > 0


def _store_with(path: Path, docs: crash_torture.State) -> None:
    with PersistentFAISS(path, crash_torture.embedding()) as store:
        store.add_texts(
            [text for text, _ in docs.values()],
            [meta for _, meta in docs.values()],
            ids=list(docs),
        )


def test_the_checker_reports_a_lost_or_half_written_batch(tmp_path: Path) -> None:
    """The torture's checker is able to fail: it is not a rubber stamp."""
    docs: crash_torture.State = {
        f"doc-{i}": (f"doc {i}", {"owner": f"doc-{i}", "tag": "red", "n": i})
        for i in range(6)
    }
    _store_with(tmp_path / "store", docs)
    rng = random.Random(0)
    assert crash_torture.check(tmp_path / "store", docs, docs, rng)["problems"] == []
    # A write acknowledged to the caller that the store does not have:
    acked = {**docs, "doc-9": ("doc 9", {"owner": "doc-9", "tag": "red", "n": 9})}
    verdict = crash_torture.check(tmp_path / "store", acked, acked, rng)
    assert verdict["lost"] == 1
    assert verdict["problems"]
    # A batch of two in flight, of which the store would hold only one:
    half = dict(docs)
    del half["doc-0"]
    batch = crash_torture.apply(docs, {"op": "delete", "ids": ["doc-0", "doc-1"]})
    _store_with(tmp_path / "half", half)
    verdict = crash_torture.check(tmp_path / "half", docs, batch, rng)
    assert verdict["problems"]


def test_a_side_file_cut_in_the_middle_of_an_op_is_read_as_in_flight(
    tmp_path: Path,
) -> None:
    side = tmp_path / "acked.log"
    side.write_text('B {"op": "checkpoint"}\nA\nB {"op": "delete", "ids": ["x"]}\n')
    acked, pending = crash_torture.read_side_file(side)
    assert acked == [{"op": "checkpoint"}]
    assert pending == {"op": "delete", "ids": ["x"]}


# A real full disk, for this process only: RLIMIT_FSIZE makes writes past
# `limit` bytes of any file fail with EFBIG, as ENOSPC would on a full disk.
DISK_FULL = """
    import json, os, resource, signal, sys
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_persistent_memory import PersistentFAISS
    from langchain_persistent_memory._index import checkpoint_index
    import faiss

    path, where = sys.argv[1], sys.argv[2]
    store = PersistentFAISS(path, DeterministicFakeEmbedding(size=64),
                            checkpoint_every=10**9)
    store.add_texts([f"old {i}" for i in range(100)], ids=[f"o{i}" for i in range(100)])
    store.checkpoint()
    before = open(f"{path}/index.faiss", "rb").read()
    store.add_texts([f"new {i}" for i in range(900)], ids=[f"n{i}" for i in range(900)])
    store.delete(["o5"])
    # What the next checkpoint's FAISS payload will weigh:
    index = store._index
    scratch = f"{path}/../scratch.faiss"
    faiss.write_index(checkpoint_index(index.labels(), index.vectors(), "ip"), scratch)
    payload = os.path.getsize(scratch)
    limit = {"start": 0, "middle": payload // 2, "trailer": payload}[where]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        store.checkpoint()
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    print(json.dumps({
        "error": error,
        "kept": open(f"{path}/index.faiss", "rb").read() == before,
        "files": sorted(os.listdir(path)),
        "top": [d.id for d in store.similarity_search("new 700", k=1)],
        "o5": [d.id for d in store.similarity_search("old 5", k=1)],
    }))
    os._exit(0)  # no close(): the next process opens the old checkpoint
"""


@pytest.mark.parametrize("where", ["start", "middle", "trailer"])
def test_disk_full_while_writing_a_checkpoint_keeps_the_old_one(
    tmp_path: Path, where: str
) -> None:
    path = tmp_path / "store"
    out = json.loads(run_python(DISK_FULL, str(path), where))
    assert out["error"] is not None
    assert "too large" in out["error"].lower() or "write" in out["error"].lower()
    assert out["kept"]  # the old checkpoint is untouched
    assert out["files"] == [
        "index.faiss",
        "memory.db",
        "memory.db-shm",
        "memory.db-wal",
    ]
    assert out["top"] == ["n700"]  # the process goes on answering correctly
    assert out["o5"] != ["o5"]
    # A new process opens the old checkpoint, replays the rest, answers right.
    code = """
        import sys
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_persistent_memory import PersistentFAISS
        with PersistentFAISS(sys.argv[1], DeterministicFakeEmbedding(size=64)) as s:
            print(len(s.similarity_search("x", k=2000)))
            print(s.similarity_search("new 700", k=1)[0].id)
            print(s.similarity_search("old 5", k=1)[0].id)
    """
    count, top, near_o5 = run_python(code, str(path)).split()
    assert (count, top) == ("999", "n700")
    assert near_o5 != "o5"
