"""pytest fixtures for the Gmail sandbox (the ``gmail_sandbox`` pytest11 plugin).

* ``gmail_sandbox_server``: one sandbox for the whole test session, started on first use.
* ``gmail_sandbox``: that sandbox, fresh for the test: connections left open by earlier tests
  are dropped (so they cannot use up a failure injected for this one), then
  :meth:`~GmailSandbox.reset` (no messages, no injected failures, counters at zero).
* ``gmail_oauth_server``: one local OAuth2 token server for the session, attached to the
  session's sandbox (which then accepts XOAUTH2 with the tokens it issues).
* ``gmail_oauth``: that server, reset for the test (no tokens, counters at zero), with
  ``GMAIL_SMTP["OAUTH_TOKEN_URI"]``/``["OAUTH_AUTH_URI"]`` pointed at it (pytest-django's
  ``settings``) and no access token left in Django's cache.

Nothing heavy is imported until a fixture is used: projects without Django settings or
without the ``sandbox`` extra can still run pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from django_gmail_smtp.sandbox.oauth_server import OAuthServer
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


@pytest.fixture(scope="session")
def gmail_oauth_server(gmail_sandbox_server: GmailSandbox) -> Iterator[OAuthServer]:
    """A local OAuth2 token/authorization server, attached to the session's sandbox."""
    from django_gmail_smtp.sandbox.oauth_server import OAuthServer

    with OAuthServer() as server:
        gmail_sandbox_server.attach_oauth(server)
        try:
            yield server
        finally:
            gmail_sandbox_server.attach_oauth(None)


@pytest.fixture
def gmail_oauth(gmail_oauth_server: OAuthServer, gmail_sandbox: GmailSandbox, settings: Any) -> OAuthServer:
    """The session's OAuth2 server, reset, with the app's OAuth2 endpoints pointed at it."""
    from django.core.cache import cache

    gmail_oauth_server.reset()
    gmail_oauth_server.access_token_lifetime = 3600
    gmail_oauth_server.token_length = 160
    settings.GMAIL_SMTP = {**(getattr(settings, "GMAIL_SMTP", None) or {}), **gmail_oauth_server.settings()}
    cache.clear()
    return gmail_oauth_server
