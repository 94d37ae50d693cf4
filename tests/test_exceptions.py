"""Every exception the package raises is a module-level class that survives pickle.

Celery's pickle serializer, ``multiprocessing`` and result stores pickle exceptions; a class made
at run time cannot be found again by its name, and a constructor with required keyword
arguments cannot be called again with the instance's ``args``.
"""

from __future__ import annotations

import multiprocessing
import pickle
import smtplib
import socket
import ssl
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from django_gmail_smtp import exceptions, quota
from django_gmail_smtp.backend import EmailBackend
from django_gmail_smtp.causes import CATALOGUE
from django_gmail_smtp.exceptions import (
    CAUSE_CLASSES,
    GmailConfigError,
    GmailSMTPError,
    MailboxError,
    OAuthError,
    SecretDecryptionError,
    TLSRequiredError,
    with_cause,
)
from django_gmail_smtp.oauth import AuthorizationError
from django_gmail_smtp.payload import PayloadError
from django_gmail_smtp.sandbox import GmailSandbox
from django_gmail_smtp.sandbox.server import PortInUseError

CAUSE = CATALOGUE["bad_credentials"]

# One instance of each type with_cause() knows, built the way smtplib, socket and ssl build them.
ORIGINALS: list[BaseException] = [
    smtplib.SMTPException("plain"),
    smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server."),
    smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
    smtplib.SMTPResponseException(421, b"4.7.0 Try again later"),
    smtplib.SMTPSenderRefused(550, b"5.4.5 Daily user sending quota exceeded.", "me@gmail.com"),
    smtplib.SMTPRecipientsRefused({"a@example.com": (553, b"5.1.3 not a valid address")}),
    smtplib.SMTPDataError(552, b"5.2.3 too large"),
    smtplib.SMTPConnectError(554, b"go away"),
    smtplib.SMTPHeloError(501, b"5.5.4 bad name"),
    smtplib.SMTPAuthenticationError(535, b"5.7.8 Username and Password not accepted."),
    OAuthError("invalid_grant", error="invalid_grant", description="Token has been expired or revoked.", status=400),
    OSError(101, "Network is unreachable"),
    ConnectionError("reset"),
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionResetError(104, "Connection reset by peer"),
    ConnectionAbortedError(103, "Software caused connection abort"),
    BrokenPipeError(32, "Broken pipe"),
    TimeoutError("timed out"),
    socket.gaierror(-2, "Name or service not known"),
    socket.herror(1, "Unknown host"),
    ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
    ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
    ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed (EOF)"),
    ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
    ssl.SSLSyscallError(5, "Some I/O error occurred"),
]


def round_trip(exc: BaseException) -> Any:
    return pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, just made


def same(before: BaseException, after: BaseException) -> None:
    """Type, message, SMTP reply, errno, cause id and stage survived."""
    assert type(after) is type(before)
    assert after.args == before.args
    assert str(after) == str(before)
    for attribute in (
        "smtp_code",
        "smtp_error",
        "sender",
        "recipients",
        "errno",
        "strerror",
        "error",
        "status",
        "host",
        "port",
    ):
        assert getattr(after, attribute, None) == getattr(before, attribute, None), attribute
    before_cause, after_cause = getattr(before, "cause", None), getattr(after, "cause", None)
    assert (after_cause and after_cause.id) == (before_cause and before_cause.id)
    assert getattr(after, "stage", None) == getattr(before, "stage", None)


def test_the_table_covers_every_original_and_is_module_level() -> None:
    assert set(CAUSE_CLASSES) == {type(exc) for exc in ORIGINALS}
    for base, klass in CAUSE_CLASSES.items():
        assert issubclass(klass, GmailSMTPError)
        assert issubclass(klass, base)
        assert getattr(exceptions, klass.__name__) is klass  # importable by its path


@pytest.mark.parametrize("original", ORIGINALS, ids=lambda exc: type(exc).__name__)
def test_explained_exceptions_pickle(original: BaseException) -> None:
    explained = with_cause(original, CAUSE, "auth")
    assert isinstance(explained, type(original))
    assert isinstance(explained, GmailSMTPError)
    assert type(explained) is CAUSE_CLASSES[type(original)]
    explained.add_note("django-gmail-smtp: 1 of 2 messages were sent")
    copy = round_trip(explained)
    same(explained, copy)
    assert copy.__notes__ == explained.__notes__
    assert "[bad_credentials]" in str(copy)


