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

import base64
import html
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.checks import run_checks
from django.core.mail import EmailMessage
from django.http import HttpRequest
from django.test import RequestFactory
from django.views import debug
from django.views.debug import ExceptionReporter

from django_gmail_smtp import checks, reporting, session
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


def test_sign_in_frames_are_marked_sensitive_for_djangos_reporter(tmp_path: Path) -> None:
    """Should a failure ever escape from the SASL functions untrimmed (an exception that is not an
    ``Exception``, a caller of ``sign_in_with_password()``), Django's reporter still hides every
    frame below them: ``sensitive_variables`` works on the Django version under test."""
    with EchoServer(tmp_path, mode="hangup") as server:
        context = ssl.create_default_context(cafile=server.ca_file)
        client = smtplib.SMTP_SSL(server.host, server.port, context=context, timeout=5)
        client.ehlo()
        exc = raised(lambda: session.sign_in_with_password(client, ECHO_USER, ECHO_PASSWORD))
        client.close()
    needles = all_forms([ECHO_PASSWORD], ECHO_USER)
    assert frame_leaks(exc, needles)  # the raw frames hold the secret: why SMTPSession.login() drops them
    assert "_sasl" in reports(exc)
    assert found_in(reports(exc), needles) == []


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


# -- EMAIL_URL and the reporter filter ---------------------------------------------------------------

URL_PASSWORD = "urlpasswordxyzw"
EMAIL_URL = f"smtp+tls://me%40gmail.com:{URL_PASSWORD}@smtp.gmail.com:587"
OUR_FILTER = "django_gmail_smtp.reporting.SafeExceptionReporterFilter"
DJANGOS_FILTER = "django.views.debug.SafeExceptionReporterFilter"
SECRETS_OF_SETTINGS = {
    "client": "GOCSPX-clientsecretvalue",
    "refresh": "1//refresh-token-of-settings",
    "database": "dbpassword1234",
    "redis": "redispass5678",
}


@pytest.fixture
def url_settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """EMAIL_URL in the environment and in settings, URLs with passwords deeper in settings."""
    monkeypatch.setenv("EMAIL_URL", EMAIL_URL)
    settings.EMAIL_URL = EMAIL_URL
    settings.GMAIL_SMTP = {
        "OAUTH_CLIENT_SECRET": SECRETS_OF_SETTINGS["client"],
        "OAUTH_REFRESH_TOKEN": SECRETS_OF_SETTINGS["refresh"],
    }
    settings.MY_SERVICES = {"queues": [("redis", f"redis://:{SECRETS_OF_SETTINGS['redis']}@127.0.0.1:6379/0")]}
    # The client secret under a name Django's filter does not hide, and base64 encoded.
    settings.MY_NOTES = ["client=" + SECRETS_OF_SETTINGS["client"], b64(SECRETS_OF_SETTINGS["refresh"])]
    debug.get_default_exception_reporter_filter.cache_clear()  # Django keeps one filter per process
    yield settings
    debug.get_default_exception_reporter_filter.cache_clear()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def leaked(text: str) -> list[str]:
    return [s for s in (URL_PASSWORD, *SECRETS_OF_SETTINGS.values()) if s in text or b64(s) in text]


def failing_view(request: HttpRequest) -> None:
    raise ValueError("boom")


def debug_page(request: HttpRequest) -> str:
    exc = raised(lambda: failing_view(request))
    response = debug.technical_500_response(request, type(exc), exc, exc.__traceback__)
    return html.unescape(response.content.decode())


@pytest.mark.parametrize(("reporter_filter", "hidden"), [(OUR_FILTER, True), (DJANGOS_FILTER, False)])
def test_debug_page_hides_urls_in_settings_and_the_environment(
    url_settings: Any, rf: RequestFactory, reporter_filter: str, hidden: bool
) -> None:
    url_settings.DEBUG = True
    url_settings.DEFAULT_EXCEPTION_REPORTER_FILTER = reporter_filter
    # Under runserver request.META carries the process environment.
    request = rf.get("/", EMAIL_URL=EMAIL_URL, DATABASE_URL=f"postgres://app:{SECRETS_OF_SETTINGS['database']}@db/app")
    page = debug_page(request)
    assert "smtp+tls://me%40gmail.com:" in page  # EMAIL_URL is shown, from settings and META
    if hidden:
        assert leaked(page) == []
        assert "smtp+tls://me%40gmail.com:********************@smtp.gmail.com:587" in page
    else:  # Django's own filter: the test would see a leak
        assert {URL_PASSWORD, *SECRETS_OF_SETTINGS.values()} - {SECRETS_OF_SETTINGS["refresh"]} <= set(leaked(page))


