"""Shared fixtures: backends wired to the Gmail sandbox (fixtures come from our pytest plugin)."""

import contextlib
import io
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_gmail_smtp.backend import EmailBackend
from tests.engines import PostgresServer, RedisServer, missing_postgresql, missing_redis
from tests.queue_support import queue_site, queue_template

from .skip_summary import pytest_terminal_summary  # noqa: F401 - a hook: skips counted by reason

__all__ = ["queue_site", "queue_template"]  # fixtures for the queue and quota tests (tests/queue_support.py)

# Tests that deliberately use Django's legacy mail API see Django's own
# deprecation warnings on 6.1 for *their* use; only those exact messages are
# ignored, so a warning caused by our code still fails the 6.1 run.
LEGACY_API = [
    pytest.mark.filterwarnings("ignore:The EMAIL_\\w+ setting is deprecated"),
    pytest.mark.filterwarnings("ignore:get_connection\\(\\) is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'fail_silently' argument is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'connection' argument is deprecated"),
    pytest.mark.filterwarnings("ignore:The 'auth_user' and 'auth_password' arguments are deprecated"),
    pytest.mark.filterwarnings("ignore:Passing positional argument"),
]


def legacy_api(test: Any) -> Any:
    """Decorator form of LEGACY_API."""
    for mark in LEGACY_API:
        test = mark(test)
    return test


@pytest.fixture
def make_backend(gmail_sandbox: Any) -> Callable[..., EmailBackend]:
    """``make_backend(mode="starttls", **overrides)``: our backend pointed at the sandbox."""

    def make(mode: str = "starttls", **overrides: Any) -> EmailBackend:
        return EmailBackend(**(gmail_sandbox.mailer_options(mode) | overrides))

    return make


@pytest.fixture(autouse=True, scope="session")
def _no_dns_for_the_ehlo_name() -> None:
    """EHLO and Message-ID use socket.getfqdn(), which may ask a DNS server: tests stay on loopback."""
    from django.core.mail.utils import DNS_NAME

    DNS_NAME._fqdn = "test.localhost"


@pytest.fixture(autouse=True)
def _no_pooled_connection_between_tests() -> Any:
    """Connections the pool keeps (issue #6) must not carry over into the next test's counts."""
    from django_gmail_smtp import pool

    pool.close_all()
    yield
    pool.close_all()


@pytest.fixture
def closed_port() -> int:
    """A loopback port where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def legacy_settings(settings: Any, gmail_sandbox: Any) -> Any:
    """Django's legacy EMAIL_* settings pointed at the sandbox (STARTTLS), with our backend."""
    options = gmail_sandbox.mailer_options("starttls")
    settings.EMAIL_BACKEND = "django_gmail_smtp.backend.EmailBackend"
    settings.EMAIL_HOST = options["host"]
    settings.EMAIL_PORT = options["port"]
    settings.EMAIL_HOST_USER = options["username"]
    settings.EMAIL_HOST_PASSWORD = options["password"]
    settings.EMAIL_USE_TLS = True
    settings.GMAIL_SMTP = {"SSL_CAFILE": options["ssl_cafile"]}
    return settings


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def doc(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.out)
        return document


def gmail_check(*args: str) -> Outcome:
    """Run the command as a user would; expected failures must not leak a traceback."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        call_command("gmail_check", *args, stdout=out, stderr=err, no_color=True)
    except CommandError as exc:
        code = exc.returncode
        err.write(f"CommandError: {exc}\n")
    outcome = Outcome(code, out.getvalue(), err.getvalue())
    assert "Traceback" not in outcome.text
    return outcome


# -- real database and broker servers (tests/engines.py) -------------------------------------------


def _server(missing: Callable[[], str | None], start: Callable[[], Any]) -> Iterator[Any]:
    """A server for the session, stopped at its end; the tests that need it skipped (with why) if missing."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    server = start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL on a free loopback port."""
    yield from _server(missing_postgresql, lambda: PostgresServer().start())


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port."""
    yield from _server(missing_redis, lambda: RedisServer().start())


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    request: pytest.FixtureRequest, django_db_modify_db_settings_parallel_suffix: None
) -> None:
    """``GMAIL_TEST_DATABASE=postgresql``: the in-process tests use the session's PostgreSQL server.

    pytest-django's hook for changing the database settings before the test database is made.
    """
    if os.environ.get("GMAIL_TEST_DATABASE", "sqlite") != "postgresql":
        return
    from django.conf import settings
    from django.db import connections

    server = request.getfixturevalue("postgres_server")
    entry = settings.DATABASES["default"]  # changed in place: Django's connection handler holds it
    postgresql = server.settings("gmail_tests")
    entry["TEST"].update(postgresql.pop("TEST"))  # keeps the defaults Django filled in
    entry.update(postgresql, OPTIONS={})
    with contextlib.suppress(AttributeError):
        del connections["default"]  # made for SQLite already: made anew, for PostgreSQL, on next use


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start worker processes (they use ``queue_site``) are marked ``workers``."""
    for item in items:
        if "queue_site" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.workers)
