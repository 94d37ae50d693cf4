"""Servers that echo the credentials back: nothing of them in exceptions, transcripts, logs,
``gmail_check`` (text and ``--json``) or the admin's result page. And the one redactor's rules.

The hostile server (:mod:`tests.echo_server`) is real: implicit TLS on a loopback port, a real
SASL exchange, and replies that repeat every AUTH line verbatim and base64-decoded.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.mail import EmailMessage
from django.test import Client
from django.urls import reverse

from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.exceptions import GmailSMTPError
from django_gmail_smtp.redaction import REDACTED, Redactor, detach
from django_gmail_smtp.sandbox import OAuthServer

from .conftest import gmail_check, legacy_api
from .echo_server import EchoServer
from .leaks import all_forms, forms, found_in, frame_leaks, raised

USER = "echo@example.com"
PASSWORD = "echoechoechoecho"  # the echo server's test password


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- the redactor (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"535 {PASSWORD}",
        f"you sent: AUTH LOGIN {b64(PASSWORD)}",
        f"you sent: AUTH PLAIN {b64(chr(0) + USER + chr(0) + PASSWORD)}",
        f"AUTH PLAIN {b64(USER + chr(0) + USER + chr(0) + PASSWORD)}",
        f"XOAUTH2 {b64(f'user={USER}' + chr(1) + 'auth=Bearer ' + PASSWORD + chr(1) + chr(1))}",
        f"urlsafe {base64.urlsafe_b64encode(('??>>' + PASSWORD).encode()).decode().rstrip('=')}",
        f"glued cmd=AUTH+PLAIN+{b64(chr(0) + USER + chr(0) + PASSWORD)}",
        f"form body client_secret=x%2F{PASSWORD}%3D",
    ],
)
def test_every_form_of_a_secret_is_hidden(text: str) -> None:
    redacted = Redactor(PASSWORD)(text)
    assert REDACTED in redacted
    assert found_in(redacted, forms(PASSWORD, USER)) == []
    assert PASSWORD not in base64.b64decode(b64(redacted)).decode()


def test_other_text_is_left_alone_and_short_values_are_not_secrets() -> None:
    redactor = Redactor("abc", "", PASSWORD)
    text = "250-smtp.gmail.com at your service, abc\n250 SMTPUTF8 VXNlcm5hbWU6"
    assert redactor(text) == text
    assert redactor.redact_bytes(text.encode() + b"\xff") == text.encode() + b"\xff"
    assert redactor.redact_bytes(f"x {PASSWORD} \xff".encode("latin-1")) == f"x {REDACTED} \xff".encode("latin-1")
    assert PASSWORD not in repr(redactor)
    assert not Redactor("abc")
    assert Redactor(PASSWORD)


def test_added_secrets_are_hidden_from_then_on() -> None:
    redactor = Redactor(PASSWORD)
    redactor.add("ya29.access-token-value")
    assert redactor("Bearer ya29.access-token-value") == f"Bearer {REDACTED}"


def test_detach_drops_traceback_and_chain() -> None:
    def fail() -> None:
        secret = PASSWORD  # noqa: F841 - a local an error report would show
        raise ValueError("inner")

    try:
        try:
            fail()
        except ValueError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        failure = detach(outer)
    assert failure.__traceback__ is None
    assert (failure.__cause__, failure.__context__) == (None, None)


# -- the echoing server ----------------------------------------------------------------------------


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[EchoServer]:
    with EchoServer(tmp_path) as server:
        yield server


@pytest.fixture
def accepting(tmp_path: Path) -> Iterator[EchoServer]:
    with EchoServer(tmp_path, mode="accept") as server:
        yield server


@pytest.fixture
def one_try(settings: Any) -> None:
    settings.GMAIL_SMTP = {"RETRY_ATTEMPTS": 1}


@pytest.fixture
def transcript_log(settings: Any, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    settings.GMAIL_SMTP = {**(getattr(settings, "GMAIL_SMTP", None) or {}), "TRANSCRIPT": True, "RETRY_ATTEMPTS": 1}
    caplog.set_level(logging.DEBUG, logger="django_gmail_smtp.transcript")
    return caplog


def message() -> EmailMessage:
    return EmailMessage("Hi", "Body", USER, ["to@example.com"])


def assert_echoed(server: EchoServer, needles: set[str], context: str = "") -> None:
    """The server did send the secrets back (else the test proves nothing)."""
    assert found_in("\n".join(server.sent), needles), context


def test_echoed_password_is_not_in_the_exception_or_the_transcript(
    refusing: EchoServer, transcript_log: pytest.LogCaptureFixture
) -> None:
    backend = EmailBackend(**refusing.options(username=USER, password=PASSWORD))
    exc: Any = raised(lambda: backend.send_messages([message()]))
    needles = forms(PASSWORD, USER)
    assert_echoed(refusing, needles)
    assert isinstance(exc, GmailSMTPError)
    assert exc.smtp_code == 535
    assert b"you sent: AUTH" in exc.smtp_error  # the echo is kept, without the secrets
    for text in (str(exc), exc.smtp_error, repr(exc.args), backend.transcript.render(), transcript_log.text):
        assert found_in(text, needles) == []
    assert frame_leaks(exc, needles) == []
    assert "-> AUTH PLAIN <redacted>" in transcript_log.text


def test_mechanisms_in_smtplibs_order_and_fallback(tmp_path: Path, one_try: None) -> None:
    """Our own SASL exchanges behave as smtplib's login(): CRAM-MD5, PLAIN, LOGIN; the next after a refusal."""
    with EchoServer(tmp_path, offer="LOGIN PLAIN") as server:
        exc: Any = raised(
            lambda: EmailBackend(**server.options(username=USER, password=PASSWORD)).send_messages([message()])
        )
    assert exc.smtp_code == 535
    assert [line.split(" ")[:2] for line in server.received if line.startswith("AUTH")] == [
        ["AUTH", "PLAIN"],
        ["AUTH", "LOGIN"],
    ]
    assert server.received[-1] == b64(PASSWORD)  # LOGIN: the username on the AUTH line, then the password
    with EchoServer(tmp_path, mode="accept", offer="CRAM-MD5 PLAIN") as server:
        assert EmailBackend(**server.options(username=USER, password=PASSWORD)).send_messages([message()]) == 1
    digest = hmac.HMAC(PASSWORD.encode(), server.challenge.encode(), "md5").hexdigest()
    assert server.received[server.received.index("AUTH CRAM-MD5") + 1] == b64(f"{USER} {digest}")


