"""Exceptions: configuration mistakes, and SMTP failures that carry a Gmail cause.

Configuration errors subclass ``ImproperlyConfigured`` (and, on Django 6.1+,
``django.core.mail.InvalidMailer``) so that ``fail_silently`` never hides them.
SMTP and network failures keep their original ``smtplib`` / ``OSError`` type
(callers' ``except`` clauses keep working) and gain a
:class:`~django_gmail_smtp.causes.Cause` that says what happened and what to do.

Every exception class this package raises is declared here (or next to the
module that raises it) at module level, so each one can be pickled (Celery's
pickle serializer, ``multiprocessing``, result stores), imported by its path and
recognised by error trackers. :func:`with_cause` picks the class from a fixed
table (:data:`CAUSE_CLASSES`); it never creates a class at run time.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .causes import CATALOGUE, Cause, explain_reply
from .hosts import is_loopback

try:  # Django 6.1+: the error of a MAILERS entry
    from django.core.mail import InvalidMailer as _MailerError
except ImportError:  # Django 5.2 / 6.0
    _MailerError = ImproperlyConfigured  # type: ignore[assignment,misc]

__all__ = [
    "CAUSE_CLASSES",
    "DeadlineExceeded",
    "GmailConfigError",
    "GmailSMTPError",
    "MailboxError",
    "OAuthError",
    "PickleByState",
    "ReplyTooLongError",
    "SecretDecryptionError",
    "SecretDestinationError",
    "TLSRequiredError",
    "describe_error",
    "error_name",
    "explain_exception",
    "is_silent",
    "one_line",
    "reply_line",
    "reply_of",
    "reply_text",
    "timed_out",
    "with_cause",
]


def _restore(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """Unpickle an exception whose constructor takes keyword-only arguments: no constructor call."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class PickleByState:
    """Mixin for an exception whose constructor takes keyword arguments: it pickles by its
    ``args`` and ``__dict__``, not by calling the constructor again."""

    args: tuple[Any, ...]

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), self.args, dict(self.__dict__))


class GmailConfigError(PickleByState, _MailerError, ValueError):
    """A setting is wrong or missing; the message names it and says the fix.

    Also a ``ValueError``, as Django raises for ``EMAIL_USE_TLS``/``EMAIL_USE_SSL``, and on
    Django 6.1+ a ``django.core.mail.InvalidMailer``. ``check_id`` is the system check id that
    reports the same mistake (``gmail_smtp.E003``), or None for a mistake no system check
    reports (found only where the value is used); every raise must say which. With ``alias``
    (a ``MAILERS`` alias) the text starts with ``MAILERS['alias']: ``, as Django's own mailer
    errors do; ``message`` stays the bare sentence.
    """

    def __init__(self, message: str, *, check_id: str | None, hint: str = "", alias: str | None = None) -> None:
        self.message = str(message)
        self.hint = str(hint)
        self.check_id = check_id
        self.alias = alias
        text = f"{self.message} {self.hint}".strip()
        if check_id:
            text = f"{text} ({check_id})"
        if alias is not None:
            text = f"MAILERS[{alias!r}]: {text}"
        ValueError.__init__(self, text)

    def for_alias(self, alias: str | None) -> GmailConfigError:
        """This error naming the mailer ``alias`` (a copy; the same error without an alias)."""
        if alias is None or self.alias is not None:
            return self
        copy = _restore(type(self), self.args, dict(self.__dict__))
        copy.args = (f"MAILERS[{alias!r}]: {self.args[0]}",)
        copy.alias = alias  # type: ignore[attr-defined]
        return copy  # type: ignore[return-value]


class SecretDecryptionError(GmailConfigError):
    """A stored account's secret cannot be decrypted with the configured keys.

    ``account`` is the account's name. The message never contains the secret.
    """

    def __init__(self, message: str, *, account: str, check_id: str | None, hint: str = "") -> None:
        self.account = account
        super().__init__(message, hint=hint, check_id=check_id)


