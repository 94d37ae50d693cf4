"""Real database and broker servers for the queue tests and benchmarks: PostgreSQL and Redis.

Debian's ``postgresql`` and ``redis-server``, each started in a temporary directory, listening
on 127.0.0.1 on a port the OS handed out, and stopped (its files deleted) at the end. As root,
PostgreSQL runs as the ``postgres`` user (it refuses to run as root). When a server's program
is not installed, :func:`missing_postgresql` / :func:`missing_redis` say why, for the skip.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def descendants(pids: set[int]) -> set[int]:
    """``pids`` and every process below them (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found = set(pids)
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more


def processes_with(variable: str, value: str) -> set[int]:
    """Processes (other than this one) started with ``variable=value`` in their environment: what a
    test started, however deep, and even once its parent is gone (init adopts an orphan, not us)."""
    wanted = f"{variable}={value}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.add(int(entry.name))
    return found


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``process`` and every process below it, then reap it."""
    if process.poll() is None:
        for pid in sorted(descendants({process.pid})):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    process.wait(10)


# -- PostgreSQL -------------------------------------------------------------------------------


def postgresql_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb and pg_ctl (or ``$GMAIL_TEST_PG_BIN``)."""
    given = os.environ.get("GMAIL_TEST_PG_BIN")
    candidates = [given] if given else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)
    for candidate in reversed(candidates):
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in Path(path).parent.name.split(".") if p.isdigit())


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_postgresql() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    if postgresql_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql): no /usr/lib/postgresql/*/bin/initdb"
    if not _installed("psycopg"):
        return 'psycopg 3 is not installed: pip install "django-gmail-smtp[postgresql]"'
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL cannot be started as the postgres user"
    return None


class PostgresServer:
    """A throw-away PostgreSQL cluster: trust authentication, superuser ``postgres``, loopback only.

    ``durable=False`` (tests) turns fsync off; the benchmark keeps PostgreSQL's defaults.
    """

    user = "postgres"
    host = "127.0.0.1"

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = postgresql_bin()
        if self.bin is None:
            raise RuntimeError(missing_postgresql() or "PostgreSQL is not installed")
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="gmail-smtp-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self._as_root = os.geteuid() == 0

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_root:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=check)

    def start(self) -> PostgresServer:
        assert self.bin is not None
        if self._as_root:
            shutil.chown(self.dir, self.user)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        settings = ["-c listen_addresses=127.0.0.1", f"-k {self.dir}", "-c max_connections=200"]
        if not self.durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        for _attempt in range(5):  # the port may be taken between free_port() and the bind
            self.port = free_port()
            done = self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                "-o", " ".join([f"-p {self.port}", *settings]), "start",
                check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return self
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start:\n{done.stdout}{done.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.bin is not None and (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def settings(self, name: str) -> dict[str, Any]:
        """``DATABASES`` entry for the database ``name`` on this server."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": self.user,
            "HOST": self.host,
            "PORT": str(self.port),
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": f"test_{name}"},
        }

    def connect(self, name: str = "postgres") -> Any:
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname=name, autocommit=True, row_factory=dict_row
        )

    def create_database(self, name: str, template: str | None = None) -> None:
        from psycopg import sql

        with self.connect() as connection:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            connection.execute(statement)


# -- Redis ------------------------------------------------------------------------------------


def missing_redis() -> str | None:
    """Why the RQ tests cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "Redis is not installed (apt-get install redis-server)"
    if not _installed("django_tasks_rq"):
        return 'django-tasks-rq is not installed: pip install "django-gmail-smtp[rq]"'
    return None


def rq_queues(url: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """``RQ_QUEUES`` for ``names`` on the Redis at ``url``, sharing one connection pool (the README's layout).

    django-rq hands ``REDIS_CLIENT_KWARGS`` to each client it makes; with ``URL`` alone it would
    open a new connection for each task enqueued. HOST/PORT/DB serve django-rq's commands and views.
    """
    import redis

    pool = redis.ConnectionPool.from_url(url)
    where = pool.connection_kwargs
    config = {
        "HOST": where["host"],
        "PORT": where["port"],
        "DB": where.get("db", 0),
        "REDIS_CLIENT_KWARGS": {"connection_pool": pool},
    }
    return {name: dict(config) for name in names}


class RedisServer:
    """A throw-away ``redis-server``: no persistence, loopback only."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gmail-smtp-redis-"))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        for _attempt in range(5):
            self.port = free_port()
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
                 "--dir", str(self.dir), "--protected-mode", "yes"],
                stdout=(self.dir / "server.log").open("wb"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if self.command("PING") == "+PONG":
                    return self
                time.sleep(0.05)
            self.stop_process()
        raise RuntimeError("redis-server did not start: " + (self.dir / "server.log").read_text(errors="replace"))

    def command(self, *words: str) -> str | None:
        """One inline command; the first line of the reply (None if the server is not there)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as connection:
                connection.sendall(" ".join(words).encode() + b"\r\n")
                return connection.recv(65536).split(b"\r\n", 1)[0].decode()
        except OSError:
            return None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def flush(self) -> None:
        assert self.command("FLUSHALL") == "+OK"

    def stop_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)
