"""After the SMTP steps: look for the round trip's message in the mailbox, over IMAP or POP3."""

from __future__ import annotations

from .. import conf
from ..conf import SmtpConfig
from ..deadline import Deadline
from ..diagnosis import Run
from .imap_round import ImapRound
from .pop_round import PopRound
from .steps import IMAP
from .trip import RoundTrip

__all__ = ["receive"]


def receive(trip: RoundTrip, run: Run, config: SmtpConfig, timeout: float) -> None:
    """Sign in to the mailbox of ``config`` and add the round-trip steps to ``run``; ``timeout``
    bounds each step (the wait itself is bounded by the round trip's own timeout)."""
    config = config if config.imap_host else conf.with_mailbox(config)
    if trip.sent_at is None:
        trip.sent_at = trip.clock()
    # The whole mailbox conversation: the wait plus a few step timeouts for sign-in and cleanup.
    deadline = Deadline(trip.timeout + 4 * timeout, "overall", clock=trip.clock)
    walker = ImapRound if trip.via == IMAP else PopRound
    walker(trip, run, config, timeout, deadline, run.diagnosis.mailbox_transcript).walk()
