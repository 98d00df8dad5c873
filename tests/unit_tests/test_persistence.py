"""Durability: reopen, recover from bad checkpoints, checkpoint in the background."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from typing import TYPE_CHECKING
from unittest import mock

import numpy as np
import pytest

from langchain_persistent_memory import PersistentFAISS
from langchain_persistent_memory._index import checkpoint_stamp
from tests.unit_tests.conftest import run_python

if TYPE_CHECKING:
    from pathlib import Path

    from langchain_core.embeddings import Embeddings

TEXTS = [f"memory number {i}: the user likes topic {i % 7}" for i in range(300)]


def fill(store: PersistentFAISS) -> list[str]:
    metadatas = [{"user_id": f"u{i % 5}", "n": i} for i in range(len(TEXTS))]
    ids = [f"id-{i}" for i in range(len(TEXTS))]
    return store.add_texts(TEXTS, metadatas, ids=ids)


def top_ids(store: PersistentFAISS, query: str, k: int = 5, **kwargs: object) -> list:
    return [doc.id for doc in store.similarity_search(query, k=k, **kwargs)]


def test_reopen_in_new_process_finds_everything(
    store_path: Path, embedding: Embeddings
) -> None:
    with PersistentFAISS(store_path, embedding) as store:
        fill(store)
        store.delete(["id-3"])
        expected = {q: top_ids(store, q) for q in TEXTS[:20]}
    code = """
        import json, sys
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_persistent_memory import PersistentFAISS
        store = PersistentFAISS(sys.argv[1], DeterministicFakeEmbedding(size=16))
        queries = json.loads(sys.argv[2])
        out = {q: [d.id for d in store.similarity_search(q, k=5)] for q in queries}
        out["__get__"] = [d.page_content for d in store.get_by_ids(["id-0", "id-3"])]
        print(json.dumps(out))
    """
    out = json.loads(run_python(code, str(store_path), json.dumps(TEXTS[:20])))
    assert out.pop("__get__") == [TEXTS[0]]
    assert out == expected
    for query, ids in out.items():
        if query != TEXTS[3]:
            assert ids[0] == f"id-{TEXTS.index(query)}"


def test_unclosed_writer_loses_nothing(store_path: Path) -> None:
    """A process that never closes (no final checkpoint) still loses nothing."""
    code = """
        import os, sys
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_persistent_memory import PersistentFAISS
        store = PersistentFAISS(sys.argv[1], DeterministicFakeEmbedding(size=16),
                                checkpoint_every=10**9, checkpoint_interval=3600)
        store.add_texts([f"text {i}" for i in range(50)], ids=[str(i) for i in range(50)])
        os._exit(0)  # no close(), no atexit: like a crash right after the writes
    """
    run_python(code, str(store_path))
    assert not (store_path / "index.faiss").exists()
    store = PersistentFAISS(store_path, _fake())
    try:
        assert len(store.get_by_ids([str(i) for i in range(50)])) == 50
        assert top_ids(store, "text 17", k=1) == ["17"]
    finally:
        store.close()


def _fake() -> Embeddings:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    return DeterministicFakeEmbedding(size=16)


def _reference(store_path: Path, embedding: Embeddings) -> dict[str, list]:
    with PersistentFAISS(store_path, embedding) as store:
        fill(store)
        return {q: top_ids(store, q) for q in TEXTS[::15]}


def _assert_rebuilt(
    store_path: Path,
    embedding: Embeddings,
    expected: dict,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING),
        PersistentFAISS(store_path, embedding) as store,
    ):
        assert {q: top_ids(store, q) for q in expected} == expected
    assert any("Rebuilding" in r.getMessage() for r in caplog.records)
    caplog.clear()
    # The rebuilt index was checkpointed again on close and now opens cleanly.
    with (
        caplog.at_level(logging.WARNING),
        PersistentFAISS(store_path, embedding) as store,
    ):
        assert {q: top_ids(store, q) for q in expected} == expected
    assert not any("Rebuilding" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("cut", [0, 1, 100, 0.5, -1, -20])
def test_truncated_index_is_rebuilt(
    store_path: Path,
    embedding: Embeddings,
    caplog: pytest.LogCaptureFixture,
    cut: float,
) -> None:
    expected = _reference(store_path, embedding)
    index = store_path / "index.faiss"
    size = index.stat().st_size
    keep = (
        int(size * cut) if isinstance(cut, float) else (cut if cut >= 0 else size + cut)
    )
    with index.open("r+b") as handle:
        handle.truncate(keep)
    _assert_rebuilt(store_path, embedding, expected, caplog)


def test_flipped_byte_in_vectors_is_detected(
    store_path: Path, embedding: Embeddings, caplog: pytest.LogCaptureFixture
) -> None:
    expected = _reference(store_path, embedding)
    index = store_path / "index.faiss"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    _assert_rebuilt(store_path, embedding, expected, caplog)


def test_garbage_and_foreign_index_files_are_rebuilt(
    tmp_path: Path,
    store_path: Path,
    embedding: Embeddings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected = _reference(store_path, embedding)
    (store_path / "index.faiss").write_bytes(os.urandom(5000))
    _assert_rebuilt(store_path, embedding, expected, caplog)

    other = tmp_path / "other"
    with PersistentFAISS(other, embedding) as store:
        store.add_texts(TEXTS[:10])
    shutil.copy(other / "index.faiss", store_path / "index.faiss")
    _assert_rebuilt(store_path, embedding, expected, caplog)


def test_stale_checkpoint_is_replayed(store_path: Path, embedding: Embeddings) -> None:
    """Changes after the checkpoint's stamp (adds, updates, deletes) are replayed."""
    with PersistentFAISS(store_path, embedding, checkpoint_every=10**9) as store:
        fill(store)
        store.checkpoint()
        stamp = checkpoint_stamp(store_path / "index.faiss")
        saved = (store_path / "index.faiss").read_bytes()
        store.delete(["id-1", "id-2"])
        store.add_texts(["a brand new memory"], ids=["new"])
        store.add_texts(["memory number 5 rewritten"], ids=["id-5"])
        expected = {q: top_ids(store, q) for q in [*TEXTS[:8], "a brand new memory"]}
    # Put the old checkpoint back: the store must replay the three changes.
    (store_path / "index.faiss").write_bytes(saved)
    assert checkpoint_stamp(store_path / "index.faiss") == stamp
    with PersistentFAISS(store_path, embedding) as store:
        got = {q: top_ids(store, q) for q in expected}
        assert got == expected
        assert store.get_by_ids(["id-1", "id-2"]) == []
        assert top_ids(store, "a brand new memory", k=1) == ["new"]
        assert "id-5" not in top_ids(store, TEXTS[5], k=1)


