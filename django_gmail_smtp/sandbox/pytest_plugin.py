"""pytest fixtures for the Gmail sandbox (the ``gmail_sandbox`` pytest11 plugin).

* ``gmail_sandbox_server``: one sandbox for the whole test session, started on first use.
* ``gmail_sandbox``: that sandbox, fresh for the test: connections left open by earlier tests
  are dropped (so they cannot use up a failure injected for this one), then
  :meth:`~GmailSandbox.reset` (no messages, no injected failures, counters at zero).

Nothing heavy is imported until a fixture is used: projects without Django settings or
without the ``sandbox`` extra can still run pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from django_gmail_smtp.sandbox.server import GmailSandbox

MISSING_EXTRA = (
    'The gmail_sandbox fixtures need the "sandbox" extra: pip install "django-gmail-smtp[sandbox]" ({error}).'
)


@pytest.fixture(scope="session")
def gmail_sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GmailSandbox]:
    """A Gmail-like SMTP server on loopback, shared by the whole test session."""
    try:
        from django_gmail_smtp.sandbox.server import GmailSandbox
    except ImportError as error:
        pytest.fail(MISSING_EXTRA.format(error=error), pytrace=False)
    with GmailSandbox(state_dir=tmp_path_factory.mktemp("gmail_sandbox")) as sandbox:
        yield sandbox


@pytest.fixture
def gmail_sandbox(gmail_sandbox_server: GmailSandbox) -> GmailSandbox:
    """The session's sandbox, with no connection left from earlier tests, reset."""
    gmail_sandbox_server.drop_connections()
    gmail_sandbox_server.reset()
    return gmail_sandbox_server
