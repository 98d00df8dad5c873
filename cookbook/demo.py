"""The main job, offline: store memories, close, reopen in a new process, find them.

Run with `make demo`. It needs no network and no API key: the embedding here is
a tiny bag-of-words hasher so that the demo runs anywhere. Real apps pass any
LangChain `Embeddings` (OpenAI, a local model, ...) instead.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from langchain_persistent_memory import PersistentFAISS

MEMORIES = [
    ("alice", "preference", "Alice prefers short technical explanations."),
    ("alice", "fact", "Alice is building a SaaS AI tool for dentists."),
    ("alice", "decision", "Alice chose PostgreSQL for the billing service."),
    ("bob", "preference", "Bob likes long explanations with many examples."),
    ("bob", "fact", "Bob's cat is called Turing and hates the vacuum cleaner."),
]
QUESTIONS = [
    ("alice", "How should I explain things to this user?"),
    ("alice", "Which database did we pick for billing?"),
    ("bob", "What is the name of the cat?"),
]


class WordHashEmbeddings(Embeddings):
    """Hashes words into 256 buckets: crude, offline, deterministic."""

    def _embed(self, text: str) -> list[float]:
        vector = np.zeros(256, dtype=np.float32)
        for word in re.findall(r"[a-z]+", text.lower()):
            stem = word[:5]  # "explain" and "explanations" share a bucket
            bucket = int.from_bytes(
                hashlib.blake2b(stem.encode(), digest_size=4).digest(), "big"
            )
            vector[bucket % 256] += 1.0
        return vector.tolist() if vector.any() else [1.0] + [0.0] * 255

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


def write(path: Path) -> None:
    with PersistentFAISS(path, WordHashEmbeddings()) as store:
        store.add_texts(
            [text for _, _, text in MEMORIES],
            [{"user_id": user, "kind": kind} for user, kind, _ in MEMORIES],
        )
        print(f"process 1: stored {len(MEMORIES)} memories in {path}")


def read(path: Path) -> None:
    with PersistentFAISS(path, WordHashEmbeddings()) as store:
        for user, question in QUESTIONS:
            hits = store.similarity_search_with_relevance_scores(
                question, k=1, filter={"user_id": user}
            )
            doc, score = hits[0]
            print(f"process 2: [{user}] {question}")
            kind = doc.metadata["kind"]
            print(f"           -> {doc.page_content}  ({kind}, {score:.2f})")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--read":  # noqa: PLR2004
        read(Path(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memories"
        write(path)
        print("process 1: closed; files:", sorted(p.name for p in path.iterdir()))
        subprocess.run([sys.executable, __file__, "--read", str(path)], check=True)  # noqa: S603


if __name__ == "__main__":
    main()
