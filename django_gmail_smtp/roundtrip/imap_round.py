"""Finding the test message over IMAP: the folders by their special-use flags, then a search by
Message-ID in the inbox, Spam and All Mail, waiting in IDLE between searches (or polling)."""

from __future__ import annotations

from django.utils.translation import gettext as _

from ..diagnosis import Step
from ..imap import ImapClient, ImapFolder
from .cleanup import cleanup_step
from .mailbox import MailboxRound
from .steps import title
from .trip import Delivered

__all__ = ["LONGEST_PAUSE", "ImapRound"]

LONGEST_PAUSE = 5.0
"""Seconds between two searches at most (where the server offers no IDLE, between two polls)."""


class ImapRound(MailboxRound[ImapClient]):
    connect_name, auth_name, goodbye_name = "imap_connect", "imap_auth", "imap_logout"
    unreachable = "imap_unreachable"
    longest_pause = LONGEST_PAUSE

    roles: dict[str, ImapFolder]
    """The folders by role (``inbox``, ``junk``, ``all``, ``trash``), once listed."""

    @property
    def address(self) -> tuple[str, int]:
        return self.config.imap_host, self.config.imap_port

    def new_client(self) -> ImapClient:
        return self.open(ImapClient)

    def prepare(self) -> bool:
        """The folders step: every folder, and the special-use ones by their flags."""
        step = self.run.begin("imap_folders", title("imap_folders"))
        try:
            listed = self.client.folders()
        except Exception as exc:
            self.failed(step, exc, "imap_no_folder")
            return False
        roles: dict[str, ImapFolder] = {}
        for folder in listed:
            role = folder.role
            if role and role not in roles and folder.selectable:
                roles[role] = folder
        roles.setdefault("inbox", ImapFolder(wire="INBOX", name="INBOX"))
        for role, label in (
            ("inbox", _("inbox")),
            ("junk", _("Spam (\\Junk)")),
            ("all", _("All Mail (\\All)")),
            ("trash", _("Trash (\\Trash)")),
        ):
            shown = roles[role].name if role in roles else _("(none)")
            step.details.append(_("%(role)s: %(folder)s") % {"role": label, "folder": shown})
        step.data = {
            "count": len(listed),
            "special_use": {role: folder.name for role, folder in roles.items()},
            "capabilities": sorted(self.client.capabilities),
        }
        self.trip.summary["folders"] = dict(step.data["special_use"])
        self.run.end(step)
        self.roles = roles
        return True

    def wait(self) -> Delivered | None:
        client, trip = self.client, self.trip
        order = [self.roles[role] for role in ("inbox", "junk", "all") if role in self.roles]
        searched = [folder.name for folder in order]
        step = self.begin_wait(searched=searched, idle=client.offers_idle, searches=0)
        number = 0
        try:
            while True:
                step.data["searches"] = number + 1
                for folder in order:
                    found = self._search(step, folder)
                    if found is not None:
                        return found
                wait = self.pause(number)
                if wait <= 0:
                    self.not_arrived(step, searched)
                    return None
                number += 1
                if client.offers_idle:
                    client.select(order[0])
                    client.idle(wait)
                else:
                    trip.sleep(wait)
        except Exception as exc:
            self.failed(step, exc, self.client.protocol_cause)
            return None

    def _search(self, step: Step, folder: ImapFolder) -> Delivered | None:
        client = self.client
        client.select(folder)
        uids = client.search_message_id(self.trip.message_id)
        if not uids:
            return None
        seconds = self.trip.elapsed()
        fetched = client.fetch(uids[0])
        found = Delivered(
            folder=folder.name,
            role=folder.role or "other",
            seconds=seconds,
            header=fetched.header,
            internaldate=fetched.internaldate,
            uids=uids,
            imap_folder=folder,
        )
        self.arrived(step, found)
        return found

    def cleanup(self, found: Delivered) -> None:
        assert found.imap_folder is not None
        folder, client = found.imap_folder, self.client
        cleanup_step(
            self.run,
            self.trip,
            _("--keep: the test message stays in %(folder)s.") % {"folder": found.folder},
            lambda: client.delete(folder, found.uids, self.trip.message_id, self.roles.get("trash")),
        )
