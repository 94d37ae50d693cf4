"""``manage.py gmail_queue_status``: queue depth and daily-limit usage per account (``--json`` too).

A companion of ``gmail_check``: what the queued backend has waiting, sending, held and failed,
and how much of each account's daily limit the last window used. ``--unblock ACCOUNT`` lifts a
block recorded after Gmail's ``550 5.4.5``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count, Min, Q
from django.utils.translation import gettext as _

from ... import queued, quota
from ...conf import SmtpConfig, app_setting, mailers_enabled, resolve
from ...exceptions import GmailConfigError
from ...models import DeliveryLog, QuotaAccount

OUR_BACKENDS = (
    "django_gmail_smtp.backend.EmailBackend",
    "django_gmail_smtp.backend.QueuedEmailBackend",
    "django_gmail_smtp.queued.QueuedEmailBackend",
)
COLUMNS = ("queued", "retrying", "sending", "held", "failed", "stuck")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def configured_limits() -> dict[str, int | None]:
    """Account -> daily limit, for the accounts the settings send with (and QUOTA_LIMITS)."""
    configs: list[SmtpConfig] = []
    candidates: list[tuple[dict[str, Any], str | None]] = []
    if mailers_enabled():
        for alias, mailer in (getattr(settings, "MAILERS", None) or {}).items():
            if mailer.get("BACKEND") in OUR_BACKENDS:
                options = {k: v for k, v in (mailer.get("OPTIONS") or {}).items() if k not in queued.QUEUE_OPTIONS}
                candidates.append((options, alias))
    else:
        candidates.append(({}, None))
    for options, alias in candidates:
        try:
            configs.append(resolve(options, alias=alias))
        except GmailConfigError:
            continue  # gmail_check / manage.py check report those
    limits: dict[str, int | None] = {}
    for config in configs:
        try:
            limits[quota.account_key(config)] = quota.limit_for(config)
        except GmailConfigError:
            continue
    for name, value in (app_setting("QUOTA_LIMITS") or {}).items():
        if "@" in str(name):
            limits.setdefault(str(name).strip().lower(), value if isinstance(value, int) else None)
    return limits


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
        report = self.collect()
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, ensure_ascii=False))
            return
        self.print_table(report)

    def collect(self) -> dict[str, Any]:
        current = quota.now()
        Status = DeliveryLog.Status
        lease_end = current - queued._lease() - queued._MARGIN * 60
        rows = (
            DeliveryLog.objects.values("account")
            .annotate(
                queued=Count("pk", filter=Q(status=Status.QUEUED, due_at__lte=current)),
                retrying=Count("pk", filter=Q(status=Status.QUEUED, due_at__gt=current)),
                sending=Count("pk", filter=Q(status=Status.SENDING)),
                held=Count("pk", filter=Q(status=Status.HELD)),
                failed=Count("pk", filter=Q(status=Status.FAILED)),
                stuck=Count(
                    "pk",
                    filter=Q(status__in=[Status.QUEUED, Status.HELD, Status.SENDING], due_at__lt=lease_end),
                ),
                oldest=Min("created_at", filter=Q(status__in=[Status.QUEUED, Status.HELD, Status.SENDING])),
            )
            .order_by("account")
        )
        by_account: dict[str, dict[str, Any]] = {row["account"]: dict(row) for row in rows}
        limits = configured_limits()
        keys = sorted(set(by_account) | set(limits) | set(QuotaAccount.objects.values_list("key", flat=True)))
        accounts: list[dict[str, Any]] = []
        for key in keys:
            row = by_account.get(key) or {}
            standing = quota.usage(key, limits.get(key))
            accounts.append(
                {
                    "account": key,
                    **{column: int(row.get(column) or 0) for column in COLUMNS},
                    "oldest_unsent": _iso(row.get("oldest")),
                    "quota": {
                        "used": standing.used,
                        "limit": standing.limit,
                        "remaining": standing.remaining,
                        "window_hours": standing.window.total_seconds() / 3600,
                        "next_free": _iso(standing.next_free),
                        "blocked_until": _iso(standing.blocked_until),
                    },
                }
            )
        totals = {column: sum(a[column] for a in accounts) for column in COLUMNS}
        return {"now": _iso(current), "accounts": accounts, "totals": totals}

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