class SecretDestinationError(GmailConfigError):
    """A stored account's secret may not be used with the account's current values.

    It was entered for another destination (``changed`` names the fields that differ since:
    ``host``, ``port``, ``security``, ``username``, ``token_uri``; ``bound`` holds their values
    then), or it is not bound to any (``changed`` empty, ``bound`` None: stored by a version
    before the binding and not upgraded). ``account`` is the account's name. Never contains the
    secret.
    """

    def __init__(
        self,
        message: str,
        *,
        account: str,
        check_id: str | None,
        changed: tuple[str, ...] = (),
        bound: dict[str, Any] | None = None,
        hint: str = "",
    ) -> None:
        self.account = account
        self.changed = changed
        self.bound = bound
        super().__init__(message, hint=hint, check_id=check_id)


class GmailSMTPError(Exception):
    """Mixin for SMTP and network failures explained by a Gmail cause.

    Never raised on its own: every instance is also an ``smtplib`` exception or
    an ``OSError`` (see :func:`with_cause`), so ``except SMTPAuthenticationError``
    and ``except OSError`` keep working. ``cause`` and ``stage`` survive pickling.
    """

    cause: Cause | None = None
    stage: str = ""

    def __str__(self) -> str:
        text = super().__str__()
        if self.cause is None:
            return text
        return f"{text}\n{self.cause.explain()}"


class TLSRequiredError(GmailSMTPError, ConnectionError):
    """Refused to sign in because the connection is not encrypted."""


