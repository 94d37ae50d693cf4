"""The round trip asked for: its options, the tagged message it sends, and what it found.

One :class:`RoundTrip` per run: :func:`~django_gmail_smtp.diagnose.run_check` asks it for the
message to send (:meth:`RoundTrip.message`), tells it when the server took it
(:meth:`RoundTrip.sent`), then :func:`~.receive.receive` looks for it in the mailbox and fills in
:attr:`RoundTrip.summary`.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext as _

from ..causes import CATALOGUE, Cause
from ..conf import SmtpConfig
from ..envelope import build_envelope
from .headers import address_of
from .steps import IMAP, VIA

if TYPE_CHECKING:
    from ..imap import ImapFolder

__all__ = ["DEFAULT_TIMEOUT", "SUBJECT_PREFIX", "Delivered", "RoundTrip"]

DEFAULT_TIMEOUT = 60.0
SUBJECT_PREFIX = "gmail_check round trip"


@dataclass
class Delivered:
    """The found message: where, when, and its header."""

    folder: str
    role: str
    seconds: float
    header: bytes = field(repr=False)
    internaldate: float | None = None
    uids: list[int] = field(default_factory=list)
    pop_number: int = 0
    imap_folder: ImapFolder | None = None


class RoundTrip:
    """What the round trip needs to know and what it found. One object per run.

    ``via``: ``"imap"`` (default) or ``"pop3"``. ``timeout``: seconds to wait for the message,
    counted from the server's 250. ``keep``: leave the message in the mailbox. ``from_email``:
    the From to send with (default ``DEFAULT_FROM_EMAIL``). ``sleep`` and ``clock`` are
    injectable for tests.
    """

    def __init__(
        self,
        *,
        via: str = IMAP,
        timeout: float = DEFAULT_TIMEOUT,
        keep: bool = False,
        from_email: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if via not in VIA:
            raise ValueError(f"via must be one of {VIA}, not {via!r}")
        self.via = via
        self.timeout = float(timeout)
        self.keep = keep
        self.from_email = from_email
        self.sleep = sleep
        self.clock = clock
        self.token = secrets.token_hex(8)
        self.message_id = ""
        self.sender = ""
        self.recipient = ""
        self.sent_at: float | None = None
        self.summary: dict[str, Any] = {"via": via}

    # -- hooks called by diagnose --
    def config_cause(self, config: SmtpConfig) -> Cause | None:
        """A reason the round trip cannot run with ``config`` (checked before any network use)."""
        if "@" not in config.username:
            return CATALOGUE["round_trip_no_address"]
        return None

    def message(self, config: SmtpConfig) -> tuple[str, list[str], bytes]:
        """The envelope and bytes of the tagged test message (built as the backend builds mail)."""
        from django.conf import settings
        from django.core.mail import EmailMessage
        from django.core.mail.utils import DNS_NAME

        self.sender = self.from_email or str(settings.DEFAULT_FROM_EMAIL)
        self.recipient = config.username
        self.message_id = make_msgid(idstring=f"gmail-check-{self.token}", domain=str(DNS_NAME))
        body = _(
            "This message was sent by 'manage.py gmail_check --round-trip' to prove delivery to "
            "%(to)s through %(host)s:%(port)s, from the machine %(machine)s at %(time)s. It is "
            "deleted once found, unless --keep was given."
        ) % {
            "to": self.recipient,
            "host": config.host,
            "port": config.port,
            "machine": socket.gethostname(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        }
        message = EmailMessage(
            f"{SUBJECT_PREFIX} {self.token}",
            body,
            self.sender,
            [self.recipient],
            headers={"Message-ID": self.message_id, "X-Gmail-Check-Round-Trip": self.token},
        )
        sender, recipients, data = build_envelope(message)
        self.summary.update(
            message_id=self.message_id, from_sent=address_of(self.sender) or self.sender, to=self.recipient
        )
        return sender, recipients, data

    def sent(self) -> None:
        """The server answered 250: the wait is counted from now."""
        self.sent_at = self.clock()

    # -- the wait --
    def arrival_deadline(self) -> float:
        assert self.sent_at is not None
        return self.sent_at + self.timeout

    def elapsed(self) -> float:
        """Seconds since the server's 250."""
        return max(0.0, self.clock() - (self.sent_at or 0.0))
