"""One SMTP conversation: connect, TLS, EHLO, sign-in, send, with a redacted transcript.

Shared by the backend, ``gmail_check`` and the admin's test buttons. Every
failure is re-raised as its own type carrying a :mod:`~django_gmail_smtp.causes`
entry and the stage it happened in.

:meth:`SMTPSession.transact` sends many messages with as few round trips as the
server allows: with PIPELINING and CHUNKING one write carries ``MAIL``, the
``RCPT`` commands and ``BDAT n LAST`` with the message, and up to ``window`` messages
are in flight at once (RFC 2920, RFC 3030); every reply is matched to its
command in order. Without those extensions it falls back to one command at a
time.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hmac
import logging
import os
import re
import select
import smtplib
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from django.core.mail.utils import DNS_NAME
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.debug import sensitive_variables

from .app_settings import flag_setting
from .causes import CATALOGUE, cause
from .conf import SmtpConfig, is_loopback
from .deadline import Deadline, connect, handshake, set_timeout
from .exceptions import (
    DeadlineExceeded,
    GmailConfigError,
    ReplyTooLongError,
    TLSRequiredError,
    explain_exception,
    with_cause,
)
from .redaction import REDACTED, Redactor, detach

__all__ = [
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "BoundedSMTP",
    "Reply",
    "SMTPSession",
    "Transaction",
    "Transcript",
    "make_ssl_context",
    "sign_in_with_password",
]

logger = logging.getLogger("django_gmail_smtp.transcript")

CLIENT, SERVER, INFO = "->", "<-", "**"


class Transcript:
    """The last lines of an SMTP conversation, credentials already redacted (by the session's client)."""

    def __init__(self, maxlen: int = 500) -> None:
        self.lines: deque[tuple[str, str]] = deque(maxlen=maxlen)
        self.log = flag_setting("TRANSCRIPT")

    def add(self, direction: str, text: str) -> None:
        self.lines.append((direction, text))
        if self.log:
            logger.debug("%s %s", direction, text)

    def render(self) -> str:
        return "\n".join(f"{d} {t}" for d, t in self.lines)

    def __str__(self) -> str:
        return self.render()


def make_ssl_context(config: SmtpConfig) -> ssl.SSLContext:
    """A verifying TLS context (never unverified); ``ssl_cafile`` replaces the system CAs."""
    context = ssl.create_default_context(cafile=config.ssl_cafile or None)
    if config.ssl_certfile or config.ssl_keyfile:
        context.load_cert_chain(config.ssl_certfile or "", config.ssl_keyfile or None)
    return context


class Reply(NamedTuple):
    """One server reply; multi-line texts are joined with ``"\\n"`` as smtplib does."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(eq=False)
class Transaction:
    """One mail transaction for :meth:`SMTPSession.transact`, and the replies it got.

    ``recipients`` are envelope addresses; ``smtputf8`` asks for ``MAIL ... SMTPUTF8``
    (the caller checks that the server offers it). ``tag`` is the caller's.
    """

    sender: str
    recipients: list[str]
    data: bytes
    smtputf8: bool = False
    tag: Any = None
    issued: bool = False
    """Its commands were written (or, without pipelining, started)."""
    data_sent: bool = False
    """The message's bytes were handed to the connection: without a final reply, the server may
    have accepted it or not (the outcome is unknown), where without them it certainly did not."""
    mail: Reply | None = None
    rcpt: list[Reply | None] = field(default_factory=list)
    final: Reply | None = None
    """The reply to ``BDAT LAST`` or to the end of ``DATA`` (or ``DATA`` refused)."""

    @property
    def settled(self) -> bool:
        """True once the server's verdict is known: accepted, or refused at some step."""
        if self.final is not None:
            return True
        if self.mail is not None and not self.mail.ok:
            return True
        return bool(self.rcpt) and all(r is not None and not r.ok for r in self.rcpt)


class _Stats:
    """Counters of one session, shared with its smtplib client."""

    __slots__ = ("round_trips",)

    def __init__(self) -> None:
        self.round_trips = 0


# Linux: acknowledge what arrives at once instead of up to 40 ms later (delayed ACK). A server
# whose Nagle algorithm holds its next reply until our ACK (Postfix after the TLS session tickets,
# and when pipelined replies come in several writes) would otherwise stall for that long.
# The kernel turns it off again by itself, so it is set before each read.
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


MAX_REPLY_LINES = 100
"""Most lines one server reply may have (Gmail's longest, the EHLO reply, has 9); more fails."""

MAX_REPLY_BYTES = 64 * 1024
"""Most bytes one server reply may have, line ends included; more fails (smtplib caps each line at 8 KiB)."""

_MAX_LINE = 8192  # as smtplib: a longer reply line is refused with "500 Line too long."


class _Clock:
    """The deadlines of one session, shared with its smtplib client (README.md#hostile-or-broken-servers).

    While a ``phase`` is set (the connection set-up, one step of ``gmail_check``, NOOP, QUIT),
    every read, write and TLS handshake ends by it. Otherwise a write may take ``timeout``
    seconds and starts a fresh ``reply`` deadline: the replies to it must be complete within
    ``timeout`` seconds after it. ``limit`` (the budget of a ``send_messages()`` call) caps all.
    """

    __slots__ = ("limit", "phase", "reply", "timeout", "write")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.phase: Deadline | None = None
        self.limit: Deadline | None = None
        self.reply = Deadline(timeout, "reply")
        self.write = Deadline(timeout, "write")

    def for_reading(self) -> Deadline:
        """The deadline the next read (or TLS handshake) must meet."""
        return (self.phase or self.reply).earlier(self.limit)

    def for_writing(self, sock: Any) -> Deadline:
        """The deadline of the next write; gives ``sock`` what is left of it (raises if nothing is)."""
        deadline = self.phase
        if deadline is None:
            deadline = self.write
            deadline.restart()
        deadline = deadline.earlier(self.limit)
        set_timeout(sock, deadline.left())
        return deadline

    def wrote(self) -> None:
        """A write went out: its replies are due within the timeout (outside a phase)."""
        if self.phase is None:
            self.reply.restart()


class _SocketReader:
    """Stands in for smtplib's ``sock.makefile("rb")``, and can tell whether bytes are waiting.

    Pipelining reads the replies that have already arrived before writing more;
    a buffered file object cannot say whether it holds any. :meth:`reply` reads whole
    replies within the session's deadlines and the reply caps.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def readline(self, limit: int = -1, clock: _Clock | None = None, received: int = 0) -> bytes:
        """One line (at most ``limit`` bytes); ``b""`` at the end of the stream.

        With a ``clock`` every wait ends by its deadline; ``received`` (bytes of the reply
        so far) goes into the :class:`DeadlineExceeded` it raises.
        """
        buf = self.buffer
        start = 0
        deadline: Deadline | None = None
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(buf):
                end = limit
                break
            start = len(buf)
            if clock is not None:
                deadline = clock.for_reading()
                left = deadline.at - time.monotonic()
                if left <= 0:
                    raise deadline.error(received + len(buf))
                set_timeout(self.sock, left)
            if _QUICKACK is not None:
                with contextlib.suppress(OSError):
                    self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                if deadline is None:
                    raise
                raise deadline.error(received + len(buf)) from None
            if not chunk:
                end = len(buf)
                break
            buf += chunk
        if limit >= 0:
            end = min(end, limit)
        line = bytes(buf[:end])
        del buf[:end]
        return line

    def reply(self, clock: _Clock) -> tuple[int, bytes]:
        """One whole reply, read by smtplib's rules (code, and the lines' texts joined with ``\\n``).

        Raises ``SMTPServerDisconnected`` at the end of the stream, :class:`DeadlineExceeded`
        when the deadline passes and :class:`ReplyTooLongError` past ``MAX_REPLY_LINES`` lines
        or ``MAX_REPLY_BYTES`` bytes.
        """
        texts: list[bytes] = []
        size = 0
        while True:
            line = self.readline(_MAX_LINE + 1, clock, size)
            if not line:
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            if len(line) > _MAX_LINE:
                raise smtplib.SMTPResponseException(500, "Line too long.")
            size += len(line)
            texts.append(line[4:].strip(b" \t\r\n"))
            if len(texts) > MAX_REPLY_LINES or size > MAX_REPLY_BYTES:
                raise _too_long(len(texts) > MAX_REPLY_LINES)
            try:
                code = int(line[:3])
            except ValueError:  # not a reply line: no continuation is read
                return -1, b"\n".join(texts)
            if line[3:4] != b"-":
                return code, b"\n".join(texts)

    def waiting(self) -> bool:
        """True if a byte or the end of the stream can be read without blocking."""
        if self.buffer:
            return True
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):  # closed meanwhile
            return True
        return bool(readable)

    def close(self) -> None:
        self.buffer.clear()


def _too_long(lines: bool) -> ReplyTooLongError:
    if lines:
        text = _("The server's reply has more than %(count)d lines (MAX_REPLY_LINES): the connection was closed.") % {
            "count": MAX_REPLY_LINES
        }
        exc = ReplyTooLongError(text, limit="lines", size=MAX_REPLY_LINES)
    else:
        text = _("The server's reply is longer than %(count)d bytes (MAX_REPLY_BYTES): the connection was closed.") % {
            "count": MAX_REPLY_BYTES
        }
        exc = ReplyTooLongError(text, limit="bytes", size=MAX_REPLY_BYTES)
    exc.cause = CATALOGUE["reply_too_long"]
    return exc


class _TimedHandshake:
    """What ``smtplib.SMTP.starttls()`` takes as its context: the handshake meets the deadline."""

    def __init__(self, context: ssl.SSLContext, clock: _Clock) -> None:
        self.context = context
        self.clock = clock

    def wrap_socket(self, sock: socket.socket, server_hostname: str | None = None) -> ssl.SSLSocket:
        return handshake(self.context, sock, self.clock.for_reading(), server_hostname)


class _Bounded:
    """Mixin for ``smtplib.SMTP``: every read, write and handshake within the session's
    deadlines (:class:`_Clock`), every reply within the caps; nothing read through smtplib's own
    unbounded loop."""

    clock: _Clock
    file: Any
    sock: Any
    source_address: Any
    command_encoding: str

    if TYPE_CHECKING:

        def close(self) -> None: ...  # smtplib.SMTP's

    def getreply(self) -> tuple[int, bytes]:
        reader = self.file
        if reader is None:
            reader = self.file = _SocketReader(self.sock)
        try:
            return reader.reply(self.clock)  # type: ignore[no-any-return]
        except smtplib.SMTPException:  # our deadline and cap errors are SMTPExceptions too
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise smtplib.SMTPServerDisconnected(f"Connection unexpectedly closed: {exc}") from None

    def send(self, s: Any) -> None:
        data = s.encode(self.command_encoding) if isinstance(s, str) else s
        sys.audit("smtplib.send", self, data)
        sock = self.sock
        if not sock:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        deadline: Deadline | None = None
        try:
            deadline = self.clock.for_writing(sock)
            sock.sendall(data)
        except DeadlineExceeded:
            self.close()
            raise
        except TimeoutError:
            self.close()
            raise deadline.error() if deadline is not None else smtplib.SMTPServerDisconnected("timed out") from None
        except OSError:
            self.close()
            raise smtplib.SMTPServerDisconnected("Server not connected") from None
        self.clock.wrote()

    def starttls(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        context = kwargs.get("context") or ssl.create_default_context()
        kwargs["context"] = _TimedHandshake(context, self.clock)
        return super().starttls(*args, **kwargs)  # type: ignore[misc,no-any-return]

    def _open_socket(self, host: str, port: int) -> socket.socket:
        sock = connect(host, port, self.clock.for_reading(), self.source_address)
        _no_delay(sock)
        return sock


class _Recording:
    """Mixin for ``smtplib.SMTP`` that records the conversation and its stage.

    Every reply passes through the session's :class:`~django_gmail_smtp.redaction.Redactor`
    before smtplib (and so every exception, ``Reply`` and transcript line) sees it: a server that
    echoes the credentials cannot put them into an error message.
    """

    transcript: Transcript
    on_stage: Callable[[str], None]
    file: Any
    sock: Any
    stats: _Stats | None = None
    redactor: Redactor | None = None
    _auth_exchange = False
    _body_next = False
    _wrote = False
    bodies_sent = 0
    """Message bodies written after a ``354`` (smtplib's ``data()``)."""

    def send(self, s: Any) -> None:
        self._wrote = True
        raw = s.decode("ascii", "replace") if isinstance(s, bytes) else s
        if self._body_next:
            self._body_next = False
            self.bodies_sent += 1
            self.transcript.add(CLIENT, f"<message body, {len(s)} bytes>")
        else:
            for line in raw.rstrip("\r\n").split("\r\n"):
                self.transcript.add(CLIENT, self._redact(line))
        super().send(s)  # type: ignore[misc]

    def _redact(self, line: str) -> str:
        words = line.split(" ")
        if words[0].upper() == "AUTH":
            self._auth_exchange = True
            return " ".join(words[:2] + ([REDACTED] if len(words) > 2 else []))
        if self._auth_exchange:
            return REDACTED
        return self.redactor(line) if self.redactor else line

    def getreply(self) -> tuple[int, bytes]:
        if self._wrote:  # waiting for a reply after writing: one more round trip
            self._wrote = False
            if self.stats is not None:
                self.stats.round_trips += 1
        code, message = super().getreply()  # type: ignore[misc]
        if self.redactor:
            message = self.redactor.redact_bytes(message)
        lines = message.decode("utf-8", "replace").split("\n") if message else [""]
        for i, text in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            self.transcript.add(SERVER, f"{code}{sep}{text}".rstrip())
        if code != 334:
            self._auth_exchange = False
        self._body_next = code == 354
        return code, message


def _no_delay(sock: socket.socket) -> None:
    """Pipelining writes while earlier data is unacknowledged: Nagle would hold them for an ACK.

    Every write is already one whole group of commands, so this sends no tiny packets.
    """
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class BoundedSMTP(_Bounded, smtplib.SMTP):
    """A bare smtplib client for short probes: everything within one ``deadline``, replies capped."""

    def __init__(self, deadline: Deadline, **kwargs: Any) -> None:
        self.clock = _Clock(deadline.seconds)
        self.clock.phase = deadline
        super().__init__(**kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self._open_socket(host, port)


class RecordingSMTP(_Recording, _Bounded, smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self.on_stage("connect")
        self.transcript.add(INFO, f"Connecting to {host}:{port}")
        sock = self._open_socket(host, port)
        self.on_stage("greeting")
        return sock


class RecordingSMTP_SSL(_Recording, _Bounded, smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self.on_stage("connect")
        self.transcript.add(INFO, f"Connecting to {host}:{port} (implicit TLS)")
        sock = self._open_socket(host, port)
        self.on_stage("tls")
        try:
            tls = handshake(self.context, sock, self.clock.for_reading(), host)
        except BaseException:
            sock.close()
            raise
        self.transcript.add(INFO, f"TLS established: {tls.version()} {tls.cipher()[0]}")  # type: ignore[index]
        self.on_stage("greeting")
        return tls


NOOP_TIMEOUT = 3.0
"""Seconds a NOOP before reuse may take before the connection is given up for a new one."""

MAX_BYTES_IN_FLIGHT = 1 << 20
"""Beyond the first message, pipelining stops adding messages once this many bytes are unanswered."""

_COALESCE_LIMIT = 1 << 16  # parts larger than this are written on their own rather than copied


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuff(data: bytes) -> bytes:
    """DATA transparency (RFC 5321 4.5.2) as smtplib does it: double leading dots; end with CRLF."""
    stuffed = _LEADING_DOT.sub(b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed


_PLAIN_ADDRESS = re.compile(r"[^\s<>()\"\\,;:]+@[^\s<>()\"\\,;:@]+")


def _path(address: str) -> str:
    """``<addr>`` for MAIL/RCPT, as smtplib's quoteaddr() makes it (without parsing a plain address)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _buffered(client: smtplib.SMTP) -> bool:
    """True if reply bytes are already here (read and buffered, or decrypted and pending)."""
    reader = client.file
    if isinstance(reader, _SocketReader) and reader.buffer:
        return True
    pending = getattr(client.sock, "pending", None)
    return bool(pending is not None and pending())


def _readable(sock: Any) -> bool:
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


# -- signing in with a password ----------------------------------------------------------------
# smtplib's login() keeps the password on the client object and in the local variables of its
# frames, where error reports read it. These functions speak the same SASL exchanges under
# Django's sensitive_variables, and SMTPSession.login() raises their failures without frames.

AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")
"""Mechanisms tried, in smtplib's order of preference, among those the server offers."""

_MAX_CHALLENGES = 5  # smtplib's limit of 334 continuations in one exchange


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@sensitive_variables()
def _sasl(
    client: smtplib.SMTP, mechanism: str, initial: str | None, answer: Callable[[bytes], str]
) -> tuple[int, bytes]:
    """``AUTH mechanism [initial]``, then ``answer(challenge)`` to each ``334``; the final reply."""
    code, text = client.docmd("AUTH", f"{mechanism} {initial}" if initial is not None else mechanism)
    challenges = 0
    while code == 334:
        challenges += 1
        if challenges > _MAX_CHALLENGES:
            raise smtplib.SMTPException(f"The server kept asking for more during AUTH {mechanism}; last reply {code}.")
        code, text = client.docmd(answer(text))
    return code, text


@sensitive_variables()
def _cram_md5(username: str, password: str, challenge: bytes) -> str:
    digest = hmac.HMAC(password.encode("utf-8"), base64.decodebytes(challenge), "md5").hexdigest()
    return _b64(f"{username} {digest}")


@sensitive_variables()
def _authenticate(client: smtplib.SMTP, mechanism: str, username: str, password: str) -> tuple[int, bytes]:
    """One SASL exchange with an initial response where smtplib sends one (PLAIN, LOGIN)."""
    if mechanism == "PLAIN":
        blob = _b64(f"\0{username}\0{password}")
        return _sasl(client, mechanism, blob, lambda _challenge: blob)
    if mechanism == "LOGIN":
        encoded = _b64(password)
        return _sasl(client, mechanism, _b64(username), lambda _challenge: encoded)
    return _sasl(client, mechanism, None, lambda challenge: _cram_md5(username, password, challenge))


@sensitive_variables()
def sign_in_with_password(client: smtplib.SMTP, username: str, password: str) -> tuple[int, bytes]:
    """What ``client.login(username, password)`` does (same mechanisms, order and errors),
    without leaving the password on the client or in frames outside this module.

    Returns the ``235`` (or ``503`` "already signed in") reply; raises
    ``SMTPNotSupportedError`` (no AUTH), ``SMTPException`` (no common mechanism) or the last
    mechanism's ``SMTPAuthenticationError``. Credentials are sent as UTF-8 (RFC 4616).
    """
    client.ehlo_or_helo_if_needed()
    if not client.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = client.esmtp_features["auth"].upper().split()
    mechanisms = [m for m in AUTH_MECHANISMS if m in offered]
    if not mechanisms:
        raise smtplib.SMTPException("No suitable authentication method found.")
    refused: smtplib.SMTPAuthenticationError | None = None
    for mechanism in mechanisms:
        code, text = _authenticate(client, mechanism, username, password)
        if code in (235, 503):
            return code, text
        refused = smtplib.SMTPAuthenticationError(code, text)
    assert refused is not None
    raise refused


class _Flight:
    """A transaction in flight and how many of its replies are still to come."""

    __slots__ = ("pending", "txn")

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn
        self.pending = 0


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _step(subject: Promise) -> Callable[[_Method], _Method]:
    """The method runs within its own deadline of ``timeout`` seconds; inside :meth:`SMTPSession.connect`
    within the set-up's. ``subject`` names the step in the timeout's message."""

    def decorate(method: _Method) -> _Method:
        @functools.wraps(method)
        def run(self: SMTPSession, *args: Any, **kwargs: Any) -> Any:
            with self._within(None, subject):
                return method(self, *args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


class SMTPSession:
    """A signed-in connection to one server, opened step by step.

    ``connect()`` runs every step; ``gmail_check`` calls the steps one by one.
    ``stage`` always names the step in progress, for diagnosis.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        transcript: Transcript | None = None,
        on_stage: Callable[[str], None] | None = None,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.config = config
        self.transcript = transcript if transcript is not None else Transcript()
        self.redactor = redactor if redactor is not None else Redactor.for_config(config)
        """Hides the configuration's secrets (and the access tokens of its sign-ins) in replies."""
        self.on_stage = on_stage
        """Called with each new stage name (``gmail_check`` shows live progress with it)."""
        self._stage = ""
        self.client: smtplib.SMTP | None = None
        self._context: ssl.SSLContext | None = None
        self._context_source = ssl_context
        """Where the TLS context comes from when it is first needed (the backend's, built once);
        made from ``config`` when not given. Not before: a missing CA file is a TLS failure, after
        the connection was made, as with Django's backend."""
        self.stats = _Stats()
        self.pid = os.getpid()
        """The process that opened the connection: after ``fork`` it belongs to the parent."""
        self.messages = 0
        """Transactions started on this connection (for recycling it)."""
        self.error: BaseException | None = None
        """What broke the connection during :meth:`transact`, if anything did."""
        self.last_used = time.monotonic()
        self._clean = True  # no mail transaction open on the server: MAIL needs no RSET first
        self.clock = _Clock(config.timeout)
        """The deadlines every read and write of this session meets (README.md#hostile-or-broken-servers)."""

    @property
    def stage(self) -> str:
        """The step in progress: ``connect``, ``tls``, ``greeting``, ``ehlo``, ``starttls``, ``auth``, ``send``..."""
        return self._stage

    @stage.setter
    def stage(self, stage: str) -> None:
        self._stage = stage
        if self.on_stage is not None:
            self.on_stage(stage)

    @property
    def limit(self) -> Deadline | None:
        """An overall deadline the caller sets (a ``send_messages()`` budget): no step of this
        session, set-up included, may go past it. None: none."""
        return self.clock.limit

    @limit.setter
    def limit(self, deadline: Deadline | None) -> None:
        self.clock.limit = deadline

    # -- helpers ---------------------------------------------------------------
    def _set_stage(self, stage: str) -> None:
        self.stage = stage

    @contextlib.contextmanager
    def _within(self, seconds: float | None, subject: str | Promise, kind: str = "step") -> Iterator[None]:
        """Run the block within a deadline of ``seconds`` (default: the timeout), unless one
        is already running (the connection set-up covers its steps)."""
        clock = self.clock
        if clock.phase is not None:
            yield
            return
        clock.phase = Deadline(self.config.timeout if seconds is None else seconds, kind, subject)
        try:
            yield
        finally:
            clock.phase = None

    def _fail(self, exc: BaseException) -> BaseException:
        config = self.config
        found = explain_exception(exc, stage=self.stage, port=config.port, use_ssl=config.use_ssl, host=config.host)
        return with_cause(exc, found, self.stage)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            source, self._context_source = self._context_source, None
            self._context = source() if source is not None else make_ssl_context(self.config)
        return self._context

    @property
    def tls_active(self) -> bool:
        return self.client is not None and isinstance(getattr(self.client, "sock", None), ssl.SSLSocket)

    def _client(self) -> smtplib.SMTP:
        if self.client is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        return self.client

    # -- steps -----------------------------------------------------------------
    def open_connection(self, *, within: float | None = None) -> tuple[int, bytes]:
        """TCP connect (and the TLS handshake with implicit TLS), then read the greeting,
        within ``within`` seconds as a whole (default: the timeout)."""
        with self._within(within, gettext_lazy("Connecting and reading the greeting")):
            return self._open_connection()

    def _open_connection(self) -> tuple[int, bytes]:
        cfg = self.config
        kwargs: dict[str, Any] = {"local_hostname": DNS_NAME.get_fqdn(), "timeout": cfg.timeout}
        if cfg.use_ssl:
            kwargs["context"] = self.ssl_context
            client: smtplib.SMTP = RecordingSMTP_SSL(**kwargs)
        else:
            client = RecordingSMTP(**kwargs)
        client.transcript = self.transcript  # type: ignore[attr-defined]
        client.on_stage = self._set_stage  # type: ignore[attr-defined]
        client.stats = self.stats  # type: ignore[attr-defined]
        client.clock = self.clock  # type: ignore[attr-defined]
        client.redactor = self.redactor  # type: ignore[attr-defined]
        self.pid = os.getpid()
        self.messages = 0
        self.error = None
        self._clean = True
        client._host = cfg.host  # type: ignore[attr-defined]  # starttls() verifies this name; connect() alone doesn't
        self.client = client
        try:
            code, message = client.connect(cfg.host, cfg.port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, message)
        except Exception as exc:
            self.abort()
            raise self._fail(exc) from None
        return code, message

    @_step(gettext_lazy("EHLO"))
    def ehlo(self) -> tuple[int, bytes]:
        self.stage = "ehlo"
        client = self._client()
        try:
            code, message = client.ehlo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, message)
        except Exception as exc:
            self.abort()
            raise self._fail(exc) from None
        return code, message

    @_step(gettext_lazy("STARTTLS and the TLS handshake"))
    def starttls(self) -> tuple[int, bytes]:
        self.stage = "starttls"
        client = self._client()
        try:
            result = client.starttls(context=self.ssl_context)
            sock = client.sock
            if isinstance(sock, ssl.SSLSocket):
                self.transcript.add(INFO, f"TLS established: {sock.version()} {sock.cipher()[0]}")  # type: ignore[index]
        except Exception as exc:
            self.abort()
            raise self._fail(exc) from None
        return result

    @_step(gettext_lazy("Sign-in"))
    def login(self) -> tuple[int, bytes] | None:
        """Sign in (app password, or OAuth2 with XOAUTH2); refuses to send credentials
        unencrypted except to a loopback peer.

        A failure is raised without the traceback and the chained exceptions of the code
        below (ours, smtplib's, google-auth's), whose local variables hold the secrets: error
        reports that show frame locals (Django's, Sentry's) never see them.
        """
        cfg = self.config
        if not cfg.has_credentials:
            return None
        self.stage = "auth"
        client = self._client()
        if not self.tls_active and not self._peer_is_loopback():
            self.abort()
            secret = "OAuth2 access token" if cfg.uses_oauth2 else "password"
            refused = TLSRequiredError(
                f"Refusing to send the {secret} for {cfg.username} to {cfg.host}:{cfg.port} "
                "over an unencrypted connection."
            )
            refused.cause = cause("tls_required")
            refused.stage = "auth"
            raise refused
        failure: BaseException
        try:
            if cfg.uses_oauth2:
                from .oauth import sign_in  # lazy: google-auth is an optional extra

                return sign_in(client, replace(cfg, timeout=self.clock.for_reading().left()))
            return sign_in_with_password(client, cfg.username, cfg.password)
        except GmailConfigError as exc:  # a setting, not the connection: never explained as a server failure
            self.abort()
            failure = exc
        except Exception as exc:
            self.abort()
            failure = self._fail(exc)
        raise detach(failure)  # outside the except clause, so Python chains nothing to it

    def _peer_is_loopback(self) -> bool:
        try:
            return is_loopback(self._client().sock.getpeername()[0])  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return False

    def connect(self) -> smtplib.SMTP:
        """Run every step: connect, (STARTTLS), EHLO, sign-in, within the timeout as a whole.
        Returns the smtplib client."""
        cfg = self.config
        with self._within(None, f"{cfg.host}:{cfg.port}", "setup"):
            self.open_connection()
            self.ehlo()
            if cfg.use_tls and not cfg.use_ssl:
                self.starttls()
                self.ehlo()
            self.login()
        return self._client()

    @_step(gettext_lazy("Sending the message"))
    def send(
        self, from_addr: str, to_addrs: Sequence[str], message: bytes, mail_options: Sequence[str] = ()
    ) -> dict[str, tuple[int, bytes]]:
        """Send one message; returns the refused recipients like ``smtplib.sendmail``."""
        self.stage = "send"
        try:
            return self._client().sendmail(from_addr, list(to_addrs), message, list(mail_options))
        except smtplib.SMTPServerDisconnected as exc:
            self.abort()
            raise self._fail(exc) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise self._fail(exc) from None

    # -- many messages ---------------------------------------------------------
    @property
    def round_trips(self) -> int:
        """Times the client waited for the server after writing, since this session began."""
        return self.stats.round_trips

    @property
    def usable(self) -> bool:
        """Connected, in this process, and not broken by a failure."""
        client = self.client
        return client is not None and getattr(client, "sock", None) is not None and self.pid == os.getpid()

    def has_extension(self, name: str) -> bool:
        client = self.client
        return client is not None and client.has_extn(name)

    @property
    def pipelining(self) -> bool:
        return self.has_extension("pipelining")

    @property
    def chunking(self) -> bool:
        return self.has_extension("chunking")

    @property
    def smtputf8(self) -> bool:
        return self.has_extension("smtputf8")

    @property
    def size_limit(self) -> int | None:
        """The server's ``SIZE`` in bytes; None when it declares none (or 0, "no limit")."""
        if self.client is None:
            return None
        try:
            size = int(self.client.esmtp_features.get("size", "0") or 0)
        except ValueError:
            return None
        return size or None

    def attach(self, transcript: Transcript) -> None:
        """Record into ``transcript`` from now on (a reused connection, a new backend)."""
        self.transcript = transcript
        if self.client is not None:
            self.client.transcript = transcript  # type: ignore[attr-defined]

    def idle_check(self, noop_after: float | None = None) -> bool:
        """True if the connection looks ready for reuse; closes it otherwise.

        Without any I/O it notices a server that hung up or sent an unsolicited
        reply (Gmail's ``451 4.4.2 Timeout``); after ``noop_after`` idle seconds
        it also asks with ``NOOP`` (one round trip).
        """
        if not self.usable:
            self.abort()
            return False
        client = self._client()
        reader = client.file
        waiting = reader.waiting() if isinstance(reader, _SocketReader) else _readable(client.sock)
        if waiting:
            self.transcript.add(INFO, "The server closed the idle connection or spoke unasked; reconnecting.")
            self.abort()
            return False
        if noop_after is not None and time.monotonic() - self.last_used > noop_after:
            self.stage = "noop"
            # A connection a firewall silently dropped would hold NOOP for the whole timeout.
            try:
                with self._within(min(self.config.timeout or NOOP_TIMEOUT, NOOP_TIMEOUT), "NOOP"):
                    code, _text = client.noop()
            except (smtplib.SMTPException, OSError):
                code = -1
            if code != 250:
                self.abort()
                return False
            self.last_used = time.monotonic()
        return True

    def transact(
        self,
        transactions: Sequence[Transaction],
        *,
        window: int = 10,
        pipelining: bool = True,
        stop: Callable[[Transaction], bool] | None = None,
    ) -> None:
        """Send the transactions in order and record every reply on them.

        Uses PIPELINING (with CHUNKING: ``BDAT n LAST``) when the server offers it
        and ``pipelining`` is True, with at most ``window`` transactions in flight;
        otherwise one command at a time. Stops issuing new transactions once
        ``stop(transaction)`` is True for one that got its verdict, and when the
        connection fails: :attr:`error` then holds the failure, :attr:`usable` is
        False, and the transactions without a verdict are not ``settled``.
        Never raises for a reply or a network failure.
        """
        if not transactions:
            return
        self.stage = "send"
        self.error = None
        try:
            if pipelining and self.pipelining:
                self._pipelined(transactions, max(1, window), stop)
            else:
                self._one_by_one(transactions, stop)
        finally:
            self.last_used = time.monotonic()

    def _lost(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = self._fail(exc)
        self.abort()

    def _mail_command(self, txn: Transaction) -> list[str]:
        options = []
        if self.has_extension("size"):
            options.append(f"SIZE={len(txn.data)}")
        if txn.smtputf8:
            options.append("SMTPUTF8")
        if (txn.smtputf8 or not txn.data.isascii()) and self.has_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        return options

    def _pipelined(self, txns: Sequence[Transaction], window: int, stop: Callable[[Transaction], bool] | None) -> None:
        client = self._client()
        chunking = self.chunking
        # One entry per reply still to come, in the order the commands were written.
        expected: deque[tuple[_Flight, str, int]] = deque()
        out: list[bytes] = []
        index = in_flight = flight_bytes = 0
        awaiting_go_ahead = False  # DATA written, 354 not read yet: nothing else may be written
        halted = write_failed = False
        while True:
            while (
                not halted
                and index < len(txns)
                and in_flight < window
                and not awaiting_go_ahead
                and (in_flight == 0 or flight_bytes < MAX_BYTES_IN_FLIGHT)
            ):
                flight = _Flight(txns[index])
                index += 1
                in_flight += 1
                flight_bytes += len(flight.txn.data)
                self._issue(flight, out, expected, chunking, clean=self._clean and in_flight == 1)
                awaiting_go_ahead = not chunking
            if out and not write_failed:
                write_failed = not self._write(out)
                halted = halted or write_failed
            out = []
            if not expected:
                if write_failed:  # whatever the server made of a partial write, do not reuse it
                    self.abort()
                return
            # Read one reply, then every one that has already arrived, before writing again.
            while True:
                try:
                    code, text = client.getreply()
                except (smtplib.SMTPException, OSError) as exc:
                    self._lost(exc)
                    return
                flight, kind, i = expected.popleft()
                txn = flight.txn
                reply = Reply(code, text.decode("utf-8", "replace"))
                flight.pending -= 1
                if kind == "mail":
                    txn.mail = reply
                elif kind == "rcpt":
                    txn.rcpt[i] = reply
                elif kind == "data" and code == 354:
                    awaiting_go_ahead = False
                    if txn.mail is not None and txn.mail.ok and any(r is not None and r.ok for r in txn.rcpt):
                        txn.data_sent = True
                        out.append(_dot_stuff(txn.data))
                        self.transcript.add(CLIENT, f"<message body, {len(txn.data)} bytes>")
                    else:  # a server that says 354 without a recipient: end an empty message at once
                        txn.final = Reply(554, "5.5.1 No valid recipients (client side)")
                    out.append(b".\r\n")
                    self.transcript.add(CLIENT, ".")
                    expected.append((flight, "end", 0))
                    flight.pending += 1
                elif kind in ("bdat", "data", "end"):
                    if kind == "data":
                        awaiting_go_ahead = False
                    if txn.final is None:
                        txn.final = reply
                if flight.pending == 0:
                    in_flight -= 1
                    flight_bytes -= len(txn.data)
                    if in_flight == 0:
                        self._clean = (txn.final is not None and txn.final.ok) or (
                            txn.mail is not None and not txn.mail.ok
                        )
                    if stop is not None and stop(txn):
                        halted = True
                if not expected or not _buffered(client):
                    break
            client._body_next = False  # type: ignore[attr-defined]

    def _issue(
        self,
        flight: _Flight,
        out: list[bytes],
        expected: deque[tuple[_Flight, str, int]],
        chunking: bool,
        *,
        clean: bool,
    ) -> None:
        txn = flight.txn
        txn.issued = True
        txn.rcpt = [None] * len(txn.recipients)
        self.messages += 1
        self._clean = False
        add = self.transcript.add
        lines = []
        if not clean:
            # A refused transaction may leave the server mid-transaction; RSET costs no round trip here.
            lines.append("RSET")
            expected.append((flight, "rset", 0))
        options = self._mail_command(txn)
        lines.append(f"MAIL FROM:{_path(txn.sender)}" + (" " + " ".join(options) if options else ""))
        expected.append((flight, "mail", 0))
        for i, recipient in enumerate(txn.recipients):
            lines.append(f"RCPT TO:{_path(recipient)}")
            expected.append((flight, "rcpt", i))
        for line in lines:
            add(CLIENT, line)
        if chunking:
            txn.data_sent = True  # in the same write as the commands
            lines.append(f"BDAT {len(txn.data)} LAST")
            add(CLIENT, f"BDAT {len(txn.data)} LAST")
            add(CLIENT, f"<message body, {len(txn.data)} bytes>")
            expected.append((flight, "bdat", 0))
            out.append(("\r\n".join(lines) + "\r\n").encode("utf-8"))
            out.append(txn.data)
        else:
            lines.append("DATA")  # must end the group (RFC 2920): the message follows the 354
            add(CLIENT, "DATA")
            expected.append((flight, "data", 0))
            out.append(("\r\n".join(lines) + "\r\n").encode("utf-8"))
        flight.pending = len(lines)  # one reply per command line

    def _write(self, parts: list[bytes]) -> bool:
        """Write ``parts``; False if the connection failed (replies already sent may still be read)."""
        client = self._client()
        sock = client.sock
        client._wrote = True  # type: ignore[attr-defined]
        clock = self.clock
        deadline: Deadline | None = None
        try:
            if sock is None:
                raise smtplib.SMTPServerDisconnected("not connected")
            deadline = clock.for_writing(sock)  # the whole write within the timeout
            small: list[bytes] = []
            for part in parts:
                if len(part) > _COALESCE_LIMIT:
                    if small:
                        sock.sendall(b"".join(small))
                        small = []
                        set_timeout(sock, deadline.left())
                    sock.sendall(part)
                    set_timeout(sock, deadline.left())
                else:
                    small.append(part)
            if small:
                sock.sendall(b"".join(small))
        except (OSError, smtplib.SMTPException) as exc:
            if isinstance(exc, TimeoutError) and not isinstance(exc, DeadlineExceeded) and deadline is not None:
                exc = deadline.error()
            if self.error is None:
                self.error = self._fail(exc)
            return False
        clock.wrote()
        return True

    def _one_by_one(self, txns: Sequence[Transaction], stop: Callable[[Transaction], bool] | None) -> None:
        client = self._client()
        for txn in txns:
            txn.issued = True
            txn.rcpt = [None] * len(txn.recipients)
            self.messages += 1
            try:
                if not self._clean:
                    client.rset()
                self._clean = False
                options = self._mail_command(txn)
                code, text = client.mail(txn.sender, options)
                txn.mail = Reply(code, text.decode("utf-8", "replace"))
                if txn.mail.ok:
                    for i, recipient in enumerate(txn.recipients):
                        code, text = client.rcpt(recipient)
                        txn.rcpt[i] = Reply(code, text.decode("utf-8", "replace"))
                        if code == 421:
                            break
                    if any(r is not None and r.ok for r in txn.rcpt):
                        bodies = getattr(client, "bodies_sent", 0)
                        try:
                            code, text = client.data(txn.data)
                        except smtplib.SMTPDataError as refused:
                            code = refused.smtp_code
                            text = (
                                refused.smtp_error
                                if isinstance(refused.smtp_error, bytes)
                                else refused.smtp_error.encode()
                            )
                        finally:
                            txn.data_sent = getattr(client, "bodies_sent", 0) > bodies
                        txn.final = Reply(code, text.decode("utf-8", "replace"))
                self._clean = (txn.final is not None and txn.final.ok) or not txn.mail.ok
            except (smtplib.SMTPException, OSError) as exc:
                self._lost(exc)
                return
            if 421 in (txn.mail.code, *(r.code for r in txn.rcpt if r is not None)) or (
                txn.final is not None and txn.final.code == 421
            ):
                self._lost(smtplib.SMTPServerDisconnected("The server is closing the connection (421)."))
                return
            if stop is not None and stop(txn):
                return

    def quit(self, *, wait: bool = True, within: float | None = None) -> None:
        """Say QUIT; tolerate a server that already hung up.

        ``wait=False`` closes right after writing QUIT, without waiting for the
        221 (recycling a connection mid-batch should not cost a round trip).
        It all takes at most ``within`` seconds (and never more than the timeout).
        """
        client = self.client
        if client is None:
            return
        timeout = self.config.timeout
        if within is not None:
            within = min(within, timeout) if timeout else within
        with self._within(within, "QUIT"):
            self._quit(wait)

    def _quit(self, wait: bool) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        self.stage = "quit"
        if not wait:
            with contextlib.suppress(smtplib.SMTPException, OSError):  # closing anyway
                client.send("QUIT\r\n")
            client.close()
            return
        try:
            client.quit()
        except (smtplib.SMTPServerDisconnected, ssl.SSLError):
            client.close()  # the server hung up first, or a TLS close_notify race
        except smtplib.SMTPException:
            client.close()
            raise
        except OSError:
            client.close()

    def abort(self) -> None:
        """Close the socket without QUIT."""
        client, self.client = self.client, None
        if client is not None:
            client.close()
