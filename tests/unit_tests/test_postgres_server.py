"""The PostgreSQL 18 + pgvector test server (tests/postgres_server.py)."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.postgres_server import HOST, UNPRIVILEGED_USER, PostgresServer

if TYPE_CHECKING:
    import psycopg


def connect(url: str) -> psycopg.Connection:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_url_names_loopback_and_the_superuser(postgres_server: PostgresServer) -> None:
    pattern = r"postgresql://postgres@127\.0\.0\.1:(\d+)/test"
    match = re.fullmatch(pattern, postgres_server.url)
    assert match, postgres_server.url
    assert int(match[1]) == postgres_server.port != 5432


def test_server_is_postgresql_18(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        assert row[0].startswith("18"), row
        assert conn.info.server_version >= 180000


def test_pgvector_08_is_installed(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    assert row is not None, "CREATE EXTENSION vector did not run"
    assert row[0].startswith("0.8"), row


def test_hnsw_cosine_index_finds_the_nearest_row(postgres_url: str) -> None:
    with connect(postgres_url) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
        conn.execute(
            "INSERT INTO items VALUES"
            " (1, '[0,1,0]'), (2, '[0.9,0.1,0]'), (3, '[0,0,1]'), (4, '[-1,0,0]')"
        )
        conn.execute(
            "CREATE INDEX items_embedding ON items"
            " USING hnsw (embedding vector_cosine_ops)"
        )
        conn.execute("SET enable_seqscan = off")
        query = "SELECT id FROM items ORDER BY embedding <=> '[1,0,0]' LIMIT 1"
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {query}"))
        assert "items_embedding" in plan, plan
        assert conn.execute(query).fetchall() == [(2,)]


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_database(postgres_url: str, run: int) -> None:
    # Both runs create the same table: this only works if neither sees the
    # other's database, whichever runs first.
    with connect(postgres_url) as conn:
        conn.execute("CREATE TABLE shared (run int)")
        conn.execute("INSERT INTO shared VALUES (%s)", (run,))
        assert conn.execute("SELECT run FROM shared").fetchall() == [(run,)]


def test_databases_are_isolated(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    other_url = postgres_server.create_database("isolation_other")
    try:
        assert other_url != postgres_url
        with connect(postgres_url) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        with connect(other_url) as conn:
            row = conn.execute("SELECT to_regclass('only_here')").fetchone()
            assert row == (None,)
            version = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
            assert version is not None
    finally:
        postgres_server.drop_database("isolation_other")


def test_listens_only_on_loopback(postgres_server: PostgresServer) -> None:
    with connect(postgres_server.url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == (HOST,)
        row = conn.execute("SELECT host(inet_server_addr())").fetchone()
        assert row == (HOST,)
    addresses = listening_addresses(postgres_server.port)
    if Path("/proc/net/tcp").exists():
        assert addresses == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_runs_as_an_unprivileged_user(postgres_server: PostgresServer) -> None:
    status = Path(f"/proc/{postgres_server.pid}/status").read_text()
    match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    assert match, status
    uid = int(match[1])  # the real uid; the effective one is the same
    if os.geteuid() == 0:
        assert uid == pwd.getpwnam(UNPRIVILEGED_USER).pw_uid
    else:
        assert uid == os.geteuid()


def test_stop_ends_the_server_and_removes_its_files() -> None:
    with PostgresServer() as server:
        root, pid = server.root, server.pid
        assert server.startup_seconds is not None
        assert server.startup_seconds < 30
        assert (root / "data" / "PG_VERSION").exists()
    assert not root.exists()
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" in status.read_text()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


def test_a_failed_start_raises_with_the_log_tail() -> None:
    server = PostgresServer(settings={"shared_buffers": "plenty"})
    with pytest.raises(RuntimeError) as caught:
        server.start()
    message = str(caught.value)
    assert "pg_ctl start failed" in message
    assert "shared_buffers" in message  # from the server log
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.root
