"""Drop-in parity: each scenario runs against Django's own SMTP backend and ours.

Both backends talk to real servers on loopback: the Gmail sandbox (real TLS; Django's backend
trusts its CA through ``SSL_CERT_FILE``, as OpenSSL reads it) or a plain-text aiosmtpd server
(:mod:`tests.plain_smtp`) where Django's backend has to send without TLS or without signing in.
Every test asserts that the two agree, or that they differ exactly as the README's table
"Gmail defaults (the deliberate differences from Django's SMTP backend)" says; the rows each
test backs are named in its docstring.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
import trustme
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend as DjangoBackend
from django.utils.module_loading import import_string

from django_gmail_smtp import pool
from django_gmail_smtp.backend import EmailBackend as OurBackend
from django_gmail_smtp.exceptions import GmailConfigError
from django_gmail_smtp.sandbox import GmailSandbox

from .conftest import LEGACY_API, legacy_api
from .plain_smtp import PlainSMTPServer

README = Path(__file__).resolve().parent.parent / "README.md"
DJANGO_PATH = "django.core.mail.backends.smtp.EmailBackend"
OUR_PATH = "django_gmail_smtp.backend.EmailBackend"
NEEDS_MAILERS = pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is new in Django 6.1")
# Django 6.1 deprecates creating a backend directly (the legacy API these scenarios use on purpose).
DIRECT = pytest.mark.filterwarnings("ignore:Directly creating EmailBackend instances is deprecated")

pytestmark = [DIRECT, *LEGACY_API]

USER, PASSWORD = "settings@example.com", "settings-password"


@pytest.fixture(params=[DJANGO_PATH, OUR_PATH], ids=["django", "ours"])
def backend_class(request: pytest.FixtureRequest) -> type[Any]:
    """Django's stock SMTP backend, then ours: every scenario runs against both."""
    backend: type[Any] = import_string(request.param)
    return backend


def ours(backend_class: type[Any]) -> bool:
    return issubclass(backend_class, OurBackend)


@pytest.fixture
def plain_server() -> Iterator[PlainSMTPServer]:
    with PlainSMTPServer(users={USER: PASSWORD}) as server:
        try:
            yield server
        finally:
            pool.close_all()  # our backend keeps signed-in connections; the server waits for them


@pytest.fixture
def trusted_sandbox(gmail_sandbox: GmailSandbox, monkeypatch: pytest.MonkeyPatch) -> GmailSandbox:
    """The sandbox, its CA trusted by OpenSSL's default paths, which Django's backend uses."""
    monkeypatch.setenv("SSL_CERT_FILE", gmail_sandbox.ca_file)
    return gmail_sandbox


def sandbox_options(sandbox: GmailSandbox, backend_class: type[Any], mode: str = "starttls") -> dict[str, Any]:
    options = sandbox.mailer_options(mode)
    if not ours(backend_class):
        del options["ssl_cafile"]  # not an option of Django's backend: SSL_CERT_FILE instead
    return options


def mail(to: str = "to@example.com", sender: str = "from@example.com", **kwargs: Any) -> EmailMessage:
    return EmailMessage("Parity", "Same message, two backends.", sender, [to], **kwargs)


# -- sign-in: what counts as "not given" ------------------------------------------------------


def test_explicit_empty_credentials_turn_sign_in_off(
    backend_class: type[Any], plain_server: PlainSMTPServer, settings: Any
) -> None:
    """Only None means "not given": username="" and password="" sign in with nothing, even with
    EMAIL_HOST_USER / EMAIL_HOST_PASSWORD set (both backends)."""
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = USER, PASSWORD
    backend = backend_class(**plain_server.options(username="", password=""))
    assert (backend.username, backend.password) == ("", "")
    assert backend.send_messages([mail()]) == 1
    assert plain_server.auth_attempts == []
    assert [m.auth_user for m in plain_server.messages] == [None]
    # None (what send_mail() passes when given nothing): the settings sign in.
    backend = backend_class(**plain_server.options(username=None, password=None))
    assert (backend.username, backend.password) == (USER, PASSWORD)
    assert backend.send_messages([mail()]) == 1
    assert [login for _mechanism, login in plain_server.auth_attempts] == [USER]
    assert [m.auth_user for m in plain_server.messages] == [None, USER]