class DeadlineExceeded(PickleByState, GmailSMTPError, TimeoutError, smtplib.SMTPServerDisconnected):
    """An overall deadline passed: the connection set-up, one exchange, a ``send_messages()`` call.

    A ``TimeoutError`` (so ``except socket.timeout``/``OSError`` and the timeout causes keep
    working) and, like the reply timeouts smtplib reports, an ``SMTPServerDisconnected``: the
    connection is closed. The message says which deadline passed. ``kind`` is ``setup``,
    ``step``, ``reply``, ``write``, ``batch`` or ``token``; ``seconds`` its length; ``received``
    how many bytes of the unfinished answer had arrived (0: the server said nothing at all).
    README.md#hostile-or-broken-servers.
    """

    def __init__(self, message: str, *, kind: str = "", seconds: float | None = None, received: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.seconds = seconds
        self.received = received


class ReplyTooLongError(PickleByState, GmailSMTPError, smtplib.SMTPServerDisconnected):
    """A server's reply went past a cap (lines or bytes); the connection was closed.

    ``limit`` names the cap that was reached (``lines`` or ``bytes``), ``size`` its value.
    """

    def __init__(self, message: str, *, limit: str = "", size: int = 0) -> None:
        super().__init__(message)
        self.limit = limit
        self.size = size


class OAuthError(PickleByState, smtplib.SMTPException):
    """Getting an OAuth2 access token failed (the token endpoint refused, or could not be reached).

    An ``smtplib.SMTPException`` (so an ``OSError``), like every failure to sign in. ``error`` is
    the OAuth2 error code (``invalid_grant``, ``invalid_client``...; empty when the endpoint
    could not be reached), ``description`` the endpoint's explanation, ``status`` its HTTP
    status (0 when there was no answer). Never contains a token or a secret. Raised through
    :func:`with_cause`, so the instance also carries a cause.
    """

    def __init__(self, message: str, *, error: str = "", description: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.error = error
        self.description = description
        self.status = status


# -- the fixed table of "<type> with a cause" classes ------------------------------------------
# One class per exception type the package explains (smtplib's, the socket and TLS errors a
# connection raises, OAuthError). Each has its base's constructor, so pickling works as for
# the base, with ``cause`` and ``stage`` carried in the instance's __dict__.


class GmailSMTPException(GmailSMTPError, smtplib.SMTPException):
    """``smtplib.SMTPException`` with a cause."""


class GmailSMTPNotSupportedError(GmailSMTPError, smtplib.SMTPNotSupportedError):
    """``smtplib.SMTPNotSupportedError`` with a cause."""


class GmailSMTPServerDisconnected(GmailSMTPError, smtplib.SMTPServerDisconnected):
    """``smtplib.SMTPServerDisconnected`` with a cause."""


class GmailSMTPResponseException(GmailSMTPError, smtplib.SMTPResponseException):
    """``smtplib.SMTPResponseException`` with a cause."""


class GmailSMTPSenderRefused(GmailSMTPError, smtplib.SMTPSenderRefused):
    """``smtplib.SMTPSenderRefused`` with a cause."""


class GmailSMTPRecipientsRefused(GmailSMTPError, smtplib.SMTPRecipientsRefused):
    """``smtplib.SMTPRecipientsRefused`` with a cause."""


class GmailSMTPDataError(GmailSMTPError, smtplib.SMTPDataError):
    """``smtplib.SMTPDataError`` with a cause."""


class GmailSMTPConnectError(GmailSMTPError, smtplib.SMTPConnectError):
    """``smtplib.SMTPConnectError`` with a cause."""


class GmailSMTPHeloError(GmailSMTPError, smtplib.SMTPHeloError):
    """``smtplib.SMTPHeloError`` with a cause."""


class GmailSMTPAuthenticationError(GmailSMTPError, smtplib.SMTPAuthenticationError):
    """``smtplib.SMTPAuthenticationError`` with a cause."""


class GmailOAuthError(GmailSMTPError, OAuthError):
    """:class:`OAuthError` with a cause."""


class GmailOSError(GmailSMTPError, OSError):
    """``OSError`` with a cause."""


class GmailConnectionError(GmailSMTPError, ConnectionError):
    """``ConnectionError`` with a cause."""


class GmailConnectionRefusedError(GmailSMTPError, ConnectionRefusedError):
    """``ConnectionRefusedError`` with a cause."""


class GmailConnectionResetError(GmailSMTPError, ConnectionResetError):
    """``ConnectionResetError`` with a cause."""


class GmailConnectionAbortedError(GmailSMTPError, ConnectionAbortedError):
    """``ConnectionAbortedError`` with a cause."""


class GmailBrokenPipeError(GmailSMTPError, BrokenPipeError):
    """``BrokenPipeError`` with a cause."""


class GmailTimeoutError(GmailSMTPError, TimeoutError):
    """``TimeoutError`` (``socket.timeout``) with a cause."""


class GmailGAIError(GmailSMTPError, socket.gaierror):
    """``socket.gaierror`` (name lookup failed) with a cause."""


class GmailHError(GmailSMTPError, socket.herror):
    """``socket.herror`` with a cause."""


class GmailSSLError(GmailSMTPError, ssl.SSLError):
    """``ssl.SSLError`` with a cause."""


class GmailSSLCertVerificationError(GmailSMTPError, ssl.SSLCertVerificationError):
    """``ssl.SSLCertVerificationError`` with a cause."""


class GmailSSLZeroReturnError(GmailSMTPError, ssl.SSLZeroReturnError):
    """``ssl.SSLZeroReturnError`` with a cause."""


class GmailSSLEOFError(GmailSMTPError, ssl.SSLEOFError):
    """``ssl.SSLEOFError`` with a cause."""


class GmailSSLSyscallError(GmailSMTPError, ssl.SSLSyscallError):
    """``ssl.SSLSyscallError`` with a cause."""


CAUSE_CLASSES: dict[type[BaseException], type[GmailSMTPError]] = {
    klass.__bases__[1]: klass
    for klass in (
        GmailSMTPException,
        GmailSMTPNotSupportedError,
        GmailSMTPServerDisconnected,
        GmailSMTPResponseException,
        GmailSMTPSenderRefused,
        GmailSMTPRecipientsRefused,
        GmailSMTPDataError,
        GmailSMTPConnectError,
        GmailSMTPHeloError,
        GmailSMTPAuthenticationError,
        GmailOAuthError,
        GmailOSError,
        GmailConnectionError,
        GmailConnectionRefusedError,
        GmailConnectionResetError,
        GmailConnectionAbortedError,
        GmailBrokenPipeError,
        GmailTimeoutError,
        GmailGAIError,
        GmailHError,
        GmailSSLError,
        GmailSSLCertVerificationError,
        GmailSSLZeroReturnError,
        GmailSSLEOFError,
        GmailSSLSyscallError,
    )
}
"""Exception type -> its subclass that carries a cause; :func:`with_cause` uses nothing else."""


def with_cause(exc: BaseException, cause: Cause | None, stage: str = "") -> BaseException:
    """Return ``exc`` as an instance of the subclass of its own type that carries ``cause``.

    The new exception has the same ``args`` and attributes (``smtp_code``,
    ``smtp_error``, ``errno``, ``verify_code`` ...), so code that inspects them
    behaves as before. It does not take over ``exc``'s traceback: the frames below
    (smtplib's, which may hold credentials in their local variables) stay out of
    what is raised. A type outside :data:`CAUSE_CLASSES` (a subclass of smtplib's
    errors defined elsewhere, a ``UnicodeError`` ...) keeps its own class: the
    original exception is returned with ``cause`` and ``stage`` set on it, so that
    ``except`` clauses for that type still match.
    """
    if isinstance(exc, GmailSMTPError):
        if cause is not None and exc.cause is None:
            exc.cause = cause
        if stage and not exc.stage:
            exc.stage = stage
        return exc
    sub = CAUSE_CLASSES.get(type(exc))
    new: Any = None
    if sub is not None:
        try:
            new = sub(*exc.args)
        except Exception:  # an unusual argument list: keep the original (below)
            new = None
    if new is None:
        try:
            exc.cause = cause  # type: ignore[attr-defined]
            exc.stage = stage  # type: ignore[attr-defined]
        except AttributeError:  # an exception type with __slots__
            pass
        return exc
    new.__dict__.update(exc.__dict__)
    new.cause = cause
    new.stage = stage
    new.__cause__ = exc.__cause__
    new.__context__ = exc.__context__
    result: BaseException = new
    return result


class MailboxError(PickleByState, GmailSMTPError, OSError):
    """Reading the account's mailbox (IMAP or POP3, ``gmail_check --round-trip``) failed: the
    server refused (``reply`` is its answer) or broke the protocol. Carries a cause and the stage."""

    def __init__(self, message: str, *, cause: Cause | None = None, stage: str = "", reply: str = "") -> None:
        super().__init__(message)
        self.cause = cause
        self.stage = stage
        self.reply = reply


# -- what an exception means ------------------------------------------------------------------


def timed_out(exc: BaseException) -> bool:
    """A timeout: ``TimeoutError`` (``socket.timeout``, :class:`DeadlineExceeded`), or smtplib's
    "timed out" disconnection."""
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc)
    )


