"""``manage.py gmail_queue_status``: queue depth and daily-limit usage per account (``--json`` too).

A companion of ``gmail_check``: what the queued backend has waiting, sending, held and failed,
and how much of each account's daily limit the last window used. ``--unblock ACCOUNT`` lifts a
block recorded after Gmail's ``550 5.4.5``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from ... import quota
from ...queue_report import COLUMNS, queue_status


class Command(BaseCommand):
    help = "Show the queued backend's queue depth and each account's use of its daily sending limit."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print one JSON object instead of a table."
        )
        parser.add_argument(
            "--unblock", metavar="ACCOUNT", help="Lift the block recorded after Gmail's 550 5.4.5 for ACCOUNT."
        )

    def handle(self, *args: Any, as_json: bool = False, unblock: str | None = None, **options: Any) -> None:
        if unblock:
            if not quota.unblock(unblock.strip().lower()):
                raise CommandError(_("%(account)s is not blocked.") % {"account": unblock}, returncode=1)
            self.stdout.write(self.style.SUCCESS(_("%(account)s is no longer blocked.") % {"account": unblock}))
            return
        report = queue_status()
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, ensure_ascii=False))
            return
        self.print_table(report)

    def print_table(self, report: dict[str, Any]) -> None:
        accounts = report["accounts"]
        if not accounts:
            self.stdout.write(_("Nothing queued, and no account has sent through the guard yet."))
            return
        labels = {
            "queued": _("queued"),
            "retrying": _("retrying"),
            "sending": _("sending"),
            "held": _("held"),
            "failed": _("failed"),
            "stuck": _("stuck"),
        }
        header = (_("account"), *(labels[c] for c in COLUMNS), _("used/limit"), _("next slot"))
        lines = [header]
        for a in accounts:
            q = a["quota"]
            limit = "-" if q["limit"] is None else str(q["limit"])
            if q["blocked_until"]:
                slot = _("blocked until %(when)s") % {"when": q["blocked_until"]}
            elif q["remaining"] is None or q["remaining"] > 0:
                slot = _("now")
            else:
                slot = q["next_free"]
            lines.append((a["account"], *(str(a[c]) for c in COLUMNS), f"{q['used']}/{limit}", slot))
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        for number, line in enumerate(lines):
            text = "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            self.stdout.write(self.style.MIGRATE_HEADING(text) if number == 0 else text)
        totals = report["totals"]
        if totals["stuck"]:
            self.stdout.write(
                self.style.WARNING(
                    _(
                        "%(count)d message(s) are stuck (more than a lease overdue): is a worker running? "
                        "Retry them from the admin (Delivery log) once it is."
                    )
                    % {"count": totals["stuck"]}
                )
            )
        if totals["failed"]:
            self.stdout.write(
                self.style.ERROR(
                    _("%(count)d message(s) failed; the admin's Delivery log shows the server's replies.")
                    % {"count": totals["failed"]}
                )
            )