def test_sign_in_needs_both_username_and_password(backend_class: type[Any], plain_server: PlainSMTPServer) -> None:
    """A username without a password (or the reverse) does not sign in, in both backends."""
    for username, password in ((USER, ""), ("", PASSWORD)):
        assert backend_class(**plain_server.options(username=username, password=password)).send_messages([mail()]) == 1
    assert plain_server.auth_attempts == []


# -- open() and send_messages() ---------------------------------------------------------------


def test_send_messages_respects_open_returning_none(backend_class: type[Any], plain_server: PlainSMTPServer) -> None:
    """open() that failed silently (None), or left no connection: nothing is sent, 0 is returned."""

    class FailedSilently(backend_class):  # type: ignore[misc,valid-type]
        def open(self) -> bool | None:
            return None

    class NoConnection(backend_class):  # type: ignore[misc,valid-type]
        def open(self) -> bool | None:
            return True

    for klass in (FailedSilently, NoConnection):
        assert klass(**plain_server.options()).send_messages([mail()]) == 0
    assert plain_server.messages == []


def test_send_messages_calls_an_overridden_open_once_and_closes_after(
    backend_class: type[Any], plain_server: PlainSMTPServer
) -> None:
    """A subclass's open() runs once per send_messages() on a closed backend; close() follows."""
    calls: list[str] = []

    class Tracing(backend_class):  # type: ignore[misc,valid-type]
        def open(self) -> bool | None:
            calls.append("open")
            opened: bool | None = super().open()
            return opened

        def close(self) -> None:
            calls.append("close")
            super().close()

    backend = Tracing(**plain_server.options())
    assert backend.send_messages([mail(), mail("other@example.com")]) == 2
    assert calls == ["open", "close"]
    assert backend.connection is None
    assert len(plain_server.messages) == 2


def test_counts_and_messages_without_recipients(backend_class: type[Any], plain_server: PlainSMTPServer) -> None:
    """The return value counts what the server accepted; no recipients: skipped, not counted."""
    backend = backend_class(**plain_server.options())
    assert backend.send_messages([]) == 0
    nobody = EmailMessage("Nobody", "x", "from@example.com", [])
    assert backend.send_messages([mail(), nobody, mail("b@example.com"), mail("c@example.com")]) == 3
    assert [m.rcpt_tos for m in plain_server.messages] == [("to@example.com",), ("b@example.com",), ("c@example.com",)]
    assert {m.mail_from for m in plain_server.messages} == {"from@example.com"}


def test_opened_connection_is_reused_and_close_is_idempotent(
    backend_class: type[Any], plain_server: PlainSMTPServer
) -> None:
    """open(): True, then False while open; close() twice is fine; the context manager opens."""
    backend = backend_class(**plain_server.options())
    assert backend.open() is True
    assert backend.open() is False
    assert backend.connection is not None
    assert backend.send_messages([mail()]) == 1
    backend.close()
    backend.close()
    assert backend.connection is None
    with backend_class(**plain_server.options()) as connection:
        assert connection.send_messages([mail()]) == 1
    assert len(plain_server.messages) == 2


def test_refused_connection(backend_class: type[Any]) -> None:
    """Nothing listens: the same exception type; with fail_silently open() is None and 0 is sent."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # closed again before anyone connects
    options = {"host": "127.0.0.1", "port": port, "use_tls": False, "timeout": 5}
    with pytest.raises(ConnectionRefusedError):
        backend_class(**options).open()
    quiet = backend_class(fail_silently=True, **options)
    assert quiet.open() is None
    assert quiet.send_messages([mail()]) == 0


def test_header_injection_is_refused_before_sending(backend_class: type[Any], plain_server: PlainSMTPServer) -> None:
    """Both raise Django's BadHeaderError (a ValueError) and send nothing."""
    with pytest.raises(ValueError, match=r"newline|linefeed"):
        backend_class(**plain_server.options()).send_messages(
            [EmailMessage("Hi\nBcc: x@example.com", "x", None, ["a@b.c"])]
        )
    assert plain_server.messages == []