def is_silent(exc: BaseException) -> bool:
    """No answer at all within the time: a timeout, unless the server had started to answer (a
    deadline passed with bytes received) or a whole batch ran out of time."""
    if isinstance(exc, DeadlineExceeded) and (exc.received or exc.kind == "batch"):
        return False
    return timed_out(exc)


# OpenSSL's words for "the peer sent plain text where a TLS record was expected".
_PLAINTEXT_TLS_ERRORS = ("packet length too long", "record layer failure", "unknown protocol")


def explain_exception(
    exc: BaseException, *, stage: str = "", port: int | None = None, use_ssl: bool = False, host: str = ""
) -> Cause | None:
    """Map an exception raised while talking to the server to a known cause.

    ``stage`` is where it happened (``connect``, ``greeting``, ``starttls``,
    ``ehlo``, ``auth``, ``mail``...); ``port``/``use_ssl`` tell a silent
    implicit-TLS port from a blocked one; ``host`` tells a local server (the
    sandbox, whose certificate only its own CA file trusts) from a remote one.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        for code, text in exc.recipients.values():
            found = explain_reply(code, text)
            if found:
                return found
        return None
    if isinstance(exc, smtplib.SMTPResponseException):
        found = explain_reply(exc.smtp_code, exc.smtp_error)
        if found is None and stage == "starttls":
            return CATALOGUE["starttls_not_offered"]
        return found
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        missing = str(exc).lower()
        if "starttls" in missing:
            return CATALOGUE["starttls_not_offered"]
        if "auth" in missing:
            return CATALOGUE["auth_not_offered"]
        if "smtputf8" in missing:
            return CATALOGUE["smtputf8_required"]
        return None
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = f"{exc.verify_message} {exc}".lower()
        if "hostname" in reason or "ip address mismatch" in reason:
            return CATALOGUE["cert_hostname_mismatch"]
        if "expired" in reason or "not yet valid" in reason:
            return CATALOGUE["cert_expired"]
        # Gmail's certificates are public; an untrusted one on loopback is a local server's.
        return CATALOGUE["sandbox_cert_untrusted" if is_loopback(host) else "cert_untrusted"]
    if isinstance(exc, ssl.SSLError):
        reason = str(exc).lower()
        if "wrong_version_number" in reason or "wrong version number" in reason:
            return CATALOGUE["tls_on_starttls_port"]
        # Newer OpenSSL versions word "plain text where a TLS record was expected" differently.
        if use_ssl and stage in ("tls", "connect") and any(w in reason for w in _PLAINTEXT_TLS_ERRORS):
            return CATALOGUE["tls_on_starttls_port"]
        return CATALOGUE["tls_failed"]
    if timed_out(exc):
        if not is_silent(exc):
            return CATALOGUE["deadline_exceeded"]  # not silent: it spoke, too slowly
        if stage == "connect":
            return CATALOGUE["port_blocked"]
        if stage in ("greeting", "ehlo", "starttls") and port == 465 and not use_ssl:
            return CATALOGUE["plain_on_tls_port"]
        if stage == "greeting":
            return CATALOGUE["no_greeting"]
        if stage == "tls":
            return CATALOGUE["tls_no_answer"]
        return CATALOGUE["timeout"]
    if isinstance(exc, ReplyTooLongError):
        return CATALOGUE["reply_too_long"]
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return CATALOGUE["disconnected"]
    if isinstance(exc, socket.gaierror):
        return CATALOGUE["dns_failure"]
    if isinstance(exc, ConnectionRefusedError):
        return CATALOGUE["connection_refused"]
    if isinstance(exc, OSError) and exc.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        return CATALOGUE["network_unreachable"]
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return CATALOGUE["disconnected"]
    if isinstance(exc, UnicodeError) and stage in ("dns", "connect"):
        return CATALOGUE["dns_failure"]  # a host name the IDNA codec rejects (empty or long label)
    if isinstance(exc, smtplib.SMTPException) and "no suitable authentication" in str(exc).lower():
        return CATALOGUE["no_auth_mechanism"]
    return None


# -- an exception in words ------------------------------------------------------------------
# Logs, the delivery log, the daily-limit guard and the diagnosis all word a failure the same
# way: the server's reply when there is one, else the exception's own type and message.


def error_name(exc: BaseException) -> str:
    """The exception's own type name: not the subclass that carries the cause, nor a mixin
    (``TimeoutError`` for :class:`GmailTimeoutError` and :class:`DeadlineExceeded`)."""
    for klass in type(exc).__mro__:
        if not issubclass(klass, GmailSMTPError) and klass is not PickleByState:
            return klass.__name__
    return type(exc).__name__


def _text(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def reply_of(exc: BaseException) -> tuple[int | None, str]:
    """The server's reply an exception carries: its own, or the first refused recipient's;
    ``(None, "")`` when it carries none."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code, _text(exc.smtp_error)
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code, text = next(iter(exc.recipients.values()))
        return int(code), _text(text)
    return None, ""


