"""Finding the test message over POP3: the newest messages' headers read by ``TOP``, signing in
again between polls (a POP3 session sees the maildrop as it was at sign-in)."""

from __future__ import annotations

from django.utils.translation import gettext as _

from ..pop import PopClient
from .cleanup import cleanup_step
from .headers import message_ids
from .mailbox import MailboxRound
from .trip import Delivered

__all__ = ["POP_NEWEST", "POP_PAUSE", "PopRound"]

POP_PAUSE = 5.0
"""Seconds between POP3 sessions (each poll signs in again: POP3 sees the mailbox as it was at sign-in)."""
POP_NEWEST = 20
"""Messages of the first POP3 listing whose header is read (newest first); later listings: every new one."""


class PopRound(MailboxRound[PopClient]):
    connect_name, auth_name, goodbye_name = "pop_connect", "pop_auth", "pop_quit"
    unreachable = "pop_unreachable"
    longest_pause = POP_PAUSE
    inbox_only = True

    @property
    def address(self) -> tuple[str, int]:
        return self.config.pop_host, self.config.pop_port

    def new_client(self) -> PopClient:
        return self.open(PopClient)

    def wait(self) -> Delivered | None:
        trip = self.trip
        step = self.begin_wait(searched=["INBOX"], searches=0, sessions=1)
        seen: set[str] | None = None
        number = 0
        try:
            while True:
                step.data["searches"] = number + 1
                listed = self.client.message_ids()
                if seen is None:
                    # Only the newest messages of the first listing can be ours; later ones are new.
                    seen = {uid for _number, uid in listed[POP_NEWEST:]}
                for message_number, uid in listed:
                    if uid in seen:
                        continue
                    header = self.client.header(message_number)
                    seen.add(uid)
                    if trip.message_id in message_ids(header):
                        found = Delivered(
                            folder="INBOX",
                            role="inbox",
                            seconds=trip.elapsed(),
                            header=header,
                            pop_number=message_number,
                        )
                        self.arrived(step, found)
                        return found
                wait = self.pause(number)
                if wait <= 0:
                    self.client.goodbye()
                    self.not_arrived(step, ["INBOX"])
                    return None
                number += 1
                self.client.goodbye()  # POP3 sees the maildrop as it was at sign-in: sign in again
                trip.sleep(wait)
                self.client = self.new_client()
                self.client.connect()
                self.client.login()
                step.data["sessions"] += 1
        except Exception as exc:
            self.client.abort()
            self.failed(step, exc, self.client.protocol_cause)
            return None

    def cleanup(self, found: Delivered) -> None:
        client = self.client

        def delete() -> str:
            reply = client.delete(found.pop_number)
            return _("DELE %(number)s: %(reply)s (removed at QUIT)") % {"number": found.pop_number, "reply": reply}

        cleanup_step(self.run, self.trip, _("--keep: the test message stays in the mailbox."), delete)
