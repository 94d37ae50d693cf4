"""What the queued backend has done and has waiting, read from the delivery log and the daily-limit guard.

Read-only, for ``manage.py gmail_queue_status`` and the admin's delivery log page:

* :func:`queue_status`: per account, messages queued, retrying, sending, held, failed and stuck, and
  the daily limit's use (``used / limit``, next free slot, block);
* :func:`activity`: the last 24 hours, hour by hour: messages sent, failed and held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from . import quota
from .app_settings import app_setting, mailers_enabled
from .conf import SmtpConfig, resolve
from .exceptions import GmailConfigError
from .queued.policy import QUEUE_OPTIONS, stuck_before

__all__ = ["COLUMNS", "Activity", "HourCounts", "activity", "configured_limits", "queue_status"]

OUR_BACKENDS = (
    "django_gmail_smtp.backend.EmailBackend",
    "django_gmail_smtp.backend.QueuedEmailBackend",
    "django_gmail_smtp.queued.QueuedEmailBackend",
)
COLUMNS = ("queued", "retrying", "sending", "held", "failed", "stuck")
"""The per-account counts of :func:`queue_status`, in the order they are shown."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def configured_limits() -> dict[str, int | None]:
    """Account -> daily limit, for the accounts the settings send with (and QUOTA_LIMITS)."""
    configs: list[SmtpConfig] = []
    candidates: list[tuple[dict[str, Any], str | None]] = []
    if mailers_enabled():
        for alias, mailer in (getattr(settings, "MAILERS", None) or {}).items():
            if mailer.get("BACKEND") in OUR_BACKENDS:
                options = {k: v for k, v in (mailer.get("OPTIONS") or {}).items() if k not in QUEUE_OPTIONS}
                candidates.append((options, alias))
    else:
        candidates.append(({}, None))
    from .accounts import account_options  # the models: imported once the apps are ready

    for options, alias in candidates:
        try:
            configs.append(resolve(options, alias=alias, accounts=account_options))
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


def queue_status() -> dict[str, Any]:
    """Per account: the queue's counts and the daily limit's use; the JSON of ``gmail_queue_status``."""
    from .models import DeliveryLog, QuotaAccount

    current = quota.now()
    Status = DeliveryLog.Status
    lease_end = stuck_before(current)
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


# -- the last 24 hours --------------------------------------------------------------------------


@dataclass(frozen=True)
class HourCounts:
    """One hour of :func:`activity`: it starts at ``start`` (local time)."""

    start: datetime
    sent: int
    failed: int
    held: int

    @property
    def total(self) -> int:
        return self.sent + self.failed + self.held


@dataclass(frozen=True)
class Activity:
    """Messages sent, failed and held per hour, oldest hour first."""

    hours: list[HourCounts]

    @property
    def sent(self) -> int:
        return sum(h.sent for h in self.hours)

    @property
    def failed(self) -> int:
        return sum(h.failed for h in self.hours)

    @property
    def held(self) -> int:
        return sum(h.held for h in self.hours)

    @property
    def peak(self) -> int:
        return max((h.total for h in self.hours), default=0)


def activity(hours: int = 24, now: datetime | None = None) -> Activity:
    """The last ``hours`` clock hours (the current one included), in the current time zone.

    *Sent* counts by the time the server accepted the message, *failed* by the time it failed
    for good, *held* the messages waiting for the daily limit now, by the time they were held.
    Three grouped queries, whatever the size of the log.
    """
    from .models import DeliveryLog

    current = _local(now or timezone.now())
    # Hours counted in UTC, so that a change to or from daylight saving time skips or repeats none.
    last = _hour_key(current.replace(minute=0, second=0, microsecond=0))
    first = last - timedelta(hours=hours - 1)
    Status = DeliveryLog.Status

    def per_hour(field: str, **filters: Any) -> dict[datetime, int]:
        rows = (
            DeliveryLog.objects.filter(**{f"{field}__gte": first}, **filters)
            .annotate(hour=TruncHour(field))
            .values("hour")
            .annotate(count=Count("pk"))
            .order_by()
        )
        return {_hour_key(row["hour"]): int(row["count"]) for row in rows if row["hour"] is not None}

    sent = per_hour("sent_at", status=Status.SENT)
    failed = per_hour("updated_at", status=Status.FAILED)
    held = per_hour("updated_at", status=Status.HELD)
    slots = []
    for number in range(hours):
        key = first + timedelta(hours=number)
        slots.append(HourCounts(_local(key), sent.get(key, 0), failed.get(key, 0), held.get(key, 0)))
    return Activity(slots)


def _hour_key(value: datetime) -> datetime:
    """An hour as a comparable key: in UTC when aware (naive only with ``USE_TZ = False``)."""
    return value.astimezone(UTC) if timezone.is_aware(value) else value


def _local(value: datetime) -> datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value
