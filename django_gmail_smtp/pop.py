"""A small POP3 client for the round trip (``gmail_check --round-trip-via pop3``), on ``poplib``.

The fallback for accounts that cannot use IMAP. POP3 sees less than IMAP, and Gmail's POP
less still (README.md#proving-delivery-the-round-trip): only what arrives in the inbox (no
Spam folder, so a message filed as spam looks like one that never arrived), each message only
once (after one POP client downloaded it, Gmail leaves it out of later sessions, unless the
username starts with ``recent:``), and what ``DELE`` does is Gmail's "When messages are accessed
with POP" setting. A POP3 session sees the mailbox as it was when it signed in, so waiting means
signing in again.

Reads are bounded like the IMAP client's (:mod:`.bounded_io`): an overall deadline, a
per-read timeout, and caps on a line, a reply's size and its number of lines. ``PASS`` and
``AUTH`` never reach the transcript.
"""

from __future__ import annotations

import poplib
import ssl

from .bounded_io import BoundedReader
from .causes import Cause, Reply
from .mailbox_session import MailboxSession, Refusals, explain_refusal, library_text
from .redaction import REDACTED
from .transcript import CLIENT, SERVER
from .xoauth2 import xoauth2_response

__all__ = ["PopClient", "explain_pop_reply"]

MAX_LINE = 8 * 1024
"""Longest line (RFC 1939 allows 512 octets for responses; message lines may be 998)."""
MAX_REPLY = 8 * 1024 * 1024
MAX_LINES = 100000
"""Lines of one reply: UIDL of a large maildrop, or a message's header."""


POP_REFUSALS: Refusals = (
    Reply("pop_disabled", words=("not enabled for pop", "pop access is disabled")),
    Reply("imap_app_password_required", words=("application-specific password required",)),
    Reply("imap_web_login_required", words=("web login required", "web browser")),
    Reply("imap_unavailable", words=("[in-use]", "[sys/temp]")),
)
"""What Gmail's words in an ``-ERR`` to the sign-in mean."""


def explain_pop_reply(text: str) -> Cause:
    """The cause of a refused POP3 sign-in, from the server's ``-ERR`` text (Gmail's words)."""
    return explain_refusal(text, POP_REFUSALS)


class _POP3(poplib.POP3_SSL):
    """``poplib.POP3_SSL`` reading through a :class:`BoundedReader`, with a redacted transcript."""

    def __init__(self, owner: PopClient, host: str, port: int) -> None:
        self.owner = owner  # before poplib's constructor, which connects and reads the greeting
        self.bounded: BoundedReader | None = None
        super().__init__(host, port, timeout=owner.timeout)

    def _create_socket(self, timeout: float | None) -> ssl.SSLSocket:
        sock, self.bounded = self.owner.open_tls(
            self.host, self.port, max_line=MAX_LINE, max_reply=MAX_REPLY, max_lines=MAX_LINES
        )
        return sock

    # poplib reads every line through _getline() and writes every command through _putline().
    def _getline(self) -> tuple[bytes, int]:
        assert self.bounded is not None
        line = self.bounded.readline()
        if not line:
            raise poplib.error_proto("-ERR EOF")
        self.owner.heard(line)
        octets = len(line)
        if line.endswith(b"\r\n"):
            return line[:-2], octets
        return line.rstrip(b"\r\n"), octets

    def _putline(self, line: bytes) -> None:
        self.owner.said(line)
        if self.bounded is not None:
            self.bounded.new_reply()
        self.sock.sendall(line + b"\r\n")


class PopClient(MailboxSession[_POP3]):
    """One POP3 session over implicit TLS, bounded by ``deadline``. Failures raise
    :class:`~.exceptions.MailboxError` (with a cause) or ``OSError`` with the ``stage`` set."""

    protocol = "POP3"
    protocol_cause = "pop_protocol"
    library_errors = (poplib.error_proto,)
    refusals = POP_REFUSALS

    _secret_exchange = False

    def said(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        words = text.split(" ")
        command = words[0].upper()
        if command == "AUTH":
            self._secret_exchange = True
            text = " ".join(words[:2] + ([REDACTED] if len(words) > 2 else []))
        elif command in ("PASS", "APOP"):
            text = f"{words[0]} {REDACTED}"
        elif self._secret_exchange:
            text = REDACTED
        self.record(CLIENT, text)

    def heard(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith(("+OK", "-ERR")):
            self._secret_exchange = False
        self.record(SERVER, text)

    def connect(self) -> str:
        """TCP, TLS (verified as for SMTP) and the ``+OK`` greeting; returns it."""
        try:
            self.connection = _POP3(self, self.config.pop_host, self.config.pop_port)
        except BaseException as exc:
            raise self.fail(exc) from None
        self.greeting = library_text(self.connection.welcome)
        return self.greeting

    def sign_in(self, client: _POP3) -> str:
        """USER/PASS, or AUTH XOAUTH2 with the access token for OAuth2. Some servers (Gmail with POP
        off) accept the password and refuse the maildrop at STAT: that counts as refused here."""
        text = super().sign_in(client)
        client.stat()
        return text

    def refusal(self, exc: BaseException) -> str | None:
        if not isinstance(exc, poplib.error_proto):
            return None
        reply = library_text(exc)
        return reply if reply.startswith("-ERR") and reply != "-ERR EOF" else None

    def password(self, client: _POP3) -> str:
        self.mechanism = "USER/PASS"
        client.user(self.config.username)
        return library_text(client.pass_(self.config.password))

    def xoauth2(self, client: _POP3) -> str:
        self.mechanism = "XOAUTH2"
        token, _cached = self.token(False)
        # poplib has no AUTH: the command and its answer go through its line primitives.
        client._putline(f"AUTH XOAUTH2 {xoauth2_response(self.config.username, token)}".encode("ascii"))
        line, _octets = client._getline()
        if line.startswith(b"+ ") or line == b"+":  # an error challenge: answer with an empty line
            client._putline(b"")
            line, _octets = client._getline()
        if not line.startswith(b"+OK"):
            raise poplib.error_proto(line)
        return library_text(line)

    def message_ids(self) -> list[tuple[int, str]]:
        """(message number, unique id) of every message in the maildrop, newest first."""
        self.stage = "search"
        client = self.open_connection()
        try:
            _resp, lines, _octets = client.uidl()
        except BaseException as exc:
            raise self.fail(exc) from None
        found = []
        for line in lines:
            number, _sep, uid = line.decode("utf-8", "replace").partition(" ")
            if number.isdigit():
                found.append((int(number), uid.strip()))
        return sorted(found, reverse=True)

    def header(self, number: int) -> bytes:
        """The header of message ``number`` (``TOP n 0``), with CRLF line ends."""
        self.stage = "fetch"
        client = self.open_connection()
        try:
            _resp, lines, _octets = client.top(number, 0)
        except BaseException as exc:
            raise self.fail(exc) from None
        return b"\r\n".join(lines) + b"\r\n"

    def delete(self, number: int) -> str:
        """Mark message ``number`` deleted; the server removes it at QUIT."""
        self.stage = "delete"
        client = self.open_connection()
        try:
            return library_text(client.dele(number))
        except BaseException as exc:
            raise self.fail(exc) from None

    def say_goodbye(self, client: _POP3) -> str:
        """QUIT (which commits deletions); returns the server's answer."""
        return library_text(client.quit())
