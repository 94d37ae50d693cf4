"""Fixtures for the queue and quota tests: a SQLite file shared by real subprocesses.

``queue_site`` gives each test a fresh copy of a migrated database file, a way to run the
"web" side (:mod:`tests.queue_driver`) and to start ``manage.py db_worker`` processes against
it and the test session's Gmail sandbox, and reads the delivery log straight from the file.
Every process started is killed when the test ends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest

REPO = Path(__file__).resolve().parent.parent
SETTINGS = "tests.queue_settings"
STEP_TIMEOUT = 20.0

HAVE_TASKS_DB = importlib.util.find_spec("django_tasks_db") is not None and (
    django.VERSION >= (6, 0) or importlib.util.find_spec("django_tasks") is not None
)
NO_TASKS_DB = 'django-tasks-db (and on Django 5.2 django-tasks) not installed: pip install "django-gmail-smtp[tasks]"'
needs_tasks_db = pytest.mark.skipif(not HAVE_TASKS_DB, reason=NO_TASKS_DB)


def warning_options(config: pytest.Config) -> list[str]:
    """The test run's -W filters (pytest's and Python's), for the subprocesses."""
    filters = list(sys.warnoptions) + list(config.getoption("pythonwarnings", None) or [])
    return [f"-W{item}" for item in filters]


class QueueSite:
    """One test's database file, clock file and subprocesses."""

    def __init__(self, directory: Path, env: dict[str, str], python: list[str]) -> None:
        self.dir = directory
        self.db = Path(env["GMAIL_QUEUE_DB"])
        self.clock_file = Path(env["GMAIL_QUEUE_CLOCK"])
        self.env = env
        self.python = python
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

    def start_worker(self) -> subprocess.Popen[bytes]:
        """``manage.py db_worker`` polling every 50 ms, all queues; output in worker-N.log."""
        self._numbers += 1
        log = (self.dir / f"worker-{self._numbers}.log").open("wb")
        argv = [
            *self.python,
            "-m",
            "django",
            "db_worker",
            "--interval",
            "0.05",
            "--no-startup-delay",
            "--no-reload",
            "--queue-name",
            "*",
            "--worker-id",
            f"test-worker-{self._numbers}",
            "-v",
            "2",
        ]
        process = subprocess.Popen(argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.workers.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.workers:
            self.kill(process)

    def worker_output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.dir.glob("worker-*.log"))
        )

    # -- the database file ----------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        connection = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(sql, params)]
        finally:
            connection.close()

    def log(self, log_ids: list[int]) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(log_ids))
        return self.query(f"SELECT * FROM gmail_smtp_deliverylog WHERE id IN ({marks}) ORDER BY id", tuple(log_ids))  # noqa: S608

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


@pytest.fixture(scope="session")
def queue_template(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """A migrated database file, made once per test session and copied for each test."""
    if not HAVE_TASKS_DB:
        pytest.skip(NO_TASKS_DB)
    directory = tmp_path_factory.mktemp("queue-template")
    db = directory / "db.sqlite3"
    env = _environment(db, directory / "clock", port=0, ca="")
    site = QueueSite(directory, env, [sys.executable, *warning_options(pytestconfig)])
    site.driver("migrate")
    return db


def _environment(db: Path, clock: Path, *, port: int, ca: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "GMAIL_SMTP_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        GMAIL_QUEUE_DB=str(db),
        GMAIL_QUEUE_CLOCK=str(clock),
        GMAIL_SANDBOX_PORT=str(port),
        GMAIL_SANDBOX_CA=ca,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def queue_site(
    queue_template: Path, gmail_sandbox: Any, tmp_path: Path, pytestconfig: pytest.Config
) -> Iterator[QueueSite]:
    """A fresh database file wired to the sandbox; workers started through it die with the test."""
    db = tmp_path / "db.sqlite3"
    shutil.copyfile(queue_template, db)
    env = _environment(db, tmp_path / "clock", port=gmail_sandbox.starttls_port, ca=gmail_sandbox.ca_file)
    site = QueueSite(tmp_path, env, [sys.executable, *warning_options(pytestconfig)])
    try:
        yield site
    finally:
        site.stop_all()