def test_checkpoint_from_before_pruned_tombstones_is_rebuilt(
    store_path: Path, embedding: Embeddings, caplog: pytest.LogCaptureFixture
) -> None:
    with PersistentFAISS(store_path, embedding, checkpoint_every=10**9) as store:
        fill(store)
        store.checkpoint()
        old = (store_path / "index.faiss").read_bytes()
        store.delete(["id-7"])
        store.checkpoint()  # prunes the tombstone of id-7
    (store_path / "index.faiss").write_bytes(old)  # still contains id-7
    with (
        caplog.at_level(logging.WARNING),
        PersistentFAISS(store_path, embedding) as store,
    ):
        assert "id-7" not in top_ids(store, TEXTS[7], k=3)
        assert len(store.similarity_search(TEXTS[7], k=1000)) == len(TEXTS) - 1
    assert any("Rebuilding" in r.getMessage() for r in caplog.records)


def test_failed_replace_keeps_old_checkpoint(
    store_path: Path, embedding: Embeddings
) -> None:
    with PersistentFAISS(store_path, embedding, checkpoint_every=10**9) as store:
        fill(store)
        store.checkpoint()
        before = (store_path / "index.faiss").read_bytes()
        store.add_texts(["after the checkpoint"], ids=["late"])
        with (
            mock.patch("os.replace", side_effect=OSError("disk full")),
            pytest.raises(OSError, match="disk full"),
        ):
            store.checkpoint()
        assert (store_path / "index.faiss").read_bytes() == before
        assert not [p for p in store_path.iterdir() if p.name.endswith(".tmp")]
        assert top_ids(store, "after the checkpoint", k=1) == ["late"]
        stamp = checkpoint_stamp(store_path / "index.faiss")
    # The failed checkpoint's changes stayed pending, so close() saved them.
    after = checkpoint_stamp(store_path / "index.faiss")
    assert stamp is not None
    assert after is not None
    assert after > stamp
    with PersistentFAISS(store_path, embedding) as store:
        assert top_ids(store, "after the checkpoint", k=1) == ["late"]


