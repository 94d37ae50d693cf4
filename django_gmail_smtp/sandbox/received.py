"""What the sandbox keeps of each message it accepted."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: its envelope, raw bytes and how it arrived."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes = field(repr=False)
    """The message exactly as received (dot-unstuffed after DATA), CRLF line ends."""
    auth_user: str | None = None
    tls: bool = False
    port: int = 0
    smtputf8: bool = False
    via_bdat: bool = False
    # How the client connected, for the headers a recipient's mailbox adds (Received); not
    # compared, so tests can compare messages by what was sent.
    helo: str = field(default="", compare=False)
    peer: str = field(default="", compare=False)
    tls_version: str | None = field(default=None, compare=False)
    cipher: str | None = field(default=None, compare=False)
    session_id: str = field(default="", compare=False)

    @property
    def message(self) -> EmailMessage:
        """The message parsed with ``email.policy.default``."""
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message

    @property
    def size(self) -> int:
        """Length of :attr:`data` in bytes."""
        return len(self.data)