# -- TLS ---------------------------------------------------------------------------------------


def test_ssl_context_is_built_once_and_used(backend_class: type[Any], trusted_sandbox: GmailSandbox) -> None:
    """``ssl_context`` as on Django's backend: one verifying context per backend, used by its
    connections (STARTTLS and implicit TLS)."""
    for mode in ("starttls", "ssl"):
        backend = backend_class(**sandbox_options(trusted_sandbox, backend_class, mode))
        context = backend.ssl_context
        assert context is backend.ssl_context
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert backend.open() is True
        assert backend.connection.sock.context is context
        assert backend.send_messages([mail()]) == 1
        backend.close()
    assert len(trusted_sandbox.wait_for_messages(2)) == 2


def test_a_client_certificate_keeps_verification(
    backend_class: type[Any], trusted_sandbox: GmailSandbox, tmp_path: Path
) -> None:
    """Difference "client certificate": Django's context for ssl_certfile/ssl_keyfile loads no CA
    certificates, so no server verifies; ours keeps the system's (or ssl_cafile)."""
    ca = trustme.CA()
    client = ca.issue_cert("client@example.com")
    certfile, keyfile = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(certfile))
    client.private_key_pem.write_to_path(str(keyfile))
    options = sandbox_options(trusted_sandbox, backend_class) | {
        "ssl_certfile": str(certfile),
        "ssl_keyfile": str(keyfile),
    }
    backend = backend_class(**options)
    assert backend.ssl_context.verify_mode == ssl.CERT_REQUIRED
    if ours(backend_class):
        assert backend.send_messages([mail()]) == 1
    else:
        with pytest.raises(ssl.SSLCertVerificationError):
            backend.send_messages([mail()])


# -- defaults ----------------------------------------------------------------------------------


def test_defaults(backend_class: type[Any]) -> None:
    """Differences "no host configured" and "timeout": Gmail and 10 s instead of localhost:25 and None."""
    backend = backend_class()
    found = (backend.host, backend.port, backend.use_tls, backend.use_ssl, backend.timeout)
    if ours(backend_class):
        assert found == ("smtp.gmail.com", 587, True, False, 10.0)
    else:
        assert found == ("localhost", 25, False, False, None)
    # Any other host: exactly Django's defaults (port 25, no TLS), except the timeout.
    other = backend_class(host="mail.example.com")
    assert (other.port, other.use_tls, other.use_ssl) == (25, False, False)


def test_app_password_spaces(backend_class: type[Any], plain_server: PlainSMTPServer) -> None:
    """Difference "app password with spaces": removed for Gmail and loopback hosts by ours only."""
    plain_server.users["me@gmail.com"] = "abcdefghijklmnop"
    backend = backend_class(**plain_server.options(username="me@gmail.com", password="abcd efgh ijkl mnop"))
    if ours(backend_class):
        assert backend.password == "abcdefghijklmnop"
        assert backend.send_messages([mail()]) == 1
    else:
        assert backend.password == "abcd efgh ijkl mnop"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            backend.send_messages([mail()])
    assert plain_server.auth_attempts[-1][1] == "me@gmail.com"


# -- configuration errors ----------------------------------------------------------------------

DJANGO_BOTH_ON = "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set one of those settings to True."
DJANGO_BOTH_ON_OPTIONS = "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. Set at most one of them to True."


