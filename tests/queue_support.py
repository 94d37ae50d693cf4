"""Fixtures for the queue and quota tests: one database shared by real subprocesses.

``queue_site`` gives each test a fresh database, a way to run the "web" side
(:mod:`tests.queue_driver`) and to start real workers against it and the test session's Gmail
sandbox, and reads the delivery log straight from the database. It is parametrized by *site*:
the Tasks backend and its worker (``db``: django-tasks-db's ``db_worker``; ``rq``:
django-tasks-rq's ``rqworker`` with the scheduler, on a real Redis) and the database engine
(SQLite file, or a database on the session's PostgreSQL server). A site whose server is not
installed is skipped, with the reason. Every process started is killed when the test ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django
import pytest

from tests.engines import PostgresServer, RedisServer, descendants, kill_tree, processes_with

REPO = Path(__file__).resolve().parent.parent
SETTINGS = "tests.queue_settings"
STEP_TIMEOUT = 20.0
RQ_WORKER = "django_gmail_smtp.rq_worker.Worker"

HAVE_TASKS_DB = importlib.util.find_spec("django_tasks_db") is not None and (
    django.VERSION >= (6, 0) or importlib.util.find_spec("django_tasks") is not None
)
NO_TASKS_DB = 'django-tasks-db (and on Django 5.2 django-tasks) not installed: pip install "django-gmail-smtp[tasks]"'
needs_tasks_db = pytest.mark.skipif(not HAVE_TASKS_DB, reason=NO_TASKS_DB)


@dataclass(frozen=True)
class Site:
    """A Tasks backend with its worker, on a database engine."""

    tasks: str  # "db" or "rq"
    engine: str  # "sqlite" or "postgresql"

    @property
    def name(self) -> str:
        return f"{self.tasks}-{self.engine}"


ALL_SITES = [Site("db", "sqlite"), Site("db", "postgresql"), Site("rq", "postgresql")]
# GMAIL_TEST_SITES=db-sqlite (comma-separated names): only those (CI's Django 6.0 leg, to keep it short).
SITES = [s for s in ALL_SITES if s.name in (os.environ.get("GMAIL_TEST_SITES") or s.name).split(",")]
_numbers = itertools.count(1)


def warning_options(config: pytest.Config) -> list[str]:
    """The test run's -W filters (pytest's and Python's), for the subprocesses."""
    filters = list(sys.warnoptions) + list(config.getoption("pythonwarnings", None) or [])
    return [f"-W{item}" for item in filters]


