"""The round trip's steps: their names in order, their titles, and the two ways to read the mailbox."""

from __future__ import annotations

from django.utils.translation import gettext_lazy

__all__ = ["IMAP", "POP3", "ROUND_TRIP_STEPS", "STEP_TITLES", "VIA", "title"]

IMAP, POP3 = "imap", "pop3"
VIA = (IMAP, POP3)

#: Every step the round trip adds, in order (the IMAP ones or the POP3 ones).
ROUND_TRIP_STEPS = (
    "round_trip_send",
    "imap_connect",
    "pop_connect",
    "imap_auth",
    "pop_auth",
    "imap_folders",
    "round_trip_arrival",
    "round_trip_folder",
    "round_trip_from",
    "round_trip_authentication",
    "round_trip_tls",
    "round_trip_cleanup",
    "imap_logout",
    "pop_quit",
)

STEP_TITLES = {
    "round_trip_send": gettext_lazy("Round-trip message"),
    "imap_connect": gettext_lazy("IMAP connection"),
    "pop_connect": gettext_lazy("POP3 connection"),
    "imap_auth": gettext_lazy("Mailbox sign-in"),
    "pop_auth": gettext_lazy("Mailbox sign-in"),
    "imap_folders": gettext_lazy("Mailbox folders"),
    "round_trip_arrival": gettext_lazy("Arrival of the test message"),
    "round_trip_folder": gettext_lazy("Folder it arrived in"),
    "round_trip_from": gettext_lazy("From address as delivered"),
    "round_trip_authentication": gettext_lazy("SPF, DKIM and DMARC"),
    "round_trip_tls": gettext_lazy("TLS of the receiving hop"),
    "round_trip_cleanup": gettext_lazy("Deleting the test message"),
    "imap_logout": gettext_lazy("IMAP LOGOUT"),
    "pop_quit": gettext_lazy("POP3 QUIT"),
}


def title(name: str) -> str:
    """The title of step ``name`` in the active language."""
    return str(STEP_TITLES[name])