def test_a_non_ascii_password_is_sent_as_utf8(tmp_path: Path) -> None:
    """smtplib's login() raised UnicodeEncodeError here; RFC 4616 says UTF-8."""
    password = "pässwörd-ünïcode"
    with EchoServer(tmp_path, mode="accept", offer="PLAIN") as server:
        assert EmailBackend(**server.options(username=USER, password=password)).send_messages([message()]) == 1
    assert f"AUTH PLAIN {b64(chr(0) + USER + chr(0) + password)}" in server.received


def test_echo_after_a_successful_sign_in_is_not_in_the_transcript(
    accepting: EchoServer, transcript_log: pytest.LogCaptureFixture
) -> None:
    backend = EmailBackend(**accepting.options(username=USER, password=PASSWORD))
    assert backend.send_messages([message()]) == 1
    needles = forms(PASSWORD, USER)
    assert_echoed(accepting, needles)
    assert "still remembering" in backend.transcript.render()
    assert found_in(backend.transcript.render() + transcript_log.text, needles) == []


def test_echoed_xoauth2_string_and_access_token_are_hidden(
    accepting: EchoServer,
    refusing: EchoServer,
    gmail_oauth: OAuthServer,
    transcript_log: pytest.LogCaptureFixture,
) -> None:
    refresh_token = gmail_oauth.issue_refresh_token(USER)

    def backend(server: EchoServer) -> EmailBackend:
        cache.clear()  # a new access token for each server
        return EmailBackend(**server.options(username=USER) | gmail_oauth.mailer_options(refresh_token))

    signed_in = backend(accepting)
    assert signed_in.send_messages([message()]) == 1
    refused = backend(refusing)
    exc = raised(lambda: refused.send_messages([message()]))
    needles = all_forms([gmail_oauth.client_secret, refresh_token, *gmail_oauth.issued_tokens()], USER)
    assert_echoed(accepting, needles)
    assert_echoed(refusing, needles)
    assert "auth=Bearer <redacted>" in signed_in.transcript.render()
    texts = [signed_in.transcript.render(), refused.transcript.render(), transcript_log.text, str(exc), repr(exc.args)]
    assert found_in("\n".join(texts), needles) == []
    assert frame_leaks(exc, needles) == []


# -- gmail_check and the admin -----------------------------------------------------------------------


@legacy_api  # the legacy EMAIL_* settings, on purpose
@pytest.mark.parametrize("mode", ["refuse", "accept"])
@pytest.mark.parametrize("output", ["text", "json"])
@pytest.mark.parametrize("auth", ["app_password", "oauth2"])
def test_gmail_check_output(
    request: pytest.FixtureRequest,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mode: str,
    output: str,
    auth: str,
) -> None:
    secrets, gmail_smtp = [PASSWORD], {}
    if auth == "oauth2":
        oauth: OAuthServer = request.getfixturevalue("gmail_oauth")
        refresh_token = oauth.issue_refresh_token(USER)
        for name, value in oauth.mailer_options(refresh_token).items():
            monkeypatch.setenv(f"GMAIL_SMTP_{name.upper()}", value)
        gmail_smtp = oauth.settings()
    with EchoServer(tmp_path, mode=mode) as server:
        settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
        settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = USER, PASSWORD if auth == "app_password" else ""
        settings.EMAIL_USE_SSL, settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = True, False, 5
        settings.GMAIL_SMTP = {**gmail_smtp, "SSL_CAFILE": server.ca_file}
        args = ["--json"] if output == "json" else ["-v", "2"]
        outcome = gmail_check(*args, "--send-to", "to@example.com")
    if auth == "oauth2":
        secrets = [oauth.client_secret, refresh_token, *oauth.issued_tokens()]
    needles = all_forms(secrets, USER)
    assert_echoed(server, needles, outcome.text)
    assert outcome.code == (0 if mode == "accept" else 9), outcome.text
    if output == "json":
        assert "you sent: AUTH" in json.dumps(outcome.doc["transcript"])
    else:
        assert "you sent: AUTH" in outcome.out  # the transcript is shown (-v 2), echo included
    assert found_in(outcome.text, needles) == []


@pytest.mark.django_db
def test_admin_result_page(admin_client: Client, settings: Any, refusing: EchoServer) -> None:
    settings.GMAIL_SMTP = {"SSL_CAFILE": refusing.ca_file}
    data = {
        "name": "echo",
        "username": USER,
        "auth_method": "app_password",
        "app_password": PASSWORD,
        "host": refusing.host,
        "port": refusing.port,
        "security": "ssl",
        "timeout": "5",
        "from_aliases": "",
        "enabled": "on",
    }
    response = admin_client.post(reverse("admin:gmail_smtp_gmailaccount_test_new"), data)
    page = response.content.decode()
    assert 'data-outcome="failed"' in page
    assert "you sent: AUTH" in page
    needles = forms(PASSWORD, USER)
    assert_echoed(refusing, needles)
    assert found_in(page, needles) == []