def test_tls_and_ssl_both_on(backend_class: type[Any]) -> None:
    """The same ValueError with Django's words; ours appends its explanation and is never
    silenced (difference "configuration errors")."""
    with pytest.raises(ValueError, match=re.escape(DJANGO_BOTH_ON)) as info:
        backend_class(host="127.0.0.1", use_tls=True, use_ssl=True, fail_silently=True)
    assert str(info.value).startswith(DJANGO_BOTH_ON)
    if ours(backend_class):
        assert isinstance(info.value, ImproperlyConfigured)
        assert info.value.check_id == "gmail_smtp.E001"
        assert "port 587 uses STARTTLS" in str(info.value)


@NEEDS_MAILERS
def test_mailer_tls_and_ssl_both_on_is_invalid_mailer(backend_class: type[Any], settings: Any) -> None:
    """MAILERS: Django's InvalidMailer, its "MAILERS['alias']: " prefix and its words, then ours."""
    from django.core.mail import InvalidMailer, mailers

    path = OUR_PATH if ours(backend_class) else DJANGO_PATH
    settings.MAILERS = {"both": {"BACKEND": path, "OPTIONS": {"host": "127.0.0.1", "use_tls": True, "use_ssl": True}}}
    with pytest.raises(InvalidMailer) as info:
        mailers["both"]
    assert str(info.value).startswith(f"MAILERS['both']: {DJANGO_BOTH_ON_OPTIONS}")
    if ours(backend_class):
        assert isinstance(info.value, GmailConfigError)
        assert isinstance(info.value, ValueError)
        assert (info.value.check_id, info.value.alias) == ("gmail_smtp.E001", "both")
        assert "MAILERS['both']" not in info.value.message  # the bare sentence, for checks and gmail_check


@NEEDS_MAILERS
def test_mailer_errors_of_ours_are_invalid_mailer(settings: Any) -> None:
    """Our own configuration errors of a mailer are InvalidMailer too, with Django's prefix."""
    from django.core.mail import InvalidMailer, mailers

    settings.MAILERS = {"bulk": {"BACKEND": OUR_PATH, "OPTIONS": {"port": "abc"}}}
    with pytest.raises(InvalidMailer, match=re.escape("MAILERS['bulk']: The SMTP port 'abc'")) as info:
        mailers["bulk"]
    assert info.value.check_id == "gmail_smtp.E010"


@NEEDS_MAILERS
def test_mailer_without_credentials_and_unknown_options(backend_class: type[Any], settings: Any) -> None:
    """A MAILERS alias that sets no username/password: both attributes are None. Unknown OPTIONS:
    Django's InvalidMailer from both."""
    from django.core.mail import InvalidMailer, mailers

    path = OUR_PATH if ours(backend_class) else DJANGO_PATH
    settings.MAILERS = {
        "anonymous": {"BACKEND": path, "OPTIONS": {"host": "127.0.0.1"}},
        "typo": {"BACKEND": path, "OPTIONS": {"host": "127.0.0.1", "usre_tls": True}},
    }
    backend = mailers["anonymous"]
    assert (backend.username, backend.password) == (None, None)
    with pytest.raises(InvalidMailer, match=re.escape("MAILERS['typo']: Unknown options 'usre_tls'.")):
        mailers["typo"]


@NEEDS_MAILERS
def test_mailer_sends_like_djangos(backend_class: type[Any], plain_server: PlainSMTPServer, settings: Any) -> None:
    """The same MAILERS OPTIONS send the same mail through both (Django needs a host; ours
    defaults to Gmail's: difference "no host configured")."""
    from django.core.mail import mailers

    path = OUR_PATH if ours(backend_class) else DJANGO_PATH
    options = plain_server.options(username=USER, password=PASSWORD)
    settings.MAILERS = {"default": {"BACKEND": path, "OPTIONS": options}}
    assert mailers["default"].send_messages([mail()]) == 1
    assert [(m.auth_user, m.rcpt_tos) for m in plain_server.messages] == [(USER, ("to@example.com",))]


# -- addresses ---------------------------------------------------------------------------------