def test_add_does_not_rewrite_the_index(
    store_path: Path, embedding: Embeddings
) -> None:
    with PersistentFAISS(store_path, embedding, checkpoint_every=10**9) as store:
        fill(store)
        store.checkpoint()
        index = store_path / "index.faiss"
        before = (index.stat().st_mtime_ns, index.read_bytes())
        for i in range(20):
            store.add_texts([f"one more {i}"])
        assert (index.stat().st_mtime_ns, index.read_bytes()) == before
        assert len(store.similarity_search("x", k=1000)) == len(TEXTS) + 20


def test_background_checkpoint_after_n_changes(
    store_path: Path, embedding: Embeddings
) -> None:
    with PersistentFAISS(store_path, embedding, checkpoint_every=50) as store:
        store.add_texts(TEXTS[:60])
        deadline = time.monotonic() + 20
        while checkpoint_stamp(store_path / "index.faiss") is None:
            assert time.monotonic() < deadline, "no background checkpoint was written"
            time.sleep(0.02)


def test_background_checkpoint_after_interval(
    store_path: Path, embedding: Embeddings
) -> None:
    with PersistentFAISS(
        store_path, embedding, checkpoint_every=10**9, checkpoint_interval=0.2
    ) as store:
        store.add_texts(TEXTS[:3])
        deadline = time.monotonic() + 20
        while checkpoint_stamp(store_path / "index.faiss") is None:
            assert time.monotonic() < deadline, "no timed checkpoint was written"
            time.sleep(0.02)


def test_close_is_idempotent_and_final(store_path: Path, embedding: Embeddings) -> None:
    store = PersistentFAISS(store_path, embedding, checkpoint_every=10**9)
    store.add_texts(TEXTS[:5])
    store.close()
    store.close()
    assert checkpoint_stamp(store_path / "index.faiss") is not None
    with pytest.raises(ValueError, match="closed"):
        store.similarity_search("x")


def test_files_are_owner_only(store_path: Path, embedding: Embeddings) -> None:
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(TEXTS[:5])
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o700
    for name in ("memory.db", "index.faiss"):
        assert stat.S_IMODE((store_path / name).stat().st_mode) == 0o600


def test_checkpoint_is_a_plain_faiss_file(
    store_path: Path, embedding: Embeddings
) -> None:
    import faiss

    with PersistentFAISS(store_path, embedding) as store:
        ids = fill(store)
    index = faiss.read_index(str(store_path / "index.faiss"))
    assert index.ntotal == len(ids)
    assert index.d == 16
    labels = faiss.vector_to_array(index.id_map)
    assert len(np.unique(labels)) == len(ids)


def test_repeated_id_in_delete_removes_only_that_document(
    store_path: Path, embedding: Embeddings
) -> None:
    texts = [f"row {i}" for i in range(700)]
    ids = [f"r{i}" for i in range(700)]
    with PersistentFAISS(store_path, embedding) as store:
        store.add_texts(texts, ids=ids)
        store.similarity_search("x", k=1)  # build the in-memory index first
        # The same id twice, far enough apart to land in different SQL chunks.
        doomed = [ids[0], *ids[1:550], ids[0]]
        store.delete(doomed)
        left = ids[550:]
        assert sorted(d.id for d in store.similarity_search("x", k=1000)) == sorted(
            left
        )
        for i in range(550, 700, 10):
            assert top_ids(store, texts[i], k=1) == [ids[i]]


def test_damaged_trailer_is_detected(
    store_path: Path, embedding: Embeddings, caplog: pytest.LogCaptureFixture
) -> None:
    with PersistentFAISS(store_path, embedding, checkpoint_every=10**9) as store:
        fill(store)
        store.checkpoint()
        saved = bytearray((store_path / "index.faiss").read_bytes())
        store.add_texts(["rewritten zero"], ids=["id-0"])  # after the stamp
        expected = {
            q: top_ids(store, q) for q in [TEXTS[0], "rewritten zero", TEXTS[9]]
        }
    # Bump the stamp in the trailer by one: without a checksum over the
    # trailer, the upsert above would never be replayed.
    stamp = checkpoint_stamp(store_path / "index.faiss")
    assert stamp is not None
    old_stamp = stamp - 1
    position = saved.rindex(old_stamp.to_bytes(8, "little", signed=True))
    saved[position : position + 8] = stamp.to_bytes(8, "little", signed=True)
    (store_path / "index.faiss").write_bytes(bytes(saved))
    with (
        caplog.at_level(logging.WARNING),
        PersistentFAISS(store_path, embedding) as store,
    ):
        assert {q: top_ids(store, q) for q in expected} == expected
    assert any("checksum" in r.getMessage() for r in caplog.records)


