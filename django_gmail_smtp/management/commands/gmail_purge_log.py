"""``manage.py gmail_purge_log --older-than DAYS``: delete old entries of the delivery log.

Only finished entries (sent, failed) are deleted; messages still on their way never are. With
``--redact`` the entries stay (for the counts and the chart) and only what identifies people is
erased: their recipients and subject (README.md#the-delivery-log-the-admin-and-the-commands).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.translation import gettext as _

from ...models import DeliveryLog

FINISHED = (DeliveryLog.Status.SENT, DeliveryLog.Status.FAILED)


class Command(BaseCommand):
    help = "Delete sent and failed entries of the delivery log last updated more than DAYS days ago."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", type=float, required=True, metavar="DAYS", help="Age in days (fractions allowed)."
        )
        parser.add_argument(
            "--status",
            choices=[str(s) for s in FINISHED],
            action="append",
            help="Only entries with this status (repeatable; default: sent and failed).",
        )
        parser.add_argument(
            "--redact",
            action="store_true",
            help="Keep the entries; erase only their recipients and subjects (GMAIL_SMTP LOG_RECIPIENTS/LOG_SUBJECTS).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")
        parser.add_argument("--database", default="default", help="The database to use (default: 'default').")

    def handle(
        self,
        *args: Any,
        older_than: float,
        status: list[str] | None = None,
        dry_run: bool = False,
        redact: bool = False,
        database: str = "default",
        **options: Any,
    ) -> None:
        if older_than < 0:
            raise CommandError(_("--older-than must be a number of days of at least 0."), returncode=2)
        cutoff = timezone.now() - timedelta(days=older_than)
        entries = DeliveryLog.objects.using(database).filter(status__in=status or FINISHED, updated_at__lt=cutoff)
        if redact:
            # updated_at is left alone (update() does not touch it): redacting is not a new event.
            entries = entries.exclude(to="", subject="")
            if dry_run:
                count = entries.count()
                message = _("%(count)d delivery log entries would lose their recipients and subject (dry run).")
            else:
                count = entries.update(to="", subject="")
                message = _("Erased the recipients and subject of %(count)d delivery log entries.")
        elif dry_run:
            count = entries.count()
            message = _("%(count)d delivery log entries would be deleted (dry run: nothing changed).")
        else:
            count, _by_model = entries.delete()
            message = _("Deleted %(count)d delivery log entries.")
        if int(options.get("verbosity", 1)) >= 1:
            self.stdout.write(self.style.SUCCESS(message % {"count": count}))