def test_an_unknown_type_keeps_its_class_and_gets_the_cause() -> None:
    class Custom(smtplib.SMTPResponseException):
        pass

    original = Custom(550, b"no")
    explained = with_cause(original, CAUSE, "send")
    assert explained is original
    assert type(explained) is Custom
    assert (explained.cause, explained.stage) == (CAUSE, "send")  # type: ignore[attr-defined]
    unicode_error = UnicodeEncodeError("ascii", "é", 0, 1, "ordinal not in range(128)")
    assert with_cause(unicode_error, None, "auth") is unicode_error


@pytest.mark.parametrize(
    "error",
    [
        GmailConfigError("The SMTP port 'abc' is not a number.", hint="Use 587.", check_id="gmail_smtp.E010"),
        GmailConfigError("Both on.", hint="Turn one off.", check_id="gmail_smtp.E001", alias="bulk"),
        GmailConfigError("The queue 'x' is not one of the QUEUES.", check_id=None),
        SecretDecryptionError("Cannot decrypt.", account="shop", hint="Rotate.", check_id="gmail_smtp.E025"),
        quota.QuotaExceededError("Not sent.", account="me@gmail.com", used=5, limit=5, retry_at=None),
        TLSRequiredError("Refusing to send the password."),
        PayloadError("The payload is not a queued message."),
        AuthorizationError("Access was denied on Google's consent page: nothing was stored."),
        PortInUseError("127.0.0.1", 2587),
        MailboxError("NO [ALERT] not enabled", cause=CATALOGUE["imap_disabled"], stage="auth", reply="NO [ALERT]"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_our_own_exceptions_pickle(error: BaseException) -> None:
    copy = round_trip(error)
    same(error, copy)
    assert copy.__dict__ == {k: v for k, v in error.__dict__.items()}


def test_config_error_keeps_its_api() -> None:
    error = round_trip(GmailConfigError("Both on.", hint="Turn one off.", check_id="gmail_smtp.E001", alias="bulk"))
    assert isinstance(error, ImproperlyConfigured)
    assert isinstance(error, ValueError)
    assert (error.message, error.hint, error.check_id, error.alias) == (
        "Both on.",
        "Turn one off.",
        "gmail_smtp.E001",
        "bulk",
    )
    assert str(error) == "MAILERS['bulk']: Both on. Turn one off. (gmail_smtp.E001)"
    secret = round_trip(SecretDecryptionError("x", account="shop", check_id="gmail_smtp.E025"))
    assert secret.account == "shop"
    assert isinstance(secret, GmailConfigError)


def test_check_id_is_required() -> None:
    """Every raise says which check reports the mistake (or None): no error falls back to another id."""
    with pytest.raises(TypeError, match="check_id"):
        GmailConfigError("A mistake.", hint="Fix it.")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="check_id"):
        SecretDecryptionError("Cannot decrypt.", account="shop")  # type: ignore[call-arg]


def _unpickle_in_child(data: bytes) -> tuple[str, str, Any, Any, str]:
    error = pickle.loads(data)  # noqa: S301 - the parent's bytes
    return type(error).__qualname__, type(error).__module__, error.smtp_code, error.cause.id, error.stage


def test_a_real_failure_crosses_a_process_boundary(gmail_sandbox: GmailSandbox) -> None:
    """The exception a real sign-in failure raises, unpickled by another process (multiprocessing)."""
    gmail_sandbox.inject("bad_credentials")
    message = EmailMessage("Hi", "x", "sandbox@example.com", ["to@example.com"])
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        EmailBackend(**gmail_sandbox.mailer_options("starttls")).send_messages([message])
    error = info.value
    assert type(error).__qualname__ == "GmailSMTPAuthenticationError"
    assert error.statuses[0].error is error  # type: ignore[attr-defined]  # a cycle: pickle keeps it
    data = pickle.dumps(error)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    with context.Pool(1) as pool:
        name, module, code, cause_id, stage = pool.apply(_unpickle_in_child, (data,))
    assert (name, module, code, cause_id, stage) == (
        "GmailSMTPAuthenticationError",
        "django_gmail_smtp.exceptions",
        535,
        "bad_credentials",
        "auth",
    )
    copy = round_trip(error)
    assert copy.sent_count == 0
    assert copy.statuses[0].error is copy