def test_interrupted_replay_leaves_no_half_index(
    store_path: Path, embedding: Embeddings
) -> None:
    from langchain_persistent_memory import _index

    with PersistentFAISS(store_path, embedding, checkpoint_every=10**9) as writer:
        fill(writer)
    reader = PersistentFAISS(store_path, embedding)
    try:
        with PersistentFAISS(store_path, embedding) as writer:
            writer.add_texts([f"late {i}" for i in range(20_000)])
        # No checkpoint to reload: the reader must replay all rows, in batches.
        (store_path / "index.faiss").unlink()
        real_add = _index.FlatIndex.add
        calls = {"n": 0}

        def add_then_fail(self: _index.FlatIndex, labels, vectors) -> None:  # type: ignore[no-untyped-def]
            calls["n"] += 1
            real_add(self, labels, vectors)
            if calls["n"] == 2:
                raise KeyboardInterrupt

        with (
            mock.patch.object(_index.FlatIndex, "add", add_then_fail),
            pytest.raises(KeyboardInterrupt),
        ):
            reader.similarity_search("late 5", k=3)
        hits = reader.similarity_search("x", k=100_000)
        assert len(hits) == len(TEXTS) + 20_000
        assert len({d.id for d in hits}) == len(hits)
    finally:
        reader.close()


def test_older_checkpoint_never_replaces_a_newer_one(
    store_path: Path, embedding: Embeddings
) -> None:
    with (
        PersistentFAISS(store_path, embedding, checkpoint_every=10**9) as old,
        PersistentFAISS(store_path, embedding, checkpoint_every=10**9) as new,
    ):
        fill(old)
        old.similarity_search("x", k=1)  # old's index is at this stamp
        new.add_texts(["newer"], ids=["newer"])
        new.checkpoint()
        newest = checkpoint_stamp(store_path / "index.faiss")
        with mock.patch.object(old, "_catch_up", return_value=0):
            old._checkpointer.note(1)
            old.checkpoint()  # would write its older index
        assert checkpoint_stamp(store_path / "index.faiss") == newest


def test_checkpoints_left_by_dead_writers_are_removed_on_open(
    store_path: Path, embedding: Embeddings
) -> None:
    import subprocess
    import sys

    with PersistentFAISS(store_path, embedding) as store:
        fill(store)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    stale = store_path / f".index.faiss.{dead_pid}.0123abcd.tmp"
    stale.write_bytes(b"x" * 1000)
    live = store_path / f".index.faiss.{os.getppid()}.4567ef.tmp"  # a live process
    live.write_bytes(b"y")
    other = store_path / "notes.tmp"
    other.write_bytes(b"z")
    with PersistentFAISS(store_path, embedding) as store:
        assert top_ids(store, TEXTS[3], k=1) == ["id-3"]
    assert not stale.exists()
    assert live.exists()
    assert other.exists()


def test_a_checkpoint_published_meanwhile_by_another_writer_is_kept(
    store_path: Path, embedding: Embeddings, caplog: pytest.LogCaptureFixture
) -> None:
    """Two writers checkpoint at once; the older one must not win the rename."""
    from langchain_persistent_memory import vectorstores

    first = PersistentFAISS(store_path, embedding, checkpoint_every=10**9)
    second = PersistentFAISS(store_path, embedding, checkpoint_every=10**9)
    first.add_texts(TEXTS[:50], ids=[f"id-{i}" for i in range(50)])
    real = vectorstores.write_checkpoint

    def other_writer_meanwhile(*args: object, **kwargs: object) -> Path:
        if not second.get_by_ids(["late"]):  # only in the first writer's call
            # After the first writer checked the stamp on disk and before its
            # rename, the second writes more and publishes a newer checkpoint.
            second.add_texts(["written meanwhile"], ids=["late"])
            second.checkpoint()
        return real(*args, **kwargs)  # type: ignore[arg-type,no-any-return]

    with mock.patch.object(vectorstores, "write_checkpoint", other_writer_meanwhile):
        first.checkpoint()
    newer = checkpoint_stamp(store_path / "index.faiss")
    assert newer == second._seq
    assert newer > first._seq
    assert not [p for p in store_path.iterdir() if p.name.endswith(".tmp")]
    first.close()
    second.close()
    with (
        caplog.at_level(logging.WARNING),
        PersistentFAISS(store_path, embedding) as store,
    ):
        assert top_ids(store, "written meanwhile", k=1) == ["late"]
    assert not any("Rebuilding" in r.getMessage() for r in caplog.records)
