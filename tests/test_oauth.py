"""OAuth2 (XOAUTH2) sign-in, end to end over loopback: the sandbox SMTP server, its local token
server, google-auth's real HTTP requests, the backend, gmail_check, gmail_authorize and the admin.

Nothing is mocked: every token comes from the sandbox's OAuth2 server and every sign-in is a
real XOAUTH2 exchange with the sandbox.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import queue
import smtplib
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import django
import jsonschema  # type: ignore[import-untyped]
import pytest
import requests
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from django_gmail_smtp import conf, diagnose, oauth, rules
from django_gmail_smtp.accounts import account_options
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.causes import CATALOGUE
from django_gmail_smtp.exceptions import GmailConfigError, GmailSMTPError, OAuthError
from django_gmail_smtp.models import GmailAccount
from django_gmail_smtp.sandbox import SANDBOX_USER, GmailSandbox, OAuthServer
from django_gmail_smtp.sandbox.state import XOAUTH2_CHALLENGE

from .conftest import gmail_check

OTHER_USER = "other@example.com"


# -- helpers -------------------------------------------------------------------------------


def message(**kwargs: Any) -> EmailMessage:
    defaults = {"subject": "Hello", "body": "Body", "from_email": SANDBOX_USER, "to": ["to@example.com"]}
    return EmailMessage(**(defaults | kwargs))


@pytest.fixture
def no_reuse(settings: Any, gmail_oauth: OAuthServer) -> None:
    """Every send opens (and signs in on) a new connection."""
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "REUSE_CONNECTIONS": False, "RETRY_ATTEMPTS": 1}


@pytest.fixture
def oauth_options(gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer) -> Callable[..., dict[str, Any]]:
    """``oauth_options(mode="starttls", refresh_token=None, user=None)``: backend options, no password."""

    def make(mode: str = "starttls", refresh_token: str | None = None, user: str | None = None) -> dict[str, Any]:
        options = gmail_sandbox.mailer_options(mode) | gmail_oauth.mailer_options(refresh_token, user=user)  # type: ignore[arg-type]
        options["password"] = None
        return options

    return make


def secrets_of(server: OAuthServer) -> list[str]:
    """Everything that must never be shown: the client secret and every token issued."""
    return [server.client_secret, *server.issued_tokens()]


def assert_no_secret(text: str, server: OAuthServer) -> None:
    for secret in secrets_of(server):
        assert secret not in text, "a secret leaked"
        assert secret[8:40] not in text, "part of a secret leaked"


def xoauth2_records(sandbox: GmailSandbox) -> list[Any]:
    return [record for record in sandbox.auth_log if record.mechanism == "XOAUTH2"]


# -- the resolver --------------------------------------------------------------------------


def test_options_from_the_environment_with_provenance_and_hidden_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_ID", "1234-abc.apps.googleusercontent.com")
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_SECRET", "GOCSPX-topsecretvalue")
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_REFRESH_TOKEN", "1//refresh-token-value")
    config = conf.resolve({"username": "me@example.com"})
    assert config.uses_oauth2
    assert config.has_credentials
    assert config.auth_method == "oauth2"
    assert config.provenance["oauth_refresh_token"] == conf.Value(
        conf.SOURCE_ENVIRONMENT, "GMAIL_SMTP_OAUTH_REFRESH_TOKEN"
    )
    assert "GOCSPX" not in repr(config)
    assert "refresh-token-value" not in repr(config)
    shown = {name: value for name, value, _origin in config.describe()}
    assert shown["oauth_client_id"] == "1234-abc.apps.googleusercontent.com"
    assert shown["oauth_client_secret"] == "<21 characters, hidden>"
    assert shown["oauth_refresh_token"] == "<22 characters, hidden>"
    assert rules.signs_in_with_password(config) is False
    assert [p.id for p in rules.check_config(config) if p.is_error] == []  # E007 waived


def test_settings_and_keyword_arguments_rank_as_usual(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GMAIL_SMTP = {"OAUTH_CLIENT_ID": "from-settings", "OAUTH_CLIENT_SECRET": "s3cret-from-settings"}
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_ID", "from-env")
    config = conf.resolve({"oauth_refresh_token": "1//arg"})
    assert config.oauth_client_id == "from-settings"
    assert config.provenance["oauth_client_id"].origin == "GMAIL_SMTP['OAUTH_CLIENT_ID']"
    assert config.provenance["oauth_refresh_token"].source == conf.SOURCE_ARGUMENT
    password_config = conf.resolve({"username": "me@gmail.com", "password": "abcdabcdabcdabcd"}, alias=None)
    assert password_config.uses_oauth2  # a client id is set: OAuth2 (W009 says the password is ignored)
    assert "gmail_smtp.W009" in [p.id for p in rules.check_config(password_config)]
    explicit = conf.resolve({"password": "abcdabcdabcdabcd", "auth_method": "app_password"})
    assert not explicit.uses_oauth2
    assert [row for row in explicit.describe() if row[0].startswith("oauth")] == []


def test_unknown_auth_method_is_e017() -> None:
    with pytest.raises(GmailConfigError) as info:
        conf.resolve({"auth_method": "kerberos"})
    assert info.value.check_id == "gmail_smtp.E017"
    assert "'app_password'" in str(info.value)


def test_oauth_rules_name_what_is_missing(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = conf.resolve({"username": "me@gmail.com", "oauth_client_id": "id"})
    found = {p.id: p for p in rules.check_config(config)}
    assert set(found) >= {"gmail_smtp.E015", "gmail_smtp.E016"}
    assert "gmail_smtp.E007" not in found
    assert "gmail_authorize" in str(found["gmail_smtp.E015"].hint)
    assert "GMAIL_SMTP['OAUTH_CLIENT_SECRET']" in str(found["gmail_smtp.E016"].message)
    assert "(oauth_client_id= argument)" in str(found["gmail_smtp.E015"].message)
    # E014: the extra is missing -> the backend refuses to start, naming the pip command.
    monkeypatch.setitem(sys.modules, "google.oauth2.credentials", None)  # its import now fails, as uninstalled
    assert not rules.oauth_library_available()
    complete: dict[str, Any] = {
        "username": "me@gmail.com",
        "oauth_client_id": "id",
        "oauth_client_secret": "s",
        "oauth_refresh_token": "r",
    }
    with pytest.raises(GmailConfigError, match=r"django-gmail-smtp\[oauth\]") as info:
        EmailBackend(**complete)
    assert info.value.check_id == "gmail_smtp.E014"
    # E018: an endpoint that would carry secrets in clear text.
    problems = rules.check_app_settings({"OAUTH_TOKEN_URI": "http://tokens.example.com/token"})
    assert [p.id for p in problems] == ["gmail_smtp.E018"]
    assert rules.check_app_settings({"OAUTH_TOKEN_URI": "http://127.0.0.1:8/token"}) == []


def same_words(error: GmailConfigError, problem: rules.Problem) -> None:
    assert (error.check_id, error.message, error.hint) == (problem.id, str(problem.message), str(problem.hint))


def test_oauth_errors_are_raised_in_the_rules_words(gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer) -> None:
    """One wording, one id: what the backend and oauth.py raise is the rule's problem (E015,
    E016, E018), never a second text under the same id."""
    options = gmail_sandbox.mailer_options() | gmail_oauth.mailer_options()
    options["password"] = None
    for missing, check_id in (("oauth_refresh_token", "gmail_smtp.E015"), ("oauth_client_secret", "gmail_smtp.E016")):
        incomplete = options | {missing: None}
        [problem] = [p for p in rules.check_config(conf.resolve(incomplete)) if p.id == check_id]
        with pytest.raises(GmailConfigError) as info:  # refused when the backend starts, not at sign-in
            EmailBackend(**incomplete)
        same_words(info.value, problem)
    [problem] = rules.check_app_settings({"OAUTH_TOKEN_URI": "http://tokens.example.com/token"})
    with pytest.raises(GmailConfigError) as info:
        oauth.check_endpoint("http://tokens.example.com/token", "OAUTH_TOKEN_URI")
    same_words(info.value, problem)


@pytest.mark.parametrize(
    ("uri", "safe"),
    [
        ("https://oauth2.googleapis.com/token", True),
        ("http://127.0.0.1:8/token", True),
        ("http://127.8.9.10/token", True),
        ("http://[::1]:8/token", True),
        ("http://[::ffff:127.0.0.1]:8/token", True),
        ("http://localhost:8/token", True),
        ("http://LocalHost/token", True),
        # Names that only a resolver decides about: never plain HTTP.
        ("http://tokens.localhost:8/token", False),
        ("http://localhost.example.com/token", False),
        ("http://127.1/token", False),
        ("http://2130706433/token", False),
        ("http://tokens.example.com/token", False),
        ("http://[::1/token", False),
        ("ftp://127.0.0.1/token", False),
        ("https:///token", False),
    ],
)
def test_plain_http_endpoints_only_for_localhost_and_loopback_addresses(uri: str, safe: bool) -> None:
    assert oauth.endpoint_is_safe(uri) is safe
    # The same rule behind check E018 and behind the runtime's refusal.
    assert [p.id for p in rules.check_app_settings({"OAUTH_TOKEN_URI": uri})] == ([] if safe else ["gmail_smtp.E018"])
    if safe:
        oauth.check_endpoint(uri, "OAUTH_TOKEN_URI")
    else:
        with pytest.raises(GmailConfigError) as info:
            oauth.check_endpoint(uri, "OAUTH_TOKEN_URI")
        assert info.value.check_id == "gmail_smtp.E018"


def test_a_localhost_subdomain_token_endpoint_is_refused_before_any_request(
    settings: Any, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]]
) -> None:
    settings.GMAIL_SMTP = {
        **settings.GMAIL_SMTP,
        "OAUTH_TOKEN_URI": gmail_oauth.token_uri.replace("127.0.0.1", "tokens.localhost"),
    }
    with pytest.raises(GmailConfigError, match="not an https:// address") as info:
        EmailBackend(**oauth_options()).send_messages([message()])
    assert info.value.check_id == "gmail_smtp.E018"
    assert gmail_oauth.token_requests == 0


# -- signing in ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_first_sign_in_sends_with_xoauth2(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]], mode: str
) -> None:
    backend = EmailBackend(**oauth_options(mode))
    assert backend.config.uses_oauth2
    assert backend.send_messages([message(subject=f"oauth via {mode}")]) == 1
    [received] = gmail_sandbox.wait_for_messages(1)
    assert received.auth_user == SANDBOX_USER
    [record] = xoauth2_records(gmail_sandbox)
    assert record.ok
    assert record.initial_response
    assert record.command_length < oauth.MAX_INLINE_AUTH
    assert gmail_oauth.token_requests == 1
    transcript = backend.transcript.render()
    assert "-> AUTH XOAUTH2 <redacted>" in transcript
    assert "<- 235 2.7.0 Accepted" in transcript
    assert_no_secret(transcript, gmail_oauth)


def test_cached_token_is_reused_across_connections_and_never_in_the_cache_key(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]], no_reuse: None
) -> None:
    options = oauth_options()
    for subject in ("one", "two", "three"):
        assert EmailBackend(**options).send_messages([message(subject=subject)]) == 1
    assert len(gmail_sandbox.wait_for_messages(3)) == 3
    assert gmail_sandbox.connections == 3
    assert [r.ok for r in xoauth2_records(gmail_sandbox)] == [True, True, True]
    assert gmail_oauth.token_requests == 1  # one refresh, then the cache
    key = oauth.cache_key(options["oauth_client_id"], options["oauth_refresh_token"])
    assert options["oauth_refresh_token"] not in key
    assert options["oauth_client_id"] not in key
    entry = cache.get(key)
    assert entry["expires_at"] > time.time() + 3000
    assert options["oauth_refresh_token"] not in json.dumps(entry)


def test_token_close_to_expiry_is_not_cached(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]], no_reuse: None
) -> None:
    gmail_oauth.access_token_lifetime = int(oauth.REFRESH_MARGIN)  # expires within the margin
    options = oauth_options()
    for _ in range(2):
        assert EmailBackend(**options).send_messages([message()]) == 1
    assert gmail_oauth.token_requests == 2


def test_expired_token_is_refreshed_and_the_sign_in_retried_once(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]], no_reuse: None
) -> None:
    options = oauth_options()
    assert EmailBackend(**options).send_messages([message(subject="before")]) == 1
    gmail_oauth.expire_access_tokens()  # the cached token is still "valid" for the client
    backend = EmailBackend(**options)
    assert backend.send_messages([message(subject="after")]) == 1
    assert [m.message["Subject"] for m in gmail_sandbox.wait_for_messages(2)] == ["before", "after"]
    records = xoauth2_records(gmail_sandbox)
    assert [(r.ok, r.reason) for r in records] == [
        (True, ""),
        (False, "unknown, expired or revoked token"),
        (True, ""),
    ]
    assert gmail_oauth.token_requests == 2
    transcript = backend.transcript.render()
    # Gmail's error challenge, answered with an empty line, then 535; then the retry.
    assert f"<- 334 {XOAUTH2_CHALLENGE}" in transcript
    assert "Gmail rejected the cached access token: refreshing it and signing in again." in transcript
    assert transcript.count("-> AUTH XOAUTH2 <redacted>") == 2
    assert_no_secret(transcript, gmail_oauth)


def test_token_of_another_account_is_not_retried_and_explained(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]]
) -> None:
    backend = EmailBackend(**oauth_options(user=OTHER_USER))  # authorized as someone else
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        backend.send_messages([message()])
    assert isinstance(info.value, GmailSMTPError)
    assert info.value.cause is CATALOGUE["oauth_token_rejected"]
    assert info.value.smtp_code == 535
    assert len(xoauth2_records(gmail_sandbox)) == 1  # a fresh token: no retry
    assert gmail_oauth.token_requests == 1
    assert "another Google account" in str(info.value)
    assert_no_secret(str(info.value), gmail_oauth)


def test_refresh_token_without_the_gmail_scope_is_explained(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]]
) -> None:
    narrow = gmail_oauth.issue_refresh_token(scope="https://www.googleapis.com/auth/gmail.send")
    with pytest.raises(OAuthError) as info:
        EmailBackend(**oauth_options(refresh_token=narrow)).send_messages([message()])
    exc: Any = info.value
    assert exc.cause is CATALOGUE["oauth_wrong_scope"]
    assert exc.error == "invalid_scope"
    assert xoauth2_records(gmail_sandbox) == []  # never got as far as Gmail


def test_revoked_refresh_token_is_explained_without_any_secret(
    gmail_sandbox: GmailSandbox,
    gmail_oauth: OAuthServer,
    oauth_options: Callable[..., dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = oauth_options()
    assert requests.post(gmail_oauth.revoke_uri, data={"token": options["oauth_refresh_token"]}, timeout=5).ok
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OAuthError) as info:
        EmailBackend(**options).send_messages([message()])
    exc = info.value
    assert isinstance(exc, smtplib.SMTPException)
    assert isinstance(exc, GmailSMTPError)
    assert exc.cause is CATALOGUE["oauth_invalid_grant"]
    assert exc.error == "invalid_grant"
    text = str(exc)
    assert "invalid_grant" in text
    assert "Token has been expired or revoked." in text
    assert "7 days" in text
    assert "gmail_authorize" in text
    assert_no_secret(text + caplog.text, gmail_oauth)
    assert EmailBackend(**options, fail_silently=True).send_messages([message()]) == 0
    assert gmail_sandbox.messages == []


def test_unreachable_token_endpoint_is_temporary(
    settings: Any, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]]
) -> None:
    options = oauth_options()
    with socket_closed_port() as port:
        settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "OAUTH_TOKEN_URI": f"http://127.0.0.1:{port}/token"}
        config = conf.resolve(options)
        with pytest.raises(OAuthError) as info:
            oauth.access_token(config)
    exc: Any = info.value
    assert exc.cause is CATALOGUE["oauth_token_unreachable"]
    assert exc.cause.temporary
    assert "connection refused" in str(exc)


class socket_closed_port:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc_info: object) -> None:
        pass


def test_long_token_goes_alone_after_the_334_continuation(
    gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, oauth_options: Callable[..., dict[str, Any]]
) -> None:
    gmail_oauth.token_length = 1500  # the initial response would make a ~2 KB AUTH line
    options = oauth_options()
    backend = EmailBackend(**options)
    assert backend.send_messages([message()]) == 1
    [record] = xoauth2_records(gmail_sandbox)
    assert record.ok
    assert record.initial_response is False
    assert record.command_length == len("AUTH XOAUTH2")
    lines = backend.transcript.render().splitlines()
    start = lines.index("-> AUTH XOAUTH2")
    assert lines[start : start + 4] == ["-> AUTH XOAUTH2", "<- 334", "-> <redacted>", "<- 235 2.7.0 Accepted"]
    assert_no_secret("\n".join(lines), gmail_oauth)
    # Why: the same token on the AUTH line is refused as Gmail refuses it.
    token = oauth.access_token(conf.resolve(options)).token
    context = ssl.create_default_context(cafile=gmail_sandbox.ca_file)
    with smtplib.SMTP_SSL(gmail_sandbox.host, gmail_sandbox.ssl_port, context=context, timeout=5) as client:
        client.ehlo("test.localhost")
        code, text = client.docmd("AUTH", "XOAUTH2 " + oauth.xoauth2_response(SANDBOX_USER, token))
    assert (code, text.split(b"\n")[0]) == (
        555,
        b"5.5.2 Syntax error, command line too long. For more information, go to",
    )


def test_sandbox_rejects_a_bad_token_exactly_as_gmail(gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer) -> None:
    context = ssl.create_default_context(cafile=gmail_sandbox.ca_file)
    with smtplib.SMTP_SSL(gmail_sandbox.host, gmail_sandbox.ssl_port, context=context, timeout=5) as client:
        client.ehlo("test.localhost")
        assert "XOAUTH2" in client.esmtp_features["auth"].split()
        code, text = client.docmd("AUTH", "XOAUTH2 " + oauth.xoauth2_response(SANDBOX_USER, "ya29.not-issued"))
        assert code == 334
        assert json.loads(base64.b64decode(text)) == {
            "status": "400",
            "schemes": "Bearer",
            "scope": "https://mail.google.com/",
        }
        assert oauth.parse_challenge(text) == {
            "status": "400",
            "schemes": "Bearer",
            "scope": "https://mail.google.com/",
        }
        code, text = client.docmd("")
        assert code == 535
        assert b"5.7.8 Username and Password not accepted" in text
        assert b"BadCredentials" in text


def test_transcript_log_and_repr_never_show_a_token(
    settings: Any,
    gmail_sandbox: GmailSandbox,
    gmail_oauth: OAuthServer,
    oauth_options: Callable[..., dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    no_reuse: None,
) -> None:
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "TRANSCRIPT": True}
    caplog.set_level(logging.DEBUG)
    options = oauth_options()
    gmail_oauth.token_length = 1500
    backend = EmailBackend(**options)
    assert backend.send_messages([message()]) == 1
    gmail_oauth.expire_access_tokens()
    assert EmailBackend(**options).send_messages([message()]) == 1
    assert "-> AUTH XOAUTH2" in caplog.text  # the transcript logger did log
    assert_no_secret(caplog.text + repr(backend.config) + repr(oauth.access_token(backend.config)), gmail_oauth)


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1+")
def test_mailers_options(
    settings: Any, gmail_sandbox: GmailSandbox, oauth_options: Callable[..., dict[str, Any]]
) -> None:
    from django.core import mail

    options = {k: v for k, v in oauth_options().items() if v is not None}
    settings.MAILERS = {"default": {"BACKEND": "django_gmail_smtp.backend.EmailBackend", "OPTIONS": options}}
    backend: Any = mail.mailers["default"]  # type: ignore[attr-defined,unused-ignore]
    assert backend.config.uses_oauth2
    assert (
        backend.config.provenance["oauth_refresh_token"].origin
        == "MAILERS['default']['OPTIONS']['oauth_refresh_token']"
    )
    assert backend.send_messages([message()]) == 1
    assert gmail_sandbox.wait_for_messages(1)[0].auth_user == SANDBOX_USER


# -- stored accounts -----------------------------------------------------------------------


@pytest.mark.django_db
def test_stored_oauth2_account_signs_in(
    settings: Any, gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = GmailAccount(
        name="shop",
        username=SANDBOX_USER,
        auth_method=GmailAccount.AuthMethod.OAUTH2,
        host=gmail_sandbox.host,
        port=gmail_sandbox.starttls_port,
        timeout=5,
    )
    account.set_oauth(client_id=gmail_oauth.client_id, client_secret=gmail_oauth.client_secret)
    account.save()
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "SSL_CAFILE": gmail_sandbox.ca_file}
    with pytest.raises(GmailConfigError, match="has not been authorized yet") as info:
        EmailBackend(account="shop")
    assert "gmail_authorize --account shop" in str(info.value)
    # The rules' words and id; the refresh token of the environment never completes the account.
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_REFRESH_TOKEN", "1//from-the-environment-ignored")
    config = conf.resolve({"account": "shop"}, accounts=account_options)
    assert config.oauth_refresh_token == ""
    [problem] = [p for p in rules.check_config(config) if p.is_error]
    same_words(info.value, problem)
    assert problem.id == "gmail_smtp.E015"
    monkeypatch.delenv("GMAIL_SMTP_OAUTH_REFRESH_TOKEN")
    account.set_oauth(refresh_token=gmail_oauth.issue_refresh_token())
    account.save()
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_REFRESH_TOKEN", "1//from-the-environment-ignored")
    backend = EmailBackend(account="shop")
    assert backend.config.provenance["oauth_refresh_token"].source == conf.SOURCE_DATABASE
    assert backend.send_messages([message()]) == 1
    # An app-password account is not turned into an OAuth2 one by OAuth2 values in the environment.
    account.auth_method = GmailAccount.AuthMethod.APP_PASSWORD
    account.set_password("abcdabcdabcdabcd")
    account.save()
    assert not EmailBackend(account="shop").config.uses_oauth2


# -- gmail_check ---------------------------------------------------------------------------


@pytest.fixture
def oauth_settings(
    settings: Any, monkeypatch: pytest.MonkeyPatch, gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer
) -> str:
    """The EMAIL_* settings at the sandbox, OAuth2 from the environment; returns the refresh token."""
    options = gmail_sandbox.mailer_options("starttls")
    settings.EMAIL_HOST, settings.EMAIL_PORT = options["host"], options["port"]
    settings.EMAIL_HOST_USER = SANDBOX_USER
    settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = True, 3
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "SSL_CAFILE": gmail_sandbox.ca_file}
    refresh_token = gmail_oauth.issue_refresh_token()
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_ID", gmail_oauth.client_id)
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_SECRET", gmail_oauth.client_secret)
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_REFRESH_TOKEN", refresh_token)
    return refresh_token


@pytest.mark.filterwarnings("ignore:The EMAIL_\\w+ setting is deprecated")
def test_gmail_check_shows_the_token_step(oauth_settings: str, gmail_oauth: OAuthServer) -> None:
    outcome = gmail_check("--json")
    code, text = outcome.code, outcome.text
    doc = json.loads(text.split("CommandError")[0])
    assert code == 0, text
    jsonschema.validate(doc, diagnose.JSON_SCHEMA)
    names = [step["name"] for step in doc["steps"]]
    assert names == ["config", "dns", "connect", "greeting", "ehlo", "tls", "ehlo", "token", "auth", "send", "quit"]
    token = doc["steps"][7]
    assert token["status"] == "ok"
    assert 3500 <= token["data"]["expires_in"] <= 3600
    assert token["data"]["scope"] == "https://mail.google.com/"
    assert doc["steps"][8]["data"]["mechanism"] == "XOAUTH2"
    values = {row["name"]: row for row in doc["config"]["values"]}
    assert values["oauth_refresh_token"]["origin"] == "GMAIL_SMTP_OAUTH_REFRESH_TOKEN"
    assert_no_secret(text, gmail_oauth)
    outcome = gmail_check("-v", "3")
    code, text = outcome.code, outcome.text
    assert code == 0
    assert "OAuth2 access token from http://127.0.0.1" in text
    assert "refreshed: the access token expires in" in text
    assert "-> AUTH XOAUTH2 <redacted>" in text
    assert_no_secret(text, gmail_oauth)


@pytest.mark.filterwarnings("ignore:The EMAIL_\\w+ setting is deprecated")
def test_gmail_check_explains_a_revoked_refresh_token_with_its_own_exit_code(
    oauth_settings: str, gmail_oauth: OAuthServer, gmail_sandbox: GmailSandbox
) -> None:
    gmail_oauth.revoke(oauth_settings)
    outcome = gmail_check("-v", "2")
    code, text = outcome.code, outcome.text
    assert code == diagnose.EXIT_CODES["token"] == 12
    assert "OAuth2 access token" in text
    assert "FAIL" in text
    assert "invalid_grant" in text
    assert "Cause id: oauth_invalid_grant" in text
    assert "In production" in text  # the fix names the 7-day "Testing" expiry way out
    assert xoauth2_records(gmail_sandbox) == []
    assert_no_secret(text, gmail_oauth)
    assert "12  no OAuth2 access token" in call_command_help("gmail_check")


def call_command_help(name: str) -> str:
    from django.core.management import load_command_class

    return load_command_class("django_gmail_smtp", name).create_parser("manage.py", name).format_help()


@pytest.mark.filterwarnings("ignore:The EMAIL_\\w+ setting is deprecated")
def test_gmail_check_without_a_refresh_token_stops_at_the_configuration(
    oauth_settings: str, monkeypatch: pytest.MonkeyPatch, gmail_sandbox: GmailSandbox
) -> None:
    monkeypatch.delenv("GMAIL_SMTP_OAUTH_REFRESH_TOKEN")
    outcome = gmail_check()
    code, text = outcome.code, outcome.text
    assert code == diagnose.EXIT_CODES["config"]
    assert "gmail_smtp.E015" in text
    assert gmail_sandbox.connections == 0


# -- gmail_authorize -----------------------------------------------------------------------


class QueueStdin:
    """stdin whose next line the test provides while the command waits."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()

    def readline(self) -> str:
        return self.lines.get(timeout=10)


