"""The pipelining engine: mail transactions sent with as few round trips as the server allows.

With PIPELINING and CHUNKING (RFC 2920, RFC 3030) one write carries ``MAIL``, the ``RCPT``
commands and ``BDAT n LAST`` with the message. The window slides: up to ``window`` transactions
are in flight, and the next one is written as soon as one of them has all its replies, without
waiting for the others. Every reply is matched to its command in order. A transaction that
follows another still in flight starts with ``RSET`` (no round trip: it is in the same write), so
a refused transaction never leaves the server mid-transaction. With PIPELINING but no CHUNKING,
``MAIL``/``RCPT``/``DATA`` go together and the message follows the ``354``; without PIPELINING,
one command at a time.

The engine drives a :class:`Conversation` (an :class:`~django_gmail_smtp.session.SMTPSession`)
and records every reply on the :class:`Transaction` it answers; it never raises for a reply or a
network failure: the conversation's ``error`` says what broke it.
"""

from __future__ import annotations

import re
import smtplib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from .deadline import Deadline, set_timeout
from .exceptions import DeadlineExceeded
from .smtp_client import Clock, buffered
from .transcript import CLIENT, Recording, Transcript

__all__ = ["MAX_BYTES_IN_FLIGHT", "Conversation", "Reply", "Transaction", "send"]


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


class Conversation(Protocol):
    """What the engine needs of a session."""

    client: smtplib.SMTP | None
    clock: Clock
    transcript: Transcript
    messages: int
    """Transactions started on this connection."""
    clean: bool
    """No mail transaction is open on the server: ``MAIL`` needs no ``RSET`` before it."""
    error: BaseException | None

    def has_extension(self, name: str) -> bool: ...

    def explain(self, exc: BaseException) -> BaseException:
        """``exc`` with its cause and stage."""
        ...

    def abort(self) -> None: ...


MAX_BYTES_IN_FLIGHT = 1 << 20
"""Beyond the first message, pipelining stops adding messages once this many bytes are unanswered."""

_COALESCE_LIMIT = 1 << 16  # parts larger than this are written on their own rather than copied

_LEADING_DOT = re.compile(rb"(?m)^\.")

_PLAIN_ADDRESS = re.compile(r"[^\s<>()\"\\,;:]+@[^\s<>()\"\\,;:@]+")