def test_error_mail_hides_urls_and_secrets_in_frame_variables(url_settings: Any, rf: RequestFactory) -> None:
    url_settings.DEFAULT_EXCEPTION_REPORTER_FILTER = OUR_FILTER

    def resolve_mail_settings() -> None:
        url = EMAIL_URL  # noqa: F841 - a local, as conf.resolve() holds one while parsing
        noted = {"secret_in_a_dict": "id=" + SECRETS_OF_SETTINGS["client"]}  # noqa: F841
        raise ValueError("cannot parse EMAIL_URL")

    exc = raised(resolve_mail_settings)
    reporter = ExceptionReporter(rf.get("/"), type(exc), exc, exc.__traceback__, is_email=True)
    report = html.unescape(reporter.get_traceback_html()) + reporter.get_traceback_text()
    assert "resolve_mail_settings" in report
    assert leaked(report) == []
    url_settings.DEFAULT_EXCEPTION_REPORTER_FILTER = DJANGOS_FILTER
    debug.get_default_exception_reporter_filter.cache_clear()
    reporter = ExceptionReporter(rf.get("/"), type(exc), exc, exc.__traceback__, is_email=True)
    assert URL_PASSWORD in html.unescape(reporter.get_traceback_html())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("smtp+tls://u%40x:p%40ss@h:587", "smtp+tls://u%40x:***@h:587"),
        ("see https://a:b@c/d?e=f:g@h y", "see https://a:***@c/d?e=f:g@h y"),
        ("redis://:pw@h/0", "redis://:***@h/0"),
        ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),  # an unencoded @: hidden whole
        ("smtp://u@h and smtp://h", "smtp://u@h and smtp://h"),
        ("no url: a:b@c", "no url: a:b@c"),
    ],
)
def test_url_passwords_are_hidden_wherever_they_are(text: str, expected: str) -> None:
    assert reporting.hide_url_passwords(text, "***") == expected


# -- W010 --------------------------------------------------------------------------------------------


def deploy_warnings() -> list[Any]:
    return [m for m in checks.check_deploy() if m.id == "gmail_smtp.W010"]


def test_w010_warns_while_email_url_has_a_password_and_the_filter_would_show_it(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAIL_URL", EMAIL_URL)
    [warning] = deploy_warnings()
    assert "EMAIL_URL contains a password (os.environ['EMAIL_URL'])" in warning.msg
    assert DJANGOS_FILTER in warning.msg
    assert OUR_FILTER in warning.hint
    assert URL_PASSWORD not in warning.msg + warning.hint
    # Also through Django's registry: a deploy check only.
    assert "gmail_smtp.W010" in {m.id for m in run_checks(include_deployment_checks=True)}
    assert "gmail_smtp.W010" not in {m.id for m in run_checks()}
    settings.EMAIL_URL = EMAIL_URL
    [warning] = deploy_warnings()
    assert "(os.environ['EMAIL_URL'], settings.EMAIL_URL)" in warning.msg
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = OUR_FILTER
    assert deploy_warnings() == []
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = "tests.test_reporting.ProjectFilter"
    assert deploy_warnings() == []  # a subclass of ours
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = "tests.test_reporting.OtherFilter"
    assert len(deploy_warnings()) == 1  # Django's, extended some other way


def test_w010_is_silent_without_a_password_in_email_url(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_URL", "smtp+tls://me%40gmail.com@smtp.gmail.com:587")
    settings.EMAIL_URL = "not a url"
    assert deploy_warnings() == []
    monkeypatch.delenv("EMAIL_URL")
    assert deploy_warnings() == []


class ProjectFilter(reporting.SafeExceptionReporterFilter):
    pass


class OtherFilter(debug.SafeExceptionReporterFilter):
    pass