def reply_text(code: int, text: bytes | str) -> str:
    """A reply as the server wrote it, every line with its code (``250-first``, ``250 last``)."""
    lines = _text(text).split("\n") or [""]
    return "\n".join(f"{code}{' ' if i == len(lines) - 1 else '-'}{line}".rstrip() for i, line in enumerate(lines))


def reply_line(code: int, text: bytes | str) -> str:
    """A reply in one line: the code and the first line of its text."""
    lines = _text(text).splitlines()
    return f"{code} {lines[0] if lines else ''}".strip()


def one_line(exc: BaseException) -> str:
    """A failure in one line: the server's reply (code and first line), else ``Type: first line``."""
    code, text = reply_of(exc)
    if code is not None:
        return reply_line(code, text)
    lines = str(exc).splitlines()
    return f"{error_name(exc)}: {lines[0] if lines else ''}".strip().rstrip(":")


def describe_error(exc: BaseException) -> str:
    """A one-paragraph text of what went wrong: the server's reply, or the error's message."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "\n".join(f"{addr}: {reply_text(code, text)}" for addr, (code, text) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        return reply_text(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, OAuthError):
        return f"OAuth2: {exc.args[0] if exc.args else ''}".rstrip()
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{error_name(exc)}: {exc.verify_message or exc.reason} ({exc.reason})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{error_name(exc)}: {exc.strerror}"
    message = exc.args[0] if exc.args else ""
    return f"{error_name(exc)}: {message}" if message else error_name(exc)