def _sockets_to(port: int) -> set[str]:
    """Inodes of the established TCP connections to 127.0.0.1:``port`` (client side)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01":  # ESTABLISHED
                    inodes.add(fields[9])
    return inodes


class QueueSite:
    """One test's database, clock file and subprocesses."""

    def __init__(self, site: Site, directory: Path, env: dict[str, str], python: list[str], **servers: Any) -> None:
        self.site = site
        self.tasks = site.tasks
        self.engine = site.engine
        self.dir = directory
        self.clock_file = Path(env["GMAIL_QUEUE_CLOCK"])
        self.env = env
        self.python = python
        self.postgres: PostgresServer | None = servers.get("postgres")
        self.redis: RedisServer | None = servers.get("redis")
        self.workers: list[subprocess.Popen[bytes]] = []
        self._numbers = 0

    # -- processes ------------------------------------------------------------------------------
    def driver(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``tests.queue_driver COMMAND``; its JSON output, parsed (None if it printed nothing)."""
        argv = [*self.python, "-m", "tests.queue_driver", command, json.dumps(arguments or {})]
        done = subprocess.run(argv, env=self.env, cwd=REPO, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise AssertionError(f"queue_driver {command} failed:\n{done.stderr.decode(errors='replace')}")
        out = done.stdout.decode().strip()
        return json.loads(out) if out else None

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [*self.python, "-m", "django", *args], env=self.env, cwd=REPO, capture_output=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def worker_argv(self, number: int, *, scheduler: bool = True, rq_worker: str = RQ_WORKER) -> list[str]:
        """The worker command: ``db_worker`` polling every 50 ms, or ``rqworker`` as the README says."""
        if self.tasks == "rq":
            return [
                "rqworker", "default", "mail", "--job-class", "django_tasks_rq.Job", "--name", f"test-worker-{number}",
                "--worker-class", rq_worker, "--worker-ttl", "30", *(["--with-scheduler"] if scheduler else []),
            ]  # fmt: skip
        return [
            "db_worker", "--interval", "0.05", "--no-startup-delay", "--no-reload", "--queue-name", "*",
            "--worker-id", f"test-worker-{number}", "-v", "2",
        ]  # fmt: skip

    def start_worker(self, **options: Any) -> subprocess.Popen[bytes]:
        """A worker on all queues; output in worker-N.log. ``options`` go to :meth:`worker_argv`."""
        self._numbers += 1
        log = (self.dir / f"worker-{self._numbers}.log").open("wb")
        argv = [*self.python, "-m", "django", *self.worker_argv(self._numbers, **options)]
        process = subprocess.Popen(argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.workers.append(process)
        return process

    def wait_until_listening(self) -> None:
        """Until every worker started so far says it is waiting for tasks."""
        marker = "Listening on" if self.tasks == "rq" else "Starting worker"
        logs = [self.dir / f"worker-{number}.log" for number in range(1, self._numbers + 1)]
        self.wait_for(
            "the workers to start", lambda: all(marker in log.read_text(errors="replace") for log in logs), 60
        )

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and everything it started (RQ's work horse and scheduler): a lost machine."""
        kill_tree(process)  # RQ's work horse has a session of its own: not a process group

    def kill_sender(self, port: int) -> list[int]:
        """SIGKILL the worker processes connected to the SMTP server at ``port``.

        That is the worker itself (db_worker, RQ's in-process worker) or RQ's work horse. What
        they started (RQ's scheduler) lives on, orphaned, as after an OOM kill; it is killed
        when the test ends.
        """
        inodes = _sockets_to(port)
        tree = descendants({p.pid for p in self.workers if p.poll() is None})
        pids = []
        for pid in sorted(tree):
            with contextlib.suppress(OSError):
                links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
                if any(f"socket:[{inode}]" in links for inode in inodes):
                    os.kill(pid, signal.SIGKILL)
                    pids.append(pid)
        return pids

    def stop_all(self) -> None:
        for process in self.workers:
            self.kill(process)
        # Orphans too (RQ's scheduler outlives a worker killed by kill_sender(), and one forked
        # while its worker was being killed escapes kill_tree()): left alive, a scheduler renews its
        # lock in the shared Redis after the next test's flush and that test's workers never get it.
        # The clock file is this site's own, so the environment names our processes and no others.
        for _ in range(50):
            found = processes_with("GMAIL_QUEUE_CLOCK", self.env["GMAIL_QUEUE_CLOCK"])
            if not found:
                break
            for pid in found:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def worker_output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.dir.glob("worker-*.log"))
        )

    # -- the database ----------------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of ``sql`` (``?`` placeholders), read straight from the database, as dicts."""
        if self.postgres is not None:
            with self.postgres.connect(self.env["GMAIL_QUEUE_DBNAME"]) as connection:
                return list(connection.execute(sql.replace("?", "%s"), params).fetchall())
        connection = sqlite3.connect(f"file:{self.env['GMAIL_QUEUE_DB']}?mode=ro", uri=True, timeout=30)
        try:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(sql, params)]
        finally:
            connection.close()

    def log(self, log_ids: list[int]) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(log_ids))
        return self.query(f"SELECT * FROM gmail_smtp_deliverylog WHERE id IN ({marks}) ORDER BY id", tuple(log_ids))  # noqa: S608

    def finished_tasks(self) -> dict[str, int]:
        """Tasks the Tasks backend ran successfully, by queue (django-tasks-db's table or RQ's registries)."""
        if self.redis is not None:
            from redis import Redis
            from rq.registry import FinishedJobRegistry

            connection = Redis.from_url(self.redis.url)
            counts = {name: FinishedJobRegistry(name, connection=connection).count for name in ("default", "mail")}
        else:
            rows = self.query("SELECT queue_name, status FROM django_tasks_database_dbtaskresult")
            counts = {row["queue_name"]: 0 for row in rows}
            for row in rows:
                counts[row["queue_name"]] += row["status"] == "SUCCESSFUL"
        return {name: count for name, count in counts.items() if count}

    def broker_dump(self) -> bytes:
        """Every key and value in RQ's Redis (empty for django-tasks-db), to look for what must not be there."""
        if self.redis is None:
            return b""
        from redis import Redis

        connection = Redis.from_url(self.redis.url)
        chunks = []
        for key in connection.scan_iter():
            kind = connection.type(key)
            chunks.append(key)
            if kind == b"string":
                chunks.append(connection.get(key) or b"")
            elif kind == b"hash":
                for field, value in connection.hgetall(key).items():
                    chunks.append(b"%s=%s" % (field, value))
                    with contextlib.suppress(zlib.error):
                        chunks.append(zlib.decompress(value))  # RQ keeps a job's call compressed
            elif kind == b"list":
                chunks.extend(connection.lrange(key, 0, -1))
            elif kind in (b"set", b"zset"):
                chunks.extend(connection.zrange(key, 0, -1) if kind == b"zset" else connection.smembers(key))
        return b"\n".join(chunks)

    def quota_used(self) -> int:
        """Slots counted by the daily-limit guard, all accounts together."""
        [row] = self.query("SELECT COALESCE(SUM(count), 0) AS used FROM gmail_smtp_quotause")
        return int(row["used"])

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = STEP_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                rows = self.query("SELECT id, status, attempts, generation, last_reply FROM gmail_smtp_deliverylog")
                raise AssertionError(f"Timed out waiting for {what}.\nlog: {rows}\n{self.worker_output()}")
            time.sleep(0.05)

    def wait_for_status(self, log_ids: list[int], status: str, timeout: float = STEP_TIMEOUT) -> list[dict[str, Any]]:
        return self.wait_for(  # type: ignore[no-any-return]
            f"log entries {log_ids} to be {status!r}",
            lambda: (rows := self.log(log_ids)) and all(r["status"] == status for r in rows) and rows,
            timeout,
        )

    def set_clock(self, offset_seconds: float) -> None:
        self.clock_file.write_text(str(offset_seconds))

    def freeze_in_reserve(self) -> None:
        """The next process to take the daily-limit row lock stops there (tests/queue_settings.py)."""
        self.clock_file.with_suffix(".freeze").touch()

    def frozen_pid(self) -> int | None:
        """The process that stopped holding the row lock, once it has."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self.clock_file.with_suffix(".frozen").read_text())
        return None

    def is_ours(self, pid: int) -> bool:
        """``pid`` is one of our workers or below one (never kill anything else)."""
        return pid in descendants({p.pid for p in self.workers if p.poll() is None})


def _environment(site: Site, clock: Path, *, database: dict[str, str], port: int, ca: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "GMAIL_SMTP_", "DJANGO_", "GMAIL_QUEUE_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        GMAIL_QUEUE_TASKS=site.tasks,
        GMAIL_QUEUE_CLOCK=str(clock),
        GMAIL_SANDBOX_PORT=str(port),
        GMAIL_SANDBOX_CA=ca,
        PYTHONUNBUFFERED="1",
        **database,
    )
    return env


def _database_env(engine: str, name: str, postgres: PostgresServer | None) -> dict[str, str]:
    """GMAIL_QUEUE_* variables naming a database: a SQLite file path, or a database on ``postgres``."""
    if engine == "postgresql":
        assert postgres is not None
        return {"GMAIL_QUEUE_DATABASE": json.dumps(postgres.settings(name)), "GMAIL_QUEUE_DBNAME": name}
    return {"GMAIL_QUEUE_DB": name}


class Templates:
    """Migrated databases, made once per session and engine, copied for each test."""

    def __init__(self, directory: Path, python: list[str]) -> None:
        self.dir = directory
        self.python = python
        self.made: dict[str, str] = {}

    def get(self, engine: str, postgres: PostgresServer | None) -> str:
        if engine not in self.made:
            number = next(_numbers)
            name = str(self.dir / f"template-{number}.sqlite3") if engine == "sqlite" else f"gmail_template_{number}"
            if postgres is not None:
                postgres.create_database(name)
            site = Site("db", engine)
            env = _environment(site, self.dir / "clock", database=_database_env(engine, name, postgres), port=0, ca="")
            QueueSite(site, self.dir, env, self.python, postgres=postgres).driver("migrate")
            self.made[engine] = name
        return self.made[engine]


@pytest.fixture(scope="session")
def queue_template(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Templates:
    """The migrated template databases (made on first use)."""
    if not HAVE_TASKS_DB:
        pytest.skip(NO_TASKS_DB)
    return Templates(tmp_path_factory.mktemp("queue-template"), [sys.executable, *warning_options(pytestconfig)])


@pytest.fixture(params=SITES, ids=lambda site: site.name)
def queue_site(
    request: pytest.FixtureRequest,
    queue_template: Templates,
    gmail_sandbox: Any,
    tmp_path: Path,
    pytestconfig: pytest.Config,
) -> Iterator[QueueSite]:
    """A fresh database wired to the sandbox, for each site; workers started through it die with the test."""
    site: Site = request.param
    servers: dict[str, Any] = {}
    if site.engine == "postgresql":
        servers["postgres"] = request.getfixturevalue("postgres_server")
    if site.tasks == "rq":
        servers["redis"] = request.getfixturevalue("redis_server")
        servers["redis"].flush()
    postgres = servers.get("postgres")
    template = queue_template.get(site.engine, postgres)
    if postgres is not None:
        name = f"gmail_queue_{next(_numbers)}"
        postgres.create_database(name, template=template)
    else:
        name = str(tmp_path / "db.sqlite3")
        shutil.copyfile(template, name)
    database = _database_env(site.engine, name, postgres)
    if "redis" in servers:
        database["GMAIL_QUEUE_REDIS"] = servers["redis"].url
    env = _environment(
        site, tmp_path / "clock", database=database, port=gmail_sandbox.starttls_port, ca=gmail_sandbox.ca_file
    )
    queue = QueueSite(site, tmp_path, env, [sys.executable, *warning_options(pytestconfig)], **servers)
    try:
        yield queue
    finally:
        queue.stop_all()
