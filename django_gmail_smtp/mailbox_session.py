"""What the round trip's IMAP and POP3 clients share: the bounded TLS connection, the
transcript and how a failure is named.

:class:`MailboxSession` is the base of :class:`~.imap.ImapClient` and :class:`~.pop.PopClient`.
It opens the implicit-TLS connection step by step (``stage``: ``connect``, ``tls``, ``greeting``),
verified like SMTP's (the same ``ssl_cafile``), within the overall deadline, and hands back a
:class:`~.bounded_io.BoundedReader` for the protocol library to read through.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from django.utils.translation import gettext as _

from .bounded_io import BoundedReader, ReplyTooLarge, shut
from .causes import CATALOGUE
from .conf import SmtpConfig
from .deadline import Deadline
from .exceptions import MailboxError, with_cause
from .redaction import Redactor
from .session import INFO, Transcript, make_ssl_context

__all__ = ["AccessTokenSource", "MailboxSession"]

AccessTokenSource = Callable[[bool], tuple[str, bool]]
"""``source(force_refresh) -> (access token, came from the cache)``, for XOAUTH2."""


class MailboxSession:
    """One conversation with a mailbox server over implicit TLS, bounded by ``deadline``."""

    #: Set by the subclass: the protocol's name and the cause of a broken conversation.
    protocol = ""
    protocol_cause = ""
    #: The protocol library's own error types (a refusal or a broken conversation).
    library_errors: tuple[type[BaseException], ...] = ()

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

    def reply_text(self, exc: BaseException) -> str:
        """The server's words carried by a library error."""
        value = exc.args[0] if exc.args else ""
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

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
            return self.broken(self.reply_text(exc))
        if isinstance(exc, OSError) and not getattr(exc, "stage", ""):
            return with_cause(exc, None, self.stage)
        return exc

    def no_token(self) -> MailboxError:
        return MailboxError(
            _("OAuth2 is configured but no access token is available."),
            cause=CATALOGUE["imap_token_rejected"],
            stage="auth",
        )
