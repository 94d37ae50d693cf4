"""The connection under a session: an smtplib client held to deadlines and reply caps, over verified TLS.

smtplib reads a reply line by line with a timeout for each read, without a limit on the lines:
a server that drips or never stops would hold the caller for ever. Here every read, write and
TLS handshake meets the session's :class:`Clock` (README.md#hostile-or-broken-servers), every
reply is capped (:data:`MAX_REPLY_LINES`, :data:`MAX_REPLY_BYTES`), and the socket reader can
tell whether reply bytes are already waiting (what pipelining needs). :class:`RecordingSMTP` and
:class:`RecordingSMTP_SSL` are the session's clients (they also record the conversation);
:class:`BoundedSMTP` is a bare one for ``gmail_check``'s short probes.
"""

from __future__ import annotations

import contextlib
import select
import smtplib
import socket
import ssl
import sys
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext as _

from .causes import CATALOGUE
from .conf import SmtpConfig
from .deadline import Deadline, connect, handshake, set_timeout
from .exceptions import DeadlineExceeded, ReplyTooLongError
from .transcript import INFO, Recording

__all__ = [
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "Bounded",
    "BoundedSMTP",
    "Clock",
    "RecordingSMTP",
    "RecordingSMTP_SSL",
    "SocketReader",
    "buffered",
    "make_ssl_context",
    "readable",
]


def make_ssl_context(config: SmtpConfig) -> ssl.SSLContext:
    """A verifying TLS context (never unverified); ``ssl_cafile`` replaces the system CAs."""
    context = ssl.create_default_context(cafile=config.ssl_cafile or None)
    if config.ssl_certfile or config.ssl_keyfile:
        context.load_cert_chain(config.ssl_certfile or "", config.ssl_keyfile or None)
    return context


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


class Clock:
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


class SocketReader:
    """Stands in for smtplib's ``sock.makefile("rb")``, and can tell whether bytes are waiting.

    Pipelining reads the replies that have already arrived before writing more;
    a buffered file object cannot say whether it holds any. :meth:`reply` reads whole
    replies within the session's deadlines and the reply caps.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def readline(self, limit: int = -1, clock: Clock | None = None, received: int = 0) -> bytes:
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
                left = deadline.remaining()  # on the deadline's own clock
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

    def reply(self, clock: Clock) -> tuple[int, bytes]:
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
        return readable(self.sock)

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

    def __init__(self, context: ssl.SSLContext, clock: Clock) -> None:
        self.context = context
        self.clock = clock

    def wrap_socket(self, sock: socket.socket, server_hostname: str | None = None) -> ssl.SSLSocket:
        return handshake(self.context, sock, self.clock.for_reading(), server_hostname)


class Bounded:
    """Mixin for ``smtplib.SMTP``: every read, write and handshake within the session's
    deadlines (:class:`Clock`), every reply within the caps; nothing read through smtplib's own
    unbounded loop."""

    clock: Clock
    file: Any
    sock: Any
    source_address: Any
    command_encoding: str

    if TYPE_CHECKING:

        def close(self) -> None: ...  # smtplib.SMTP's

    def getreply(self) -> tuple[int, bytes]:
        reader = self.file
        if reader is None:
            reader = self.file = SocketReader(self.sock)
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


def _no_delay(sock: socket.socket) -> None:
    """Pipelining writes while earlier data is unacknowledged: Nagle would hold them for an ACK.

    Every write is already one whole group of commands, so this sends no tiny packets.
    """
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class BoundedSMTP(Bounded, smtplib.SMTP):
    """A bare smtplib client for short probes: everything within one ``deadline``, replies capped."""

    def __init__(self, deadline: Deadline, **kwargs: Any) -> None:
        self.clock = Clock(deadline.seconds)
        self.clock.phase = deadline
        super().__init__(**kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self._open_socket(host, port)


class RecordingSMTP(Recording, Bounded, smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self.on_stage("connect")
        self.transcript.add(INFO, f"Connecting to {host}:{port}")
        sock = self._open_socket(host, port)
        self.on_stage("greeting")
        return sock


class RecordingSMTP_SSL(Recording, Bounded, smtplib.SMTP_SSL):
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


def readable(sock: Any) -> bool:
    """True if ``sock`` has a byte or its end waiting (or is gone): an idle server spoke or hung up."""
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def buffered(client: smtplib.SMTP) -> bool:
    """True if reply bytes are already here (read and buffered, or decrypted and pending)."""
    reader = client.file
    if isinstance(reader, SocketReader) and reader.buffer:
        return True
    pending = getattr(client.sock, "pending", None)
    return bool(pending is not None and pending())