class Running:
    """A management command running in a thread, its output readable as it comes."""

    def __init__(self, *args: str, **kwargs: Any) -> None:
        self.out = io.StringIO()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, args: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        try:
            call_command("gmail_authorize", *args, stdout=self.out, stderr=self.out, no_color=True, **kwargs)
        except BaseException as exc:
            self.error = exc

    def wait_for_url(self) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in self.out.getvalue().splitlines():
                if line.strip().startswith("http://127.0.0.1"):
                    return line.strip()
            time.sleep(0.02)
        raise AssertionError(f"no authorization address printed: {self.out.getvalue()!r}")

    def finish(self) -> str:
        self.thread.join(15)
        assert not self.thread.is_alive()
        return self.out.getvalue()


def consent(url: str) -> str:
    """What the browser does at the (sandbox) consent page: the address it is sent back to."""
    response = requests.get(url, allow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    return str(response.headers["Location"])


@pytest.fixture
def oauth_account(db: Any, gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer) -> GmailAccount:
    account = GmailAccount(
        name="shop",
        username=SANDBOX_USER,
        auth_method=GmailAccount.AuthMethod.OAUTH2,
        host=gmail_sandbox.host,
        port=gmail_sandbox.starttls_port,
        timeout=5,
    )
    account.set_oauth(client_id=gmail_oauth.client_id, client_secret=gmail_oauth.client_secret)
    account.save()
    return account


@pytest.mark.django_db(transaction=True)
def test_gmail_authorize_headless_stores_the_token_in_the_account(
    oauth_account: GmailAccount, gmail_oauth: OAuthServer
) -> None:
    gmail_oauth.refresh_token_lifetime = 604799  # an app left in "Testing"
    stdin = QueueStdin()
    run = Running("--account", "shop", "--headless", stdin=stdin)
    url = run.wait_for_url()
    params = parse_qs(urlsplit(url).query)
    assert url.startswith(gmail_oauth.auth_uri + "?")
    assert params["scope"] == ["https://mail.google.com/"]
    assert params["code_challenge_method"] == ["S256"]
    assert params["access_type"] == ["offline"]
    assert params["prompt"] == ["consent"]
    assert params["login_hint"] == [SANDBOX_USER]
    assert params["redirect_uri"] == ["http://127.0.0.1:8765/"]
    back = consent(url)
    assert back.startswith("http://127.0.0.1:8765/?code=")
    stdin.lines.put(back + "\n")
    out = run.finish()
    assert run.error is None, out
    assert "stored, encrypted, in the account 'shop'" in out
    assert "This refresh token expires in 7 days" in out
    assert "In production" in out
    oauth_account.refresh_from_db()
    stored = oauth_account.get_oauth()["refresh_token"]
    assert stored in gmail_oauth.issued_tokens()
    assert_no_secret(out, gmail_oauth)
    assert stored not in oauth_account.encrypted_secret


@pytest.mark.django_db(transaction=True)
def test_gmail_authorize_headless_rejects_an_answer_with_another_state(
    oauth_account: GmailAccount, gmail_oauth: OAuthServer
) -> None:
    stdin = QueueStdin()
    run = Running("--account", "shop", "--headless", stdin=stdin)
    back = consent(run.wait_for_url())
    forged = back.replace("state=", "state=x")
    stdin.lines.put(forged + "\n")
    out = run.finish()
    assert isinstance(run.error, CommandError)
    assert run.error.returncode == 1
    assert "does not match" in str(run.error)
    oauth_account.refresh_from_db()
    assert oauth_account.get_oauth()["refresh_token"] == ""
    assert gmail_oauth.token_requests == 0
    assert_no_secret(out, gmail_oauth)


def test_gmail_authorize_loopback_prints_the_environment_line(
    settings: Any, monkeypatch: pytest.MonkeyPatch, gmail_oauth: OAuthServer, tmp_path: Any
) -> None:
    client_file = tmp_path / "client_secret.json"
    client_file.write_text(
        json.dumps({"installed": {"client_id": gmail_oauth.client_id, "client_secret": gmail_oauth.client_secret}})
    )
    run = Running("--client-secrets", str(client_file), "--no-browser", "--username", SANDBOX_USER)
    url = run.wait_for_url()
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    assert redirect_uri.startswith("http://127.0.0.1:")
    assert redirect_uri.endswith("/")
    page = requests.get(url, timeout=5)  # follows the redirect to the command's listener
    assert page.status_code == 200
    assert "You can close this window" in page.text
    out = run.finish()
    assert run.error is None, out
    [line] = [line for line in out.splitlines() if line.startswith("GMAIL_SMTP_OAUTH_REFRESH_TOKEN=")]
    refresh_token = line.split("=", 1)[1]
    assert refresh_token in gmail_oauth.issued_tokens()
    assert_no_secret(out.replace(line, ""), gmail_oauth)  # the one line meant to show it
    # The token works: a sign-in with it.
    config = conf.resolve(
        {
            "username": SANDBOX_USER,
            "oauth_client_id": gmail_oauth.client_id,
            "oauth_client_secret": gmail_oauth.client_secret,
            "oauth_refresh_token": refresh_token,
        }
    )
    assert oauth.access_token(config).has_mail_scope


def test_gmail_authorize_refuses_a_consent_without_the_gmail_scope(
    gmail_oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_ID", gmail_oauth.client_id)
    monkeypatch.setenv("GMAIL_SMTP_OAUTH_CLIENT_SECRET", gmail_oauth.client_secret)
    gmail_oauth.grant_scope = "openid email"  # the user unticked the Gmail box
    stdin = QueueStdin()
    run = Running("--headless", "--port", "9", stdin=stdin)
    stdin.lines.put(consent(run.wait_for_url()) + "\n")
    out = run.finish()
    assert isinstance(run.error, CommandError)
    assert run.error.returncode == diagnose.EXIT_CODES["token"]
    assert "scope https://mail.google.com/" in str(run.error)
    assert "GMAIL_SMTP_OAUTH_REFRESH_TOKEN=" not in out


# -- the admin -----------------------------------------------------------------------------


def account_url(account: GmailAccount, view: str = "change") -> str:
    return reverse(f"admin:gmail_smtp_gmailaccount_{view}", args=[account.pk])


@pytest.fixture
def admin_settings(settings: Any, gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer) -> None:
    settings.GMAIL_SMTP = {**settings.GMAIL_SMTP, "SSL_CAFILE": gmail_sandbox.ca_file}


def test_admin_authorize_round_trip_then_test_connection(
    admin_client: Client, oauth_account: GmailAccount, gmail_oauth: OAuthServer, admin_settings: None
) -> None:
    page = admin_client.get(account_url(oauth_account)).content.decode()
    assert "Authorize with Google" in page
    assert "OAuth2: client stored, not authorized yet" in page
    assert "/admin/gmail_smtp/gmailaccount/oauth-callback/" in page  # the redirect URI to register
    assert admin_client.get(account_url(oauth_account, "oauth_authorize")).status_code == 405
    response = admin_client.post(account_url(oauth_account, "oauth_authorize"))
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(gmail_oauth.auth_uri + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["redirect_uri"] == ["http://testserver/admin/gmail_smtp/gmailaccount/oauth-callback/"]
    assert query["login_hint"] == [SANDBOX_USER]
    back = urlsplit(consent(location))  # Google's side: consent, then back to the admin
    assert back.netloc == "testserver"
    response = admin_client.get(f"{back.path}?{back.query}", follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert "is authorized: the refresh token is stored, encrypted." in html
    assert "OAuth2: client stored and authorized" in html
    oauth_account.refresh_from_db()
    assert oauth_account.get_oauth()["refresh_token"] in gmail_oauth.issued_tokens()
    # The answer cannot be replayed: its state is used up.
    assert admin_client.get(f"{back.path}?{back.query}").status_code == 400
    # Test connection now signs in with XOAUTH2, showing the token step.
    result = admin_client.post(
        account_url(oauth_account, "test"),
        {
            "name": "shop",
            "username": SANDBOX_USER,
            "auth_method": "oauth2",
            "oauth_client_id": gmail_oauth.client_id,
            "host": oauth_account.host,
            "port": oauth_account.port,
            "security": "starttls",
            "timeout": "5",
            "enabled": "on",
        },
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    ).content.decode()
    assert 'data-outcome="ok"' in result, result
    assert "OAuth2 access token" in result
    assert "AUTH XOAUTH2 &lt;redacted&gt;" in result
    assert_no_secret(html + result + page, gmail_oauth)


def test_admin_callback_with_a_wrong_state_is_rejected(
    admin_client: Client, oauth_account: GmailAccount, gmail_oauth: OAuthServer, admin_settings: None
) -> None:
    location = admin_client.post(account_url(oauth_account, "oauth_authorize"))["Location"]
    back = urlsplit(consent(location))
    forged = back.query.replace("state=", "state=forged")
    response = admin_client.get(f"{back.path}?{forged}")
    assert response.status_code == 400
    assert "wrong or expired state" in response.content.decode()
    # A state from another browser session is no better.
    other = Client()
    other.force_login(User.objects.get(username="admin"))
    assert other.get(f"{back.path}?{back.query}").status_code == 400
    assert gmail_oauth.token_requests == 0
    oauth_account.refresh_from_db()
    assert oauth_account.get_oauth()["refresh_token"] == ""


def test_admin_authorize_denied_at_the_consent_page(
    admin_client: Client, oauth_account: GmailAccount, gmail_oauth: OAuthServer, admin_settings: None
) -> None:
    gmail_oauth.deny = True
    back = urlsplit(consent(admin_client.post(account_url(oauth_account, "oauth_authorize"))["Location"]))
    response = admin_client.get(f"{back.path}?{back.query}")
    assert response.status_code == 400
    assert "Access was denied" in response.content.decode()
    oauth_account.refresh_from_db()
    assert oauth_account.get_oauth()["refresh_token"] == ""


def test_admin_authorize_needs_the_test_permission(
    client: Client, oauth_account: GmailAccount, gmail_oauth: OAuthServer, admin_settings: None
) -> None:
    user = User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="gmail_smtp").exclude(codename="test_gmailaccount")
    )
    client.force_login(user)
    assert "authorize-with-google/" not in client.get(account_url(oauth_account)).content.decode()
    assert client.post(account_url(oauth_account, "oauth_authorize")).status_code == 403


@pytest.mark.django_db
def test_admin_form_stores_the_oauth_client_write_only(
    admin_client: Client, gmail_sandbox: GmailSandbox, gmail_oauth: OAuthServer, admin_settings: None
) -> None:
    data = {
        "name": "workspace",
        "username": SANDBOX_USER,
        "auth_method": "oauth2",
        "app_password": "",
        "oauth_client_id": gmail_oauth.client_id,
        "oauth_client_secret": gmail_oauth.client_secret,
        "oauth_refresh_token": "",
        "host": "smtp.gmail.com",
        "port": 587,
        "security": "starttls",
        "timeout": "5",
        "from_aliases": "",
        "enabled": "on",
        "_continue": "Save and continue",
    }
    response = admin_client.post(reverse("admin:gmail_smtp_gmailaccount_add"), data, follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    account = GmailAccount.objects.get(name="workspace")
    assert account.get_oauth() == {
        "client_id": gmail_oauth.client_id,
        "client_secret": gmail_oauth.client_secret,
        "refresh_token": "",
    }
    assert "gmail_smtp.E015" in html  # not authorized yet: a warning, not a refusal
    assert gmail_oauth.client_id in html  # the id is shown back; the secret never
    assert_no_secret(html, gmail_oauth)
    # Without a client secret OAuth2 cannot work: refused, on the field.
    data |= {"name": "other", "oauth_client_secret": ""}
    response = admin_client.post(reverse("admin:gmail_smtp_gmailaccount_add"), data)
    assert response.status_code == 200
    assert "gmail_smtp.E016" in response.content.decode()
    assert not GmailAccount.objects.filter(name="other").exists()


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


# -- manage.py gmail_sandbox ---------------------------------------------------------------


@pytest.mark.django_db
def test_gmail_sandbox_command_serves_oauth2_with_the_printed_settings(settings: Any, tmp_path: Any) -> None:
    import signal

    from .test_sandbox_command import run_command, wait_for_file

    ready = tmp_path / "ready.json"
    process = run_command(
        "--starttls-port=0",
        "--ssl-port=0",
        "--imap-port=0",
        "--pop-port=0",
        "--oauth-port=0",
        f"--ready-file={ready}",
        "--max-seconds=60",
        cwd=tmp_path,
    )
    try:
        info: Any = wait_for_file(ready, process)
        served = info["oauth"]
        settings.GMAIL_SMTP = {
            "SSL_CAFILE": info["ca_file"],
            "OAUTH_TOKEN_URI": served["token_uri"],
            "OAUTH_AUTH_URI": served["auth_uri"],
        }
        backend = EmailBackend(
            host=info["host"],
            port=info["ports"]["starttls"],
            username=info["user"],
            use_tls=True,
            timeout=5,
            oauth_client_id=served["client_id"],
            oauth_client_secret=served["client_secret"],
            oauth_refresh_token=served["refresh_token"],
        )
        assert backend.send_messages([message()]) == 1
        assert "-> AUTH XOAUTH2 <redacted>" in backend.transcript.render()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert f'        "OAUTH_TOKEN_URI": "{served["token_uri"]}",' in lines
    assert f"    GMAIL_SMTP_OAUTH_REFRESH_TOKEN={served['refresh_token']}" in lines
    assert lines.index("Quit with CONTROL-C.") > lines.index(f"    GMAIL_SMTP_OAUTH_CLIENT_ID={served['client_id']}")
