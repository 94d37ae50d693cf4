"""What the round trip's IMAP and POP3 clients share: the bounded TLS connection, the
transcript, the sign-in and the goodbye, and how a failure or a refusal is named.

:class:`MailboxSession` is the base of :class:`~.imap.ImapClient` and :class:`~.pop.PopClient`.
It opens the implicit-TLS connection step by step (``stage``: ``connect``, ``tls``, ``greeting``),
verified like SMTP's (the same ``ssl_cafile``), within the overall deadline, and hands back a
:class:`~.bounded_io.BoundedReader` for the protocol library to read through. The subclass
holds the protocol library's connection and says how to sign in with a password, with XOAUTH2,
and how to say goodbye; a refused sign-in is explained from the server's words by a table.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from django.utils.translation import gettext as _

from .bounded_io import BoundedReader, ReplyTooLarge, shut
from .causes import CATALOGUE, Cause, Reply
from .conf import SmtpConfig
from .deadline import Deadline
from .exceptions import MailboxError, with_cause
from .redaction import Redactor
from .smtp_client import make_ssl_context
from .transcript import INFO, Transcript

__all__ = ["AccessTokenSource", "MailboxSession", "Refusals", "explain_refusal", "library_text"]

AccessTokenSource = Callable[[bool], tuple[str, bool]]
"""``source(force_refresh) -> (access token, came from the cache)``, for XOAUTH2."""

Refusals = Sequence[Reply]
"""Rows of the cause catalogue's :class:`~.causes.Reply` with words only: a refusal whose text
holds one of a row's words has that row's cause."""


def explain_refusal(text: str, refusals: Refusals) -> Cause:
    """The cause of a refused sign-in: the first row of ``refusals`` whose words the server's
    ``text`` holds (any case); else wrong credentials."""
    low = text.lower()
    found = next((row.cause for row in refusals if row.matches(0, "", low)), "imap_bad_credentials")
    return CATALOGUE[found]


def library_text(value: object) -> str:
    """The server's words in a protocol library's reply or error: bytes decoded, and the
    ``b'...'`` that ``imaplib`` sometimes renders them as taken off."""
    if isinstance(value, BaseException):
        value = value.args[0] if value.args else ""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if text.startswith(("b'", 'b"')) and text.endswith(text[1]):
        text = text[2:-1]
    return text


class _Connection(Protocol):
    @property
    def sock(self) -> socket.socket: ...


Library = TypeVar("Library", bound=_Connection)


class MailboxSession(Generic[Library]):
    """One conversation with a mailbox server over implicit TLS, bounded by ``deadline``.

    ``connection`` is the protocol library's object (``imaplib``, ``poplib``) while it is open.
    """

    #: Set by the subclass: the protocol's name and the cause of a broken conversation.
    protocol = ""
    protocol_cause = ""
    #: The protocol library's own error types (a refusal or a broken conversation).
    library_errors: tuple[type[BaseException], ...] = ()
    #: What the server's words in a refused sign-in mean (:func:`explain_refusal`).
    refusals: Refusals = ()

    connection: Library | None = None

    def __init__(
        self,
        config: SmtpConfig,
        *,
        deadline: Deadline,
        timeout: float,
        transcript: Transcript | None = None,
        access_token: AccessTokenSource | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.config = config
        self.deadline = deadline
        self.timeout = timeout
        self.transcript = transcript if transcript is not None else Transcript()
        self.access_token = access_token
        self.redactor = redactor if redactor is not None else Redactor.for_config(config)
        """Hides secrets a server echoes back; the sign-in itself is redacted by protocol."""
        self.stage = ""
        self.greeting = ""
        self.mechanism = ""
        self.tls_socket: ssl.SSLSocket | None = None

    def open_tls(
        self, host: str, port: int, *, max_line: int, max_reply: int, max_lines: int
    ) -> tuple[ssl.SSLSocket, BoundedReader]:
        """TCP and the TLS handshake, each within the timeout and the deadline."""
        self.stage = "connect"
        self.transcript.add(INFO, f"Connecting to {host}:{port} (implicit TLS)")
        plain = socket.create_connection((host, port), self.deadline.wait(self.timeout))
        self.stage = "tls"
        try:
            plain.settimeout(self.deadline.wait(self.timeout))
            sock = make_ssl_context(self.config).wrap_socket(plain, server_hostname=host)
        except BaseException:
            shut(plain)
            raise
        cipher = sock.cipher()
        self.transcript.add(INFO, f"TLS established: {sock.version()} {cipher[0] if cipher else ''}".rstrip())
        self.stage = "greeting"
        self.tls_socket = sock
        reader = BoundedReader(
            sock,
            deadline=self.deadline,
            timeout=self.timeout,
            max_line=max_line,
            max_reply=max_reply,
            max_lines=max_lines,
        )
        return sock, reader

    def record(self, direction: str, text: str) -> None:
        """A transcript line, with any secret the server may have echoed hidden."""
        self.transcript.add(direction, self.redactor(text))

    def token(self, force: bool) -> tuple[str, bool]:
        """An access token for XOAUTH2 (and whether it came from the cache); the redactor learns it."""
        if self.access_token is None:
            raise self.no_token()
        token, cached = self.access_token(force)
        self.redactor.add(token)
        return token, cached

    def broken(self, text: str) -> MailboxError:
        """A broken conversation at the current stage."""
        return MailboxError(text, cause=CATALOGUE[self.protocol_cause], stage=self.stage, reply=text)

    def not_open(self) -> MailboxError:
        return self.broken(_("The %(protocol)s connection is not open.") % {"protocol": self.protocol})

    def fail(self, exc: BaseException) -> BaseException:
        """``exc`` with the stage it happened in; protocol errors and caps as a broken conversation."""
        if isinstance(exc, MailboxError):
            return exc
        if isinstance(exc, ReplyTooLarge):
            return self.broken(str(exc))
        if self.library_errors and isinstance(exc, self.library_errors):
            return self.broken(library_text(exc))
        if isinstance(exc, OSError) and not getattr(exc, "stage", ""):
            return with_cause(exc, None, self.stage)
        return exc

    def no_token(self) -> MailboxError:
        return MailboxError(
            _("OAuth2 is configured but no access token is available."),
            cause=CATALOGUE["imap_token_rejected"],
            stage="auth",
        )

    # -- the conversation's course, the same for both protocols --
    def connect(self) -> str:
        """TCP, TLS (verified with ``ssl_cafile``, as for SMTP) and the greeting; returns it."""
        raise NotImplementedError

    def open_connection(self) -> Library:
        """The open connection, or the error a command on a closed one is."""
        if self.connection is None:
            raise self.not_open()
        return self.connection

    def login(self) -> str:
        """Sign in with the configuration's credentials (XOAUTH2 for OAuth2); returns the
        server's answer. A refusal raises :class:`MailboxError` with the cause its words name."""
        self.stage = "auth"
        connection = self.open_connection()
        try:
            text = self.sign_in(connection)
        except BaseException as exc:
            reply = self.refusal(exc)
            if reply is None:
                raise self.fail(exc) from None
            cause = explain_refusal(reply, self.refusals)
            if self.config.uses_oauth2 and cause.id == "imap_bad_credentials":
                cause = CATALOGUE["imap_token_rejected"]
            raise MailboxError(reply, cause=cause, stage="auth", reply=reply) from None
        return text

    def sign_in(self, connection: Library) -> str:
        return self.xoauth2(connection) if self.config.uses_oauth2 else self.password(connection)

    def password(self, connection: Library) -> str:
        """Sign in with the username and password; set :attr:`mechanism`."""
        raise NotImplementedError

    def xoauth2(self, connection: Library) -> str:
        """Sign in with XOAUTH2 and an access token from :meth:`token`; set :attr:`mechanism`."""
        raise NotImplementedError

    def refusal(self, exc: BaseException) -> str | None:
        """The server's words when ``exc`` is a refused sign-in (None: it is something else)."""
        return None

    def goodbye(self) -> str:
        """End the conversation politely (LOGOUT, QUIT); returns the server's answer."""
        self.stage = "logout"
        connection, self.connection = self.connection, None
        if connection is None:
            return ""
        try:
            return self.say_goodbye(connection)
        except BaseException as exc:
            shut(connection.sock)
            raise self.fail(exc) from None

    def say_goodbye(self, connection: Library) -> str:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection without a goodbye (after a failure; POP3 then removes nothing)."""
        connection, self.connection = self.connection, None
        if connection is not None:
            shut(connection.sock)