def _dot_stuff(data: bytes) -> bytes:
    """DATA transparency (RFC 5321 4.5.2) as smtplib does it: double leading dots; end with CRLF."""
    stuffed = _LEADING_DOT.sub(b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed


def _path(address: str) -> str:
    """``<addr>`` for MAIL/RCPT, as smtplib's quoteaddr() makes it (without parsing a plain address)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _mail_options(conversation: Conversation, txn: Transaction) -> list[str]:
    options = []
    if conversation.has_extension("size"):
        options.append(f"SIZE={len(txn.data)}")
    if txn.smtputf8:
        options.append("SMTPUTF8")
    if (txn.smtputf8 or not txn.data.isascii()) and conversation.has_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    return options


def _lost(conversation: Conversation, exc: BaseException) -> None:
    if conversation.error is None:
        conversation.error = conversation.explain(exc)
    conversation.abort()


def _client(conversation: Conversation) -> smtplib.SMTP:
    if conversation.client is None:
        raise smtplib.SMTPServerDisconnected("not connected")
    return conversation.client


def _start(conversation: Conversation, txn: Transaction) -> None:
    txn.issued = True
    txn.rcpt = [None] * len(txn.recipients)
    conversation.messages += 1


def send(
    conversation: Conversation,
    transactions: Sequence[Transaction],
    *,
    window: int,
    pipelining: bool,
    stop: Callable[[Transaction], bool] | None,
) -> None:
    """Send the transactions in order, pipelined when allowed, and record every reply on them.

    Stops issuing new transactions once ``stop(transaction)`` is True for one that got its
    verdict, and when the connection fails (then ``conversation.error`` holds the failure).
    """
    try:
        client = _client(conversation)
    except smtplib.SMTPServerDisconnected as exc:
        _lost(conversation, exc)
        return
    if pipelining and conversation.has_extension("pipelining"):
        _Pipelined(conversation, client, transactions, max(1, window), stop).run()
    else:
        _one_by_one(conversation, client, transactions, stop)


class _Flight:
    """A transaction in flight and how many of its replies are still to come."""

    __slots__ = ("pending", "txn")

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn
        self.pending = 0


class _Pipelined:
    """One pipelined run of :func:`send`: a sliding window of transactions in flight."""

    def __init__(
        self,
        conversation: Conversation,
        client: smtplib.SMTP,
        txns: Sequence[Transaction],
        window: int,
        stop: Callable[[Transaction], bool] | None,
    ) -> None:
        self.conversation = conversation
        self.client = client
        self.txns = txns
        self.window = window
        self.stop = stop
        self.chunking = conversation.has_extension("chunking")
        self.add = conversation.transcript.add
        # One entry per reply still to come, in the order the commands were written.
        self.expected: deque[tuple[_Flight, str, int]] = deque()
        self.out: list[bytes] = []
        self.index = self.in_flight = self.flight_bytes = 0
        self.awaiting_go_ahead = False  # DATA written, 354 not read yet: nothing else may be written
        self.halted = False

    def run(self) -> None:
        write_failed = False
        while True:
            self._fill()
            if self.out and not write_failed:
                write_failed = not self._write(self.out)
                self.halted = self.halted or write_failed
            self.out = []
            if not self.expected:
                if write_failed:  # whatever the server made of a partial write, do not reuse it
                    self.conversation.abort()
                return
            if not self._read():
                return

    def _fill(self) -> None:
        """Issue transactions until the window is full (or a reason to wait)."""
        txns = self.txns
        while (
            not self.halted
            and self.index < len(txns)
            and self.in_flight < self.window
            and not self.awaiting_go_ahead
            and (self.in_flight == 0 or self.flight_bytes < MAX_BYTES_IN_FLIGHT)
        ):
            flight = _Flight(txns[self.index])
            self.index += 1
            self.in_flight += 1
            self.flight_bytes += len(flight.txn.data)
            self._issue(flight, clean=self.conversation.clean and self.in_flight == 1)
            self.awaiting_go_ahead = not self.chunking

    def _read(self) -> bool:
        """Read one reply, then every one that has already arrived; False if the connection failed."""
        client = self.client
        expected = self.expected
        while True:
            try:
                code, text = client.getreply()
            except (smtplib.SMTPException, OSError) as exc:
                _lost(self.conversation, exc)
                return False
            flight, kind, i = expected.popleft()
            self._record(flight, kind, i, Reply(code, text.decode("utf-8", "replace")))
            if not expected or not buffered(client):
                break
        if isinstance(client, Recording):
            client.expect_body(False)
        return True

    def _record(self, flight: _Flight, kind: str, i: int, reply: Reply) -> None:
        txn = flight.txn
        flight.pending -= 1
        if kind == "mail":
            txn.mail = reply
        elif kind == "rcpt":
            txn.rcpt[i] = reply
        elif kind == "data" and reply.code == 354:
            self.awaiting_go_ahead = False
            if txn.mail is not None and txn.mail.ok and any(r is not None and r.ok for r in txn.rcpt):
                txn.data_sent = True
                self.out.append(_dot_stuff(txn.data))
                self.add(CLIENT, f"<message body, {len(txn.data)} bytes>")
            else:  # a server that says 354 without a recipient: end an empty message at once
                txn.final = Reply(554, "5.5.1 No valid recipients (client side)")
            self.out.append(b".\r\n")
            self.add(CLIENT, ".")
            self.expected.append((flight, "end", 0))
            flight.pending += 1
        elif kind in ("bdat", "data", "end"):
            if kind == "data":
                self.awaiting_go_ahead = False
            if txn.final is None:
                txn.final = reply
        if flight.pending == 0:
            self.in_flight -= 1
            self.flight_bytes -= len(txn.data)
            if self.in_flight == 0:
                self.conversation.clean = (txn.final is not None and txn.final.ok) or (
                    txn.mail is not None and not txn.mail.ok
                )
            if self.stop is not None and self.stop(txn):
                self.halted = True

    def _issue(self, flight: _Flight, *, clean: bool) -> None:
        txn = flight.txn
        conversation = self.conversation
        _start(conversation, txn)
        conversation.clean = False
        expected, add = self.expected, self.add
        lines = []
        if not clean:
            # A refused transaction may leave the server mid-transaction; RSET costs no round trip here.
            lines.append("RSET")
            expected.append((flight, "rset", 0))
        options = _mail_options(conversation, txn)
        lines.append(f"MAIL FROM:{_path(txn.sender)}" + (" " + " ".join(options) if options else ""))
        expected.append((flight, "mail", 0))
        for i, recipient in enumerate(txn.recipients):
            lines.append(f"RCPT TO:{_path(recipient)}")
            expected.append((flight, "rcpt", i))
        for line in lines:
            add(CLIENT, line)
        if self.chunking:
            txn.data_sent = True  # in the same write as the commands
            lines.append(f"BDAT {len(txn.data)} LAST")
            add(CLIENT, f"BDAT {len(txn.data)} LAST")
            add(CLIENT, f"<message body, {len(txn.data)} bytes>")
            expected.append((flight, "bdat", 0))
            self.out.append(("\r\n".join(lines) + "\r\n").encode("utf-8"))
            self.out.append(txn.data)
        else:
            lines.append("DATA")  # must end the group (RFC 2920): the message follows the 354
            add(CLIENT, "DATA")
            expected.append((flight, "data", 0))
            self.out.append(("\r\n".join(lines) + "\r\n").encode("utf-8"))
        flight.pending = len(lines)  # one reply per command line

    def _write(self, parts: list[bytes]) -> bool:
        """Write ``parts``; False if the connection failed (replies already sent may still be read)."""
        client = self.client
        sock = client.sock
        if isinstance(client, Recording):
            client.wrote()
        clock = self.conversation.clock
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
            conversation = self.conversation
            if conversation.error is None:
                conversation.error = conversation.explain(exc)
            return False
        clock.wrote()
        return True


def _one_by_one(
    conversation: Conversation,
    client: smtplib.SMTP,
    txns: Sequence[Transaction],
    stop: Callable[[Transaction], bool] | None,
) -> None:
    for txn in txns:
        _start(conversation, txn)
        try:
            if not conversation.clean:
                client.rset()
            conversation.clean = False
            code, text = client.mail(txn.sender, _mail_options(conversation, txn))
            txn.mail = Reply(code, text.decode("utf-8", "replace"))
            if txn.mail.ok:
                for i, recipient in enumerate(txn.recipients):
                    code, text = client.rcpt(recipient)
                    txn.rcpt[i] = Reply(code, text.decode("utf-8", "replace"))
                    if code == 421:
                        break
                if any(r is not None and r.ok for r in txn.rcpt):
                    txn.final = _data(client, txn)
            conversation.clean = (txn.final is not None and txn.final.ok) or not txn.mail.ok
        except (smtplib.SMTPException, OSError) as exc:
            _lost(conversation, exc)
            return
        if 421 in (txn.mail.code, *(r.code for r in txn.rcpt if r is not None)) or (
            txn.final is not None and txn.final.code == 421
        ):
            _lost(conversation, smtplib.SMTPServerDisconnected("The server is closing the connection (421)."))
            return
        if stop is not None and stop(txn):
            return


def _data(client: smtplib.SMTP, txn: Transaction) -> Reply:
    """``DATA``, the message after the ``354``, and the final reply (or ``DATA`` refused)."""
    bodies = getattr(client, "bodies_sent", 0)
    try:
        code, text = client.data(txn.data)
    except smtplib.SMTPDataError as refused:
        code = refused.smtp_code
        text = refused.smtp_error if isinstance(refused.smtp_error, bytes) else refused.smtp_error.encode()
    finally:
        txn.data_sent = getattr(client, "bodies_sent", 0) > bodies
    return Reply(code, text.decode("utf-8", "replace"))