# (address, force_ascii) -> the addr-spec, or None for ValueError: Django 6.x's prep_address().
ADDRESSES: list[tuple[str, bool, str | None]] = [
    ("to@example.com", True, "to@example.com"),
    ("Name <to@example.com>", True, "to@example.com"),
    ('"Dr. Who, Jr." <who@example.com>', True, "who@example.com"),
    ("=?utf-8?q?Jos=C3=A9?= <jose@example.com>", True, "jose@example.com"),
    ("to@bücher.example", True, "to@xn--bcher-kva.example"),
    ("to@bücher.example", False, "to@bücher.example"),
    ("山田@example.jp", True, None),
    ("山田@example.jp", False, "山田@example.jp"),
    ("webmaster", True, "webmaster"),
    ("a@example.com, b@example.com", True, None),
    ("to@example.com\nBcc: evil@example.com", True, None),
    ("to@example.com\rBcc: evil@example.com", False, None),
    ("a b@example.com", True, None),
    ("", True, None),
]


@pytest.mark.parametrize(("address", "force_ascii", "expected"), ADDRESSES)
def test_prep_address(backend_class: type[Any], address: str, force_ascii: bool, expected: str | None) -> None:
    """``prep_address(address, force_ascii=True)`` with Django 6.x's semantics, on 5.2 too."""
    if not ours(backend_class) and django.VERSION < (6, 0):
        pytest.skip("Django's backend has prep_address() from 6.0; ours on every version")
    backend = backend_class(host="127.0.0.1")
    if expected is None:
        with pytest.raises(ValueError, match="Invalid address"):
            backend.prep_address(address, force_ascii=force_ascii)
    else:
        assert backend.prep_address(address, force_ascii=force_ascii) == expected


def test_non_ascii_local_part(backend_class: type[Any], plain_server: PlainSMTPServer) -> None:
    """Difference "non-ASCII local part": ours sends it with SMTPUTF8; Django 6.x refuses it
    (ValueError), Django 5.2 sends an encoded-word address nobody can deliver."""
    backend = backend_class(**plain_server.options())
    message = mail("山田@example.jp")
    if ours(backend_class):
        assert backend.send_messages([message]) == 1
        [received] = plain_server.messages
        assert received.rcpt_tos == ("山田@example.jp",)
        assert received.smtputf8
        assert "To: 山田@example.jp".encode() in received.data
    elif django.VERSION >= (6, 0):
        with pytest.raises(ValueError, match="non-ASCII"):
            backend.send_messages([message])
        assert plain_server.messages == []
    else:
        assert backend.send_messages([message]) == 1
        [received] = plain_server.messages
        assert not received.smtputf8
        assert b"To: =?utf-8?b?5bGx55Sw?=@example.jp" in received.data  # an encoded-word local part


# -- the table ---------------------------------------------------------------------------------


def test_the_differences_table_lists_what_these_tests_back() -> None:
    """Every row the tests above back is in the README's differences table."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Gmail defaults (the deliberate differences from Django's SMTP backend)")
    table = text[start : text.index("\n## ", start + 3)]
    for row in (
        "no host configured",
        "timeout",
        "client certificate",
        "app password",
        "non-ASCII local part",
        "configuration errors",
        "password without TLS",
        '`username=""`',
        "`open()` returning None",
        "`MAILERS` alias without credentials",
        "`prep_address()`",
        "`ssl_context`",
        "tests/test_parity.py",
    ):
        assert row in table, row


@legacy_api
@pytest.mark.filterwarnings("ignore:Django 2028 will not have a default mailer")
def test_get_connection_with_both_paths(plain_server: PlainSMTPServer) -> None:
    """``get_connection(path, **kwargs)`` builds either backend from the same keyword arguments."""
    from django.core.mail import get_connection

    for path in (DJANGO_PATH, OUR_PATH):
        connection = get_connection(path, **plain_server.options())
        assert isinstance(connection, DjangoBackend if path == DJANGO_PATH else OurBackend)
        assert connection.send_messages([mail()]) == 1
    assert len(plain_server.messages) == 2
