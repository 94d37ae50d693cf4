"""Exceptions: configuration mistakes, and SMTP failures that carry a Gmail cause.

Configuration errors subclass ``ImproperlyConfigured`` so that ``fail_silently``
never hides them. SMTP and network failures keep their original ``smtplib`` /
``OSError`` type (callers' ``except`` clauses keep working) and gain a
:class:`~django_gmail_smtp.causes.Cause` that says what happened and what to do.
"""

from __future__ import annotations

import smtplib
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from .causes import Cause

__all__ = [
    "DeadlineExceeded",
    "GmailConfigError",
    "GmailSMTPError",
    "OAuthError",
    "ReplyTooLongError",
    "SecretDecryptionError",
    "SecretDestinationError",
    "TLSRequiredError",
    "with_cause",
]


class GmailConfigError(ImproperlyConfigured, ValueError):
    """A setting is wrong or missing; the message names it and says the fix.

    Also a ``ValueError``, as Django raises for ``EMAIL_USE_TLS``/``EMAIL_USE_SSL``.
    """

    def __init__(self, message: str, *, hint: str = "", check_id: str = "") -> None:
        self.message = str(message)
        self.hint = str(hint)
        self.check_id = check_id
        text = f"{self.message} {self.hint}".strip()
        super().__init__(f"{text} ({check_id})" if check_id else text)


class GmailSMTPError(Exception):
    """Mixin for SMTP and network failures explained by a Gmail cause.

    Never raised on its own: every instance is also an ``smtplib`` exception or
    an ``OSError`` (see :func:`with_cause`), so ``except SMTPAuthenticationError``
    and ``except OSError`` keep working.
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


class DeadlineExceeded(GmailSMTPError, TimeoutError, smtplib.SMTPServerDisconnected):
    """An overall deadline passed: the connection set-up, one exchange, a ``send_messages()`` call.

    A ``TimeoutError`` (so ``except socket.timeout``/``OSError`` and the timeout causes keep
    working) and, like the reply timeouts smtplib reports, an ``SMTPServerDisconnected``: the
    connection is closed. The message says which deadline passed. ``kind`` is ``setup``,
    ``step``, ``reply``, ``batch`` or ``token``; ``seconds`` its length; ``received`` how many
    bytes of the unfinished answer had arrived (0: the server said nothing at all).
    """

    def __init__(self, message: str, *, kind: str = "", seconds: float | None = None, received: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.seconds = seconds
        self.received = received


class ReplyTooLongError(GmailSMTPError, smtplib.SMTPServerDisconnected):
    """A server's reply went past a cap (lines or bytes); the connection was closed.

    ``limit`` names the cap that was reached (``lines`` or ``bytes``), ``size`` its value.
    """

    def __init__(self, message: str, *, limit: str = "", size: int = 0) -> None:
        super().__init__(message)
        self.limit = limit
        self.size = size


class OAuthError(smtplib.SMTPException):
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


_subclasses: dict[type[BaseException], type[GmailSMTPError]] = {}


def with_cause(exc: BaseException, cause: Cause | None, stage: str = "") -> BaseException:
    """Return ``exc`` as an instance of a subclass of its own type that carries ``cause``.

    The new exception has the same ``args`` and attributes (``smtp_code``,
    ``smtp_error``, ``errno``, ``verify_code`` ...), so code that inspects them
    behaves as before. It does not take over ``exc``'s traceback: the frames below
    (smtplib's, which may hold credentials in their local variables) stay out of
    what is raised.
    """
    if isinstance(exc, GmailSMTPError):
        if cause is not None and exc.cause is None:
            exc.cause = cause
        if stage and not exc.stage:
            exc.stage = stage
        return exc
    base = type(exc)
    sub = _subclasses.get(base)
    if sub is None:
        sub = type(f"Gmail{base.__name__}", (GmailSMTPError, base), {"__module__": __name__})
        _subclasses[base] = sub
    try:
        new: Any = sub(*exc.args)
    except Exception:  # an exception type with an unusual constructor: keep the original
        return exc
    new.__dict__.update(exc.__dict__)
    new.cause = cause
    new.stage = stage
    new.__cause__ = exc.__cause__
    new.__context__ = exc.__context__
    result: BaseException = new
    return result


class SecretDecryptionError(GmailConfigError):
    """A stored account's secret cannot be decrypted with the configured keys.

    ``account`` is the account's name. The message never contains the secret.
    """

    def __init__(self, message: str, *, account: str, hint: str = "", check_id: str = "") -> None:
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
        changed: tuple[str, ...] = (),
        bound: dict[str, Any] | None = None,
        hint: str = "",
        check_id: str = "",
    ) -> None:
        self.account = account
        self.changed = changed
        self.bound = bound
        super().__init__(message, hint=hint, check_id=check_id)
