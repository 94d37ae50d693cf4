"""The transcript of a conversation, and the recording of it by the session's smtplib client.

:class:`Transcript` keeps the last lines said (``->`` the client, ``<-`` the server, ``**`` a
note of ours) and, with ``GMAIL_SMTP["TRANSCRIPT"]``, logs each one to the
``django_gmail_smtp.transcript`` logger at DEBUG. :class:`Recording` is the mixin of the
session's smtplib client that writes it: the ``AUTH`` exchange is redacted before it is
recorded, and every reply passes through the session's redactor before anything (smtplib, an
exception, a transcript line) sees it. The mailbox clients of the round trip keep their
transcripts in the same class.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from .app_settings import flag_setting
from .redaction import REDACTED, Redactor

__all__ = ["CLIENT", "INFO", "SERVER", "Recording", "Stats", "Transcript"]

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


class Stats:
    """Counters of one session, shared with its smtplib client."""

    __slots__ = ("round_trips",)

    def __init__(self) -> None:
        self.round_trips = 0


class Recording:
    """Mixin for ``smtplib.SMTP`` that records the conversation and its stage.

    Every reply passes through the session's :class:`~django_gmail_smtp.redaction.Redactor`
    before smtplib (and so every exception, ``Reply`` and transcript line) sees it: a server that
    echoes the credentials cannot put them into an error message.
    """

    transcript: Transcript
    on_stage: Callable[[str], None]
    file: Any
    sock: Any
    stats: Stats | None = None
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

    def expect_body(self, expected: bool) -> None:
        """Whether the next write is a message body (recorded by its size, never its text)."""
        self._body_next = expected

    def wrote(self) -> None:
        """The engine wrote on the socket itself: the next reply read costs a round trip."""
        self._wrote = True
