"""No secret in error reports: the frames of what we raise, Django's reporter, and EMAIL_URL.

Every failure here is real: the sandbox refuses a sign-in, its OAuth2 server refuses a refresh
token, a hostile loopback server hangs up in the middle of AUTH. The exception the backend raises
is then searched the two ways error reports see it:

* Django's ``ExceptionReporter(..., is_email=True)`` with ``DEBUG = False`` (what
  ``AdminEmailHandler(include_html=True)`` mails), HTML and text;
* every local variable of every frame of every exception in its ``__cause__``/``__context__``
  chain (what Sentry-like tools capture), see :func:`tests.leaks.frame_leaks`.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.mail import EmailMessage
from django.views.debug import ExceptionReporter

from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.exceptions import GmailSMTPError
from django_gmail_smtp.models import GmailAccount
from django_gmail_smtp.sandbox import SANDBOX_PASSWORD, SANDBOX_USER, GmailSandbox, OAuthServer

from .conftest import legacy_api
from .echo_server import EchoServer
from .leaks import all_forms, found_in, frame_leaks, raised

ECHO_USER = "echo@example.com"
ECHO_PASSWORD = "echoechoechoecho"  # a test server's password


def message() -> EmailMessage:
    return EmailMessage("Hello", "Body", SANDBOX_USER, ["to@example.com"])


def reports(exc: BaseException) -> str:
    """Django's HTML (unescaped) and text reports of ``exc``, as mailed to ADMINS."""
    reporter = ExceptionReporter(None, type(exc), exc, exc.__traceback__, is_email=True)
    return html.unescape(reporter.get_traceback_html()) + "\n" + reporter.get_traceback_text()


def assert_nothing_leaks(exc: BaseException, secrets: list[str], username: str) -> None:
    needles = all_forms(secrets, username)
    assert frame_leaks(exc, needles) == []
    assert found_in(reports(exc), needles) == []
    assert found_in(str(exc) + repr(exc.args), needles) == []


@pytest.fixture(autouse=True)
def _production(settings: Any) -> Iterator[None]:
    settings.DEBUG = False  # the reporter hides sensitive variables only then
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def one_try(settings: Any) -> None:
    settings.GMAIL_SMTP = {**(getattr(settings, "GMAIL_SMTP", None) or {}), "RETRY_ATTEMPTS": 1}


# -- a failure at sign-in -------------------------------------------------------------------------


@legacy_api
def test_password_from_settings_refused_at_sign_in(legacy_settings: Any, gmail_sandbox: GmailSandbox) -> None:
    legacy_settings.GMAIL_SMTP["RETRY_ATTEMPTS"] = 1
    backend = EmailBackend()
    gmail_sandbox.inject("bad_credentials")
    exc = raised(lambda: backend.send_messages([message()]))
    assert isinstance(exc, GmailSMTPError)
    assert (exc.stage, exc.smtp_code) == ("auth", 535)  # type: ignore[attr-defined]
    assert_nothing_leaks(exc, [SANDBOX_PASSWORD], SANDBOX_USER)


@pytest.mark.django_db
def test_stored_account_refused_at_sign_in(settings: Any, gmail_sandbox: GmailSandbox, one_try: None) -> None:
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "SSL_CAFILE": gmail_sandbox.ca_file}
    account = GmailAccount(
        name="shop", username=SANDBOX_USER, host=gmail_sandbox.host, port=gmail_sandbox.starttls_port, timeout=5
    )
    account.set_password(SANDBOX_PASSWORD)
    account.save()
    backend = EmailBackend(account="shop")
    gmail_sandbox.inject("bad_credentials")
    exc = raised(lambda: backend.send_messages([message()]))
    assert (exc.stage, exc.smtp_code) == ("auth", 535)  # type: ignore[attr-defined]
    assert_nothing_leaks(exc, [SANDBOX_PASSWORD], SANDBOX_USER)


def test_hang_up_in_the_middle_of_auth(tmp_path: Path, one_try: None) -> None:
    """smtplib's frames hold the AUTH line when the connection breaks under them."""
    with EchoServer(tmp_path, mode="hangup") as server:
        backend = EmailBackend(**server.options(username=ECHO_USER, password=ECHO_PASSWORD))
        exc = raised(lambda: backend.send_messages([message()]))
    assert exc.stage == "auth"  # type: ignore[attr-defined]
    assert any(line.startswith("AUTH") for line in server.received)  # the password was on its way
    assert_nothing_leaks(exc, [ECHO_PASSWORD], ECHO_USER)


def oauth_secrets(server: OAuthServer, refresh_token: str) -> list[str]:
    return [server.client_secret, refresh_token, *server.issued_tokens()]


def test_oauth2_refresh_token_refused_by_the_token_endpoint(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, one_try: None
) -> None:
    options = gmail_sandbox.mailer_options("starttls") | gmail_oauth.mailer_options() | {"password": None}
    gmail_oauth.revoke(options["oauth_refresh_token"])
    backend = EmailBackend(**options)
    exc = raised(lambda: backend.send_messages([message()]))
    assert exc.stage == "token"  # type: ignore[attr-defined]
    assert_nothing_leaks(exc, oauth_secrets(gmail_oauth, options["oauth_refresh_token"]), SANDBOX_USER)


def test_oauth2_access_token_refused_by_the_server(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, one_try: None
) -> None:
    options = gmail_sandbox.mailer_options("starttls") | gmail_oauth.mailer_options(user="other@example.com")
    options["password"] = None
    backend = EmailBackend(**options)
    exc = raised(lambda: backend.send_messages([message()]))
    assert (exc.stage, exc.smtp_code) == ("auth", 535)  # type: ignore[attr-defined]
    assert gmail_oauth.issued_tokens()  # an access token was fetched and sent
    assert_nothing_leaks(exc, oauth_secrets(gmail_oauth, options["oauth_refresh_token"]), SANDBOX_USER)


# -- a later failure on the same connection --------------------------------------------------------


@pytest.mark.parametrize("auth", ["app_password", "oauth2"])
def test_failure_after_signing_in(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, one_try: None, auth: str
) -> None:
    options = gmail_sandbox.mailer_options("starttls")
    secrets = [SANDBOX_PASSWORD]
    if auth == "oauth2":
        options |= gmail_oauth.mailer_options() | {"password": None}
        secrets = oauth_secrets(gmail_oauth, options["oauth_refresh_token"])
    backend = EmailBackend(**options)
    assert backend.open() is True  # signed in
    gmail_sandbox.inject("daily_quota")
    with backend:
        exc = raised(lambda: backend.send_messages([message()]))
    assert exc.smtp_code == 550  # type: ignore[attr-defined]
    if auth == "oauth2":
        secrets = oauth_secrets(gmail_oauth, options["oauth_refresh_token"])
    assert_nothing_leaks(exc, secrets, SANDBOX_USER)
